"""The official MCP Python SDK client calling tools through warden-gateway: allowed, denied and step-up calls, and a
filtered tools/list. Exits non-zero on any unexpected outcome."""
import asyncio
import json
import sys
import time
import uuid

import jwt
from mcp import ClientSession
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

URL, KEY_FILE = sys.argv[1], sys.argv[2]
AGENT = "spiffe://acme.example/agents/support/bot-1"


def token() -> str:
    jwk = json.load(open(KEY_FILE))
    key = jwt.algorithms.OKPAlgorithm.from_jwk(json.dumps(jwk))
    now = int(time.time())
    claims = {"iss": "https://spire.acme.example", "sub": AGENT, "aud": "warden", "iat": now, "exp": now + 300,
              "jti": str(uuid.uuid4())}
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": jwk["kid"], "typ": "JWT"})


async def main() -> None:
    failures = []

    def check(what, ok, detail=""):
        print(("ok   " if ok else "FAIL ") + what + (f": {detail}" if detail else ""))
        if not ok:
            failures.append(what)

    http = create_mcp_http_client(headers={"authorization": f"Bearer {token()}"})
    async with http, streamable_http_client(URL, http_client=http) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            names = sorted(t.name for t in tools.tools)
            check("tools/list is filtered", names == ["lookup", "refund"], str(names))
            r = await session.call_tool("lookup", {"order": "o-1"})
            check("allowed call", not r.is_error and "shipped" in r.content[0].text, str(r.content))
            r = await session.call_tool("refund", {"order": "o-1", "amount": 40})
            check("refund under the limit", not r.is_error and "refunded" in r.content[0].text, str(r.content))
            for name, args, code, reason in [
                ("wipe", {}, -31001, "denied_by_rule"),
                ("refund", {"order": "o-1", "amount": 250}, -31002, "step_up_required"),
                ("refund", {"order": "o-1"}, -31001, "invalid_arguments"),
            ]:
                try:
                    r = await session.call_tool(name, args)
                    check(f"{name} {args} refused", False, f"got a result {r.content}")
                except Exception as e:  # the SDK raises the JSON-RPC error
                    err = getattr(e, "error", None)
                    data = getattr(err, "data", None) or {}
                    check(f"{name} {args} refused as a JSON-RPC error",
                          getattr(err, "code", None) == code and data.get("reason") == reason, repr(e))

    # No token: the SDK raises the identity error Warden sends with the 401 (its JSON-RPC error, read from the body).
    bare = create_mcp_http_client()
    try:
        async with bare, streamable_http_client(URL, http_client=bare) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
        check("missing token refused", False, "initialize succeeded")
    except Exception as e:
        while getattr(e, "exceptions", None):  # ExceptionGroups from the SDK's task groups
            e = e.exceptions[0]
        err = getattr(e, "error", None)
        data = getattr(err, "data", None) or {}
        check("missing token refused as a JSON-RPC error",
              getattr(err, "code", None) == -31003 and data.get("reason") == "identity_missing", repr(e))
    if failures:
        sys.exit(1)


asyncio.run(main())
