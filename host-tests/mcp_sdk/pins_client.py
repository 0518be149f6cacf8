"""The official MCP Python SDK client against a server that changed a pinned tool (a rug pull), through Warden: the
changed tool is not listed and its call is refused with Warden's JSON-RPC error. Exits non-zero on any other
outcome."""
import asyncio
import json
import sys
import time
import uuid

import jwt
from mcp import ClientSession
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

URL, KEY_FILE = sys.argv[1], sys.argv[2]


def token() -> str:
    """An agent token of the support bot (as client.py mints it)."""
    jwk = json.load(open(KEY_FILE))
    key = jwt.algorithms.OKPAlgorithm.from_jwk(json.dumps(jwk))
    now = int(time.time())
    claims = {"iss": "https://spire.acme.example", "sub": "spiffe://acme.example/agents/support/bot-1",
              "aud": "warden", "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": jwk["kid"], "typ": "JWT"})


async def main() -> None:
    failures = []

    def check(what, ok, detail=""):
        print(("ok   " if ok else "FAIL ") + what + (f": {detail}" if detail else ""))
        if not ok:
            failures.append(what)

    http = create_mcp_http_client(headers={"authorization": f"Bearer {token()}"})
    async with http, streamable_http_client(URL, http_client=http) as streams:
        async with ClientSession(streams[0], streams[1]) as session:
            await session.initialize()
            tools = await session.list_tools()
            names = sorted(t.name for t in tools.tools)
            check("the changed tool is not listed", names == ["refund"], str(names))
            try:
                r = await session.call_tool("lookup", {"order": "o-1"})
                check("the changed tool's call is refused", False, f"got a result {r.content}")
            except Exception as e:  # the SDK raises the JSON-RPC error
                err = getattr(e, "error", None)
                data = getattr(err, "data", None) or {}
                check("the changed tool's call is refused as a JSON-RPC error",
                      getattr(err, "code", None) == -31001 and data.get("reason") == "tool_definition_changed",
                      repr(e))
            r = await session.call_tool("refund", {"order": "o-1", "amount": 40})
            check("a pinned tool still works", not r.is_error and "refunded" in r.content[0].text, str(r.content))
    if failures:
        sys.exit(1)


asyncio.run(main())
