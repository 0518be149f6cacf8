//! Issue 19, approvals ("one approval covers one call, once"), through the real `warden.wasm` in the host, with
//! approvals minted by the real `warden approve` from the gateway's own step-up replies:
//! - item 1: a batch whose step-up calls share one approval (`[A, B]` with an approval for `A`, and `[A, A]`) is
//!   refused; a batch with one step-up call and its approval goes through;
//! - item 2: a plain-HTTP approval binds the method, the normalized path with its query, the content type and the
//!   body, so an approval for `POST /v1/refunds` with body B does not pass `POST /v1/refunds?amount=999999&to=evil`;
//! - item 4: arguments that have no exact canonical form (numbers beyond 64-bit integers or double precision) are
//!   refused, so two different amounts can never share an approval.

use serde_json::{json, Value};
use warden_host::{Exchange, HttpRequest, Plugin, RecordingUpstream, UpstreamResponse};

use crate::governance::{warden_approve, warden_approve_body};
use crate::support::filter::*;

const REFUND_BODY: &str = r#"{"amount": 4200, "currency": "EUR", "order": "o-981"}"#;

fn exchange(p: &mut Plugin, req: HttpRequest) -> (Exchange, RecordingUpstream) {
    let mut up = RecordingUpstream::new(
        UpstreamResponse::ok(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#).header("content-type", "application/json"),
    );
    let x = p.send(0, req, &mut up);
    (x, up)
}

fn reason(x: &Exchange) -> Value {
    let v: Value = serde_json::from_slice(&x.body).unwrap_or(Value::Null);
    let one = if v.is_array() { v[0].clone() } else { v };
    if one["jsonrpc"] == "2.0" {
        one["error"]["data"]["reason"].clone()
    } else {
        one["reason"].clone()
    }
}

/// Refused with this status and reason, and nothing of the call reached the upstream.
fn assert_not_delivered(x: &Exchange, up: &RecordingUpstream, status: u16, want: &str) {
    assert_eq!(x.status, Some(status), "status; body {}; logs {:#?}", x.body_str(), x.logs);
    assert!(up.requests.is_empty(), "the upstream received {:#?}", up.requests);
    assert!(x.forwarded.as_ref().is_none_or(|f| f.body.is_empty() && !f.complete), "{:?}", x.forwarded);
    assert_eq!(reason(x), want, "{}", x.body_str());
    assert_eq!(record(x)["reason"], want);
}

fn assert_delivered(x: &Exchange, up: &RecordingUpstream, body: &[u8]) -> Value {
    assert_eq!(x.status, Some(200), "status; body {}; logs {:#?}", x.body_str(), x.logs);
    assert_eq!(up.requests.len(), 1);
    assert_eq!(up.requests[0].body, body);
    record(x)
}

// ---------------------------------------------------------------------------------------------------------------
// Item 1: batches

fn mcp_plugin(hold: bool) -> Plugin {
    start_holding(&config(Some(&sign(&mcp_bundle_at(T0)))), hold)
}

fn mcp_post(body: &str, approval: Option<&str>) -> HttpRequest {
    let mut r = authed("POST", BATCH_HOST, "/mcp", &support_token())
        .header("content-type", "application/json")
        .body(body.as_bytes().to_vec());
    if let Some(a) = approval {
        r = r.header("x-warden-approval", a);
    }
    r
}

fn call(id: i64, name: &str, args: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": args}}).to_string()
}

/// The JSON-RPC error object of the first step-up message in a (batch) reply, as `warden approve --from` reads it.
fn step_up_error(x: &Exchange) -> Vec<u8> {
    let v: Value = serde_json::from_slice(&x.body).expect("JSON reply");
    let list = if v.is_array() { v.as_array().unwrap().clone() } else { vec![v] };
    let e = list.into_iter().find(|e| e["error"]["data"]["approval"].is_object()).expect("a step-up error");
    e.to_string().into_bytes()
}

#[test]
fn a_batch_of_step_up_calls_does_not_pass_on_one_approval() {
    for hold in [false, true] {
        let mut p = mcp_plugin(hold);
        let small = call(1, "refund", json!({"amount": 250, "order": "o-1"}));
        let large = call(2, "refund", json!({"amount": 4999, "order": "o-evil"}));
        // The approval for the first call (minted from the reply to that call alone).
        let (x, up) = exchange(&mut p, mcp_post(&small, None));
        assert_not_delivered(&x, &up, 403, "step_up_required");
        let approval = warden_approve(&step_up_error(&x), now(&p), &[]);

        // [A, B] with A's approval: refused whole.
        let ab = format!("[{small},{large}]");
        let (x, up) = exchange(&mut p, mcp_post(&ab, Some(&approval)));
        assert_not_delivered(&x, &up, 403, "step_up_batch");
        // [A, A] (two refunds on one single-use approval): refused.
        let aa = format!("[{small},{}]", small.replace("\"id\":1", "\"id\":3"));
        let (x, up) = exchange(&mut p, mcp_post(&aa, Some(&approval)));
        assert_not_delivered(&x, &up, 403, "step_up_batch");
        // Without an approval the reply says so too (no approval can help this batch).
        let (x, up) = exchange(&mut p, mcp_post(&ab, None));
        assert_not_delivered(&x, &up, 403, "step_up_batch");

        // One step-up call in a batch with an allowed call: its own approval covers it, once.
        let mixed = format!("[{},{small}]", call(4, "lookup", json!({"q": "x"})));
        let (x, up) = exchange(&mut p, mcp_post(&mixed, Some(&approval)));
        let r = assert_delivered(&x, &up, mixed.as_bytes());
        assert_eq!(r["reason"], "allowed_by_approval", "hold={hold}: {r}");
        let (x, up) = exchange(&mut p, mcp_post(&mixed, Some(&approval)));
        assert_not_delivered(&x, &up, 403, "approval_replayed");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Item 2: what a plain-HTTP approval binds

fn refund(path: &str, content_type: &str, body: &str, approval: Option<&str>) -> HttpRequest {
    let mut r = authed("POST", BILLING, path, &support_token())
        .header("content-type", content_type)
        .body(body.as_bytes().to_vec());
    if let Some(a) = approval {
        r = r.header("x-warden-approval", a);
    }
    r
}

#[test]
fn a_plain_http_approval_binds_method_path_query_content_type_and_body() {
    for hold in [false, true] {
        let mut p = start_holding(&default_config(), hold);
        let (x, up) = exchange(&mut p, refund("/v1/refunds", "application/json", REFUND_BODY, None));
        assert_not_delivered(&x, &up, 403, "step_up_required");
        let reply: Value = serde_json::from_slice(&x.body).unwrap();
        let a = &reply["approval"];
        // The reply says what the digest binds.
        assert_eq!(a["digest_of"], "request", "hold={hold}: {a}");
        assert_eq!(a["binding"]["method"], "POST", "{a}");
        assert_eq!(a["binding"]["path"], "/v1/refunds", "{a}");
        assert_eq!(a["binding"]["content_type"], "application/json", "{a}");
        let approval = warden_approve_body(&x.body, now(&p), REFUND_BODY.as_bytes(), &[]);

        // The same body on another query, another spelling of the query, or another content type: refused.
        for (path, ct) in [
            ("/v1/refunds?amount=999999&to=evil", "application/json"),
            ("/v1/refunds?", "application/json"),
            ("/v1/refunds", "application/x-www-form-urlencoded"),
            ("/v1/refunds", "text/plain"),
        ] {
            let (x, up) = exchange(&mut p, refund(path, ct, REFUND_BODY, Some(&approval)));
            assert_not_delivered(&x, &up, 403, "approval_wrong_arguments");
        }
        // The call it was minted for goes through, once; the same path spelled otherwise is the same call.
        let (x, up) = exchange(&mut p, refund("/v1//refunds", "application/json", REFUND_BODY, Some(&approval)));
        assert_eq!(assert_delivered(&x, &up, REFUND_BODY.as_bytes())["reason"], "allowed_by_approval");
        let (x, up) = exchange(&mut p, refund("/v1/refunds", "application/json", REFUND_BODY, Some(&approval)));
        assert_not_delivered(&x, &up, 403, "approval_replayed");

        // A query of its own is bound too: the approval minted for `?note=a` passes only `?note=a`.
        let (x, _) = exchange(&mut p, refund("/v1/refunds?note=a", "application/json", REFUND_BODY, None));
        let with_query = warden_approve_body(&x.body, now(&p), REFUND_BODY.as_bytes(), &[]);
        let (x, up) =
            exchange(&mut p, refund("/v1/refunds?note=b", "application/json", REFUND_BODY, Some(&with_query)));
        assert_not_delivered(&x, &up, 403, "approval_wrong_arguments");
        let (x, up) =
            exchange(&mut p, refund("/v1/refunds?note=a", "application/json", REFUND_BODY, Some(&with_query)));
        assert_delivered(&x, &up, REFUND_BODY.as_bytes());
    }
}

#[test]
fn body_less_step_up_calls_of_one_tool_do_not_share_a_digest() {
    // Two body-less calls of one tool used to share `sha256("")`: the binding now tells them apart by path and
    // query, at the header phase, in both modes.
    let mut b = bundle();
    b["tools"].as_array_mut().unwrap().push(json!({"id": "billing.payouts.cancel", "sensitivity": "payment",
        "http": [{"host": BILLING, "methods": ["DELETE"], "path": "/v1/payouts/{id}"}]}));
    for hold in [false, true] {
        let mut p = start_holding(&config(Some(&sign(&b))), hold);
        let del = |path: &str, approval: Option<&str>| {
            let mut r = authed("DELETE", BILLING, path, &support_token());
            if let Some(a) = approval {
                r = r.header("x-warden-approval", a);
            }
            r
        };
        let (x, up) = exchange(&mut p, del("/v1/payouts/p-1", None));
        assert_not_delivered(&x, &up, 403, "step_up_required");
        let approval = warden_approve(&x.body, now(&p), &[]);
        for other in ["/v1/payouts/p-2", "/v1/payouts/p-1?all=true"] {
            let (x, up) = exchange(&mut p, del(other, Some(&approval)));
            assert_not_delivered(&x, &up, 403, "approval_wrong_arguments");
        }
        let (x, up) = exchange(&mut p, del("/v1/payouts/p-1", Some(&approval)));
        assert_delivered(&x, &up, b"");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Item 4: arguments without an exact canonical form

#[test]
fn arguments_without_an_exact_canonical_form_are_refused() {
    for hold in [false, true] {
        let mut p = mcp_plugin(hold);
        for amount in ["18446744073709551616", "18446744073709551617", "99.99999999999999999", "100.0000000000000001"] {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{{"name":"refund","arguments":{{"amount":{amount}}}}}}}"#
            );
            let (x, up) = exchange(&mut p, mcp_post(&body, None));
            assert_not_delivered(&x, &up, 400, "mcp_inexact_number");
        }
        // Numbers that have one exact form still go through (under the step-up threshold: allowed).
        for amount in ["99.5", "1e1", "0.1", "9007199254740993"] {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{{"name":"lookup","arguments":{{"n":{amount}}}}}}}"#
            );
            let (x, up) = exchange(&mut p, mcp_post(&body, None));
            assert_delivered(&x, &up, body.as_bytes());
        }
    }
}
