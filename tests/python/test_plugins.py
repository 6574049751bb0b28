"""Wasm plugins seen by an unmodified kazoo: a validator vetoes writes with
an error kazoo raises, a trigger writes in the same entry, and recipes and
queries are called through Corral's extension opcodes (4096, 4097) with a
kazoo request class, as the caller's session.

The components come from plugins/build.sh (tests/run.sh runs it first)."""

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import BadArgumentsError, NoNodeError

from conftest import FAST, Corral
from corral_call import QueryCall, call

TOKEN = "corral_plugin_test_token_0123456789"
COMPONENTS = Path(__file__).resolve().parents[2] / "plugins" / "target" / "components" / "current"


@pytest.fixture
def node(tmp_path, request):
    c = Corral(tmp_path, {**FAST, "initial_admin_token": TOKEN})
    yield c
    c.kill9()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print("---- corral log ----\n" + c.log())


def deploy(node, name, component, **params):
    query = "&".join("%s=%s" % kv for kv in params.items())
    body = (COMPONENTS / (component + ".wasm")).read_bytes()
    req = urllib.request.Request(
        "http://127.0.0.1:%d/api/v1/plugins/%s?%s" % (node.http_port, name, query),
        data=body, method="PUT",
        headers={"authorization": "Bearer " + TOKEN, "content-type": "application/wasm"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def connect(node):
    z = KazooClient(hosts=node.hosts, timeout=10)
    z.start(timeout=10)
    return z


def test_a_validator_vetoes_kazoo_writes_and_leaves_the_tree_unchanged(node):
    deploy(node, "schemas", "json_schema", bind="/config")
    z = connect(node)
    z.create("/config")
    z.create("/config/.schema", json.dumps(
        {"type": "object", "required": ["port"], "properties": {"port": {"type": "integer", "maximum": 65535}}}).encode())
    z.create("/config/web", b'{"port": 80}')
    with pytest.raises(BadArgumentsError):
        z.set("/config/web", b'{"port": 99999}')
    data, stat = z.get("/config/web")
    assert (data, stat.version) == (b'{"port": 80}', 0)
    with pytest.raises(BadArgumentsError):
        z.create("/config/db", b'{"host": "x"}')
    assert z.exists("/config/db") is None
    # A transaction with one bad write is refused whole.
    t = z.transaction()
    t.create("/config/cache", b'{"port": 6379}')
    t.set_data("/config/web", b"not json")
    with pytest.raises(BadArgumentsError):
        t.commit()
    assert z.exists("/config/cache") is None
    assert z.get("/config/web")[0] == b'{"port": 80}'
    # A schema the validator cannot check is itself refused.
    with pytest.raises(BadArgumentsError):
        z.set("/config/.schema", b'{"pattern": "^x"}')
    # Outside the bound path nothing is checked.
    z.create("/other", b"not json")
    z.stop()


def test_a_trigger_writes_in_the_same_entry_as_the_kazoo_write(node):
    deploy(node, "kids", "child_counter", bind="/svc")
    z = connect(node)
    z.create("/svc")
    seen = []
    z.DataWatch("/svc.count", lambda data, stat: seen.append(data))
    z.create("/svc/a")
    z.create("/svc/b", ephemeral=True)
    count, stat = z.get("/svc.count")
    assert count == b"2"
    # The count changed in the very entry that created /svc/b.
    assert stat.mzxid == z.exists("/svc/b").czxid
    z.delete("/svc/a")
    assert z.get("/svc.count")[0] == b"1"
    deadline = time.time() + 5
    # A 1 arrived already after /svc/a: wait for the one after the delete.
    while not (seen and seen[-1] == b"1" and b"2" in seen) and time.time() < deadline:
        time.sleep(0.02)
    assert seen[-1] == b"1" and b"2" in seen
    # The ephemeral goes with its session, and the count follows.
    z.stop()
    z2 = connect(node)
    assert z2.get("/svc.count")[0] == b"0"
    z2.stop()


def test_recipes_and_queries_over_the_extension_opcodes_run_as_the_callers_session(node):
    deploy(node, "hostile", "hostile")
    deploy(node, "counter", "counter")
    deploy(node, "lookup", "lookup")
    z = connect(node)
    z.create("/hostile")
    z.create("/counters")
    assert call(z, "counter", b'{"path": "/counters/x", "by": 2}') == (0, b"2")
    assert call(z, "counter", b'{"path": "/counters/x"}') == (0, b"3")
    status, message = call(z, "counter", b'{"path": "/nope/x"}')
    assert (status, message) == (1, b"the parent of /nope/x does not exist")
    status, message = call(z, "hostile", b"panic")
    assert status == 2 and b"guest panic" in message
    with pytest.raises(NoNodeError):
        call(z, "no-such-plugin", b"")

    # An ephemeral the recipe creates belongs to the calling session.
    status, path = call(z, "hostile", b"ephemeral")
    assert status == 0
    assert z.exists(path.decode()).ephemeralOwner == z.client_id[0]

    # A query reads this member's state, outside the log.
    status, out = call(z, "lookup", b"/counters/x", QueryCall)
    zxid, children, data = out.split(b" ", 2)
    assert (status, children, data) == (0, b"0", b"3")
    assert int(zxid) >= z.exists("/counters/x").mzxid
    # Calling a recipe with the query opcode is refused: it would write.
    status, message = call(z, "counter", b"{}", QueryCall)
    assert status == 3 and b"not a query" in message

    other = connect(node)
    assert other.exists(path.decode()) is not None
    z.stop()
    deadline = time.time() + 5
    while other.exists(path.decode()) is not None and time.time() < deadline:
        time.sleep(0.05)
    assert other.exists(path.decode()) is None
    other.stop()


def test_deploys_are_checked_and_guarded_by_the_plugin_scope(node):
    with pytest.raises(urllib.error.HTTPError) as e:
        deploy(node, "bad", "hostile", kind="validator", bind="/x")
    assert e.value.code == 400 and "corral:plugin/write" in json.load(e.value)["message"]
    # A token without the plugin scope cannot deploy.
    req = urllib.request.Request(
        "http://127.0.0.1:%d/api/v1/tokens" % node.http_port, method="POST",
        data=json.dumps({"name": "reader", "scopes": ["read", "write"]}).encode(),
        headers={"authorization": "Bearer " + TOKEN, "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        weak = json.load(r)["token"]
    req = urllib.request.Request(
        "http://127.0.0.1:%d/api/v1/plugins/counter" % node.http_port, method="PUT",
        data=(COMPONENTS / "counter.wasm").read_bytes(), headers={"authorization": "Bearer " + weak})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 403


def test_recipe_nodes_are_plain_znodes_that_kazoo_watches(node):
    deploy(node, "lock", "lock")
    deploy(node, "election", "election")
    holder, waiter, watcher = connect(node), connect(node), connect(node)
    seen = []
    # The lock node does not exist yet: kazoo's ChildrenWatch waits for it.
    acquired = json.loads(call(holder, "lock", b'{"op": "acquire", "lock": "/printer"}')[1])
    assert acquired["acquired"] is True
    watcher.ChildrenWatch("/printer", lambda children: seen.append(sorted(children)))
    queued = json.loads(call(waiter, "lock", b'{"op": "acquire", "lock": "/printer"}')[1])
    assert queued["acquired"] is False and queued["waiting_for"] == acquired["node"]
    # The waiter's exists watch on its predecessor fires when the holder
    # releases; the re-check then says it holds the lock.
    released = []
    assert waiter.exists(queued["waiting_for"], watch=lambda event: released.append(event.type)) is not None
    call(holder, "lock", json.dumps({"op": "release", "node": acquired["node"]}).encode())
    deadline = time.time() + 5
    while not released and time.time() < deadline:
        time.sleep(0.02)
    assert released == ["DELETED"]
    again = json.loads(call(waiter, "lock", b'{"op": "acquire", "lock": "/printer"}')[1])
    assert again == {"acquired": True, "node": queued["node"]}
    deadline = time.time() + 5
    while [queued["node"].rsplit("/", 1)[1]] not in seen and time.time() < deadline:
        time.sleep(0.02)
    names = [acquired["node"].rsplit("/", 1)[1], queued["node"].rsplit("/", 1)[1]]
    assert seen[0] == [names[0]] and names in seen and seen[-1] == [names[1]], seen

    # An election's leader is an ordinary node: kazoo reads who leads.
    watcher.create("/elections")
    answer = json.loads(call(holder, "election", b'{"op": "join", "election": "/elections/db", "id": "host-a"}')[1])
    assert answer["leader"] is True
    children = watcher.get_children("/elections/db")
    assert watcher.get("/elections/db/" + min(children))[0] == b"host-a"
    for z in (holder, waiter, watcher):
        z.stop()


def test_a_double_barrier_opens_for_every_kazoo_participant_at_once(node):
    deploy(node, "barrier", "barrier")
    clients = [connect(node) for _ in range(3)]
    fired = []
    for i, z in enumerate(clients[:2]):
        r = json.loads(call(z, "barrier", json.dumps(
            {"op": "enter", "barrier": "/stage", "size": 3, "id": "w%d" % i}).encode())[1])
        assert r == {"ready": False, "entered": i + 1}
        # Wait for /stage/ready with an ordinary exists watch.
        assert z.exists("/stage/ready", watch=lambda e, i=i: fired.append((i, e.type))) is None
    r = json.loads(call(clients[2], "barrier", b'{"op": "enter", "barrier": "/stage", "size": 3, "id": "w2"}')[1])
    assert r == {"ready": True, "entered": 3}
    deadline = time.time() + 5
    while len(fired) < 2 and time.time() < deadline:
        time.sleep(0.02)
    assert sorted(fired) == [(0, "CREATED"), (1, "CREATED")]
    # Participants are ephemerals of their sessions: one that dies leaves.
    clients[0].stop()
    remaining = [json.loads(call(z, "barrier", json.dumps(
        {"op": "leave", "barrier": "/stage", "id": "w%d" % (i + 1)}).encode())[1])["remaining"]
        for i, z in enumerate(clients[1:])]
    assert remaining == [1, 0]
    assert clients[1].exists("/stage/ready") is None
    for z in clients[1:]:
        z.stop()


def test_group_membership_through_the_recipe_is_seen_by_a_kazoo_children_watch(node):
    deploy(node, "group", "group")
    watcher, a, b = connect(node), connect(node), connect(node)
    watcher.create("/groups")
    seen = []
    join = lambda z, m, d: json.loads(call(z, "group", json.dumps(
        {"op": "join", "group": "/groups/workers", "member": m, "data": d}).encode())[1])
    assert join(a, "a", "10.0.0.1") == {"joined": True, "members": 1}
    watcher.ChildrenWatch("/groups/workers", lambda children: seen.append(sorted(children)))
    assert join(b, "b", "10.0.0.2") == {"joined": True, "members": 2}
    status, message = call(b, "group", b'{"op": "join", "group": "/groups/workers", "member": "a"}')
    assert status == 1 and b"held by another session" in message
    members = json.loads(call(watcher, "group", b'{"op": "members", "group": "/groups/workers"}')[1])
    assert members == {"members": {"a": "10.0.0.1", "b": "10.0.0.2"}}
    a.stop()  # its membership ends with its session
    deadline = time.time() + 5
    while ["b"] not in seen and time.time() < deadline:
        time.sleep(0.02)
    assert seen[0] == ["a"] and ["a", "b"] in seen and seen[-1] == ["b"], seen
    for z in (watcher, b):
        z.stop()


def test_a_service_registry_with_health_and_a_healthy_instances_query(node):
    deploy(node, "registry", "registry")
    deploy(node, "healthy", "registry_healthy")
    instances = [connect(node) for _ in range(3)]
    instances[0].create("/services")
    for i, z in enumerate(instances):
        r = json.loads(call(z, "registry", json.dumps({"op": "register", "service": "api", "instance": "i%d" % i,
                                                        "address": "10.0.0.%d:80" % i, "meta": {"zone": "a"}}).encode())[1])
        assert r == {"registered": "/services/api/i%d" % i}
    call(instances[1], "registry", b'{"op": "health", "service": "api", "instance": "i1", "healthy": false}')
    healthy = lambda z: [i["instance"] for i in json.loads(call(z, "healthy", b'{"service": "api"}', QueryCall)[1])["instances"]]
    assert healthy(instances[0]) == ["i0", "i2"]
    # An instance's registration ends with its session.
    instances[2].stop()
    assert healthy(instances[0]) == ["i0"]
    record = json.loads(instances[0].get("/services/api/i0")[0])
    assert record["address"] == "10.0.0.0:80" and record["meta"] == {"zone": "a"} and record["healthy"] is True
    for z in instances[:2]:
        z.stop()


def test_validated_configuration_keeps_a_history_of_every_accepted_value(node):
    deploy(node, "schemas", "json_schema", bind="/config")
    deploy(node, "history", "config_history", bind="/config")
    z = connect(node)
    z.create("/config")
    z.create("/config/.schema", b'{"type": "object", "required": ["replicas"], '
                                b'"properties": {"replicas": {"type": "integer", "minimum": 1}}}')
    z.create("/config/web", b'{"replicas": 2}')
    z.set("/config/web", b'{"replicas": 3}')
    # The history entry was written in the very entry that set the value.
    assert z.exists("/config/.history/web-0000000001").czxid == z.exists("/config/web").mzxid
    with pytest.raises(BadArgumentsError):
        z.set("/config/web", b'{"replicas": 0}')
    z.delete("/config/web")
    history = sorted(z.get_children("/config/.history"))
    assert history == ["web-0000000000", "web-0000000001", "web-deleted-0000000002"], history
    assert [z.get("/config/.history/" + h)[0] for h in history] == [b'{"replicas": 2}', b'{"replicas": 3}', b""]
    z.stop()


def test_a_javascript_validator_vetoes_kazoo_writes(node):
    deploy(node, "pct", "js_percent", bind="/pct")
    z = connect(node)
    z.create("/pct")
    z.create("/pct/cpu", b"42")
    with pytest.raises(BadArgumentsError):
        z.set("/pct/cpu", b"420")
    with pytest.raises(BadArgumentsError):
        z.create("/pct/mem", b"lots")
    assert z.get("/pct/cpu")[0] == b"42" and z.exists("/pct/mem") is None
    z.stop()


def test_a_c_validator_vetoes_kazoo_writes(node):
    deploy(node, "names", "c_names", bind="/hosts")
    z = connect(node)
    z.create("/hosts")
    z.create("/hosts/web-1")
    for bad in ("Web-1", "-web", "a" * 64, "web_1"):
        with pytest.raises(BadArgumentsError):
            z.create("/hosts/" + bad)
    assert z.get_children("/hosts") == ["web-1"]
    z.stop()


def wait_until(predicate, seconds=5):
    deadline = time.time() + seconds
    while not predicate() and time.time() < deadline:
        time.sleep(0.02)
    return predicate()


def test_queue_and_counter_nodes_are_watched_by_kazoo(node):
    deploy(node, "queue", "queue")
    deploy(node, "counter", "counter")
    worker, watcher = connect(node), connect(node)
    try:
        # Queue items are sequential children: a ChildrenWatch follows puts
        # and takes.
        seen = []
        put = json.loads(call(worker, "queue", b'{"op": "put", "queue": "/jobs", "data": "resize img-17"}')[1])
        watcher.ChildrenWatch("/jobs", lambda children: seen.append(sorted(children)))
        call(worker, "queue", b'{"op": "put", "queue": "/jobs", "data": "resize img-18"}')
        assert wait_until(lambda: len(seen) and len(seen[-1]) == 2), seen
        taken = json.loads(call(worker, "queue", b'{"op": "take", "queue": "/jobs"}')[1])
        assert taken == {"item": put["item"], "data": "resize img-17"}
        assert wait_until(lambda: seen[-1] == [seen[1][1]]), seen
        assert watcher.get("/jobs/" + seen[1][1])[0] == b"resize img-18"
        # A counter is a node's data: a DataWatch sees every increment.
        values = []
        watcher.create("/counters")
        call(worker, "counter", b'{"path": "/counters/hits"}')
        watcher.DataWatch("/counters/hits", lambda data, stat: values.append(data))
        for _ in range(3):
            call(worker, "counter", b'{"path": "/counters/hits", "by": 2}')
        assert wait_until(lambda: values[-1:] == [b"7"]), values
    finally:
        worker.stop()
        watcher.stop()
