"""The official MCP Python SDK client calling tools through warden-gateway: allowed, denied and step-up calls, and a
filtered tools/list. Exits non-zero on any unexpected outcome."""
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
        check("tools/list is filtered", names == ["lookup", "refund"], str(names))
        r = await s.call_tool("lookup", {"order": "o-1"})
        check("allowed call", not r.is_error and "shipped" in r.content[0].text, str(r.content))
        r = await s.call_tool("refund", {"order": "o-1", "amount": 40})
        check("refund under the limit", not r.is_error and "refunded" in r.content[0].text, str(r.content))
        for name, args, code, reason in [
            ("wipe", {}, -31001, "denied_by_rule"),
            ("refund", {"order": "o-1", "amount": 250}, -31002, "step_up_required"),
            ("refund", {"order": "o-1"}, -31001, "invalid_arguments"),
        ]:
            try:
                r = await s.call_tool(name, args)
                check(f"{name} {args} refused", False, f"got a result {r.content}")
            except Exception as e:  # the SDK raises the JSON-RPC error
                check(f"{name} {args} refused as a JSON-RPC error", refusal(e) == (code, reason), repr(e))

    # No token: the SDK raises the identity error Warden sends with the 401 (its JSON-RPC error, read from the body).
    try:
        async with session(URL, None):
            pass
        check("missing token refused", False, "initialize succeeded")
    except Exception as e:
        check("missing token refused as a JSON-RPC error", refusal(e) == (-31003, "identity_missing"), repr(e))
    report.exit()


asyncio.run(main())
