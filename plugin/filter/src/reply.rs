//! The local reply for a request the filter does not let through: status, headers and JSON body, as a pure function.

use serde::Serialize;
use warden_core::decision::Reason;

use crate::approval::StepUpInfo;
use crate::evaluate::Verdict;

/// A local reply, ready for `send_http_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// Headers in the shape the SDK takes.
    pub fn header_pairs(&self) -> Vec<(&str, &str)> {
        self.headers.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

/// What a refusal says about itself: the body of a plain HTTP refusal, and the `data` of a JSON-RPC error.
#[derive(Serialize)]
pub(crate) struct Body<'a> {
    decision_id: &'a str,
    decision: &'static str,
    reason: &'static str,
    rule: &'a str,
    revision: Option<u64>,
    /// Step-up replies: what the approval must bind to, who may give it, and where it goes.
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<&'a StepUpInfo>,
}

impl<'a> Body<'a> {
    pub(crate) fn new(verdict: &'a Verdict, decision_id: &'a str, step_up: Option<&'a StepUpInfo>) -> Body<'a> {
        Body {
            decision_id,
            decision: verdict.outcome.as_str(),
            reason: verdict.reason,
            rule: verdict.rule_id(),
            revision: verdict.revision,
            approval: step_up,
        }
    }
}

/// Builds the reply for a verdict that is not let through (`verdict.status != 200`); a step-up reply carries
/// `approval` ([`StepUpInfo`]).
///
/// Headers: `content-type: application/json`, `cache-control: no-store`, `x-warden-decision-id`, and on 401 a
/// `www-authenticate` challenge (RFC 6750): `Bearer realm="warden"` when no token was presented, else
/// `Bearer error="invalid_token", error_description="<reason>"`.
pub fn build(verdict: &Verdict, decision_id: &str, step_up: Option<&StepUpInfo>) -> Reply {
    let body = serde_json::to_vec(&Body::new(verdict, decision_id, step_up)).unwrap_or_else(|_| b"{}".to_vec());
    let mut headers = vec![
        ("content-type", "application/json".to_string()),
        ("cache-control", "no-store".to_string()),
        ("x-warden-decision-id", decision_id.to_string()),
    ];
    if verdict.status == 401 {
        let challenge = match verdict.reason_kind {
            Reason::IdentityMissing => "Bearer realm=\"warden\"".to_string(),
            _ => format!("Bearer error=\"invalid_token\", error_description=\"{}\"", verdict.reason),
        };
        headers.push(("www-authenticate", challenge));
    }
    Reply { status: verdict.status, headers, body }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::sync::Arc;
    use warden_core::decision::Outcome;
    use warden_core::facts::TokenFailure;

    const ID: &str = "0f8e2c1a-5b7d-4c3e-9a1b-2c3d4e5f6a7b";

    fn verdict(outcome: Outcome, status: u16, reason: Reason, rule: Option<&str>, revision: Option<u64>) -> Verdict {
        Verdict { outcome, status, reason: reason.code(), reason_kind: reason, rule: rule.map(Arc::from), revision }
    }

    fn check(v: Verdict, want_status: u16, want_body: Value, want_challenge: Option<&str>) {
        let r = build(&v, ID, None);
        assert_eq!(r.status, want_status);
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body, want_body);
        let header = |name: &str| r.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str());
        assert_eq!(header("content-type"), Some("application/json"));
        assert_eq!(header("cache-control"), Some("no-store"));
        assert_eq!(header("x-warden-decision-id"), Some(ID));
        assert_eq!(header("www-authenticate"), want_challenge);
        assert_eq!(r.header_pairs().len(), r.headers.len());
    }

    #[test]
    fn replies_by_verdict() {
        check(
            verdict(Outcome::Deny, 401, Reason::IdentityMissing, None, Some(7)),
            401,
            json!({"decision_id": ID, "decision": "deny", "reason": "identity_missing", "rule": "default", "revision": 7}),
            Some("Bearer realm=\"warden\""),
        );
        check(
            verdict(Outcome::Deny, 401, Reason::IdentityInvalid(TokenFailure::Expired), None, Some(7)),
            401,
            json!({"decision_id": ID, "decision": "deny", "reason": "token_expired", "rule": "default", "revision": 7}),
            Some("Bearer error=\"invalid_token\", error_description=\"token_expired\""),
        );
        check(
            verdict(Outcome::Deny, 401, Reason::IdentityInvalid(TokenFailure::Ambiguous), None, Some(7)),
            401,
            json!({"decision_id": ID, "decision": "deny", "reason": "token_ambiguous", "rule": "default", "revision": 7}),
            Some("Bearer error=\"invalid_token\", error_description=\"token_ambiguous\""),
        );
        check(
            verdict(Outcome::Deny, 403, Reason::DeniedByRule, Some("no-prod-writes"), Some(12)),
            403,
            json!({"decision_id": ID, "decision": "deny", "reason": "denied_by_rule", "rule": "no-prod-writes", "revision": 12}),
            None,
        );
        check(
            verdict(Outcome::StepUp, 403, Reason::StepUpRequired, Some("refunds-need-approval"), Some(3)),
            403,
            json!({"decision_id": ID, "decision": "step_up", "reason": "step_up_required",
                   "rule": "refunds-need-approval", "revision": 3}),
            None,
        );
        check(
            verdict(Outcome::Deny, 503, Reason::NoActiveBundle, None, None),
            503,
            json!({"decision_id": ID, "decision": "deny", "reason": "no_active_bundle", "rule": "default", "revision": null}),
            None,
        );
        check(
            verdict(Outcome::Deny, 503, Reason::BundleExpired, None, Some(4)),
            503,
            json!({"decision_id": ID, "decision": "deny", "reason": "bundle_expired", "rule": "default", "revision": 4}),
            None,
        );
        let mut bad_path = verdict(Outcome::Deny, 400, Reason::BadRequest, None, Some(4));
        bad_path.reason = "path_encoded_slash";
        check(
            bad_path,
            400,
            json!({"decision_id": ID, "decision": "deny", "reason": "path_encoded_slash", "rule": "default", "revision": 4}),
            None,
        );
    }

    #[test]
    fn a_step_up_reply_says_what_the_approval_must_bind_to() {
        let info = StepUpInfo {
            agent: Some("spiffe://acme.example/agents/support/bot-1".into()),
            task: Some("T-1".into()),
            tool: Some("billing.refunds.create".into()),
            arguments_digest: "ab".repeat(32),
            digest_of: "body",
            decision_id: ID.into(),
            rule: "refunds-need-approval".into(),
            approvers: vec![crate::approval::ApproverRef {
                id: "payments-approvals".into(),
                iss: "https://approvals.acme.example".into(),
            }],
            max_age_seconds: 300,
            header: "x-warden-approval".into(),
        };
        let v = verdict(Outcome::StepUp, 403, Reason::StepUpRequired, Some("refunds-need-approval"), Some(3));
        let r = build(&v, ID, Some(&info));
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body["approval"],
            json!({"agent": "spiffe://acme.example/agents/support/bot-1", "task": "T-1",
                   "tool": "billing.refunds.create", "arguments_digest": "ab".repeat(32), "digest_of": "body",
                   "decision_id": ID, "rule": "refunds-need-approval",
                   "approvers": [{"id": "payments-approvals", "iss": "https://approvals.acme.example"}],
                   "max_age_seconds": 300, "header": "x-warden-approval"})
        );
        assert_eq!(r.status, 403);
        // Without the object (a deny), the body has no `approval`.
        let deny = verdict(Outcome::Deny, 403, Reason::DeniedByRule, Some("r"), Some(3));
        let body: Value = serde_json::from_slice(&build(&deny, ID, None).body).unwrap();
        assert!(body.get("approval").is_none());
    }
}
