//! What a decision is: the effect, a stable [`Reason`], the rule that made it and the bundle revision; how a step-up
//! decision is settled by the call's approval ([`Decision::with_approval`]); and the one mapping from a decision to
//! the HTTP status ([`Decision::http_status`]) and the JSON-RPC error code ([`Decision::jsonrpc_code`]) of its reply.
//!
//! Every refusal Warden makes is a `Reason` here: the policy's (rules, defaults, identity, revocations), the
//! gateway's own (no bundle, expired bundle) and the request's shape (an unreadable path, an MCP body that does not
//! parse, a body over the limit: [`Reason::BadPath`], [`Reason::Request`]).

use std::sync::Arc;

use crate::approval::{ApprovalFailure, VerifiedApproval};
use crate::facts::TokenFailure;
use crate::mcp::parse::McpErrorKind;
use crate::path::PathError;

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
    /// `:method`, `:path` or `:authority` missing, repeated or not UTF-8: the request cannot be read safely.
    BadRequest,
    /// The request path was refused by normalization; the code is the path error's (`path_*`).
    BadPath(PathError),
    /// The request's shape is not what its route allows (MCP content type, headers, body; body limits).
    Request(RequestRefusal),
    /// A deny or step-up rule's argument conditions could not be evaluated (an argument is missing or has the
    /// wrong type): the call is denied rather than let through or sent to an approver.
    InvalidArguments,
    /// An MCP life-cycle method (`initialize`, `tools/list`, notifications, ...) that no tool binds: the server's
    /// `lifecycle` effect applied.
    McpLifecycle,
    /// A step-up rule matched and the call's approval verified (see [`Decision::with_approval`]).
    AllowedByApproval,
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
            Reason::BadPath(e) => e.code(),
            Reason::Request(r) => r.code(),
            Reason::InvalidArguments => "invalid_arguments",
            Reason::McpLifecycle => "mcp_lifecycle",
            Reason::AllowedByApproval => "allowed_by_approval",
            Reason::ApprovalRefused(f) => f.code(),
        }
    }
}

impl Reason {
    /// Whether the caller got past the checks before any tool: the request was readable, a bundle was active, the
    /// identity verified, nothing revoked, the task not expired. Reasons from the rules, the tool default, argument
    /// conditions, approvals and the MCP life cycle are past them.
    pub fn passed_identity(self) -> bool {
        match self {
            Reason::AllowedByRule
            | Reason::AllowedByException
            | Reason::DeniedByRule
            | Reason::StepUpRequired
            | Reason::NoMatchingRule
            | Reason::UnknownTool
            | Reason::InvalidArguments
            | Reason::McpLifecycle
            | Reason::AllowedByApproval
            | Reason::ApprovalRefused(_) => true,
            Reason::RevokedAgent
            | Reason::RevokedTask
            | Reason::RevokedToken
            | Reason::IdentityMissing
            | Reason::IdentityInvalid(_)
            | Reason::TaskExpired
            | Reason::NoActiveBundle
            | Reason::BundleExpired
            | Reason::BadRequest
            | Reason::BadPath(_)
            | Reason::Request(_) => false,
        }
    }
}

/// A request refused for its shape on its route, before or instead of a policy decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestRefusal {
    /// An MCP `POST` whose content type is not `application/json` (415 `mcp_content_type`).
    McpContentType,
    /// `Content-Type`, `Mcp-Method` or `Mcp-Name` repeated or not UTF-8 (400 `mcp_ambiguous_header`).
    McpAmbiguousHeader,
    /// `Mcp-Method` / `Mcp-Name` disagree with each other or with the body (400 `mcp_header_mismatch`).
    McpHeaderMismatch,
    /// A method other than `GET`, `POST`, `DELETE` on an MCP endpoint (405 `mcp_method_not_allowed`).
    McpMethodNotAllowed,
    /// An MCP body over `max_body_bytes` (413 `mcp_body_too_large`).
    McpBodyTooLarge,
    /// Trailers after an MCP body (400 `mcp_trailers`).
    McpTrailers,
    /// The MCP body was refused by the strict parser (400, the parser's `mcp_*` code).
    McpBody(McpErrorKind),
    /// A held step-up body over `max_body_bytes` (413 `body_too_large`).
    BodyTooLarge,
    /// The host did not hand over a held step-up body (400 `body_unreadable`).
    BodyUnreadable,
    /// Trailers after a held step-up body (400 `step_up_trailers`).
    StepUpTrailers,
}

impl RequestRefusal {
    /// Stable reason code.
    pub fn code(self) -> &'static str {
        match self {
            RequestRefusal::McpContentType => "mcp_content_type",
            RequestRefusal::McpAmbiguousHeader => "mcp_ambiguous_header",
            RequestRefusal::McpHeaderMismatch => "mcp_header_mismatch",
            RequestRefusal::McpMethodNotAllowed => "mcp_method_not_allowed",
            RequestRefusal::McpBodyTooLarge => "mcp_body_too_large",
            RequestRefusal::McpTrailers => "mcp_trailers",
            RequestRefusal::McpBody(k) => k.code(),
            RequestRefusal::BodyTooLarge => "body_too_large",
            RequestRefusal::BodyUnreadable => "body_unreadable",
            RequestRefusal::StepUpTrailers => "step_up_trailers",
        }
    }

    fn http_status(self) -> u16 {
        match self {
            RequestRefusal::McpContentType => 415,
            RequestRefusal::McpMethodNotAllowed => 405,
            RequestRefusal::McpBodyTooLarge | RequestRefusal::BodyTooLarge => 413,
            RequestRefusal::McpAmbiguousHeader
            | RequestRefusal::McpHeaderMismatch
            | RequestRefusal::McpTrailers
            | RequestRefusal::McpBody(_)
            | RequestRefusal::BodyUnreadable
            | RequestRefusal::StepUpTrailers => 400,
        }
    }
}

/// JSON-RPC error code of a call the policy denies.
pub const JSONRPC_DENIED: i64 = -32001;
/// JSON-RPC error code of a call that needs a step-up approval.
pub const JSONRPC_STEP_UP: i64 = -32002;
/// JSON-RPC `Invalid Request`: a request whose shape is refused.
pub const JSONRPC_INVALID_REQUEST: i64 = -32600;

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
            (_, Reason::IdentityMissing | Reason::IdentityInvalid(_)) => 401,
            (_, Reason::NoActiveBundle | Reason::BundleExpired) => 503,
            (_, Reason::BadRequest | Reason::BadPath(_)) => 400,
            (_, Reason::Request(r)) => r.http_status(),
            (
                _,
                Reason::AllowedByRule
                | Reason::AllowedByException
                | Reason::DeniedByRule
                | Reason::StepUpRequired
                | Reason::NoMatchingRule
                | Reason::UnknownTool
                | Reason::RevokedAgent
                | Reason::RevokedTask
                | Reason::RevokedToken
                | Reason::TaskExpired
                | Reason::InvalidArguments
                | Reason::McpLifecycle
                | Reason::AllowedByApproval
                | Reason::ApprovalRefused(_),
            ) => 403,
        }
    }

    /// The JSON-RPC error code of the refusal of an MCP request: step-up, a body that is not JSON (-32700, as the
    /// parser says), another refused shape (-32600), or a policy refusal.
    pub fn jsonrpc_code(&self) -> i64 {
        match (self.outcome, self.reason) {
            (Outcome::StepUp, _) => JSONRPC_STEP_UP,
            (_, Reason::Request(RequestRefusal::McpBody(k))) => k.jsonrpc_code(),
            (_, Reason::Request(_) | Reason::BadRequest | Reason::BadPath(_)) => JSONRPC_INVALID_REQUEST,
            _ => JSONRPC_DENIED,
        }
    }

    /// A refusal the gateway makes itself (no bundle, an unreadable request): deny, no rule.
    pub fn refusal(reason: Reason, revision: u64) -> Decision {
        Decision { outcome: Outcome::Deny, reason, rule: None, revision }
    }

    /// Settles a step-up decision with the result of [`crate::compile::CompiledBundle::verify_approval`] for the presented approval: a
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
