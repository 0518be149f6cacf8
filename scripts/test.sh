#!/usr/bin/env bash
# Runs every test of the project: builds the wasm modules the host tests load, then the whole workspace's tests
# (unit, integration, end-to-end through warden.wasm in the wasmtime host, and each benchmark once in test mode).
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null 2>&1; then
  rustup target add wasm32-wasip1 >/dev/null 2>&1 || rustup target add wasm32-wasip1
fi

echo "== building warden.wasm and the host's test filter (wasm32-wasip1, profile wasm)"
cargo build --locked -p warden-filter -p warden-test-filter --target wasm32-wasip1 --profile wasm

echo "== cargo test (workspace)"
cargo test --locked --workspace --all-targets "$@"
