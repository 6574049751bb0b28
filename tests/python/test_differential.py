"""Differential tests: the same operation scripts against Apache ZooKeeper
3.8 and Corral, comparing replies, error codes, stats and event sequences.

Every frame a session receives is recorded in arrival order. Before the
comparison, values that legitimately differ between servers are normalized:
- zxids are replaced by their rank among all zxids the script observed
  (Corral's zxid is its Raft index, ZooKeeper's is epoch and counter);
- reply-header zxids of reads are dropped (they are "the server's last zxid",
  and Corral also spends indexes on session and sync entries);
- times keep only their order; session ids become the session's number.
The behaviours where ZooKeeper 3.9 (Corral's target) differs from the 3.8
server here are listed in ACCEPTED_DIFFERENCES and docs/zookeeper-compat.md.
"""

import pytest

import zkwire as w

# 3.8 (the server here) against 3.9 (Corral's target).
ACCEPTED_DIFFERENCES = {
    "notification zxid": "3.8 sends -1 in the notification header; 3.9 sends the change's zxid",
    "create2 in multi": "3.8 answers a create2 op inside multi with a create (path only) result; 3.9 adds the Stat",
    "watcher types 4 and 5": "3.8 answers removeWatches/checkWatches with types 4/5 with MarshallingError",
    "top-level check": "3.8.0 accepts a top-level check and never replies; 3.9 replies Unimplemented and closes",
    "4lw defaults": "3.8 allows only srvr by default; Corral allows srvr, stat, ruok, envi, conf, isro, mntr",
}


class Recorder:
    """Runs one script against one server and keeps what came back."""

    def __init__(self, hosts):
        host, port = hosts.split(":")
        self.host, self.port = host, int(port)
        self.sessions = []
        self.records = []

    def session(self, timeout_ms=30000):
        s = w.Session(self.host, self.port, timeout_ms)
        self.sessions.append(s)
        return len(self.sessions) - 1

    def op(self, sid, name, opcode, body, decode=None):
        s = self.sessions[sid]
        xid, zxid, err, rest = s.call(opcode, body)
        value = decode(w.Reader(rest)) if (decode and err == 0) else None
        # Frames that arrived before this reply, then the reply itself.
        s.transcript.append(("reply", name, err, value, zxid if opcode in WRITES else None))
        return err, value

    def settle(self, seconds=0.4):
        for s in self.sessions:
            if not s.closed:
                s.wait_events(seconds / len(self.sessions))

    def transcripts(self):
        return [s.transcript for s in self.sessions]

    def session_ids(self):
        return [s.session_id for s in self.sessions]


WRITES = {w.CREATE, w.CREATE2, w.DELETE, w.SET_DATA, w.SET_ACL, w.MULTI}


def stat(r):
    return r.stat()


def data_stat(r):
    return (r.buf(), r.stat())


def children(r):
    return sorted(r.strings())


def children2(r):
    return (sorted(r.strings()), r.stat())


def acl_stat(r):
    return (r.acl(), r.stat())


def path_only(r):
    return r.str()


def path_stat(r):
    return (r.str(), r.stat())


def multi(r):
    return w.decode_multi(r.b[r.i:])


def normalize(transcripts, session_ids):
    """Replaces zxids by ranks, times by order, session ids by numbers."""
    zxids, times = set(), set()

    def scan(v):
        if isinstance(v, dict) and "czxid" in v:
            zxids.update([v["czxid"], v["mzxid"], v["pzxid"]])
            times.update([v["ctime"], v["mtime"]])
        elif isinstance(v, (list, tuple)):
            for x in v:
                scan(x)

    for t in transcripts:
        for rec in t:
            scan(rec)
            if rec[0] == "reply" and rec[4] is not None:
                zxids.add(rec[4])
    zrank = {z: i for i, z in enumerate(sorted(zxids))}
    trank = {t: i for i, t in enumerate(sorted(times))}
    sids = {sid: "session%d" % i for i, sid in enumerate(session_ids)}

    def norm(v):
        if isinstance(v, dict) and "czxid" in v:
            v = dict(v)
            for k in ("czxid", "mzxid", "pzxid"):
                v[k] = zrank[v[k]]
            for k in ("ctime", "mtime"):
                v[k] = trank[v[k]]
            v["ephemeralOwner"] = sids.get(v["ephemeralOwner"], v["ephemeralOwner"])
            return v
        if isinstance(v, tuple):
            return tuple(norm(x) for x in v)
        if isinstance(v, list):
            return [norm(x) for x in v]
        return v

    out = []
    for t in transcripts:
        recs = []
        for rec in t:
            if rec[0] == "reply":
                recs.append(("reply", rec[1], rec[2], norm(rec[3]), zrank.get(rec[4])))
            else:
                recs.append(rec)
        out.append(recs)
    return out


def run_both(apache_zk, corral_like_apache, script):
    results = []
    for hosts in (apache_zk.hosts, corral_like_apache.hosts):
        rec = Recorder(hosts)
        script(rec)
        rec.settle()
        results.append(normalize(rec.transcripts(), rec.session_ids()))
        for s in rec.sessions:
            s.close()
    zk, corral = results
    for i, (a, b) in enumerate(zip(zk, corral)):
        for j, (x, y) in enumerate(zip(a, b)):
            assert x == y, "session %d, frame %d differs:\n  zookeeper: %r\n  corral:    %r" % (i, j, x, y)
        assert len(a) == len(b), "session %d: zookeeper sent %d frames, corral %d:\n%r\n%r" % (i, len(a), len(b), a, b)
    return zk


def test_znode_modes_errors_and_stats(apache_zk, corral_like_apache):
    def script(r):
        a = r.session()
        r.op(a, "stat /", w.EXISTS, w.path_watch("/"), stat)
        r.op(a, "stat /zookeeper", w.EXISTS, w.path_watch("/zookeeper"), stat)
        r.op(a, "ls /zookeeper", w.GET_CHILDREN2, w.path_watch("/zookeeper"), children2)
        r.op(a, "acl /zookeeper/config", w.GET_ACL, bytes(w.Writer().str("/zookeeper/config").b), acl_stat)
        r.op(a, "create /p", w.CREATE2, w.create_body("/p", b"data"), path_stat)
        r.op(a, "create /p again", w.CREATE2, w.create_body("/p", b"x"), path_stat)
        r.op(a, "create no parent", w.CREATE, w.create_body("/nope/x"), path_only)
        r.op(a, "create null data", w.CREATE2, w.create_body("/p/null", None), path_stat)
        r.op(a, "get null", w.GET_DATA, w.path_watch("/p/null"), data_stat)
        r.op(a, "create empty data", w.CREATE2, w.create_body("/p/empty", b""), path_stat)
        r.op(a, "get empty", w.GET_DATA, w.path_watch("/p/empty"), data_stat)
        r.op(a, "create ephemeral", w.CREATE2, w.create_body("/p/eph", b"e", flags=1), path_stat)
        r.op(a, "child of ephemeral", w.CREATE, w.create_body("/p/eph/c"), path_only)
        for i in range(3):
            r.op(a, "create seq %d" % i, w.CREATE, w.create_body("/p/s-", b"", flags=2), path_only)
        r.op(a, "delete seq 1", w.DELETE, bytes(w.Writer().str("/p/s-0000000004").int(-1).b))
        r.op(a, "delete seq 2", w.DELETE, bytes(w.Writer().str("/p/s-0000000005").int(-1).b))
        r.op(a, "create eph seq", w.CREATE2, w.create_body("/p/es-", b"", flags=3), path_stat)
        r.op(a, "seq at root", w.CREATE, w.create_body("/rs-", b"", flags=2), path_only)
        r.op(a, "ls2 /p", w.GET_CHILDREN2, w.path_watch("/p"), children2)
        r.op(a, "set", w.SET_DATA, bytes(w.Writer().str("/p").buf(b"v2").int(0).b), stat)
        r.op(a, "set bad version", w.SET_DATA, bytes(w.Writer().str("/p").buf(b"v3").int(0).b), stat)
        r.op(a, "set missing", w.SET_DATA, bytes(w.Writer().str("/missing").buf(b"").int(-1).b), stat)
        r.op(a, "delete not empty", w.DELETE, bytes(w.Writer().str("/p").int(-1).b))
        r.op(a, "delete bad version", w.DELETE, bytes(w.Writer().str("/p/empty").int(3).b))
        r.op(a, "delete missing", w.DELETE, bytes(w.Writer().str("/p/none").int(-1).b))
        r.op(a, "delete /", w.DELETE, bytes(w.Writer().str("/").int(-1).b))
        r.op(a, "delete /zookeeper", w.DELETE, bytes(w.Writer().str("/zookeeper").int(-1).b))
        r.op(a, "create empty acl", w.CREATE, w.create_body("/acl0", b"", acl=[]), path_only)
        r.op(a, "create auth acl without auth", w.CREATE, w.create_body("/acl1", b"", acl=[(31, "auth", "")]),
             path_only)
        r.op(a, "create bad world id", w.CREATE, w.create_body("/acl2", b"", acl=[(31, "world", "x")]), path_only)
        r.op(a, "create read-only", w.CREATE, w.create_body("/ro", b"r", acl=[(1, "world", "anyone")]), path_only)
        r.op(a, "set read-only", w.SET_DATA, bytes(w.Writer().str("/ro").buf(b"").int(-1).b), stat)
        r.op(a, "setAcl", w.SET_ACL, bytes(w.Writer().str("/p/empty").acl([(31, "world", "anyone")]).int(0).b), stat)
        r.op(a, "setAcl bad aversion", w.SET_ACL,
             bytes(w.Writer().str("/p/empty").acl([(31, "world", "anyone")]).int(0).b), stat)
        r.op(a, "getAcl", w.GET_ACL, bytes(w.Writer().str("/p/empty").b), acl_stat)
        for bad in ["/trailing/", "//double", "/a/./b", "/a/../b", "/ctl\x01", "relative"]:
            r.op(a, "create %r" % bad, w.CREATE, w.create_body(bad), path_only)
            r.op(a, "exists %r" % bad, w.EXISTS, w.path_watch(bad), stat)
        r.op(a, "stat / after", w.EXISTS, w.path_watch("/"), stat)
        r.op(a, "sync", w.SYNC, bytes(w.Writer().str("/p").b), path_only)

    run_both(apache_zk, corral_like_apache, script)


def test_watch_events_and_their_order(apache_zk, corral_like_apache):
    def script(r):
        a, b = r.session(), r.session()
        r.op(a, "create /w", w.CREATE, w.create_body("/w", b"0"), path_only)
        # b watches /w every way, and a missing node.
        r.op(b, "get+watch", w.GET_DATA, w.path_watch("/w", True), data_stat)
        r.op(b, "exists+watch", w.EXISTS, w.path_watch("/w", True), stat)
        r.op(b, "ls+watch", w.GET_CHILDREN, w.path_watch("/w", True), children)
        r.op(b, "exists missing+watch", w.EXISTS, w.path_watch("/w/new", True), stat)
        r.op(a, "set /w", w.SET_DATA, bytes(w.Writer().str("/w").buf(b"1").int(-1).b), stat)
        r.op(b, "get after set", w.GET_DATA, w.path_watch("/w"), data_stat)
        r.op(a, "create child", w.CREATE, w.create_body("/w/new", b""), path_only)
        r.op(b, "ls after create", w.GET_CHILDREN, w.path_watch("/w"), children)
        # delete with data and child watches set: one NodeDeleted.
        r.op(b, "get child+watch", w.GET_DATA, w.path_watch("/w/new", True), data_stat)
        r.op(b, "ls child+watch", w.GET_CHILDREN, w.path_watch("/w/new", True), children)
        r.op(b, "ls parent+watch", w.GET_CHILDREN, w.path_watch("/w", True), children)
        r.op(a, "delete child", w.DELETE, bytes(w.Writer().str("/w/new").int(-1).b))
        r.op(b, "exists after delete", w.EXISTS, w.path_watch("/w/new"), stat)
        # one-shot: no second event
        r.op(a, "set again", w.SET_DATA, bytes(w.Writer().str("/w").buf(b"2").int(-1).b), stat)
        r.op(b, "get after second set", w.GET_DATA, w.path_watch("/w"), data_stat)
        # a session closes: its ephemerals go, with their events.
        c = r.session()
        r.op(c, "create eph", w.CREATE, w.create_body("/w/eph", b"", flags=1), path_only)
        r.op(b, "watch eph", w.EXISTS, w.path_watch("/w/eph", True), stat)
        r.op(b, "watch children", w.GET_CHILDREN, w.path_watch("/w", True), children)
        r.sessions[c].close()
        r.sessions[b].wait_events(0.5)
        r.op(b, "eph gone", w.EXISTS, w.path_watch("/w/eph"), stat)

    t = run_both(apache_zk, corral_like_apache, script)
    events = [rec for rec in t[1] if rec[0] == "event"]
    assert len(events) >= 6, events


def test_multi_results(apache_zk, corral_like_apache):
    def script(r):
        a = r.session()
        r.op(a, "create /m", w.CREATE, w.create_body("/m", b"v"), path_only)
        create = w.create_body("/m/a", b"a")
        check_ok = bytes(w.Writer().str("/m").int(0).b)
        check_bad = bytes(w.Writer().str("/m").int(5).b)
        setdata = bytes(w.Writer().str("/m").buf(b"v2").int(-1).b)
        delete = bytes(w.Writer().str("/m/a").int(-1).b)
        r.op(a, "multi ok", w.MULTI, w.multi_body([(w.CHECK, check_ok), (w.CREATE, create), (w.SET_DATA, setdata)]),
             multi)
        r.op(a, "multi fails in the middle", w.MULTI,
             w.multi_body([(w.DELETE, delete), (w.CHECK, check_bad), (w.CREATE, w.create_body("/m/b", b""))]), multi)
        r.op(a, "nothing applied", w.EXISTS, w.path_watch("/m/a"), stat)
        r.op(a, "empty multi", w.MULTI, w.multi_body([]), multi)
        r.op(a, "multi missing parent", w.MULTI, w.multi_body([(w.CREATE, w.create_body("/none/x", b""))]), multi)
        r.op(a, "multi delete then create same", w.MULTI,
             w.multi_body([(w.DELETE, delete), (w.CREATE, w.create_body("/m/a", b"again"))]), multi)
        r.op(a, "get /m/a", w.GET_DATA, w.path_watch("/m/a"), data_stat)

    run_both(apache_zk, corral_like_apache, script)


def test_handshake_forms(apache_zk, corral_like_apache):
    for hosts in (apache_zk.hosts, corral_like_apache.hosts):
        host, port = hosts.split(":")
        old = w.Session(host, int(port), 10000, read_only_byte=False)
        new = w.Session(host, int(port), 1000)
        assert (old.connect_response_len, new.connect_response_len) == (36, 37), hosts
        assert (old.timeout_ms, new.timeout_ms) == (10000, 4000), hosts
        # Resume with a wrong password: timeout 0 and session 0.
        bad = w.Session(host, int(port), 10000, session_id=new.session_id, password=b"\1" * 16)
        assert (bad.timeout_ms, bad.session_id) == (0, 0), hosts
        old.close()
        new.close()


def strings(r):
    return sorted(r.strings())


def int_body(r):
    return r.int()


def who(r):
    return sorted((r.str(), r.str()) for _ in range(r.int()))


def test_acls_auth_and_whoami(apache_zk, corral_like_apache):
    alice = (31, "digest", "alice:aYXlLOpEooaV1cRAvUL1fp9Qt7E=")
    def script(r):
        a, b = r.session(), r.session()
        r.sessions[a].transcript.append(("auth", r.sessions[a].auth("digest", b"alice:secret")))
        r.op(a, "whoami", w.WHO_AM_I, b"", who)
        r.op(a, "create private", w.CREATE, w.create_body("/private", b"p", acl=[alice]), path_only)
        r.op(a, "create auth acl", w.CREATE, w.create_body("/mine", b"", acl=[(31, "auth", "")]), path_only)
        r.op(a, "acl of auth node", w.GET_ACL, bytes(w.Writer().str("/mine").b), acl_stat)
        r.op(a, "create mixed", w.CREATE, w.create_body("/mixed", b"", acl=[alice, (1, "world", "anyone")]), path_only)
        r.op(a, "create ip", w.CREATE, w.create_body("/ip", b"", acl=[(31, "ip", "127.0.0.1")]), path_only)
        r.op(a, "create bad ip", w.CREATE, w.create_body("/badip", b"", acl=[(31, "ip", "nonsense")]), path_only)
        r.op(b, "b whoami", w.WHO_AM_I, b"", who)
        r.op(b, "b reads private", w.GET_DATA, w.path_watch("/private"), data_stat)
        r.op(b, "b exists private", w.EXISTS, w.path_watch("/private"), stat)
        r.op(b, "b acl private", w.GET_ACL, bytes(w.Writer().str("/private").b), acl_stat)
        r.op(b, "b acl mixed (masked)", w.GET_ACL, bytes(w.Writer().str("/mixed").b), acl_stat)
        r.op(b, "b sets private", w.SET_DATA, bytes(w.Writer().str("/private").buf(b"x").int(-1).b), stat)
        r.op(b, "b child of private", w.CREATE, w.create_body("/private/c"), path_only)
        r.op(b, "b deletes private", w.DELETE, bytes(w.Writer().str("/private").int(-1).b))
        r.op(b, "b setAcl private", w.SET_ACL, bytes(w.Writer().str("/private").acl(w.OPEN_ACL).int(-1).b), stat)
        r.op(b, "b reads ip node", w.GET_DATA, w.path_watch("/ip"), data_stat)
        r.sessions[b].transcript.append(("auth super", r.sessions[b].auth("digest", b"super:test")))
        r.op(b, "super reads private", w.GET_DATA, w.path_watch("/private"), data_stat)
        c = r.session()
        r.sessions[c].transcript.append(("bad auth", r.sessions[c].auth("nosuch", b"x")))

    run_both(apache_zk, corral_like_apache, script)


def test_containers_ttl_and_3_6_reads(apache_zk, corral_like_apache):
    def script(r):
        a = r.session()
        r.op(a, "container", w.CREATE_CONTAINER, w.create_body("/box", b"", flags=4), path_stat)
        r.op(a, "container via create", w.CREATE, w.create_body("/box2", b"", flags=4), path_only)
        r.op(a, "ttl", w.CREATE_TTL, w.create_body("/ttl", b"t", flags=5, ttl=100000), path_stat)
        r.op(a, "ttl sequential", w.CREATE_TTL, w.create_body("/ttls-", b"", flags=6, ttl=100000), path_stat)
        r.op(a, "ttl zero", w.CREATE_TTL, w.create_body("/ttl0", b"", flags=5, ttl=0), path_stat)
        r.op(a, "ttl with persistent flags", w.CREATE_TTL, w.create_body("/ttl1", b"", flags=0, ttl=1000), path_stat)
        r.op(a, "ttl flags via create2", w.CREATE2, w.create_body("/ttl2", b"", flags=5), path_stat)
        r.op(a, "child in container", w.CREATE, w.create_body("/box/a", b"x"), path_only)
        r.op(a, "eph", w.CREATE, w.create_body("/box/e", b"", flags=1), path_only)
        r.op(a, "ephemerals", w.GET_EPHEMERALS, bytes(w.Writer().str("/").b), strings)
        r.op(a, "ephemerals prefix", w.GET_EPHEMERALS, bytes(w.Writer().str("/box/e").b), strings)
        r.op(a, "all children", w.GET_ALL_CHILDREN_NUMBER, bytes(w.Writer().str("/").b), int_body)
        r.op(a, "all children box", w.GET_ALL_CHILDREN_NUMBER, bytes(w.Writer().str("/box").b), int_body)
        r.op(a, "multiRead", w.MULTI_READ, w.multi_body([
            (w.GET_DATA, w.path_watch("/box/a")), (w.GET_CHILDREN, w.path_watch("/box")),
            (w.GET_DATA, w.path_watch("/nope"))]), multi)
        r.op(a, "addWatch", w.ADD_WATCH, bytes(w.Writer().str("/box").int(1).b), int_body)
        r.op(a, "checkWatches any", w.CHECK_WATCHES, bytes(w.Writer().str("/box").int(3).b))
        r.op(a, "checkWatches data (none)", w.CHECK_WATCHES, bytes(w.Writer().str("/ttl").int(2).b))
        r.op(a, "data watch", w.GET_DATA, w.path_watch("/ttl", True), data_stat)
        r.op(a, "removeWatches data", w.REMOVE_WATCHES, bytes(w.Writer().str("/ttl").int(2).b))
        r.op(a, "removeWatches data again", w.REMOVE_WATCHES, bytes(w.Writer().str("/ttl").int(2).b))
        r.op(a, "removeWatches any", w.REMOVE_WATCHES, bytes(w.Writer().str("/box").int(3).b))
        r.op(a, "set under recursive (removed)", w.SET_DATA, bytes(w.Writer().str("/box/a").buf(b"y").int(-1).b), stat)

    run_both(apache_zk, corral_like_apache, script)


def test_a_read_only_capable_client_on_a_read_write_server(apache_zk, corral_like_apache):
    # A client that accepts read-only servers is served normally, and told the
    # server is read-write (the last byte of the ConnectResponse).
    for hosts in (apache_zk.hosts, corral_like_apache.hosts):
        host, port = hosts.split(":")
        s = w.Session(host, int(port), 10000)
        s.sock.close()
        import socket as so
        import struct as st
        sock = so.create_connection((host, int(port)), timeout=10)
        body = bytes(w.Writer().int(0).long(0).int(10000).long(0).buf(b"\0" * 16).bool(True).b)
        sock.sendall(st.pack(">i", len(body)) + body)
        n = st.unpack(">i", sock.recv(4))[0]
        resp = sock.recv(n)
        assert len(resp) == 37 and resp[-1] == 0, (hosts, resp)
        assert st.unpack(">i", resp[4:8])[0] == 10000
        sock.close()
