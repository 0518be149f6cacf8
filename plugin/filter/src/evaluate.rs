//! One request, start to verdict, without the host: scan the headers once, then bundle state, request shape,
//! identity, tool and `decide`.
//!
//! The HTTP context reads the header map, calls [`scan`] and [`evaluate`], and acts on the [`Evaluation`]. Keeping
//! this pure lets the reply and the record be tested natively against real bundles.

use std::sync::Arc;

use warden_core::approval::ApprovalFailure;
use warden_core::compile::{CompiledBundle, ToolIdx};
use warden_core::decide::{self, decide};
use warden_core::decision::{Decision, Outcome, Reason};
use warden_core::facts::{Agent, Facts, Identity, PeerIdentity, TokenFailure, TxnFailure};
use warden_core::identity::TokenCache;
use warden_core::{identity, path};

use crate::active::Active;
use crate::config::{Config, DEFAULT_APPROVAL_HEADER, DEFAULT_TXN_TOKEN_HEADER, RESERVED_HEADER_PREFIX};

/// A request pseudo-header as found in the header map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Field<'h> {
    #[default]
    Missing,
    Present(&'h str),
    /// Repeated, or not UTF-8: the request cannot be read safely.
    Unreadable,
}

impl<'h> Field<'h> {
    fn set(&mut self, value: &'h [u8]) {
        *self = match (*self, std::str::from_utf8(value)) {
            (Field::Missing, Ok(v)) => Field::Present(v),
            _ => Field::Unreadable,
        };
    }

    /// The value, or `""` when missing or unreadable (for the record).
    pub fn or_empty(self) -> &'h str {
        match self {
            Field::Present(v) => v,
            Field::Missing | Field::Unreadable => "",
        }
    }
}

/// The token header as found in the header map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenHeader<'h> {
    #[default]
    Absent,
    One(&'h [u8]),
    /// More than one value: ambiguous, refused.
    Repeated,
}

/// What the filter reads from the request headers, gathered in one pass.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RequestHeaders<'h> {
    pub method: Field<'h>,
    pub path: Field<'h>,
    pub authority: Field<'h>,
    pub token: TokenHeader<'h>,
    /// The Transaction Token header (task context).
    pub txn_token: TokenHeader<'h>,
    /// The step-up approval header.
    pub approval: TokenHeader<'h>,
    /// Names of the headers removed before the request goes upstream: client-supplied `x-warden-*` ones and the
    /// approval header (a credential for the gateway, not for the tool).
    pub reserved: Vec<&'h str>,
}

/// One pass over the header pairs (`get_http_request_headers_bytes`: values as bytes, so that a non-UTF-8 value from
/// a client cannot trap the SDK). `token_header` is lower case; the Transaction Token and the approval are looked for
/// in their default headers (see [`scan_with`]).
pub fn scan<'h>(headers: &'h [(String, Vec<u8>)], token_header: &str) -> RequestHeaders<'h> {
    scan_with(headers, token_header, DEFAULT_TXN_TOKEN_HEADER, DEFAULT_APPROVAL_HEADER)
}

/// [`scan`] with the configured Transaction Token and approval headers (lower case).
pub fn scan_with<'h>(
    headers: &'h [(String, Vec<u8>)],
    token_header: &str,
    txn_header: &str,
    approval_header: &str,
) -> RequestHeaders<'h> {
    let mut r = RequestHeaders::default();
    let add = |h: TokenHeader<'h>, value: &'h [u8]| match h {
        TokenHeader::Absent => TokenHeader::One(value),
        TokenHeader::One(_) | TokenHeader::Repeated => TokenHeader::Repeated,
    };
    for (name, value) in headers {
        match name.as_str() {
            ":method" => r.method.set(value),
            ":path" => r.path.set(value),
            ":authority" => r.authority.set(value),
            n if n.eq_ignore_ascii_case(token_header) => r.token = add(r.token, value),
            n if n.eq_ignore_ascii_case(txn_header) => r.txn_token = add(r.txn_token, value),
            n if n.eq_ignore_ascii_case(approval_header) => {
                r.approval = add(r.approval, value);
                if !r.reserved.contains(&n) {
                    r.reserved.push(n);
                }
            }
            n if is_reserved(n) && !r.reserved.contains(&n) => r.reserved.push(n),
            _ => {}
        }
    }
    r
}

/// `x-warden-*`, in any case.
fn is_reserved(name: &str) -> bool {
    name.get(..RESERVED_HEADER_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_HEADER_PREFIX))
}

/// The filter's answer for one request: what is replied (or let through) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub outcome: Outcome,
    /// 200: let the request through; otherwise the status of the local reply.
    pub status: u16,
    /// Stable reason code (`Reason::code`, or a path error code for a path the filter refuses).
    pub reason: &'static str,
    pub reason_kind: Reason,
    /// The deciding rule; `None` is reported as `default`.
    pub rule: Option<Arc<str>>,
    /// Revision of the bundle that decided; `None` while no bundle is active.
    pub revision: Option<u64>,
}

impl Verdict {
    pub fn from_decision(d: Decision) -> Verdict {
        Verdict {
            outcome: d.outcome,
            status: d.http_status(),
            reason: d.reason.code(),
            reason_kind: d.reason,
            rule: d.rule,
            revision: Some(d.revision),
        }
    }

    /// A refusal the filter makes itself (no bundle, expired bundle, unreadable request).
    fn refuse(reason: Reason, code: &'static str, revision: Option<u64>) -> Verdict {
        let d = Decision { outcome: Outcome::Deny, reason, rule: None, revision: revision.unwrap_or(0) };
        Verdict { reason: code, revision, ..Verdict::from_decision(d) }
    }

    /// The rule id, or `default`.
    pub fn rule_id(&self) -> &str {
        self.rule.as_deref().unwrap_or("default")
    }

    /// A step-up verdict after its approval was checked (`Decision::with_approval`); other verdicts unchanged.
    pub fn with_approval(self, result: Result<&warden_core::approval::VerifiedApproval, ApprovalFailure>) -> Verdict {
        let revision = self.revision;
        let d = Decision {
            outcome: self.outcome,
            reason: self.reason_kind,
            rule: self.rule.clone(),
            revision: revision.unwrap_or(0),
        };
        Verdict { revision, ..Verdict::from_decision(d.with_approval(result)) }
    }

    /// A step-up that still waits for an approval (none was presented, or it was refused).
    pub fn is_step_up(&self) -> bool {
        self.outcome == Outcome::StepUp
    }

    /// Whether the request is let through in enforce mode.
    pub fn allows(&self) -> bool {
        self.status == 200
    }
}

/// Everything the HTTP context needs to act on a request and to write its decision record.
#[derive(Debug)]
pub struct Evaluation<'a> {
    pub verdict: Verdict,
    /// The verified agent, if any.
    pub agent: Option<Agent>,
    /// The tool the request reaches (catalog id).
    pub tool: Option<&'a str>,
    pub method: &'a str,
    pub host: &'a str,
    /// The normalized path without query; the raw path (query cut off) when it could not be normalized.
    pub path: String,
    /// The new `:path` when normalization changed it (what is matched is what is forwarded).
    pub rewrite_path: Option<String>,
    /// The tool as an index into the deciding bundle (for step-up and record lookups).
    pub tool_idx: Option<ToolIdx>,
    /// Approvals, exceptions, shadow rules and arguments, for the record.
    pub gov: Governance,
}

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
}

/// The accepted approval of a step-up call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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

/// The exception rule that allowed a request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExceptionRecord {
    pub ticket: String,
    pub approver: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// What the bundle's shadow rules would have decided, when it differs from the enforced decision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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

impl ExceptionRecord {
    /// The exception behind an `allowed_by_exception` verdict.
    pub fn for_verdict(bundle: &CompiledBundle, v: &Verdict) -> Option<ExceptionRecord> {
        if v.reason_kind != Reason::AllowedByException {
            return None;
        }
        let e = bundle.exception_of(v.rule.as_deref()?)?;
        Some(ExceptionRecord {
            ticket: e.ticket.to_string(),
            approver: e.approver.to_string(),
            expires_at: warden_core::time::format_rfc3339(e.expires_at),
        })
    }
}

impl ApprovalRecord {
    pub fn new(a: &warden_core::approval::VerifiedApproval) -> ApprovalRecord {
        ApprovalRecord {
            id: a.id.clone(),
            approver: a.approver.clone(),
            approved_by: a.approved_by.clone(),
            expires_at: warden_core::time::format_rfc3339(a.expires_at),
        }
    }
}

/// Evaluates one request at `now` (seconds since the epoch), without an mTLS peer and without a token cache.
pub fn evaluate<'a>(active: Option<&'a Active>, config: &Config, req: &RequestHeaders<'a>, now: i64) -> Evaluation<'a> {
    evaluate_with(active, config, req, None, None, now)
}

/// Evaluates one request at `now`: `peer` is the connection's mTLS peer (sender binding), `cache` the VM's token
/// cache (hits skip signature verification only).
pub fn evaluate_with<'a>(
    active: Option<&'a Active>,
    config: &Config,
    req: &RequestHeaders<'a>,
    peer: Option<&PeerIdentity>,
    mut cache: Option<&mut TokenCache>,
    now: i64,
) -> Evaluation<'a> {
    let raw_path = req.path.or_empty();
    let normalized = match req.path {
        Field::Present(p) => Some(path::normalize(p)),
        Field::Missing | Field::Unreadable => None,
    };
    let mut ev = Evaluation {
        verdict: Verdict::refuse(Reason::NoActiveBundle, Reason::NoActiveBundle.code(), None),
        agent: None,
        tool: None,
        method: req.method.or_empty(),
        host: req.authority.or_empty(),
        path: match &normalized {
            Some(Ok(n)) => n.path.clone(),
            _ => raw_path.split('?').next().unwrap_or_default().to_string(),
        },
        rewrite_path: match &normalized {
            Some(Ok(n)) if !n.is_request_path(raw_path) => Some(n.request_path()),
            _ => None,
        },
        tool_idx: None,
        gov: Governance::default(),
    };

    let Some(active) = active else { return ev };
    let bundle: &'a CompiledBundle = &active.bundle;
    let revision = Some(bundle.revision);
    let grace = i64::try_from(config.bundle_grace_seconds).unwrap_or(i64::MAX);
    if now > bundle.expires_at.saturating_add(grace) {
        ev.verdict = Verdict::refuse(Reason::BundleExpired, Reason::BundleExpired.code(), revision);
        return ev;
    }
    let (Field::Present(method), Field::Present(host), Some(normalized)) = (req.method, req.authority, normalized)
    else {
        ev.verdict = Verdict::refuse(Reason::BadRequest, Reason::BadRequest.code(), revision);
        return ev;
    };
    let normalized = match normalized {
        Ok(n) => n,
        Err(e) => {
            ev.verdict = Verdict::refuse(Reason::BadRequest, e.code(), revision);
            return ev;
        }
    };

    let identity = match req.token {
        TokenHeader::Absent => Identity::Missing,
        TokenHeader::Repeated => Identity::Invalid(TokenFailure::Ambiguous),
        TokenHeader::One(value) => match std::str::from_utf8(value) {
            Err(_) => Identity::Invalid(TokenFailure::Malformed),
            Ok(value) => match token_in(value, &config.token_header) {
                Err(failure) => Identity::Invalid(failure),
                Ok(token) => {
                    let verified = match cache.as_deref_mut() {
                        Some(c) => c.verify(bundle, token, peer, now),
                        None => identity::verify_presented(&bundle.issuers, token, peer, now),
                    };
                    match verified {
                        Ok(agent) => with_txn_token(bundle, config, req.txn_token, agent, cache, now),
                        Err(failure) => Identity::Invalid(failure),
                    }
                }
            },
        },
    };
    let tool = bundle.resolve_http(host, method, &normalized.path);
    let facts = Facts { environment: config.environment.clone(), identity, tool };
    let decision = decide(bundle, &facts, now);
    ev.gov.shadow = decide::shadow(bundle, &facts, None, now).map(|d| ShadowRecord::from_decision(&d));

    ev.verdict = Verdict::from_decision(decision);
    ev.gov.exception = ExceptionRecord::for_verdict(bundle, &ev.verdict);
    ev.tool = tool.map(|t| bundle.tool_id(t));
    ev.tool_idx = tool;
    if let Identity::Verified(agent) = facts.identity {
        ev.agent = Some(agent);
    }
    ev
}

/// Adds the Transaction Token's task context to a verified agent. A Transaction Token that is repeated, unreadable
/// or refused makes the whole identity invalid (`txn_token_*`): task context is never silently dropped.
fn with_txn_token(
    bundle: &CompiledBundle,
    config: &Config,
    header: TokenHeader<'_>,
    mut agent: Agent,
    cache: Option<&mut TokenCache>,
    now: i64,
) -> Identity {
    let invalid = |f: TxnFailure| Identity::Invalid(TokenFailure::Txn(f));
    let value = match header {
        TokenHeader::Absent => return Identity::Verified(agent),
        TokenHeader::Repeated => return invalid(TxnFailure::Ambiguous),
        TokenHeader::One(value) => value,
    };
    let Ok(value) = std::str::from_utf8(value) else { return invalid(TxnFailure::Malformed) };
    let Ok(token) = token_in(value, &config.txn_token_header) else { return invalid(TxnFailure::Malformed) };
    let task = match cache {
        Some(c) => c.verify_txn_token(bundle, token, &agent, now),
        None => identity::verify_txn_token(&bundle.issuers, token, &agent, now),
    };
    match task {
        Ok(task) => {
            agent.task = Some(task);
            Identity::Verified(agent)
        }
        Err(failure) => Identity::Invalid(failure),
    }
}

/// The token in a token header value: `Bearer <token>` ([`identity::bearer_token`]). A header other than
/// `authorization` may instead carry the bare token (no spaces, visible ASCII).
pub fn token_in<'v>(value: &'v str, token_header: &str) -> Result<&'v str, TokenFailure> {
    if token_header == "authorization" || value.contains(' ') {
        return identity::bearer_token(value);
    }
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenFailure::Malformed);
    }
    Ok(value)
}
