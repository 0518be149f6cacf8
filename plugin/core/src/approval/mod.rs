//! Step-up approvals: the JWTs from trusted approval services that let one `step_up` call through.
//!
//! # Approvers
//!
//! The bundle's `approvers` ([`crate::bundle::Approver`]) are checked and their JWKS parsed once, at compile time,
//! into an [`ApproverSet`] held by the [`CompiledBundle`], with the same key code as the agent-token issuers
//! (`identity`): every key needs a `kid`, only asymmetric algorithms, each key restricted to the algorithms its type
//! fits. The request path never parses a key.
//!
//! # The approval token
//!
//! A JWS compact serialization, header `alg` (one of the approver's `algorithms`), `kid` (required) and `typ`
//! exactly [`APPROVAL_TYP`]. Claims: `iss` (selects the approver), `sub` (optional: who approved, recorded as
//! `approved_by`), `jti` (required, 1 to 256 bytes: the filter makes an approval single-use per gateway process),
//! `iat` and `exp` (required integers), `nbf` (optional integer), `agent`, `task` (a string when the call has a
//! task, absent or null when it has none), `tool`, `arguments_digest` (64 lower-case hex: SHA-256 of the canonical
//! JSON arguments of an MCP call, [`crate::args::arguments_digest`], or of the raw body of a plain HTTP call,
//! [`body_digest`]), `head_digest` (optional, 64 lower-case hex: [`HttpBinding::head_digest`] of a plain HTTP call,
//! its request without the body; required where the head is decided before the body, see below), and
//! `decision_id` (optional: the step-up decision it answers; recorded, not checked).
//!
//! # Verification order ([`verify`])
//!
//! The first failing check names the [`ApprovalFailure`]:
//! 1. structure: at most [`crate::identity::MAX_TOKEN_BYTES`], three unpadded base64url segments, JSON-object header
//!    and payload without duplicate claim names, no `crit` (`approval_malformed`);
//! 2. header `typ` is [`APPROVAL_TYP`] (`approval_type`);
//! 3. the *unverified* `iss` picks the approver (`approval_untrusted_issuer`, also when `iss` is missing);
//! 4. `alg` among the approver's algorithms and fitting the key (`approval_algorithm`); `kid` present and one of the
//!    approver's keys (`approval_unknown_key`);
//! 5. the signature (`approval_bad_signature`);
//! 6. the claims above present with their types (`approval_missing_claim`);
//! 7. `exp` (`approval_expired` once `now >= exp + skew`), `iat` and `nbf` (`approval_not_yet_valid` when later than
//!    `now + skew`), `exp - iat` at most the rule's effective limit, never above the approver's
//!    `max_approval_age_seconds` (`approval_lifetime_too_long`);
//! 8. the approver is one of the rule's `step_up.approvers` (`approval_approver_not_allowed`);
//! 9. the binding to this call: `agent`, `task`, `tool`, `arguments_digest`, `head_digest` when present
//!    (`approval_wrong_agent`, `approval_wrong_task`, `approval_wrong_tool`, `approval_wrong_arguments`).
//!
//! # The head, before the body
//!
//! Without `allow_on_headers_stop_iteration` a filter cannot read a body without letting the request head go
//! upstream. A plain HTTP step-up call with a body is then decided twice: at the header phase on its head
//! ([`CallBinding::arguments_digest`] `None`): everything above but `arguments_digest`, and `head_digest` is
//! required (`approval_head_unbound` without it) and must match; and at the end of the body on everything. Nothing
//! reaches the upstream before the first check passes.
//!
//! Single use (`approval_replayed`), a repeated approval header (`approval_ambiguous`) and a failing replay store
//! (`approval_store_unavailable`) are the filter's checks; their codes are here so that every approval refusal has
//! one list ([`ApprovalFailure::ALL`]).

pub mod used;

use std::collections::HashMap;
use std::fmt;

use serde_json::Value;

use crate::bundle::Approver;
use crate::envelope::{sha256_hex, sign_typed, SigningKey};
use crate::jose::{
    compile_algorithms, compile_keys, parse_algorithm, Alg, IssuerKey, Jwt, KeyOwner, MAX_CLOCK_SKEW_SECONDS,
    MAX_TOKEN_BYTES,
};
use crate::vocab::valid_id;
use crate::vocab::ValidationError;

/// The `typ` header of an approval token.
pub const APPROVAL_TYP: &str = "warden-approval+jwt";

/// Largest `max_approval_age_seconds` an approver may configure (one day).
pub const MAX_APPROVAL_AGE_SECONDS: u64 = 86_400;

/// Longest accepted `jti`, in bytes.
pub const MAX_JTI_BYTES: usize = 256;

/// Why an approval was refused. [`ApprovalFailure::code`] is the stable code (every one starts with `approval_`),
/// used as the decision's reason code in replies, records and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApprovalFailure {
    /// Not a well-formed JWS with JSON-object header and claims (or too large).
    Malformed,
    /// The header's `typ` is not [`APPROVAL_TYP`].
    WrongType,
    /// No approver of the bundle has this `iss` (or `iss` is missing).
    UntrustedIssuer,
    /// `alg` is not one of the approver's algorithms, or does not fit the key.
    Algorithm,
    /// `kid` is missing or names no key of the approver.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// A required claim is missing or has the wrong type.
    MissingClaim,
    /// Past `exp` (plus the approver's clock skew).
    Expired,
    /// `iat` or `nbf` is in the future (beyond the skew).
    NotYetValid,
    /// `exp - iat` is longer than the rule's or the approver's limit.
    LifetimeTooLong,
    /// The approver is not one the rule accepts.
    ApproverNotAllowed,
    /// Approved for another agent.
    WrongAgent,
    /// Approved for another task (or for a task when the call has none).
    WrongTask,
    /// Approved for another tool.
    WrongTool,
    /// Approved for other arguments (or another request body, or another request head).
    WrongArguments,
    /// The call's head is decided before its body and the approval has no `head_digest` to decide it on.
    HeadUnbound,
    /// The approval header was repeated (the filter's check).
    Ambiguous,
    /// This `jti` was used before (the filter's check).
    Replayed,
    /// The store of used `jti`s could not be read or written (the filter's check).
    StoreUnavailable,
}

impl ApprovalFailure {
    /// Every failure, in check order (the filter's own last).
    pub const ALL: &'static [ApprovalFailure] = &[
        ApprovalFailure::Malformed,
        ApprovalFailure::WrongType,
        ApprovalFailure::UntrustedIssuer,
        ApprovalFailure::Algorithm,
        ApprovalFailure::UnknownKey,
        ApprovalFailure::BadSignature,
        ApprovalFailure::MissingClaim,
        ApprovalFailure::Expired,
        ApprovalFailure::NotYetValid,
        ApprovalFailure::LifetimeTooLong,
        ApprovalFailure::ApproverNotAllowed,
        ApprovalFailure::WrongAgent,
        ApprovalFailure::WrongTask,
        ApprovalFailure::WrongTool,
        ApprovalFailure::WrongArguments,
        ApprovalFailure::HeadUnbound,
        ApprovalFailure::Ambiguous,
        ApprovalFailure::Replayed,
        ApprovalFailure::StoreUnavailable,
    ];

    /// Stable failure code.
    pub fn code(self) -> &'static str {
        match self {
            ApprovalFailure::Malformed => "approval_malformed",
            ApprovalFailure::WrongType => "approval_type",
            ApprovalFailure::UntrustedIssuer => "approval_untrusted_issuer",
            ApprovalFailure::Algorithm => "approval_algorithm",
            ApprovalFailure::UnknownKey => "approval_unknown_key",
            ApprovalFailure::BadSignature => "approval_bad_signature",
            ApprovalFailure::MissingClaim => "approval_missing_claim",
            ApprovalFailure::Expired => "approval_expired",
            ApprovalFailure::NotYetValid => "approval_not_yet_valid",
            ApprovalFailure::LifetimeTooLong => "approval_lifetime_too_long",
            ApprovalFailure::ApproverNotAllowed => "approval_approver_not_allowed",
            ApprovalFailure::WrongAgent => "approval_wrong_agent",
            ApprovalFailure::WrongTask => "approval_wrong_task",
            ApprovalFailure::WrongTool => "approval_wrong_tool",
            ApprovalFailure::WrongArguments => "approval_wrong_arguments",
            ApprovalFailure::HeadUnbound => "approval_head_unbound",
            ApprovalFailure::Ambiguous => "approval_ambiguous",
            ApprovalFailure::Replayed => "approval_replayed",
            ApprovalFailure::StoreUnavailable => "approval_store_unavailable",
        }
    }
}

impl fmt::Display for ApprovalFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl std::error::Error for ApprovalFailure {}

/// What an approval must be bound to: the call being decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallBinding<'a> {
    /// The verified agent id.
    pub agent: &'a str,
    /// The task id, when the call has task context.
    pub task: Option<&'a str>,
    /// The catalog tool id.
    pub tool: &'a str,
    /// [`crate::args::arguments_digest`] for an MCP call, [`HttpBinding::digest`] for a plain HTTP call; `None` at
    /// the header phase of a call whose body is still to come (only the head is checked, on `head_digest`).
    pub arguments_digest: Option<&'a str>,
    /// [`HttpBinding::head_digest`] for a plain HTTP call; `None` for an MCP call.
    pub head_digest: Option<&'a str>,
}

/// An approval that verified and binds the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedApproval {
    /// The `jti` (the filter refuses it a second time).
    pub id: String,
    /// The id of the approver (the bundle's `approvers[].id`) whose key signed it.
    pub approver: String,
    /// The `sub` claim: who approved.
    pub approved_by: Option<String>,
    /// The `exp` claim, seconds since the epoch.
    pub expires_at: i64,
    /// The `decision_id` claim: the step-up decision it answers.
    pub decision_id: Option<String>,
}

/// SHA-256 of a raw request body as lower-case hex.
pub fn body_digest(bytes: &[u8]) -> String {
    sha256_hex(bytes)
}

/// What the approval of a plain HTTP step-up call binds: the request as it goes upstream (the `binding` object of
/// the step-up reply). Its [`digest`](HttpBinding::digest) is the call's `arguments_digest`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpBinding {
    /// The request method.
    pub method: String,
    /// `:authority`, lower case.
    pub host: String,
    /// The normalized path, then `?` and the query verbatim when the request had one: what is forwarded.
    pub path: String,
    /// The `content-type` value as sent; empty when absent.
    pub content_type: String,
    /// Lower-case hex SHA-256 of the body (of the empty string when there is none); absent when the call is
    /// decided at its head before the body arrives (the approval service takes it from the body it is shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_sha256: Option<String>,
}

impl HttpBinding {
    /// Lower-case hex SHA-256 of the binding text: `warden.http-call/v1`, then method, host, path, content type and
    /// body digest, each line ending in `\n` (documented in `policies/README.md`, "Step-up approvals"). None of
    /// the parts can hold a line break (header values and the normalized path cannot).
    /// `None` while the body digest is not known.
    pub fn digest(&self) -> Option<String> {
        let body = self.body_sha256.as_deref()?;
        let text = format!(
            "warden.http-call/v1\n{}\n{}\n{}\n{}\n{}\n",
            self.method, self.host, self.path, self.content_type, body
        );
        Some(sha256_hex(text.as_bytes()))
    }

    /// Lower-case hex SHA-256 of the head's binding text: `warden.http-head/v1`, then method, host, path and
    /// content type, each line ending in `\n`: what an approval's `head_digest` binds (documented with
    /// [`digest`](HttpBinding::digest)).
    pub fn head_digest(&self) -> String {
        let text =
            format!("warden.http-head/v1\n{}\n{}\n{}\n{}\n", self.method, self.host, self.path, self.content_type);
        sha256_hex(text.as_bytes())
    }

    /// The binding with this body's digest.
    pub fn with_body(&self, body: &[u8]) -> HttpBinding {
        HttpBinding { body_sha256: Some(body_digest(body)), ..self.clone() }
    }
}

/// What an approval binds to and who signs it: the claims [`claims`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalGrant<'a> {
    /// The approver's `iss`.
    pub iss: &'a str,
    /// Who approved (`sub`), if said.
    pub approved_by: Option<&'a str>,
    pub jti: &'a str,
    pub issued_at: i64,
    pub expires_at: i64,
    pub agent: &'a str,
    pub task: Option<&'a str>,
    pub tool: &'a str,
    pub arguments_digest: &'a str,
    /// A plain HTTP call's [`HttpBinding::head_digest`] (the step-up reply's `head_digest`).
    pub head_digest: Option<&'a str>,
    /// The step-up decision it answers (recorded, not checked).
    pub decision_id: Option<&'a str>,
}

/// The claims of an approval token (see the module documentation), in the order they are documented.
pub fn claims(g: &ApprovalGrant<'_>) -> Value {
    let mut c = serde_json::Map::new();
    c.insert("iss".into(), g.iss.into());
    if let Some(who) = g.approved_by {
        c.insert("sub".into(), who.into());
    }
    c.insert("jti".into(), g.jti.into());
    c.insert("iat".into(), g.issued_at.into());
    c.insert("exp".into(), g.expires_at.into());
    c.insert("agent".into(), g.agent.into());
    if let Some(task) = g.task {
        c.insert("task".into(), task.into());
    }
    c.insert("tool".into(), g.tool.into());
    c.insert("arguments_digest".into(), g.arguments_digest.into());
    if let Some(head) = g.head_digest {
        c.insert("head_digest".into(), head.into());
    }
    if let Some(id) = g.decision_id {
        c.insert("decision_id".into(), id.into());
    }
    Value::Object(c)
}

/// Mints an approval token: `claims` (a JSON object with the claims of the module doc) signed by `key` with the
/// header `{"alg","kid","typ":"warden-approval+jwt"}`. For `warden approve`, tests and demos.
pub fn mint(claims: &Value, key: &SigningKey) -> String {
    sign_typed(claims.to_string().as_bytes(), key, APPROVAL_TYP)
}

/// The trusted approvers of a bundle with their keys parsed once at compile time.
#[derive(Debug, Default)]
pub struct ApproverSet {
    approvers: Vec<CompiledApprover>,
    by_iss: HashMap<String, usize>,
}

pub(crate) struct CompiledApprover {
    pub(crate) id: String,
    pub(crate) iss: String,
    algorithms: Vec<Alg>,
    keys: HashMap<String, IssuerKey>,
    /// `max_approval_age_seconds`.
    pub(crate) max_age: u64,
    skew: i64,
}

impl fmt::Debug for CompiledApprover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("Approver")
            .field("id", &self.id)
            .field("iss", &self.iss)
            .field("algorithms", &self.algorithms)
            .field("kids", &kids)
            .field("max_age", &self.max_age)
            .field("skew", &self.skew)
            .finish_non_exhaustive()
    }
}

impl ApproverSet {
    /// Validates the bundle's approvers and parses their keys once. Reports every problem, each with its location
    /// (`/approvers/1/jwks/keys/0`).
    pub fn compile(approvers: &[Approver]) -> Result<ApproverSet, Vec<ValidationError>> {
        let mut errors = Vec::new();
        let mut set = ApproverSet::default();
        let mut ids: HashMap<&str, usize> = HashMap::new();
        for (i, approver) in approvers.iter().enumerate() {
            let owner_at = format!("/approvers/{i}");
            let at = |field: &str| format!("{owner_at}/{field}");
            let mut err = |location: String, message: String| errors.push(ValidationError { location, message });
            if !valid_id(&approver.id) {
                err(at("id"), format!("bad approver id {:?}: use [a-z0-9][a-z0-9._-]*", approver.id));
            } else if let Some(first) = ids.get(approver.id.as_str()) {
                err(at("id"), format!("duplicate approver id {:?} (also /approvers/{first}/id)", approver.id));
            } else {
                ids.insert(&approver.id, i);
            }
            if approver.iss.is_empty() {
                err(at("iss"), "must not be empty".to_string());
            } else if let Some(first) = set.by_iss.get(&approver.iss) {
                err(at("iss"), format!("duplicate iss {:?} (also /approvers/{first}/iss)", approver.iss));
            }
            let owner = KeyOwner { at: &owner_at, noun: "approver", signs: "approvals" };
            let algorithms = compile_algorithms(owner, &approver.algorithms, &mut err);
            if approver.max_approval_age_seconds == 0 || approver.max_approval_age_seconds > MAX_APPROVAL_AGE_SECONDS {
                err(
                    at("max_approval_age_seconds"),
                    format!("must be 1 to {MAX_APPROVAL_AGE_SECONDS}, found {}", approver.max_approval_age_seconds),
                );
            }
            if approver.clock_skew_seconds > MAX_CLOCK_SKEW_SECONDS {
                err(
                    at("clock_skew_seconds"),
                    format!("must be at most {MAX_CLOCK_SKEW_SECONDS}, found {}", approver.clock_skew_seconds),
                );
            }
            let skew = i64::try_from(approver.clock_skew_seconds.min(MAX_CLOCK_SKEW_SECONDS)).unwrap_or(0);
            let keys = compile_keys(owner, &approver.jwks.keys, &approver.algorithms, &algorithms, &mut err);
            if !approver.iss.is_empty() && !set.by_iss.contains_key(&approver.iss) {
                set.by_iss.insert(approver.iss.clone(), set.approvers.len());
            }
            set.approvers.push(CompiledApprover {
                id: approver.id.clone(),
                iss: approver.iss.clone(),
                algorithms,
                keys,
                max_age: approver.max_approval_age_seconds.min(MAX_APPROVAL_AGE_SECONDS),
                skew,
            });
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }

    /// Number of approvers.
    pub fn len(&self) -> usize {
        self.approvers.len()
    }

    /// Whether the bundle trusts no approver.
    pub fn is_empty(&self) -> bool {
        self.approvers.is_empty()
    }

    /// The approver ids, in bundle order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.approvers.iter().map(|a| a.id.as_str())
    }

    pub(crate) fn get(&self, index: u32) -> Option<&CompiledApprover> {
        self.approvers.get(index as usize)
    }
}

/// The claims of a signed approval, checked for presence and type (step 6).
struct ApprovalClaims<'c> {
    jti: &'c str,
    sub: Option<&'c str>,
    iat: i64,
    exp: i64,
    nbf: Option<i64>,
    agent: &'c str,
    task: Option<&'c str>,
    tool: &'c str,
    arguments_digest: &'c str,
    head_digest: Option<&'c str>,
    decision_id: Option<&'c str>,
}

fn text(v: Option<&Value>) -> Result<Option<&str>, ApprovalFailure> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApprovalFailure::MissingClaim),
    }
}

fn required_text(v: Option<&Value>) -> Result<&str, ApprovalFailure> {
    text(v)?.filter(|s| !s.is_empty()).ok_or(ApprovalFailure::MissingClaim)
}

fn integer(v: Option<&Value>) -> Result<Option<i64>, ApprovalFailure> {
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(ApprovalFailure::MissingClaim),
        Some(_) => Err(ApprovalFailure::MissingClaim),
    }
}

fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn read_claims<'c>(
    claims: &'c std::collections::BTreeMap<String, Value>,
    call: &CallBinding<'_>,
) -> Result<ApprovalClaims<'c>, ApprovalFailure> {
    let jti = required_text(claims.get("jti"))?;
    if jti.len() > MAX_JTI_BYTES {
        return Err(ApprovalFailure::MissingClaim);
    }
    let sub = text(claims.get("sub"))?;
    let iat = integer(claims.get("iat"))?.ok_or(ApprovalFailure::MissingClaim)?;
    let exp = integer(claims.get("exp"))?.ok_or(ApprovalFailure::MissingClaim)?;
    let nbf = integer(claims.get("nbf"))?;
    let agent = required_text(claims.get("agent"))?;
    let task = match claims.get("task") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(ApprovalFailure::MissingClaim),
    };
    if call.task.is_some() && task.is_none() {
        return Err(ApprovalFailure::MissingClaim);
    }
    let tool = required_text(claims.get("tool"))?;
    let arguments_digest = required_text(claims.get("arguments_digest"))?;
    if !is_digest(arguments_digest) {
        return Err(ApprovalFailure::MissingClaim);
    }
    let head_digest = text(claims.get("head_digest"))?;
    if head_digest.is_some_and(|h| !is_digest(h)) {
        return Err(ApprovalFailure::MissingClaim);
    }
    let decision_id = text(claims.get("decision_id"))?;
    Ok(ApprovalClaims { jti, sub, iat, exp, nbf, agent, task, tool, arguments_digest, head_digest, decision_id })
}

/// What a `step_up` rule accepts, compiled: its approvers and the longest approval lifetime.
#[derive(Debug)]
pub(crate) struct StepUpPolicy {
    /// Indexes into the bundle's [`ApproverSet`], in the rule's order.
    pub(crate) approvers: Box<[u32]>,
    /// Effective longest approval lifetime: the rule's `max_age_seconds`, else the smallest of its approvers'.
    pub(crate) max_age: u64,
}

/// Verifies an approval token presented for a call that a `step_up` rule (`policy`; `None`: not a step-up rule,
/// no approver is allowed) sent to step-up. See the module doc for the order of checks; `now` is seconds since the
/// epoch, from the caller's clock. [`crate::compile::CompiledBundle::verify_approval`] is this for a rule id.
pub(crate) fn verify(
    approvers: &ApproverSet,
    policy: Option<&StepUpPolicy>,
    token: &str,
    call: &CallBinding<'_>,
    now: i64,
) -> Result<VerifiedApproval, ApprovalFailure> {
    use ApprovalFailure as F;
    // 1. structure
    if token.len() > MAX_TOKEN_BYTES {
        return Err(F::Malformed);
    }
    let Jwt { header, claims, signature, signing_input, .. } = Jwt::read(token).ok_or(F::Malformed)?;

    // 2. typ
    if header.typ.as_deref() != Some(APPROVAL_TYP) {
        return Err(F::WrongType);
    }

    // 3. approver, by the unverified iss
    let iss = match claims.get("iss") {
        Some(Value::String(s)) => s.as_str(),
        _ => return Err(F::UntrustedIssuer),
    };
    let index = *approvers.by_iss.get(iss).ok_or(F::UntrustedIssuer)?;
    let approver = approvers.approvers.get(index).ok_or(F::UntrustedIssuer)?;

    // 4. alg, kid
    let alg = parse_algorithm(&header.alg).filter(|a| approver.algorithms.contains(a)).ok_or(F::Algorithm)?;
    let key = header.kid.as_deref().and_then(|kid| approver.keys.get(kid)).ok_or(F::UnknownKey)?;
    if !key.algorithms.contains(&alg) {
        return Err(F::Algorithm);
    }

    // 5. signature
    if signature.is_empty() || !key.key.verify(alg, signing_input, &signature) {
        return Err(F::BadSignature);
    }

    // 6. claims
    let c = read_claims(&claims, call)?;

    // 7. times and lifetime
    let skew = approver.skew;
    if now >= c.exp.saturating_add(skew) {
        return Err(F::Expired);
    }
    let future = now.saturating_add(skew);
    if c.iat > future || c.nbf.is_some_and(|nbf| nbf > future) {
        return Err(F::NotYetValid);
    }
    let requirement = policy;
    let limit = requirement.map_or(approver.max_age, |s| s.max_age.min(approver.max_age));
    if c.exp.saturating_sub(c.iat) > i64::try_from(limit).unwrap_or(i64::MAX) {
        return Err(F::LifetimeTooLong);
    }

    // 8. approver allowed for the rule
    let approver_index = u32::try_from(index).map_err(|_| F::ApproverNotAllowed)?;
    if !requirement.is_some_and(|s| s.approvers.contains(&approver_index)) {
        return Err(F::ApproverNotAllowed);
    }

    // 9. binding
    if c.agent != call.agent {
        return Err(F::WrongAgent);
    }
    if c.task != call.task {
        return Err(F::WrongTask);
    }
    if c.tool != call.tool {
        return Err(F::WrongTool);
    }
    if call.arguments_digest.is_some_and(|d| d != c.arguments_digest) {
        return Err(F::WrongArguments);
    }
    match (c.head_digest, call.head_digest) {
        // Decided on the head alone: the approval must say which head it approves.
        (None, _) if call.arguments_digest.is_none() => return Err(F::HeadUnbound),
        (None, _) => {}
        (Some(h), Some(head)) if h == head => {}
        // Another head, or a head claim on a call that has none (MCP).
        (Some(_), _) => return Err(F::WrongArguments),
    }
    Ok(VerifiedApproval {
        id: c.jti.to_string(),
        approver: approver.id.clone(),
        approved_by: c.sub.map(str::to_string),
        expires_at: c.exp,
        decision_id: c.decision_id.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Bundle;
    use crate::compile::compile;
    use crate::compile::CompiledBundle;
    use crate::envelope::{sign_with_header, Algorithm as SigningAlgorithm};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;
    const AGENT: &str = "spiffe://acme.example/agents/finance/bot";
    const TOOL: &str = "pay.refund";

    struct Keys {
        ed: SigningKey,
        es: SigningKey,
        /// Same kid as `ed`, another secret.
        impostor: SigningKey,
    }

    fn keys() -> Keys {
        Keys {
            ed: SigningKey::generate(SigningAlgorithm::EdDSA, "ed-1").unwrap(),
            es: SigningKey::generate(SigningAlgorithm::ES256, "es-1").unwrap(),
            impostor: SigningKey::generate(SigningAlgorithm::EdDSA, "ed-1").unwrap(),
        }
    }

    /// Approvers `ed` (EdDSA, 300 s) and `es` (ES256, 600 s, skew 10); rules `refund` (both approvers, rule limit
    /// 200 s), `refund-es` (only `es`, the approver's limit), `other` (an allow rule).
    fn bundle(k: &Keys) -> CompiledBundle {
        let b: Bundle = serde_json::from_value(json!({
            "format": "warden.bundle/v1", "revision": 3,
            "issued_at": "2026-11-01T00:00:00Z", "expires_at": "2027-11-01T00:00:00Z",
            "owner": "sec", "authority": "policy.example",
            "approvers": [
                {"id": "ed", "iss": "https://ed.example", "jwks": {"keys": [k.ed.public_jwk()]},
                 "algorithms": ["EdDSA", "ES256"], "max_approval_age_seconds": 300},
                {"id": "es", "iss": "https://es.example", "jwks": {"keys": [k.es.public_jwk()]},
                 "algorithms": ["ES256"], "max_approval_age_seconds": 600, "clock_skew_seconds": 10}
            ],
            "tools": [{"id": TOOL, "sensitivity": "payment"}, {"id": "crm.read", "sensitivity": "read"}],
            "rules": [
                {"id": "refund", "effect": "step_up", "tools": [TOOL],
                 "step_up": {"approvers": ["ed", "es"], "max_age_seconds": 200}},
                {"id": "refund-es", "effect": "step_up", "tools": [TOOL], "step_up": {"approvers": ["es"]}},
                {"id": "other", "effect": "allow", "tools": ["crm.read"]}
            ]
        }))
        .unwrap();
        compile(&b).unwrap()
    }

    fn digest() -> String {
        crate::args::arguments_digest(Some(&json!({"amount": 500})))
    }

    fn claims(iss: &str) -> Value {
        json!({
            "iss": iss, "sub": "alice@acme.example", "jti": "appr-1", "iat": NOW - 10, "exp": NOW + 100,
            "agent": AGENT, "task": "task-7", "tool": TOOL, "arguments_digest": digest(), "decision_id": "d-1"
        })
    }

    fn raw(header: Value, payload: &[u8], key: &SigningKey) -> String {
        sign_with_header(header.to_string().as_bytes(), payload, key)
    }

    fn header(key: &SigningKey) -> Value {
        json!({"alg": key.alg().as_str(), "kid": key.kid(), "typ": APPROVAL_TYP})
    }

    fn with(mut v: Value, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
        if let Some(obj) = v.as_object_mut() {
            f(obj);
        }
        v
    }

    #[test]
    fn codes_are_unique_and_prefixed() {
        let codes: Vec<&str> = ApprovalFailure::ALL.iter().map(|f| f.code()).collect();
        let mut unique = codes.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), codes.len());
        assert!(codes.iter().all(|c| c.starts_with("approval_")), "{codes:?}");
        assert_eq!(codes.len(), 19);
        assert_eq!(ApprovalFailure::WrongType.to_string(), "approval_type");
    }

    #[test]
    fn body_digest_is_sha256_hex() {
        assert_eq!(body_digest(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(body_digest(b"{}"), crate::args::arguments_digest(None));
    }

    #[test]
    fn valid_approvals_verify_for_eddsa_and_es256() {
        let k = keys();
        let b = bundle(&k);
        let d = digest();
        let call = CallBinding {
            agent: AGENT,
            task: Some("task-7"),
            tool: TOOL,
            arguments_digest: Some(&d),
            head_digest: None,
        };
        let ok = b.verify_approval("refund", &mint(&claims("https://ed.example"), &k.ed), &call, NOW).unwrap();
        assert_eq!(
            ok,
            VerifiedApproval {
                id: "appr-1".into(),
                approver: "ed".into(),
                approved_by: Some("alice@acme.example".into()),
                expires_at: NOW + 100,
                decision_id: Some("d-1".into()),
            }
        );
        let es = b.verify_approval("refund", &mint(&claims("https://es.example"), &k.es), &call, NOW).unwrap();
        assert_eq!(es.approver, "es");
        // Optional claims absent; no task on either side (absent or null).
        let no_task = CallBinding { task: None, ..call };
        for task in [None, Some(Value::Null)] {
            let c = with(claims("https://es.example"), |o| {
                o.remove("sub");
                o.remove("decision_id");
                o.remove("task");
                if let Some(t) = task {
                    o.insert("task".into(), t);
                }
                o.insert("nbf".into(), json!(NOW));
            });
            let v = b.verify_approval("refund-es", &mint(&c, &k.es), &no_task, NOW).unwrap();
            assert_eq!((v.approved_by, v.decision_id), (None, None));
        }
        // The approver's own limit applies when the rule sets none: 600 s for `es` on `refund-es`.
        let long = with(claims("https://es.example"), |o| {
            o.insert("exp".into(), json!(NOW + 590));
        });
        assert!(b.verify_approval("refund-es", &mint(&long, &k.es), &call, NOW).is_ok());
    }

    #[test]
    fn every_refusal_has_its_code() {
        use ApprovalFailure as F;
        let k = keys();
        let b = bundle(&k);
        let d = digest();
        let call = CallBinding {
            agent: AGENT,
            task: Some("task-7"),
            tool: TOOL,
            arguments_digest: Some(&d),
            head_digest: None,
        };
        let ed = |c: Value| mint(&c, &k.ed);
        let es = |c: Value| mint(&c, &k.es);
        let base = || claims("https://ed.example");
        let set = |name: &'static str, value: Value| with(base(), move |o| drop(o.insert(name.into(), value)));
        let unset = |name: &'static str| with(base(), move |o| drop(o.remove(name)));
        let good = ed(base());
        let (h, p, s) = {
            let mut parts = good.split('.');
            (parts.next().unwrap().to_string(), parts.next().unwrap().to_string(), parts.next().unwrap().to_string())
        };
        let payload = base().to_string();
        // (name, rule, token, call, now, expected)
        let no_task = CallBinding { task: None, ..call };
        let head = HttpBinding {
            method: "POST".into(),
            host: "billing.example".into(),
            path: "/v1/refunds?to=a".into(),
            content_type: "application/json".into(),
            body_sha256: None,
        }
        .head_digest();
        let http_call = CallBinding { head_digest: Some(&head), ..call };
        let at_head = CallBinding { arguments_digest: None, ..http_call };
        let cases: Vec<(&str, &str, String, CallBinding<'_>, i64, F)> = vec![
            ("two segments", "refund", format!("{h}.{p}"), call, NOW, F::Malformed),
            ("four segments", "refund", format!("{good}.x"), call, NOW, F::Malformed),
            ("padded base64", "refund", format!("{h}=.{p}.{s}"), call, NOW, F::Malformed),
            ("header not JSON", "refund", format!("bm90IGpzb24.{p}.{s}"), call, NOW, F::Malformed),
            ("claims not an object", "refund", raw(header(&k.ed), b"[1]", &k.ed), call, NOW, F::Malformed),
            (
                "duplicate claim",
                "refund",
                raw(header(&k.ed), payload.replacen('{', "{\"agent\":\"x\",", 1).as_bytes(), &k.ed),
                call,
                NOW,
                F::Malformed,
            ),
            (
                "crit header",
                "refund",
                raw(with(header(&k.ed), |o| drop(o.insert("crit".into(), json!(["exp"])))), payload.as_bytes(), &k.ed),
                call,
                NOW,
                F::Malformed,
            ),
            ("too large", "refund", "a".repeat(MAX_TOKEN_BYTES + 1), call, NOW, F::Malformed),
            (
                "no typ",
                "refund",
                raw(with(header(&k.ed), |o| drop(o.remove("typ"))), payload.as_bytes(), &k.ed),
                call,
                NOW,
                F::WrongType,
            ),
            (
                "agent token typ",
                "refund",
                raw(with(header(&k.ed), |o| drop(o.insert("typ".into(), json!("at+jwt")))), payload.as_bytes(), &k.ed),
                call,
                NOW,
                F::WrongType,
            ),
            ("bundle typ", "refund", crate::envelope::sign(payload.as_bytes(), &k.ed), call, NOW, F::WrongType),
            ("unknown iss", "refund", ed(set("iss", json!("https://evil.example"))), call, NOW, F::UntrustedIssuer),
            ("no iss", "refund", ed(unset("iss")), call, NOW, F::UntrustedIssuer),
            ("iss not a string", "refund", ed(set("iss", json!(1))), call, NOW, F::UntrustedIssuer),
            // `es` allows only ES256; an EdDSA token claiming to be from it.
            ("alg not allowed", "refund", ed(claims("https://es.example")), call, NOW, F::Algorithm),
            (
                "alg none",
                "refund",
                format!("{}.{p}.", URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": APPROVAL_TYP}).to_string())),
                call,
                NOW,
                F::Algorithm,
            ),
            (
                "alg allowed but not the key's",
                "refund",
                raw(with(header(&k.ed), |o| drop(o.insert("alg".into(), json!("ES256")))), payload.as_bytes(), &k.ed),
                call,
                NOW,
                F::Algorithm,
            ),
            (
                "no kid",
                "refund",
                raw(with(header(&k.ed), |o| drop(o.remove("kid"))), payload.as_bytes(), &k.ed),
                call,
                NOW,
                F::UnknownKey,
            ),
            (
                "unknown kid",
                "refund",
                raw(with(header(&k.ed), |o| drop(o.insert("kid".into(), json!("ed-2")))), payload.as_bytes(), &k.ed),
                call,
                NOW,
                F::UnknownKey,
            ),
            ("signed by another key", "refund", mint(&base(), &k.impostor), call, NOW, F::BadSignature),
            ("empty signature", "refund", format!("{h}.{p}."), call, NOW, F::BadSignature),
            (
                "payload swapped",
                "refund",
                format!("{h}.{}.{s}", URL_SAFE_NO_PAD.encode(set("agent", json!("spiffe://x/y")).to_string())),
                call,
                NOW,
                F::BadSignature,
            ),
            ("no jti", "refund", ed(unset("jti")), call, NOW, F::MissingClaim),
            ("empty jti", "refund", ed(set("jti", json!(""))), call, NOW, F::MissingClaim),
            ("jti too long", "refund", ed(set("jti", json!("j".repeat(257)))), call, NOW, F::MissingClaim),
            ("no iat", "refund", ed(unset("iat")), call, NOW, F::MissingClaim),
            ("no exp", "refund", ed(unset("exp")), call, NOW, F::MissingClaim),
            ("exp not an integer", "refund", ed(set("exp", json!(1.8e9 + 0.5))), call, NOW, F::MissingClaim),
            ("exp a string", "refund", ed(set("exp", json!("1800000100"))), call, NOW, F::MissingClaim),
            ("nbf a string", "refund", ed(set("nbf", json!("now"))), call, NOW, F::MissingClaim),
            ("no agent", "refund", ed(unset("agent")), call, NOW, F::MissingClaim),
            ("no task when the call has one", "refund", ed(unset("task")), call, NOW, F::MissingClaim),
            ("task a number", "refund", ed(set("task", json!(7))), call, NOW, F::MissingClaim),
            ("no tool", "refund", ed(unset("tool")), call, NOW, F::MissingClaim),
            ("no digest", "refund", ed(unset("arguments_digest")), call, NOW, F::MissingClaim),
            (
                "digest upper-case",
                "refund",
                ed(set("arguments_digest", json!(d.to_uppercase()))),
                call,
                NOW,
                F::MissingClaim,
            ),
            ("digest short", "refund", ed(set("arguments_digest", json!(&d[..63]))), call, NOW, F::MissingClaim),
            ("sub a number", "refund", ed(set("sub", json!(1))), call, NOW, F::MissingClaim),
            ("decision_id an object", "refund", ed(set("decision_id", json!({}))), call, NOW, F::MissingClaim),
            // ed: skew 30 (the default). exp + skew <= now: expired.
            ("expired", "refund", ed(base()), call, NOW + 130, F::Expired),
            ("expired, es skew 10", "refund", es(claims("https://es.example")), call, NOW + 110, F::Expired),
            ("iat in the future", "refund", ed(set("iat", json!(NOW + 31))), call, NOW, F::NotYetValid),
            ("nbf in the future", "refund", ed(set("nbf", json!(NOW + 31))), call, NOW, F::NotYetValid),
            // Rule limit 200 s (below ed's 300 s).
            ("longer than the rule allows", "refund", ed(set("exp", json!(NOW + 191))), call, NOW, F::LifetimeTooLong),
            (
                "longer than the approver allows",
                "refund-es",
                es(with(claims("https://es.example"), |o| drop(o.insert("exp".into(), json!(NOW + 591))))),
                call,
                NOW,
                F::LifetimeTooLong,
            ),
            ("approver not on the rule", "refund-es", ed(base()), call, NOW, F::ApproverNotAllowed),
            ("not a step-up rule", "other", ed(base()), call, NOW, F::ApproverNotAllowed),
            ("unknown rule", "nope", ed(base()), call, NOW, F::ApproverNotAllowed),
            ("another agent", "refund", ed(set("agent", json!("spiffe://x/y"))), call, NOW, F::WrongAgent),
            ("another task", "refund", ed(set("task", json!("task-8"))), call, NOW, F::WrongTask),
            ("a task when the call has none", "refund", ed(base()), no_task, NOW, F::WrongTask),
            ("another tool", "refund", ed(set("tool", json!("crm.read"))), call, NOW, F::WrongTool),
            (
                "other arguments",
                "refund",
                ed(set("arguments_digest", json!(crate::args::arguments_digest(Some(&json!({"amount": 501})))))),
                call,
                NOW,
                F::WrongArguments,
            ),
            ("head digest short", "refund", ed(set("head_digest", json!(&d[..63]))), call, NOW, F::MissingClaim),
            ("a head digest on an MCP call", "refund", ed(set("head_digest", json!(d))), call, NOW, F::WrongArguments),
            ("another head", "refund", ed(set("head_digest", json!(d))), http_call, NOW, F::WrongArguments),
            ("another head, at the head", "refund", ed(set("head_digest", json!(d))), at_head, NOW, F::WrongArguments),
            ("no head digest, at the head", "refund", ed(base()), at_head, NOW, F::HeadUnbound),
        ];
        let mut failures = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (name, rule, token, call, now, want) in &cases {
            seen.insert(want.code());
            match b.verify_approval(rule, token, call, *now) {
                Err(got) if got == *want => {}
                got => failures.push(format!("{name}: want {want:?}, got {got:?}")),
            }
        }
        assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
        // Every failure `verify` can return is covered (the last three are the filter's).
        let core: std::collections::BTreeSet<&str> = ApprovalFailure::ALL[..16].iter().map(|f| f.code()).collect();
        assert_eq!(seen, core);

        // The edges: still valid one second before expiry (with skew), at iat = now + skew, at the exact limit.
        for (name, c, now) in [
            ("exp + skew - 1", base(), NOW + 129),
            ("iat at now + skew", set("iat", json!(NOW + 30)), NOW),
            ("lifetime at the rule limit", set("exp", json!(NOW + 190)), NOW),
        ] {
            assert!(b.verify_approval("refund", &ed(c), &call, now).is_ok(), "{name}");
        }
        // A plain HTTP call: without a head claim the whole-call digest decides; with one, both must match; at the
        // head the head claim alone decides (any arguments digest: the body is still to come).
        assert!(b.verify_approval("refund", &ed(base()), &http_call, NOW).is_ok());
        let with_head = set("head_digest", json!(head));
        assert!(b.verify_approval("refund", &ed(with_head.clone()), &http_call, NOW).is_ok());
        assert!(b.verify_approval("refund", &ed(with_head.clone()), &at_head, NOW).is_ok());
        let other_body = with(with_head, |o| drop(o.insert("arguments_digest".into(), json!("0".repeat(64)))));
        assert!(b.verify_approval("refund", &ed(other_body.clone()), &at_head, NOW).is_ok());
        assert_eq!(b.verify_approval("refund", &ed(other_body), &http_call, NOW), Err(F::WrongArguments));
    }

    #[test]
    fn the_head_binding_text() {
        let b = HttpBinding {
            method: "POST".into(),
            host: "billing.example".into(),
            path: "/v1/refunds?to=a".into(),
            content_type: "application/json".into(),
            body_sha256: None,
        };
        assert_eq!(b.digest(), None);
        assert_eq!(
            b.head_digest(),
            sha256_hex(b"warden.http-head/v1\nPOST\nbilling.example\n/v1/refunds?to=a\napplication/json\n")
        );
        let full = b.with_body(b"{}");
        assert_eq!(
            full.digest().as_deref(),
            Some(
                sha256_hex(
                    format!(
                        "warden.http-call/v1\nPOST\nbilling.example\n/v1/refunds?to=a\napplication/json\n{}\n",
                        body_digest(b"{}")
                    )
                    .as_bytes()
                )
                .as_str()
            )
        );
        // The head does not depend on the body.
        assert_eq!(full.head_digest(), b.head_digest());
    }
}
