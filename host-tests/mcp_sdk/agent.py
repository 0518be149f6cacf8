"""What the MCP SDK client scripts share (client.py, pins_client.py): the support bot's agent token, an initialized
session of the official SDK through the gateway, the JSON-RPC error the SDK raises for a refusal, and the ok/FAIL
report."""
import contextlib
import json
import sys
import time
import uuid

import jwt
from mcp import ClientSession
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

AGENT = "spiffe://acme.example/agents/support/bot-1"


def token(key_file: str) -> str:
    """An agent token of the support bot, signed with the workload issuer's key in key_file (a JWK)."""
    jwk = json.load(open(key_file))
    key = jwt.algorithms.OKPAlgorithm.from_jwk(json.dumps(jwk))
    now = int(time.time())
    claims = {"iss": "https://spire.acme.example", "sub": AGENT, "aud": "warden", "iat": now, "exp": now + 300,
              "jti": str(uuid.uuid4())}
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": jwk["kid"], "typ": "JWT"})


@contextlib.asynccontextmanager
async def session(url: str, key_file: str | None):
    """An initialized ClientSession to url (streamable HTTP), carrying the bot's token unless key_file is None."""
    headers = {"authorization": f"Bearer {token(key_file)}"} if key_file else None
    http = create_mcp_http_client(headers=headers)
    async with http, streamable_http_client(url, http_client=http) as streams:
        async with ClientSession(streams[0], streams[1]) as s:
            await s.initialize()
            yield s


def refusal(e: BaseException) -> tuple:
    """(code, data.reason) of the JSON-RPC error the SDK raised, found inside the ExceptionGroups of its task groups."""
    while getattr(e, "exceptions", None):
        e = e.exceptions[0]
    err = getattr(e, "error", None)
    data = getattr(err, "data", None) or {}
    return getattr(err, "code", None), data.get("reason")


class Report:
    """Prints one ok/FAIL line per check; exit() ends the script non-zero when any failed."""

    def __init__(self):
        self.failures = []

    def check(self, what: str, ok: bool, detail: str = "") -> None:
        print(("ok   " if ok else "FAIL ") + what + (f": {detail}" if detail else ""))
        if not ok:
            self.failures.append(what)

    def exit(self) -> None:
        if self.failures:
            sys.exit(1)
