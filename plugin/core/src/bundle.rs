//! The policy bundle, format version 1, exactly as the security team writes it (serde types, unknown fields refused).
//!
//! These types are the authored form. They are checked and turned into the indexed form the request path uses by
//! [`crate::compile`]; nothing here is consulted per request. `policies/README.md` documents every field and
//! `policies/bundle.schema.json` is the JSON Schema of the same shape.

use serde::{Deserialize, Serialize};

pub use crate::vocab::{Effect, Sensitivity};

/// The only value `format` may have in this version.
pub const FORMAT_V1: &str = "warden.bundle/v1";

/// A policy bundle as authored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// The JSON Schema an editor should use (`"$schema"`); accepted and ignored.
    #[serde(rename = "$schema", default)]
    pub schema: Option<String>,
    /// Always [`FORMAT_V1`].
    pub format: String,
    /// Monotonically increasing; a gateway never activates a revision lower than or equal to its active one.
    pub revision: u64,
    /// RFC 3339 UTC timestamp (`2026-11-28T10:00:00Z`) when the bundle was issued.
    pub issued_at: String,
    /// RFC 3339 UTC timestamp after which gateways stop enforcing this bundle and fail closed.
    pub expires_at: String,
    /// Who owns this policy (team or mailbox); shown in decision records and reports.
    pub owner: String,
    /// The policy authority that signs the bundle; must equal the authority pinned in the plugin configuration.
    pub authority: String,
    /// Token issuers whose agent tokens are trusted.
    #[serde(default)]
    pub issuers: Vec<Issuer>,
    /// Approval services whose step-up approvals are trusted (see [`Approver`]).
    #[serde(default)]
    pub approvers: Vec<Approver>,
    /// MCP servers (Streamable HTTP endpoints) whose JSON-RPC bodies the gateway reads to find the tool.
    #[serde(default)]
    pub mcp_servers: Vec<McpServer>,
    /// The tool catalog: which requests reach which tool.
    #[serde(default)]
    pub tools: Vec<Tool>,
    /// Access rules.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Revoked agents, tasks, tokens and bundle-signing keys.
    #[serde(default)]
    pub revocations: Revocations,
    /// What happens when nothing more specific applies.
    #[serde(default)]
    pub defaults: Defaults,
    /// Limits every time-boxed exception of the bundle must respect.
    #[serde(default)]
    pub exception_policy: ExceptionPolicy,
    /// Routes that need no identity (discovery documents, health checks, CORS preflights): let through without a
    /// token, still normalized and recorded (`public_route`). They may not overlap a tool's route or an MCP server.
    #[serde(default)]
    pub public_routes: Vec<PublicRoute>,
    /// OAuth 2.0 protected resources (RFC 9728): per MCP server or host, the resource identifier, its authorization
    /// servers and where its metadata document is; the 401s of its requests point to that document.
    #[serde(default)]
    pub protected_resources: Vec<ProtectedResource>,
    /// Rate limits and budgets on allowed calls, per proxy process (see [`Limit`]).
    #[serde(default)]
    pub limits: Vec<Limit>,
}

/// A route that needs no identity. Host and path as in [`HttpMatch`]; `methods` is required (or `cors_preflight`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicRoute {
    /// Identifier (`[a-z0-9][a-z0-9._-]*`), named as the `rule` of its decision records; distinct from rule ids.
    pub id: String,
    /// Free text for reviewers.
    #[serde(default)]
    pub description: Option<String>,
    /// Exact host or `*.domain`, as in [`HttpMatch::host`]. Absent: any host.
    #[serde(default)]
    pub host: Option<String>,
    /// Upper-case methods (at least one); absent with `cors_preflight`.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Path pattern over the normalized path, as in [`HttpMatch::path`].
    pub path: String,
    /// Matches only CORS preflights (Fetch standard): `OPTIONS` with `Origin` and `Access-Control-Request-Method`
    /// and no body. Default false.
    #[serde(default)]
    pub cors_preflight: bool,
}

/// An OAuth 2.0 protected resource (RFC 9728) behind the gateway: exactly one of `mcp_server` or `host`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectedResource {
    /// The resource identifier (RFC 9728 section 1.2, RFC 8707): an `https` URL (`http` only on a loopback host)
    /// without query or fragment, e.g. `https://tools.acme.example/mcp`; the `resource` of the metadata document.
    pub resource: String,
    /// The MCP server (its [`McpServer::name`]) whose requests this resource covers.
    #[serde(default)]
    pub mcp_server: Option<String>,
    /// The exact host (port ignored) whose requests this resource covers, where no MCP server entry does.
    #[serde(default)]
    pub host: Option<String>,
    /// Issuer identifiers of the authorization servers (RFC 8414) that issue tokens for it; each must be the `iss`
    /// of an agent-token issuer of the bundle.
    pub authorization_servers: Vec<String>,
    /// `scopes_supported` of the metadata document.
    #[serde(default)]
    pub scopes_supported: Option<Vec<String>>,
    /// `resource_name` of the metadata document (human-readable).
    #[serde(default)]
    pub resource_name: Option<String>,
    /// `resource_documentation` of the metadata document (a URL).
    #[serde(default)]
    pub resource_documentation: Option<String>,
    /// Where the metadata document is served by someone else (the upstream, another host). Absent (the default):
    /// the gateway serves it itself, from this entry, at the well-known URL derived from `resource` (RFC 9728
    /// section 3.1).
    #[serde(default)]
    pub metadata_url: Option<String>,
}

/// A rate limit (`max_calls`) or a budget (`budget`: a numeric argument summed) on the allowed calls of some tools,
/// counted per key (any combination of agent, tool, task and environment) in fixed windows of `window_seconds`
/// aligned on the epoch. Checked after the decision allows a call; a refused call consumes nothing. See
/// `policies/README.md`, "Limits and budgets".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Identifier in replies, records and metrics (`[a-z0-9][a-z0-9._-]*`).
    pub id: String,
    /// Optional human description.
    #[serde(default)]
    pub description: Option<String>,
    /// The tools whose calls count, as rules select them: ids, `namespace.*` patterns, or `*`.
    pub tools: Vec<String>,
    /// What the calls are counted apart by (each at most once). Empty: one counter for every call of the tools.
    #[serde(default)]
    pub per: Vec<LimitKey>,
    /// Length of the window in seconds, 1 to 2 678 400 (31 days); windows start at multiples of it since the epoch.
    pub window_seconds: u64,
    /// Most calls per key and window (exactly one of `max_calls` and `budget`).
    #[serde(default)]
    pub max_calls: Option<u64>,
    /// Most of a numeric argument summed per key and window (MCP `tools/call` arguments).
    #[serde(default)]
    pub budget: Option<Budget>,
    /// Who owns this limit (team or mailbox).
    #[serde(default)]
    pub owner: Option<String>,
}

/// What a limit's calls are counted apart by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKey {
    /// The verified agent id.
    Agent,
    /// The tool id.
    Tool,
    /// The task id (a call without task context counts under "no task").
    Task,
    /// The gateway's environment.
    Environment,
}

impl LimitKey {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKey::Agent => "agent",
            LimitKey::Tool => "tool",
            LimitKey::Task => "task",
            LimitKey::Environment => "environment",
        }
    }
}

/// A budget: the sum of one numeric argument of the calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// JSON Pointer into the call's `arguments` (`/amount`); the value must be a number from 0 with at most 6
    /// decimal places.
    pub argument: String,
    /// Most of the argument summed per key and window (at most 6 decimal places).
    pub max: f64,
}

/// A trusted approval service: it mints approval tokens (JWS, `typ` `warden-approval+jwt`) that let one step-up call
/// through. See `policies/README.md`, "Step-up approvals", for the token's claims.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approver {
    /// Identifier used by step-up rules and in decision records (`[a-z0-9][a-z0-9._-]*`).
    pub id: String,
    /// The exact `iss` claim value of its approvals.
    pub iss: String,
    /// Public verification keys as a JWKS; every key needs a `kid`.
    pub jwks: Jwks,
    /// Accepted `alg` values (asymmetric only).
    pub algorithms: Vec<String>,
    /// Longest accepted approval lifetime (`exp - iat`) in seconds, 1 to 86 400. A step-up rule may ask for less.
    pub max_approval_age_seconds: u64,
    /// Allowed clock skew in seconds for `exp`, `nbf` and `iat` (at most 300). Default 30.
    #[serde(default = "default_skew")]
    pub clock_skew_seconds: u64,
}

/// What a `step_up` rule requires of the approval that lets a call through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepUp {
    /// Ids of the [`Approver`]s whose approvals count for this rule (at least one).
    pub approvers: Vec<String>,
    /// Longest accepted approval lifetime for this rule in seconds; at most the approvers' own limit. Absent: the
    /// approver's `max_approval_age_seconds`.
    #[serde(default)]
    pub max_age_seconds: Option<u64>,
}

/// Bundle-wide limits on time-boxed exceptions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionPolicy {
    /// Longest an exception may run, from its `granted_at` to the rule's `expires_at`, in days (1 to 365). Default 30.
    #[serde(default = "default_max_exception_days")]
    pub max_duration_days: u32,
    /// Gateway environments where exceptions may apply at all (e.g. `["staging", "dev"]`: never in prod). Absent:
    /// every environment. An exception rule without an `environments` selector applies in exactly these.
    #[serde(default)]
    pub environments: Option<Vec<String>>,
}

fn default_max_exception_days() -> u32 {
    30
}

impl Default for ExceptionPolicy {
    fn default() -> Self {
        ExceptionPolicy { max_duration_days: default_max_exception_days(), environments: None }
    }
}

/// A trusted token issuer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Issuer {
    /// Identifier used in rules and decision records (`[a-z0-9][a-z0-9._-]*`).
    pub id: String,
    /// The exact `iss` claim value.
    pub iss: String,
    /// Accepted `aud` values; a token must name at least one of them.
    pub audiences: Vec<String>,
    /// Public verification keys as a JWKS (`{"keys": [...]}`); every key needs a `kid`.
    pub jwks: Jwks,
    /// Accepted `alg` values (asymmetric only: `EdDSA`, `ES256`, `ES384`, `RS256`, `RS384`, `RS512`, `PS256`, ...).
    pub algorithms: Vec<String>,
    /// Maximum `exp - iat` in seconds; a token that lives longer is refused.
    pub max_token_lifetime_seconds: u64,
    /// Allowed clock skew in seconds for `exp`, `nbf` and `iat` (at most 300). Default 30.
    #[serde(default = "default_skew")]
    pub clock_skew_seconds: u64,
    /// Which claims become which facts.
    #[serde(default)]
    pub claims: ClaimMapping,
    /// The kind of token this issuer issues; fixes the `typ` and the required claims (see `policies/README.md`,
    /// "Token profiles"). Required: a token of one profile never passes as another (RFC 8725 section 3.11-3.12).
    pub profile: TokenProfile,
    /// Sender binding: the request's mTLS peer URI SAN must equal `agent.id` (a token replayed from another
    /// workload, or without mTLS, is refused). Default false. Not for `txn_token` issuers.
    #[serde(default)]
    pub require_sender_binding: bool,
    /// Sender binding for the agents matching any of these patterns (the rules' agent pattern syntax: `*`,
    /// `prefix/*`, an exact id): such an agent's token presented without mTLS, or from another workload, is an
    /// invalid token (401). Not for `txn_token` issuers.
    #[serde(default)]
    pub require_sender_binding_for: Vec<String>,
    /// `iat` is required, so `max_token_lifetime_seconds` is always checked against the token's whole lifetime
    /// (JWT-SVIDs may otherwise omit it; the other profiles always require it). Default false.
    #[serde(default)]
    pub require_iat: bool,
    /// SPIFFE trust domains this issuer may issue for (`spiffe_jwt_svid` only): a `sub` in any other trust domain
    /// is an invalid token (`token_untrusted_trust_domain`). Absent: any.
    #[serde(default)]
    pub trust_domains: Option<Vec<String>>,
    /// Delegation (RFC 8693 `act`). Absent: a token with an `act` claim is refused. Only `oauth_access_token`.
    #[serde(default)]
    pub delegation: Option<Delegation>,
}

/// The token profile of an issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenProfile {
    /// SPIFFE JWT-SVID: `typ` absent, `JWT` or `JOSE`; `sub` a SPIFFE ID; `aud`, `exp` required.
    SpiffeJwtSvid,
    /// OAuth 2.0 JWT access token (RFC 9068): `typ` `at+jwt`; `iss`, `aud`, `exp`, `sub`, `client_id`, `iat`, `jti`.
    OauthAccessToken,
    /// Transaction Token (`Txn-Token` header): `typ` `txntoken+jwt`; `txn`, `purp`, `sub`, `aud`, `iat`, `exp`.
    TxnToken,
}

impl TokenProfile {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenProfile::SpiffeJwtSvid => "spiffe_jwt_svid",
            TokenProfile::OauthAccessToken => "oauth_access_token",
            TokenProfile::TxnToken => "txn_token",
        }
    }
}

/// How an issuer's tokens may delegate (RFC 8693 `act`): `sub` is the delegator, `act.sub` the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delegation {
    /// Most `act` levels a token may carry (1: the agent acts directly for the subject). 1 to 8.
    pub max_depth: u32,
}

fn default_skew() -> u64 {
    30
}

/// A JSON Web Key Set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwks {
    /// The keys, each a JSON Web Key (RFC 7517) kept as written.
    pub keys: Vec<serde_json::Value>,
}

/// Claim names that map a verified token to request facts. Each is a top-level claim name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimMapping {
    /// Claim holding the agent's workload identity (default `sub`).
    #[serde(default = "default_agent_claim")]
    pub agent_id: String,
    /// Claim holding the task id, if the agent token carries task context.
    #[serde(default)]
    pub task_id: Option<String>,
    /// Claim holding the task purpose.
    #[serde(default)]
    pub task_purpose: Option<String>,
    /// Claim holding the task expiry (NumericDate seconds).
    #[serde(default)]
    pub task_expires_at: Option<String>,
}

fn default_agent_claim() -> String {
    "sub".to_string()
}

impl Default for ClaimMapping {
    fn default() -> Self {
        ClaimMapping { agent_id: default_agent_claim(), task_id: None, task_purpose: None, task_expires_at: None }
    }
}

/// One tool in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    /// Tool id (`[a-z0-9][a-z0-9._-]*`, dots separate namespaces, e.g. `crm.contacts.read`).
    pub id: String,
    pub sensitivity: Sensitivity,
    /// Optional human description.
    #[serde(default)]
    pub description: Option<String>,
    /// HTTP routes that reach this tool.
    #[serde(default)]
    pub http: Vec<HttpMatch>,
    /// MCP tools, resources, prompts and methods that reach this tool.
    #[serde(default)]
    pub mcp: Vec<McpMatch>,
    /// Decision records carry this tool's call arguments in clear (`arguments`), not only their digest. Default
    /// false: arguments may hold personal data.
    #[serde(default)]
    pub log_arguments: bool,
}

/// An MCP server: requests to this host and path prefix are MCP (JSON-RPC 2.0 over Streamable HTTP) and are
/// resolved from their body, not from `http` routes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    /// Server name (id syntax), used by tools' `mcp` entries and in decision records.
    pub name: String,
    /// Exact host or `*.domain`, as in [`HttpMatch::host`]. Absent: any host.
    #[serde(default)]
    pub host: Option<String>,
    /// Literal path prefix of the endpoint, matched at segment boundaries (`/mcp` matches `/mcp` and `/mcp/x`).
    pub path: String,
    /// Whether a POST may carry a JSON-RPC batch (an array). Default `false`: a batch is refused.
    #[serde(default)]
    pub batches: bool,
    /// Effect for the protocol's own methods (`initialize`, `ping`, `tools/list`, notifications, ...) when no tool
    /// of the catalog binds them: `allow` (default) or `deny`. Identity and revocations still apply.
    #[serde(default = "default_allow")]
    pub lifecycle: Effect,
    /// Every tool the server lists must have a pin in `pins`: a tool without one is removed from `tools/list` and
    /// its calls are refused (`tool_not_pinned`). Default false: only the tools in `pins` are judged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
    /// The approved tool definitions: MCP tool name → definition digest, the lower-case hex SHA-256 of the canonical
    /// JSON of its `description`, `inputSchema`, `outputSchema` and `annotations` ([`crate::pins`]). A listed tool
    /// with another definition is removed from `tools/list` and its calls are refused (`tool_definition_changed`).
    /// `warden pin` writes them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub pins: std::collections::BTreeMap<String, String>,
}

fn default_allow() -> Effect {
    Effect::Allow
}

/// What reaches a tool on an MCP server: exactly one of `tool`, `resource`, `prompt` or `method`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpMatch {
    /// The [`McpServer::name`].
    pub server: String,
    /// `tools/call` with this `params.name` (exact, case-sensitive).
    #[serde(default)]
    pub tool: Option<String>,
    /// `resources/read` with a `params.uri` matching this pattern (`*` within a segment, `**` across segments).
    #[serde(default)]
    pub resource: Option<String>,
    /// `prompts/get` with this `params.name` (exact).
    #[serde(default)]
    pub prompt: Option<String>,
    /// Any other JSON-RPC method, exact (e.g. `tools/list`, `resources/subscribe`).
    #[serde(default)]
    pub method: Option<String>,
}

/// An HTTP route: host, methods and a path pattern, all of which must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpMatch {
    /// Exact host (case-insensitive, port ignored), or `*.example.com` for any subdomain. Absent: any host.
    #[serde(default)]
    pub host: Option<String>,
    /// Upper-case methods; empty means any method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Path pattern over the normalized path: literal segments, `{name}` for exactly one segment, and a final
    /// `{name...}` or `**` for the remaining segments (one or more).
    pub path: String,
}

/// An access rule. Every selector that is present must match (AND); within one selector any entry may match (OR);
/// an absent selector matches everything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique rule id; named in every decision this rule makes.
    pub id: String,
    pub effect: Effect,
    /// Free text for reviewers.
    #[serde(default)]
    pub description: Option<String>,
    /// Agent id patterns: an exact id, a prefix ending in `/*` (any id below that path), or `*`.
    #[serde(default)]
    pub agents: Option<Vec<String>>,
    /// Tool ids, or tool patterns ending in `.*` (any tool in that namespace), or `*`.
    #[serde(default)]
    pub tools: Option<Vec<String>>,
    /// Tool sensitivities.
    #[serde(default)]
    pub sensitivities: Option<Vec<Sensitivity>>,
    /// Gateway environments (the `environment` of the plugin configuration).
    #[serde(default)]
    pub environments: Option<Vec<String>>,
    /// Task purposes; a request without task context never matches a rule that has this selector.
    #[serde(default)]
    pub task_purposes: Option<Vec<String>>,
    /// Issuer ids the agent's token must come from.
    #[serde(default)]
    pub issuers: Option<Vec<String>>,
    /// Delegator patterns (RFC 8693: the token's `sub` when the agent acts for someone): an exact id, a prefix
    /// ending in `*`, or `*` (any delegator). A request without delegation never matches a rule that has this.
    #[serde(default)]
    pub delegators: Option<Vec<String>>,
    /// Matches only requests whose delegation depth (`act` levels; 0 without delegation) is at most this.
    #[serde(default)]
    pub max_delegation_depth: Option<u32>,
    /// Matches only requests whose mTLS peer URI SAN equals `agent.id` (not allowed on deny rules).
    #[serde(default)]
    pub require_sender_binding: bool,
    /// Who owns the rule (person or team).
    #[serde(default)]
    pub owner: Option<String>,
    /// Reference to the approval that justifies the rule (ticket, change request).
    #[serde(default)]
    pub approval: Option<String>,
    /// RFC 3339 time after which the rule stops matching, by the gateway's own clock.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Present on time-boxed exceptions: an allow rule that must carry `expires_at`.
    #[serde(default)]
    pub exception: Option<Exception>,
    /// Required on `step_up` rules (refused on others): which approvals let a call through.
    #[serde(default)]
    pub step_up: Option<StepUp>,
    /// Shadow rule: evaluated and logged (`shadow` in the decision record, `would_deny` / `would_step_up` /
    /// `would_allow`), never enforced; the request is decided as if the rule were absent. Default false.
    #[serde(default)]
    pub shadow: bool,
    /// Controls this rule implements, as free tags for the policy report (e.g. `OWASP-ASI02`, `NIST-AI-RMF:GOVERN-1.2`).
    #[serde(default)]
    pub controls: Option<Vec<String>>,
    /// Conditions on the call's arguments (MCP `tools/call` / `prompts/get` arguments); all must hold.
    #[serde(default)]
    pub conditions: Option<Vec<ArgCondition>>,
}

/// A field that is present counts even when its value is `null` (serde reads a present `null` as absent for an
/// `Option`; absent fields get `None` from `#[serde(default)]`).
fn present_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// One condition on a call argument: `argument` names it, and exactly one test is given (`min`, `max`,
/// `exclusive_min` and `exclusive_max` combine into one numeric test). See `crate::args`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgCondition {
    /// JSON Pointer (RFC 6901) into the arguments object, e.g. `/amount` or `/customer/id`.
    pub argument: String,
    /// The argument equals this string, number, boolean or null (numbers compare by value). `"equals": null` is a
    /// test (the argument is JSON null), not an absent field: see [`present_value`].
    #[serde(default, deserialize_with = "present_value", skip_serializing_if = "Option::is_none")]
    pub equals: Option<serde_json::Value>,
    /// The argument is one of these strings, or one of these numbers, or one of these booleans.
    #[serde(default)]
    pub one_of: Option<Vec<serde_json::Value>>,
    /// The argument is a number `>=` this.
    #[serde(default)]
    pub min: Option<serde_json::Number>,
    /// The argument is a number `<=` this.
    #[serde(default)]
    pub max: Option<serde_json::Number>,
    /// The argument is a number `>` this.
    #[serde(default)]
    pub exclusive_min: Option<serde_json::Number>,
    /// The argument is a number `<` this.
    #[serde(default)]
    pub exclusive_max: Option<serde_json::Number>,
    /// The argument is a string starting with this.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The argument is a clean absolute path (no `.`, `..` or empty segments, no `\`) equal to or below this one.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// The argument is a string matching this glob (`*` and `?` within a `/` segment, `**` across segments).
    #[serde(default)]
    pub glob: Option<String>,
    /// `true`: the argument is present and not null; `false`: it is absent or null.
    #[serde(default)]
    pub present: Option<bool>,
}

/// Who granted a time-boxed exception, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exception {
    /// The person or team that approved the exception.
    pub approver: String,
    /// Ticket reference.
    pub ticket: String,
    /// RFC 3339 time the exception was granted; `expires_at - granted_at` may not exceed
    /// `exception_policy.max_duration_days`.
    pub granted_at: String,
}

/// Revoked identities. Revocation wins over every rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocations {
    /// Exact agent ids.
    #[serde(default)]
    pub agents: Vec<String>,
    /// Task ids.
    #[serde(default)]
    pub tasks: Vec<String>,
    /// Token ids (`jti`).
    #[serde(default)]
    pub token_ids: Vec<String>,
    /// Key ids of bundle-signing keys that gateways must refuse from now on.
    #[serde(default)]
    pub signing_keys: Vec<String>,
}

/// Bundle-wide defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Effect for a request that reaches no tool in the catalog: `deny` (default) or `allow`.
    #[serde(default = "default_deny")]
    pub unknown_tool: Effect,
}

fn default_deny() -> Effect {
    Effect::Deny
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults { unknown_tool: Effect::Deny }
    }
}
