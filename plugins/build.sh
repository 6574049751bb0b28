#!/bin/sh
# Builds every plugin into a WebAssembly component, in
# plugins/target/components/<content hash>/<name>.wasm, and points
# plugins/target/components/current at it. Skips the build when a build of
# the same sources (the content hash of wit/, guest-sdk/ and plugins/) is
# already there.
#
# The wasm32 toolchain: a rustup target if one is installed; otherwise
# Debian's rustc-web, which builds std for wasm32 from rust-web-src
# (-Zbuild-std). Then wit-component's ComponentEncoder (the `componentize`
# tool, built natively) turns each core module into a component.
set -eu
cd "$(dirname "$0")"

hash=$(find ../wit ../guest-sdk -type f -not -path '*/target/*' | sort; \
       find . -type f \( -name '*.rs' -o -name 'Cargo.toml' -o -name 'Cargo.lock' -o -name build.sh -o -name '*.js' -o -name '*.c' -o -name 'package*.json' \) -not -path './target/*' -not -path '*/node_modules/*' | sort)
hash=$(echo "$hash" | xargs sha256sum | sha256sum | cut -c1-16)
out="target/components/$hash"
if [ -f "$out/.done" ]; then
    ln -sfn "$hash" target/components/current
    echo "plugins: up to date ($out)"
    exit 0
fi

target=wasm32-unknown-unknown
# Room for the heap in the module's own memory (guest-sdk/src/heap.rs): 4 MiB
# with the stack and data, so that most calls never grow their memory.
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C link-arg=--initial-memory=4194304"
if command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    echo "plugins: building with the rustup $target target"
    wasm_build() { cargo build --locked --release --target "$target" -p "$1"; }
elif [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/src/rust/library ]; then
    echo "plugins: building with Debian's rustc-web and -Zbuild-std"
    wasm_build() {
        RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 /usr/bin/cargo build --locked --release --target "$target" \
            -Zbuild-std=std,panic_abort -p "$1"
    }
else
    echo "plugins: no wasm32 toolchain: run 'rustup target add $target', or" >&2
    echo "         'apt-get install rustc-web cargo-web rust-web-src rust-web-llvm lld-22'" >&2
    exit 1
fi

cargo build --locked --release -p componentize
mkdir -p "$out"
# One plugin per cargo invocation: each picks its own corral-sdk world
# feature, and features must not unify across plugins.
component() { # crate, output name
    wasm_build "$1"
    target/release/componentize "target/$target/release/$(echo "$1" | tr - _).wasm" "$out/$2.wasm"
}
component json-schema json_schema
component child-counter child_counter
component counter counter
component hostile hostile
component lookup lookup
component lock lock
component election election
component barrier barrier
component group group
component queue queue
component registry registry
component registry-healthy registry_healthy
component config-history config_history
CORRAL_PLUGIN_VERSION=1 component versioned versioned_v1
CORRAL_PLUGIN_VERSION=2 component versioned versioned_v2
# JavaScript plugins: QuickJS through componentize-qjs (plugins/js, its
# version pinned in package-lock.json), no WASI (stubbed to trap).
if ! command -v npm >/dev/null; then
    echo "plugins: npm is needed for the JavaScript plugins: apt-get install nodejs npm" >&2
    exit 1
fi
(cd js && npm ci --silent --no-audit --no-fund)
for js in js/*.js; do
    n=$(basename "$js" .js)
    world=$(sed -n 's|^// world: *||p' "$js")
    js/node_modules/.bin/componentize-qjs -w ../wit -j "$js" -n "$world" --stub-wasi --sync -o "$out/js_$n.wasm" >/dev/null
done
# C plugins: clang with wasi-libc (no stdio: nothing but the world is
# imported), bindings from `wit-bindgen c` (the same wit-bindgen as the
# Rust guests, installed once into target/tools).
tools=target/tools
[ -x "$tools/bin/wit-bindgen" ] || cargo install --locked --quiet wit-bindgen-cli --version 0.46.0 --root "$tools"
for c in c/*.c; do
    n=$(basename "$c" .c)
    world=$(sed -n 's|^// world: *||p' "$c")
    gen="target/c-gen/$world"
    mkdir -p "$gen"
    "$tools/bin/wit-bindgen" c ../wit --world "$world" --out-dir "$gen" >/dev/null
    u=$(echo "$world" | tr - _)
    clang-19 --target=wasm32-wasi -mexec-model=reactor -Os -I"$gen" -Wl,--gc-sections -Wl,--strip-all \
        -o "target/c-gen/$n.core.wasm" "$c" "$gen/$u.c" "$gen/${u}_component_type.o"
    target/release/componentize "target/c-gen/$n.core.wasm" "$out/c_$n.wasm"
done
touch "$out/.done"
ln -sfn "$hash" target/components/current
ls -l "$out"
