#!/usr/bin/env python3
"""Sequential rates: one session, one request at a time, 1 KiB values,
create then get, on one Corral node and one Apache ZooKeeper 3.8 node
(both fsyncing), with the same client (`corral bench`). This is the
latency-bound figure: every create waits for its fsync.

    cargo build --release -p corral && bench/.work/venv/bin/python bench/sequential.py

Writes docs/perf/sequential.json; logs the disk's fsync rate beside it.
"""

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import bench, fsync_probe, log  # noqa: E402
from servers import ROOT, Corral, free_port  # noqa: E402

sys.path.insert(0, str(ROOT / "tests" / "tools"))
from apache_zookeeper import ApacheZooKeeper  # noqa: E402


def main():
    work = Path(tempfile.mkdtemp(prefix="corral-sequential-"))
    fsync = fsync_probe(str(work))
    log("fsync probe: %d/s, p50 %.3f ms" % (fsync["per_sec"], fsync["p50_ms"]))
    servers = {"corral-1": Corral(work / "corral"), "zookeeper-1": ApacheZooKeeper.standalone(work / "zk", free_port())}
    results = {}
    try:
        for workload in ["create", "get"]:
            for name, s in servers.items():
                r = bench(s.hosts, "%s %s" % (name, workload), workload=workload, sessions=1, inflight=1,
                          value_size=1024, keys=2000, warmup=1, duration=8, prefix="/seq-" + workload)
                results["%s %s" % (name, workload)] = {"ops_per_sec": round(r["ops_per_sec"]),
                                                       "p50_ms": r["latency"]["p50"], "p99_ms": r["latency"]["p99"]}
    finally:
        for s in servers.values():
            s.stop()
    fsync_after = fsync_probe(str(work))
    log("fsync probe (after): %d/s" % fsync_after["per_sec"])
    out = ROOT / "docs" / "perf" / "sequential.json"
    out.write_text(json.dumps({"fsync_before": fsync, "fsync_after": fsync_after, "results": results}, indent=2) + "\n")
    log("wrote %s" % out)


if __name__ == "__main__":
    main()
