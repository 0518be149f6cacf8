"""OAuth discovery by the official MCP Python SDK's auth client (mcp.client.auth.OAuthClientProvider) through the
gateway: a request without a token gets the gateway's 401; the provider reads resource_metadata from it, fetches the
protected-resource metadata (served by the gateway), then the authorization server's metadata from the loopback stub
the test started, registers there and builds the authorization URL. The run stops at the redirect to the browser (no
person here): the discovery step only. Prints what the SDK discovered as one JSON object."""
import asyncio
import json
import sys

from mcp.client.auth import OAuthClientProvider
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import OAuthClientMetadata

URL = sys.argv[1]


class Memory:
    """TokenStorage in memory: nothing stored to begin with."""

    def __init__(self):
        self.tokens, self.client = None, None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, info):
        self.client = info


class AtTheBrowser(Exception):
    """The flow reached the redirect to the authorization endpoint."""


seen = {}


async def redirect(url: str) -> None:
    seen["authorize"] = url
    raise AtTheBrowser()


async def callback():
    raise AssertionError("the flow must stop at the redirect")


async def main() -> None:
    provider = OAuthClientProvider(
        server_url=URL,
        client_metadata=OAuthClientMetadata(redirect_uris=["http://127.0.0.1:9/callback"], client_name="warden-test"),
        storage=Memory(),
        redirect_handler=redirect,
        callback_handler=callback,
    )
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                             "clientInfo": {"name": "warden-test", "version": "1"}}}
    async with create_mcp_http_client(auth=provider) as http:
        try:
            r = await http.post(URL, json=initialize, headers={"accept": "application/json, text/event-stream"})
            seen["unexpected_response"] = r.status_code
        except AtTheBrowser:
            pass
    ctx = provider.context
    prm = ctx.protected_resource_metadata
    print(json.dumps({
        "resource_metadata": prm.model_dump(mode="json", exclude_none=True) if prm else None,
        "authorization_server": ctx.auth_server_url,
        "issuer": str(ctx.oauth_metadata.issuer) if ctx.oauth_metadata else None,
        "client_id": ctx.client_info.client_id if ctx.client_info else None,
        **seen,
    }))


asyncio.run(main())
