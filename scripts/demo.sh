#!/usr/bin/env bash
# The demo: builds warden.wasm, then runs `warden-gateway demo`, which signs the example finance bundle with the TEST
# authority key, starts a tool server and the dev gateway on loopback, sends scripted agent requests over HTTP and
# prints the decisions with their reasons. Needs only a Rust toolchain (rustup adds the wasm32-wasip1 target).
set -euo pipefail

cd "$(dirname "$0")/.."

if command -v rustup >/dev/null 2>&1; then
    rustup target add wasm32-wasip1 >/dev/null 2>&1 || rustup target add wasm32-wasip1
fi

target_dir="${CARGO_TARGET_DIR:-target}"
cargo build -p warden-filter --target wasm32-wasip1 --profile wasm
cargo run -p warden-host --bin warden-gateway -- demo --wasm "$target_dir/wasm32-wasip1/wasm/warden.wasm" "$@"
