#!/usr/bin/env bash
# A real MCP client and server (official Python SDK, `pip install mcp`) with warden-gateway (warden.wasm in the
# host) between them: allowed, denied and step-up tool calls surface to the client as JSON-RPC errors, and
# tools/list is filtered. Needs: warden.wasm built, `cargo build -p warden-cli -p warden-host`, python3 with `mcp`.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
here="$root/host-tests/mcp_sdk"
keys="$root/policies/examples/keys"
bin="${CARGO_TARGET_DIR:-$root/target}/debug"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
server_port="$(port)"; gateway_port="$(port)"

python3 "$here/bundle.py" "$keys" > "$work/bundle.json"
"$bin/warden" sign --key "$keys/TEST-ONLY-authority.jwk.json" --out "$work/bundle.jws" "$work/bundle.json" >/dev/null
python3 - "$keys" "$work" > "$work/config.json" <<'PY'
import json, sys
keys, work = sys.argv[1], sys.argv[2]
print(json.dumps({"environment": "prod", "authority": "policy.acme.example",
                  "bundle_keys": json.load(open(f"{keys}/TEST-ONLY-authority.jwks.json")),
                  "inline_bundle": open(f"{work}/bundle.jws").read().strip()}))
PY
python3 "$here/server.py" "$server_port" > "$work/server.log" 2>&1 & pids+=($!)
"$bin/warden-gateway" serve --config "$work/config.json" --upstream "127.0.0.1:$server_port" \
  --listen "127.0.0.1:$gateway_port" --workers 1 > "$work/gateway.log" 2>&1 & pids+=($!)
for _ in $(seq 50); do
  (echo > "/dev/tcp/127.0.0.1/$server_port") 2>/dev/null && (echo > "/dev/tcp/127.0.0.1/$gateway_port") 2>/dev/null && break
  sleep 0.2
done
if ! python3 "$here/client.py" "http://127.0.0.1:$gateway_port/mcp" "$keys/TEST-ONLY-issuer-acme-workload.jwk.json"; then
  echo "--- gateway log"; tail -30 "$work/gateway.log"; echo "--- server log"; tail -30 "$work/server.log"; exit 1
fi
