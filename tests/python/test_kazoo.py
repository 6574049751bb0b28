"""kazoo 2.11 (unmodified) against Corral: the basics, its watch recipes,
transactions, and sessions across expiry and server restarts."""

import threading
import time

import pytest
from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import BadVersionError, NoNodeError, NodeExistsError, NotEmptyError, SessionExpiredError


def connect(corral, **kw):
    kw.setdefault("timeout", 10)
    z = KazooClient(hosts=corral.hosts, **kw)
    z.start(timeout=10)
    return z


def wait_for(pred, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_crud_versions_and_errors(corral):
    z = connect(corral)
    assert z.server_version() == (3, 9, 4)
    z.ensure_path("/app/config")
    z.create("/app/config/db", b"postgres://a")
    with pytest.raises(NodeExistsError):
        z.create("/app/config/db", b"x")
    data, stat = z.get("/app/config/db")
    assert (data, stat.version) == (b"postgres://a", 0)
    stat = z.set("/app/config/db", b"postgres://b", version=0)
    assert stat.version == 1
    with pytest.raises(BadVersionError):
        z.set("/app/config/db", b"c", version=0)
    with pytest.raises(NotEmptyError):
        z.delete("/app/config")
    with pytest.raises(NoNodeError):
        z.get("/app/missing")
    seq = [z.create("/app/q/item-", b"%d" % i, sequence=True, makepath=True) for i in range(3)]
    assert seq == ["/app/q/item-0000000000", "/app/q/item-0000000001", "/app/q/item-0000000002"]
    z.delete("/app", recursive=True)
    assert z.exists("/app") is None
    assert z.command(b"ruok") == "imok"
    z.stop()


def test_watch_recipes_see_every_change_in_order(corral):
    z = connect(corral)
    other = connect(corral)
    z.create("/cfg", b"0")
    seen, kids = [], []
    done = threading.Event()

    @z.DataWatch("/cfg")
    def on_data(data, stat):
        seen.append(data)
        if data == b"5":
            done.set()

    @z.ChildrenWatch("/cfg")
    def on_children(children):
        kids.append(sorted(children))

    for i in range(1, 6):
        other.set("/cfg", b"%d" % i)
        # DataWatch re-reads on each event; give it time to see every value.
        assert wait_for(lambda: seen and seen[-1] == b"%d" % i)
    assert done.wait(5)
    assert seen == [b"0", b"1", b"2", b"3", b"4", b"5"]
    other.create("/cfg/a")
    other.create("/cfg/b")
    assert wait_for(lambda: kids and kids[-1] == ["a", "b"])
    other.delete("/cfg/a")
    assert wait_for(lambda: kids[-1] == ["b"])
    z.stop()
    other.stop()


def test_transactions(corral):
    z = connect(corral)
    z.create("/t", b"v0")
    tx = z.transaction()
    tx.check("/t", 0)
    tx.create("/t/child", b"c")
    tx.set_data("/t", b"v1")
    assert tx.commit() == [True, "/t/child", z.exists("/t")]
    tx = z.transaction()
    tx.delete("/t/child")
    tx.check("/t", 0)
    results = tx.commit()
    assert type(results[1]).__name__ == "BadVersionError", results
    assert z.exists("/t/child") is not None
    z.stop()


def test_expiry_removes_ephemerals_and_the_client_sees_lost(corral):
    z = connect(corral)
    states = []
    z.add_listener(states.append)
    z.create("/members/me", b"", ephemeral=True, makepath=True)
    watcher = connect(corral)
    gone = threading.Event()
    watcher.exists("/members/me", watch=lambda e: gone.set())

    # kazoo's own way to expire a session: a second client takes it over
    # with the same id and password, then closes it.
    session_id, password = z.client_id
    thief = KazooClient(hosts=corral.hosts, client_id=(session_id, password), timeout=10)
    thief.start(timeout=10)
    thief.stop()
    assert gone.wait(10), "watchers were not told of the ephemeral's deletion"
    assert watcher.exists("/members/me") is None
    assert wait_for(lambda: KazooState.LOST in states), states
    with pytest.raises(SessionExpiredError):
        z.get("/members")
    z.stop()
    watcher.stop()


def test_session_and_ephemerals_survive_a_server_crash(corral):
    z = connect(corral, timeout=4)
    states = []
    z.add_listener(states.append)
    z.create("/alive", b"", ephemeral=True)
    session = z.client_id[0]
    corral.kill9()
    assert wait_for(lambda: KazooState.SUSPENDED in states)
    corral.restart()
    assert wait_for(lambda: states[-1] == KazooState.CONNECTED, 20), states
    assert KazooState.LOST not in states
    assert z.client_id[0] == session
    assert z.exists("/alive") is not None
    z.stop()


def test_sync_and_reads_from_a_second_client(corral):
    a, b = connect(corral), connect(corral)
    a.create("/n", b"0")
    for i in range(20):
        a.set("/n", b"%d" % i)
        b.sync("/n")
        assert b.get("/n")[0] == b"%d" % i
    a.stop()
    b.stop()
