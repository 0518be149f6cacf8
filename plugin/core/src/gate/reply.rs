//! The local reply for a request the gate does not let through: status, headers and body, as an HTTP JSON refusal
//! or, on MCP routes, a JSON-RPC error carrying the request's `id`.
//!
//! Headers: `content-type: application/json`, `cache-control: no-store`, `x-warden-decision-id`, and on 401 a
//! `www-authenticate` challenge (RFC 6750): `Bearer realm="warden"` when no token was presented, else
//! `Bearer error="invalid_token", error_description="<reason>"`. The body of an HTTP refusal and the `data` of a
//! JSON-RPC error are the same object: `decision_id`, `decision`, `reason`, `rule`, `revision`, and for a step-up
//! `approval` ([`StepUpInfo`]).

use serde::Serialize;
use serde_json::Value;

use crate::decision::{Decision, Outcome, Reason};
use crate::gate::outcome::StepUpInfo;

/// A local reply, ready for `send_http_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl LocalReply {
    /// Headers in the shape the SDK takes.
    pub fn header_pairs(&self) -> Vec<(&str, &str)> {
        self.headers.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

/// What a refusal says about itself: the body of a plain HTTP refusal, and the `data` of a JSON-RPC error.
#[derive(Serialize)]
struct Body<'a> {
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
    fn new(d: &'a Decision, revision: Option<u64>, decision_id: &'a str, step_up: Option<&'a StepUpInfo>) -> Body<'a> {
        Body {
            decision_id,
            decision: d.outcome.as_str(),
            reason: d.reason.code(),
            rule: d.rule_id(),
            revision,
            approval: step_up.filter(|_| d.outcome == Outcome::StepUp),
        }
    }
}

fn headers(decision_id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".to_string()),
        ("cache-control", "no-store".to_string()),
        ("x-warden-decision-id", decision_id.to_string()),
    ]
}

/// The HTTP JSON reply for a decision that is not let through; `revision` is `None` while no bundle is active. A
/// step-up reply carries `approval`.
pub fn http(d: &Decision, revision: Option<u64>, decision_id: &str, step_up: Option<&StepUpInfo>) -> LocalReply {
    let body = serde_json::to_vec(&Body::new(d, revision, decision_id, step_up)).unwrap_or_else(|_| b"{}".to_vec());
    let mut headers = headers(decision_id);
    let status = d.http_status();
    if status == 401 {
        let challenge = match d.reason {
            Reason::IdentityMissing => "Bearer realm=\"warden\"".to_string(),
            _ => format!("Bearer error=\"invalid_token\", error_description=\"{}\"", d.reason.code()),
        };
        headers.push(("www-authenticate", challenge));
    }
    LocalReply { status, headers, body }
}

/// Which requests of an MCP body a JSON-RPC error answers.
#[derive(Debug, Clone, PartialEq)]
pub enum RpcRequests {
    /// The body was not read or could not be parsed: one error with `id` null.
    Unread,
    /// The ids of the body's requests (notifications have none), and whether the body was a batch.
    Ids { ids: Vec<Value>, batch: bool },
}

#[derive(Serialize)]
struct RpcError<'a> {
    jsonrpc: &'static str,
    id: Value,
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    code: i64,
    message: &'a str,
    data: &'a Body<'a>,
}

/// The JSON-RPC error reply for a refused MCP request: one error object with the request's `id` (`null` when the
/// body could not be read), or for a batch an array with one error per request of the batch (the batch is refused
/// whole). When every message is a notification there is nothing to answer in JSON-RPC: the HTTP reply is sent.
pub fn jsonrpc(
    d: &Decision,
    revision: Option<u64>,
    decision_id: &str,
    requests: &RpcRequests,
    step_up: Option<&StepUpInfo>,
) -> LocalReply {
    let message = match d.outcome {
        Outcome::StepUp => format!("approval required by warden ({})", d.reason.code()),
        _ => format!("refused by warden ({})", d.reason.code()),
    };
    let data = Body::new(d, revision, decision_id, step_up);
    let code = d.jsonrpc_code();
    let error =
        |id: Value| RpcError { jsonrpc: "2.0", id, error: ErrorObject { code, message: &message, data: &data } };
    let payload = match requests {
        RpcRequests::Unread => serde_json::to_vec(&error(Value::Null)),
        RpcRequests::Ids { ids, .. } if ids.is_empty() => return http(d, revision, decision_id, step_up),
        RpcRequests::Ids { ids, batch: true } => {
            serde_json::to_vec(&ids.iter().cloned().map(error).collect::<Vec<_>>())
        }
        RpcRequests::Ids { ids, batch: false } => {
            serde_json::to_vec(&error(ids.first().cloned().unwrap_or(Value::Null)))
        }
    };
    LocalReply {
        status: d.http_status(),
        headers: headers(decision_id),
        body: payload.unwrap_or_else(|_| b"{}".to_vec()),
    }
}

/// The reply of a filter that has no configuration (the host started a stream before a successful configure):
/// 503 `no_active_bundle`, fail closed.
pub fn unconfigured() -> LocalReply {
    LocalReply {
        status: 503,
        headers: vec![("content-type", "application/json".to_string()), ("cache-control", "no-store".to_string())],
        body: br#"{"decision":"deny","reason":"no_active_bundle","rule":"default","revision":null}"#.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::TokenFailure;
    use crate::gate::outcome::ApproverRef;
    use crate::path::PathError;
    use serde_json::{json, Value};
    use std::sync::Arc;

    /// A decision and the revision its reply names (`None`: no active bundle).
    struct Verdict {
        decision: Decision,
        revision: Option<u64>,
    }

    fn build(v: &Verdict, id: &str, step_up: Option<&StepUpInfo>) -> LocalReply {
        http(&v.decision, v.revision, id, step_up)
    }

    const ID: &str = "0f8e2c1a-5b7d-4c3e-9a1b-2c3d4e5f6a7b";

    fn verdict(outcome: Outcome, status: u16, reason: Reason, rule: Option<&str>, revision: Option<u64>) -> Verdict {
        let decision = Decision { outcome, reason, rule: rule.map(Arc::from), revision: revision.unwrap_or(0) };
        assert_eq!(decision.http_status(), status);
        Verdict { decision, revision }
    }

    fn check(v: Verdict, want_status: u16, want_body: Value, want_challenge: Option<&str>) {
        let r = build(&v, ID, None);
        assert_eq!(r.header("content-type"), Some("application/json"));
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
        let bad_path =
            verdict(Outcome::Deny, 400, Reason::BadPath(PathError::EncodedSlash { position: 1 }), None, Some(4));
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
            approvers: vec![ApproverRef {
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

    #[test]
    fn error_replies_carry_the_id() {
        let v = verdict(Outcome::Deny, 403, Reason::DeniedByRule, Some("no-refunds"), Some(3));
        let ids = |b: &crate::mcp::McpBody| RpcRequests::Ids {
            ids: b.messages.iter().filter_map(|m| m.id.clone()).collect(),
            batch: b.batch,
        };
        let error_reply = |v: &Verdict, id: &str, body: Option<&crate::mcp::McpBody>| -> LocalReply {
            let requests = body.map_or(RpcRequests::Unread, ids);
            jsonrpc(&v.decision, v.revision, id, &requests, None)
        };
        let body = crate::mcp::parse_body(
            br#"{"jsonrpc":"2.0","id":"r-7","method":"tools/call","params":{"name":"x"}}"#,
            false,
        )
        .unwrap();
        let r = error_reply(&v, "id-1", Some(&body));
        assert_eq!(r.status, 403);
        let got: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            got,
            json!({"jsonrpc": "2.0", "id": "r-7", "error": {"code": -32001, "message": "refused by warden (denied_by_rule)",
                "data": {"decision_id": "id-1", "decision": "deny", "reason": "denied_by_rule", "rule": "no-refunds",
                         "revision": 3}}})
        );
        let note = crate::mcp::parse_body(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#, false).unwrap();
        // Only notifications: nothing to answer in JSON-RPC, the HTTP reply goes.
        assert_eq!(error_reply(&v, "id-1", Some(&note)), build(&v, "id-1", None));
        let batch = crate::mcp::parse_body(
            br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"},
                {"jsonrpc":"2.0","id":2,"method":"ping"}]"#,
            true,
        )
        .unwrap();
        let got: Value = serde_json::from_slice(&error_reply(&v, "id-1", Some(&batch)).body).unwrap();
        assert_eq!(
            got.as_array().map(|a| a.iter().map(|e| e["id"].clone()).collect::<Vec<_>>()),
            Some(vec![json!(1), json!(2)])
        );
        let not_json = Reason::Request(crate::decision::RequestRefusal::McpBody(crate::mcp::McpErrorKind::NotJson));
        let unread = verdict(Outcome::Deny, 400, not_json, None, Some(3));
        let got: Value = serde_json::from_slice(&error_reply(&unread, "id-2", None).body).unwrap();
        assert_eq!((got["id"].clone(), got["error"]["code"].clone()), (Value::Null, json!(-32700)));
    }
}
