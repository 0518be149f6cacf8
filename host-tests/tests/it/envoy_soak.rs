//! A soak in real Envoy 1.40 (issue 19): two workers, mixed traffic for a while — allowed and refused HTTP calls,
//! missing and forged tokens, MCP `tools/call` allowed and denied, filtered `tools/list`, step-ups retried with an
//! approval minted by the real `warden approve` — while the control endpoint publishes a new revision every couple
//! of seconds and now and then goes down or answers 500; the last revision revokes the agent.
//!
//! Asserted: every answer is one its request class may get (no 5xx once a bundle is active: the last good bundle
//! survives every control fault), exactly one decision record per request in the access log, no VM failure in
//! Envoy's log, the last revision active, its revocation enforced on every worker, Envoy's resident memory not
//! growing after warm-up (only meaningful on a long run). A benchmark, not a timed test: nothing asserts a
//! duration. `WARDEN_SOAK_SECONDS` sets how long traffic runs (default 12, the CI variant; `benches/README.md` has
//! the long run); the figures go to stderr.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_host::upstream::Reply;
use warden_host::HttpRequest;

use crate::governance::warden_approve_body;
use crate::support::envoy::{now, request_id, tool_reply, Gateway, ReplyFn};
use crate::support::filter::{
    authed, claims, config, mcp_bundle_at, request, sign, token, BILLING, CONTROL_CLUSTER, CRM, MCP_HOST, SUPPORT_BOT,
};
use crate::support::live::{ControlServer, Reply as Control};

const REFUND: &str = r#"{"amount": 4200, "currency": "EUR", "order": "o-981"}"#;
const FIRST_REVISION: u64 = 100;

/// The tool: a `tools/list` answer for `x-test-reply: list`, else the default tool.
fn upstream() -> ReplyFn {
    Arc::new(|path: &str, headers: &[(String, String)]| {
        if headers.iter().any(|(k, v)| k == "x-test-reply" && v == "list") {
            let list = json!({"jsonrpc": "2.0", "id": 3, "result": {"tools": [
                {"name": "lookup", "inputSchema": {"type": "object"}},
                {"name": "wipe", "inputSchema": {"type": "object"}}]}});
            return Reply::new(200).header("content-type", "application/json").body(list.to_string());
        }
        tool_reply(path)
    })
}

/// Revision `r` of the MCP example bundle; `revoke` adds the support bot to the revoked agents.
fn revision(r: u64, revoke: bool) -> String {
    let mut b = mcp_bundle_at(now());
    b["revision"] = json!(r);
    if revoke {
        b["revocations"]["agents"] = json!([SUPPORT_BOT]);
    }
    sign(&b)
}

fn mcp(body: Value, agent: &str) -> HttpRequest {
    authed("POST", MCP_HOST, "/mcp", agent).header("content-type", "application/json").body(body.to_string())
}

fn refund(agent: &str, approval: Option<&str>) -> HttpRequest {
    let r = authed("POST", BILLING, "/v1/refunds", agent).header("content-type", "application/json").body(REFUND);
    match approval {
        Some(a) => r.header("x-warden-approval", a),
        None => r,
    }
}

fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn mixed_traffic_through_revisions_and_control_faults() {
    let seconds: u64 = std::env::var("WARDEN_SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
    let control = ControlServer::start(Control::bundle(&revision(FIRST_REVISION, false)));
    let mut c = config(None);
    c["control"]["poll_seconds"] = json!(1);
    c["control"]["jitter_percent"] = json!(0);
    c["control"]["timeout_ms"] = json!(500);
    c["control"]["backoff_max_seconds"] = json!(2);
    c["log_decisions"] = json!(false);
    let g = Gateway::start_full(&c, false, upstream(), |o| o.concurrency(2).cluster(CONTROL_CLUSTER, control.addr));
    let active = |r: u64| g.envoy.warden_stat("warden.bundle.revision") == r as i64;
    let until = Instant::now() + Duration::from_secs(10);
    while !active(FIRST_REVISION) {
        assert!(Instant::now() < until, "the first revision never activated");
        std::thread::sleep(Duration::from_millis(100));
    }

    let pid = g.envoy.pid().expect("Envoy's pid");
    let started = Instant::now();
    let mut rss: Vec<(f64, u64)> = Vec::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut ids: Vec<String> = Vec::new();
    let mut rev = FIRST_REVISION;
    let mut last_change = Instant::now();
    let mut approval: Option<String> = None;
    let mut i = 0usize;
    let mut tick = 0u32;
    let mut fault_until: Option<Instant> = None;
    while started.elapsed() < Duration::from_secs(seconds) {
        // The control endpoint: every 2 s either a new revision, or a fault lasting longer than a poll period (down,
        // or 500s), after which the next revision is published.
        match fault_until {
            Some(t) if Instant::now() >= t => {
                fault_until = None;
                control.set_down(false);
                rev += 1;
                control.set(Control::bundle(&revision(rev, false)));
                last_change = Instant::now();
            }
            Some(_) => {}
            None if last_change.elapsed() > Duration::from_secs(2) => {
                tick += 1;
                match tick % 3 {
                    1 => {
                        control.set_down(true);
                        fault_until = Some(Instant::now() + Duration::from_millis(1500));
                    }
                    2 => {
                        control.set(Control::Status(500, "control endpoint failing".into()));
                        fault_until = Some(Instant::now() + Duration::from_millis(1500));
                    }
                    _ => {
                        rev += 1;
                        control.set(Control::bundle(&revision(rev, false)));
                        last_change = Instant::now();
                    }
                }
            }
            None => {}
        }
        let agent = token(&claims(SUPPORT_BOT, now()));
        let (class, req, allowed): (&str, HttpRequest, &[u16]) = match i % 8 {
            0 => ("allow", authed("GET", CRM, "/api/v2/contacts/42", &agent), &[200]),
            1 => ("deny", authed("PUT", CRM, "/api/v2/contacts/42", &agent).body("{}"), &[403]),
            2 => ("no_token", request("GET", CRM, "/api/v2/contacts/42"), &[401]),
            3 => {
                // The same token with its signature's last bytes changed.
                let forged = format!("{}AAAA", &agent[..agent.len() - 4]);
                ("forged", authed("GET", CRM, "/api/v2/contacts/42", &forged), &[401])
            }
            4 => {
                let call = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                                  "params": {"name": if i % 16 == 4 { "lookup" } else { "wipe" }, "arguments": {}}});
                ("mcp_call", mcp(call, &agent), &[200, 403])
            }
            5 => {
                let list = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"});
                ("tools_list", mcp(list, &agent).header("x-test-reply", "list"), &[200])
            }
            6 => ("step_up", refund(&agent, approval.take().as_deref()), &[200, 403]),
            _ => ("unknown_tool", authed("GET", CRM, "/nowhere", &agent), &[403, 404]),
        };
        let id = request_id();
        let r = g.envoy.send(&req.header("x-request-id", &id)).unwrap_or_else(|e| panic!("{class}: {e}"));
        assert!(allowed.contains(&r.status), "{class} answered {}: {}", r.status, r.body_str());
        if class == "tools_list" {
            assert!(!r.body_str().contains("wipe"), "tools/list unfiltered: {}", r.body_str());
        }
        if class == "step_up" && r.status == 403 && r.json()["reason"] == "step_up_required" && i % 32 == 6 {
            approval = Some(warden_approve_body(&r.body, now(), REFUND.as_bytes(), &[]));
        }
        if r.status == 200 && matches!(class, "step_up" | "mcp_call") {
            *counts.entry(if class == "step_up" { "step_up_approved" } else { "mcp_call_allowed" }).or_default() += 1;
        }
        *counts.entry(class).or_default() += 1;
        *statuses.entry(r.status).or_default() += 1;
        ids.push(id);
        if i.is_multiple_of(50) {
            if let Some(kib) = resident_kib(pid) {
                rss.push((started.elapsed().as_secs_f64(), kib));
            }
        }
        i += 1;
    }

    // The last revision revokes the agent: enforced on every worker once it is active.
    rev += 1;
    control.set_down(false);
    control.set(Control::bundle(&revision(rev, true)));
    let until = Instant::now() + Duration::from_secs(10);
    while !active(rev) {
        assert!(Instant::now() < until, "revision {rev} never activated");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500)); // every worker's next tick
    let agent = token(&claims(SUPPORT_BOT, now()));
    for _ in 0..20 {
        let id = request_id();
        let r = g.envoy.send(&authed("GET", CRM, "/api/v2/contacts/42", &agent).header("x-request-id", &id)).unwrap();
        assert_eq!((r.status, r.json()["reason"].clone()), (401, json!("revoked_agent")), "a lost revocation");
        ids.push(id);
    }

    // Exactly one decision record per request.
    let log = g.envoy.wait_access_log(ids.len(), Duration::from_secs(10));
    let mut per_id: BTreeMap<&str, Vec<&Option<Value>>> = BTreeMap::new();
    for e in &log {
        per_id.entry(e.request_id.as_str()).or_default().push(&e.record);
    }
    for id in &ids {
        let records = per_id.get(id.as_str()).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(records.len(), 1, "request {id}: {} access-log lines", records.len());
        assert!(records[0].is_some(), "request {id}: no decision record");
    }
    let full = g.envoy.full_log();
    for bad in ["Function: proxy_on", "wasm trap", "panicked", "Plugin configured to fail closed failed to load"] {
        assert!(!full.contains(bad), "Envoy's log has {bad:?}");
    }
    assert!(statuses.keys().all(|s| *s < 500), "a 5xx with a bundle active: {statuses:?}");
    assert!(rev > FIRST_REVISION + 1, "no revision changed during the soak");
    assert!(counts.get("step_up_approved").is_some_and(|n| *n > 0), "no step-up went through with an approval");
    assert!(counts.get("mcp_call_allowed").is_some_and(|n| *n > 0), "no MCP call was allowed");
    let failures: i64 = g
        .envoy
        .warden_stats()
        .unwrap_or_default()
        .iter()
        .filter(|(k, _)| k.contains("warden.bundle.fetch.failure."))
        .map(|(_, v)| *v)
        .sum();
    assert!(failures > 0, "the control endpoint's faults were never seen by the filter");

    // Memory: after warm-up (the first third), the last third's peak stays near the middle third's.
    let third = |k: usize| -> Option<u64> {
        let n = rss.len();
        rss.iter().skip(n * k / 3).take(n / 3).map(|(_, kib)| *kib).max()
    };
    eprintln!(
        "soak: {seconds} s, {} requests {counts:?}, statuses {statuses:?}, revisions {FIRST_REVISION}..={rev}, \
         {failures} failed fetches, Envoy RSS KiB samples {rss:?}",
        ids.len()
    );
    if let (Some(middle), Some(last)) = (third(1), third(2)) {
        assert!(last <= middle + middle / 4 + 8192, "Envoy's resident memory grew: {middle} KiB -> {last} KiB");
    }
}
