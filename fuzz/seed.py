#!/usr/bin/env python3
"""Writes the seed corpus fuzz/corpus/<target>/ from the repository's own material: the example bundles and their
cases, the test fixtures, tokens and a signed bundle made with the TEST-ONLY example keys (by the `warden` CLI), and
the attack inputs of issue 19. Run from the repository root after `cargo build -p warden-cli`:
    python3 fuzz/seed.py [path/to/warden]
Files are named by the SHA-256 of their contents (as libFuzzer names what it adds), so rerunning is idempotent."""
import base64, glob, hashlib, json, os, subprocess, sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
warden = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "target", "debug", "warden")
keys = os.path.join(root, "policies", "examples", "keys")
NOW = "2026-11-28T10:00:00Z"


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(root, "fuzz", "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha256(data).hexdigest()[:16]), "wb") as f:
        f.write(data)


def cli(*args):
    return subprocess.run([warden, *args], check=True, capture_output=True, text=True, cwd=root).stdout.strip()


examples = sorted(glob.glob(os.path.join(root, "policies", "examples", "*-agent.json")))
cases = sorted(glob.glob(os.path.join(root, "policies", "examples", "*.cases.json")))

# Paths: every catalog path and case path, and the differentials of issue 19 (item 7).
paths = {"/", "/a/b/../c", "/a/./b/", "/a/%2E%2E/b", "/admin//../x", "/%2561dmin", "/a%2Fb", "/a;b", "/v1/payouts/",
         "/V1/Payouts", "/v1/payouts.json", "/mcp/", "/mcp/.", "/a/%7e/%41?x=%2F&y", "/../x", "/a/b/..", "/%C3%A9",
         "/a%20b", "/a\\b", "/a?b#c", "/~user/./x/../y/"}
for e in examples:
    for tool in json.load(open(e)).get("tools", []):
        for h in tool.get("http", []):
            paths.add(h["path"].replace("{", "").replace("}", ""))
for c in cases:
    for case in json.load(open(c))["cases"]:
        if "http" in case:
            paths.add(case["http"]["path"])
for p in paths:
    put("path_normalize", p)
    put("path_differential", p)

# Bearer header values (item 9: one or more spaces).
for v in ["Bearer abc.def.ghi", "Bearer  abc", "bearer\tabc", "Bearer", "Bearer ", "Basic dXNlcjpwdw==",
          "Bearer a b", "BEARER x", " Bearer x "]:
    put("bearer", v)

# Tokens signed with the example issuer key, and look-alikes.
workload = os.path.join(keys, "TEST-ONLY-issuer-acme-workload.jwk.json")
agent = "spiffe://acme.example/agents/finance/reconciler"
tok = cli("token", "--key", workload, "--iss", "https://spire.acme.example", "--sub", agent, "--issued-at", NOW)
put("token_verify", tok)
put("token_verify", cli("token", "--key", workload, "--iss", "https://spire.acme.example", "--sub", agent,
                        "--issued-at", NOW, "--typ", "txntoken+jwt", "--claim", "txn=task-91"))
h, p, s = tok.split(".")
put("token_verify", f"{h}.{p}.")
put("token_verify", base64.urlsafe_b64encode(b'{"alg":"none"}').decode().rstrip("=") + f".{p}.")
put("token_verify", "a.b.c")
put("bearer", "Bearer " + tok)

# Signed bundles (the example authority key) and the envelope fixtures.
for e in examples:
    out = os.path.join(root, "target", "fuzz-seed.jws")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    cli("sign", e, "--key", os.path.join(keys, "TEST-ONLY-authority.jwk.json"), "--out", out, "--now", NOW)
    signed = open(out, "rb").read()
    put("envelope_verify", signed)
    os.remove(out)
    put("bundle_compile", open(e, "rb").read())
for f in glob.glob(os.path.join(root, "plugin", "core", "tests", "**", "*.jws"), recursive=True):
    put("envelope_verify", open(f, "rb").read())
put("envelope_verify", json.dumps({"format": "warden.bundle/v1"}))

# MCP bodies (items 1, 6, 8) and tools/list answers (item 11).
call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "refund", "arguments": {"amount": 100}}}
for body in [call, [call, dict(call, id=2)], {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
             {"jsonrpc": "2.0", "method": "notifications/initialized"},
             {"jsonrpc": "2.0", "id": 3, "method": "resources/read", "params": {"uri": "file:///x"}}]:
    put("mcp_parse", json.dumps(body))
put("mcp_parse", '{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/list"}')
put("mcp_parse", '{"jsonrpc":"2.0","id":1,"method":"Tools/Call","params":{"name":"x"}}')
tools = {"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": "a"}, {"name": "b"}, {"name": "refund"},
                                                          {"name": "ab"}]}}
put("tools_list_json", json.dumps(tools))
put("tools_list_json", json.dumps([tools]))
put("tools_list_json", '{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"\\u0061"}]}}')
for sse in ["event: message\ndata: " + json.dumps(tools) + "\n\n",
            "\ufeffdata: " + json.dumps(tools) + "\n\n",
            "Data: " + json.dumps(tools) + "\n\n",
            ": comment\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\ndata: " + json.dumps(tools) + "\r\n\r\n",
            "data: {\"jsonrpc\":\"2.0\",\"id\":1,\n" + "data: \"result\":{\"tools\":[{\"name\":\"b\"}]}}\n\n"]:
    put("tools_list_sse", sse)

# Plugin configurations: the shipped deployment files' and minimal ones.
authority_jwks = json.load(open(os.path.join(keys, "TEST-ONLY-authority.jwks.json")))
base = {"environment": "prod", "authority": "policy.acme.example", "bundle_keys": authority_jwks,
        "control": {"cluster": "warden-control", "authority": "control.acme.example", "poll_seconds": 10}}
put("plugin_config", json.dumps(base))
put("plugin_config", json.dumps(dict(base, mode="shadow", max_revision_jump=1000)))
put("plugin_config", json.dumps(dict(base, control={"cluster": "c"}, unknown=1)))
put("plugin_config", "{}")

# Recorded requests: the cases' HTTP requests as `warden eval` reads them.
for c in cases:
    for case in json.load(open(c))["cases"][:6]:
        if "http" in case:
            h = case["http"]
            put("recorded_request", json.dumps({"method": h["method"], "path": h["path"], "host": h["host"],
                                                "headers": [["authorization", "Bearer " + tok]], "time": NOW}))
put("recorded_request", '{"method":"POST","path":"/mcp","host":"h","body_base64":"e30=","source_address":"1.2.3.4:5"}')

# Argument pairs (item 4): equal and different arguments, separated by 0xFF.
for a, b in [('{"amount":100}', '{"amount":100.0}'), ('{"a":1,"b":2}', '{"b":2,"a":1}'),
             ('{"amount":"100"}', '{"amount":100}'), ('{"x":[1,{"y":null}]}', '{"x":[1,{"y":false}]}')]:
    put("args_digest", a.encode() + b"\xff" + b.encode())


def regression(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(root, "fuzz", "regressions", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha256(data).hexdigest()[:16]), "wb") as f:
        f.write(data)


# Issue 19 item 4, found by the attack run: digests that collided beyond 64-bit integers and double precision.
regression("args_digest", b'{"amount":18446744073709551616}\xff{"amount":18446744073709551617}')
regression("args_digest", b'{"amount":99.99999999999999999}\xff{"amount":100.0000000000000001}')
