//! Shared fixtures for the core's table-driven tests: a small valid bundle as JSON, and facts builders.

use serde_json::{json, Value};
use warden_core::bundle::Bundle;
use warden_core::compile::{compile, CompiledBundle, ValidationErrors};
use warden_core::facts::{Agent, Facts, Identity, Task};
use warden_core::time::parse_rfc3339;

/// 2026-12-01T00:00:00Z, inside the validity of [`base`].
pub fn now() -> i64 {
    t("2026-12-01T00:00:00Z")
}

pub fn t(s: &str) -> i64 {
    parse_rfc3339(s).unwrap()
}

/// The public key of `policies/examples/keys/TEST-ONLY-issuer-acme-workload.jwk.json`.
pub fn workload_jwk() -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "kid": "acme-workload-test-1", "alg": "EdDSA", "use": "sig",
           "x": "mJJ3AQtTHziLV5zcv6xZ3w-RcEFeArJaETx2QGOuDQU"})
}

/// The public key of the test approval service (the workload key's public part under another `kid`).
pub fn approver_jwk() -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "kid": "acme-approvals-test-1", "alg": "EdDSA", "use": "sig",
           "x": "mJJ3AQtTHziLV5zcv6xZ3w-RcEFeArJaETx2QGOuDQU"})
}

/// The approver `approvals` (what `step_up` rules of the fixtures name).
pub fn approver() -> Value {
    json!({"id": "approvals", "iss": "https://approvals.acme.example", "jwks": {"keys": [approver_jwk()]},
           "algorithms": ["EdDSA"], "max_approval_age_seconds": 600})
}

/// A valid bundle: four tools (one per sensitivity), one issuer, one approver, two rules.
pub fn base() -> Value {
    json!({
        "format": "warden.bundle/v1",
        "revision": 7,
        "issued_at": "2026-11-01T00:00:00Z",
        "expires_at": "2027-12-31T00:00:00Z",
        "owner": "security@acme.example",
        "authority": "policy.acme.example",
        "issuers": [{
            "id": "idp",
            "iss": "https://idp.acme.example",
            "audiences": ["warden"],
            "jwks": {"keys": [workload_jwk()]},
            "algorithms": ["EdDSA"],
            "max_token_lifetime_seconds": 900, "profile": "spiffe_jwt_svid"
        }],
        "approvers": [approver()],
        "tools": [
            {"id": "crm.contacts.read", "sensitivity": "read",
             "http": [{"host": "crm.acme.example", "methods": ["GET"], "path": "/contacts/{id}"}]},
            {"id": "crm.contacts.update", "sensitivity": "write",
             "http": [{"host": "crm.acme.example", "methods": ["PATCH"], "path": "/contacts/{id}"}]},
            {"id": "pay.refunds.create", "sensitivity": "payment",
             "http": [{"host": "pay.acme.example", "methods": ["POST"], "path": "/refunds"}]},
            {"id": "admin.users.delete", "sensitivity": "admin",
             "http": [{"host": "admin.acme.example", "methods": ["DELETE"], "path": "/users/{id}"}]}
        ],
        "rules": [
            {"id": "read-crm", "effect": "allow", "agents": ["spiffe://acme.example/agents/*"], "tools": ["crm.*"],
             "sensitivities": ["read"]},
            {"id": "no-admin", "effect": "deny", "sensitivities": ["admin"]}
        ]
    })
}

pub fn bundle(v: Value) -> Bundle {
    serde_json::from_value(v).unwrap()
}

pub fn try_compile(v: Value) -> Result<CompiledBundle, ValidationErrors> {
    compile(&bundle(v))
}

pub fn compiled(v: Value) -> CompiledBundle {
    match try_compile(v) {
        Ok(b) => b,
        Err(e) => panic!("bundle does not compile:\n{e}"),
    }
}

/// A verified agent of issuer `idp` without task context.
pub fn agent(id: &str) -> Agent {
    Agent {
        id: id.to_string(),
        trust_domain: id.strip_prefix("spiffe://").and_then(|r| r.split('/').next()).unwrap_or("").to_string(),
        issuer: "idp".to_string(),
        token_id: None,
        expires_at: now() + 300,
        task: None,
        delegation: None,
        sender_bound: false,
    }
}

pub fn with_task(mut a: Agent, id: &str, purpose: Option<&str>, expires_at: Option<i64>) -> Agent {
    a.task = Some(Task { id: id.to_string(), purpose: purpose.map(str::to_string), expires_at });
    a
}

/// Facts for a verified agent calling tool `tool` (by id; `None` for no tool) in `environment`.
pub fn facts(b: &CompiledBundle, environment: &str, identity: Identity, tool: Option<&str>) -> Facts {
    let tool = tool.map(|id| b.tool_by_id(id).unwrap_or_else(|| panic!("no tool {id}")));
    Facts { environment: environment.to_string(), identity, tool }
}
