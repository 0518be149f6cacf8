//! Issue 19, item 3, in real Envoy 1.40 in both `allow_on_headers_stop_iteration` modes: a step-up call must not
//! reach the upstream at all before its approval is verified. The client sends the request head, waits, then the
//! body; the recording upstream notes when bytes arrive.
//! - `true`: the headers are held until the body is decided: an unapproved call reaches nothing, an approved one
//!   reaches the upstream only after its last body byte was sent (the approval binds to the body);
//! - `false` (Istio): the headers cannot be held while the body is read, so the head is decided on the approval's
//!   `head_digest` first: no approval, a forged one, one without a head claim or one for another query reach
//!   nothing; the approved head goes on before the body (what was approved), and a body other than the approved one
//!   is refused with no body byte upstream. A body-less step-up call is decided at the header phase in both modes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_host::client::Response;
use warden_host::upstream::Received;

use crate::governance::{warden_approve, warden_approve_body};
use crate::support::envoy::{now, request_id, Gateway, Seen};
use crate::support::filter::{bundle_at, claims, config, sign, token, BILLING, SUPPORT_BOT};

const BODY: &str = r#"{"amount": 4200, "currency": "EUR", "order": "o-981"}"#;
/// How long the client waits between the head and the body.
const GAP: Duration = Duration::from_millis(300);

/// The support bundle plus a body-less payment tool (`DELETE /v1/payouts/{id}`).
fn bundle() -> Value {
    let mut b = bundle_at(now());
    b["tools"].as_array_mut().unwrap().push(json!({"id": "billing.payouts.cancel", "sensitivity": "payment",
        "http": [{"host": BILLING, "methods": ["DELETE"], "path": "/v1/payouts/{id}"}]}));
    b
}

struct Split {
    id: String,
    seen: Seen,
    /// When the last byte of the request was written.
    body_sent: Instant,
}

/// Sends the head, waits [`GAP`], sends the body (if any), reads the reply (`connection: close`).
fn send_split(g: &Gateway, method: &str, path: &str, body: &str, approval: Option<&str>) -> Split {
    let id = request_id();
    let agent = token(&claims(SUPPORT_BOT, now()));
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {BILLING}\r\nauthorization: Bearer {agent}\r\nx-request-id: {id}\r\n\
         connection: close\r\n"
    );
    if !body.is_empty() {
        head.push_str(&format!("content-type: application/json\r\ncontent-length: {}\r\n", body.len()));
    }
    if let Some(a) = approval {
        head.push_str(&format!("x-warden-approval: {a}\r\n"));
    }
    head.push_str("\r\n");
    let mut s = TcpStream::connect(g.envoy.listener()).expect("connect to Envoy");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(head.as_bytes()).expect("write head");
    s.flush().unwrap();
    std::thread::sleep(GAP);
    // Envoy may have answered already (refused at the header phase) and stopped reading: a failed write is fine.
    let _ = s.write_all(body.as_bytes());
    let _ = s.flush();
    let body_sent = Instant::now();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, reply_body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let response = Response { status, headers, body: reply_body.as_bytes().to_vec() };
    Split { seen: g.seen(&id, response), id, body_sent }
}

/// Nothing of the request reached the upstream, also a moment after the reply.
fn assert_nothing_upstream(g: &Gateway, s: &Split) {
    std::thread::sleep(Duration::from_millis(100));
    let got: Vec<Received> =
        g.tools.received().into_iter().filter(|r| r.header("x-request-id") == Some(s.id.as_str())).collect();
    assert!(
        s.seen.upstream.is_none() && got.is_empty(),
        "the upstream received the request head before the approval was verified: {got:#?}"
    );
}

/// What reached the upstream of this request: at most its head, never a body byte, never a complete request.
fn assert_no_body_upstream(g: &Gateway, s: &Split) {
    std::thread::sleep(Duration::from_millis(100));
    for r in g.tools.received().into_iter().filter(|r| r.header("x-request-id") == Some(s.id.as_str())) {
        assert!(r.body.is_empty() && !r.complete, "a body byte of an unapproved call reached the upstream: {r:#?}");
    }
}

#[test]
fn a_step_up_call_reaches_nothing_upstream_before_its_approval_is_verified() {
    for hold in [true, false] {
        let g = Gateway::start(&config(Some(&sign(&bundle()))), hold, 1);

        // A call with a body, no approval, and a query an upstream could act on.
        let s = send_split(&g, "POST", "/v1/refunds?to=evil", BODY, None);
        assert_eq!(s.seen.response.status, 403, "hold={hold}: {:#?}", s.seen);
        assert_eq!(s.seen.json()["reason"], "step_up_required", "hold={hold}: {:#?}", s.seen);
        assert_nothing_upstream(&g, &s);
        let reply = s.seen.response.body.clone();

        // A forged approval: refused before anything goes upstream.
        let forged = send_split(&g, "POST", "/v1/refunds?to=evil", BODY, Some("eyJhbGciOiJFZERTQSJ9.e30.c2ln"));
        assert_eq!(forged.seen.response.status, 403, "hold={hold}: {:#?}", forged.seen);
        assert_nothing_upstream(&g, &forged);

        // An approval for another query: refused before anything goes upstream.
        let other = send_split(&g, "POST", "/v1/refunds?to=a", BODY, None);
        let for_a = warden_approve_body(&other.seen.response.body, now(), BODY.as_bytes(), &[]);
        let s = send_split(&g, "POST", "/v1/refunds?to=evil", BODY, Some(&for_a));
        assert_eq!(s.seen.json()["reason"], "approval_wrong_arguments", "hold={hold}: {:#?}", s.seen);
        assert_nothing_upstream(&g, &s);

        // The approved head with another body: refused, and no body byte reaches the upstream (with the headers
        // held, nothing at all).
        let approval = warden_approve_body(&reply, now(), BODY.as_bytes(), &[]);
        let s = send_split(&g, "POST", "/v1/refunds?to=evil", &BODY.replace("4200", "999999"), Some(&approval));
        assert_eq!(s.seen.json()["reason"], "approval_wrong_arguments", "hold={hold}: {:#?}", s.seen);
        if hold {
            assert_nothing_upstream(&g, &s);
        } else {
            assert_no_body_upstream(&g, &s);
        }

        // With its approval: forwarded. With the headers held, the head reached the upstream only after the last
        // body byte left the client; without, the approved head went on at once.
        let ok = send_split(&g, "POST", "/v1/refunds?to=evil", BODY, Some(&approval));
        let up = ok.seen.assert_forwarded();
        assert_eq!(up.body, BODY.as_bytes());
        assert_eq!(up.path, "/v1/refunds?to=evil");
        if hold {
            assert!(up.headers_at >= ok.body_sent, "hold=true: the upstream had the head before the body was sent");
        }
        assert_eq!(ok.seen.record()["reason"], "allowed_by_approval", "hold={hold}");

        // An approval without a head claim (an approval service that binds only the whole call): enough where the
        // headers are held, refused at the head where they are not.
        let mut headless: Value = serde_json::from_slice(&reply).unwrap();
        headless["approval"].as_object_mut().unwrap().remove("head_digest");
        let a = warden_approve_body(headless.to_string().as_bytes(), now(), BODY.as_bytes(), &[]);
        let s = send_split(&g, "POST", "/v1/refunds?to=evil", BODY, Some(&a));
        if hold {
            s.seen.assert_forwarded();
            assert_eq!(s.seen.record()["reason"], "allowed_by_approval");
        } else {
            assert_eq!(s.seen.json()["reason"], "approval_head_unbound", "{:#?}", s.seen);
            assert!(s.seen.json()["message"].as_str().unwrap().contains("head_digest"), "{:#?}", s.seen);
            assert_nothing_upstream(&g, &s);
        }

        // A body-less step-up call: decided at the header phase in both modes, on its approval.
        let s = send_split(&g, "DELETE", "/v1/payouts/p-1", "", None);
        assert_eq!(s.seen.json()["reason"], "step_up_required", "hold={hold}: {:#?}", s.seen);
        assert_nothing_upstream(&g, &s);
        let approval = warden_approve(&s.seen.response.body, now(), &[]);
        let ok = send_split(&g, "DELETE", "/v1/payouts/p-1", "", Some(&approval));
        ok.seen.assert_forwarded();
        assert_eq!(ok.seen.record()["reason"], "allowed_by_approval", "hold={hold}");
    }
}
