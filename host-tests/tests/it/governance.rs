//! Governance at runtime through the real `warden.wasm`: step-up approvals minted by the real `warden approve` and
//! bound to one call, single use across worker VMs, time-boxed exceptions ending on the host clock, shadow rules and
//! shadow mode, and the decision record an auditor reads.

use std::process::Command;

use crate::support::filter::*;
use jsonwebtoken::{Algorithm, Header};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use warden_host::{Exchange, HttpRequest, Plugin, RecordingUpstream};

const REFUND_BODY: &str = r#"{"amount": 4200, "currency": "EUR", "order": "o-981"}"#;

/// The digest a refund's approval binds: the request as it goes upstream (`digest_of: "request"`, issue 19 item 2).
fn refund_digest(body: &str) -> String {
    warden_core::approval::HttpBinding {
        method: "POST".into(),
        host: BILLING.into(),
        path: "/v1/refunds".into(),
        content_type: "application/json".into(),
        body_sha256: Some(hex_sha256(body.as_bytes())),
    }
    .digest()
    .expect("a binding with its body digest")
}

/// The head digest of the refund (what an approval decided at the head binds).
fn refund_head() -> String {
    warden_core::approval::HttpBinding {
        method: "POST".into(),
        host: BILLING.into(),
        path: "/v1/refunds".into(),
        content_type: "application/json".into(),
        body_sha256: None,
    }
    .head_digest()
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A refund call by `agent_token` with this body, and optionally an approval.
fn refund(agent_token: &str, body: &str, approval: Option<&str>) -> HttpRequest {
    let mut r = authed("POST", BILLING, "/v1/refunds", agent_token)
        .header("content-type", "application/json")
        .body(body.as_bytes().to_vec());
    if let Some(a) = approval {
        r = r.header("x-warden-approval", a);
    }
    r
}

fn send_on(p: &mut Plugin, worker: usize, req: HttpRequest) -> (Exchange, RecordingUpstream) {
    let mut up = upstream();
    let x = p.send(worker, req, &mut up);
    (x, up)
}

/// Runs `warden approve` on a step-up reply body, with the test approver's private key; returns the token.
pub(crate) fn warden_approve(reply: &[u8], issued_at: i64, extra: &[&str]) -> String {
    approve_with(reply, issued_at, None, extra)
}

/// [`warden_approve`] for a plain HTTP call with a body (`--body`): the reply of a call answered at its head (the
/// headers cannot be held) has no digest of the body, which `warden approve` takes from the body it is given.
pub(crate) fn warden_approve_body(reply: &[u8], issued_at: i64, body: &[u8], extra: &[&str]) -> String {
    approve_with(reply, issued_at, Some(body), extra)
}

fn approve_with(reply: &[u8], issued_at: i64, body: Option<&[u8]>, extra: &[&str]) -> String {
    let dir = crate::support::TempDir::new("approve");
    let key = dir.join("approver.jwk.json");
    std::fs::write(&key, world().approver.private.to_string()).expect("write key");
    let from = dir.join("reply.json");
    std::fs::write(&from, reply).expect("write reply");
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    if let Some(body) = body {
        let path = dir.join("body");
        std::fs::write(&path, body).expect("write body");
        args.extend(["--body".into(), path.into_os_string()]);
    }
    let out = Command::new(crate::support::warden_bin())
        .arg("approve")
        .arg("--key")
        .arg(&key)
        .args(["--iss", APPROVER_ISS, "--approved-by", "alice@acme.example", "--issued-at"])
        .arg(issued_at.to_string())
        .arg("--from")
        .arg(&from)
        .args(args)
        .args(extra)
        .output()
        .expect("run warden approve");
    assert!(out.status.success(), "warden approve failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 token").trim().to_string()
}

/// An approval signed by the test approver's key with these claims and this `typ` (minted by `jsonwebtoken`, a
/// library independent of the filter's verifier).
fn approval_with(claims: &Value, typ: &str) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(world().approver.kid.clone());
    header.typ = Some(typ.to_string());
    jsonwebtoken::encode(&header, claims, &world().approver.encoding).expect("approval encodes")
}

/// Claims of a valid approval for the support bot's refund with [`REFUND_BODY`] at `iat`.
fn approval_claims(iat: i64, jti: &str) -> Value {
    json!({
        "iss": APPROVER_ISS,
        "sub": "bob@acme.example",
        "jti": jti,
        "iat": iat,
        "exp": iat + 120,
        "agent": SUPPORT_BOT,
        "task": TASK_ID,
        "tool": "billing.refunds.create",
        "arguments_digest": refund_digest(REFUND_BODY),
        "head_digest": refund_head(),
    })
}

fn metric(p: &Plugin, name: &str) -> i64 {
    p.metric(name).unwrap_or(0)
}

#[test]
fn a_payment_needs_an_approval_bound_to_that_exact_call_and_usable_once() {
    let mut p = start(&default_config(), 2);
    let tok = support_token();

    // 1. The call without approval: step-up, with everything an approval service needs.
    let (x, up) = send_on(&mut p, 0, refund(&tok, REFUND_BODY, None));
    let (body, r) = assert_refused(&x, 403, "step_up", "step_up_required", "refunds-need-approval");
    assert!(up.requests.is_empty());
    let a = &body["approval"];
    assert_eq!(a["agent"], SUPPORT_BOT);
    assert_eq!(a["task"], TASK_ID);
    assert_eq!(a["tool"], "billing.refunds.create");
    // Answered at the head (the headers cannot be held here): the head's digest, no digest of the body.
    assert_eq!(a.get("arguments_digest"), None, "{a}");
    assert_eq!(a["head_digest"], refund_head());
    assert_eq!(a["digest_of"], "request");
    assert_eq!(a["binding"].get("body_sha256"), None, "{a}");
    assert_eq!(a["binding"]["path"], "/v1/refunds");
    assert_eq!(a["decision_id"], body["decision_id"]);
    assert_eq!(a["rule"], "refunds-need-approval");
    assert_eq!(a["approvers"], json!([{"id": APPROVER_ID, "iss": APPROVER_ISS}]));
    assert_eq!(a["max_age_seconds"], APPROVAL_MAX_AGE);
    assert_eq!(a["header"], "x-warden-approval");
    assert_eq!(r["arguments_digest"], Value::Null);
    assert_eq!(r["approval"], Value::Null);

    // 2. `warden approve` mints an approval from that reply and the body; the retry goes through, once.
    let approval = warden_approve_body(&x.body, now(&p), REFUND_BODY.as_bytes(), &[]);
    let (x, up) = send_on(&mut p, 0, refund(&tok, REFUND_BODY, Some(&approval)));
    assert_eq!(x.status, Some(200), "body {}; logs {:#?}", x.body_str(), x.logs);
    assert_eq!(up.requests.len(), 1);
    let forwarded = &up.requests[0];
    assert_eq!(forwarded.body, REFUND_BODY.as_bytes(), "the approved body reaches the tool unchanged");
    assert_eq!(forwarded.header("x-warden-approval"), None, "the approval is not forwarded");
    let r = record(&x);
    assert_record_shape(&r);
    assert_eq!((r["decision"].as_str(), r["reason"].as_str()), (Some("allow"), Some("allowed_by_approval")));
    assert_eq!(r["rule"], "refunds-need-approval");
    assert_eq!(r["approval"]["approver"], APPROVER_ID);
    assert_eq!(r["approval"]["approved_by"], "alice@acme.example");
    assert!(r["approval"]["id"].as_str().is_some_and(|id| !id.is_empty()), "approval id: {r}");
    assert!(!r.to_string().contains(&approval), "the approval token itself is never recorded");

    // 3. The same approval again, on the other worker VM: refused as replayed.
    let (x, up) = send_on(&mut p, 1, refund(&tok, REFUND_BODY, Some(&approval)));
    let (body, _) = assert_refused(&x, 403, "step_up", "approval_replayed", "refunds-need-approval");
    assert!(up.requests.is_empty());
    assert_eq!(body["approval"]["arguments_digest"], refund_digest(REFUND_BODY));

    assert_eq!(metric(&p, "warden.approvals.accepted"), 1);
    assert_eq!(metric(&p, "warden.approvals.refused.approval_replayed"), 1);
    assert_eq!(metric(&p, "warden.reasons.allowed_by_approval"), 1);
    assert_eq!(metric(&p, "warden.reasons.step_up_required"), 1);
    assert_eq!(metric(&p, "warden.decisions.step_up"), 2);
}

#[test]
fn an_approval_for_another_call_is_refused_with_the_reason() {
    let mut p = start(&default_config(), 1);
    let tok = support_token();
    let (x, _) = send_on(&mut p, 0, refund(&tok, REFUND_BODY, None));
    let reply = x.body.clone();
    let mint = |p: &Plugin| warden_approve_body(&reply, now(p), REFUND_BODY.as_bytes(), &[]);

    // Other arguments.
    let other_body = REFUND_BODY.replace("4200", "42000");
    let a = mint(&p);
    let (x, _) = send_on(&mut p, 0, refund(&tok, &other_body, Some(&a)));
    let (body, _) = assert_refused(&x, 403, "step_up", "approval_wrong_arguments", "refunds-need-approval");
    assert_eq!(body["approval"]["arguments_digest"], refund_digest(&other_body), "what would bind instead");

    // Another agent under the same rule.
    let other_agent = token(&claims("spiffe://acme.example/agents/support/bot-3", now(&p)));
    let a = mint(&p);
    let (x, _) = send_on(&mut p, 0, refund(&other_agent, REFUND_BODY, Some(&a)));
    assert_refused(&x, 403, "step_up", "approval_wrong_agent", "refunds-need-approval");

    // Another task of the same agent.
    let mut c = claims(SUPPORT_BOT, now(&p));
    c["task_id"] = json!("T-2077");
    let a = mint(&p);
    let (x, _) = send_on(&mut p, 0, refund(&token(&c), REFUND_BODY, Some(&a)));
    assert_refused(&x, 403, "step_up", "approval_wrong_task", "refunds-need-approval");

    // Expired: a 60 s approval used 60 s + the approver's 30 s skew later.
    let short = warden_approve_body(&reply, now(&p), REFUND_BODY.as_bytes(), &["--ttl", "60"]);
    let t = now(&p) + 60 + 30;
    advance_to(&mut p, t);
    let fresh = token(&claims(SUPPORT_BOT, now(&p)));
    let (x, _) = send_on(&mut p, 0, refund(&fresh, REFUND_BODY, Some(&short)));
    assert_refused(&x, 403, "step_up", "approval_expired", "refunds-need-approval");

    // The approvals above were refused before they were used: the right call still goes through with one.
    let good = warden_approve_body(&reply, now(&p), REFUND_BODY.as_bytes(), &[]);
    let (x, _) = send_on(&mut p, 0, refund(&fresh, REFUND_BODY, Some(&good)));
    assert_eq!(x.status, Some(200), "{}", x.body_str());

    // Tokens `warden approve` would not mint: independent library, each wrong in one way.
    let t = now(&p);
    let mut too_long = approval_claims(t, "j-long");
    too_long["exp"] = json!(t + APPROVAL_MAX_AGE + 1);
    let mut no_jti = approval_claims(t, "j-x");
    no_jti.as_object_mut().unwrap().remove("jti");
    let mut stranger = approval_claims(t, "j-iss");
    stranger["iss"] = json!("https://approvals.evil.example");
    let mut future = approval_claims(t + 3600, "j-future");
    future["exp"] = json!(t + 3700);
    let cases = [
        (approval_with(&approval_claims(t, "j-ok-typ"), "JWT"), "approval_type"),
        (approval_with(&too_long, "warden-approval+jwt"), "approval_lifetime_too_long"),
        (approval_with(&no_jti, "warden-approval+jwt"), "approval_missing_claim"),
        (approval_with(&stranger, "warden-approval+jwt"), "approval_untrusted_issuer"),
        (approval_with(&future, "warden-approval+jwt"), "approval_not_yet_valid"),
        ("not-a-token".to_string(), "approval_malformed"),
    ];
    for (approval, reason) in cases {
        let (x, up) = send_on(&mut p, 0, refund(&fresh, REFUND_BODY, Some(&approval)));
        assert_refused(&x, 403, "step_up", reason, "refunds-need-approval");
        assert!(up.requests.is_empty(), "{reason}");
    }
    // A well-formed approval from the independent library works too (the format is the documented one).
    let ok = approval_with(&approval_claims(t, "j-ok"), "warden-approval+jwt");
    let (x, _) = send_on(&mut p, 0, refund(&fresh, REFUND_BODY, Some(&ok)));
    assert_eq!(x.status, Some(200), "{}", x.body_str());

    // Two approval headers: ambiguous.
    let req = refund(&fresh, REFUND_BODY, Some("a.b.c")).header("x-warden-approval", "d.e.f");
    let (x, _) = send_on(&mut p, 0, req);
    assert_refused(&x, 403, "step_up", "approval_ambiguous", "refunds-need-approval");
}

/// The test bundle with the filter and the host agreeing on `allow_on_headers_stop_iteration`.
fn start_holding_with(hold: bool, max_body_bytes: Option<u64>) -> Plugin {
    let mut c = default_config();
    if let Some(limit) = max_body_bytes {
        c["max_body_bytes"] = json!(limit);
    }
    start_holding(&c, hold)
}

#[test]
fn step_up_waits_for_the_body_in_both_header_modes() {
    for hold in [false, true] {
        let mut p = start_holding_with(hold, None);
        let tok = support_token();
        let (x, up) = send_on(&mut p, 0, refund(&tok, REFUND_BODY, None).chunks(vec![7, 11]));
        assert_refused(&x, 403, "step_up", "step_up_required", "refunds-need-approval");
        assert!(
            up.requests.iter().all(|r| r.body.is_empty() && !r.complete),
            "hold={hold}: no byte of the body reaches the tool before the approval"
        );
        let approval = warden_approve_body(&x.body, now(&p), REFUND_BODY.as_bytes(), &[]);
        let (x, up) = send_on(&mut p, 0, refund(&tok, REFUND_BODY, Some(&approval)).chunks(vec![5, 9]));
        assert_eq!(x.status, Some(200), "hold={hold}: {}", x.body_str());
        assert_eq!(up.requests.len(), 1);
        assert_eq!(up.requests[0].body, REFUND_BODY.as_bytes());

        // Over the body limit: 413, never an approval check on a partial body (a fresh gateway: the approval is
        // unused there). Without an approval and with the headers not held, the call is refused at its head first.
        let mut p = start_holding_with(hold, Some(16));
        let (x, _) = send_on(&mut p, 0, refund(&tok, REFUND_BODY, Some(&approval)));
        assert_eq!(x.status, Some(413), "hold={hold}: {}", x.body_str());
        assert_eq!(reply_json(&x)["reason"], "body_too_large");
        let (x, _) = send_on(&mut p, 0, refund(&tok, REFUND_BODY, None));
        let want = if hold { ("body_too_large", 413) } else { ("step_up_required", 403) };
        assert_eq!((reply_json(&x)["reason"].as_str(), x.status), (Some(want.0), Some(want.1)), "hold={hold}");
    }
}

#[test]
fn an_exception_allows_until_it_expires_then_denies_without_a_new_bundle() {
    let mut p = start(&default_config(), 1);
    let req = |p: &Plugin| authed("DELETE", CRM, "/admin/users/7", &token(&claims(EXCEPTION_BOT, now(p))));

    advance_to(&mut p, EXCEPTION_ENDS - 1);
    let r0 = req(&p);
    let (x, up) = send_on(&mut p, 0, r0);
    assert_eq!(x.status, Some(200), "{}", x.body_str());
    assert_eq!(up.requests.len(), 1);
    let r = record(&x); // logged at warn: checked by `record`
    assert_record_shape(&r);
    assert_eq!(r["reason"], "allowed_by_exception");
    assert_eq!(
        r["exception"],
        json!({"ticket": "SEC-1234", "approver": "ciso@acme.example",
               "expires_at": warden_core::time::format_rfc3339(EXCEPTION_ENDS)})
    );
    assert_eq!(metric(&p, "warden.exceptions.used"), 1);

    // One second later, same bundle: the exception no longer matches.
    advance_to(&mut p, EXCEPTION_ENDS);
    let r1 = req(&p);
    let (x, up) = send_on(&mut p, 0, r1);
    let (_, r) = assert_refused(&x, 403, "deny", "no_matching_rule", "default");
    assert!(up.requests.is_empty());
    assert_eq!(r["exception"], Value::Null);
    assert_eq!(r["bundles"]["warden"]["revision"], REVISION, "no new bundle was needed");
    assert_eq!(metric(&p, "warden.exceptions.used"), 1);
}

#[test]
fn a_shadow_rule_is_logged_and_counted_but_not_enforced() {
    let mut b = bundle();
    b["rules"].as_array_mut().unwrap().push(json!({
        "id": "no-crm-reads-candidate", "effect": "deny", "shadow": true,
        "agents": ["spiffe://acme.example/agents/support/*"], "tools": ["crm.contacts.read"],
        "owner": "identity-security@acme.example"
    }));
    let mut p = start(&config(Some(&sign(&b))), 1);
    let (x, up) = send_on(&mut p, 0, authed("GET", CRM, "/api/v2/contacts/42", &support_token()));
    assert_eq!(x.status, Some(200), "{}", x.body_str());
    assert_eq!(up.requests.len(), 1, "the request reaches the tool");
    let r = record(&x);
    assert_record_shape(&r);
    assert_eq!((r["decision"].as_str(), r["rule"].as_str()), (Some("allow"), Some("support-read-crm")));
    assert_eq!(
        r["shadow"],
        json!({"decision": "would_deny", "rule": "no-crm-reads-candidate", "reason": "denied_by_rule"})
    );
    assert_eq!(metric(&p, "warden.shadow.would_deny"), 1);
    assert_eq!(metric(&p, "warden.decisions.allow"), 1);

    // Where the shadow rule changes nothing, the record says nothing about it.
    let (x, _) = send_on(&mut p, 0, authed("PATCH", CRM, "/api/v2/contacts/42", &support_token()));
    let (_, r) = assert_refused(&x, 403, "deny", "denied_by_rule", "support-no-writes");
    assert_eq!(r["shadow"], Value::Null);
}

#[test]
fn shadow_mode_logs_would_deny_counts_it_and_lets_the_request_through() {
    let mut c = default_config();
    c["mode"] = json!("shadow");
    let mut p = start(&c, 1);
    let (x, up) = send_on(&mut p, 0, authed("PATCH", CRM, "/api/v2/contacts/42", &support_token()));
    assert_eq!(x.status, Some(200));
    assert_eq!(up.requests.len(), 1, "the request reaches the tool");
    let r = record(&x);
    assert_eq!((r["decision"].as_str(), r["mode"].as_str()), (Some("would_deny"), Some("shadow")));
    assert_eq!(r["reason"], "denied_by_rule");
    assert_eq!(metric(&p, "warden.decisions.would_deny"), 1);
    assert_eq!(metric(&p, "warden.decisions.allow"), 0, "a shadowed deny is never counted as an allow");
    // A body-less step-up in shadow mode: would_step_up, the call goes on.
    let (x, up) = send_on(&mut p, 0, authed("POST", BILLING, "/v1/refunds", &support_token()));
    assert_eq!(x.status, Some(200));
    assert_eq!(up.requests.len(), 1);
    assert_eq!(record(&x)["decision"], "would_step_up");
}

#[test]
fn the_decision_record_carries_what_an_auditor_needs() {
    let mut p = start(&default_config(), 1);
    let tok = support_token();
    let (x, _) = send_on(&mut p, 0, refund(&tok, REFUND_BODY, None));
    let approval = warden_approve_body(&x.body, now(&p), REFUND_BODY.as_bytes(), &[]);
    let (x, _) = send_on(&mut p, 0, refund(&tok, REFUND_BODY, Some(&approval)));
    // From the log line, as a log pipeline would read it.
    let line = x.logs.iter().find(|l| l.message.contains("\"warden.decision\"")).expect("a record in the log");
    let r: Value = serde_json::from_str(&line.message).expect("the record is one JSON object");
    for field in RECORD_FIELDS {
        assert!(r.get(field).is_some(), "field {field} missing from {r}");
    }
    assert!(is_uuid_v4(r["decision_id"].as_str().unwrap()));
    assert!(r["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(r["environment"], ENVIRONMENT);
    assert!(r["vm"].as_str().is_some_and(|v| v.starts_with("vm-") && v.len() == 11), "vm: {r}");
    assert_eq!(r["agent"], SUPPORT_BOT);
    assert_eq!(r["issuer"], ISSUER_ID);
    assert_eq!(r["task"], json!({"id": TASK_ID, "purpose": TASK_PURPOSE}));
    assert_eq!(r["tool"], "billing.refunds.create");
    assert_eq!(
        (r["method"].as_str(), r["path"].as_str(), r["host"].as_str()),
        (Some("POST"), Some("/v1/refunds"), Some(BILLING))
    );
    assert_eq!(r["decision"], "allow");
    assert_eq!(r["rule"], "refunds-need-approval");
    assert_eq!(r["reason"], "allowed_by_approval");
    assert_eq!(r["bundles"], json!({"warden": {"revision": REVISION}}));
    assert!(r["approval"]["id"].is_string());
    assert_eq!(r["arguments_digest"], refund_digest(REFUND_BODY));
    assert!(r.get("arguments").is_none(), "arguments only where the bundle opts in");
    assert!(!line.message.contains(&tok), "token contents are never logged");
    assert!(!line.message.contains("o-981"), "arguments are logged as their digest only");
}

#[test]
fn an_mcp_tool_call_approval_binds_to_the_canonical_arguments() {
    const MCP_HOST: &str = "mcp.acme.example";
    let mut b = bundle();
    b["mcp_servers"] = json!([{"name": "payments", "host": MCP_HOST, "path": "/mcp"}]);
    b["tools"].as_array_mut().unwrap().push(json!({
        "id": "mcp.refund", "sensitivity": "payment", "log_arguments": true,
        "mcp": [{"server": "payments", "tool": "refund"}]
    }));
    let mut p = start(&config(Some(&sign(&b))), 1);
    let tok = support_token();
    let call = |args: &str, approval: Option<&str>| {
        let body = format!(
            r#"{{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {{"name": "refund", "arguments": {args}}}}}"#
        );
        let mut r = authed("POST", MCP_HOST, "/mcp", &tok)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.into_bytes());
        if let Some(a) = approval {
            r = r.header("x-warden-approval", a);
        }
        r
    };
    // Key order and spacing do not change the digest: it is taken over the canonical JSON (keys sorted, no spaces).
    let canonical = r#"{"amount":250,"order":"o-1"}"#;
    let digest = hex_sha256(canonical.as_bytes());

    let (x, up) = send_on(&mut p, 0, call(r#"{ "order": "o-1", "amount": 250 }"#, None));
    assert_eq!(x.status, Some(403), "{}", x.body_str());
    assert!(up.requests.iter().all(|r| !r.complete));
    let rpc = reply_json(&x);
    assert_eq!(rpc["id"], 7, "the JSON-RPC error answers the request id");
    let data = &rpc["error"]["data"];
    assert_eq!(data["reason"], "step_up_required");
    assert_eq!(data["approval"]["arguments_digest"], digest);
    assert_eq!(data["approval"]["digest_of"], "arguments");
    assert_eq!(data["approval"]["tool"], "mcp.refund");

    // `warden approve` reads the JSON-RPC error as well.
    let approval = warden_approve(&x.body, now(&p), &[]);
    let (x, up) = send_on(&mut p, 0, call(r#"{"amount": 250, "order": "o-1"}"#, Some(&approval)));
    assert_eq!(x.status, Some(200), "{}", x.body_str());
    assert_eq!(up.requests.len(), 1);
    let r = record(&x);
    assert_eq!(r["reason"], "allowed_by_approval");
    assert_eq!(r["mcp"]["method"], "tools/call");
    assert_eq!(r["mcp"]["server"], "payments");
    assert_eq!(r["arguments_digest"], digest);
    assert_eq!(r["arguments"], json!({"amount": 250, "order": "o-1"}), "this tool opts in to arguments in clear");

    // An approval for these arguments does not cover others.
    let (x, _) = send_on(&mut p, 0, call(r#"{"amount": 250, "order": "o-1"}"#, None));
    let approval = warden_approve(&x.body, now(&p), &[]);
    let (x, up) = send_on(&mut p, 0, call(r#"{"amount": 2500, "order": "o-1"}"#, Some(&approval)));
    assert_eq!(x.status, Some(403), "{}", x.body_str());
    assert!(up.requests.iter().all(|r| !r.complete));
    assert_eq!(reply_json(&x)["error"]["data"]["reason"], "approval_wrong_arguments");
}
