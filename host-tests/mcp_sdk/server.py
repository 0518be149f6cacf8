"""A real MCP server (official Python SDK, Streamable HTTP) for the warden-gateway end-to-end check."""
import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("warden-demo")


@server.tool()
def lookup(order: str) -> str:
    """Look up an order."""
    return f"order {order}: shipped"


@server.tool()
def refund(order: str, amount: float) -> str:
    """Refund an order."""
    return f"refunded {amount} on {order}"


@server.tool()
def wipe() -> str:
    """Delete everything (the policy denies it)."""
    return "WIPED"


server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]), json_response=True, stateless_http=True)
