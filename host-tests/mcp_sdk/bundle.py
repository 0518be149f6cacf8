"""Writes the test bundle (TEST-ONLY keys; valid for a day from now) to stdout."""
import datetime
import json
import sys

keys = sys.argv[1]
now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
fmt = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")
issuer_public = json.load(open(f"{keys}/TEST-ONLY-issuer-acme-workload.public.jwk.json"))
print(json.dumps({
    "format": "warden.bundle/v1", "revision": int(now.timestamp()),
    "issued_at": fmt(now - datetime.timedelta(minutes=1)), "expires_at": fmt(now + datetime.timedelta(days=1)),
    "owner": "security@acme.example", "authority": "policy.acme.example",
    "issuers": [{"id": "acme-workload", "iss": "https://spire.acme.example", "audiences": ["warden"],
                 "jwks": {"keys": [issuer_public]}, "algorithms": ["EdDSA"], "max_token_lifetime_seconds": 900,
                 "profile": "spiffe_jwt_svid"}],
    # No approval is minted in this test; the step-up rule needs an approver all the same.
    "approvers": [{"id": "demo-approvals", "iss": "https://approvals.acme.example", "jwks": {"keys": [issuer_public]},
                   "algorithms": ["EdDSA"], "max_approval_age_seconds": 300}],
    "mcp_servers": [{"name": "demo", "path": "/mcp"}],
    "tools": [
        {"id": "demo.lookup", "sensitivity": "read", "mcp": [{"server": "demo", "tool": "lookup"}]},
        {"id": "demo.refund", "sensitivity": "payment", "mcp": [{"server": "demo", "tool": "refund"}]},
        {"id": "demo.wipe", "sensitivity": "admin", "mcp": [{"server": "demo", "tool": "wipe"}]},
    ],
    "rules": [
        {"id": "lookup", "effect": "allow", "agents": ["spiffe://acme.example/agents/support/*"],
         "tools": ["demo.lookup"]},
        {"id": "refund-small", "effect": "allow", "agents": ["spiffe://acme.example/agents/support/*"],
         "tools": ["demo.refund"], "conditions": [{"argument": "/amount", "exclusive_min": 0, "max": 100}]},
        {"id": "refund-large", "effect": "step_up", "agents": ["spiffe://acme.example/agents/support/*"],
         "tools": ["demo.refund"], "conditions": [{"argument": "/amount", "exclusive_min": 100, "max": 5000}],
         "step_up": {"approvers": ["demo-approvals"]}},
        {"id": "no-wipe", "effect": "deny", "tools": ["demo.wipe"]},
    ],
}, indent=1))
