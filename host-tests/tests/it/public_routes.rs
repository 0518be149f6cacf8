//! Public routes and OAuth discovery (RFC 9728) through real Envoy 1.40, each request also run through the
//! in-process host and compared (`support::envoy::differential`): a public route goes on without identity — the
//! token it carries is not read, no identity header goes upstream and the client's copies are removed, the path is
//! normalized, the record says `public_route`; a CORS preflight reaches an MCP endpoint, a plain `OPTIONS` does
//! not; the gateway serves a protected resource's metadata document itself; every 401 points to it
//! (`resource_metadata` in `WWW-Authenticate`).

use std::sync::OnceLock;

use serde_json::json;

use crate::support::envoy::{differential, now, Gateway};
use crate::support::filter::{
    authed, claims, config, mcp_bundle_at, request, sign, token, CRM, ISS, MCP_HOST, SUPPORT_BOT,
};

const TOOLS_METADATA: &str = "https://mcp.acme.example/.well-known/oauth-protected-resource/mcp";
const CRM_METADATA: &str = "https://crm.acme.example/.well-known/oauth-protected-resource";

fn gateway() -> &'static Gateway {
    static G: OnceLock<Gateway> = OnceLock::new();
    G.get_or_init(|| {
        let mut b = mcp_bundle_at(now());
        b["public_routes"] = json!([
            {"id": "health", "methods": ["GET", "HEAD"], "path": "/healthz"},
            {"id": "mcp-preflight", "host": MCP_HOST, "path": "/mcp", "cors_preflight": true}
        ]);
        b["protected_resources"] = json!([
            {"resource": "https://mcp.acme.example/mcp", "mcp_server": "payments", "authorization_servers": [ISS],
             "scopes_supported": ["tools"]},
            {"resource": "https://crm.acme.example", "host": CRM, "authorization_servers": [ISS],
             "metadata_url": CRM_METADATA}
        ]);
        Gateway::start(&config(Some(&sign(&b))), false, 2)
    })
}

#[test]
fn a_public_route_goes_on_without_identity_and_is_recorded() {
    // A token that would be refused, and forged identity headers: neither counts on a public route.
    let seen = differential(
        gateway(),
        authed("GET", CRM, "/x/../healthz", "not.a.token")
            .header("x-warden-agent", "spiffe://acme.example/agents/admin/root")
            .header("x-warden-task", "forged"),
    );
    let up = seen.assert_forwarded();
    assert_eq!(up.path, "/healthz", "normalized");
    assert!(up.all("x-warden-agent").is_empty() && up.all("x-warden-task").is_empty(), "{up:#?}");
    let r = seen.record();
    assert_eq!(
        (r["decision"].as_str(), r["reason"].as_str(), r["rule"].as_str()),
        (Some("allow"), Some("public_route"), Some("health"))
    );
    assert!(r["agent"].is_null(), "{r}");
    assert_eq!(up.all("x-warden-decision-id"), vec![r["decision_id"].as_str().unwrap()]);
    // A valid token is not read either: no identity goes upstream.
    let seen = differential(gateway(), authed("GET", CRM, "/healthz", &token(&claims(SUPPORT_BOT, now()))));
    assert!(seen.assert_forwarded().all("x-warden-agent").is_empty());
    assert!(seen.record()["agent"].is_null());
    // Other methods are not public.
    differential(gateway(), request("POST", CRM, "/healthz").body("x")).assert_refused(
        401,
        "deny",
        "identity_missing",
        "default",
    );
}

#[test]
fn a_cors_preflight_reaches_the_mcp_endpoint_and_a_plain_options_does_not() {
    let preflight = || {
        request("OPTIONS", MCP_HOST, "/mcp")
            .header("origin", "https://inspector.example")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type, mcp-protocol-version")
    };
    let seen = differential(gateway(), preflight());
    let up = seen.assert_forwarded();
    assert_eq!(up.header("access-control-request-method"), Some("POST"));
    assert_eq!(seen.record()["reason"], "public_route");
    assert_eq!(seen.record()["rule"], "mcp-preflight");
    // Without the CORS request headers: identity first, as a JSON-RPC error (an MCP route), pointing to discovery.
    let seen = differential(gateway(), request("OPTIONS", MCP_HOST, "/mcp"));
    let body = seen.assert_refused(401, "deny", "identity_missing", "default");
    assert_eq!(body["error"]["code"], -31003, "{body}");
    assert_eq!(
        seen.response.header("www-authenticate"),
        Some(format!("Bearer realm=\"warden\", resource_metadata=\"{TOOLS_METADATA}\"").as_str())
    );
}

#[test]
fn the_gateway_serves_the_protected_resource_metadata() {
    let seen = differential(gateway(), request("GET", MCP_HOST, "/.well-known/oauth-protected-resource/mcp"));
    assert_eq!(seen.response.status, 200, "{seen:#?}");
    assert!(seen.upstream.is_none(), "the gateway answers itself: {seen:#?}");
    assert_eq!(seen.response.header("content-type"), Some("application/json"));
    assert_eq!(seen.response.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        seen.json(),
        json!({"resource": "https://mcp.acme.example/mcp", "authorization_servers": [ISS],
               "bearer_methods_supported": ["header"], "scopes_supported": ["tools"]})
    );
    let r = seen.record();
    assert_eq!((r["decision"].as_str(), r["reason"].as_str()), (Some("allow"), Some("resource_metadata")));
    // The CRM's document is served elsewhere: the gateway does not answer for it (and it is not public here).
    differential(gateway(), request("GET", CRM, "/.well-known/oauth-protected-resource")).assert_refused(
        401,
        "deny",
        "identity_missing",
        "default",
    );
}

#[test]
fn every_401_points_to_the_metadata_of_its_resource() {
    let mcp_call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "lookup"}});
    let seen = differential(
        gateway(),
        authed("POST", MCP_HOST, "/mcp", "not.a.token")
            .header("content-type", "application/json")
            .body(mcp_call.to_string()),
    );
    assert_eq!(seen.response.status, 401, "{seen:#?}");
    let challenge = seen.response.header("www-authenticate").unwrap_or_default().to_string();
    assert!(
        challenge.starts_with(&format!(
            "Bearer realm=\"warden\", resource_metadata=\"{TOOLS_METADATA}\", error=\"invalid_token\", error_description=\""
        )),
        "{challenge}"
    );
    let seen = differential(gateway(), request("GET", CRM, "/api/v2/contacts/42"));
    seen.assert_refused(401, "deny", "identity_missing", "default");
    assert_eq!(
        seen.response.header("www-authenticate"),
        Some(format!("Bearer realm=\"warden\", resource_metadata=\"{CRM_METADATA}\"").as_str())
    );
    // A host no protected resource covers: no resource_metadata.
    let seen = differential(gateway(), request("POST", "billing.acme.example", "/v1/refunds"));
    assert_eq!(seen.response.header("www-authenticate"), Some("Bearer realm=\"warden\""));
}
