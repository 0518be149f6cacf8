//! Limits through the real `warden.wasm` in the host, on a manual clock: a rate limit counted across two worker VMs
//! (shared data), the 429 with `Retry-After` that names the limit and its key, a refused call that consumes
//! nothing, other keys with their own counters, the counter starting over when the window ends, the stats, and the
//! verified identity and tool forwarded for the filters after Warden (client copies removed).

use serde_json::{json, Value};
use warden_host::{Exchange, Plugin};

use crate::support::filter::*;

/// The test bundle with a rate limit on CRM reads: 3 per agent per 60 s window.
fn limited_bundle() -> Value {
    let mut b = bundle();
    b["limits"] = json!([{
        "id": "crm-reads-per-agent", "tools": ["crm.contacts.read"], "per": ["agent"],
        "window_seconds": 60, "max_calls": 3, "owner": "crm-owners@acme.example"
    }]);
    b
}

fn read(token: &str, contact: &str) -> warden_host::HttpRequest {
    authed("GET", CRM, &format!("/api/v2/contacts/{contact}"), token)
}

fn body(x: &Exchange) -> Value {
    serde_json::from_slice(&x.body).unwrap_or_else(|e| panic!("{e}: {}", x.body_str()))
}

fn send_rr(p: &mut Plugin, req: warden_host::HttpRequest) -> Exchange {
    p.send_round_robin(req, &mut upstream())
}

#[test]
fn a_rate_limit_counts_across_workers_and_starts_over_with_the_window() {
    let mut config = config(Some(&sign(&limited_bundle())));
    config["forward_identity_headers"] = json!(true);
    let mut p = start(&config, 2);
    let bot = token(&claims(SUPPORT_BOT, T0));
    // Three reads, on alternating workers: all allowed, and the identity and tool go on for later filters, the
    // client's own copies of those headers removed.
    let mut workers = Vec::new();
    for i in 0..3 {
        let x = send_rr(&mut p, read(&bot, &format!("c-{i}")).header("x-warden-tool", "spoofed"));
        assert_eq!(x.status, Some(200), "{}", x.body_str());
        let up = x.forwarded.as_ref().expect("forwarded");
        assert_eq!(up.header("x-warden-tool"), Some("crm.contacts.read"));
        assert_eq!(up.header("x-warden-agent"), Some(SUPPORT_BOT));
        assert_eq!(up.header("x-warden-task"), Some(TASK_ID));
        assert_eq!(up.headers.iter().filter(|(k, _)| k == "x-warden-tool").count(), 1, "the client's copy is gone");
        workers.push(x.worker);
    }
    assert!(workers.contains(&0) && workers.contains(&1), "both VMs served: {workers:?}");

    // The fourth, on whichever worker: refused, 429 with Retry-After to the window's end, nothing upstream.
    let window_end = (T0 / 60 + 1) * 60;
    for _ in 0..2 {
        let x = send_rr(&mut p, read(&bot, "c-9"));
        assert_eq!(x.status, Some(429), "{}", x.body_str());
        assert!(x.forwarded.is_none(), "a refused call reaches no upstream");
        assert_eq!(x.header("retry-after"), Some((window_end - T0).to_string().as_str()));
        let b = body(&x);
        assert_eq!(b["reason"], "rate_limited");
        assert_eq!(b["rule"], "support-read-crm", "the rule that allowed it");
        assert_eq!(b["limit"]["id"], "crm-reads-per-agent");
        assert_eq!(b["limit"]["key"], json!({"agent": SUPPORT_BOT}));
        assert_eq!(b["limit"]["remaining"], 0);
        assert_eq!(b["limit"]["max"], 3);
        assert_eq!(b["limit"]["resets_at"], warden_core::time::format_rfc3339(window_end));
        assert_eq!(b["limit"]["owner"], "crm-owners@acme.example");
        let r = record(&x);
        assert_eq!(
            (r["reason"].clone(), r["limit"]["id"].clone()),
            (json!("rate_limited"), json!("crm-reads-per-agent"))
        );
    }
    assert_eq!(p.metric("warden.limits.refused.crm-reads-per-agent"), Some(2));
    assert_eq!(p.metric("warden.reasons.rate_limited"), Some(2));

    // Another agent has its own counter; an unlimited tool is not counted; a refused call (denied by a rule)
    // consumes nothing of anyone's limit.
    let other = token(&claims("spiffe://acme.example/agents/support/bot-9", T0));
    assert_eq!(send_rr(&mut p, read(&other, "c-1")).status, Some(200));
    let write = authed("PUT", CRM, "/api/v2/contacts/c-1", &other);
    assert_eq!(send_rr(&mut p, write).status, Some(403));
    assert_eq!(send_rr(&mut p, read(&other, "c-2")).status, Some(200));
    assert_eq!(send_rr(&mut p, read(&other, "c-3")).status, Some(200));
    assert_eq!(send_rr(&mut p, read(&other, "c-4")).status, Some(429));

    // The window ends: the counter starts over (on the manual clock, no waiting).
    advance_to(&mut p, window_end);
    assert_eq!(send_rr(&mut p, read(&bot, "c-10")).status, Some(200));
    // One second before the next window's end it still counts in that window.
    advance_to(&mut p, window_end + 59);
    assert_eq!(send_rr(&mut p, read(&bot, "c-11")).status, Some(200));
    assert_eq!(send_rr(&mut p, read(&bot, "c-12")).status, Some(200));
    let x = send_rr(&mut p, read(&bot, "c-13"));
    assert_eq!((x.status, x.header("retry-after")), (Some(429), Some("1")));
}

#[test]
fn shadow_mode_records_a_limit_as_would_deny_and_lets_the_call_through() {
    let mut config = config(Some(&sign(&limited_bundle())));
    config["mode"] = json!("shadow");
    let mut p = start(&config, 1);
    let bot = token(&claims(SUPPORT_BOT, T0));
    for i in 0..3 {
        assert_eq!(send(&mut p, read(&bot, &format!("c-{i}"))).status, Some(200));
    }
    let x = send(&mut p, read(&bot, "c-4"));
    assert_eq!(x.status, Some(200), "shadow mode lets it through");
    let r = record(&x);
    assert_eq!((r["decision"].clone(), r["reason"].clone()), (json!("would_deny"), json!("rate_limited")));
}
