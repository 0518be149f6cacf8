#!/usr/bin/env bash
# Builds the host's test filter (wasm32-wasip1, profile wasm), then runs warden-host's tests.
# Honours CARGO_TARGET_DIR; the tests find the module there (or via WARDEN_TEST_FILTER_WASM).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -p warden-test-filter --target wasm32-wasip1 --profile wasm
cargo test -p warden-host "$@"
