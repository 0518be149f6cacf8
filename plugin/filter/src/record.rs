//! The decision record: one JSON object per request, written to the host log and to filter state.
//!
//! Field names follow OPA's decision logs where they mean the same thing (`decision_id`, `timestamp`, `path`,
//! `bundles.<name>.revision`). Token contents are never recorded.

use serde::Serialize;
use warden_core::decision::Outcome;
use warden_core::time::format_rfc3339;

use crate::config::Mode;
use crate::evaluate::{ApprovalRecord, Evaluation, ExceptionRecord, ShadowRecord, Verdict};

/// The `type` of every decision record.
pub const RECORD_TYPE: &str = "warden.decision";

/// What the record needs besides the evaluation.
#[derive(Debug, Clone, Copy)]
pub struct RecordContext<'a> {
    pub decision_id: &'a str,
    /// Host time when the request headers arrived, nanoseconds since the epoch.
    pub time_ns: u64,
    pub environment: &'a str,
    /// The worker VM that decided (random per VM, stable for its life).
    pub vm: &'a str,
    pub mode: Mode,
    /// Host time spent deciding (may be 0: Envoy's clock advances per event loop iteration).
    pub latency_ns: u64,
}

#[derive(Serialize)]
struct Record<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    decision_id: &'a str,
    timestamp: String,
    environment: &'a str,
    vm: &'a str,
    agent: Option<&'a str>,
    issuer: Option<&'a str>,
    /// RFC 8693: the party the agent acts for (the token's `sub`); only on delegated requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    delegator: Option<&'a str>,
    /// Prior actors (nested `act`), nearest first; recorded, never used to decide. Only when there are any.
    #[serde(skip_serializing_if = "Option::is_none")]
    delegation_chain: Option<&'a [String]>,
    task: Option<TaskRecord<'a>>,
    tool: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    host: &'a str,
    decision: &'static str,
    mode: &'static str,
    rule: &'a str,
    reason: &'static str,
    bundles: Bundles,
    latency_ns: u64,
    /// The approval that let a step-up call through (`id` is its `jti`), else null.
    approval: Option<&'a ApprovalRecord>,
    /// The exception that allowed the request (ticket, approver, expiry), else null.
    exception: Option<&'a ExceptionRecord>,
    /// What the bundle's shadow rules would have decided, when that differs from the decision; else null.
    shadow: Option<&'a ShadowRecord>,
    /// SHA-256 (hex) of the call's canonical arguments (MCP calls) or of the body (HTTP step-up), else null.
    arguments_digest: Option<&'a str>,
    /// The arguments in clear, only for tools whose bundle entry sets `log_arguments`.
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a serde_json::Value>,
    /// MCP requests only: server, method, tool / resource / prompt name.
    #[serde(skip_serializing_if = "Option::is_none")]
    mcp: Option<&'a crate::mcp::McpRecord>,
}

#[derive(Serialize)]
struct TaskRecord<'a> {
    id: &'a str,
    purpose: Option<&'a str>,
}

#[derive(Serialize)]
struct Bundles {
    #[serde(skip_serializing_if = "Option::is_none")]
    warden: Option<BundleRecord>,
}

#[derive(Serialize)]
struct BundleRecord {
    revision: u64,
}

/// The `decision` field: `allow`, `deny`, `step_up`; in shadow mode a request that would not have gone through is
/// `would_deny` or `would_step_up` (shadow never records a refusal as an allow).
pub fn decision_label(verdict: &Verdict, mode: Mode) -> &'static str {
    match (verdict.allows(), mode, verdict.outcome) {
        (true, _, _) => Outcome::Allow.as_str(),
        (false, Mode::Enforce, outcome) => outcome.as_str(),
        (false, Mode::Shadow, Outcome::StepUp) => "would_step_up",
        (false, Mode::Shadow, Outcome::Deny | Outcome::Allow) => "would_deny",
    }
}

/// `2026-11-28T10:00:00.123Z` from nanoseconds since the epoch.
pub fn timestamp(time_ns: u64) -> String {
    let secs = i64::try_from(time_ns / 1_000_000_000).unwrap_or(i64::MAX);
    let millis = (time_ns / 1_000_000) % 1000;
    let mut s = format_rfc3339(secs);
    s.pop(); // the trailing `Z`
    s.push_str(&format!(".{millis:03}Z"));
    s
}

/// The record as one line of JSON.
pub fn build(ev: &Evaluation<'_>, ctx: &RecordContext<'_>) -> String {
    build_with(ev, ctx, None)
}

/// The record of an MCP request: [`build`] plus an `mcp` object (`server`, `method`, `name`, `messages`, `batch`).
pub fn build_mcp(ev: &Evaluation<'_>, ctx: &RecordContext<'_>, mcp: &crate::mcp::McpRecord) -> String {
    build_with(ev, ctx, Some(mcp))
}

fn build_with(ev: &Evaluation<'_>, ctx: &RecordContext<'_>, mcp: Option<&crate::mcp::McpRecord>) -> String {
    let agent = ev.agent.as_ref();
    let record = Record {
        kind: RECORD_TYPE,
        decision_id: ctx.decision_id,
        timestamp: timestamp(ctx.time_ns),
        environment: ctx.environment,
        vm: ctx.vm,
        agent: agent.map(|a| a.id.as_str()),
        issuer: agent.map(|a| a.issuer.as_str()),
        delegator: agent.and_then(|a| a.delegation.as_ref()).map(|d| d.delegator.as_str()),
        delegation_chain: agent
            .and_then(|a| a.delegation.as_ref())
            .map(|d| d.chain.as_slice())
            .filter(|c| !c.is_empty()),
        task: agent
            .and_then(|a| a.task.as_ref())
            .map(|t| TaskRecord { id: t.id.as_str(), purpose: t.purpose.as_deref() }),
        tool: ev.tool,
        method: ev.method,
        path: &ev.path,
        host: ev.host,
        decision: decision_label(&ev.verdict, ctx.mode),
        mode: ctx.mode.as_str(),
        rule: ev.verdict.rule_id(),
        reason: ev.verdict.reason,
        bundles: Bundles { warden: ev.verdict.revision.map(|revision| BundleRecord { revision }) },
        latency_ns: ctx.latency_ns,
        approval: ev.gov.approval.as_ref(),
        exception: ev.gov.exception.as_ref(),
        shadow: ev.gov.shadow.as_ref(),
        arguments_digest: ev.gov.arguments_digest.as_deref(),
        arguments: ev.gov.arguments.as_ref(),
        mcp,
    };
    serde_json::to_string(&record).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::sync::Arc;
    use warden_core::decision::Reason;
    use warden_core::facts::{Agent, Task};

    fn evaluation(verdict: Verdict, agent: Option<Agent>) -> Evaluation<'static> {
        Evaluation {
            verdict,
            agent,
            tool: Some("crm.contacts.read"),
            method: "GET",
            host: "crm.internal",
            path: "/v1/contacts/42".to_string(),
            rewrite_path: None,
            tool_idx: None,
            gov: Default::default(),
        }
    }

    fn ctx(mode: Mode) -> RecordContext<'static> {
        RecordContext {
            decision_id: "0f8e2c1a-5b7d-4c3e-9a1b-2c3d4e5f6a7b",
            time_ns: 1_795_860_000_123_456_789,
            environment: "prod",
            vm: "vm-5f3a9c21",
            mode,
            latency_ns: 4200,
        }
    }

    fn agent() -> Agent {
        Agent {
            id: "spiffe://acme.example/agents/support/bot-1".to_string(),
            trust_domain: "acme.example".to_string(),
            issuer: "acme-workload".to_string(),
            token_id: Some("secret-jti-never-logged".to_string()),
            expires_at: 1_796_295_600,
            task: Some(Task { id: "task-9".to_string(), purpose: Some("support".to_string()), expires_at: None }),
            delegation: None,
            sender_bound: false,
        }
    }

    fn verdict(outcome: Outcome, status: u16, reason: Reason, rule: Option<&str>, revision: Option<u64>) -> Verdict {
        Verdict { outcome, status, reason: reason.code(), reason_kind: reason, rule: rule.map(Arc::from), revision }
    }

    #[test]
    fn allow_record_has_every_field() {
        let ev = evaluation(
            verdict(Outcome::Allow, 200, Reason::AllowedByRule, Some("support-reads"), Some(7)),
            Some(agent()),
        );
        let line = build(&ev, &ctx(Mode::Enforce));
        assert!(!line.contains('\n'));
        assert!(!line.contains("secret-jti"));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            json!({
                "type": "warden.decision",
                "decision_id": "0f8e2c1a-5b7d-4c3e-9a1b-2c3d4e5f6a7b",
                "timestamp": "2026-11-28T10:00:00.123Z",
                "environment": "prod",
                "vm": "vm-5f3a9c21",
                "agent": "spiffe://acme.example/agents/support/bot-1",
                "issuer": "acme-workload",
                "task": {"id": "task-9", "purpose": "support"},
                "tool": "crm.contacts.read",
                "method": "GET",
                "path": "/v1/contacts/42",
                "host": "crm.internal",
                "decision": "allow",
                "mode": "enforce",
                "rule": "support-reads",
                "reason": "allowed_by_rule",
                "bundles": {"warden": {"revision": 7}},
                "latency_ns": 4200,
                "approval": null,
                "exception": null,
                "shadow": null,
                "arguments_digest": null
            })
        );
    }

    #[test]
    fn without_identity_or_bundle_fields_are_null() {
        let mut ev = evaluation(verdict(Outcome::Deny, 503, Reason::NoActiveBundle, None, None), None);
        ev.tool = None;
        let v: Value = serde_json::from_str(&build(&ev, &ctx(Mode::Enforce))).unwrap();
        assert_eq!(v["agent"], Value::Null);
        assert_eq!(v["issuer"], Value::Null);
        assert_eq!(v["task"], Value::Null);
        assert_eq!(v["tool"], Value::Null);
        assert_eq!(v["rule"], "default");
        assert_eq!(v["decision"], "deny");
        assert_eq!(v["reason"], "no_active_bundle");
        assert_eq!(v["bundles"], json!({}));
        assert_eq!(v.as_object().map(|o| o.len()), Some(22));
    }

    #[test]
    fn delegated_records_name_the_delegator_and_the_chain() {
        let mut a = agent();
        a.delegation = Some(warden_core::facts::Delegation {
            delegator: "https://login.acme.example/users/alice".to_string(),
            chain: vec!["spiffe://acme.example/agents/planner".to_string()],
        });
        let ev = evaluation(verdict(Outcome::Allow, 200, Reason::AllowedByRule, Some("r"), Some(7)), Some(a.clone()));
        let v: Value = serde_json::from_str(&build(&ev, &ctx(Mode::Enforce))).unwrap();
        assert_eq!(v["delegator"], "https://login.acme.example/users/alice");
        assert_eq!(v["delegation_chain"], json!(["spiffe://acme.example/agents/planner"]));
        assert_eq!(v.as_object().map(|o| o.len()), Some(24));
        a.delegation.as_mut().unwrap().chain.clear();
        let ev = evaluation(verdict(Outcome::Allow, 200, Reason::AllowedByRule, Some("r"), Some(7)), Some(a));
        let v: Value = serde_json::from_str(&build(&ev, &ctx(Mode::Enforce))).unwrap();
        assert_eq!(v.as_object().map(|o| o.len()), Some(23));
        assert!(v.get("delegation_chain").is_none());
    }

    #[test]
    fn decision_labels() {
        let cases = [
            (Outcome::Allow, 200, Reason::AllowedByRule, Mode::Enforce, "allow"),
            (Outcome::Allow, 200, Reason::AllowedByException, Mode::Shadow, "allow"),
            (Outcome::Deny, 403, Reason::DeniedByRule, Mode::Enforce, "deny"),
            (Outcome::Deny, 403, Reason::DeniedByRule, Mode::Shadow, "would_deny"),
            (Outcome::Deny, 401, Reason::IdentityMissing, Mode::Shadow, "would_deny"),
            (Outcome::Deny, 503, Reason::NoActiveBundle, Mode::Shadow, "would_deny"),
            (Outcome::StepUp, 403, Reason::StepUpRequired, Mode::Enforce, "step_up"),
            (Outcome::StepUp, 403, Reason::StepUpRequired, Mode::Shadow, "would_step_up"),
        ];
        for (outcome, status, reason, mode, want) in cases {
            assert_eq!(decision_label(&verdict(outcome, status, reason, None, Some(1)), mode), want);
        }
    }

    #[test]
    fn timestamps_have_millis() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_795_860_000_999_999_999), "2026-11-28T10:00:00.999Z");
        assert_eq!(timestamp(1_000_000), "1970-01-01T00:00:00.001Z");
    }

    #[test]
    fn governance_fields_are_recorded() {
        let mut ev = evaluation(
            verdict(Outcome::Allow, 200, Reason::AllowedByApproval, Some("refunds-need-approval"), Some(7)),
            Some(agent()),
        );
        ev.gov.approval = Some(ApprovalRecord {
            id: "a-1".into(),
            approver: "payments-approvals".into(),
            approved_by: Some("alice@acme.example".into()),
            expires_at: "2026-11-28T10:05:00Z".into(),
        });
        ev.gov.shadow =
            Some(ShadowRecord { decision: "would_deny", rule: "candidate".into(), reason: "denied_by_rule" });
        ev.gov.arguments_digest = Some("cd".repeat(32));
        ev.gov.arguments = Some(json!({"amount": 5}));
        let v: Value = serde_json::from_str(&build(&ev, &ctx(Mode::Enforce))).unwrap();
        assert_eq!(
            v["approval"],
            json!({"id": "a-1", "approver": "payments-approvals", "approved_by": "alice@acme.example",
                   "expires_at": "2026-11-28T10:05:00Z"})
        );
        assert_eq!(v["shadow"], json!({"decision": "would_deny", "rule": "candidate", "reason": "denied_by_rule"}));
        assert_eq!(v["arguments_digest"], "cd".repeat(32));
        assert_eq!(v["arguments"], json!({"amount": 5}));
        assert_eq!(v["reason"], "allowed_by_approval");
        assert_eq!(v["exception"], Value::Null);
        ev.gov.exception = Some(ExceptionRecord {
            ticket: "SEC-1".into(),
            approver: "ciso@acme.example".into(),
            expires_at: "2026-12-01T00:00:00Z".into(),
        });
        let v: Value = serde_json::from_str(&build(&ev, &ctx(Mode::Enforce))).unwrap();
        assert_eq!(v["exception"]["ticket"], "SEC-1");
    }
}
