//! The local reply for a request the gate does not let through: one function, [`build`], from what the flow knows
//! of the refusal ([`Refusal`]) to the reply in the route's one shape ([`Shape`]): on an HTTP route the HTTP JSON
//! body, on an MCP route a JSON-RPC error answering each request of the body with its `id`.
//!
//! Headers: `content-type: application/json`, `cache-control: no-store`, `x-warden-decision-id`, and on 401 a
//! `www-authenticate` challenge (RFC 6750): `Bearer realm="warden"` when no token was presented, else
//! `Bearer realm="warden", error="invalid_token", error_description="<plain words>"`; where a protected resource of
//! the bundle covers the route, `resource_metadata="<url>"` follows the realm (RFC 9728 section 5.1). On 429 (a
//! limit) `retry-after` in seconds (RFC 9110). The body of an HTTP refusal
//! and the `data` of a JSON-RPC error are the same object ([`Body`]): `decision_id`, `decision`, `reason`, `rule`,
//! `revision`, `message`, `tool`, `agent`, `request`, and where they apply `mcp`, `owner`, `rule_reference`,
//! `argument`, `approval` ([`StepUpInfo`]), `limit` ([`LimitRecord`]: which limit, the key, what remains, when it
//! resets). It never carries a token or an argument value. `plugin/filter/README.md`
//! ("Refusals") documents the fields and the JSON-RPC codes ([`crate::decision::jsonrpc`]).

use serde::Serialize;
use serde_json::Value;

use crate::approval::ApprovalFailure;
use crate::compile::CompiledBundle;
use crate::decision::{Decision, Outcome, Reason, RequestRefusal};
use crate::facts::{TokenFailure, TxnFailure};
use crate::gate::outcome::{LimitRecord, StepUpInfo};
use crate::pins::PinFailure;

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

/// The request as it was matched: the method, the host as sent, the normalized path without its query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RequestLine<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
}

/// The MCP message a refusal is about: the server, and the message's method and tool / prompt name or resource
/// URI (each `null` when not known, e.g. before the body was read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct McpLine<'a> {
    pub server: &'a str,
    pub method: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// The argument condition an `invalid_arguments` refusal failed: the argument's JSON Pointer and the condition as
/// authored (`/amount exclusive_min 100 max 5000`). Never the argument's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgumentFailure {
    pub pointer: String,
    pub condition: String,
}

/// Everything a refusal states, gathered by the flow.
#[derive(Debug, Clone)]
pub struct Refusal<'a> {
    pub decision: &'a Decision,
    /// `None` while no bundle is active.
    pub revision: Option<u64>,
    pub decision_id: &'a str,
    /// Step-up refusals: what the approval must bind to.
    pub step_up: Option<&'a StepUpInfo>,
    /// The tool id the request reached (`None`: no tool matched).
    pub tool: Option<&'a str>,
    /// The agent as verified.
    pub agent: Option<&'a str>,
    pub request: RequestLine<'a>,
    pub mcp: Option<McpLine<'a>>,
    /// The deciding rule's owner, else the bundle's (`None` without a bundle).
    pub owner: Option<&'a str>,
    /// The deciding rule's `approval` reference.
    pub rule_reference: Option<&'a str>,
    pub argument: Option<ArgumentFailure>,
    /// A plain-words detail of the refusal (what the token check or the body parser found), when there is one.
    pub detail: Option<String>,
    /// The protected-resource metadata URL of the request's route (RFC 9728), for a 401's challenge.
    pub resource_metadata: Option<&'a str>,
    /// The limit that refused an allowed call.
    pub limit: Option<&'a LimitRecord>,
}

/// The reply's shape, by route.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// An HTTP route (or no bundle to say otherwise): the HTTP JSON body.
    Http,
    /// An MCP route: a JSON-RPC error for these requests.
    JsonRpc(RpcRequests),
}

/// Which requests of an MCP body a JSON-RPC error answers.
#[derive(Debug, Clone, PartialEq)]
pub enum RpcRequests {
    /// The body was not read (refused before it) or could not be read: one error with `id` null.
    Unread,
    /// The ids of the body's requests, in order (notifications have none; `null` for a request whose id cannot be
    /// read), and whether the body was a batch. A batch gets one error per request; a body of notifications only
    /// gets one error with `id` null (MCP Streamable HTTP: an HTTP error whose body has no id).
    Ids { ids: Vec<Value>, batch: bool },
}

/// What a refusal says about itself: the body of a plain HTTP refusal, and the `data` of a JSON-RPC error.
#[derive(Serialize)]
struct Body<'a> {
    decision_id: &'a str,
    decision: &'static str,
    reason: &'static str,
    rule: &'a str,
    revision: Option<u64>,
    /// A short sentence a person can act on.
    message: String,
    tool: Option<&'a str>,
    agent: Option<&'a str>,
    request: RequestLine<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mcp: Option<McpLine<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule_reference: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    argument: Option<&'a ArgumentFailure>,
    /// Step-up replies: what the approval must bind to, who may give it, and where it goes.
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<&'a StepUpInfo>,
    /// Limits: which limit refused the call, its key, what remains and when it resets.
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<&'a LimitRecord>,
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

/// The reply for a decision that is not let through, in the route's shape. The one renderer of every refusal.
pub fn build(r: &Refusal<'_>, shape: &Shape) -> LocalReply {
    let d = r.decision;
    let body = Body {
        decision_id: r.decision_id,
        decision: d.outcome.as_str(),
        reason: d.reason.code(),
        rule: d.rule_id(),
        revision: r.revision,
        message: message(r),
        tool: r.tool,
        agent: r.agent,
        request: r.request,
        mcp: r.mcp,
        owner: r.owner,
        rule_reference: r.rule_reference,
        argument: r.argument.as_ref().filter(|_| d.reason == Reason::InvalidArguments),
        approval: r.step_up.filter(|_| d.outcome == Outcome::StepUp),
        limit: r.limit.filter(|_| d.reason.is_limit()),
    };
    let status = d.http_status();
    let mut headers = vec![
        ("content-type", "application/json".to_string()),
        ("cache-control", "no-store".to_string()),
        ("x-warden-decision-id", r.decision_id.to_string()),
    ];
    if status == 401 {
        headers.push(("www-authenticate", challenge(r, &body.message)));
    }
    if let (429, Some(l)) = (status, body.limit) {
        headers.push(("retry-after", l.retry_after_seconds.to_string()));
    }
    let payload = match shape {
        Shape::Http => serde_json::to_vec(&body),
        Shape::JsonRpc(requests) => {
            let summary = match d.outcome {
                Outcome::StepUp => format!("Approval required by Warden ({})", d.reason.code()),
                _ => format!("Refused by Warden ({})", d.reason.code()),
            };
            let code = d.jsonrpc_code();
            let error = |id: Value| RpcError {
                jsonrpc: "2.0",
                id,
                error: ErrorObject { code, message: &summary, data: &body },
            };
            match requests {
                RpcRequests::Ids { ids, batch: true } if !ids.is_empty() => {
                    serde_json::to_vec(&ids.iter().cloned().map(error).collect::<Vec<_>>())
                }
                RpcRequests::Ids { ids, .. } => serde_json::to_vec(&error(ids.first().cloned().unwrap_or(Value::Null))),
                RpcRequests::Unread => serde_json::to_vec(&error(Value::Null)),
            }
        }
    };
    LocalReply { status, headers, body: payload.unwrap_or_else(|_| b"{}".to_vec()) }
}

/// The `www-authenticate` challenge of a 401: the realm, and for a refused token RFC 6750's machine-readable
/// `error="invalid_token"` with the refusal in plain words (quotes and backslashes dropped, so the quoted string
/// stays one).
fn challenge(r: &Refusal<'_>, message: &str) -> String {
    let quoted = |s: &str| -> String { s.chars().filter(|c| !matches!(c, '"' | '\\') && !c.is_control()).collect() };
    let mut c = "Bearer realm=\"warden\"".to_string();
    if let Some(url) = r.resource_metadata {
        c.push_str(&format!(", resource_metadata=\"{}\"", quoted(url)));
    }
    if r.decision.reason != Reason::IdentityMissing {
        c.push_str(&format!(", error=\"invalid_token\", error_description=\"{}\"", quoted(message)));
    }
    c
}

/// The protected-resource metadata document (RFC 9728 section 3.2) the gateway serves: 200, JSON, readable from any
/// origin (a browser client discovers cross-origin), not cached past the bundle that holds it.
pub fn resource_metadata(document: &str, decision_id: &str) -> LocalReply {
    LocalReply {
        status: 200,
        headers: vec![
            ("content-type", "application/json".to_string()),
            ("cache-control", "no-store".to_string()),
            ("access-control-allow-origin", "*".to_string()),
            ("x-warden-decision-id", decision_id.to_string()),
        ],
        body: document.as_bytes().to_vec(),
    }
}

/// The refusal in a sentence: what is wrong and where.
fn message(r: &Refusal<'_>) -> String {
    let d = r.decision;
    let agent = r.agent.unwrap_or("the caller");
    let target = match (r.tool, r.mcp) {
        (Some(t), _) => format!("tool {t}"),
        (None, Some(m)) => match (m.method, m.name) {
            (Some(method), Some(name)) => format!("no tool ({method} \"{name}\" on MCP server {})", m.server),
            (Some(method), None) => format!("no tool ({method} on MCP server {})", m.server),
            (None, _) => format!("no tool ({} on MCP server {})", r.request.method, m.server),
        },
        (None, None) => format!("no tool ({} {}{})", r.request.method, r.request.host, r.request.path),
    };
    let detail = r.detail.as_deref().map(|t| format!(": {t}")).unwrap_or_default();
    let rule = d.rule_id();
    match d.reason {
        Reason::DeniedByRule => format!("rule {rule} denies {agent} the {target}"),
        Reason::StepUpRequired => format!(
            "rule {rule} requires an approval for {agent} to call {target}: get one bound to this call (see approval) \
             and retry with it{}",
            at_head(r.step_up)
        ),
        Reason::ApprovalRefused(f @ ApprovalFailure::HeadUnbound) => format!(
            "the approval presented for {target} under rule {rule} was refused: {f}: this gateway lets a request's \
             line and headers go upstream before its body is read, so the approval of a call with a body must also \
             carry head_digest (approval.head_digest of the step-up reply)"
        ),
        Reason::ApprovalRefused(f) => {
            format!("the approval presented for {target} under rule {rule} was refused: {f}{}", at_head(r.step_up))
        }
        Reason::NoMatchingRule => {
            format!("no rule allows {agent} to call {target}; ask the owner of the policy for a rule")
        }
        Reason::UnknownTool => format!("{target} of the catalog matches this request; it is denied by default"),
        Reason::InvalidArguments => match &r.argument {
            Some(a) => format!(
                "rule {rule} cannot check argument {} of {target} (missing or of another type); it needs: {}",
                a.pointer, a.condition
            ),
            None => format!("rule {rule} cannot check the arguments of {target}"),
        },
        Reason::McpLifecycle => format!("the MCP server denies this protocol method to {agent}"),
        Reason::StepUpBatch => {
            "a batch may hold at most one call that needs an approval (one approval covers one call, once): send \
             those calls one by one"
                .to_string()
        }
        Reason::RevokedAgent => format!("agent {agent} is revoked in this policy"),
        Reason::RevokedTask => format!("the task of {agent} is revoked in this policy"),
        Reason::RevokedToken => "this token's id (jti) is revoked in this policy; get a new token".to_string(),
        Reason::TaskExpired => "the task context has expired; start a new task".to_string(),
        Reason::IdentityMissing => "no agent token was presented; send one (Bearer) with the request".to_string(),
        Reason::IdentityInvalid(f) => format!("the agent token was refused: {}{detail}", token_words(f)),
        Reason::NoActiveBundle => "the gateway has no policy bundle yet; retry later".to_string(),
        Reason::BundleExpired => "the gateway's policy bundle has expired; retry when a new one is out".to_string(),
        Reason::BadRequest => "the request's :method, :path or :authority is missing, repeated or not UTF-8".into(),
        Reason::BadPath(e) => format!("the request path was refused: {e}"),
        Reason::Request(q) => format!("{}{detail}", request_words(q)),
        Reason::RateLimited | Reason::BudgetExhausted | Reason::LimitStoreUnavailable => limit_words(d.reason, r.limit),
        Reason::AllowedByRule | Reason::AllowedByException | Reason::AllowedByApproval => {
            format!("{target} allowed")
        }
        Reason::PublicRoute => format!("public route {rule} needs no identity"),
        Reason::ResourceMetadata => "the protected-resource metadata document".to_string(),
        Reason::Pin(f) => {
            let (server, name) = r.mcp.map_or(("?", "?"), |m| (m.server, m.name.unwrap_or("?")));
            match f {
                PinFailure::DefinitionChanged => format!(
                    "MCP server {server} last listed tool \"{name}\" with a definition other than the one the policy \
                     pins{detail}; its calls are refused until the server lists the pinned definition again or the \
                     policy owner reviews the change and pins it (warden pin)"
                ),
                PinFailure::NotPinned => format!(
                    "tool \"{name}\" of MCP server {server} has no pinned definition and the server is pinned (every \
                     tool needs one); the policy owner reviews the tool and pins it (warden pin)"
                ),
            }
        }
    }
}

/// What a step-up answered at its head (before the body was read) asks of the approval.
fn at_head(info: Option<&StepUpInfo>) -> &'static str {
    match info {
        Some(i) if i.arguments_digest.is_none() && i.head_digest.is_some() => {
            " (answered before the body was read: the approval carries head_digest, and arguments_digest over \
             approval.binding with the body's SHA-256 as body_sha256)"
        }
        _ => "",
    }
}

/// A limit's refusal in a sentence: the limit, its key, what remains and when it resets.
fn limit_words(reason: Reason, l: Option<&LimitRecord>) -> String {
    let Some(l) = l else { return "a limit of this tool refused the call".to_string() };
    let key = if l.key.is_empty() {
        "for every caller".to_string()
    } else {
        let parts: Vec<String> = l.key.iter().map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or_default())).collect();
        format!("for {}", parts.join(", "))
    };
    let remaining = l.remaining.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "?".into());
    match reason {
        Reason::BudgetExhausted => format!(
            "budget {} allows {} of argument {} per {} s {key}; this call asks {} and {remaining} remain until {} \
             (retry after {} s, or ask for less)",
            l.id,
            l.max,
            l.argument.as_deref().unwrap_or_default(),
            l.window_seconds,
            l.requested,
            l.resets_at,
            l.retry_after_seconds
        ),
        Reason::LimitStoreUnavailable => format!(
            "the counter of limit {} could not be read or written on this gateway, so the call is refused; retry \
             later",
            l.id
        ),
        _ => format!(
            "rate limit {} allows {} calls per {} s {key}; {remaining} left until {} (retry after {} s)",
            l.id, l.max, l.window_seconds, l.resets_at, l.retry_after_seconds
        ),
    }
}

fn request_words(q: RequestRefusal) -> &'static str {
    match q {
        RequestRefusal::McpContentType => "an MCP POST must have content-type application/json",
        RequestRefusal::McpAmbiguousHeader => "content-type, Mcp-Method or Mcp-Name is repeated or not UTF-8",
        RequestRefusal::McpHeaderMismatch => "the Mcp-Method / Mcp-Name headers do not say what the body says",
        RequestRefusal::McpMethodNotAllowed => "an MCP endpoint takes GET, POST and DELETE only",
        RequestRefusal::McpBodyTooLarge => "the MCP body is over the gateway's max_body_bytes",
        RequestRefusal::McpTrailers => "an MCP request must not have trailers",
        RequestRefusal::McpBody(_) => "the MCP body was refused by the strict JSON-RPC parser",
        RequestRefusal::BodyTooLarge => "the body of this step-up call is over the gateway's max_body_bytes",
        RequestRefusal::BodyUnreadable => "the body of this step-up call could not be read",
        RequestRefusal::StepUpTrailers => "a step-up call must not have trailers",
        RequestRefusal::McpUnexpectedBody => "an MCP GET or DELETE must not carry a body",
        RequestRefusal::McpUpgrade => "an MCP endpoint does not take an Upgrade (WebSocket or other protocol)",
        RequestRefusal::McpContentEncoding => {
            "an MCP POST must not have a Content-Encoding: the gateway decides on the bytes as sent"
        }
        RequestRefusal::StepUpContentEncoding => {
            "a step-up call's body must not have a Content-Encoding: the approval binds the bytes as sent"
        }
        RequestRefusal::RouteNearMiss => {
            "the path differs from a route of this policy only by case, a trailing slash or a suffix, so it is refused \
             even under unknown_tool: allow"
        }
    }
}

fn token_words(f: TokenFailure) -> &'static str {
    match f {
        TokenFailure::Malformed => "it is not a well-formed JWT",
        TokenFailure::TooLarge => "it is over the size limit",
        TokenFailure::UnknownIssuer => "its iss names no issuer this policy trusts",
        TokenFailure::AlgorithmNotAllowed => "its alg is not one its issuer allows",
        TokenFailure::UnknownKey => "its kid names no key of its issuer",
        TokenFailure::BadSignature => "its signature does not verify",
        TokenFailure::Expired => "it has expired",
        TokenFailure::NotYetValid => "it is not valid yet (nbf)",
        TokenFailure::IssuedInFuture => "it is issued in the future (iat)",
        TokenFailure::LifetimeTooLong => "its lifetime (exp - iat) is over its issuer's maximum",
        TokenFailure::WrongAudience => "its aud names none of the audiences its issuer is trusted for",
        TokenFailure::MissingClaim => "a claim its profile requires is missing or of another type",
        TokenFailure::Ambiguous => "the token header is repeated",
        TokenFailure::WrongType => "its typ is not the one its issuer's profile requires",
        TokenFailure::WrongProfile => "its issuer does not issue agent tokens here",
        TokenFailure::NotSpiffeId => "its sub is not a SPIFFE ID",
        TokenFailure::DelegationNotAllowed => "it carries act (delegation) and its issuer allows none",
        TokenFailure::DelegationTooDeep => "its delegation (act) is deeper than its issuer allows",
        TokenFailure::SenderNotMtls => {
            "it must be sender-bound and the request came without an mTLS client certificate"
        }
        TokenFailure::SenderMismatch => "the mTLS peer is not the agent the token names",
        TokenFailure::CnfMismatch => "its cnf does not match the mTLS client certificate",
        TokenFailure::UntrustedTrustDomain => "its sub is in a SPIFFE trust domain its issuer is not trusted for",
        TokenFailure::InvalidAgentId => "the agent id it carries has control characters or empty, `.` or `..` segments",
        TokenFailure::Txn(t) => match t {
            TxnFailure::Ambiguous => "the Transaction Token header is repeated",
            TxnFailure::AgentMismatch => "the Transaction Token is for another agent",
            TxnFailure::Malformed | TxnFailure::TooLarge => "the Transaction Token is malformed or too large",
            TxnFailure::Expired => "the Transaction Token has expired: the task context is over",
            _ => "the Transaction Token was refused (see reason)",
        },
    }
}

/// The plain-words detail of a token refusal: the limits the bundle's issuers set that the check applied
/// (expected audiences, maximum lifetime, clock skew).
pub fn token_detail(bundle: &CompiledBundle, f: TokenFailure) -> Option<String> {
    let limits = bundle.issuers.limits();
    match f {
        TokenFailure::Expired | TokenFailure::NotYetValid | TokenFailure::IssuedInFuture => {
            Some(format!("the gateway allows {} s of clock skew", limits.skew))
        }
        TokenFailure::LifetimeTooLong => Some(format!("at most {} s", limits.max_lifetime)),
        TokenFailure::WrongAudience => Some(format!("expected aud: {}", limits.audiences.join(", "))),
        _ => None,
    }
}

/// The reply of a filter that has no configuration (the host started a stream before a successful configure):
/// 503 `no_active_bundle`, fail closed.
pub fn unconfigured() -> LocalReply {
    LocalReply {
        status: 503,
        headers: vec![("content-type", "application/json".to_string()), ("cache-control", "no-store".to_string())],
        body: br#"{"decision":"deny","reason":"no_active_bundle","rule":"default","revision":null,"message":"the gateway has no configuration"}"#.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::jsonrpc;
    use crate::facts::TokenFailure;
    use crate::gate::outcome::ApproverRef;
    use crate::path::PathError;
    use serde_json::{json, Value};
    use std::sync::Arc;

    const ID: &str = "0f8e2c1a-5b7d-4c3e-9a1b-2c3d4e5f6a7b";
    const REQ: RequestLine<'static> = RequestLine { method: "GET", host: "crm.example", path: "/a" };

    fn decision(outcome: Outcome, reason: Reason, rule: Option<&str>) -> Decision {
        Decision { outcome, reason, rule: rule.map(Arc::from), revision: 7 }
    }

    fn refusal(d: &Decision) -> Refusal<'_> {
        Refusal {
            decision: d,
            revision: Some(7),
            decision_id: ID,
            step_up: None,
            tool: None,
            agent: None,
            request: REQ,
            mcp: None,
            owner: Some("sec@acme.example"),
            rule_reference: None,
            argument: None,
            detail: None,
            resource_metadata: None,
            limit: None,
        }
    }

    fn body(r: &LocalReply) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    /// Status, the challenge, and the body's fixed fields, for one refusal of each kind on an HTTP route.
    #[test]
    fn http_replies_by_decision() {
        /// Outcome, reason, rule; then the status and challenge expected.
        type Case = (Outcome, Reason, Option<&'static str>, u16, Option<&'static str>);
        let cases: &[Case] = &[
            (Outcome::Deny, Reason::IdentityMissing, None, 401, Some("Bearer realm=\"warden\"")),
            (Outcome::Deny, Reason::DeniedByRule, Some("no-writes"), 403, None),
            (Outcome::StepUp, Reason::StepUpRequired, Some("refunds"), 403, None),
            (Outcome::Deny, Reason::NoActiveBundle, None, 503, None),
            (Outcome::Deny, Reason::BundleExpired, None, 503, None),
            (Outcome::Deny, Reason::BadPath(PathError::EncodedSlash { position: 1 }), None, 400, None),
        ];
        for &(outcome, reason, rule, status, challenge) in cases {
            let d = decision(outcome, reason, rule);
            let r = build(&refusal(&d), &Shape::Http);
            assert_eq!(r.status, status, "{reason:?}");
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_eq!(r.header("cache-control"), Some("no-store"));
            assert_eq!(r.header("x-warden-decision-id"), Some(ID));
            assert_eq!(r.header("www-authenticate"), challenge, "{reason:?}");
            let b = body(&r);
            assert_eq!(b["decision_id"], ID);
            assert_eq!(b["decision"], outcome.as_str());
            assert_eq!(b["reason"], reason.code());
            assert_eq!(b["rule"], rule.unwrap_or("default"));
            assert_eq!(b["revision"], 7);
            assert_eq!(b["request"], json!({"method": "GET", "host": "crm.example", "path": "/a"}));
            assert_eq!(b["owner"], "sec@acme.example");
            assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert!(b.get("jsonrpc").is_none() && b.get("approval").is_none());
        }
    }

    #[test]
    fn a_refused_token_is_described_in_plain_words_in_the_challenge() {
        let d = decision(Outcome::Deny, Reason::IdentityInvalid(TokenFailure::Expired), None);
        let mut r = refusal(&d);
        r.detail = Some("the gateway allows 30 s of clock skew".into());
        let reply = build(&r, &Shape::Http);
        assert_eq!(
            reply.header("www-authenticate"),
            Some(
                "Bearer realm=\"warden\", error=\"invalid_token\", error_description=\"the agent token was refused: it \
                 has expired: the gateway allows 30 s of clock skew\""
            )
        );
    }

    #[test]
    fn a_step_up_reply_says_what_the_approval_must_bind_to() {
        let info = StepUpInfo {
            agent: Some("spiffe://acme.example/agents/support/bot-1".into()),
            task: Some("T-1".into()),
            tool: Some("billing.refunds.create".into()),
            arguments_digest: Some("ab".repeat(32)),
            head_digest: None,
            digest_of: "body",
            binding: None,
            decision_id: ID.into(),
            rule: "refunds-need-approval".into(),
            approvers: vec![ApproverRef {
                id: "payments-approvals".into(),
                iss: "https://approvals.acme.example".into(),
            }],
            max_age_seconds: 300,
            header: "x-warden-approval".into(),
        };
        let d = decision(Outcome::StepUp, Reason::StepUpRequired, Some("refunds-need-approval"));
        let r =
            build(&Refusal { step_up: Some(&info), tool: Some("billing.refunds.create"), ..refusal(&d) }, &Shape::Http);
        assert_eq!(
            body(&r)["approval"],
            json!({"agent": "spiffe://acme.example/agents/support/bot-1", "task": "T-1",
                   "tool": "billing.refunds.create", "arguments_digest": "ab".repeat(32), "digest_of": "body",
                   "decision_id": ID, "rule": "refunds-need-approval",
                   "approvers": [{"id": "payments-approvals", "iss": "https://approvals.acme.example"}],
                   "max_age_seconds": 300, "header": "x-warden-approval"})
        );
        // A deny never carries the object, even if the flow had one.
        let deny = decision(Outcome::Deny, Reason::DeniedByRule, Some("r"));
        assert!(body(&build(&Refusal { step_up: Some(&info), ..refusal(&deny) }, &Shape::Http))
            .get("approval")
            .is_none());
    }

    #[test]
    fn json_rpc_errors_answer_each_request_with_its_id() {
        let d = decision(Outcome::Deny, Reason::DeniedByRule, Some("no-refunds"));
        let r = refusal(&d);
        let rpc = |requests: RpcRequests| body(&build(&r, &Shape::JsonRpc(requests)));
        let one = rpc(RpcRequests::Ids { ids: vec![json!("r-7")], batch: false });
        assert_eq!(one["jsonrpc"], "2.0");
        assert_eq!(one["id"], "r-7");
        assert_eq!(one["error"]["code"], jsonrpc::DENIED);
        assert_eq!(one["error"]["message"], "Refused by Warden (denied_by_rule)");
        assert_eq!(one["error"]["data"], body(&build(&r, &Shape::Http)), "data is the HTTP body");
        // Only notifications, or an unread body: one error, id null.
        assert_eq!(rpc(RpcRequests::Ids { ids: vec![], batch: false })["id"], Value::Null);
        assert_eq!(rpc(RpcRequests::Unread)["id"], Value::Null);
        // A batch: one error per request.
        let batch = rpc(RpcRequests::Ids { ids: vec![json!(1), json!(2)], batch: true });
        let ids: Vec<Value> = batch.as_array().unwrap().iter().map(|e| e["id"].clone()).collect();
        assert_eq!(ids, vec![json!(1), json!(2)]);
    }

    #[test]
    fn json_rpc_codes_by_reason() {
        use crate::decision::RequestRefusal as R;
        use crate::mcp::McpErrorKind as K;
        let cases: &[(Outcome, Reason, i64)] = &[
            (Outcome::Deny, Reason::DeniedByRule, jsonrpc::DENIED),
            (Outcome::Deny, Reason::UnknownTool, jsonrpc::DENIED),
            (Outcome::Deny, Reason::InvalidArguments, jsonrpc::DENIED),
            (Outcome::Deny, Reason::RevokedAgent, jsonrpc::IDENTITY),
            (Outcome::Deny, Reason::RevokedToken, jsonrpc::IDENTITY),
            (Outcome::Deny, Reason::StepUpBatch, jsonrpc::DENIED),
            (Outcome::StepUp, Reason::StepUpRequired, jsonrpc::STEP_UP_REQUIRED),
            (
                Outcome::StepUp,
                Reason::ApprovalRefused(crate::approval::ApprovalFailure::Replayed),
                jsonrpc::STEP_UP_REQUIRED,
            ),
            (Outcome::Deny, Reason::IdentityMissing, jsonrpc::IDENTITY),
            (Outcome::Deny, Reason::IdentityInvalid(TokenFailure::Expired), jsonrpc::IDENTITY),
            (Outcome::Deny, Reason::NoActiveBundle, jsonrpc::UNAVAILABLE),
            (Outcome::Deny, Reason::Request(R::McpHeaderMismatch), -32020),
            (Outcome::Deny, Reason::Request(R::McpAmbiguousHeader), -32020),
            (Outcome::Deny, Reason::Request(R::McpBody(K::NotJson)), -32700),
            (Outcome::Deny, Reason::Request(R::McpBody(K::DuplicateKey)), -32700),
            (Outcome::Deny, Reason::Request(R::McpBody(K::InvalidParams)), -32602),
            (Outcome::Deny, Reason::Request(R::McpBody(K::BatchRefused)), -32600),
            (Outcome::Deny, Reason::Request(R::McpBodyTooLarge), -32600),
        ];
        for &(outcome, reason, code) in cases {
            assert_eq!(decision(outcome, reason, None).jsonrpc_code(), code, "{reason:?}");
            // Warden's own codes are outside JSON-RPC's reserved range; the others are the spec's.
            assert!(!(-32768..=-32000).contains(&code) || [-32020, -32700, -32600, -32602].contains(&code));
        }
    }

    /// A limit's refusal: 429 with Retry-After on HTTP, the JSON-RPC limit code on MCP, and the body names the limit,
    /// its key, what remains and when it resets.
    #[test]
    fn limit_refusals_say_which_limit_and_when_it_resets() {
        let d = Decision {
            outcome: Outcome::Deny,
            reason: Reason::BudgetExhausted,
            rule: Some("refunds-allow".into()),
            revision: 7,
        };
        let mut key = serde_json::Map::new();
        key.insert("task".into(), json!("task-9"));
        let limit = LimitRecord {
            id: "refund-budget".into(),
            kind: "budget",
            key,
            window_seconds: 86_400,
            max: json!(500),
            requested: json!(200),
            remaining: Some(json!(50)),
            argument: Some("/amount".into()),
            resets_at: "2026-11-29T00:00:00Z".into(),
            retry_after_seconds: 50_400,
            owner: "payments-risk@acme.example".into(),
        };
        let r = build(&Refusal { limit: Some(&limit), tool: Some("refunds.issue"), ..refusal(&d) }, &Shape::Http);
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after"), Some("50400"));
        let b = body(&r);
        assert_eq!(b["reason"], "budget_exhausted");
        assert_eq!(b["limit"]["id"], "refund-budget");
        assert_eq!(b["limit"]["key"], json!({"task": "task-9"}));
        assert_eq!(b["limit"]["remaining"], 50);
        assert_eq!(
            b["message"],
            "budget refund-budget allows 500 of argument /amount per 86400 s for task task-9; this call asks 200 and \
             50 remain until 2026-11-29T00:00:00Z (retry after 50400 s, or ask for less)"
        );
        let rpc = build(
            &Refusal { limit: Some(&limit), ..refusal(&d) },
            &Shape::JsonRpc(RpcRequests::Ids { ids: vec![json!(4)], batch: false }),
        );
        let v = body(&rpc);
        assert_eq!((v["id"].clone(), v["error"]["code"].clone()), (json!(4), json!(crate::decision::jsonrpc::LIMITED)));
        assert_eq!(v["error"]["data"]["limit"]["id"], "refund-budget");
        // A counter that cannot be read: 503, no Retry-After, the unavailable code.
        let down = Decision { reason: Reason::LimitStoreUnavailable, ..d.clone() };
        let r = build(&Refusal { limit: Some(&limit), ..refusal(&down) }, &Shape::Http);
        assert_eq!((r.status, r.header("retry-after")), (503, None));
        // The limit object only goes with a limit's reason.
        let other = Decision { reason: Reason::DeniedByRule, ..d };
        assert!(body(&build(&Refusal { limit: Some(&limit), ..refusal(&other) }, &Shape::Http)).get("limit").is_none());
    }
}
