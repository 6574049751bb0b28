#!/usr/bin/env bash
# A/B benchmark of two corral binaries on one member: alternates them for
# ROUNDS rounds, each on a fresh data directory, with the same
# `corral bench` arguments, and logs the disk's fsync rate before and after.
#
#   bench/ab.sh OLD_BINARY NEW_BINARY ROUNDS [corral bench arguments...]
#   bench/ab.sh /tmp/corral-before target/release/corral 3 \
#       --workload set --sessions 16 --inflight 8 --keys 10000 --duration 8
set -euo pipefail
[ $# -ge 3 ] || { sed -n 2,8p "$0"; exit 2; }
old=$1 new=$2 rounds=$3
shift 3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The disk's durable-write rate, by the same probe as bench/compare.py.
fsync_rate() {
    python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); from compare import fsync_probe
r = fsync_probe(sys.argv[2], seconds=1.0); print("%d/s, p50 %.3f ms" % (r["per_sec"], r["p50_ms"]))' \
        "$(dirname "$0")" "$work"
}

echo "fsync (4 KiB append + fdatasync) before: $(fsync_rate)"
for round in $(seq 1 "$rounds"); do
    for which in old new; do
        bin=$old
        [ "$which" = new ] && bin=$new
        rm -rf "$work/data"
        CORRAL_MAX_CONNECTIONS_PER_IP=0 "$bin" serve --data-dir "$work/data" \
            --client-addr 127.0.0.1:2181 --http-addr 127.0.0.1:8080 >"$work/serve.log" 2>&1 &
        pid=$!
        sleep 1.5
        kill -0 "$pid" 2>/dev/null || { echo "$bin did not start:"; cat "$work/serve.log"; exit 1; }
        echo "$which, round $round: $("$bin" bench --quiet "$@" 2>&1 | grep -E 'ops/s|writes:' | tr -s ' ' | paste -sd ';')"
        kill "$pid"
        wait "$pid" 2>/dev/null || true
    done
done
echo "fsync after: $(fsync_rate)"
