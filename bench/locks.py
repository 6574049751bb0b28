#!/usr/bin/env python3
"""A lock acquire and release through Corral's `lock` recipe against
kazoo's client-side Lock recipe (on the same Corral node, and on Apache
ZooKeeper 3.8), for 1, 16 and 64 contenders: acquisitions per second, the
latency of acquire+release, and round trips per acquisition.

    plugins/build.sh && cargo build --release -p corral && bench/.work/venv/bin/python bench/locks.py

Writes docs/perf/locks.json; logs the disk's fsync rate beside it.
"""

import json
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import fsync_probe, log  # noqa: E402
from servers import ROOT, TOKEN, Corral, free_port  # noqa: E402

sys.path.insert(0, str(ROOT / "tests" / "tools"))
from apache_zookeeper import ApacheZooKeeper  # noqa: E402
from kazoo.client import KazooClient  # noqa: E402
from corral_call import call  # noqa: E402

SECONDS = 6


class Counting(KazooClient):
    """Counts the requests this client sends: its round trips."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.requests = 0

    def _call(self, request, async_object):
        self.requests += 1
        return super()._call(request, async_object)


def lock(z, args):
    status, payload = call(z, "lock", json.dumps(args).encode(), timeout=30)
    assert status == 0, payload
    return json.loads(payload)


def recipe_cycle(z, name):
    v = lock(z, {"op": "acquire", "lock": name})
    while not v["acquired"]:
        gone = threading.Event()
        if z.exists(v["waiting_for"], watch=lambda e: gone.set()) is not None:
            gone.wait(30)
        v = lock(z, {"op": "acquire", "lock": name})
    lock(z, {"op": "release", "node": v["node"]})


def kazoo_cycle(z, name):
    lock = z.Lock(name)
    lock.acquire()
    lock.release()


def run(hosts, contenders, cycle, name):
    clients = [Counting(hosts=hosts, timeout=30) for _ in range(contenders)]
    for z in clients:
        z.start(timeout=30)
    if cycle is recipe_cycle and not clients[0].exists("/locks"):
        clients[0].create("/locks")
    lat, stop = [], time.time() + SECONDS
    before = sum(z.requests for z in clients)

    def worker(z):
        while time.time() < stop:
            t = time.perf_counter()
            cycle(z, name)
            lat.append(time.perf_counter() - t)

    threads = [threading.Thread(target=worker, args=(z,)) for z in clients]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.time() - start
    requests = sum(z.requests for z in clients) - before
    for z in clients:
        z.stop()
    lat.sort()
    return {"acquisitions_per_sec": round(len(lat) / took, 1), "p50_ms": round(lat[len(lat) // 2] * 1e3, 2),
            "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3, 2),
            "round_trips_per_acquisition": round(requests / max(len(lat), 1), 2)}


def start_servers(name, plugin):
    """A Corral node with `plugin` deployed and an Apache ZooKeeper, side by
    side, after a probe of the disk's fsync rate: (work dir, fsync, corral, zk)."""
    work = Path(tempfile.mkdtemp(prefix="corral-%s-" % name))
    fsync = fsync_probe(str(work))
    log("fsync probe: %d/s, p50 %.3f ms" % (fsync["per_sec"], fsync["p50_ms"]))
    corral = Corral(work / "corral", settings={"INITIAL_ADMIN_TOKEN": TOKEN})
    zk = ApacheZooKeeper.standalone(work / "zk", free_port())
    body = (ROOT / ("plugins/target/components/current/%s.wasm" % plugin)).read_bytes()
    req = urllib.request.Request("http://127.0.0.1:%d/api/v1/plugins/%s" % (corral.http, plugin), data=body,
                                 method="PUT", headers={"authorization": "Bearer " + TOKEN})
    urllib.request.urlopen(req, timeout=60).read()
    return work, fsync, corral, zk


def write_results(name, work, fsync, results):
    """docs/perf/<name>.json, with the fsync rate before and after."""
    fsync_after = fsync_probe(str(work))
    out = ROOT / "docs" / "perf" / ("%s.json" % name)
    out.write_text(json.dumps({"fsync_before": fsync, "fsync_after": fsync_after, "seconds": SECONDS,
                               "results": results}, indent=2) + "\n")
    log("fsync probe (after): %d/s; wrote %s" % (fsync_after["per_sec"], out))


def main():
    work, fsync, corral, zk = start_servers("locks", "lock")
    results = {}
    try:
        for n in (1, 16, 64):
            for label, hosts, cycle in (("corral recipe", corral.hosts, recipe_cycle),
                                        ("corral + kazoo Lock", corral.hosts, kazoo_cycle),
                                        ("zookeeper + kazoo Lock", zk.hosts, kazoo_cycle)):
                r = run(hosts, n, cycle, "/locks/l%d" % n)
                results["%s, %d contenders" % (label, n)] = r
                log("  %-24s %2d contenders: %7.1f acquisitions/s  p50 %7.2f  p99 %7.2f ms  %.2f round trips" % (
                    label, n, r["acquisitions_per_sec"], r["p50_ms"], r["p99_ms"], r["round_trips_per_acquisition"]))
    finally:
        corral.kill9()
        zk.stop()
    write_results("locks", work, fsync, results)


if __name__ == "__main__":
    main()
