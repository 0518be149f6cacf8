//! The demo's decisions through real Envoy 1.40 (one Envoy for the module, two workers), each also run through
//! the in-process host and compared (the differential, `support::envoy::differential`): allow, deny by rule,
//! step-up, unknown tool, no token, bad signature, expired, revoked agent / task / token id, an exception; identity
//! headers injected and client-supplied copies removed; the normalized path is what goes upstream.

use std::sync::OnceLock;

use serde_json::json;
use warden_host::HttpRequest;

use crate::support::envoy::{differential, now, Gateway};
use crate::support::filter::{
    authed, bundle_at, claims, config, forged_token, request, sign, token, BILLING, CRM, EXCEPTION_BOT, REVOKED_BOT,
    REVOKED_JTI, REVOKED_TASK, SUPPORT_BOT, TASK_ID,
};

fn gateway() -> &'static Gateway {
    static G: OnceLock<Gateway> = OnceLock::new();
    G.get_or_init(|| Gateway::start(&config(Some(&sign(&bundle_at(now())))), false, 2))
}

fn bot_token() -> String {
    token(&claims(SUPPORT_BOT, now()))
}

fn get(host: &str, path: &str, token: &str) -> HttpRequest {
    authed("GET", host, path, token)
}

#[test]
fn allow_reaches_the_upstream_with_identity_headers_and_without_forged_ones() {
    let seen = differential(
        gateway(),
        get(CRM, "/api/v2/contacts/42", &bot_token())
            .header("x-warden-agent", "spiffe://acme.example/agents/admin/root")
            .header("x-warden-task", "forged")
            .header("x-warden-decision-id", "00000000-0000-4000-8000-000000000000"),
    );
    let up = seen.assert_forwarded();
    assert_eq!(up.path, "/api/v2/contacts/42");
    assert_eq!(up.all("x-warden-agent"), vec![SUPPORT_BOT]);
    assert_eq!(up.all("x-warden-task"), vec![TASK_ID]);
    let r = seen.record();
    assert_eq!(up.all("x-warden-decision-id"), vec![r["decision_id"].as_str().unwrap()]);
    assert_eq!((r["decision"].as_str(), r["rule"].as_str()), (Some("allow"), Some("support-read-crm")));
}

#[test]
fn the_normalized_path_is_what_goes_upstream() {
    let seen = differential(gateway(), get(CRM, "/api/v2/x/../contacts/%34%32?f=1", &bot_token()));
    let up = seen.assert_forwarded();
    assert_eq!(up.path, "/api/v2/contacts/42?f=1");
    assert_eq!(seen.record()["path"], "/api/v2/contacts/42");
}

#[test]
fn deny_by_rule() {
    let seen = differential(gateway(), authed("PUT", CRM, "/api/v2/contacts/42", &bot_token()).body("{}"));
    let body = seen.assert_refused(403, "deny", "denied_by_rule", "support-no-writes");
    assert_eq!(body["rule"], "support-no-writes");
}

#[test]
fn step_up_without_a_body() {
    let seen = differential(gateway(), authed("POST", BILLING, "/v1/refunds", &bot_token()));
    let body = seen.assert_refused(403, "step_up", "step_up_required", "refunds-need-approval");
    assert_eq!(body["approval"]["agent"], SUPPORT_BOT, "{body}");
}

#[test]
fn step_up_with_a_body_binds_its_digest() {
    let refund = r#"{"amount": 4200, "currency": "EUR"}"#;
    let seen = differential(
        gateway(),
        authed("POST", BILLING, "/v1/refunds", &bot_token()).header("content-type", "application/json").body(refund),
    );
    assert_eq!(seen.response.status, 403, "{seen:#?}");
    let body = seen.json();
    assert_eq!(body["reason"], "step_up_required", "{body}");
    assert_eq!(body["approval"]["digest_of"], "request", "{body}");
    // Without allow_on_headers_stop_iteration the headers may have gone upstream while the body was held; no body
    // byte did.
    if let Some(up) = &seen.upstream {
        assert!(up.body.is_empty() && !up.complete, "{up:#?}");
    }
}

#[test]
fn unknown_tool() {
    differential(gateway(), get(CRM, "/nothing/here", &bot_token())).assert_refused(
        403,
        "deny",
        "unknown_tool",
        "default",
    );
}

#[test]
fn no_token() {
    let seen = differential(gateway(), request("GET", CRM, "/api/v2/contacts/42"));
    seen.assert_refused(401, "deny", "identity_missing", "default");
    assert!(seen.response.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{seen:#?}");
}

#[test]
fn bad_signature() {
    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": crate::support::filter::ISSUER_KID});
    let forged = forged_token(&header, &claims(SUPPORT_BOT, now()), &[7u8; 64]);
    let seen = differential(gateway(), get(CRM, "/api/v2/contacts/42", &forged));
    assert_eq!(seen.response.status, 401, "{seen:#?}");
    assert_eq!(seen.json()["reason"], "token_bad_signature", "{seen:#?}");
}

#[test]
fn expired_token() {
    let mut c = claims(SUPPORT_BOT, now() - 1000);
    c["exp"] = json!(now() - 600);
    differential(gateway(), get(CRM, "/api/v2/contacts/42", &token(&c))).assert_refused(
        401,
        "deny",
        "token_expired",
        "default",
    );
}

#[test]
fn revoked_agent_task_and_token_id() {
    let agent = token(&claims(REVOKED_BOT, now()));
    differential(gateway(), get(CRM, "/api/v2/contacts/42", &agent)).assert_refused(
        401,
        "deny",
        "revoked_agent",
        "default",
    );
    let mut task = claims(SUPPORT_BOT, now());
    task["task_id"] = json!(REVOKED_TASK);
    differential(gateway(), get(CRM, "/api/v2/contacts/42", &token(&task))).assert_refused(
        403,
        "deny",
        "revoked_task",
        "default",
    );
    let mut jti = claims(SUPPORT_BOT, now());
    jti["jti"] = json!(REVOKED_JTI);
    differential(gateway(), get(CRM, "/api/v2/contacts/42", &token(&jti))).assert_refused(
        401,
        "deny",
        "revoked_token",
        "default",
    );
}

#[test]
fn an_exception_allows_until_it_ends() {
    let t = token(&claims(EXCEPTION_BOT, now()));
    let seen = differential(gateway(), authed("DELETE", CRM, "/admin/users/7", &t));
    seen.assert_forwarded();
    assert_eq!(seen.record()["exception"]["ticket"], "SEC-1234", "{}", seen.record());
}

#[test]
fn no_matching_rule() {
    let t = token(&claims("spiffe://acme.example/agents/finance/other", now()));
    differential(gateway(), get(CRM, "/api/v2/contacts/42", &t)).assert_refused(
        403,
        "deny",
        "no_matching_rule",
        "default",
    );
}

#[test]
fn the_stats_count_the_decisions() {
    let g = gateway();
    let before = g.envoy.warden_stats().unwrap();
    differential(g, get(CRM, "/api/v2/contacts/42", &bot_token())).assert_forwarded();
    differential(g, request("GET", CRM, "/api/v2/contacts/42")).assert_refused(
        401,
        "deny",
        "identity_missing",
        "default",
    );
    let after = g.envoy.warden_stats().unwrap();
    let grew = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    // Other tests of this module run at the same time: at least these two.
    assert!(grew("warden.decisions.allow") >= 1, "{after:?}");
    assert!(grew("warden.decisions.deny") >= 1, "{after:?}");
    assert_eq!(after.get("warden.bundle.revision"), Some(&41), "{after:?}");
}

/// The differential's allowed differences are the table in host-tests/README.md, reason for reason.
#[test]
fn the_known_differences_are_documented() {
    let readme = std::fs::read_to_string(crate::support::repo().join("host-tests/README.md")).expect("README");
    for (what, why) in crate::support::envoy::KNOWN_DIFFERENCES {
        let row = format!("| {what} | {why} |");
        assert!(readme.contains(&row), "host-tests/README.md lacks the known-differences row\n{row}");
    }
}
