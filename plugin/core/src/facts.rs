//! Request facts: everything `decide` looks at, gathered once per request by the filter (or the CLI, or a bench).

use crate::compile::ToolIdx;

/// What the gateway knows about one request when it decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// The environment label of this gateway (plugin configuration), e.g. `prod`.
    pub environment: String,
    /// The verified identity of the caller, or why there is none.
    pub identity: Identity,
    /// The tool the request reaches, resolved against the bundle's catalog (`None`: no tool matched).
    pub tool: Option<ToolIdx>,
}

/// The caller's identity as established from its token(s).
#[derive(Debug, Clone, PartialEq)]
pub enum Identity {
    /// No token was presented.
    Missing,
    /// A token was presented and refused; the code says which check failed.
    Invalid(TokenFailure),
    /// A token verified against one of the bundle's issuers.
    Verified(Agent),
}

/// A verified agent and its task context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// `agent.id`: the workload identity (e.g. `spiffe://acme.example/agents/support/bot-1`).
    pub id: String,
    /// `agent.trust_domain`: the SPIFFE trust domain when `id` is a SPIFFE ID, else the URL host or empty.
    pub trust_domain: String,
    /// The bundle issuer id that vouched for the token.
    pub issuer: String,
    /// The token's `jti`, if any.
    pub token_id: Option<String>,
    /// The token's expiry (seconds since the epoch).
    pub expires_at: i64,
    /// Task context, when the token carries it.
    pub task: Option<Task>,
}

/// Task context of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: String,
    pub purpose: Option<String>,
    /// Seconds since the epoch; a task past its expiry is denied.
    pub expires_at: Option<i64>,
}

/// Why a token was refused. Stable reason codes, used in replies, logs and tests. Never carries token contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenFailure {
    /// Not three base64url segments, bad base64, bad JSON header or payload.
    Malformed,
    /// Over the size limit.
    TooLarge,
    /// The `iss` claim names no issuer the bundle trusts.
    UnknownIssuer,
    /// The `alg` is not in the issuer's allowlist (includes `none` and HMAC).
    AlgorithmNotAllowed,
    /// The `kid` is missing or names no key of the issuer.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// `exp` passed (beyond the skew).
    Expired,
    /// `nbf` in the future (beyond the skew).
    NotYetValid,
    /// `iat` in the future (beyond the skew).
    IssuedInFuture,
    /// `exp - iat` over the issuer's maximum.
    LifetimeTooLong,
    /// `aud` names none of the issuer's audiences.
    WrongAudience,
    /// A claim the profile requires is absent or has the wrong type.
    MissingClaim,
    /// More than one value for the token header.
    Ambiguous,
}

impl TokenFailure {
    /// The stable reason code.
    pub fn code(self) -> &'static str {
        match self {
            TokenFailure::Malformed => "token_malformed",
            TokenFailure::TooLarge => "token_too_large",
            TokenFailure::UnknownIssuer => "token_unknown_issuer",
            TokenFailure::AlgorithmNotAllowed => "token_algorithm_not_allowed",
            TokenFailure::UnknownKey => "token_unknown_key",
            TokenFailure::BadSignature => "token_bad_signature",
            TokenFailure::Expired => "token_expired",
            TokenFailure::NotYetValid => "token_not_yet_valid",
            TokenFailure::IssuedInFuture => "token_issued_in_future",
            TokenFailure::LifetimeTooLong => "token_lifetime_too_long",
            TokenFailure::WrongAudience => "token_wrong_audience",
            TokenFailure::MissingClaim => "token_missing_claim",
            TokenFailure::Ambiguous => "token_ambiguous",
        }
    }
}
