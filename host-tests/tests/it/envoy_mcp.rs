//! MCP (Streamable HTTP) through real Envoy, with `allow_on_headers_stop_iteration` false and true (one Envoy per
//! mode for the module), each request also run through the host and compared: `tools/call`, `resources/read`,
//! `prompts/get`, batches, header/body disagreement, a body over the filter's limit and over Envoy's buffer limit,
//! a body in many chunks, and `tools/list` rewritten from the upstream (JSON, SSE, a 2xx that is not 200, an
//! unfilterable body). Every refusal asserts exactly what the upstream received before it:
//! - `allow_on_headers_stop_iteration: true`: nothing;
//! - `false`: at most the request headers (with the filter's `x-warden-*`), never a byte of the body. In Envoy 1.40
//!   the headers do go: the upstream sees the request head, then the connection reset when the filter answers
//!   (`refused_calls_never_reach_the_upstream` prints what it saw); the host, which calls its upstream only with a
//!   whole request, shows nothing (host-tests/README.md, known differences).

use std::sync::{Arc, OnceLock};

use serde_json::{json, Value};
use warden_host::upstream::Reply;
use warden_host::HttpRequest;

use crate::support::envoy::{differential, now, tool_reply, Gateway, ReplyFn, Seen};
use crate::support::filter::{authed, claims, config, mcp_bundle_at, sign, token, BATCH_HOST, MCP_HOST, SUPPORT_BOT};

const LIMIT: usize = 4096;

fn tool_list() -> Value {
    json!({"jsonrpc": "2.0", "id": 11, "result": {"tools": [
        {"name": "lookup", "inputSchema": {"type": "object"}},
        {"name": "wipe", "inputSchema": {"type": "object"}},
        {"name": "refund", "inputSchema": {"type": "object"}},
        {"name": "not_in_catalog", "inputSchema": {"type": "object"}}
    ]}})
}

/// The upstream: `x-test-reply` chooses a `tools/list` answer; anything else is the default tool.
fn reply() -> ReplyFn {
    Arc::new(|path: &str, headers: &[(String, String)]| {
        let which = headers.iter().find(|(k, _)| k == "x-test-reply").map(|(_, v)| v.as_str()).unwrap_or("");
        let list = tool_list().to_string();
        match which {
            "json" => Reply::new(200).header("content-type", "application/json").body(list),
            "json-203" => Reply::new(203).header("content-type", "application/json").body(list),
            "sse" => {
                let sse = format!(
                    "event: message\ndata: {}\n\nevent: message\ndata: {list}\n\n",
                    json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}})
                );
                let n = sse.len();
                Reply::new(200).header("content-type", "text/event-stream").body(sse).chunked(vec![64; n.div_ceil(64)])
            }
            "html" => Reply::new(200).header("content-type", "text/html").body(list),
            _ => tool_reply(path),
        }
    })
}

fn gateway(hold: bool) -> &'static Gateway {
    static G: [OnceLock<Gateway>; 2] = [OnceLock::new(), OnceLock::new()];
    G[hold as usize].get_or_init(|| {
        let mut c = config(Some(&sign(&mcp_bundle_at(now()))));
        c["max_body_bytes"] = json!(LIMIT);
        Gateway::start_full(&c, hold, reply(), |o| o.concurrency(1))
    })
}

fn post(host: &str, body: impl Into<Vec<u8>>) -> HttpRequest {
    authed("POST", host, "/mcp", &token(&claims(SUPPORT_BOT, now())))
        .header("content-type", "application/json")
        .body(body)
}

fn call(id: i64, name: &str, args: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": args}}).to_string()
}

fn both_modes(f: impl Fn(&Gateway)) {
    for hold in [false, true] {
        f(gateway(hold));
    }
}

/// Forwarded whole, the body as sent.
fn assert_delivered(seen: &Seen, body: &[u8]) {
    let up = seen.assert_forwarded();
    assert_eq!(up.body, body);
    assert_eq!(up.header("x-warden-agent"), Some(SUPPORT_BOT));
}

/// Refused with this status and reason, as a JSON-RPC error carrying `id`; what reached the upstream is what the
/// mode allows.
fn assert_refused(g: &Gateway, seen: &Seen, status: u16, reason: &str, id: Value) -> Value {
    assert_eq!(seen.response.status, status, "{seen:#?}");
    let v = seen.json();
    assert_eq!(v["jsonrpc"], "2.0", "{v}");
    assert_eq!(v["id"], id, "{v}");
    assert_eq!(v["error"]["data"]["reason"], reason, "{v}");
    assert_eq!(seen.record()["reason"], reason);
    assert_upstream_saw_at_most_headers(g, seen);
    v
}

fn assert_upstream_saw_at_most_headers(g: &Gateway, seen: &Seen) {
    match (&seen.upstream, g.hold) {
        (None, _) => {}
        (Some(up), false) => {
            assert!(up.body.is_empty(), "no body byte may reach the upstream: {up:#?}");
            assert!(!up.complete, "{up:#?}");
        }
        (Some(up), true) => panic!("headers were held: nothing may reach the upstream, got {up:#?}"),
    }
}

#[test]
fn an_allowed_tools_call_goes_through_with_its_body() {
    both_modes(|g| {
        let body = call(1, "lookup", json!({"q": "x"}));
        let seen = differential(g, post(MCP_HOST, body.clone()));
        assert_delivered(&seen, body.as_bytes());
        assert_eq!(seen.record()["tool"], "mcp.lookup");
    });
}

#[test]
fn refused_calls_never_reach_the_upstream() {
    both_modes(|g| {
        let seen = differential(g, post(MCP_HOST, call(2, "wipe", json!({}))));
        let v = assert_refused(g, &seen, 403, "denied_by_rule", json!(2));
        assert_eq!(v["error"]["code"], -31001);
        // What Envoy did: the access log says whether it contacted the upstream at all.
        let log = seen.log.as_ref().unwrap();
        eprintln!(
            "allow_on_headers_stop_iteration={}: upstream host {:?}, upstream saw {:?}",
            g.hold,
            log.upstream_host,
            seen.upstream.as_ref().map(|u| (u.headers.len(), u.body.len(), u.complete))
        );
        if g.hold {
            assert_eq!(log.upstream_host, None, "held headers: Envoy must not have picked an upstream");
        }
    });
}

#[test]
fn resources_read_and_prompts_get() {
    both_modes(|g| {
        let read = |uri: &str| {
            json!({"jsonrpc": "2.0", "id": 3, "method": "resources/read", "params": {"uri": uri}}).to_string()
        };
        let body = read("docs://public/handbook");
        assert_delivered(&differential(g, post(MCP_HOST, body.clone())), body.as_bytes());
        let seen = differential(g, post(MCP_HOST, read("docs://secret/keys")));
        assert_refused(g, &seen, 403, "no_matching_rule", json!(3));
        let prompt = json!({"jsonrpc": "2.0", "id": 4, "method": "prompts/get", "params": {"name": "summary"}});
        let body = prompt.to_string();
        let seen = differential(g, post(MCP_HOST, body.clone()));
        assert_delivered(&seen, body.as_bytes());
        assert_eq!(seen.record()["tool"], "mcp.summary");
    });
}

#[test]
fn a_batch_mixing_allowed_and_denied_calls_is_denied_whole() {
    both_modes(|g| {
        let batch = format!("[{},{}]", call(5, "lookup", json!({})), call(6, "wipe", json!({})));
        let seen = differential(g, post(BATCH_HOST, batch));
        assert_eq!(seen.response.status, 403, "{seen:#?}");
        let v = seen.json();
        assert!(v.is_array() && v.as_array().unwrap().len() == 2, "{v}");
        assert_upstream_saw_at_most_headers(g, &seen);
        // Without batches on the server, a batch is refused as such.
        let seen = differential(g, post(MCP_HOST, format!("[{}]", call(7, "lookup", json!({})))));
        assert_eq!(seen.response.status, 400, "{seen:#?}");
        assert_upstream_saw_at_most_headers(g, &seen);
    });
}

#[test]
fn mcp_headers_that_disagree_with_the_body_are_refused() {
    both_modes(|g| {
        let req =
            post(MCP_HOST, call(8, "wipe", json!({}))).header("mcp-method", "tools/call").header("mcp-name", "lookup");
        let seen = differential(g, req);
        assert_refused(g, &seen, 400, "mcp_header_mismatch", json!(8));
        // Headers the policy denies whatever the body: refused at the header phase, nothing reaches the upstream.
        let req =
            post(MCP_HOST, call(9, "wipe", json!({}))).header("mcp-method", "tools/call").header("mcp-name", "wipe");
        let seen = differential(g, req);
        assert_eq!(seen.response.status, 403, "{seen:#?}");
        assert!(seen.upstream.is_none(), "{seen:#?}");
    });
}

#[test]
fn a_body_over_the_filters_limit_is_refused() {
    both_modes(|g| {
        let big = call(10, "lookup", json!({"pad": "x".repeat(LIMIT)}));
        let seen = differential(g, post(MCP_HOST, big));
        assert_eq!(seen.response.status, 413, "{seen:#?}");
        assert_eq!(seen.json()["error"]["data"]["reason"], "mcp_body_too_large", "{seen:#?}");
        assert_upstream_saw_at_most_headers(g, &seen);
    });
}

#[test]
fn a_body_in_many_chunks_is_decided_whole() {
    both_modes(|g| {
        let body = call(11, "lookup", json!({"q": "split"}));
        let n = body.len();
        let seen = differential(g, post(MCP_HOST, body.clone()).chunks(vec![7; n.div_ceil(7)]));
        assert_delivered(&seen, body.as_bytes());
        let body = call(12, "wipe", json!({}));
        let n = body.len();
        let seen = differential(g, post(MCP_HOST, body).chunks(vec![5; n.div_ceil(5)]));
        assert_refused(g, &seen, 403, "denied_by_rule", json!(12));
    });
}

fn listed(v: &Value) -> Vec<String> {
    v["result"]["tools"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|t| t["name"].as_str().unwrap_or("").to_string())
        .collect()
}

fn list(g: &Gateway, which: &str) -> Seen {
    let req = post(MCP_HOST, r#"{"jsonrpc":"2.0","id":11,"method":"tools/list"}"#)
        .header("mcp-method", "tools/list")
        .header("x-test-reply", which);
    differential(g, req)
}

#[test]
fn tools_list_is_rewritten_from_a_real_upstream() {
    both_modes(|g| {
        let seen = list(g, "json");
        assert_eq!(seen.response.status, 200, "{seen:#?}");
        assert_eq!(listed(&seen.json()), ["lookup", "refund"]);
        // A 2xx that is not 200 is filtered as well, never passed as is.
        let seen = list(g, "json-203");
        assert_eq!(listed(&seen.json()), ["lookup", "refund"], "{seen:#?}");
        // SSE in chunks, with a notification first.
        let seen = list(g, "sse");
        let body = seen.response.body_str();
        assert!(body.contains("notifications/progress") && body.contains("\"lookup\""), "{body}");
        assert!(!body.contains("wipe") && !body.contains("not_in_catalog"), "{body}");
        // A content type the filter cannot read: replaced by an error.
        let seen = list(g, "html");
        assert_eq!(seen.json()["error"]["data"]["reason"], "mcp_list_unfilterable", "{seen:#?}");
        assert!(!seen.response.body_str().contains("wipe"));
        assert_eq!(seen.upstream.as_ref().map(|u| u.complete), Some(true));
    });
}
