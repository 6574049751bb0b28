#!/usr/bin/env bash
# Side-by-side benchmark of Corral and Apache ZooKeeper 3.8 on this machine.
# Writes docs/performance.md, docs/perf/*.png and docs/perf/results.json.
#
#   bench/compare.sh            # the full run (about 15 minutes)
#   bench/compare.sh --quick    # a short smoke run of every step
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for p in zookeeper zookeeper-bin python3 python3-venv; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
VENV=bench/.work/venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -r bench/requirements.txt
cargo build --release --locked -p corral
exec "$VENV/bin/python" bench/compare.py "$@"
