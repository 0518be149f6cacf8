//! Issue 19, the request shape of MCP endpoints and held bodies, through the real `warden.wasm` in the host in
//! both header-phase modes:
//! - item 6: `GET` and `DELETE` on an MCP endpoint carry no body (a `tools/call` body on `GET /mcp` used to go
//!   through unchecked) and no `Upgrade` (a WebSocket would tunnel JSON-RPC past the body decision);
//! - item 8: a request `Content-Encoding` on an MCP route, or on a step-up call whose body is decided on, is
//!   refused (a gzip-labelled body used to be decided as raw bytes and forwarded).

use serde_json::{json, Value};
use warden_host::{Exchange, HttpRequest, Plugin, RecordingUpstream, UpstreamResponse};

use crate::support::filter::*;

fn exchange(p: &mut Plugin, req: HttpRequest) -> (Exchange, RecordingUpstream) {
    let mut up = RecordingUpstream::new(
        UpstreamResponse::ok(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#).header("content-type", "application/json"),
    );
    let x = p.send(0, req, &mut up);
    (x, up)
}

/// Refused with this status and reason before anything reached the upstream (in either mode).
fn assert_refused_at_headers(x: &Exchange, up: &RecordingUpstream, status: u16, reason: &str) {
    assert_eq!(x.status, Some(status), "{reason}: status; body {}; logs {:#?}", x.body_str(), x.logs);
    assert!(up.requests.is_empty() && x.forwarded.is_none(), "{reason}: forwarded {:?}", x.forwarded);
    let v: Value = serde_json::from_slice(&x.body).unwrap_or(Value::Null);
    let got = if v["jsonrpc"] == "2.0" { &v["error"]["data"]["reason"] } else { &v["reason"] };
    assert_eq!(got, reason, "{}", x.body_str());
    assert_eq!(record(x)["reason"], reason);
}

fn call(name: &str) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": {}}}).to_string()
}

#[test]
fn get_and_delete_on_an_mcp_endpoint_carry_no_body_and_no_upgrade() {
    for hold in [false, true] {
        let mut p = start_holding(&config(Some(&sign(&mcp_bundle_at(T0)))), hold);
        let tok = support_token();
        for method in ["GET", "DELETE"] {
            // A body (a denied call's, even) on GET or DELETE: refused.
            let req =
                authed(method, MCP_HOST, "/mcp", &tok).header("content-type", "application/json").body(call("wipe"));
            let (x, up) = exchange(&mut p, req);
            assert_refused_at_headers(&x, &up, 400, "mcp_unexpected_body");
            // Announced by framing alone (chunked), no content type.
            let req = authed(method, MCP_HOST, "/mcp", &tok).body(call("wipe")).chunks(vec![8; 16]);
            let (x, up) = exchange(&mut p, req);
            assert_refused_at_headers(&x, &up, 400, "mcp_unexpected_body");
        }
        // A WebSocket upgrade on the stream GET.
        let req = authed("GET", MCP_HOST, "/mcp", &tok)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        let (x, up) = exchange(&mut p, req);
        assert_refused_at_headers(&x, &up, 400, "mcp_upgrade");
        // Any other upgrade on a POST too.
        let req = authed("POST", MCP_HOST, "/mcp", &tok)
            .header("content-type", "application/json")
            .header("upgrade", "h2c")
            .body(call("lookup"));
        let (x, up) = exchange(&mut p, req);
        assert_refused_at_headers(&x, &up, 400, "mcp_upgrade");
        // The plain stream GET and the session DELETE still go through.
        for method in ["GET", "DELETE"] {
            let (x, up) =
                exchange(&mut p, authed(method, MCP_HOST, "/mcp", &tok).header("accept", "text/event-stream"));
            assert_eq!(x.status, Some(200), "{method}: {} {:#?}", x.body_str(), x.logs);
            assert_eq!(up.requests.len(), 1);
        }
    }
}

#[test]
fn a_content_encoding_on_a_decided_body_is_refused() {
    for hold in [false, true] {
        // MCP: whatever the encoding says (the bytes here are plain JSON labelled gzip).
        let mut p = start_holding(&config(Some(&sign(&mcp_bundle_at(T0)))), hold);
        for encoding in ["gzip", "br", "deflate", "GZIP", "identity, gzip"] {
            let req = authed("POST", MCP_HOST, "/mcp", &support_token())
                .header("content-type", "application/json")
                .header("content-encoding", encoding)
                .body(call("lookup"));
            let (x, up) = exchange(&mut p, req);
            assert_refused_at_headers(&x, &up, 415, "mcp_content_encoding");
        }
        // A plain-HTTP step-up call, whose approval binds to the body.
        let mut p = start_holding(&default_config(), hold);
        let req = authed("POST", BILLING, "/v1/refunds", &support_token())
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(r#"{"amount": 4200}"#);
        let (x, up) = exchange(&mut p, req);
        assert_refused_at_headers(&x, &up, 415, "step_up_content_encoding");
        // An allowed plain-HTTP call is not decided on its body: the encoding is the tool's business.
        let req = authed("GET", CRM, "/api/v2/contacts/42", &support_token()).header("content-encoding", "gzip");
        let (x, up) = exchange(&mut p, req);
        assert_eq!(x.status, Some(200), "{}", x.body_str());
        assert_eq!(up.requests.len(), 1);
    }
}
