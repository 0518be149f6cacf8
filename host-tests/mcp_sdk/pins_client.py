"""The official MCP Python SDK client against a server that changed a pinned tool (a rug pull), through Warden: the
changed tool is not listed and its call is refused with Warden's JSON-RPC error. Exits non-zero on any other
outcome."""
import asyncio
import sys

from agent import Report, refusal, session

URL, KEY_FILE = sys.argv[1], sys.argv[2]


async def main() -> None:
    report = Report()
    check = report.check
    async with session(URL, KEY_FILE) as s:
        tools = await s.list_tools()
        names = sorted(t.name for t in tools.tools)
        check("the changed tool is not listed", names == ["refund"], str(names))
        try:
            r = await s.call_tool("lookup", {"order": "o-1"})
            check("the changed tool's call is refused", False, f"got a result {r.content}")
        except Exception as e:  # the SDK raises the JSON-RPC error
            check("the changed tool's call is refused as a JSON-RPC error",
                  refusal(e) == (-31001, "tool_definition_changed"), repr(e))
        r = await s.call_tool("refund", {"order": "o-1", "amount": 40})
        check("a pinned tool still works", not r.is_error and "refunded" in r.content[0].text, str(r.content))
    report.exit()


asyncio.run(main())
