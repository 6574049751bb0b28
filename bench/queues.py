#!/usr/bin/env python3
"""A distributed queue: Corral's `queue` recipe (an atomic take, one round
trip) against kazoo's client-side Queue (list the children, read the
lowest, race to delete it) on the same Corral node and on Apache ZooKeeper
3.8. Producers and consumers run together for a fixed time (a consumer that
finds the queue empty watches its children before asking again); then the
queue is drained and every item is checked to have been taken exactly
once.

    plugins/build.sh && cargo build --release -p corral && bench/.work/venv/bin/python bench/queues.py

Writes docs/perf/queue.json; logs the disk's fsync rate beside it.
"""

import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import log  # noqa: E402
from locks import Counting, start_servers, write_results  # noqa: E402
from servers import ROOT  # noqa: E402

sys.path.insert(0, str(ROOT / "tests" / "tools"))
from corral_call import call  # noqa: E402

SECONDS = 6


def recipe(z, args):
    status, payload = call(z, "queue", json.dumps(args).encode(), timeout=30)
    assert status == 0, payload
    return json.loads(payload)


def wait_for_items(z, path):
    """What a consumer of an empty queue does: reads the queue's children
    (a local read, not a log entry) with a watch, and waits for the watch
    (up to 100 ms) while there are none, instead of asking again at once."""
    changed = threading.Event()
    try:
        if z.get_children(path, watch=lambda e: changed.set()):
            return
    except Exception:  # the queue node does not exist yet
        pass
    changed.wait(0.1)


class RecipeQueue:
    def __init__(self, z, path):
        self.z, self.path = z, path

    def wait(self):
        wait_for_items(self.z, self.path)

    def put(self, data):
        recipe(self.z, {"op": "put", "queue": self.path, "data": data.decode()})

    def get(self):
        v = recipe(self.z, {"op": "take", "queue": self.path})
        return None if v["item"] is None else v["data"].encode()


class KazooQueue:
    def __init__(self, z, path):
        self.z, self.path, self.q = z, path, z.Queue(path)

    def wait(self):
        wait_for_items(self.z, self.path)

    def put(self, data):
        self.q.put(data)

    def get(self):
        return self.q.get()


def run(hosts, producers, consumers, make, path):
    clients = [Counting(hosts=hosts, timeout=30) for _ in range(producers + consumers)]
    for z in clients:
        z.start(timeout=30)
    queues = [make(z, path) for z in clients]
    stop = time.time() + SECONDS
    put, taken, lat = [], [], []
    lock = threading.Lock()

    def producer(i, q):
        n = 0
        while time.time() < stop:
            item = b"p%d-%d" % (i, n)
            q.put(item)
            with lock:
                put.append(item)
            n += 1

    def consumer(q):
        while time.time() < stop:
            t = time.perf_counter()
            item = q.get()
            if item is None:
                q.wait()
                continue
            with lock:
                lat.append(time.perf_counter() - t)
                taken.append(item)

    before = sum(z.requests for z in clients)
    threads = [threading.Thread(target=producer, args=(i, queues[i])) for i in range(producers)]
    threads += [threading.Thread(target=consumer, args=(queues[producers + i],)) for i in range(consumers)]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.time() - start
    during = len(taken)
    requests = sum(z.requests for z in clients) - before
    # Drain what is left, then check: every item put was taken once.
    while True:
        item = queues[-1].get()
        if item is None:
            break
        taken.append(item)
    for z in clients:
        z.stop()
    assert len(taken) == len(set(taken)), "an item was taken twice"
    assert sorted(taken) == sorted(put), "items lost: %d put, %d taken" % (len(put), len(taken))
    lat.sort()
    return {"puts": len(put), "takes_per_sec": round(during / took, 1),
            "take_p50_ms": round(lat[len(lat) // 2] * 1e3, 2) if lat else None,
            "take_p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3, 2) if lat else None,
            "requests_per_item": round(requests / max(during, 1), 2), "exactly_once": True}


def main():
    work, fsync, corral, zk = start_servers("queue", "queue")
    results = {}
    try:
        for p, c in ((1, 1), (4, 4), (4, 16)):
            for label, hosts, make in (("corral recipe", corral.hosts, RecipeQueue),
                                       ("corral + kazoo Queue", corral.hosts, KazooQueue),
                                       ("zookeeper + kazoo Queue", zk.hosts, KazooQueue)):
                r = run(hosts, p, c, make, "/q-%d-%d-%d" % (p, c, len(results)))
                results["%s, %d producers, %d consumers" % (label, p, c)] = r
                log("  %-24s %2d/%2d: %7.1f takes/s  p50 %7.2f  p99 %7.2f ms  %.2f requests/item  (%d items, exactly once)" % (
                    label, p, c, r["takes_per_sec"], r["take_p50_ms"] or 0, r["take_p99_ms"] or 0,
                    r["requests_per_item"], r["puts"]))
    finally:
        corral.kill9()
        zk.stop()
    write_results("queue", work, fsync, results)

if __name__ == "__main__":
    main()
