//! What `decide` returns: the effect, a stable reason code, the rule that made it and the bundle revision; and how a
//! step-up decision is settled by the call's approval ([`Decision::with_approval`]).

use std::sync::Arc;

use crate::approval::{ApprovalFailure, VerifiedApproval};
use crate::facts::TokenFailure;

/// The effect of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Allow,
    Deny,
    /// Needs a call-bound approval before it can go through.
    StepUp,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::StepUp => "step_up",
        }
    }
}

/// Why a decision came out as it did. `code()` is the stable string used in replies, logs, metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// An allow rule matched.
    AllowedByRule,
    /// A time-boxed exception matched.
    AllowedByException,
    /// A deny rule matched.
    DeniedByRule,
    /// A step-up rule matched and no valid approval was presented.
    StepUpRequired,
    /// A known tool, a verified agent, and no rule matched.
    NoMatchingRule,
    /// The request reached no tool in the catalog; the bundle's `defaults.unknown_tool` applied.
    UnknownTool,
    RevokedAgent,
    RevokedTask,
    RevokedToken,
    /// No token was presented.
    IdentityMissing,
    /// A token was presented and refused.
    IdentityInvalid(TokenFailure),
    /// The task context has expired.
    TaskExpired,
    /// No bundle is active yet (the filter's own reason; `decide` never returns it).
    NoActiveBundle,
    /// The active bundle is past `expires_at` plus grace (the filter's own reason).
    BundleExpired,
    /// The request itself could not be read safely (bad path, ambiguous headers); the filter's own reason.
    BadRequest,
    /// A deny or step-up rule's argument conditions could not be evaluated (an argument is missing or has the
    /// wrong type): the call is denied rather than let through or sent to an approver.
    InvalidArguments,
    /// An MCP life-cycle method (`initialize`, `tools/list`, notifications, ...) that no tool binds: the server's
    /// `lifecycle` effect applied.
    McpLifecycle,
    /// A step-up rule matched and the call's approval verified (see [`Decision::with_approval`]).
    AllowedByApproval,
    /// A JSON-RPC batch with more than one call that needs step-up: one approval covers one call, so the batch is
    /// refused whole, whatever approval it carries.
    StepUpBatch,
    /// A step-up rule matched and the presented approval was refused; the code is the failure's (`approval_*`).
    ApprovalRefused(ApprovalFailure),
}

impl Reason {
    /// Stable reason code.
    pub fn code(self) -> &'static str {
        match self {
            Reason::AllowedByRule => "allowed_by_rule",
            Reason::AllowedByException => "allowed_by_exception",
            Reason::DeniedByRule => "denied_by_rule",
            Reason::StepUpRequired => "step_up_required",
            Reason::NoMatchingRule => "no_matching_rule",
            Reason::UnknownTool => "unknown_tool",
            Reason::RevokedAgent => "revoked_agent",
            Reason::RevokedTask => "revoked_task",
            Reason::RevokedToken => "revoked_token",
            Reason::IdentityMissing => "identity_missing",
            Reason::IdentityInvalid(f) => f.code(),
            Reason::TaskExpired => "task_expired",
            Reason::NoActiveBundle => "no_active_bundle",
            Reason::BundleExpired => "bundle_expired",
            Reason::BadRequest => "bad_request",
            Reason::InvalidArguments => "invalid_arguments",
            Reason::McpLifecycle => "mcp_lifecycle",
            Reason::AllowedByApproval => "allowed_by_approval",
            Reason::StepUpBatch => "step_up_batch",
            Reason::ApprovalRefused(f) => f.code(),
        }
    }
}

/// The answer for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub outcome: Outcome,
    pub reason: Reason,
    /// The rule that decided, or `None` when a default did (reported as `default`).
    pub rule: Option<Arc<str>>,
    /// Revision of the bundle that decided (0 when no bundle is active).
    pub revision: u64,
}

impl Decision {
    /// The rule id, or `default`.
    pub fn rule_id(&self) -> &str {
        self.rule.as_deref().unwrap_or("default")
    }

    /// The HTTP status of the reply the filter sends for this decision (200 means: let the request through).
    /// One exhaustive mapping, so a new reason cannot slip through unmapped.
    pub fn http_status(&self) -> u16 {
        match (self.outcome, self.reason) {
            (Outcome::Allow, _) => 200,
            // A revoked token or agent is a credential that no longer counts (RFC 6750 section 3.1 `invalid_token`),
            // not a missing permission.
            (_, Reason::IdentityMissing | Reason::IdentityInvalid(_) | Reason::RevokedAgent | Reason::RevokedToken) => {
                401
            }
            (_, Reason::NoActiveBundle | Reason::BundleExpired) => 503,
            (_, Reason::BadRequest) => 400,
            (
                _,
                Reason::AllowedByRule
                | Reason::AllowedByException
                | Reason::DeniedByRule
                | Reason::StepUpRequired
                | Reason::NoMatchingRule
                | Reason::UnknownTool
                | Reason::RevokedTask
                | Reason::TaskExpired
                | Reason::InvalidArguments
                | Reason::McpLifecycle
                | Reason::AllowedByApproval
                | Reason::StepUpBatch
                | Reason::ApprovalRefused(_),
            ) => 403,
        }
    }

    /// Settles a step-up decision with the result of [`crate::approval::verify`] for the presented approval: a
    /// verified approval allows (`allowed_by_approval`), a refused one keeps the step-up with the failure as reason
    /// (`approval_*`, 403). The rule and revision stay. Any other decision is returned unchanged.
    pub fn with_approval(self, approval: Result<&VerifiedApproval, ApprovalFailure>) -> Decision {
        if self.outcome != Outcome::StepUp {
            return self;
        }
        match approval {
            Ok(_) => Decision { outcome: Outcome::Allow, reason: Reason::AllowedByApproval, ..self },
            Err(failure) => Decision { outcome: Outcome::StepUp, reason: Reason::ApprovalRefused(failure), ..self },
        }
    }
}
