"""Sustained writes at the highest rate this machine reaches, across many
snapshots and log purges, on 3 members: the conditions of openraft#2116 (a
snapshot-purge/apply race that kills the Raft core). Passes when every member
is still running, no Raft core failed, and all members end with the same
digest at the same applied index.

    bench/.work/venv/bin/python bench/snapshot_soak.py [--seconds 120] [--snapshot-every 5000]

The result goes to docs/perf/snapshot-soak.json.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from servers import CORRAL, TOKEN, CorralCluster  # noqa: E402


def view(node):
    req = urllib.request.Request("http://127.0.0.1:%d/api/v1/cluster" % node.http,
                                 headers={"authorization": "Bearer " + TOKEN})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=120)
    ap.add_argument("--snapshot-every", type=int, default=5000)
    ap.add_argument("--logs-to-keep", type=int, default=10000)
    ap.add_argument("--out", default=str(ROOT / "docs" / "perf" / "snapshot-soak.json"))
    opts = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="corral-soak-"))
    settings = {"snapshot_every_entries": str(opts.snapshot_every), "snapshot_logs_to_keep": str(opts.logs_to_keep)}
    c = CorralCluster(work, 3, settings=settings)
    try:
        out = work / "bench.json"
        subprocess.run([str(CORRAL), "bench", "--servers", c.hosts, "--workload", "set", "--sessions", "48",
                        "--inflight", "16", "--keys", "5000", "--value-size", "256", "--warmup", "2", "--duration",
                        str(opts.seconds), "--quiet", "--json-out", str(out)], check=True)
        r = json.loads(out.read_text())
        alive = [n.proc is not None and n.proc.poll() is None for n in c.nodes]
        logs = "".join((n.dir / "log").read_text(errors="replace") for n in c.nodes)
        failed = "Raft core failed" in logs or "panicked" in logs
        deadline = time.time() + 60
        while True:
            views = [view(n) for n in c.nodes]
            states = {(v["applied_index"], v["digest"]) for v in views}
            if len(states) == 1 or time.time() > deadline:
                break
            time.sleep(0.2)
        snapshots = sum(len(list((n.dir / "data" / "snapshots").glob("snap-*.bin"))) for n in c.nodes)
        result = {"writes_per_sec": round(r["ops_per_sec"]), "writes": r["ops"], "errors": r["errors"],
                  "snapshot_every_entries": opts.snapshot_every, "last_index": views[0]["applied_index"],
                  "snapshots_built_per_member": views[0]["applied_index"] // opts.snapshot_every,
                  "snapshot_files_now": snapshots, "all_alive": all(alive), "raft_core_failed": failed,
                  "converged": len(states) == 1}
        print(json.dumps(result, indent=1))
        Path(opts.out).write_text(json.dumps(result, indent=1) + "\n")
        if not (all(alive) and not failed and len(states) == 1):
            sys.exit("FAILED: see %s" % work)
    finally:
        c.stop()


if __name__ == "__main__":
    main()
