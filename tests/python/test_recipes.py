"""kazoo's recipes, ACLs, auth and chroot against Corral: what Curator- and
kazoo-style applications build on."""

import threading
import time

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.recipe.cache import TreeCache, TreeEvent
from kazoo.security import make_digest_acl


def connect(corral, **kw):
    z = KazooClient(hosts=corral.hosts, timeout=10, **kw)
    z.start(timeout=10)
    return z


def wait_for(pred, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_lock_excludes(corral):
    clients = [connect(corral) for _ in range(3)]
    inside, overlaps, rounds = [0], [0], [0]
    guard = threading.Lock()

    def work(z, name):
        lock = z.Lock("/locks/resource", name)
        for _ in range(5):
            with lock:
                with guard:
                    inside[0] += 1
                    if inside[0] > 1:
                        overlaps[0] += 1
                time.sleep(0.005)
                with guard:
                    inside[0] -= 1
                    rounds[0] += 1

    threads = [threading.Thread(target=work, args=(z, "c%d" % i)) for i, z in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert (rounds[0], overlaps[0]) == (15, 0)
    for z in clients:
        z.stop()


def test_election_fails_over_when_the_leader_leaves(corral):
    a, b = connect(corral), connect(corral)
    leaders = []
    a_leads = threading.Event()

    def lead(name, event=None):
        def run():
            leaders.append(name)
            if event:
                event.set()
            time.sleep(30)
        return run

    threading.Thread(target=a.Election("/election", "a").run, args=(lead("a", a_leads),), daemon=True).start()
    assert a_leads.wait(10)
    threading.Thread(target=b.Election("/election", "b").run, args=(lead("b"),), daemon=True).start()
    time.sleep(0.3)
    assert leaders == ["a"]
    a.stop()  # its ephemeral goes; b's watch fires
    assert wait_for(lambda: leaders == ["a", "b"])
    b.stop()


def test_barrier_queue_counter_party(corral):
    z, other = connect(corral), connect(corral)
    barrier = z.Barrier("/barrier")
    barrier.create()
    released = threading.Event()
    threading.Thread(target=lambda: (other.Barrier("/barrier").wait(10), released.set()), daemon=True).start()
    time.sleep(0.3)
    assert not released.is_set()
    barrier.remove()
    assert released.wait(10)

    q = z.Queue("/queue")
    for item in (b"1", b"2", b"3"):
        q.put(item)
    assert [other.Queue("/queue").get() for _ in range(3)] == [b"1", b"2", b"3"]

    counters = [z.Counter("/counter"), other.Counter("/counter")]
    done = []

    def bump(c):
        for _ in range(20):
            c += 1
        done.append(1)

    threads = [threading.Thread(target=bump, args=(c,)) for c in counters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert z.Counter("/counter").value == 40

    p1, p2 = z.Party("/party", "one"), other.Party("/party", "two")
    p1.join()
    p2.join()
    assert sorted(p1) == ["one", "two"]
    p2.leave()
    assert list(p1) == ["one"]
    z.stop()
    other.stop()


def test_tree_cache_follows_changes(corral):
    z, writer = connect(corral), connect(corral)
    writer.ensure_path("/tree/a")
    cache = TreeCache(z, "/tree")
    events = []
    cache.listen(lambda e: events.append(e))
    cache.start()
    assert wait_for(lambda: any(e.event_type == TreeEvent.INITIALIZED for e in events))
    writer.create("/tree/a/b", b"v1")
    assert wait_for(lambda: cache.get_data("/tree/a/b") is not None and cache.get_data("/tree/a/b").data == b"v1")
    writer.set("/tree/a/b", b"v2")
    assert wait_for(lambda: cache.get_data("/tree/a/b").data == b"v2")
    writer.delete("/tree/a/b")
    assert wait_for(lambda: cache.get_data("/tree/a/b") is None)
    cache.close()
    z.stop()
    writer.stop()


def test_acls_auth_and_chroot(corral):
    owner = connect(corral, auth_data=[("digest", "alice:secret")])
    acl = make_digest_acl("alice", "secret", all=True)
    owner.create("/private", b"mine", acl=[acl])
    stranger = connect(corral)
    with pytest.raises(NoAuthError):
        stranger.get("/private")
    assert owner.get("/private")[0] == b"mine"
    # auth ACL: the creator's identity.
    from kazoo.security import CREATOR_ALL_ACL
    owner.create("/creator", b"", acl=CREATOR_ALL_ACL)
    acls, _ = owner.get_acls("/creator")
    assert acls[0].id.scheme == "digest" and acls[0].id.id.startswith("alice:")
    with pytest.raises(NoAuthError):
        stranger.set("/creator", b"x")
    # A failed auth: the client is told and the connection closes.
    from kazoo.exceptions import AuthFailedError
    with pytest.raises(AuthFailedError):
        stranger.add_auth("nosuchscheme", "whatever")

    # chroot: the client sees a subtree as its root.
    owner.ensure_path("/tenants/acme")
    tenant = KazooClient(hosts=corral.hosts + "/tenants/acme", timeout=10)
    tenant.start(timeout=10)
    tenant.create("/config", b"x")
    assert tenant.get_children("/") == ["config"]
    assert owner.get("/tenants/acme/config")[0] == b"x"
    tenant.stop()
    owner.stop()
