"""Five Corral members under constant load while they fail: the scenario of
the ZooKeeper paper's Figure 8 (Hunt et al., USENIX ATC 2010).

Sessions are spread over all five members and reconnect to the next one
when theirs fails. During the run:
  1. a follower fails, and recovers;
  2. the leader fails, and recovers;
  3. two followers fail together, and recover.
Throughput is sampled every 100 ms by `corral bench`; the plot marks each
failure and recovery.

    bench/.work/venv/bin/python bench/timeline.py [--out docs/perf/timeline-5-nodes.png]

(bench/compare.sh installs matplotlib in bench/.work/venv.)
"""

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from servers import CORRAL, CorralCluster  # noqa: E402

WARMUP = 3.0
DURATION = 48.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "docs" / "perf" / "timeline-5-nodes.png"))
    ap.add_argument("--read-pct", type=int, default=70)
    opts = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="corral-timeline-"))
    cluster = CorralCluster(work, 5)
    result = work / "bench.json"
    cmd = [str(CORRAL), "bench", "--servers", cluster.hosts, "--workload", "mixed", "--read-pct", str(opts.read_pct),
           "--sessions", "25", "--inflight", "4", "--keys", "1000", "--warmup", str(WARMUP), "--duration",
           str(DURATION), "--reconnect", "--quiet", "--json-out", str(result), "--session-timeout-ms", "10000"]
    events = []
    try:
        bench = subprocess.Popen(cmd)
        t0 = time.perf_counter() + WARMUP

        def at(t):
            time.sleep(max(0.0, t0 + t - time.perf_counter()))

        def mark(what):
            events.append((time.perf_counter() - t0, what))
            print("%6.1f s  %s" % (events[-1][0], what), flush=True)

        leader = cluster.leader()
        followers = [i for i in range(5) if i != leader]
        at(6)
        cluster.kill_node(followers[0])
        mark("follower %d fails" % (followers[0] + 1))
        at(12)
        cluster.restart_node(followers[0])
        mark("follower %d recovers" % (followers[0] + 1))
        at(18)
        leader = cluster.leader()
        cluster.kill_node(leader)
        mark("leader %d fails" % (leader + 1))
        at(26)
        cluster.restart_node(leader)
        mark("member %d recovers" % (leader + 1))
        at(32)
        leader = cluster.leader()
        a, b = [i for i in range(5) if i != leader][:2]
        cluster.kill_node(a)
        cluster.kill_node(b)
        mark("followers %d and %d fail" % (a + 1, b + 1))
        at(40)
        threads = [threading.Thread(target=cluster.restart_node, args=(i,)) for i in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        mark("followers %d and %d recover" % (a + 1, b + 1))
        bench.wait()
    finally:
        cluster.stop()
    r = json.loads(result.read_text())
    xs = [t for t, _ in r["timeline"]]
    ys = [v for _, v in r["timeline"]]

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.figure(figsize=(10, 4.5))
    plt.plot(xs, ys, color="tab:blue", linewidth=1)
    top = max(ys) * 1.05
    for t, what in events:
        plt.axvline(t, color="tab:red" if "fail" in what else "tab:green", linestyle="--", linewidth=0.8)
        plt.text(t + 0.2, top * 0.97, what, rotation=90, va="top", fontsize=8)
    plt.ylim(0, top)
    plt.xlabel("seconds")
    plt.ylabel("operations per second (100 ms windows)")
    plt.title("5 Corral members, %d%% reads, 25 sessions × 4 in flight, 1 KiB" % opts.read_pct)
    plt.grid(alpha=0.3)
    plt.tight_layout()
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    plt.savefig(opts.out, dpi=110)
    summary = {"ops_per_sec": r["ops_per_sec"], "errors": r["errors"], "events": events,
               "lowest_window": min(ys), "median_window": sorted(ys)[len(ys) // 2]}
    Path(opts.out).with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
