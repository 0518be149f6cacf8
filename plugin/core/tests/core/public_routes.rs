//! Public routes and protected resources (RFC 9728): every validation error with its location and message, what
//! a request reaches without identity, and the gate's answers — a public route let through without reading a token
//! or forwarding one, a CORS preflight, the metadata document served, the 401's `resource_metadata`.

use crate::common::{base, compiled, try_compile};
use serde_json::{json, Value};
use warden_core::compile::{CompiledBundle, PublicTarget};
use warden_core::config::GateConfig;
use warden_core::decide;
use warden_core::facts::Peer;
use warden_core::gate::{record, Credentials, Edit, Flow, Next, Request, RequestView};

/// The base bundle with an MCP server, a tool on it, and an issuer `https://idp.acme.example` (the base's).
fn with_mcp() -> Value {
    let mut v = base();
    v["mcp_servers"] = json!([{"name": "tools", "host": "tools.acme.example", "path": "/mcp"}]);
    v["tools"].as_array_mut().unwrap().push(json!({"id": "tools.lookup", "sensitivity": "read",
        "mcp": [{"server": "tools", "tool": "lookup"}]}));
    v["public_routes"] = json!([
        {"id": "health", "methods": ["GET", "HEAD"], "path": "/healthz"},
        {"id": "mcp-preflight", "host": "tools.acme.example", "path": "/mcp", "cors_preflight": true},
        {"id": "crm-preflight", "host": "crm.acme.example", "path": "/contacts/{id}", "cors_preflight": true}
    ]);
    v["protected_resources"] = json!([
        {"resource": "https://tools.acme.example/mcp", "mcp_server": "tools",
         "authorization_servers": ["https://idp.acme.example"], "scopes_supported": ["tools.call"],
         "resource_name": "Acme tools"},
        {"resource": "https://crm.acme.example", "host": "crm.acme.example",
         "authorization_servers": ["https://idp.acme.example"],
         "metadata_url": "https://crm.acme.example/.well-known/oauth-protected-resource"}
    ]);
    v
}

fn errors(v: Value) -> Vec<(String, String)> {
    match try_compile(v) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.into_iter().map(|e| (e.location, e.message)).collect(),
    }
}

#[test]
fn the_example_shape_compiles() {
    assert_eq!(errors(with_mcp()), vec![]);
}

#[test]
fn validation_errors() {
    type Case = (&'static str, fn(&mut Value), &'static [(&'static str, &'static str)]);
    let cases: &[Case] = &[
        (
            "public route over a tool route",
            |v| v["public_routes"][0] = json!({"id": "open", "methods": ["GET"], "path": "/contacts/**"}),
            &[(
                "/public_routes/0",
                "public route \"open\" overlaps the route of tool \"crm.contacts.read\" (/tools/0/http/0): a request \
                 it lets through without identity would reach what needs one; narrow its host, methods or path",
            )],
        ),
        (
            "same path, other method: no overlap",
            |v| v["public_routes"][0] = json!({"id": "open", "methods": ["HEAD"], "path": "/contacts/{id}"}),
            &[],
        ),
        (
            "public route under an MCP server",
            |v| v["public_routes"][0] = json!({"id": "open", "methods": ["GET"], "path": "/mcp/stream"}),
            &[(
                "/public_routes/0",
                "public route \"open\" overlaps MCP server \"tools\" (/mcp_servers/0): a request it lets through \
                 without identity would reach what needs one; narrow its host, methods or path",
            )],
        ),
        (
            "preflight on a tool route that takes any method",
            |v| v["tools"][0]["http"][0]["methods"] = json!([]),
            &[(
                "/public_routes/2",
                "public route \"crm-preflight\" overlaps the route of tool \"crm.contacts.read\" (/tools/0/http/0): a \
                 request it lets through without identity would reach what needs one; narrow its host, methods or \
                 path",
            )],
        ),
        (
            "served metadata over a catch-all tool route",
            |v| v["tools"][1]["http"][0] = json!({"host": "tools.acme.example", "methods": ["GET"], "path": "/**"}),
            &[
                (
                    "/public_routes/0",
                    "public route \"health\" overlaps the route of tool \"crm.contacts.update\" (/tools/1/http/0): a \
                     request it lets through without identity would reach what needs one; narrow its host, methods or \
                     path",
                ),
                (
                    "/protected_resources/0",
                    "the metadata document of \"https://tools.acme.example/mcp\" overlaps the route of tool \
                 \"crm.contacts.update\" (/tools/1/http/0): a request it lets through without identity would reach \
                 what needs one; narrow its host, methods or path",
                ),
            ],
        ),
        (
            "methods",
            |v| {
                v["public_routes"][0]["methods"] = json!([]);
                v["public_routes"][1]["methods"] = json!(["OPTIONS"]);
            },
            &[
                (
                    "/public_routes/0/methods",
                    "a public route lists its methods (e.g. [\"GET\"]), or is a cors_preflight: it never covers every \
                     method",
                ),
                ("/public_routes/1/methods", "a CORS preflight is an OPTIONS request: drop methods, or cors_preflight"),
            ],
        ),
        (
            "ids",
            |v| {
                v["public_routes"][1]["id"] = json!("health");
                v["public_routes"][2]["id"] = json!("read-crm");
            },
            &[
                ("/public_routes/1/id", "duplicate public route id \"health\" (first defined at /public_routes/0)"),
                (
                    "/public_routes/2/id",
                    "same id as the rule at /rules/0: decision records name both as their rule, so they must differ",
                ),
            ],
        ),
        (
            "two public routes for one request",
            |v| {
                v["public_routes"][1] =
                    json!({"id": "health2", "host": "app.example", "methods": ["GET"], "path": "/{x}"})
            },
            &[],
        ),
        (
            "the same public route twice",
            |v| v["public_routes"][1] = json!({"id": "health2", "methods": ["GET"], "path": "/healthz"}),
            &[("/public_routes/1", "public route \"health2\" has the same host, method and path as /public_routes/0")],
        ),
        (
            "resource identifiers",
            |v| {
                v["protected_resources"][0]["resource"] = json!("http://tools.acme.example/mcp");
                v["protected_resources"][1]["resource"] = json!("https://crm.acme.example/api/");
            },
            &[
                (
                    "/protected_resources/0/resource",
                    "invalid resource \"http://tools.acme.example/mcp\": must use https (http only on a loopback host)",
                ),
                (
                    "/protected_resources/1/resource",
                    "invalid resource \"https://crm.acme.example/api/\": drop the trailing \"/\"",
                ),
            ],
        ),
        (
            "what a resource covers",
            |v| {
                v["protected_resources"][0]["host"] = json!("tools.acme.example");
                v["protected_resources"][1] = json!({"resource": "https://x.acme.example", "mcp_server": "nope",
                    "authorization_servers": ["https://idp.acme.example"]});
            },
            &[
                (
                    "/protected_resources/0",
                    "give exactly one of mcp_server and host: the requests this resource covers",
                ),
                ("/protected_resources/1/mcp_server", "no MCP server is named \"nope\""),
            ],
        ),
        (
            "authorization servers the bundle does not trust",
            |v| v["protected_resources"][0]["authorization_servers"] = json!(["https://auth.elsewhere.example", "x"]),
            &[
                (
                    "/protected_resources/0/authorization_servers/0",
                    "no agent-token issuer of this bundle has iss \"https://auth.elsewhere.example\": a client that \
                     follows discovery would get tokens the gateway refuses; add that issuer or name the iss of one",
                ),
                (
                    "/protected_resources/0/authorization_servers/1",
                    "invalid authorization server \"x\": not an absolute URL (scheme://host/path)",
                ),
            ],
        ),
        (
            "a host covered twice",
            |v| {
                v["protected_resources"][0] = json!({"resource": "https://crm.acme.example/v2", "host": "CRM.acme.example",
                "authorization_servers": ["https://idp.acme.example"]})
            },
            &[(
                "/protected_resources/1/host",
                "host \"crm.acme.example\" is already covered by /protected_resources/0",
            )],
        ),
    ];
    for (name, mutate, expected) in cases {
        let mut v = with_mcp();
        mutate(&mut v);
        let want: Vec<(String, String)> = expected.iter().map(|(l, m)| (l.to_string(), m.to_string())).collect();
        assert_eq!(errors(v), want, "case {name}");
    }
}

#[test]
fn what_needs_no_identity() {
    let b = compiled(with_mcp());
    let id = |t: Option<PublicTarget>| match t {
        Some(PublicTarget::Route(i)) => b.public_route_id(i).to_string(),
        Some(PublicTarget::Metadata(i)) => format!("metadata {i}"),
        None => "-".into(),
    };
    for (host, method, path, preflight, want) in [
        ("any.example:8080", "GET", "/healthz", false, "health"),
        ("any.example", "HEAD", "/healthz", false, "health"),
        ("any.example", "POST", "/healthz", false, "-"),
        ("tools.acme.example", "OPTIONS", "/mcp", true, "mcp-preflight"),
        ("tools.acme.example", "OPTIONS", "/mcp", false, "-"),
        ("crm.acme.example", "OPTIONS", "/contacts/7", true, "crm-preflight"),
        ("crm.acme.example", "OPTIONS", "/contacts/7/notes", true, "-"),
        ("TOOLS.acme.example:443", "GET", "/.well-known/oauth-protected-resource/mcp", false, "metadata 0"),
        ("crm.acme.example", "GET", "/.well-known/oauth-protected-resource/mcp", false, "-"),
        ("tools.acme.example", "POST", "/.well-known/oauth-protected-resource/mcp", false, "-"),
        // The second resource points elsewhere: the gateway serves nothing for it.
        ("crm.acme.example", "GET", "/.well-known/oauth-protected-resource", false, "-"),
    ] {
        assert_eq!(id(b.resolve_public(host, method, path, preflight)), want, "{method} {host}{path} {preflight}");
    }
    let d = decide::public(&b, PublicTarget::Route(0));
    assert_eq!(
        (d.outcome.as_str(), d.reason.code(), d.rule_id(), d.http_status()),
        ("allow", "public_route", "health", 200)
    );
    let d = decide::public(&b, PublicTarget::Metadata(0));
    assert_eq!((d.reason.code(), d.rule_id()), ("resource_metadata", "default"));
    let doc: Value = serde_json::from_str(b.resource_document(0).unwrap()).unwrap();
    assert_eq!(
        doc,
        json!({"resource": "https://tools.acme.example/mcp", "authorization_servers": ["https://idp.acme.example"],
               "bearer_methods_supported": ["header"], "scopes_supported": ["tools.call"], "resource_name": "Acme tools"})
    );
    assert_eq!(b.resource_document(1), None);
    let server = b.resolve_mcp_server("tools.acme.example", "/mcp");
    assert_eq!(
        b.resource_metadata_url(server, "tools.acme.example"),
        Some("https://tools.acme.example/.well-known/oauth-protected-resource/mcp")
    );
    assert_eq!(
        b.resource_metadata_url(None, "CRM.acme.example:8443"),
        Some("https://crm.acme.example/.well-known/oauth-protected-resource")
    );
    assert_eq!(b.resource_metadata_url(None, "pay.acme.example"), None);
}

/// A local reply: status, headers, the body as JSON.
type Reply = (u16, Vec<(String, String)>, Value);

/// What the gate did with one request.
struct Seen {
    status: u16,
    record: Value,
    reply: Option<Reply>,
    /// The header edits: removed names, added (name, value).
    removed: Vec<String>,
    added: Vec<(String, String)>,
}

fn run(b: &CompiledBundle, pairs: &[(&str, &str)], end_of_stream: bool) -> Seen {
    let mut config = GateConfig::new("prod");
    config.forward_identity_headers = true;
    let h: Vec<(String, Vec<u8>)> = pairs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect();
    let view = RequestView::scan(&h, &config);
    let time_ns = u64::try_from(crate::common::now()).unwrap() * 1_000_000_000;
    let request = Request {
        view: &view,
        peer: &Peer::given(None),
        credentials: Credentials::Tokens(None),
        decision_id: "00000000-0000-4000-8000-000000000001".to_string(),
        time_ns,
        end_of_stream,
    };
    let (flow, step) = Flow::on_request_headers(&config, Some(b), request);
    let record: Value = serde_json::from_str(&record::build(&flow.record(&config, Some(b), "vm", time_ns))).unwrap();
    let reply = match &step.next {
        Next::Reply(r) => Some((
            r.status,
            r.headers.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            serde_json::from_slice(&r.body).unwrap(),
        )),
        _ => None,
    };
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    if step.edit_headers {
        flow.for_each_header_edit(&config, |e| match e {
            Edit::Remove(n) => removed.push(n.to_string()),
            Edit::Add(n, v) => added.push((n.to_string(), v.to_string())),
            _ => {}
        });
    }
    Seen { status: flow.decision().http_status(), record, reply, removed, added }
}

#[test]
fn a_public_route_goes_on_without_identity_and_is_recorded() {
    let b = compiled(with_mcp());
    // A token is not even read (this one is garbage): no 401, no agent, no identity header upstream; the client's
    // own copies of Warden's headers are removed as on every request.
    let s = run(
        &b,
        &[
            (":method", "GET"),
            (":path", "/x/../healthz"),
            (":authority", "app.example"),
            ("authorization", "Bearer x.y.z"),
            ("x-warden-agent", "spiffe://acme.example/agents/admin"),
        ],
        true,
    );
    assert_eq!(s.status, 200);
    assert!(s.reply.is_none());
    assert_eq!((s.record["reason"].as_str(), s.record["rule"].as_str()), (Some("public_route"), Some("health")));
    assert_eq!(s.record["path"], "/healthz", "normalized");
    assert!(s.record["agent"].is_null(), "{}", s.record);
    assert_eq!(s.removed, vec!["x-warden-agent"]);
    assert_eq!(s.added, vec![("x-warden-decision-id".to_string(), "00000000-0000-4000-8000-000000000001".to_string())]);
}

#[test]
fn a_cors_preflight_is_public_and_a_plain_options_is_not() {
    let b = compiled(with_mcp());
    let preflight = [
        (":method", "OPTIONS"),
        (":path", "/mcp"),
        (":authority", "tools.acme.example"),
        ("origin", "https://inspector.example"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "authorization, content-type, mcp-protocol-version"),
    ];
    let s = run(&b, &preflight, true);
    assert_eq!((s.status, s.record["reason"].as_str()), (200, Some("public_route")));
    // A preflight has no body: one with a body is not a preflight, and OPTIONS on an MCP endpoint is refused.
    let s = run(&b, &preflight, false);
    assert_eq!(s.status, 401, "{}", s.record);
    // Without the CORS request headers it is a plain OPTIONS: identity first.
    let s = run(&b, &preflight[..3], true);
    assert_eq!((s.status, s.record["reason"].as_str()), (401, Some("identity_missing")));
}

#[test]
fn the_gateway_serves_the_metadata_document_and_401s_point_to_it() {
    let b = compiled(with_mcp());
    let s = run(
        &b,
        &[
            (":method", "GET"),
            (":path", "/.well-known/oauth-protected-resource/mcp"),
            (":authority", "tools.acme.example"),
        ],
        true,
    );
    let (status, headers, body) = s.reply.unwrap();
    assert_eq!(status, 200);
    assert!(headers.contains(&("content-type".into(), "application/json".into())));
    assert!(headers.contains(&("access-control-allow-origin".into(), "*".into())));
    assert_eq!(body["resource"], "https://tools.acme.example/mcp");
    assert_eq!(s.record["reason"], "resource_metadata");
    assert_eq!(s.record["decision"], "allow");

    let challenge = |pairs: &[(&str, &str)]| {
        let (status, headers, _) = run(&b, pairs, true).reply.unwrap();
        assert_eq!(status, 401);
        headers.into_iter().find(|(k, _)| k == "www-authenticate").map(|(_, v)| v).unwrap()
    };
    assert_eq!(
        challenge(&[(":method", "POST"), (":path", "/mcp"), (":authority", "tools.acme.example")]),
        "Bearer realm=\"warden\", resource_metadata=\"https://tools.acme.example/.well-known/oauth-protected-resource/mcp\""
    );
    let c = challenge(&[
        (":method", "GET"),
        (":path", "/contacts/1"),
        (":authority", "crm.acme.example"),
        ("authorization", "Bearer x.y.z"),
    ]);
    assert!(
        c.starts_with(
            "Bearer realm=\"warden\", resource_metadata=\"https://crm.acme.example/.well-known/oauth-protected-resource\", \
             error=\"invalid_token\", error_description=\""
        ),
        "{c}"
    );
    // A host no protected resource covers: the challenge as before.
    assert_eq!(
        challenge(&[(":method", "POST"), (":path", "/refunds"), (":authority", "pay.acme.example")]),
        "Bearer realm=\"warden\""
    );
}
