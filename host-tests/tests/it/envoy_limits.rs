//! Limits through real Envoy at `--concurrency 2`: a rate limit reached through one worker VM is enforced on the
//! other (the counter is process-wide shared data); a budget over an MCP `tools/call` argument refuses the call that
//! would exceed it with a JSON-RPC error carrying the request's id, consumes nothing for it, and accepts a smaller
//! one; and the shipped local rate-limit filter (`envoy/ratelimit/local-ratelimit-filter.yaml`) keys Envoy's own
//! token buckets on the agent and tool Warden verified, which a client cannot spoof.
//!
//! Windows are long (31 days) so that no window ends during a test on the real clock; the window's end is tested on
//! the host's manual clock (`limits.rs`) and in the core.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use warden_host::HttpRequest;

use crate::support::envoy::{now, Gateway, Seen};
use crate::support::filter::{
    authed, bundle_at, claims, config, mcp_bundle_at, sign, token, CRM, MCP_HOST, SUPPORT_BOT,
};

const WINDOW: u64 = 2_678_400;

fn read(agent_token: &str, contact: &str) -> HttpRequest {
    authed("GET", CRM, &format!("/api/v2/contacts/{contact}"), agent_token)
}

fn vm(seen: &Seen) -> String {
    seen.record()["vm"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_limit_reached_on_one_worker_is_enforced_on_the_other() {
    let mut b = bundle_at(now());
    b["limits"] = json!([{"id": "crm-reads", "tools": ["crm.contacts.read"], "per": ["agent"],
                          "window_seconds": WINDOW, "max_calls": 3}]);
    let g = Gateway::start(&config(Some(&sign(&b))), false, 2);
    let bot = token(&claims(SUPPORT_BOT, now()));
    let (mut allowed, mut refused_on, mut served_by) = (0, BTreeSet::new(), BTreeSet::new());
    // Until both VMs have refused (Envoy hands connections to its workers as the kernel does, not in turn): never
    // more than 3 allowed in all, whichever VM served them.
    for i in 0..200 {
        let seen = g.send(read(&bot, &format!("c-{i}")));
        served_by.insert(vm(&seen));
        match seen.response.status {
            200 => allowed += 1,
            429 => {
                let body = seen.assert_refused(429, "deny", "rate_limited", "support-read-crm");
                assert_eq!(body["limit"]["id"], "crm-reads");
                assert_eq!(body["limit"]["remaining"], 0);
                let retry: i64 = seen.response.header("retry-after").expect("retry-after").parse().unwrap();
                assert!(retry >= 1 && retry <= WINDOW as i64, "{retry}");
                refused_on.insert(vm(&seen));
            }
            other => panic!("unexpected {other}: {seen:#?}"),
        }
        if refused_on.len() == 2 {
            break;
        }
    }
    eprintln!("allowed {allowed}; served by {served_by:?}; refused on {refused_on:?}");
    assert_eq!(allowed, 3, "the limit counts across worker VMs");
    assert_eq!(refused_on.len(), 2, "both worker VMs refused once the limit was reached");
    assert!(g.envoy.warden_stat("warden.limits.refused.crm-reads") >= 2);
}

fn mcp_call(id: i64, amount: Value) -> HttpRequest {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                      "params": {"name": "refund", "arguments": {"amount": amount}}});
    authed("POST", MCP_HOST, "/mcp", &token(&claims(SUPPORT_BOT, now())))
        .header("content-type", "application/json")
        .body(body.to_string())
}

#[test]
fn an_mcp_budget_refuses_the_call_over_it_with_a_json_rpc_error_and_accepts_a_smaller_one() {
    let mut b = mcp_bundle_at(now());
    b["limits"] = json!([{"id": "refunds-per-task", "tools": ["mcp.refund"], "per": ["task"],
                          "window_seconds": WINDOW, "budget": {"argument": "/amount", "max": 150}}]);
    for hold in [false, true] {
        let g = Gateway::start(&config(Some(&sign(&b))), hold, 2);
        g.send(mcp_call(1, json!(80))).assert_forwarded();
        // 80 more would make 160: refused, the JSON-RPC error answers request 2; no byte of it went upstream.
        let over = g.send(mcp_call(2, json!(80)));
        assert_eq!(over.response.status, 429, "{over:#?}");
        let body = over.json();
        assert_eq!(body["id"], 2, "{body}");
        assert_eq!(body["error"]["code"], warden_core::decision::jsonrpc::LIMITED, "{body}");
        let limit = &body["error"]["data"]["limit"];
        assert_eq!((limit["id"].clone(), limit["remaining"].clone()), (json!("refunds-per-task"), json!(70)));
        assert_eq!(limit["argument"], "/amount");
        assert!(over.upstream.as_ref().is_none_or(|u| u.body.is_empty()), "no byte of the refused call upstream");
        assert_eq!(over.record()["reason"], "budget_exhausted");
        // The refused call consumed nothing: 70 still fits exactly, then nothing does.
        g.send(mcp_call(3, json!(70))).assert_forwarded();
        let spent = g.send(mcp_call(4, json!(0.5)));
        assert_eq!((spent.response.status, spent.json()["id"].clone()), (429, json!(4)), "{spent:#?}");
        assert_eq!(spent.json()["error"]["data"]["limit"]["remaining"], 0);
        assert_eq!(g.envoy.warden_stat("warden.limits.refused.refunds-per-task"), 2);
    }
}

/// The shipped local rate-limit filter, as JSON.
fn local_ratelimit_filter() -> Value {
    let path = crate::support::repo().join("envoy/ratelimit/local-ratelimit-filter.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    serde_json::to_value(yaml).unwrap()
}

#[test]
fn envoys_local_rate_limit_keys_on_the_agent_and_tool_warden_verified() {
    let c = config(Some(&sign(&bundle_at(now()))));
    let g = Gateway::start_with(&c, false, |o| {
        let chain = vec![o.wasm_filter(), local_ratelimit_filter()];
        o.concurrency(2).http_filters(chain)
    });
    let bot = token(&claims(SUPPORT_BOT, now()));
    // The file's descriptor gives the support bot 2 contact reads per hour through this Envoy.
    for i in 0..2 {
        let seen = g.send(read(&bot, &format!("c-{i}")));
        let up = seen.assert_forwarded();
        assert_eq!(up.header("x-warden-agent"), Some(SUPPORT_BOT));
        assert_eq!(up.header("x-warden-tool"), Some("crm.contacts.read"));
    }
    // The third is refused by Envoy's filter, after Warden allowed it (the record says allow).
    let third = g.send(read(&bot, "c-3"));
    assert_eq!(third.response.status, 429, "{third:#?}");
    assert_eq!(third.response.header("x-ratelimited-by"), Some("envoy-local-ratelimit"));
    assert!(third.upstream.is_none());
    assert_eq!(third.record()["decision"], "allow");
    // Spoofing another agent's identity header does not leave the bucket: Warden replaced it with the verified one.
    let spoofed = g.send(read(&bot, "c-4").header("x-warden-agent", "spiffe://acme.example/agents/support/bot-9"));
    assert_eq!(spoofed.response.status, 429, "{spoofed:#?}");
    // Another agent is in the default bucket.
    let other = token(&claims("spiffe://acme.example/agents/support/bot-9", now()));
    g.send(read(&other, "c-5")).assert_forwarded();
    let stats = g.envoy.stats("warden_local_ratelimit").unwrap();
    assert_eq!(stats.get("warden_local_ratelimit.http_local_rate_limit.rate_limited"), Some(&2), "{stats:?}");
}
