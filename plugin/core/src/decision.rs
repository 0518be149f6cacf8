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
use crate::pins::PinFailure;

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
    /// A JSON-RPC batch with more than one call that needs step-up: one approval covers one call, so the batch is
    /// refused whole, whatever approval it carries.
    StepUpBatch,
    /// A step-up rule matched and the presented approval was refused; the code is the failure's (`approval_*`).
    ApprovalRefused(ApprovalFailure),
    /// A public route of the bundle matched: let through without identity (the rule is the public route's id).
    PublicRoute,
    /// The request asked for a protected resource's metadata document (RFC 9728), which the gateway answered itself.
    ResourceMetadata,
    /// Limits: the call was allowed, and a rate limit (`max_calls`) of its tool has no call left for its key in
    /// this window (HTTP 429 with `Retry-After`).
    RateLimited,
    /// Limits: the call was allowed, and its argument would take a budget of its tool over the maximum for its key
    /// in this window (HTTP 429 with `Retry-After`; a smaller amount may still fit).
    BudgetExhausted,
    /// Limits: the call was allowed, and the counter of one of its limits could not be read or written (shared data
    /// failed, stayed contended, or holds too many counters): refused, fail closed (HTTP 503).
    LimitStoreUnavailable,
    /// An MCP `tools/call` of a tool its server's pins refuse (`crate::pins`): last listed on this VM with a
    /// definition other than its pin (`tool_definition_changed`), or without a pin on a `pinned` server
    /// (`tool_not_pinned`). Only a call that would otherwise go through (allowed, or with an approval) gets it: a
    /// refusal keeps its own reason.
    Pin(PinFailure),
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
            Reason::StepUpBatch => "step_up_batch",
            Reason::ApprovalRefused(f) => f.code(),
            Reason::PublicRoute => "public_route",
            Reason::ResourceMetadata => "resource_metadata",
            Reason::RateLimited => "rate_limited",
            Reason::BudgetExhausted => "budget_exhausted",
            Reason::LimitStoreUnavailable => "limit_store_unavailable",
            Reason::Pin(f) => f.code(),
        }
    }

    /// Whether a limit refused the call after the decision allowed it.
    pub fn is_limit(self) -> bool {
        matches!(self, Reason::RateLimited | Reason::BudgetExhausted | Reason::LimitStoreUnavailable)
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
            | Reason::StepUpBatch
            | Reason::ApprovalRefused(_)
            | Reason::RateLimited
            | Reason::BudgetExhausted
            | Reason::LimitStoreUnavailable
            | Reason::Pin(_) => true,
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
            | Reason::Request(_)
            | Reason::PublicRoute
            | Reason::ResourceMetadata => false,
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
    /// Under `unknown_tool: allow`, a request that reaches no route but misses one only by spelling (letter case, a
    /// trailing `/`, a `.suffix`, `HEAD` for `GET`), which its tool may answer as that route (400
    /// `route_near_miss`; the record names the tool).
    RouteNearMiss,
    /// The MCP body was refused by the strict parser (400, the parser's `mcp_*` code).
    McpBody(McpErrorKind),
    /// A held step-up body over `max_body_bytes` (413 `body_too_large`).
    BodyTooLarge,
    /// The host did not hand over a held step-up body (400 `body_unreadable`).
    BodyUnreadable,
    /// Trailers after a held step-up body (400 `step_up_trailers`).
    StepUpTrailers,
    /// A body on an MCP `GET` or `DELETE` (400 `mcp_unexpected_body`).
    McpUnexpectedBody,
    /// An `Upgrade` header on an MCP endpoint (400 `mcp_upgrade`).
    McpUpgrade,
    /// A `Content-Encoding` on an MCP `POST` (415 `mcp_content_encoding`).
    McpContentEncoding,
    /// A `Content-Encoding` on a step-up call's body (415 `step_up_content_encoding`).
    StepUpContentEncoding,
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
            RequestRefusal::RouteNearMiss => "route_near_miss",
            RequestRefusal::McpBody(k) => k.code(),
            RequestRefusal::BodyTooLarge => "body_too_large",
            RequestRefusal::BodyUnreadable => "body_unreadable",
            RequestRefusal::StepUpTrailers => "step_up_trailers",
            RequestRefusal::McpUnexpectedBody => "mcp_unexpected_body",
            RequestRefusal::McpUpgrade => "mcp_upgrade",
            RequestRefusal::McpContentEncoding => "mcp_content_encoding",
            RequestRefusal::StepUpContentEncoding => "step_up_content_encoding",
        }
    }

    fn jsonrpc_code(self) -> i64 {
        match self {
            RequestRefusal::McpAmbiguousHeader | RequestRefusal::McpHeaderMismatch => jsonrpc::HEADER_MISMATCH,
            RequestRefusal::McpBody(k) => match k {
                McpErrorKind::NotUtf8 | McpErrorKind::NotJson | McpErrorKind::DuplicateKey => jsonrpc::PARSE_ERROR,
                McpErrorKind::InvalidParams => jsonrpc::INVALID_PARAMS,
                McpErrorKind::BatchRefused
                | McpErrorKind::EmptyBatch
                | McpErrorKind::InvalidMessage
                | McpErrorKind::InvalidId
                | McpErrorKind::InvalidMethod => jsonrpc::INVALID_REQUEST,
                // A number the canonical argument form cannot hold exactly: the params are what is refused.
                McpErrorKind::InexactNumber => jsonrpc::INVALID_PARAMS,
            },
            RequestRefusal::McpContentType
            | RequestRefusal::McpMethodNotAllowed
            | RequestRefusal::McpBodyTooLarge
            | RequestRefusal::McpTrailers
            | RequestRefusal::BodyTooLarge
            | RequestRefusal::BodyUnreadable
            | RequestRefusal::StepUpTrailers
            | RequestRefusal::RouteNearMiss
            | RequestRefusal::McpUnexpectedBody
            | RequestRefusal::McpUpgrade
            | RequestRefusal::McpContentEncoding
            | RequestRefusal::StepUpContentEncoding => jsonrpc::INVALID_REQUEST,
        }
    }

    fn http_status(self) -> u16 {
        match self {
            RequestRefusal::McpContentType
            | RequestRefusal::McpContentEncoding
            | RequestRefusal::StepUpContentEncoding => 415,
            RequestRefusal::McpMethodNotAllowed => 405,
            RequestRefusal::McpBodyTooLarge | RequestRefusal::BodyTooLarge => 413,
            RequestRefusal::McpAmbiguousHeader
            | RequestRefusal::McpHeaderMismatch
            | RequestRefusal::McpTrailers
            | RequestRefusal::RouteNearMiss
            | RequestRefusal::McpBody(_)
            | RequestRefusal::BodyUnreadable
            | RequestRefusal::StepUpTrailers
            | RequestRefusal::McpUnexpectedBody
            | RequestRefusal::McpUpgrade => 400,
        }
    }
}

/// JSON-RPC error codes of Warden's refusals on MCP routes. Warden's own codes lie outside the range JSON-RPC 2.0
/// reserves (-32768 to -32000), whose -32000 to -32019 MCP 2026-07-28 calls implementation-defined and legacy, and
/// whose -32020 to -32099 it reserves for the codes it defines; the spec's own codes are used where it means them.
/// `plugin/filter/README.md` ("JSON-RPC error codes") documents the table.
pub mod jsonrpc {
    /// A policy refusal: a deny rule, no rule, an unknown tool, a revocation, an expired task, arguments a rule
    /// cannot check, a protocol method the server denies, a tool its server's pins refuse.
    pub const DENIED: i64 = -31001;
    /// The call needs a step-up approval (none presented, or the one presented was refused).
    pub const STEP_UP_REQUIRED: i64 = -31002;
    /// The caller's identity: no token, or a token that was refused (HTTP 401).
    pub const IDENTITY: i64 = -31003;
    /// The gateway has no usable policy: no bundle yet, or an expired one; or the counter of a limit could not be
    /// read or written (HTTP 503).
    pub const UNAVAILABLE: i64 = -31004;
    /// An allowed call refused by a rate limit or a budget (HTTP 429): retry after `data.limit.retry_after_seconds`.
    pub const LIMITED: i64 = -31005;
    /// MCP `HeaderMismatch`: `Mcp-Method` / `Mcp-Name` missing where required, malformed, or not what the body says.
    pub const HEADER_MISMATCH: i64 = -32020;
    /// JSON-RPC `Parse error`: the body is not (one) JSON text.
    pub const PARSE_ERROR: i64 = -32700;
    /// JSON-RPC `Invalid Request`: not a valid request for this route (message shape, method, batch, size, path).
    pub const INVALID_REQUEST: i64 = -32600;
    /// JSON-RPC `Invalid params`: a method's `params` are not what the protocol defines for it.
    pub const INVALID_PARAMS: i64 = -32602;
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
            (_, Reason::NoActiveBundle | Reason::BundleExpired | Reason::LimitStoreUnavailable) => 503,
            (_, Reason::RateLimited | Reason::BudgetExhausted) => 429,
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
                | Reason::RevokedTask
                | Reason::TaskExpired
                | Reason::InvalidArguments
                | Reason::McpLifecycle
                | Reason::AllowedByApproval
                | Reason::StepUpBatch
                | Reason::ApprovalRefused(_)
                | Reason::PublicRoute
                | Reason::ResourceMetadata
                | Reason::Pin(_),
            ) => 403,
        }
    }

    /// The JSON-RPC error code of the refusal of an MCP request ([`jsonrpc`]). One exhaustive mapping, so a new
    /// reason cannot slip through unmapped.
    pub fn jsonrpc_code(&self) -> i64 {
        if self.outcome == Outcome::StepUp {
            return jsonrpc::STEP_UP_REQUIRED;
        }
        match self.reason {
            // Revoked credentials are refused as identity (HTTP 401), so they get the identity code too.
            Reason::IdentityMissing | Reason::IdentityInvalid(_) | Reason::RevokedAgent | Reason::RevokedToken => {
                jsonrpc::IDENTITY
            }
            Reason::NoActiveBundle | Reason::BundleExpired | Reason::LimitStoreUnavailable => jsonrpc::UNAVAILABLE,
            Reason::RateLimited | Reason::BudgetExhausted => jsonrpc::LIMITED,
            Reason::Request(r) => r.jsonrpc_code(),
            Reason::BadRequest | Reason::BadPath(_) => jsonrpc::INVALID_REQUEST,
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
            | Reason::ApprovalRefused(_)
            | Reason::PublicRoute
            | Reason::ResourceMetadata
            // The bundle's pins refuse the tool: a policy refusal like a deny rule (`data.reason` tells which).
            | Reason::Pin(_) => jsonrpc::DENIED,
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
