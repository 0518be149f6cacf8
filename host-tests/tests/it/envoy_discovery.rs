//! OAuth discovery (RFC 9728, MCP authorization) through warden.wasm in real Envoy 1.40, by the official MCP Python
//! SDK's auth client (`host-tests/mcp_sdk/discover.py`): from the gateway's 401 it reads `resource_metadata`, fetches
//! the protected-resource metadata the gateway serves, then the authorization server's metadata from a loopback stub
//! this test starts, registers there and builds the authorization URL for the resource (the discovery step only: it
//! stops at the browser redirect). The world it runs in — the stub, the Python SDK's MCP server, Envoy on a port
//! chosen before the bundle names it — is also the TypeScript SDK's (`mcp_sdk_ts`).

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_core::envelope::{self, SigningKey};
use warden_host::envoy::{Envoy, EnvoyOptions};
use warden_host::upstream::{Received, RecordingServer, Reply};

use crate::support::{python, repo};

pub const AGENT: &str = "spiffe://acme.example/agents/support/bot-1";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for(port: u16) {
    let until = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "nothing listens on 127.0.0.1:{port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process killed (by handle) when the test ends, pass or fail.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The SDKs' world: an authorization server stub, the Python SDK's MCP server, and Envoy with warden.wasm in front of
/// it, whose bundle declares the MCP server a protected resource served by the gateway.
pub struct World {
    pub envoy: Envoy,
    /// The stub authorization server: serves its RFC 8414 metadata and a registration endpoint that echoes.
    pub auth_server: RecordingServer,
    /// Its issuer identifier (`http://127.0.0.1:PORT`), also the `iss` of the bundle's agent-token issuer.
    pub issuer: String,
    /// The MCP endpoint through Envoy (`http://127.0.0.1:PORT/mcp`): the resource identifier too.
    pub url: String,
    /// A valid agent token for [`AGENT`].
    pub token: String,
    _server: Killed,
}

fn read_json(p: PathBuf) -> Value {
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// The stub's answers: its metadata document, and a registration that echoes the client metadata with a client id.
fn stub_reply(issuer: &str, r: &Received) -> Reply {
    match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/.well-known/oauth-authorization-server") => Reply::json(
            200,
            &json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/authorize"),
                "token_endpoint": format!("{issuer}/token"),
                "registration_endpoint": format!("{issuer}/register"),
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["none"]
            }),
        ),
        ("POST", "/register") => {
            let mut client: Value = serde_json::from_slice(&r.body).unwrap_or_else(|_| json!({}));
            client["client_id"] = json!("stub-client-1");
            client["token_endpoint_auth_method"] = json!("none");
            Reply::json(201, &client)
        }
        _ => Reply::new(404),
    }
}

impl World {
    pub fn start() -> World {
        let keys = repo().join("policies/examples/keys");
        let auth_server = RecordingServer::start(Arc::new(|_: &Received| Reply::new(503))).expect("stub");
        let issuer = format!("http://{}", auth_server.addr);
        let stub_issuer = issuer.clone();
        auth_server.respond_with(Arc::new(move |r: &Received| stub_reply(&stub_issuer, r)));

        let envoy_port = free_port();
        let url = format!("http://127.0.0.1:{envoy_port}/mcp");
        let now = crate::support::envoy::now();
        let at = |t: i64| warden_core::time::format_rfc3339(t);
        let issuer_public = read_json(keys.join("TEST-ONLY-issuer-acme-workload.public.jwk.json"));
        let bundle = json!({
            "format": "warden.bundle/v1", "revision": 1, "issued_at": at(now - 60), "expires_at": at(now + 86_400),
            "owner": "security@acme.example", "authority": "policy.acme.example",
            "issuers": [{"id": "acme-oauth", "iss": issuer, "audiences": [url, "warden"],
                         "jwks": {"keys": [issuer_public]}, "algorithms": ["EdDSA"],
                         "max_token_lifetime_seconds": 900, "profile": "spiffe_jwt_svid"}],
            "approvers": [{"id": "demo-approvals", "iss": "https://approvals.acme.example",
                           "jwks": {"keys": [issuer_public]}, "algorithms": ["EdDSA"], "max_approval_age_seconds": 300}],
            "mcp_servers": [{"name": "demo", "path": "/mcp"}],
            "protected_resources": [{"resource": url, "mcp_server": "demo", "authorization_servers": [issuer],
                                     "scopes_supported": ["mcp:tools"], "resource_name": "Warden test tools"}],
            "tools": [
                {"id": "demo.lookup", "sensitivity": "read", "mcp": [{"server": "demo", "tool": "lookup"}]},
                {"id": "demo.refund", "sensitivity": "payment", "mcp": [{"server": "demo", "tool": "refund"}]},
                {"id": "demo.wipe", "sensitivity": "admin", "mcp": [{"server": "demo", "tool": "wipe"}]}
            ],
            "rules": [
                {"id": "lookup", "effect": "allow", "agents": ["spiffe://acme.example/agents/support/*"],
                 "tools": ["demo.lookup"]},
                {"id": "refund-small", "effect": "allow", "agents": ["spiffe://acme.example/agents/support/*"],
                 "tools": ["demo.refund"], "conditions": [{"argument": "/amount", "exclusive_min": 0, "max": 100}]},
                {"id": "refund-large", "effect": "step_up", "agents": ["spiffe://acme.example/agents/support/*"],
                 "tools": ["demo.refund"], "conditions": [{"argument": "/amount", "exclusive_min": 100, "max": 5000}],
                 "step_up": {"approvers": ["demo-approvals"]}},
                {"id": "no-wipe", "effect": "deny", "tools": ["demo.wipe"]}
            ]
        });
        let authority = SigningKey::from_jwk(&read_json(keys.join("TEST-ONLY-authority.jwk.json"))).unwrap();
        let config = json!({
            "environment": "prod",
            "authority": "policy.acme.example",
            "bundle_keys": read_json(keys.join("TEST-ONLY-authority.jwks.json")),
            "inline_bundle": envelope::sign(bundle.to_string().as_bytes(), &authority),
        });
        let agent_key = SigningKey::from_jwk(&read_json(keys.join("TEST-ONLY-issuer-acme-workload.jwk.json"))).unwrap();
        let claims = json!({"iss": issuer, "sub": AGENT, "aud": url, "iat": now, "exp": now + 600, "jti": "sdk-1"});
        let token = envelope::sign_typed(claims.to_string().as_bytes(), &agent_key, "JWT");

        let server_port = free_port();
        let server = Command::new(python())
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mcp_sdk/server.py"))
            .arg(server_port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run the test Python ({e}): run scripts/python-env.sh"));
        let server = Killed(server);
        wait_for(server_port);
        let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], server_port));
        let opts = EnvoyOptions::new(crate::support::warden_wasm(), config.to_string(), upstream)
            .listener_port(envoy_port)
            .concurrency(1);
        let envoy = Envoy::start(&opts).unwrap_or_else(|e| panic!("{e}"));
        World { envoy, auth_server, issuer, url, token, _server: server }
    }

    /// What the stub was asked, as `METHOD path`.
    pub fn stub_requests(&self) -> Vec<String> {
        self.auth_server.received().iter().map(|r| format!("{} {}", r.method, r.path)).collect()
    }

    /// The decision records' reasons in the access log, in order.
    pub fn reasons(&self) -> Vec<String> {
        self.envoy
            .access_log()
            .iter()
            .filter_map(|e| e.record.as_ref().and_then(|r| r["reason"].as_str().map(str::to_string)))
            .collect()
    }
}

#[test]
fn the_python_sdk_discovers_the_authorization_server_through_envoy() {
    let w = World::start();
    let out = Command::new(python())
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mcp_sdk/discover.py"))
        .arg(&w.url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "discover.py: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(
        seen["resource_metadata"],
        json!({"resource": w.url, "authorization_servers": [w.issuer],
               "bearer_methods_supported": ["header"], "scopes_supported": ["mcp:tools"],
               "resource_name": "Warden test tools"}),
        "{seen}"
    );
    assert_eq!(seen["authorization_server"], w.issuer.as_str(), "{seen}");
    assert_eq!(seen["issuer"], w.issuer.as_str(), "{seen}");
    assert_eq!(seen["client_id"], "stub-client-1", "{seen}");
    let authorize = seen["authorize"].as_str().unwrap_or_else(|| panic!("no authorization URL: {seen}"));
    assert!(authorize.starts_with(&format!("{}/authorize?", w.issuer)), "{authorize}");
    let encoded: String = w.url.replace(':', "%3A").replace('/', "%2F");
    assert!(authorize.contains(&format!("resource={encoded}")), "RFC 8707 resource for the MCP server: {authorize}");
    assert!(authorize.contains("scope=mcp%3Atools"), "{authorize}");
    // The SDK followed the gateway: a 401 without token, the metadata the gateway served, then the stub.
    let reasons = w.reasons();
    assert!(reasons.starts_with(&["identity_missing".to_string(), "resource_metadata".to_string()]), "{reasons:?}");
    assert_eq!(w.stub_requests(), vec!["GET /.well-known/oauth-authorization-server", "POST /register"]);
}
