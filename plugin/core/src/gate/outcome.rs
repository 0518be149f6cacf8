//! What a request came to beyond its decision: the facts the decision record states (approval, exception, shadow
//! rules, arguments, the MCP message), what a step-up reply says the approval must bind to, and the counters to bump.

use serde::Serialize;

use crate::approval::VerifiedApproval;
use crate::compile::CompiledBundle;
use crate::decision::{Decision, Outcome, Reason};
use crate::pins::PinFinding;
use crate::time::format_rfc3339;

/// What the decision record says beyond the decision: the approval that let a step-up through, the exception that
/// allowed, what a shadow rule would have decided, and the call's arguments (digest, and in clear where the tool
/// opts in).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Governance {
    pub approval: Option<ApprovalRecord>,
    pub exception: Option<ExceptionRecord>,
    pub shadow: Option<ShadowRecord>,
    /// Step-up calls: lower-case hex SHA-256 of the canonical arguments (MCP) or raw body (HTTP) the approval binds to.
    pub arguments_digest: Option<String>,
    /// The arguments in clear: only for tools with `log_arguments`.
    pub arguments: Option<serde_json::Value>,
    /// The limit that refused an allowed call (`rate_limited`, `budget_exhausted`, `limit_store_unavailable`).
    pub limit: Option<LimitRecord>,
}

/// The limit that refused a call: the `limit` object of the reply body (and of a JSON-RPC error's `data`) and of the
/// decision record. Amounts are in the budget's argument's units.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LimitRecord {
    /// The limit's id in the bundle.
    pub id: String,
    /// `calls` (a rate limit) or `budget`.
    pub kind: &'static str,
    /// The counter's key: the limit's `per` facts and their values for this call (`task` `""`: no task context).
    pub key: serde_json::Map<String, serde_json::Value>,
    pub window_seconds: i64,
    /// Most calls, or most of the argument, per key and window.
    pub max: serde_json::Value,
    /// What this call asked for: 1 call, or the argument's amount (all of it, for the calls of a batch).
    pub requested: serde_json::Value,
    /// What is left in this window before the call (`null` when the counter could not be read).
    pub remaining: Option<serde_json::Value>,
    /// The budget's argument (JSON Pointer into `arguments`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argument: Option<String>,
    /// When the window ends and the counter starts over (RFC 3339).
    pub resets_at: String,
    /// Seconds until then (the reply's `Retry-After`; at least 1).
    pub retry_after_seconds: i64,
    /// The limit's owner, else the bundle's.
    pub owner: String,
}

/// The accepted approval of a step-up call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalRecord {
    /// The approval's `jti`.
    pub id: String,
    /// The bundle's approver id.
    pub approver: String,
    /// The approval's `sub`: the person who approved.
    pub approved_by: Option<String>,
    /// RFC 3339.
    pub expires_at: String,
}

impl ApprovalRecord {
    pub fn new(a: &VerifiedApproval) -> ApprovalRecord {
        ApprovalRecord {
            id: a.id.clone(),
            approver: a.approver.clone(),
            approved_by: a.approved_by.clone(),
            expires_at: format_rfc3339(a.expires_at),
        }
    }
}

/// The exception rule that allowed a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExceptionRecord {
    pub ticket: String,
    pub approver: String,
    /// RFC 3339.
    pub expires_at: String,
}

impl ExceptionRecord {
    /// The exception behind an `allowed_by_exception` decision.
    pub fn for_decision(bundle: &CompiledBundle, d: &Decision) -> Option<ExceptionRecord> {
        if d.reason != Reason::AllowedByException {
            return None;
        }
        let e = bundle.exception_of(d.rule.as_deref()?)?;
        Some(ExceptionRecord {
            ticket: e.ticket.to_string(),
            approver: e.approver.to_string(),
            expires_at: format_rfc3339(e.expires_at),
        })
    }
}

/// What the bundle's shadow rules would have decided, when it differs from the enforced decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShadowRecord {
    /// `would_allow`, `would_deny` or `would_step_up`.
    pub decision: &'static str,
    pub rule: String,
    pub reason: &'static str,
}

impl ShadowRecord {
    pub fn from_decision(d: &Decision) -> ShadowRecord {
        ShadowRecord {
            decision: match d.outcome {
                Outcome::Allow => "would_allow",
                Outcome::Deny => "would_deny",
                Outcome::StepUp => "would_step_up",
            },
            rule: d.rule_id().to_string(),
            reason: d.reason.code(),
        }
    }
}

/// The `mcp` object of a decision record: the server, and the deciding message's method and tool / resource /
/// prompt name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct McpRecord {
    pub server: String,
    /// The JSON-RPC method of the deciding message (from `Mcp-Method` when the headers decided); `None` for a
    /// `GET` or `DELETE`, a client's answer to a server request, or a body that could not be parsed.
    pub method: Option<String>,
    /// Tool or prompt name, or resource URI.
    pub name: Option<String>,
    /// Number of messages in the body (0 before the body was read).
    pub messages: usize,
    /// Whether the body was a batch.
    pub batch: bool,
    /// The tools a filtered `tools/list` answer lost to the server's pins (`mcp.tools_removed` in the record, written
    /// again at the response when there are any).
    #[serde(skip)]
    pub tools_removed: Vec<PinFinding>,
}

/// One approver a step-up reply names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApproverRef {
    pub id: String,
    pub iss: String,
}

/// What a step-up reply tells the agent and its approval service: what the approval must bind to, who may approve,
/// for how long at most, and where to send it (the `approval` object of the reply body, or of a JSON-RPC error's
/// `data`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepUpInfo {
    pub agent: Option<String>,
    pub task: Option<String>,
    pub tool: Option<String>,
    /// Lower-case hex SHA-256: of the canonical JSON arguments (MCP) or of the request binding (HTTP); absent when
    /// the call was answered at its head before the body (the approval service takes the body's digest itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments_digest: Option<String>,
    /// A plain HTTP call: [`crate::approval::HttpBinding::head_digest`], the approval's `head_digest` claim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_digest: Option<String>,
    /// `arguments` or `request`: what the digest was taken over.
    pub digest_of: &'static str,
    /// A plain HTTP call: what `arguments_digest` binds ([`crate::approval::HttpBinding::digest`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binding: Option<crate::approval::HttpBinding>,
    pub decision_id: String,
    pub rule: String,
    pub approvers: Vec<ApproverRef>,
    /// Longest approval lifetime (`exp - iat`) the gateway accepts for this rule.
    pub max_age_seconds: u64,
    /// The request header the approval goes in on the retry.
    pub header: String,
}

/// The counters a decided request bumps (Envoy stats): `warden.decisions.<decision>`, `warden.reasons.<reason>`,
/// `warden.shadow.<shadow>`, `warden.exceptions.used`, `warden.approvals.accepted` or
/// `warden.approvals.refused.<code>`, and for a limit's refusal `warden.limits.refused.<limit id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    /// The record's `decision` label.
    pub decision: &'static str,
    pub reason: &'static str,
    pub shadow: Option<&'static str>,
    pub exception_used: bool,
    /// A presented approval: `Ok` accepted, `Err(code)` refused.
    pub approval: Option<Result<(), &'static str>>,
    /// The id of the limit that refused the call (the reason says how).
    pub limit: Option<Box<str>>,
}
