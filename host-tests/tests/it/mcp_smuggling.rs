//! MCP through the real `warden.wasm` in the host, in both header-phase modes (`allow_on_headers_stop_iteration`
//! false: headers continue and the body is buffered; true: headers are held until the body is decided): the
//! smuggling attempts that walked around other gateways (batches mixing allowed and denied calls, duplicate keys,
//! `Mcp-Name` disagreeing with the body, method case games, bodies split into many chunks, over the limit,
//! `text/plain`, non-UTF-8) and argument rules. Every refusal also asserts that the upstream never received the
//! denied call: no body reached it (in the holding mode, nothing at all).

use crate::support::filter::*;
use serde_json::{json, Value};
use warden_host::{Exchange, HttpRequest, Plugin, RecordingUpstream, UpstreamResponse};

const LIMIT: usize = 4096;

fn mcp_bundle() -> Value {
    mcp_bundle_at(T0)
}

fn mcp_start(hold_headers: bool, limit: usize) -> Plugin {
    let mut c = config(Some(&sign(&mcp_bundle())));
    c["max_body_bytes"] = json!(limit);
    start_holding(&c, hold_headers)
}

fn post(host: &str, body: impl Into<Vec<u8>>) -> HttpRequest {
    authed("POST", host, "/mcp", &support_token()).header("content-type", "application/json").body(body)
}

fn call(id: i64, name: &str, args: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": args}}).to_string()
}

fn exchange(p: &mut Plugin, req: HttpRequest) -> (Exchange, RecordingUpstream) {
    let mut up = RecordingUpstream::new(
        UpstreamResponse::ok(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#).header("content-type", "application/json"),
    );
    let x = p.send(0, req, &mut up);
    (x, up)
}

/// The call went through whole: the upstream got exactly the body that was sent.
fn assert_delivered(x: &Exchange, up: &RecordingUpstream, body: &[u8]) -> Value {
    assert_eq!(x.status, Some(200), "status; body {}; logs {:#?}", x.body_str(), x.logs);
    assert!(!x.trapped);
    assert_eq!(up.requests.len(), 1);
    assert_eq!(up.requests[0].body, body, "the upstream got the body as sent");
    assert_eq!(up.requests[0].header("x-warden-agent"), Some(SUPPORT_BOT));
    record(x)
}

/// The call was refused and no part of its body reached the upstream; with held headers, nothing did.
fn assert_not_delivered(x: &Exchange, up: &RecordingUpstream, hold: bool, status: u16, reason: &str) -> Value {
    assert_eq!(x.status, Some(status), "status; body {}; logs {:#?}", x.body_str(), x.logs);
    assert!(x.is_local_reply(), "a local reply");
    assert!(!x.trapped);
    assert!(!x.upstream_called, "the upstream must not be asked to answer");
    assert!(up.requests.is_empty());
    match &x.forwarded {
        None => {}
        Some(f) => {
            assert!(!hold, "headers were held: nothing may reach the upstream, got {f:?}");
            assert!(f.body.is_empty(), "no body byte may reach the upstream: {:?}", String::from_utf8_lossy(&f.body));
            assert!(!f.complete);
        }
    }
    assert_eq!(x.header("content-type"), Some("application/json"));
    let r = record(x);
    assert_eq!(r["reason"], reason, "record {r}");
    assert_eq!(x.header("x-warden-decision-id"), r["decision_id"].as_str());
    r
}

fn reply(x: &Exchange) -> Value {
    serde_json::from_slice(&x.body).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {}", x.body_str()))
}

/// A JSON-RPC error reply with this id, code and reason.
fn assert_jsonrpc_error(x: &Exchange, id: Value, code: i64, reason: &str) -> Value {
    let v = reply(x);
    assert_eq!(v["jsonrpc"], "2.0", "{v}");
    assert_eq!(v["id"], id, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert_eq!(v["error"]["data"]["reason"], reason, "{v}");
    assert_eq!(v["error"]["data"]["decision_id"].as_str(), x.header("x-warden-decision-id"), "{v}");
    v
}

fn both_modes(f: impl Fn(bool)) {
    for hold in [false, true] {
        f(hold);
    }
}

#[test]
fn allowed_call_goes_through_with_its_body_and_a_record() {
    both_modes(|hold| {
        let mut p = mcp_start(hold, LIMIT);
        let body = call(1, "lookup", json!({"q": "order 42"}));
        let (x, up) = exchange(&mut p, post(MCP_HOST, body.clone()));
        let r = assert_delivered(&x, &up, body.as_bytes());
        assert_eq!(r["decision"], "allow");
        assert_eq!(r["tool"], "mcp.lookup");
        assert_eq!(r["rule"], "mcp-lookup");
        assert_eq!(
            r["mcp"],
            json!({"server": "payments", "method": "tools/call", "name": "lookup", "messages": 1,
                                    "batch": false})
        );
    });
}

#[test]
fn argument_rules_allow_step_up_and_deny() {
    both_modes(|hold| {
        let mut p = mcp_start(hold, LIMIT);
        // Under the limit: allowed.
        let body = call(1, "refund", json!({"amount": 40, "order": "o-1"}));
        let (x, up) = exchange(&mut p, post(MCP_HOST, body.clone()));
        assert_eq!(assert_delivered(&x, &up, body.as_bytes())["rule"], "refund-small");
        // Over it: step-up, with the digest of the canonical arguments.
        let (x, up) = exchange(&mut p, post(MCP_HOST, call(7, "refund", json!({"order": "o-1", "amount": 250}))));
        assert_not_delivered(&x, &up, hold, 403, "step_up_required");
        // Without holding, the headers went on before the body was decided (and nothing else did).
        assert_eq!(x.forwarded.is_some(), !hold, "forwarded: {:?}", x.forwarded);
        let v = assert_jsonrpc_error(&x, json!(7), -31002, "step_up_required");
        let approval = &v["error"]["data"]["approval"];
        assert_eq!(approval["agent"], SUPPORT_BOT);
        assert_eq!(approval["tool"], "mcp.refund");
        assert_eq!(
            approval["arguments_digest"],
            warden_core::args::arguments_digest(Some(&json!({"amount": 250, "order": "o-1"})))
        );
        // Far over: no rule.
        let (x, up) = exchange(&mut p, post(MCP_HOST, call(8, "refund", json!({"amount": 90000}))));
        assert_not_delivered(&x, &up, hold, 403, "no_matching_rule");
        assert_jsonrpc_error(&x, json!(8), -31001, "no_matching_rule");
        // Missing or mistyped amount: denied.
        for args in [json!({"order": "o-1"}), json!({"amount": "40"})] {
            let (x, up) = exchange(&mut p, post(MCP_HOST, call(9, "refund", args)));
            assert_not_delivered(&x, &up, hold, 403, "invalid_arguments");
            assert_jsonrpc_error(&x, json!(9), -31001, "invalid_arguments");
        }
    });
}

#[test]
fn batches_mixing_allowed_and_denied_calls_are_denied_whole() {
    both_modes(|hold| {
        let mut p = mcp_start(hold, LIMIT);
        let mixed = format!("[{},{}]", call(1, "lookup", json!({})), call(2, "wipe", json!({})));
        let (x, up) = exchange(&mut p, post(BATCH_HOST, mixed.clone()));
        assert_not_delivered(&x, &up, hold, 403, "denied_by_rule");
        let v = reply(&x);
        let ids: Vec<Value> = v.as_array().expect("a batch reply").iter().map(|e| e["id"].clone()).collect();
        assert_eq!(ids, vec![json!(1), json!(2)]);
        // Allowed batch.
        let fine = format!("[{},{}]", call(1, "lookup", json!({})), call(2, "refund", json!({"amount": 5})));
        let (x, up) = exchange(&mut p, post(BATCH_HOST, fine.clone()));
        assert_delivered(&x, &up, fine.as_bytes());
        // A server without batches refuses any batch.
        let (x, up) = exchange(&mut p, post(MCP_HOST, format!("[{}]", call(1, "lookup", json!({})))));
        assert_not_delivered(&x, &up, hold, 400, "mcp_batch_refused");
        // Issue 15: one error per request of the refused batch, each with its id.
        let v = reply(&x);
        assert_eq!(v[0]["id"], 1, "{v}");
        assert_eq!(v[0]["error"]["code"], -32600, "{v}");
        assert_eq!(v[0]["error"]["data"]["reason"], "mcp_batch_refused", "{v}");
    });
}

#[test]
fn duplicate_keys_are_refused() {
    both_modes(|hold| {
        let mut p = mcp_start(hold, LIMIT);
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup","name":"wipe"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"wipe","n\u0061me":"lookup"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"refund","arguments":{"amount":5,"amount":5000}}}"#,
        ] {
            let (x, up) = exchange(&mut p, post(MCP_HOST, body));
            assert_not_delivered(&x, &up, hold, 400, "mcp_duplicate_key");
            // Issue 15: the one `id` member is still read after the strict parser refused the body.
            assert_jsonrpc_error(&x, json!(1), -32700, "mcp_duplicate_key");
        }
    });
}

#[test]
fn mcp_headers_must_agree_with_the_body() {
    both_modes(|hold| {
        let mut p = mcp_start(hold, LIMIT);
        let wipe = call(3, "wipe", json!({}));
        // Headers name an allowed tool, the body another.
        let req = post(MCP_HOST, wipe.clone()).header("mcp-method", "tools/call").header("mcp-name", "lookup");
        let (x, up) = exchange(&mut p, req);
        assert_not_delivered(&x, &up, hold, 400, "mcp_header_mismatch");
        // Headers name a denied tool: refused at the header phase, before anything reaches the upstream, in both modes.
        let req = post(MCP_HOST, wipe.clone()).header("mcp-method", "tools/call").header("mcp-name", "wipe");
        let (x, up) = exchange(&mut p, req);
        assert_not_delivered(&x, &up, true, 403, "denied_by_rule");
        // Headers and body agree on an allowed call.
        let ok = call(4, "lookup", json!({}));
        let req = post(MCP_HOST, ok.clone()).header("mcp-method", "tools/call").header("mcp-name", "lookup");
        let (x, up) = exchange(&mut p, req);
        assert_delivered(&x, &up, ok.as_bytes());
        // A name header without a method header, or two method headers.
        let req = post(MCP_HOST, ok.clone()).header("mcp-name", "lookup");
        let (x, up) = exchange(&mut p, req);
        assert_not_delivered(&x, &up, true, 400, "mcp_header_mismatch");
        let req = post(MCP_HOST, ok.clone()).header("mcp-method", "tools/call").header("mcp-method", "ping");
        let (x, up) = exchange(&mut p, req);
        assert_not_delivered(&x, &up, true, 400, "mcp_ambiguous_header");
    });
}

#[test]
fn method_case_games_are_refused() {
    both_modes(|hold| {
        let mut p = mcp_start(hold, LIMIT);
        for m in ["Tools/Call", "TOOLS/CALL", "tools/Call"] {
            let body = call(5, "wipe", json!({})).replace("tools/call", m);
            let (x, up) = exchange(&mut p, post(MCP_HOST, body));
            assert_not_delivered(&x, &up, hold, 400, "mcp_invalid_method");
            // The header in another case than the body.
            let req = post(MCP_HOST, call(5, "lookup", json!({}))).header("mcp-method", m).header("mcp-name", "lookup");
            let (x, up) = exchange(&mut p, req);
            assert_not_delivered(&x, &up, true, 400, "mcp_header_mismatch");
        }
    });
}

#[test]
fn bodies_split_across_many_chunks_are_decided_whole() {
    both_modes(|hold| {
        let mut p = mcp_start(hold, LIMIT);
        let ok = call(1, "lookup", json!({"q": "x".repeat(300)}));
        let (x, up) = exchange(&mut p, post(MCP_HOST, ok.clone()).chunks(vec![1; ok.len()]));
        assert_delivered(&x, &up, ok.as_bytes());
        // The denied tool name straddles chunk boundaries.
        let bad = call(2, "wipe", json!({"q": "y".repeat(200)}));
        let (x, up) = exchange(&mut p, post(MCP_HOST, bad.clone()).chunks(vec![7; bad.len().div_ceil(7)]));
        assert_not_delivered(&x, &up, hold, 403, "denied_by_rule");
        assert_jsonrpc_error(&x, json!(2), -31001, "denied_by_rule");
    });
}

#[test]
fn a_body_over_the_limit_is_refused() {
    both_modes(|hold| {
        let mut p = mcp_start(hold, LIMIT);
        let big = call(1, "lookup", json!({"q": "z".repeat(LIMIT)}));
        let (x, up) = exchange(&mut p, post(MCP_HOST, big.clone()).chunks(vec![1024; big.len().div_ceil(1024)]));
        assert_not_delivered(&x, &up, hold, 413, "mcp_body_too_large");
        assert_jsonrpc_error(&x, Value::Null, -32600, "mcp_body_too_large");
    });
}

#[test]
fn truncated_text_plain_and_non_utf8_bodies_are_refused() {
    both_modes(|hold| {
        let mut p = mcp_start(hold, LIMIT);
        let body = call(1, "lookup", json!({}));
        // JSON sent as text/plain: refused at the header phase.
        let req =
            authed("POST", MCP_HOST, "/mcp", &support_token()).header("content-type", "text/plain").body(body.clone());
        let (x, up) = exchange(&mut p, req);
        assert_not_delivered(&x, &up, true, 415, "mcp_content_type");
        // No content type at all.
        let req = authed("POST", MCP_HOST, "/mcp", &support_token()).body(body.clone());
        let (x, up) = exchange(&mut p, req);
        assert_not_delivered(&x, &up, true, 415, "mcp_content_type");
        // Non-UTF-8 bytes inside a string.
        let mut bytes = body.clone().into_bytes();
        let at = bytes.iter().position(|&b| b == b'l').unwrap();
        bytes[at] = 0xff;
        let (x, up) = exchange(&mut p, post(MCP_HOST, bytes));
        assert_not_delivered(&x, &up, hold, 400, "mcp_not_utf8");
        // Truncated.
        let (x, up) = exchange(&mut p, post(MCP_HOST, &body.as_bytes()[..body.len() - 3]));
        assert_not_delivered(&x, &up, hold, 400, "mcp_not_json");
        assert_jsonrpc_error(&x, Value::Null, -32700, "mcp_not_json");
    });
}

#[test]
fn notifications_lifecycle_and_identity() {
    both_modes(|hold| {
        let mut p = mcp_start(hold, LIMIT);
        let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;
        let (x, up) = exchange(&mut p, post(MCP_HOST, init));
        let r = assert_delivered(&x, &up, init.as_bytes());
        assert_eq!(r["reason"], "mcp_lifecycle");
        // A denied notification: a JSON-RPC error too (issue 15: one shape per route), with no id to echo.
        let note = r#"{"jsonrpc":"2.0","method":"notifications/x-wipe"}"#;
        let (x, up) = exchange(&mut p, post(MCP_HOST, note));
        assert_not_delivered(&x, &up, hold, 403, "unknown_tool");
        assert_jsonrpc_error(&x, Value::Null, -31001, "unknown_tool");
        // No token: 401 at the header phase.
        let req =
            HttpRequest::new("POST", "/mcp").authority(MCP_HOST).header("content-type", "application/json").body(init);
        let (x, up) = exchange(&mut p, req);
        assert_eq!(x.status, Some(401));
        assert!(up.requests.is_empty() && x.forwarded.is_none());
    });
}

fn list_call(p: &mut Plugin, response: UpstreamResponse) -> Exchange {
    let req = post(MCP_HOST, r#"{"jsonrpc":"2.0","id":11,"method":"tools/list"}"#).header("mcp-method", "tools/list");
    let mut up = RecordingUpstream::new(response);
    p.send(0, req, &mut up)
}

fn tool_list() -> Value {
    json!({"jsonrpc": "2.0", "id": 11, "result": {"tools": [
        {"name": "lookup", "inputSchema": {"type": "object"}},
        {"name": "wipe", "inputSchema": {"type": "object"}},
        {"name": "refund", "inputSchema": {"type": "object"}},
        {"name": "not_in_catalog", "inputSchema": {"type": "object"}}
    ]}})
}

fn listed(v: &Value) -> Vec<String> {
    v["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn tools_list_responses_show_only_callable_tools_and_fail_closed() {
    both_modes(|hold| {
        let mut p = mcp_start(hold, LIMIT);
        // JSON.
        let x =
            list_call(&mut p, UpstreamResponse::ok(tool_list().to_string()).header("content-type", "application/json"));
        assert_eq!(x.status, Some(200), "{}", x.body_str());
        assert_eq!(listed(&reply(&x)), ["lookup", "refund"]);
        assert_eq!(
            x.header("content-length").map(|l| l.parse::<usize>().unwrap()).unwrap_or(x.body.len()),
            x.body.len()
        );
        // SSE, split into small chunks by the upstream, with a notification first.
        let sse = format!(
            "event: message\ndata: {}\n\nevent: message\ndata: {}\n\n",
            json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}),
            tool_list()
        );
        let mut resp = UpstreamResponse::ok(sse.clone()).header("content-type", "text/event-stream");
        resp.body_chunks = Some(vec![16; sse.len().div_ceil(16)]);
        let x = list_call(&mut p, resp);
        let body = x.body_str();
        assert!(body.contains("notifications/progress") && body.contains("\"lookup\""), "{body}");
        assert!(!body.contains("wipe") && !body.contains("not_in_catalog"), "{body}");
        // An SSE event before the answer that cannot be parsed: the whole response is replaced by an error, nothing
        // of it leaks. (After the answer the stream is the client's no more: what follows is dropped.)
        let broken = format!(
            "event: message\ndata: {{\"jsonrpc\":\"2.0\",\"id\":11,\n\nevent: message\ndata: {}\n\n",
            tool_list()
        );
        let x = list_call(&mut p, UpstreamResponse::ok(broken).header("content-type", "text/event-stream"));
        let body = x.body_str();
        assert!(body.contains("mcp_list_unfilterable") && !body.contains("wipe") && !body.contains("lookup"), "{body}");
        // Compressed, or an unexpected content type: replaced by an error.
        for (ct, enc) in [("application/json", Some("gzip")), ("text/html", None)] {
            let mut resp = UpstreamResponse::ok(tool_list().to_string()).header("content-type", ct);
            if let Some(e) = enc {
                resp = resp.header("content-encoding", e);
            }
            let x = list_call(&mut p, resp);
            let v = reply(&x);
            assert_eq!(v["error"]["data"]["reason"], "mcp_list_unfilterable", "{v}");
            assert_eq!(v["id"], 11);
            assert_eq!(x.header("content-encoding"), None);
        }
    });
}
