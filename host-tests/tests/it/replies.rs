//! What an agent or MCP client is told when Warden refuses (issue 15), through the real `warden.wasm` in the host, in
//! both header-phase modes: MCP-conformant JSON-RPC error codes (outside the ranges JSON-RPC and MCP reserve, except
//! the spec's own `-32700`/`-32600`/`-32602`/`-32020` where it means them), the request's `id` echoed (also after a
//! strict-parse failure and, when the headers are held, for refusals decided at the header phase), one error per
//! request of a batch, one reply shape per route (every refusal on an MCP route is JSON-RPC, on an HTTP route the
//! HTTP JSON body), actionable bodies (tool or the normalized request, the agent, a message, the failing argument,
//! the rule's owner) that never carry a secret, and the record's `mcp.method` (the JSON-RPC method or null).

use crate::support::filter::*;
use serde_json::{json, Value};
use warden_host::{Exchange, HttpRequest, Plugin, RecordingUpstream, UpstreamResponse};

/// Warden's JSON-RPC codes (documented in `plugin/filter/README.md`).
const DENIED: i64 = -31001;
const STEP_UP: i64 = -31002;
const IDENTITY: i64 = -31003;
const HEADER_MISMATCH: i64 = -32020;
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const INVALID_PARAMS: i64 = -32602;

const SECRET_ORDER: &str = "o-secret-7731";

fn plugin(hold: bool) -> Plugin {
    let mut b = mcp_bundle_at(T0);
    // The deny rule names its owner and the change that justifies it.
    for r in b["rules"].as_array_mut().unwrap() {
        if r["id"] == "no-wipe" {
            r["owner"] = json!("payments-platform@acme.example");
            r["approval"] = json!("CHG-2231");
        }
    }
    let mut c = config(Some(&sign(&b)));
    c["max_body_bytes"] = json!(4096);
    start_holding(&c, hold)
}

fn both_modes(f: impl Fn(bool)) {
    for hold in [false, true] {
        f(hold);
    }
}

fn post_as(host: &str, token: Option<&str>, body: impl Into<Vec<u8>>) -> HttpRequest {
    let req = HttpRequest::new("POST", "/mcp").authority(host).header("content-type", "application/json");
    match token {
        Some(t) => req.header("authorization", &format!("Bearer {t}")),
        None => req,
    }
    .body(body)
}

fn post(body: impl Into<Vec<u8>>) -> HttpRequest {
    post_as(MCP_HOST, Some(&support_token()), body)
}

fn call(id: Value, name: &str, args: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": args}}).to_string()
}

fn exchange(p: &mut Plugin, req: HttpRequest) -> (Exchange, RecordingUpstream) {
    let mut up = RecordingUpstream::new(
        UpstreamResponse::ok(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#).header("content-type", "application/json"),
    );
    let x = p.send(0, req, &mut up);
    (x, up)
}

fn body_json(x: &Exchange) -> Value {
    serde_json::from_slice(&x.body).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {}", x.body_str()))
}

/// A refusal that reached nothing upstream (no body byte; with held headers, nothing at all), in the standard
/// headers, with its record.
fn refused(x: &Exchange, up: &RecordingUpstream, hold: bool, status: u16, reason: &str) -> Value {
    assert_eq!(x.status, Some(status), "status; body {}; logs {:#?}", x.body_str(), x.logs);
    assert!(x.is_local_reply() && !x.trapped && !x.upstream_called && up.requests.is_empty());
    if let Some(f) = &x.forwarded {
        assert!(!hold, "headers were held: nothing may reach the upstream, got {f:?}");
        assert!(f.body.is_empty() && !f.complete);
    }
    assert_eq!(x.header("content-type"), Some("application/json"));
    assert_eq!(x.header("cache-control"), Some("no-store"));
    let r = record(x);
    assert_eq!(r["reason"], reason, "record {r}");
    assert_eq!(x.header("x-warden-decision-id"), r["decision_id"].as_str());
    r
}

/// One JSON-RPC error object with this id and code; its `data` is Warden's refusal (returned) with this reason.
fn rpc_error(x: &Exchange, id: &Value, code: i64, reason: &str) -> Value {
    let v = body_json(x);
    check_error(&v, x, id, code, reason)
}

fn check_error(v: &Value, x: &Exchange, id: &Value, code: i64, reason: &str) -> Value {
    assert_eq!(v["jsonrpc"], "2.0", "{v}");
    assert_eq!(&v["id"], id, "id echoed: {v}");
    assert!(v.get("result").is_none(), "{v}");
    assert_eq!(v["error"]["code"], code, "code: {v}");
    let message = v["error"]["message"].as_str().unwrap_or_else(|| panic!("error.message: {v}"));
    assert!(message.contains(reason), "error.message names the reason: {v}");
    let data = &v["error"]["data"];
    assert_eq!(data["reason"], reason, "{v}");
    assert_eq!(data["decision_id"].as_str(), x.header("x-warden-decision-id"), "{v}");
    assert_eq!(data["revision"], REVISION, "{v}");
    assert!(data["message"].as_str().is_some_and(|m| m.len() > 10), "a human message: {v}");
    data.clone()
}

/// Nothing secret in a reply: neither the token nor an argument value.
fn no_secrets(x: &Exchange, token: &str) {
    let text = x.body_str();
    assert!(!text.contains(token), "the token is echoed: {text}");
    assert!(!text.contains(SECRET_ORDER), "an argument value is echoed: {text}");
    for (_, v) in &x.headers {
        assert!(!v.contains(token) && !v.contains(SECRET_ORDER), "a header echoes a secret: {v}");
    }
}

#[test]
fn policy_refusals_on_an_mcp_route_are_json_rpc_errors_with_warden_codes_and_the_id() {
    both_modes(|hold| {
        let mut p = plugin(hold);
        let token = support_token();
        let req = |body: String| post_as(MCP_HOST, Some(&token), body);

        // A deny rule: the tool, the agent, the request as matched, the rule's owner and reference.
        let (x, up) = exchange(&mut p, req(call(json!(12), "wipe", json!({"order": SECRET_ORDER}))));
        let r = refused(&x, &up, hold, 403, "denied_by_rule");
        let d = rpc_error(&x, &json!(12), DENIED, "denied_by_rule");
        assert_eq!(d["decision"], "deny");
        assert_eq!(d["rule"], "no-wipe");
        assert_eq!(d["tool"], "mcp.wipe");
        assert_eq!(d["agent"], SUPPORT_BOT);
        assert_eq!(d["request"], json!({"method": "POST", "host": MCP_HOST, "path": "/mcp"}));
        assert_eq!(d["mcp"], json!({"server": "payments", "method": "tools/call", "name": "wipe"}));
        assert_eq!(d["owner"], "payments-platform@acme.example");
        assert_eq!(d["rule_reference"], "CHG-2231");
        assert_eq!(r["mcp"]["method"], "tools/call");
        no_secrets(&x, &token);

        // A string id is echoed as it came.
        let (x, up) = exchange(&mut p, req(call(json!("req-7"), "wipe", json!({}))));
        refused(&x, &up, hold, 403, "denied_by_rule");
        rpc_error(&x, &json!("req-7"), DENIED, "denied_by_rule");

        // Step-up: its own code, and what the approval must bind to.
        let (x, up) = exchange(&mut p, req(call(json!(13), "refund", json!({"order": SECRET_ORDER, "amount": 250}))));
        refused(&x, &up, hold, 403, "step_up_required");
        let d = rpc_error(&x, &json!(13), STEP_UP, "step_up_required");
        assert_eq!(d["decision"], "step_up");
        assert_eq!(d["tool"], "mcp.refund");
        assert_eq!(d["approval"]["tool"], "mcp.refund");
        assert_eq!(d["approval"]["digest_of"], "arguments");
        no_secrets(&x, &token);
        // Step-up is not OAuth `insufficient_scope`: no challenge that would send an OAuth client re-authorizing.
        assert_eq!(x.header("www-authenticate"), None);

        // A known tool and no rule vs. a tool the catalog does not know: told apart without the bundle.
        let (x, up) = exchange(&mut p, req(call(json!(14), "refund", json!({"amount": 90000}))));
        refused(&x, &up, hold, 403, "no_matching_rule");
        let d = rpc_error(&x, &json!(14), DENIED, "no_matching_rule");
        assert_eq!(d["tool"], "mcp.refund");
        assert!(d["message"].as_str().unwrap().contains("mcp.refund"), "{d}");
        let (x, up) = exchange(&mut p, req(call(json!(15), "nope", json!({}))));
        refused(&x, &up, hold, 403, "unknown_tool");
        let d = rpc_error(&x, &json!(15), DENIED, "unknown_tool");
        assert_eq!(d["tool"], Value::Null);
        assert!(d["message"].as_str().unwrap().contains("no tool"), "{d}");
        assert_eq!(d["mcp"]["name"], "nope");

        // Invalid arguments: which argument and which condition, never its value.
        for (args, pointer) in [
            (json!({"order": SECRET_ORDER}), "/amount"),
            (json!({"order": SECRET_ORDER, "amount": "forty"}), "/amount"),
        ] {
            let (x, up) = exchange(&mut p, req(call(json!(16), "refund", args)));
            refused(&x, &up, hold, 403, "invalid_arguments");
            let d = rpc_error(&x, &json!(16), DENIED, "invalid_arguments");
            assert_eq!(d["argument"]["pointer"], pointer, "{d}");
            assert!(d["argument"]["condition"].as_str().is_some_and(|c| c.contains("100")), "{d}");
            no_secrets(&x, &token);
        }
    });
}

#[test]
fn shape_refusals_use_the_codes_the_spec_defines_and_echo_a_readable_id() {
    both_modes(|hold| {
        let mut p = plugin(hold);
        // Mcp-Name disagrees with the body: HeaderMismatch, 400, with the body's id.
        let req =
            post(call(json!(21), "wipe", json!({}))).header("mcp-method", "tools/call").header("mcp-name", "lookup");
        let (x, up) = exchange(&mut p, req);
        refused(&x, &up, hold, 400, "mcp_header_mismatch");
        rpc_error(&x, &json!(21), HEADER_MISMATCH, "mcp_header_mismatch");

        // Strict-parse failures whose id is still readable answer with it.
        let dup = r#"{"jsonrpc":"2.0","id":22,"method":"tools/call","params":{"name":"lookup","name":"wipe"}}"#;
        let (x, up) = exchange(&mut p, post(dup));
        refused(&x, &up, hold, 400, "mcp_duplicate_key");
        rpc_error(&x, &json!(22), PARSE_ERROR, "mcp_duplicate_key");
        let bad_params = r#"{"jsonrpc":"2.0","id":23,"method":"tools/call","params":{"name":5}}"#;
        let (x, up) = exchange(&mut p, post(bad_params));
        refused(&x, &up, hold, 400, "mcp_invalid_params");
        rpc_error(&x, &json!(23), INVALID_PARAMS, "mcp_invalid_params");
        let case = call(json!(24), "lookup", json!({})).replace("tools/call", "Tools/Call");
        let (x, up) = exchange(&mut p, post(case));
        refused(&x, &up, hold, 400, "mcp_invalid_method");
        rpc_error(&x, &json!(24), INVALID_REQUEST, "mcp_invalid_method");

        // An id that appears twice, or is not a string or integer, is not echoed.
        let two_ids = r#"{"jsonrpc":"2.0","id":25,"id":26,"method":"ping"}"#;
        let (x, up) = exchange(&mut p, post(two_ids));
        refused(&x, &up, hold, 400, "mcp_duplicate_key");
        rpc_error(&x, &Value::Null, PARSE_ERROR, "mcp_duplicate_key");
        let float_id = r#"{"jsonrpc":"2.0","id":2.5,"method":"ping"}"#;
        let (x, up) = exchange(&mut p, post(float_id));
        refused(&x, &up, hold, 400, "mcp_invalid_id");
        rpc_error(&x, &Value::Null, INVALID_REQUEST, "mcp_invalid_id");
        // Not JSON at all: null.
        let (x, up) = exchange(&mut p, post(&b"{\"jsonrpc\":\"2.0\",\"id\":27"[..]));
        refused(&x, &up, hold, 400, "mcp_not_json");
        rpc_error(&x, &Value::Null, PARSE_ERROR, "mcp_not_json");

        // A batch on a server without batches: one error per request, each with its id.
        let batch = format!("[{},{}]", call(json!(31), "lookup", json!({})), call(json!(32), "lookup", json!({})));
        let (x, up) = exchange(&mut p, post(batch));
        refused(&x, &up, hold, 400, "mcp_batch_refused");
        let v = body_json(&x);
        let errors = v.as_array().unwrap_or_else(|| panic!("one error per request: {v}"));
        assert_eq!(errors.len(), 2, "{v}");
        for (e, id) in errors.iter().zip([json!(31), json!(32)]) {
            check_error(e, &x, &id, INVALID_REQUEST, "mcp_batch_refused");
        }
    });
}

#[test]
fn a_batch_refused_whole_answers_each_request_with_its_id() {
    both_modes(|hold| {
        let mut p = plugin(hold);
        let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        let batch =
            format!("[{},{note},{}]", call(json!(41), "lookup", json!({})), call(json!("w"), "wipe", json!({})));
        let (x, up) = exchange(&mut p, post_as(BATCH_HOST, Some(&support_token()), batch));
        refused(&x, &up, hold, 403, "denied_by_rule");
        let v = body_json(&x);
        let errors = v.as_array().unwrap_or_else(|| panic!("a batch reply: {v}"));
        assert_eq!(errors.len(), 2, "the notification gets no answer: {v}");
        for (e, id) in errors.iter().zip([json!(41), json!("w")]) {
            check_error(e, &x, &id, DENIED, "denied_by_rule");
        }
    });
}

#[test]
fn every_refusal_on_an_mcp_route_is_json_rpc() {
    both_modes(|hold| {
        let mut p = plugin(hold);
        let init = r#"{"jsonrpc":"2.0","id":51,"method":"initialize","params":{}}"#;
        // Headers held: the id is read once the body is there; otherwise Warden must refuse before it (id null).
        let id = if hold { json!(51) } else { Value::Null };

        // No token.
        let (x, up) = exchange(&mut p, post_as(MCP_HOST, None, init));
        refused(&x, &up, true, 401, "identity_missing");
        let d = rpc_error(&x, &id, IDENTITY, "identity_missing");
        assert_eq!(d["agent"], Value::Null);
        assert!(x.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer ")));

        // An expired token: the challenge says so in plain words, still with a machine-readable error.
        let expired = token(&claims(SUPPORT_BOT, T0 - 1000));
        let (x, up) = exchange(&mut p, post_as(MCP_HOST, Some(&expired), init));
        refused(&x, &up, true, 401, "token_expired");
        rpc_error(&x, &id, IDENTITY, "token_expired");
        let challenge = x.header("www-authenticate").unwrap_or_default().to_string();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        assert!(challenge.contains("expired") && challenge.contains(&SKEW.to_string()), "{challenge}");
        assert!(!challenge.contains("error_description=\"token_expired\""), "a bare code: {challenge}");
        no_secrets(&x, &expired);

        // A revoked agent.
        let revoked = token(&claims(REVOKED_BOT, T0));
        let (x, up) = exchange(&mut p, post_as(MCP_HOST, Some(&revoked), init));
        // Revocation is an identity refusal (401 `invalid_token`, issue 19 item 10): the identity code.
        refused(&x, &up, true, 401, "revoked_agent");
        rpc_error(&x, &id, IDENTITY, "revoked_agent");

        // Denied from the MCP headers alone: refused before anything reaches the upstream.
        let req =
            post(call(json!(52), "wipe", json!({}))).header("mcp-method", "tools/call").header("mcp-name", "wipe");
        let (x, up) = exchange(&mut p, req);
        let r = refused(&x, &up, true, 403, "denied_by_rule");
        let id52 = if hold { json!(52) } else { Value::Null };
        let d = rpc_error(&x, &id52, DENIED, "denied_by_rule");
        assert_eq!(d["tool"], "mcp.wipe");
        assert_eq!(r["mcp"]["method"], "tools/call");

        // A notification nothing binds (unknown tool): a JSON-RPC error too, with no id to echo.
        let note = r#"{"jsonrpc":"2.0","method":"notifications/x-wipe"}"#;
        let (x, up) = exchange(&mut p, post(note));
        refused(&x, &up, hold, 403, "unknown_tool");
        rpc_error(&x, &Value::Null, DENIED, "unknown_tool");
    });
}

#[test]
fn refusals_on_an_http_route_are_the_http_json_body_with_the_same_fields() {
    let mut p = start(&config(Some(&sign(&mcp_bundle_at(T0)))), 1);
    let token = support_token();
    let (x, _) = exchange(&mut p, authed("PATCH", CRM, "/api/v2/contacts/./c-9", &token));
    let (body, _) = assert_refused(&x, 403, "deny", "denied_by_rule", "support-no-writes");
    assert!(body.get("jsonrpc").is_none(), "{body}");
    assert_eq!(body["tool"], "crm.contacts.update");
    assert_eq!(body["agent"], SUPPORT_BOT);
    assert_eq!(body["request"], json!({"method": "PATCH", "host": CRM, "path": "/api/v2/contacts/c-9"}));
    assert!(body["message"].as_str().is_some_and(|m| m.contains("crm.contacts.update")), "{body}");
    assert_eq!(body["owner"], "identity-security@acme.example", "the bundle's owner when the rule names none");
    no_secrets(&x, &token);

    // No tool matched: the normalized request says what was looked up.
    let (x, _) = exchange(&mut p, authed("GET", CRM, "/nothing//here", &token));
    let (body, _) = assert_refused(&x, 403, "deny", "unknown_tool", "default");
    assert_eq!(body["tool"], Value::Null);
    assert_eq!(body["request"], json!({"method": "GET", "host": CRM, "path": "/nothing/here"}));
    assert!(body["message"].as_str().is_some_and(|m| m.contains("no tool")), "{body}");

    // A token refusal on an HTTP route is the same HTTP JSON body (never JSON-RPC).
    let (x, _) = exchange(&mut p, request("GET", CRM, "/api/v2/contacts/c-1"));
    let (body, _) = assert_refused(&x, 401, "deny", "identity_missing", "default");
    assert!(body.get("jsonrpc").is_none() && body["message"].is_string(), "{body}");
}

#[test]
fn the_record_mcp_method_is_the_json_rpc_method_or_null() {
    let mut p = plugin(true);
    // GET (the server's event stream) and DELETE (end of session) are no JSON-RPC method.
    for m in ["GET", "DELETE"] {
        let (x, _) = exchange(&mut p, authed(m, MCP_HOST, "/mcp", &support_token()));
        let r = record(&x);
        assert_eq!(r["mcp"]["method"], Value::Null, "{m}: {r}");
        assert_eq!(r["method"], m);
    }
    // A client's answer to a server request has no method either.
    let answer = r#"{"jsonrpc":"2.0","id":"s-1","result":{}}"#;
    let (x, _) = exchange(&mut p, post(answer));
    assert_eq!(record(&x)["mcp"]["method"], Value::Null, "{}", x.body_str());
    // A body that could not be parsed: null, not "".
    let (x, _) = exchange(&mut p, post(&b"not json"[..]));
    assert_eq!(record(&x)["mcp"]["method"], Value::Null);
    // Decided from the body: the message's method.
    let (x, _) = exchange(&mut p, post(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#));
    assert_eq!(record(&x)["mcp"]["method"], "ping");
}
