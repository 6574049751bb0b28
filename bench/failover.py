"""Failover time: kill -9 of the leader of a 3-member cluster, to the first
write acknowledged after it, for Corral and Apache ZooKeeper 3.8 on the
same machine with the same client.

The client is a minimal ZooKeeper-protocol writer on a surviving member: it
sends `setData` in a loop (a new session whenever its connection breaks)
and the time counted is from the kill to the first reply of a write *sent
after* the kill, so a write the old leader committed does not count. After
each try the killed member is restarted and the cluster settles.

    bench/.work/venv/bin/python bench/failover.py [--tries 20] [--out docs/perf/failover.json]

Corral runs with its default timers (election timeout, heartbeat), ZooKeeper
with tickTime 2000 and initLimit/syncLimit as apache-zk.sh sets them.
"""

import argparse
import json
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "tools"))
sys.path.insert(0, str(ROOT / "bench"))
from apache_zookeeper import ApacheZooKeeper, free_base  # noqa: E402
from servers import CorralCluster  # noqa: E402

PATH = "/failover"


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise OSError("closed")
        out += chunk
    return out


def frame(body):
    return struct.pack(">i", len(body)) + body


def session(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=0.5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(2.0)
    s.sendall(frame(struct.pack(">iqiqi", 0, 0, 10000, 0, 16) + b"\0" * 16 + b"\0"))
    n = struct.unpack(">i", recv_exact(s, 4))[0]
    body = recv_exact(s, n)
    if struct.unpack(">i", body[4:8])[0] <= 0:
        raise OSError("session refused")
    return s


def call(s, xid, opcode, body):
    s.sendall(frame(struct.pack(">ii", xid, opcode) + body))
    while True:
        n = struct.unpack(">i", recv_exact(s, 4))[0]
        reply = recv_exact(s, n)
        rxid, _, err = struct.unpack(">iqi", reply[:16])
        if rxid == xid:
            return err


def set_body(value):
    p = PATH.encode()
    return struct.pack(">i", len(p)) + p + struct.pack(">i", len(value)) + value + struct.pack(">i", -1)


class Writer(threading.Thread):
    """Writes in a loop on one member; records when each acknowledged write
    was sent and answered."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.acks = []  # (sent, answered)
        self.stop = False

    def run(self):
        s, xid = None, 0
        while not self.stop:
            try:
                if s is None:
                    s = session(self.port)
                xid += 1
                sent = time.perf_counter()
                if call(s, xid, 5, set_body(b"%d" % xid)) == 0:
                    self.acks.append((sent, time.perf_counter()))
            except (OSError, struct.error):
                if s is not None:
                    s.close()
                s = None
                time.sleep(0.002)


def create_path(port):
    s = session(port)
    p = PATH.encode()
    body = struct.pack(">i", len(p)) + p + struct.pack(">i", 0) + struct.pack(">i", 1) + struct.pack(
        ">i", 31) + struct.pack(">i", 5) + b"world" + struct.pack(">i", 6) + b"anyone" + struct.pack(">i", 0)
    call(s, 1, 1, body)
    s.close()


def measure(cluster, ports, tries, label):
    create_path(ports[0])
    times = []
    for t in range(tries):
        leader = cluster.leader()
        survivor = (leader + 1) % len(ports)
        w = Writer(ports[survivor])
        w.start()
        while len(w.acks) < 20:
            time.sleep(0.01)
        t0 = time.perf_counter()
        cluster.kill_node(leader)
        deadline = t0 + 30
        first = None
        while time.perf_counter() < deadline and first is None:
            after = [a for (s, a) in w.acks if s > t0]
            first = min(after) if after else None
            time.sleep(0.001)
        w.stop = True
        w.join()
        if first is None:
            raise RuntimeError("%s: no write acknowledged within 30 s of the kill" % label)
        times.append(first - t0)
        print("%s try %2d: leader %d killed, first write after %.0f ms" % (label, t + 1, leader + 1,
                                                                            (first - t0) * 1000), flush=True)
        cluster.restart_node(leader)
        time.sleep(1.0)
    return {"tries": tries, "median_ms": round(statistics.median(times) * 1000, 1),
            "worst_ms": round(max(times) * 1000, 1), "best_ms": round(min(times) * 1000, 1),
            "all_ms": [round(x * 1000, 1) for x in times]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tries", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "docs" / "perf" / "failover.json"))
    ap.add_argument("--only", choices=["corral", "zookeeper"])
    ap.add_argument("--corral-setting", action="append", default=[], metavar="KEY=VALUE",
                    help="a Corral configuration key for every member, e.g. election_timeout_max_ms=400")
    opts = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="corral-failover-"))
    results = {}
    if opts.only != "zookeeper":
        c = CorralCluster(work / "corral", 3, settings=dict(kv.split("=", 1) for kv in opts.corral_setting))
        try:
            results["corral-3"] = measure(c, c.ports, opts.tries, "corral")
        finally:
            c.stop()
    if opts.only != "corral":
        z = ApacheZooKeeper.ensemble(work / "zk", free_base())
        try:
            results["zookeeper-3"] = measure(z, z.ports, opts.tries, "zookeeper")
        finally:
            z.stop()
    for name, r in results.items():
        print("%-12s median %.0f ms, worst %.0f ms over %d tries" % (name, r["median_ms"], r["worst_ms"], r["tries"]))
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
