//! Issue 19, tokens (items 9 and 10), through the real `warden.wasm` in the host:
//! - item 9: `Bearer` followed by one or more spaces (RFC 9110 section 11.4 `1*SP`, RFC 6750 section 2.1) is a
//!   token; a tab is not;
//! - item 10: an issuer can require `iat` (its maximum lifetime is then always checkable), pin SPIFFE trust domains,
//!   and require sender binding for agent patterns; a revoked token or agent and an invalid or expired Transaction
//!   Token are `invalid_token` (401, RFC 6750 section 3.1), not a policy 403; OAuth-profile agent ids with control
//!   characters or dot segments are refused before any rule can match them.

use jsonwebtoken::{Algorithm, Header};
use serde_json::{json, Value};
use warden_host::{Exchange, HttpRequest, Plugin, TlsInfo};

use crate::support::filter::*;

const READ: &str = "/api/v2/contacts/42";
const TXN_ISS: &str = "https://txn.acme.example";

fn read(value: &str) -> HttpRequest {
    request("GET", CRM, READ).header("authorization", value)
}

/// A 401 with this reason and the RFC 6750 `invalid_token` challenge naming it; nothing went upstream.
fn assert_invalid_token(x: &Exchange, reason: &str) {
    assert_eq!(x.status, Some(401), "{reason}: status; body {}; logs {:#?}", x.body_str(), x.logs);
    assert!(!x.upstream_called);
    let body = reply_json(x);
    assert_eq!(body["reason"], reason, "{body}");
    assert_eq!(record(x)["reason"], reason);
    let challenge = x.header("www-authenticate").unwrap_or("");
    // The challenge is machine-readable in `error=` and says what was wrong in words (issue 15); the code is in the body.
    assert!(
        challenge.starts_with("Bearer realm=\"warden\", error=\"invalid_token\", error_description=\""),
        "{reason}: challenge {challenge:?}"
    );
}

fn assert_allowed(x: &Exchange) {
    assert_eq!(x.status, Some(200), "status; body {}; logs {:#?}", x.body_str(), x.logs);
    assert!(x.upstream_called);
}

#[test]
fn bearer_with_more_than_one_space_is_a_token_and_a_tab_is_not() {
    let mut p = start(&default_config(), 1);
    let t = support_token();
    for value in [format!("Bearer  {t}"), format!("bearer    {t}")] {
        let x = send(&mut p, read(&value));
        assert_allowed(&x);
    }
    for value in [format!("Bearer\t{t}"), format!("Bearer \t{t}"), format!("Bearer{t}")] {
        let x = send(&mut p, read(&value));
        assert_invalid_token(&x, "token_malformed");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Issuer options

fn plugin(b: &Value) -> Plugin {
    start(&config(Some(&sign(b))), 1)
}

#[test]
fn an_issuer_can_require_iat() {
    let mut b = bundle();
    b["issuers"][0]["require_iat"] = json!(true);
    let mut p = plugin(&b);
    let mut c = claims(SUPPORT_BOT, T0);
    c.as_object_mut().unwrap().remove("iat");
    let x = send(&mut p, authed("GET", CRM, READ, &token(&c)));
    assert_invalid_token(&x, "token_missing_claim");
    let x = send(&mut p, authed("GET", CRM, READ, &support_token()));
    assert_allowed(&x);
    // Without the option a JWT-SVID may omit `iat` (its remaining lifetime is capped instead).
    let mut p = plugin(&bundle());
    let x = send(&mut p, authed("GET", CRM, READ, &token(&c)));
    assert_allowed(&x);
}

#[test]
fn a_spiffe_issuer_can_be_pinned_to_trust_domains() {
    let mut b = bundle();
    b["issuers"][0]["trust_domains"] = json!(["acme.example"]);
    // A rule that any trust domain's support bot would match.
    b["rules"][0]["agents"] = json!(["spiffe://*"]);
    let mut p = plugin(&b);
    let x = send(&mut p, authed("GET", CRM, READ, &token(&claims("spiffe://evil.example/agents/support/bot-1", T0))));
    assert_invalid_token(&x, "token_untrusted_trust_domain");
    let x = send(&mut p, authed("GET", CRM, READ, &support_token()));
    assert_allowed(&x);
}

#[test]
fn sender_binding_can_be_required_for_agent_patterns() {
    let mut b = bundle();
    b["issuers"][0]["require_sender_binding_for"] = json!(["spiffe://acme.example/agents/support/*"]);
    let mut p = plugin(&b);
    // Unbound (no mTLS peer): an identity failure.
    let x = send(&mut p, authed("GET", CRM, READ, &support_token()));
    assert_invalid_token(&x, "token_sender_not_mtls");
    // Bound to another workload.
    let x = send(
        &mut p,
        authed("GET", CRM, READ, &support_token())
            .tls(TlsInfo::mtls_with_uri_san("spiffe://acme.example/agents/other")),
    );
    assert_invalid_token(&x, "token_sender_mismatch");
    // Bound to this agent.
    let x = send(&mut p, authed("GET", CRM, READ, &support_token()).tls(TlsInfo::mtls_with_uri_san(SUPPORT_BOT)));
    assert_allowed(&x);
    // An agent outside the patterns needs no binding (it reaches the rules: no rule for it, a 403).
    let x = send(&mut p, authed("GET", CRM, READ, &token(&claims("spiffe://acme.example/agents/ci/bot", T0))));
    assert_eq!(x.status, Some(403), "{}", x.body_str());
}

// ---------------------------------------------------------------------------------------------------------------
// Revoked and invalid credentials are invalid tokens

/// The test bundle plus a Transaction Token issuer (the test issuer's key under another `iss`).
fn txn_bundle() -> Value {
    let mut b = bundle();
    let mut txn = b["issuers"][0].clone();
    txn["id"] = json!("acme-txn");
    txn["iss"] = json!(TXN_ISS);
    txn["profile"] = json!("txn_token");
    txn["claims"] = json!({});
    b["issuers"].as_array_mut().unwrap().push(txn);
    b
}

fn txn_token(agent: &str, iat: i64, exp: i64) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(world().issuer.kid.clone());
    header.typ = Some("txntoken+jwt".to_string());
    let c = json!({"iss": TXN_ISS, "aud": AUDIENCE, "sub": agent, "txn": "T-9", "purp": "customer-support",
                   "iat": iat, "exp": exp});
    jsonwebtoken::encode(&header, &c, &world().issuer.encoding).unwrap()
}

#[test]
fn revoked_and_invalid_credentials_are_invalid_tokens() {
    let mut p = plugin(&txn_bundle());
    // A revoked agent.
    let x = send(&mut p, authed("GET", CRM, READ, &token(&claims(REVOKED_BOT, T0))));
    assert_invalid_token(&x, "revoked_agent");
    // A revoked token id.
    let mut c = claims(SUPPORT_BOT, T0);
    c["jti"] = json!(REVOKED_JTI);
    let x = send(&mut p, authed("GET", CRM, READ, &token(&c)));
    assert_invalid_token(&x, "revoked_token");
    // An expired Transaction Token.
    let with_txn = |txn: &str| authed("GET", CRM, READ, &support_token()).header("txn-token", txn);
    let x = send(&mut p, with_txn(&txn_token(SUPPORT_BOT, T0 - 400, T0 - 100)));
    assert_invalid_token(&x, "txn_token_expired");
    // An invalid one (for another agent).
    let x = send(&mut p, with_txn(&txn_token("spiffe://acme.example/agents/other", T0, T0 + 60)));
    assert_invalid_token(&x, "txn_token_agent_mismatch");
    // A valid one.
    let x = send(&mut p, with_txn(&txn_token(SUPPORT_BOT, T0, T0 + 60)));
    assert_allowed(&x);
}

#[test]
fn oauth_agent_ids_with_control_characters_or_dot_segments_are_refused() {
    let mut b = bundle();
    b["issuers"][0]["profile"] = json!("oauth_access_token");
    let mut p = plugin(&b);
    let access_token = |agent: &str| {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(world().issuer.kid.clone());
        header.typ = Some("at+jwt".to_string());
        let mut c = claims(agent, T0);
        c["client_id"] = json!("support-bot");
        jsonwebtoken::encode(&header, &c, &world().issuer.encoding).unwrap()
    };
    for agent in [
        "spiffe://acme.example/agents/support/../../admin/root",
        "spiffe://acme.example/agents/support/./bot-1",
        "spiffe://acme.example/agents/support/bot\u{0}",
        "spiffe://acme.example/agents/support/bot\r\nx-admin: true",
        "spiffe://acme.example/agents/support/bot\u{7f}",
    ] {
        let x = send(&mut p, authed("GET", CRM, READ, &access_token(agent)));
        assert_invalid_token(&x, "token_invalid_agent_id");
    }
    let x = send(&mut p, authed("GET", CRM, READ, &access_token(SUPPORT_BOT)));
    assert_allowed(&x);
}
