"""kazoo and zkCli.sh against a three-member Corral cluster, each client on a
different member: writes forwarded to the leader, reads served locally,
watches across members, recipes, and ZooKeeper's reconfig."""

import re
import subprocess
import threading
import time

from kazoo.client import KazooClient

from conftest import zkcli


def on(node):
    z = KazooClient(hosts=node.hosts, timeout=10)
    z.start(timeout=10)
    return z


def wait_for(pred, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_kazoo_clients_on_different_members_see_one_tree(corral_cluster):
    a, b, c = (on(n) for n in corral_cluster.nodes)
    try:
        a.create("/app/config", b"v1", makepath=True)
        # Reads are local: after sync, a member has everything committed before.
        b.sync("/app")
        assert b.get("/app/config")[0] == b"v1"
        seen = []
        c.DataWatch("/app/config", lambda data, stat: seen.append(data))
        assert wait_for(lambda: seen == [b"v1"])
        b.set("/app/config", b"v2")
        assert wait_for(lambda: seen[-1:] == [b"v2"]), seen
        # Sequence numbers come from one replicated counter, whichever
        # member the client is on.
        names = [z.create("/app/seq-", sequence=True) for z in (a, b, c, a)]
        assert [int(n[-10:]) for n in names] == [1, 2, 3, 4]
        # An ephemeral on one member is visible on the others and goes with
        # its session.
        a.create("/app/eph", ephemeral=True)
        c.sync("/app")
        assert c.exists("/app/eph")
        a.stop()
        c.sync("/app")
        assert wait_for(lambda: c.exists("/app/eph") is None)
    finally:
        for z in (a, b, c):
            z.stop()
            z.close()


def test_a_lock_and_an_election_span_members(corral_cluster):
    clients = [on(n) for n in corral_cluster.nodes]
    inside, overlaps = [0], [0]
    guard = threading.Lock()

    def work(z, name):
        lock = z.Lock("/locks/r", name)
        for _ in range(4):
            with lock:
                with guard:
                    inside[0] += 1
                    overlaps[0] += inside[0] > 1
                time.sleep(0.01)
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=work, args=(z, "w%d" % i)) for i, z in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert overlaps[0] == 0, "two members' clients held the lock at once"

    leaders = []
    elections = [z.Election("/election", "c%d" % i) for i, z in enumerate(clients)]
    threading.Thread(target=elections[1].run, args=(lambda: leaders.append(1) or time.sleep(30),), daemon=True).start()
    assert wait_for(lambda: leaders == [1])
    threading.Thread(target=elections[2].run, args=(lambda: leaders.append(2),), daemon=True).start()
    time.sleep(0.5)
    assert leaders == [1], "only one leader while the first holds on"
    clients[1].stop()
    assert wait_for(lambda: leaders == [1, 2]), leaders
    for z in clients:
        z.stop()
        z.close()


def zkcli_run(node, commands):
    script = "".join(c + "\n" for c in commands) + "quit\n"
    out = subprocess.run([zkcli(), "-server", node.hosts], input=script.encode(), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=60).stdout.decode()
    return "\n".join(l for l in out.splitlines() if "log4j" not in l and "SLF4J" not in l)


def test_zkcli_config_and_reconfig_follow_the_membership(corral_cluster):
    nodes = corral_cluster.nodes
    follower = nodes[2]
    # Members publish their client addresses once they serve.
    z = on(nodes[0])
    assert wait_for(lambda: z.get("/zookeeper/config")[0].decode().count(";127.0.0.1:") == 3)
    out = zkcli_run(follower, ["config"])
    for i, n in enumerate(nodes):
        assert "server.%d=127.0.0.1:%d:%d:participant;127.0.0.1:%d" % (i + 1, n.raft_port, n.raft_port, n.port) in out, out
    version = re.search(r"version=([0-9a-f]+)", out).group(1)
    # reconfig needs the superuser; removing member 3 leaves two voters.
    out = zkcli_run(follower, ["reconfig -remove 3"])
    assert "Insufficient permission" in out or "NoAuth" in out, out
    out = zkcli_run(nodes[0], ["addauth digest super:test", "reconfig -remove 3 -v %s" % version])
    assert "Committed new configuration" in out, out
    assert "server.3=" not in out.split("Committed new configuration")[1], out
    data = z.get("/zookeeper/config")[0].decode()
    assert "server.3=" not in data and "server.1=" in data, data
    # The two remaining members still take writes.
    z.create("/after-reconfig", b"x")
    z.stop()
    z.close()
