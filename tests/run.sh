#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with only the Rust
# toolchain: installs what the tests need (idempotently), builds, runs.
#
#   tests/run.sh
#
# Stages: system packages (apt), a Python venv for kazoo and pytest, the
# plugins, the build, the Rust tests (unit, storage, simulation, then the
# cross-process tests, one server at a time, the console's in headless
# Chromium among them), then the Python suites (kazoo, zkCli.sh,
# differential against Apache ZooKeeper).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/tests/.work
mkdir -p "$WORK"

stage() { printf '\n==== %s (%ss)\n' "$1" "$SECONDS"; }

stage "system packages"
APT_PACKAGES=(zookeeper zookeeper-bin python3 python3-venv)
# Plugins build for wasm32: with a rustup target where one exists, else with
# Debian's rustc-web, which builds std from source (plugins/build.sh).
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  APT_PACKAGES+=(rustc-web cargo-web rust-web-src rust-web-llvm lld-22)
fi
# C plugins build with clang and wasi-libc.
APT_PACKAGES+=(clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32)
# The console's browser tests drive headless Chromium through chromedriver.
APT_PACKAGES+=(chromium chromium-driver)
# Fault tests: skewed clocks (libfaketime); the fsync shim needs a C compiler.
APT_PACKAGES+=(faketime gcc)
# TLS tests make their certificates with the openssl command line.
APT_PACKAGES+=(openssl)
# Tests signal servers (and the console test's browser group) with kill(1),
# which minimal Debian images leave out.
APT_PACKAGES+=(procps)
# JavaScript plugins build with componentize-qjs from npm.
command -v npm >/dev/null || APT_PACKAGES+=(nodejs npm)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

stage "python venv"
VENV=$WORK/venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -r tests/python/requirements.txt

stage "plugins: guest SDK and plugin tests (native), components (wasm32)"
for crate in corral-sdk json-schema child-counter counter hostile versioned lookup lock election barrier group queue registry registry-healthy config-history; do
  # One crate at a time: each picks its own plugin world feature.
  cargo test --locked -q --manifest-path plugins/Cargo.toml -p "$crate"
done
plugins/build.sh

stage "build"
# Every cargo command below selects the same packages (the whole workspace,
# tests included): cargo resolves features per selection, so `-p corral`
# here and `--workspace` there would build wasmtime, openraft and the rest
# once per selection (measured: about ten minutes of a cold run). This one
# also builds the server binary, target/debug/corral.
cargo test --locked --workspace --no-run

stage "rust: unit, storage suite, determinism, simulation, fuzz corpora, cross-process tests"
# The cross-process tests start real servers on loopback ports, one at a
# time: hence one test thread for the whole run.
export TEST_CORRAL_BIN=$ROOT/target/debug/corral
cargo test --locked --workspace -- --test-threads=1

stage "python: kazoo, zkCli.sh, differential against Apache ZooKeeper"
(cd tests/python && "$VENV/bin/python" -m pytest -q -p no:cacheprovider)

stage "all tests passed"
