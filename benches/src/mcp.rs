//! The MCP request of `benches/mcp.rs` (and of `examples/profile_requests.rs`): the 10 000-rule bundle plus one MCP
//! server with an argument-conditioned tool, and a 2 KB `tools/call`.

use serde_json::{json, Value};
use warden_host::HttpRequest;

use crate::generate_json;
use crate::host::request;

/// Rules of the generated part of the bundle.
pub const RULES: usize = 10_000;
/// The MCP server's host and path.
pub const MCP_HOST: &str = "mcp.bench.example";
pub const MCP_PATH: &str = "/mcp";
/// The agent of the token (allowed by `refund-small`).
pub const AGENT: &str = "spiffe://bench.example/agents/support/refund-bot-1";
/// The size of the timed body, in bytes.
pub const BODY_BYTES: usize = 2048;

/// The tool id of `refund` in the bundle.
pub const TOOL_ID: &str = "mcp.refund";

/// The generated bundle of [`RULES`] rules plus the MCP server, the refund tool and its two argument rules.
pub fn bundle() -> Value {
    bundle_of(RULES)
}

/// The generated bundle of `rules` rules plus the MCP server, the refund tool and its two argument rules (after
/// every other rule): `refund-small` allows an amount in (0, 100] in EUR or USD, `refund-large` asks for step-up
/// approval in (100, 5000].
pub fn bundle_of(rules: usize) -> Value {
    let mut b = generate_json(rules);
    b["mcp_servers"] = json!([{"name": "payments", "host": MCP_HOST, "path": MCP_PATH}]);
    let Some(tools) = b["tools"].as_array_mut() else { panic!("generated bundle has no tools") };
    tools.push(json!({"id": TOOL_ID, "sensitivity": "write", "mcp": [{"server": "payments", "tool": "refund"}]}));
    let Some(rules) = b["rules"].as_array_mut() else { panic!("generated bundle has no rules") };
    rules.extend([
        json!({"id": "refund-small", "effect": "allow", "agents": ["spiffe://bench.example/agents/support/*"],
               "tools": [TOOL_ID], "owner": "team@bench.example",
               "conditions": [{"argument": "/amount", "exclusive_min": 0, "max": 100},
                              {"argument": "/currency", "one_of": ["EUR", "USD"]}]}),
        json!({"id": "refund-large", "effect": "step_up", "agents": ["spiffe://bench.example/agents/support/*"],
               "tools": [TOOL_ID], "owner": "team@bench.example",
               "conditions": [{"argument": "/amount", "exclusive_min": 100, "max": 5000}],
               "step_up": {"approvers": ["bench-approvals"]}}),
    ]);
    b
}

/// A `tools/call` of `refund` for `amount`, its `note` padding the body to exactly [`BODY_BYTES`].
pub fn refund_call(id: i64, amount: i64) -> Vec<u8> {
    let with_note = |note: &str| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "refund", "arguments": {
            "order": "o-2026-118842", "amount": amount, "currency": "EUR", "reason": "damaged_in_transit",
            "note": note}}})
        .to_string()
    };
    let bare = with_note("").len();
    assert!(bare < BODY_BYTES, "the call without its note is already {bare} bytes");
    let text = "Customer reports the parcel arrived with a crushed corner and a cracked screen; photos attached \
                to the ticket, courier confirmed the damage. ";
    let note: String = text.chars().cycle().take(BODY_BYTES - bare).collect();
    let body = with_note(&note).into_bytes();
    assert_eq!(body.len(), BODY_BYTES);
    body
}

/// The `arguments` of [`refund_call`], as the filter hands them to `decide_with_args`.
pub fn refund_arguments(amount: i64) -> Value {
    match serde_json::from_slice::<Value>(&refund_call(1, amount)) {
        Ok(mut call) => call["params"]["arguments"].take(),
        Err(e) => panic!("the refund call is not JSON: {e}"),
    }
}

/// `POST /mcp` with `content-type: application/json`, this token and this body.
pub fn post(token: &str, body: &[u8]) -> HttpRequest {
    request("POST", MCP_HOST, MCP_PATH, Some(token)).header("content-type", "application/json").body(body.to_vec())
}
