//! The official MCP TypeScript SDK (`@modelcontextprotocol/sdk`, pinned in `host-tests/mcp_sdk_ts/package.json` and
//! its lock file, installed by `scripts/test.sh` with `npm ci`) as a client through warden.wasm in real Envoy 1.40,
//! in front of the Python SDK's MCP server (`envoy_discovery::World`): what it surfaces to its caller for an allowed
//! call, a deny, a step-up, an invalid argument and a missing token, and its OAuth discovery from the gateway's 401.
//!
//! What it surfaces (SDK 1.32.2): the Streamable HTTP transport turns every non-2xx answer into a
//! `StreamableHTTPError` whose `code` is the HTTP status and whose message carries the body — Warden's JSON-RPC error
//! with its `code` and `data` — so a policy refusal (403) reaches the caller as that error, not as an `McpError`. A
//! 401 without an auth provider is the same error with 401; with one, the SDK runs discovery and asks its provider to
//! send the user to the authorization server (`UnauthorizedError`). Needs node ≥ 20; skipped with a loud message when
//! node is absent.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

use crate::envoy_discovery::World;

fn node() -> Option<PathBuf> {
    let out = Command::new("node").arg("--version").output().ok()?;
    out.status.success().then(|| PathBuf::from("node"))
}

/// The JSON-RPC error inside a `StreamableHTTPError` message (`Error POSTing to endpoint: {...}`).
fn rpc_error(message: &str) -> Value {
    let json = message.find('{').map(|i| &message[i..]).unwrap_or_else(|| panic!("no JSON in {message:?}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

#[test]
fn the_typescript_sdk_through_envoy() {
    let Some(node) = node() else {
        eprintln!(
            "\n!!! SKIPPED mcp_sdk_ts: node is not installed, so the MCP TypeScript SDK was NOT tested \
             (install Node.js >= 20 and run scripts/test.sh)\n"
        );
        return;
    };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mcp_sdk_ts");
    assert!(
        dir.join("node_modules/@modelcontextprotocol/sdk/package.json").exists(),
        "the TypeScript SDK is not installed: run scripts/test.sh, or npm ci --prefix {}",
        dir.display()
    );
    let w = World::start();
    let out =
        Command::new(node).arg(dir.join("client.mjs")).arg(&w.url).arg(&w.token).current_dir(&dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "client.mjs: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));

    assert_eq!(seen["tools"], json!(["lookup", "refund"]), "tools/list is filtered: {seen}");
    assert_eq!(seen["lookup"], "order o-1: shipped");

    // Refusals: StreamableHTTPError, code = the HTTP status, the message holds Warden's JSON-RPC error.
    for (what, status, code, reason, rule) in [
        ("deny", 403, -31001, "denied_by_rule", "no-wipe"),
        ("step_up", 403, -31002, "step_up_required", "refund-large"),
        ("invalid_argument", 403, -31001, "invalid_arguments", "refund-large"),
    ] {
        let e = &seen["calls"][what];
        assert_eq!(e["class"], "StreamableHTTPError", "{what}: {e}");
        assert_eq!(e["code"], status, "{what}: {e}");
        let message = e["message"].as_str().unwrap();
        assert!(message.starts_with("Streamable HTTP error: Error POSTing to endpoint: {"), "{what}: {message}");
        let rpc = rpc_error(message);
        assert_eq!(rpc["error"]["code"], code, "{what}: {rpc}");
        assert_eq!(rpc["error"]["data"]["reason"], reason, "{what}: {rpc}");
        assert_eq!(rpc["error"]["data"]["rule"], rule, "{what}: {rpc}");
        assert!(rpc["id"].is_number(), "the request's id is echoed: {rpc}");
    }
    let step_up = rpc_error(seen["calls"]["step_up"]["message"].as_str().unwrap());
    assert_eq!(step_up["error"]["data"]["approval"]["tool"], "demo.refund", "{step_up}");
    let invalid = rpc_error(seen["calls"]["invalid_argument"]["message"].as_str().unwrap());
    assert_eq!(invalid["error"]["data"]["argument"]["pointer"], "/amount", "{invalid}");

    // No token and no auth provider: the 401 as the same error class, the identity code inside.
    let e = &seen["missing_token"];
    assert_eq!((e["class"].as_str(), e["code"].as_i64()), (Some("StreamableHTTPError"), Some(401)), "{e}");
    let rpc = rpc_error(e["message"].as_str().unwrap());
    assert_eq!(
        (rpc["error"]["code"].as_i64(), rpc["error"]["data"]["reason"].as_str()),
        (Some(-31003), Some("identity_missing"))
    );

    // With an auth provider: discovery from resource_metadata, the gateway's document, the stub's metadata.
    let d = &seen["discovery"];
    assert_eq!(d["error"]["class"], "UnauthorizedError", "{d}");
    let metadata_url = w.url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp");
    assert_eq!(d["resource_metadata_url"], metadata_url.as_str(), "read from the 401's resource_metadata: {d}");
    assert_eq!(
        d["resource_metadata"],
        json!({"resource": w.url, "authorization_servers": [w.issuer], "bearer_methods_supported": ["header"],
               "scopes_supported": ["mcp:tools"], "resource_name": "Warden test tools"}),
        "{d}"
    );
    assert_eq!(d["authorization_server"], w.issuer.as_str(), "{d}");
    assert_eq!(d["issuer"], w.issuer.as_str(), "{d}");
    assert_eq!(d["client_id"], "stub-client-1", "{d}");
    let authorize = d["authorize"].as_str().unwrap_or_else(|| panic!("no authorization URL: {d}"));
    assert!(authorize.starts_with(&format!("{}/authorize?", w.issuer)), "{authorize}");
    let encoded: String = w.url.replace(':', "%3A").replace('/', "%2F");
    assert!(authorize.contains(&format!("resource={encoded}")), "RFC 8707 resource for the MCP server: {authorize}");
    assert!(
        w.stub_requests().contains(&"GET /.well-known/oauth-authorization-server".to_string()),
        "{:?}",
        w.stub_requests()
    );
    assert!(w.reasons().contains(&"resource_metadata".to_string()), "{:?}", w.reasons());
}
