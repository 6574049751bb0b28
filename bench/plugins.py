#!/usr/bin/env python3
"""What plugins cost, end to end, on release builds:

1. a validated write against a plain one: `corral bench --workload set
   --json-values` on a one-member Corral, against keys whose parent has a
   JSON schema (the json-schema validator bound there) and against keys
   outside any binding, in alternating rounds;
2. deploy-to-active on a 3-member cluster: from the deploy request to its
   reply (the activating entry applied on the member that took it), and to
   every member listing the new version.

The per-call cost of a plugin alone (instantiate and call) is the criterion
benchmark: `cargo bench -p corral --bench plugins`.

    plugins/build.sh && cargo build --release -p corral && bench/plugins.py

Writes docs/perf/plugins.json. Logs the disk's fsync rate beside the figures.
"""

import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import fsync_probe, log  # noqa: E402
from servers import CORRAL, ROOT, TOKEN, Corral, CorralCluster  # noqa: E402

COMPONENTS = ROOT / "plugins" / "target" / "components" / "current"
SCHEMA = {"type": "object", "required": ["v"], "properties": {"v": {"type": "string", "maxLength": 100000}}}


def api(node, method, path, body=None, content_type="application/json"):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (node.http, path), data=body, method=method,
                                 headers={"authorization": "Bearer " + TOKEN, "content-type": content_type})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def deploy(node, name, component, query=""):
    body = (COMPONENTS / (component + ".wasm")).read_bytes()
    return api(node, "PUT", "/api/v1/plugins/%s?%s" % (name, query), body, "application/wasm")


def create(node, path, data=b""):
    subprocess.run([str(CORRAL), "--server", node.hosts, "create", path, data.decode()], check=True,
                   capture_output=True)


def bench_set(hosts, prefix, label, seconds):
    out = tempfile.mktemp(suffix=".json")
    cmd = [str(CORRAL), "bench", "--servers", hosts, "--workload", "set", "--json-values", "--value-size", "256",
           "--keys", "1000", "--sessions", "16", "--inflight", "8", "--warmup", "2", "--duration", str(seconds),
           "--prefix", prefix, "--quiet", "--label", label, "--json-out", out]
    subprocess.run(cmd, check=True, capture_output=True)
    r = json.load(open(out))
    errors = sum(r["errors"].values())
    log("  %-10s %9.0f writes/s  p50 %6.3f  p99 %6.3f ms%s" % (
        label, r["ops_per_sec"], r["latency"]["p50"], r["latency"]["p99"], "  errors %d" % errors if errors else ""))
    assert errors == 0, "the bench's writes must all pass the schema"
    return r


def validated_vs_plain(work, rounds=3, seconds=8):
    node = Corral(work / "single", settings={"INITIAL_ADMIN_TOKEN": TOKEN})
    try:
        deploy(node, "schemas", "json_schema", "bind=/val")
        for p in ["/val", "/val/keys"]:
            create(node, p)
        create(node, "/val/keys/.schema", json.dumps(SCHEMA).encode())
        plain, validated = [], []
        for i in range(rounds):
            plain.append(bench_set(node.hosts, "/plain", "plain", seconds)["ops_per_sec"])
            validated.append(bench_set(node.hosts, "/val", "validated", seconds)["ops_per_sec"])
        info = api(node, "GET", "/api/v1/plugins/schemas")
        return {
            "plain_writes_per_sec": plain,
            "validated_writes_per_sec": validated,
            "slowdown": round(statistics.median(plain) / statistics.median(validated), 3),
            "validator_calls": info["calls"],
            "validator_fuel_per_call": round(info["fuel_used"] / max(info["calls"], 1)),
        }
    finally:
        node.kill9()


def deploy_to_active(work, tries=5):
    cluster = CorralCluster(work / "cluster", 3, settings={})
    try:
        leader = cluster.nodes[cluster.leader()]
        replies, everywhere = [], []
        for i in range(tries):
            name = "counter%d" % i
            start = time.perf_counter()
            reply = deploy(leader, name, "counter")
            replies.append((time.perf_counter() - start) * 1e3)
            while not all(any(p["name"] == name for p in api(n, "GET", "/api/v1/plugins")) for n in cluster.nodes):
                time.sleep(0.002)
            everywhere.append((time.perf_counter() - start) * 1e3)
            log("  deploy %s (%d bytes): reply %.0f ms, on every member %.0f ms (server: %d ms)" % (
                name, reply["plugin"]["versions"][0]["size"], replies[-1], everywhere[-1], reply["took_ms"]))
        return {"reply_ms": [round(x, 1) for x in replies], "on_every_member_ms": [round(x, 1) for x in everywhere],
                "median_reply_ms": round(statistics.median(replies), 1),
                "median_on_every_member_ms": round(statistics.median(everywhere), 1)}
    finally:
        for n in cluster.nodes:
            n.kill9()


def main():
    work = Path(tempfile.mkdtemp(prefix="corral-plugin-bench-"))
    fsync = fsync_probe(str(work))
    log("fsync probe: %d/s, p50 %.3f ms" % (fsync["per_sec"], fsync["p50_ms"]))
    log("a validated write against a plain write (256-byte JSON, 16 sessions x 8 in flight, one member)")
    writes = validated_vs_plain(work)
    log("  slowdown %.3fx" % writes["slowdown"])
    log("deploy-to-active, 3 members, the counter recipe")
    deploys = deploy_to_active(work)
    fsync_after = fsync_probe(str(work))
    log("fsync probe (after): %d/s" % fsync_after["per_sec"])
    out = ROOT / "docs" / "perf" / "plugins.json"
    out.write_text(json.dumps({"fsync_before": fsync, "fsync_after": fsync_after, "writes": writes,
                               "deploy": deploys}, indent=2) + "\n")
    log("wrote %s" % out)


if __name__ == "__main__":
    main()
