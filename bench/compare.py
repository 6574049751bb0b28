"""Runs the same workloads against Corral and Apache ZooKeeper 3.8, interleaved,
and writes a Markdown report with ratios and plots.

Every figure is measured with the same client (`corral bench`, plus
ZooKeeper's own C `load_gen` as a second, independent client), against
servers that all fsync their logs, with the disk's fsync rate probed beside
the results. Ratios are Corral / ZooKeeper: above 1 is better for
throughput, below 1 is better for latency, memory and restart time.

Started by bench/compare.sh, which installs what this needs.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "tools"))
sys.path.insert(0, str(ROOT / "bench"))
from apache_zookeeper import ApacheZooKeeper, free_base  # noqa: E402
from servers import CORRAL, Corral, CorralCluster, free_port  # noqa: E402

LOAD_GEN = "/usr/lib/zookeeper/bin/load_gen"


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def fsync_probe(directory, seconds=3.0):
    """4 KiB appends, each followed by fdatasync: the disk's durable-write rate."""
    path = os.path.join(directory, "fsync-probe.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    buf = os.urandom(4096)
    lat = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        os.write(fd, buf)
        os.fdatasync(fd)
        lat.append(time.perf_counter() - t)
    os.close(fd)
    os.unlink(path)
    lat.sort()
    return {"per_sec": round(len(lat) / sum(lat)), "p50_ms": round(lat[len(lat) // 2] * 1e3, 3)}


def rss_mb(pids):
    total = 0
    for pid in pids:
        with open("/proc/%d/status" % pid) as f:
            total += int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    return round(total / 1024, 1)


def bench(hosts, label, **kw):
    """One `corral bench` run; returns its JSON result."""
    out = tempfile.mktemp(suffix=".json")
    cmd = [str(CORRAL), "bench", "--servers", hosts, "--json-out", out, "--quiet", "--label", label]
    for k, v in kw.items():
        cmd += ["--" + k.replace("_", "-"), str(v)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("bench failed: %s\n%s" % (" ".join(cmd), p.stderr))
    with open(out) as f:
        r = json.load(f)
    os.unlink(out)
    errors = sum(r["errors"].values())
    log("  %-28s %-12s %10.0f ops/s  p50 %7.3f  p99 %7.3f ms%s" % (
        label, hosts.split(",")[0], r["ops_per_sec"], r["latency"]["p50"], r["latency"]["p99"],
        "  errors %d" % errors if errors else ""))
    return r


def load_gen(hosts, path, children, seconds):
    """ZooKeeper's C load generator: rates of its create/set/get/delete phases."""
    p = subprocess.run(["timeout", str(seconds), LOAD_GEN, hosts, path, str(children)], capture_output=True,
                       text=True)
    stamps = []
    for line in (p.stdout + p.stderr).splitlines():
        m = re.match(r"(\d+-\d+-\d+ \d+:\d+:\d+,\d+).*(Creating children|Starting the write cycle|"
                     r"Starting the read cycle|Starting the delete cycle)", line)
        if m:
            t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            stamps.append((t, m.group(2)))
    names = {"Creating children": "create", "Starting the write cycle": "set", "Starting the read cycle": "get",
             "Starting the delete cycle": "delete"}
    rates = {v: [] for v in names.values()}
    for (t0, what), (t1, _) in zip(stamps, stamps[1:]):
        if t1 > t0:
            rates[names[what]].append(children / (t1 - t0))
    return {k: round(statistics.median(v)) for k, v in rates.items() if v}


def _recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise OSError("closed")
        out += chunk
    return out


def first_read_after_restart(start, hosts, path):
    """Seconds from launching a server to its first successful getData."""
    host, port = hosts.split(",")[0].split(":")
    t0 = time.perf_counter()
    start()
    req = struct.pack(">ii", 1, 4) + struct.pack(">i", len(path)) + path.encode() + b"\0"
    while time.perf_counter() - t0 < 300:
        try:
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(struct.pack(">i", 45) + struct.pack(">iqiqi", 0, 0, 30000, 0, 16) + b"\0" * 17)
                n = struct.unpack(">i", _recv_exact(s, 4))[0]
                _recv_exact(s, n)
                s.sendall(struct.pack(">i", len(req)) + req)
                head = _recv_exact(s, 20)
                if struct.unpack(">iiqi", head)[3] == 0:
                    return round(time.perf_counter() - t0, 2)
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError("no successful read within 300 s")


def machine():
    cpu = ""
    with open("/proc/cpuinfo") as f:
        m = re.search(r"model name\s*:\s*(.*)", f.read())
        cpu = m.group(1) if m else "?"
    with open("/proc/meminfo") as f:
        mem = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1)) // 1024 // 1024
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    return {"cpus": os.cpu_count(), "cpu": cpu, "ram_gib": mem, "kernel": platform.release(), "rustc": rustc,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short durations: a smoke run of every step")
    ap.add_argument("--out", default=str(ROOT / "docs" / "performance.md"))
    opts = ap.parse_args()
    q = opts.quick
    warmup, duration = (0.5, 1.5) if q else (2, 8)
    work = Path(tempfile.mkdtemp(prefix="corral-compare-"))
    results = {"machine": machine(), "quick": q, "fsync": [], "runs": [], "rss": {}, "restart": {},
               "load_gen": {}}

    def probe(when):
        f = fsync_probe(str(work))
        f["when"] = when
        results["fsync"].append(f)
        log("fsync probe (%s): %d/s, p50 %.3f ms" % (when, f["per_sec"], f["p50_ms"]))

    probe("start")
    log("starting servers")
    servers = {
        "corral-1": Corral(work / "corral-1"),
        "zookeeper-1": ApacheZooKeeper.standalone(work / "zk-1", free_port(), heap="2g"),
        "zookeeper-3": ApacheZooKeeper.ensemble(work / "zk-3", free_base(), heap="2g"),
        "corral-3": CorralCluster(work / "corral-3", 3),
    }
    try:
        def run_all(tag, **kw):
            for name, s in servers.items():
                r = bench(s.hosts, "%s %s" % (name, tag), warmup=warmup, duration=duration,
                          prefix="/b-%s" % re.sub(r"[^a-z0-9]", "-", tag), **kw)
                r["server"], r["tag"] = name, tag
                results["runs"].append(r)

        log("read/write mixes by session count")
        for sessions in (1, 16, 256):
            for mix, pct in (("read-heavy", 90), ("write-heavy", 10)):
                run_all("%s %d sessions" % (mix, sessions), workload="mixed", read_pct=pct, sessions=sessions,
                        inflight=8, keys=10000)
        probe("after the mixes")
        log("throughput against the percentage of reads (the ZooKeeper paper's Figure 5)")
        for pct in (0, 20, 40, 60, 80, 90, 100):
            run_all("reads %d%%" % pct, workload="mixed", read_pct=pct, sessions=16, inflight=8, keys=10000)
        probe("after the sweep")
        log("single operations, 16 sessions")
        # Creates are bounded in count, so that the tree every server holds
        # stays the same size whatever its speed.
        run_all("create", workload="create", sessions=16, inflight=8, ops=20000 if q else 100000)
        for wl in ("set", "get", "exists", "multi"):
            run_all(wl, workload=wl, sessions=16, inflight=8, keys=10000)
        run_all("children", workload="children", sessions=16, inflight=8, keys=50)
        run_all("churn", workload="churn", sessions=16)
        run_all("watch fan-out", workload="watch", watchers=100 if q else 10000, rounds=5 if q else 10)
        probe("after single operations")
        log("load_gen (ZooKeeper's C client)")
        for name, s in servers.items():
            results["load_gen"][name] = load_gen(s.hosts, "/lg", 500 if q else 2000, 8 if q else 20)
            log("  %s: %s" % (name, results["load_gen"][name]))
    finally:
        for s in servers.values():
            s.stop()

    log("memory: RSS with 100,000 znodes of 1 KiB")
    n = 10000 if q else 100000
    for name, make in (("corral-1", lambda d: Corral(d)),
                       ("zookeeper-1", lambda d: ApacheZooKeeper.standalone(d, free_port()))):
        s = make(work / ("rss-" + name))
        try:
            bench(s.hosts, "%s load" % name, workload="create", ops=n, value_size=1024, sessions=16, inflight=32,
                  warmup=0, duration=600, prefix="/rss")
            time.sleep(5)  # the load over: what a server keeps once idle
            results["rss"][name] = {"znodes": n, "rss_mb": rss_mb(s.pids())}
            log("  %s: %.1f MB" % (name, results["rss"][name]["rss_mb"]))
        finally:
            s.stop() if isinstance(s, ApacheZooKeeper) else s.kill9()

    log("restart: kill -9, then launch to first served read, with 1,000,000 znodes")
    n = 50000 if q else 1000000
    for name in ("corral-1", "zookeeper-1"):
        d = work / ("restart-" + name)
        if name == "corral-1":
            s = Corral(d)
        else:
            s = ApacheZooKeeper.standalone(d, free_port(), heap="2g")
        bench(s.hosts, "%s load" % name, workload="create", ops=n, value_size=64, sessions=16, inflight=64,
              warmup=0, duration=1200, prefix="/big")
        if name == "corral-1":
            s.kill9()
            secs = first_read_after_restart(s.start, s.hosts, "/big")
            s.kill9()
        else:
            s.kill9()
            secs = first_read_after_restart(s.relaunch, s.hosts, "/big")
            s.stop()
        results["restart"][name] = {"znodes": n, "seconds": secs}
        log("  %s: first read %.2f s after launch" % (name, secs))
    probe("end")

    shutil.rmtree(work, ignore_errors=True)
    write_report(results, Path(opts.out))


def by(results, server, tag):
    for r in results["runs"]:
        if r["server"] == server and r["tag"] == tag:
            return r
    return None


def targets_section(results, plugins_json):
    """The issue's targets, one row each: Corral, ZooKeeper, the ratio, and
    whether the target is met. Throughput must be at least 2x ZooKeeper's,
    p99 no worse, RSS at most a quarter; restart and fan-out are absolute."""
    L = ["## The targets at a glance\n",
         "Each target of the performance brief against this run's figures; the sections below have the detail, "
         "and \"What limits the figures that miss their targets\" the profiles behind each miss.\n",
         "| target | figure | Corral | ZooKeeper | ratio | met |", "|---|---|---|---|---|---|"]

    def row(target, figure, c, z, ok, fmt="%.0f", show_ratio=True):
        L.append("| %s | %s | %s | %s | %s | %s |" % (
            target, figure, fmt % c if c is not None else "—", fmt % z if z is not None else "—",
            ratio(c, z) if show_ratio else "—", "yes" if ok else "**no**"))

    for nodes in (1, 3):
        for mix, what in (("write-heavy", "writes"), ("read-heavy", "reads")):
            for sessions in (1, 16, 256):
                tag = "%s %d sessions" % (mix, sessions)
                c, z = by(results, "corral-%d" % nodes, tag), by(results, "zookeeper-%d" % nodes, tag)
                if c and z:
                    row("%s ≥ 2× (%d node%s)" % (what, nodes, "s" if nodes > 1 else ""), "%s, %d sessions, ops/s"
                        % (mix, sessions), c["ops_per_sec"], z["ops_per_sec"], c["ops_per_sec"] >= 2 * z["ops_per_sec"])
        for pct, what in ((0, "writes"), (100, "reads")):
            c, z = by(results, "corral-%d" % nodes, "reads %d%%" % pct), by(results, "zookeeper-%d" % nodes, "reads %d%%" % pct)
            if c and z:
                row("%s ≥ 2× (%d node%s)" % (what, nodes, "s" if nodes > 1 else ""), "only %s, 16 sessions, ops/s"
                    % what, c["ops_per_sec"], z["ops_per_sec"], c["ops_per_sec"] >= 2 * z["ops_per_sec"])
    for nodes in (1, 3):
        for mix in ("write-heavy", "read-heavy"):
            for sessions in (1, 16, 256):
                tag = "%s %d sessions" % (mix, sessions)
                c, z = by(results, "corral-%d" % nodes, tag), by(results, "zookeeper-%d" % nodes, tag)
                if c and z:
                    row("p99 no worse (%d node%s)" % (nodes, "s" if nodes > 1 else ""), "%s, %d sessions, ms" % (mix, sessions),
                        c["latency"]["p99"], z["latency"]["p99"], c["latency"]["p99"] <= z["latency"]["p99"], fmt="%.1f")
    rc, rz = results["rss"].get("corral-1"), results["rss"].get("zookeeper-1")
    if rc and rz:
        row("RSS ≤ 0.25×", "after %d znodes of 1 KiB, MB" % rc["znodes"], rc["rss_mb"], rz["rss_mb"],
            rc["rss_mb"] <= 0.25 * rz["rss_mb"], fmt="%.1f")
    sc, sz = results["restart"].get("corral-1"), results["restart"].get("zookeeper-1")
    if sc and sz:
        row("restart < 5 s", "kill -9 to first read, %d znodes, s" % sc["znodes"], sc["seconds"], sz["seconds"],
            sc["seconds"] < 5, fmt="%.2f")
    for nodes in (1, 3):
        c, z = by(results, "corral-%d" % nodes, "watch fan-out"), by(results, "zookeeper-%d" % nodes, "watch fan-out")
        if c and z and c["fanout_complete"] and z["fanout_complete"]:
            row("fan-out < 100 ms (%d node%s)" % (nodes, "s" if nodes > 1 else ""),
                "%d watchers, last notified (median), ms" % c["args"]["watchers"], c["fanout_complete"]["p50"],
                z["fanout_complete"]["p50"], c["fanout_complete"]["p50"] < 100, fmt="%.0f")
    if plugins_json.exists():
        w = json.loads(plugins_json.read_text())["writes"]
        row("validated writes ≤ 1.1× the cost of plain ones", "plain ÷ validated writes/s (`bench/plugins.py`, "
            "its own run; Corral only)", w["slowdown"], None, w["slowdown"] <= 1.1, fmt="%.2f×", show_ratio=False)
    L.append("")
    return L


def ratio(a, b):
    return "%.2f×" % (a / b) if a and b else "—"


def write_report(results, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = out.parent / "perf"
    figs.mkdir(parents=True, exist_ok=True)
    (figs / "results.json").write_text(json.dumps(results, indent=1))
    colors = {"corral-1": "tab:blue", "zookeeper-1": "tab:orange", "zookeeper-3": "tab:green",
              "corral-3": "tab:purple"}
    servers = sorted({r["server"] for r in results["runs"]})

    pcts = [0, 20, 40, 60, 80, 90, 100]
    plt.figure(figsize=(7, 4.5))
    for s in servers:
        ys = [by(results, s, "reads %d%%" % p)["ops_per_sec"] for p in pcts]
        plt.plot(pcts, ys, marker="o", label=s, color=colors.get(s))
    plt.xlabel("percentage of reads")
    plt.ylabel("operations per second")
    plt.title("Throughput against read share (16 sessions × 8 in flight, 1 KiB)")
    plt.grid(alpha=0.3)
    plt.legend()
    plt.tight_layout()
    plt.savefig(figs / "throughput-vs-reads.png", dpi=110)
    plt.close()

    for tag in ("read-heavy 16 sessions", "write-heavy 16 sessions", "write-heavy 1 sessions"):
        plt.figure(figsize=(7, 4.5))
        for s in servers:
            r = by(results, s, tag)
            xs, ys = zip(*r["cdf"])
            plt.plot(xs, ys, label=s, color=colors.get(s))
        plt.xscale("log")
        plt.xlabel("latency (ms, log scale)")
        plt.ylabel("fraction of requests")
        plt.title("Latency CDF: %s" % tag)
        plt.grid(alpha=0.3)
        plt.legend()
        plt.tight_layout()
        plt.savefig(figs / ("cdf-%s.png" % tag.replace(" ", "-")), dpi=110)
        plt.close()

    m = results["machine"]
    L = []
    L.append("# Performance: Corral against Apache ZooKeeper 3.8\n")
    L.append("Measured side by side on one machine, with the same client, interleaved: every workload runs "
             "against each server in turn before the next workload starts, so drifts in the disk's speed hit "
             "both. All servers fsync their logs. Ratios are Corral ÷ ZooKeeper: above 1 is better for "
             "throughput, below 1 is better for latency, memory and restart time.\n")
    L.append("Reproduce with `bench/compare.sh` (about 15 minutes; `--quick` for a smoke run).%s\n"
             % (" **This report is from a `--quick` run: durations were cut short.**" if results["quick"] else ""))
    L.append("## Machine\n")
    L.append("| | |\n|---|---|")
    L.append("| date | %s |" % m["date"])
    L.append("| CPU | %d × %s |" % (m["cpus"], m["cpu"]))
    L.append("| RAM | %d GiB |" % m["ram_gib"])
    L.append("| kernel | %s |" % m["kernel"])
    L.append("| compiler | %s |" % m["rustc"])
    L.append("| disk: 4 KiB append + fdatasync | %s |\n" % ", ".join(
        "%d/s (p50 %.2f ms, %s)" % (f["per_sec"], f["p50_ms"], f["when"]) for f in results["fsync"]))
    L.append("The client is `corral bench` (Rust, pipelined); it shares the 2 cores with the servers, so at "
             "high session counts the client is part of what is measured, for both servers alike. ZooKeeper "
             "runs as Debian's 3.8.0 with `-Xmx2g` (`-Xmx512m` for the memory figure, as packaged), tickTime 2000, "
             "forceSync on. Corral is the release build with its defaults.\n")

    L.extend(targets_section(results, out.parent / "perf" / "plugins.json"))
    L.append("## Read/write mixes (1 KiB values, 10,000 keys, 8 requests in flight per session)\n")
    L.append("| mix | sessions | Corral 1 node ops/s | ZooKeeper 1 node | ratio | Corral 3 nodes | ZooKeeper 3 nodes "
             "| ratio | Corral 1 node p99 ms | ZooKeeper 1 node p99 | Corral 3 nodes p99 | ZooKeeper 3 nodes p99 |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for sessions in (1, 16, 256):
        for mix in ("read-heavy", "write-heavy"):
            tag = "%s %d sessions" % (mix, sessions)
            c, z = by(results, "corral-1", tag), by(results, "zookeeper-1", tag)
            c3, z3 = by(results, "corral-3", tag), by(results, "zookeeper-3", tag)
            L.append("| %s | %d | %.0f | %.0f | %s | %.0f | %.0f | %s | %.2f | %.2f | %.2f | %.2f |" % (
                mix, sessions, c["ops_per_sec"], z["ops_per_sec"], ratio(c["ops_per_sec"], z["ops_per_sec"]),
                c3["ops_per_sec"], z3["ops_per_sec"], ratio(c3["ops_per_sec"], z3["ops_per_sec"]),
                c["latency"]["p99"], z["latency"]["p99"], c3["latency"]["p99"], z3["latency"]["p99"]))
    L.append("\nOn 3 nodes, sessions are spread over all members (as `--servers` lists them): reads are served by "
             "the member a session is on, writes go to the leader (forwarded by followers) and commit on a "
             "majority.\n")

    L.append("## Throughput against the share of reads\n")
    L.append("As in Figure 5 of the ZooKeeper paper (Hunt et al., USENIX ATC 2010), at 16 sessions × 8 in flight.\n")
    L.append("![throughput against reads](perf/throughput-vs-reads.png)\n")
    L.append("| reads | " + " | ".join(servers) + " | Corral ÷ ZooKeeper 1 node |")
    L.append("|---|" + "---|" * (len(servers) + 1))
    for p in pcts:
        rs = {s: by(results, s, "reads %d%%" % p)["ops_per_sec"] for s in servers}
        L.append("| %d%% | %s | %s |" % (p, " | ".join("%.0f" % rs[s] for s in servers),
                                       ratio(rs["corral-1"], rs["zookeeper-1"])))

    L.append("\n## Latency distributions\n")
    for tag in ("read-heavy 16 sessions", "write-heavy 16 sessions", "write-heavy 1 sessions"):
        L.append("![%s](perf/cdf-%s.png)\n" % (tag, tag.replace(" ", "-")))

    L.append("## Single operations (16 sessions × 8 in flight)\n")
    L.append("| operation | Corral ops/s | ZooKeeper 1 node | ratio | Corral 3 nodes | ZooKeeper 3 nodes | ratio "
             "| Corral p99 ms | ZooKeeper p99 |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for wl in ("create", "set", "get", "exists", "children", "multi", "churn"):
        c, z = by(results, "corral-1", wl), by(results, "zookeeper-1", wl)
        c3, z3 = by(results, "corral-3", wl), by(results, "zookeeper-3", wl)
        L.append("| %s | %.0f | %.0f | %s | %.0f | %.0f | %s | %.2f | %.2f |" % (
            wl, c["ops_per_sec"], z["ops_per_sec"], ratio(c["ops_per_sec"], z["ops_per_sec"]), c3["ops_per_sec"],
            z3["ops_per_sec"], ratio(c3["ops_per_sec"], z3["ops_per_sec"]), c["latency"]["p99"], z["latency"]["p99"]))
    L.append("\n`children` lists a node with 50 children; `multi` is a check and two setData; `churn` is one "
             "cycle of open session, create an ephemeral, close session.\n")

    L.append("## Watch fan-out\n")
    L.append("One setData, every watcher holding a data watch on the node; latency from the write's send to "
             "each watcher's receipt of the event.\n")
    L.append("| server | watchers | delivery p50 ms | p99 | last watcher notified, median ms | worst |")
    L.append("|---|---|---|---|---|---|")
    for s in servers:
        r = by(results, s, "watch fan-out")
        L.append("| %s | %d | %.2f | %.2f | %.2f | %.2f |" % (
            s, r["args"]["watchers"], r["delivery"]["p50"], r["delivery"]["p99"], r["fanout_complete"]["p50"],
            r["fanout_complete"]["max"]))

    L.append("\n## ZooKeeper's own load generator\n")
    L.append("`load_gen` (C client, Debian `zookeeper-bin`) loops create, set, get and delete over 2,000 children "
             "with a pipelined asynchronous client; rates are the median over its cycles.\n")
    L.append("| phase | " + " | ".join(servers) + " | Corral ÷ ZooKeeper 1 node |")
    L.append("|---|" + "---|" * (len(servers) + 1))
    for phase in ("create", "set", "get", "delete"):
        vals = {s: results["load_gen"].get(s, {}).get(phase) for s in servers}
        L.append("| %s | %s | %s |" % (phase, " | ".join("%s" % (vals[s] or "—") for s in servers),
                                      ratio(vals.get("corral-1"), vals.get("zookeeper-1"))))

    L.append("\n## Memory and restart\n")
    c, z = results["rss"]["corral-1"], results["rss"]["zookeeper-1"]
    L.append("| figure | Corral | ZooKeeper | ratio |\n|---|---|---|---|")
    L.append("| RSS 5 s after creating %d znodes of 1 KiB | %.1f MB | %.1f MB | %s |" % (
        c["znodes"], c["rss_mb"], z["rss_mb"], ratio(c["rss_mb"], z["rss_mb"])))
    c, z = results["restart"]["corral-1"], results["restart"]["zookeeper-1"]
    L.append("| kill -9, launch to first served read, %d znodes of 64 B | %.2f s | %.2f s | %s |\n" % (
        c["znodes"], c["seconds"], z["seconds"], ratio(c["seconds"], z["seconds"])))
    failover = figs / "failover.json"
    if failover.exists():
        f = json.loads(failover.read_text())
        L.append("## Failover\n")
        L.append("kill -9 of the leader of 3 members, to the first write acknowledged after it (sent after the "
                 "kill, by a client on a surviving member); the killed member restarts between tries. "
                 "`bench/failover.py`, separate from this run.\n")
        L.append("| cluster | tries | median ms | worst ms | best ms |\n|---|---|---|---|---|")
        for name, r in f.items():
            L.append("| %s | %d | %.0f | %.0f | %.0f |" % (name, r["tries"], r["median_ms"], r["worst_ms"], r["best_ms"]))
        L.append("")
    if (figs / "timeline-5-nodes.png").exists():
        L.append("## Five members under failures\n")
        L.append("Throughput over time of a 5-member Corral cluster under constant load while a follower fails "
                 "and recovers, the leader fails, and two followers fail together (the ZooKeeper paper's Figure 8). "
                 "`bench/timeline.py`.\n")
        L.append("![5 members under failures](perf/timeline-5-nodes.png)\n")
    for hand_written in ("limits.md", "changes.md"):
        if (figs / hand_written).exists():
            L.append((figs / hand_written).read_text())
    failed = [r for r in results["runs"] if sum(r["errors"].values())]
    if failed:
        L.append("## Requests that failed\n")
        L.append("Runs in which some requests got no answer, by kind (`connection`: the connection broke with "
                 "requests in flight, which the bench then counts as failed; these runs are not retried). Their "
                 "throughput is lower than the servers can do, and is shown as measured.\n")
        L.append("| run | errors |\n|---|---|")
        for r in failed:
            L.append("| %s | %s |" % (r["label"], ", ".join("%s %d" % kv for kv in sorted(r["errors"].items()))))
        L.append("")
    L.append("Raw results: [perf/results.json](perf/results.json).\n")
    out.write_text("\n".join(L))
    log("wrote %s" % out)


if __name__ == "__main__":
    main()
