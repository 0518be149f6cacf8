//! Helpers for the end-to-end tests of `warden.wasm` in the host: finding the module, a test world (authority key,
//! token issuer key, a realistic bundle), signed bundles, agent tokens, plugin configurations, and reading replies
//! and decision records.
//!
//! Keys are generated fresh for each test process; nothing here is a real secret. Time is the host's manual clock,
//! starting at [`T0`].
#![allow(dead_code)] // each test module uses a different part of this module

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

pub use super::{warden_module as module, IssuerKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use warden_core::envelope::{self, SigningKey};
use warden_host::{
    Clock, Exchange, HttpRequest, LogEntry, LogLevel, Plugin, PluginConfig, RecordingUpstream, StartError,
    UpstreamResponse,
};

/// Host clock at plugin start (2026-05-28T20:26:40Z), seconds since the epoch.
pub const T0: i64 = 1_780_000_000;
/// The bundle's `issued_at` and `expires_at`, relative to [`T0`].
pub const BUNDLE_ISSUED: i64 = T0 - 3600;
pub const BUNDLE_EXPIRES: i64 = T0 + 86_400;
pub const REVISION: u64 = 41;

pub const AUTHORITY: &str = "policy.acme.example";
pub const AUTHORITY_KID: &str = "acme-authority-test";
pub const ENVIRONMENT: &str = "prod";
pub const ISSUER_ID: &str = "acme-workload";
pub const ISS: &str = "https://spire.acme.example";
pub const ISSUER_KID: &str = "acme-workload-test";
pub const AUDIENCE: &str = "warden";
/// Issuer limits in the test bundle.
pub const MAX_LIFETIME: i64 = 900;
pub const SKEW: i64 = 30;

pub const CRM: &str = "crm.acme.example";
pub const BILLING: &str = "billing.acme.example";
pub const SUPPORT_BOT: &str = "spiffe://acme.example/agents/support/bot-1";
pub const REVOKED_BOT: &str = "spiffe://acme.example/agents/support/bot-revoked";
pub const TASK_ID: &str = "T-1042";
pub const TASK_PURPOSE: &str = "customer-support";
/// An agent with a time-boxed exception for `admin.users.delete`, which ends at [`EXCEPTION_ENDS`].
pub const EXCEPTION_BOT: &str = "spiffe://acme.example/agents/support/bot-2";
pub const EXCEPTION_ENDS: i64 = T0 + 600;
pub const REVOKED_JTI: &str = "jti-revoked";
/// The approval service of the test bundle, and the longest approval its step-up rule accepts.
pub const APPROVER_ID: &str = "payments-approvals";
pub const APPROVER_ISS: &str = "https://approvals.acme.example";
pub const APPROVER_KID: &str = "payments-approvals-test";
pub const APPROVAL_MAX_AGE: i64 = 300;
/// When the exception of [`EXCEPTION_BOT`] was granted.
pub const EXCEPTION_GRANTED: i64 = T0 - 86_400;
pub const REVOKED_TASK: &str = "T-revoked";

/// Every field of the decision record, as the filter documents it (lib.rs, README "Decision records").
pub const RECORD_FIELDS: [&str; 22] = [
    "type",
    "decision_id",
    "timestamp",
    "environment",
    "agent",
    "issuer",
    "task",
    "tool",
    "method",
    "path",
    "host",
    "decision",
    "mode",
    "rule",
    "reason",
    "bundles",
    "latency_ns",
    "vm",
    "approval",
    "exception",
    "shadow",
    "arguments_digest",
];

// ---------------------------------------------------------------------------------------------------------------
// Keys

/// The keys of one test process.
pub struct World {
    /// The policy authority (signs bundles; pinned in the plugin configuration).
    pub authority: SigningKey,
    /// The agent token issuer the bundle trusts.
    pub issuer: IssuerKey,
    /// The approval service the bundle trusts for step-up rules ([`APPROVER_ID`]).
    pub approver: IssuerKey,
}

pub fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| World {
        authority: SigningKey::generate(envelope::Algorithm::EdDSA, AUTHORITY_KID).expect("authority key"),
        issuer: IssuerKey::generate(ISSUER_KID),
        approver: IssuerKey::generate(APPROVER_KID),
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Bundles

fn rfc3339(t: i64) -> String {
    warden_core::time::format_rfc3339(t)
}

/// The test bundle (revision [`REVISION`]): a support agent that may read CRM contacts, may not write them, needs
/// step-up for refunds, has no rule for admin tools (except a time-boxed exception for [`EXCEPTION_BOT`]); one
/// revoked agent, task and token id; unknown tools denied.
pub fn bundle() -> Value {
    bundle_at(T0)
}

/// [`bundle`] with every time relative to `t0` instead of [`T0`] (issued an hour before, expiring a day after, the
/// exception granted a day before and ending 600 s after): for hosts on the real clock, such as Envoy.
pub fn bundle_at(t0: i64) -> Value {
    let at = |t: i64| rfc3339(t - T0 + t0);
    json!({
        "format": "warden.bundle/v1",
        "revision": REVISION,
        "issued_at": at(BUNDLE_ISSUED),
        "expires_at": at(BUNDLE_EXPIRES),
        "owner": "identity-security@acme.example",
        "authority": AUTHORITY,
        "issuers": [{
            "id": ISSUER_ID,
            "iss": ISS,
            "audiences": [AUDIENCE],
            "jwks": {"keys": [world().issuer.public.clone()]},
            "algorithms": ["EdDSA"],
            "max_token_lifetime_seconds": MAX_LIFETIME, "profile": "spiffe_jwt_svid",
            "clock_skew_seconds": SKEW,
            "claims": {"agent_id": "sub", "task_id": "task_id", "task_purpose": "task_purpose",
                       "task_expires_at": "task_exp"}
        }],
        "tools": [
            {"id": "crm.contacts.read", "sensitivity": "read",
             "http": [{"host": CRM, "methods": ["GET"], "path": "/api/v2/contacts/{contact_id}"}]},
            {"id": "crm.contacts.update", "sensitivity": "write",
             "http": [{"host": CRM, "methods": ["PUT", "PATCH"], "path": "/api/v2/contacts/{contact_id}"}]},
            {"id": "billing.refunds.create", "sensitivity": "payment",
             "http": [{"host": BILLING, "methods": ["POST"], "path": "/v1/refunds"}]},
            {"id": "admin.users.delete", "sensitivity": "admin",
             "http": [{"host": CRM, "methods": ["DELETE"], "path": "/admin/users/{user_id}"}]}
        ],
        "rules": [
            {"id": "support-read-crm", "effect": "allow",
             "agents": ["spiffe://acme.example/agents/support/*"], "tools": ["crm.contacts.read"]},
            {"id": "support-no-writes", "effect": "deny",
             "agents": ["spiffe://acme.example/agents/support/*"], "tools": ["crm.contacts.update"]},
            {"id": "refunds-need-approval", "effect": "step_up",
             "agents": ["spiffe://acme.example/agents/support/*"], "sensitivities": ["payment"],
             "step_up": {"approvers": [APPROVER_ID], "max_age_seconds": APPROVAL_MAX_AGE}},
            {"id": "bot-2-cleanup-exception", "effect": "allow", "agents": [EXCEPTION_BOT],
             "tools": ["admin.users.delete"], "expires_at": at(EXCEPTION_ENDS),
             "exception": {"approver": "ciso@acme.example", "ticket": "SEC-1234",
                           "granted_at": at(EXCEPTION_GRANTED)}}
        ],
        "approvers": [{
            "id": APPROVER_ID,
            "iss": APPROVER_ISS,
            "jwks": {"keys": [world().approver.public.clone()]},
            "algorithms": ["EdDSA"],
            "max_approval_age_seconds": 600
        }],
        "revocations": {"agents": [REVOKED_BOT], "tasks": [REVOKED_TASK], "token_ids": [REVOKED_JTI]},
        "defaults": {"unknown_tool": "deny"}
    })
}

/// The bundle JSON signed by `key` (JWS compact).
pub fn sign_with(bundle: &Value, key: &SigningKey) -> String {
    envelope::sign(bundle.to_string().as_bytes(), key)
}

/// The bundle JSON signed by the test authority.
pub fn sign(bundle: &Value) -> String {
    sign_with(bundle, &world().authority)
}

// ---------------------------------------------------------------------------------------------------------------
// Plugin configuration and start-up

/// The cluster the `control` section of [`config`] names; [`try_start`] maps it to a loopback port that refuses
/// connections, so no bundle ever arrives from it.
pub const CONTROL_CLUSTER: &str = "warden-control";

/// A plugin configuration pinning the test authority, with this inline bundle. Without one, a `control` endpoint
/// is configured instead (a configuration with neither is refused) whose cluster refuses connections: the filter
/// then has no bundle and answers 503 `no_active_bundle`.
pub fn config(inline_bundle: Option<&str>) -> Value {
    let mut c = json!({
        "environment": ENVIRONMENT,
        "authority": AUTHORITY,
        "bundle_keys": {"keys": [world().authority.public_jwk()]},
    });
    match inline_bundle {
        Some(b) => c["inline_bundle"] = json!(b),
        None => c["control"] = json!({"cluster": CONTROL_CLUSTER, "authority": "control.acme.example"}),
    }
    c
}

/// A loopback address where nothing listens (bound, then released).
pub fn refused_address() -> std::net::SocketAddr {
    static ADDR: OnceLock<std::net::SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        l.local_addr().expect("local addr")
    })
}

/// The default configuration: the test bundle inline, enforce mode.
pub fn default_config() -> Value {
    config(Some(&sign(&bundle())))
}

/// Starts `warden.wasm` with this configuration on `workers` VMs and a manual clock at [`T0`].
pub fn try_start(config: &Value, workers: usize) -> Result<Plugin, StartError> {
    try_start_raw(config.to_string().into_bytes(), workers)
}

pub fn try_start_raw(config: Vec<u8>, workers: usize) -> Result<Plugin, StartError> {
    let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(T0 as u64));
    Plugin::start(
        &module(),
        PluginConfig::new(config).workers(workers).clock(clock).cluster(CONTROL_CLUSTER, refused_address()),
    )
}

/// [`start`] on one VM, the host and the filter's `allow_on_headers_stop_iteration` both set to `hold` (they must
/// agree, as in Envoy: a filter that pauses at headers on a host that does not allow it never gets the body).
pub fn start_holding(config: &Value, hold: bool) -> Plugin {
    let mut c = config.clone();
    c["allow_on_headers_stop_iteration"] = json!(hold);
    let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(T0 as u64));
    Plugin::start(
        &module(),
        PluginConfig::new(c.to_string().into_bytes())
            .workers(1)
            .clock(clock)
            .cluster(CONTROL_CLUSTER, refused_address())
            .allow_on_headers_stop_iteration(hold),
    )
    .unwrap_or_else(|e| panic!("plugin did not start: {e}; logs: {:#?}", e.logs()))
}

pub fn start(config: &Value, workers: usize) -> Plugin {
    match try_start(config, workers) {
        Ok(p) => p,
        Err(e) => panic!("plugin did not start: {e}; logs: {:#?}", e.logs()),
    }
}

/// The host clock of a plugin, in seconds since the epoch.
pub fn now(p: &Plugin) -> i64 {
    (p.clock().now_nanos() / 1_000_000_000) as i64
}

/// Advances the plugin's manual clock to `t` (seconds since the epoch).
pub fn advance_to(p: &mut Plugin, t: i64) {
    let cur = now(p);
    assert!(t >= cur, "cannot go back in time from {cur} to {t}");
    p.advance(Duration::from_secs((t - cur) as u64));
}

// ---------------------------------------------------------------------------------------------------------------
// Tokens

static JTI: AtomicU64 = AtomicU64::new(1);

/// Claims of a valid token for `agent` issued at `iat`, living 300 s, with task context.
pub fn claims(agent: &str, iat: i64) -> Value {
    json!({
        "iss": ISS,
        "sub": agent,
        "aud": AUDIENCE,
        "iat": iat,
        "exp": iat + 300,
        "jti": format!("jti-{}", JTI.fetch_add(1, Ordering::Relaxed)),
        "task_id": TASK_ID,
        "task_purpose": TASK_PURPOSE,
    })
}

/// A token with these claims, signed by `key` (EdDSA, `kid` of the key).
pub fn token_with(claims: &Value, key: &IssuerKey) -> String {
    key.sign(claims)
}

/// A token with these claims from the trusted issuer.
pub fn token(claims: &Value) -> String {
    token_with(claims, &world().issuer)
}

/// A valid token for [`SUPPORT_BOT`] issued at [`T0`].
pub fn support_token() -> String {
    token(&claims(SUPPORT_BOT, T0))
}

/// A JWT with arbitrary header and payload JSON and a signature of 64 garbage bytes.
pub fn forged_token(header: &Value, payload: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

// ---------------------------------------------------------------------------------------------------------------
// Requests and what came back

pub fn request(method: &str, host: &str, path: &str) -> HttpRequest {
    HttpRequest::new(method, path).authority(host)
}

/// `request` with `authorization: Bearer <token>`.
pub fn authed(method: &str, host: &str, path: &str, token: &str) -> HttpRequest {
    request(method, host, path).header("authorization", &format!("Bearer {token}"))
}

pub fn upstream() -> RecordingUpstream {
    RecordingUpstream::new(UpstreamResponse::ok("from the tool").header("content-type", "text/plain"))
}

/// Sends on worker 0 through a fresh recording upstream.
pub fn send(p: &mut Plugin, req: HttpRequest) -> Exchange {
    let mut up = upstream();
    p.send(0, req, &mut up)
}

/// The local reply's JSON body.
pub fn reply_json(x: &Exchange) -> Value {
    assert!(x.is_local_reply(), "expected a local reply, got status {:?}: {}", x.status, x.body_str());
    serde_json::from_slice(&x.body).unwrap_or_else(|e| panic!("reply body is not JSON ({e}): {}", x.body_str()))
}

/// Decision records (parsed) among these log lines.
pub fn records_in(logs: &[LogEntry]) -> Vec<Value> {
    logs.iter()
        .filter_map(|l| serde_json::from_str::<Value>(&l.message).ok())
        .filter(|v| v["type"] == "warden.decision")
        .collect()
}

/// The one decision record of this exchange, from the log (checked against the filter state copy).
pub fn record(x: &Exchange) -> Value {
    let lines: Vec<&LogEntry> = x.logs.iter().filter(|l| l.message.contains("\"warden.decision\"")).collect();
    assert_eq!(lines.len(), 1, "expected one decision record in {:#?}", x.logs);
    let from_log: Value = serde_json::from_str(&lines[0].message).expect("record is JSON");
    // Requests an exception allowed are logged a level higher.
    let level = if from_log["exception"].is_null() { LogLevel::Info } else { LogLevel::Warn };
    assert_eq!(lines[0].level, level, "decision record level: {from_log}");
    let state = x.filter_state_str("wasm.warden_decision").expect("record in filter state wasm.warden_decision");
    let from_state: Value = serde_json::from_str(&state).expect("filter state record is JSON");
    assert_eq!(from_log, from_state, "log record and filter-state record differ");
    from_log
}

/// Checks the record has exactly the documented fields.
pub fn assert_record_shape(r: &Value) {
    let obj = r.as_object().expect("record is an object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    let mut want = RECORD_FIELDS.to_vec();
    want.sort();
    assert_eq!(keys, want, "record fields: {r}");
    assert_eq!(r["type"], "warden.decision");
    assert!(is_uuid_v4(r["decision_id"].as_str().unwrap_or("")), "decision_id: {r}");
    assert!(r["latency_ns"].is_u64(), "latency_ns: {r}");
}

pub fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b.iter().enumerate().all(|(i, c)| [8, 13, 18, 23].contains(&i) || matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}

/// Asserts a refusal: status, JSON body fields, the standard headers, and that the decision id in the header, the
/// body and the decision record agree. Returns (body, record).
pub fn assert_refused(x: &Exchange, status: u16, decision: &str, reason: &str, rule: &str) -> (Value, Value) {
    assert_eq!(x.status, Some(status), "status; body {}; logs {:#?}", x.body_str(), x.logs);
    assert!(!x.upstream_called, "the upstream must not be contacted on a refusal");
    assert!(!x.trapped, "trapped: {:#?}", x.logs);
    let body = reply_json(x);
    assert_eq!(body["decision"], decision, "decision in {body}");
    assert_eq!(body["reason"], reason, "reason in {body}");
    assert_eq!(body["rule"], rule, "rule in {body}");
    let id = body["decision_id"].as_str().unwrap_or_else(|| panic!("no decision_id in {body}"));
    assert!(is_uuid_v4(id), "decision_id {id}");
    assert_eq!(x.header("x-warden-decision-id"), Some(id), "x-warden-decision-id header vs body");
    assert_eq!(x.header("content-type"), Some("application/json"));
    assert_eq!(x.header("cache-control"), Some("no-store"));
    let r = record(x);
    assert_record_shape(&r);
    assert_eq!(r["decision_id"], id, "record decision_id vs reply");
    assert_eq!(r["reason"], reason);
    assert_eq!(r["rule"], rule);
    (body, r)
}

/// Names and values of a forwarded request's headers with this name (any number).
pub fn all_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
}

// ---------------------------------------------------------------------------------------------------------------
// MCP

pub const MCP_HOST: &str = "mcp.acme.example";
pub const BATCH_HOST: &str = "batch.mcp.acme.example";

/// The support bundle (times relative to `t0`, see [`bundle_at`]) plus two MCP servers (one accepting batches),
/// tools with argument rules, a resource and a prompt.
pub fn mcp_bundle_at(t0: i64) -> Value {
    let mut b = bundle_at(t0);
    b["mcp_servers"] = json!([
        {"name": "payments", "host": MCP_HOST, "path": "/mcp"},
        {"name": "batching", "host": BATCH_HOST, "path": "/mcp", "batches": true}
    ]);
    let tools = b["tools"].as_array_mut().unwrap();
    tools.extend([
        json!({"id": "mcp.lookup", "sensitivity": "read",
               "mcp": [{"server": "payments", "tool": "lookup"}, {"server": "batching", "tool": "lookup"}]}),
        json!({"id": "mcp.refund", "sensitivity": "write",
               "mcp": [{"server": "payments", "tool": "refund"}, {"server": "batching", "tool": "refund"}]}),
        json!({"id": "mcp.wipe", "sensitivity": "write",
               "mcp": [{"server": "payments", "tool": "wipe"}, {"server": "batching", "tool": "wipe"}]}),
        json!({"id": "mcp.docs", "sensitivity": "read", "mcp": [{"server": "payments", "resource": "docs://public/*"}]}),
        json!({"id": "mcp.secrets", "sensitivity": "admin",
               "mcp": [{"server": "payments", "resource": "docs://secret/*"}]}),
        json!({"id": "mcp.summary", "sensitivity": "read", "mcp": [{"server": "payments", "prompt": "summary"}]}),
    ]);
    let rules = b["rules"].as_array_mut().unwrap();
    rules.extend([
        json!({"id": "mcp-lookup", "effect": "allow", "agents": ["spiffe://acme.example/agents/support/*"],
               "tools": ["mcp.lookup"]}),
        json!({"id": "refund-small", "effect": "allow", "agents": ["spiffe://acme.example/agents/support/*"],
               "tools": ["mcp.refund"], "conditions": [{"argument": "/amount", "exclusive_min": 0, "max": 100}]}),
        json!({"id": "refund-large", "effect": "step_up", "agents": ["spiffe://acme.example/agents/support/*"],
               "tools": ["mcp.refund"], "conditions": [{"argument": "/amount", "exclusive_min": 100, "max": 5000}],
               "step_up": {"approvers": [APPROVER_ID]}}),
        json!({"id": "no-wipe", "effect": "deny", "tools": ["mcp.wipe"]}),
        json!({"id": "read-docs", "effect": "allow", "agents": ["spiffe://acme.example/agents/support/*"],
               "tools": ["mcp.docs", "mcp.summary"]}),
    ]);
    b
}
