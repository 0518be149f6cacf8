//! What the Envoy bench measures: the requests, the filter chains and the modes (a chain, a route and a request,
//! with the answer each response must be).

use serde_json::{json, Value};
use warden_benches::mcp;
use warden_benches::scenarios;
use warden_benches::tokens::Alg;
use warden_host::HttpRequest;

/// One kind of request, as Envoy, wrk and the host all send it. The token is added per request.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: &'static str,
    pub host: String,
    pub path: String,
    /// Headers besides `host` and `authorization`.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// The agent of the token, and its issuer's algorithm.
    pub agent: String,
    pub alg: Alg,
}

impl Request {
    /// The request with `authorization: Bearer <token>`.
    pub fn http(&self, token: &str) -> HttpRequest {
        let mut r = HttpRequest::new(self.method, &self.path)
            .authority(&self.host)
            .header("authorization", &format!("Bearer {token}"));
        for (k, v) in &self.headers {
            r = r.header(k, v);
        }
        if !self.body.is_empty() {
            r = r.body(self.body.clone());
        }
        r
    }
}

/// Which request a mode sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// `GET ns0.bench.example/v1/t1/8841`, allowed by the last rule of the 10 000-rule bundle.
    Allow,
    /// The same route for an agent no rule names: 403 `no_matching_rule`.
    Deny,
    /// The 2 KB MCP `tools/call` of `benches/mcp.rs` (refund of 40 EUR: allowed by `refund-small`).
    McpCall,
    /// An MCP `tools/list`; the upstream lists [`TOOLS_LISTED`] tools, of which the agent may see `refund` only.
    ToolsList,
}

/// The `tools/list` answer of the upstream: `refund` (in the bundle's catalog) and tools the catalog does not
/// know, which the filter removes.
pub const TOOLS_LISTED: [&str; 8] =
    ["refund", "wipe_all", "export_customers", "rotate_keys", "close_account", "lookup", "issue_credit", "ship"];

impl RequestKind {
    pub fn request(self, alg: Alg) -> Request {
        let pick = |name: &str| match scenarios().into_iter().find(|s| s.name == name) {
            Some(s) => s,
            None => panic!("no scenario {name}"),
        };
        let http = |name: &str| {
            let s = pick(name);
            Request {
                method: s.method,
                host: s.host,
                path: s.path,
                headers: Vec::new(),
                body: Vec::new(),
                agent: s.agent_id,
                alg,
            }
        };
        let mcp_post = |body: Vec<u8>, extra: Vec<(&'static str, String)>| {
            let mut headers = vec![("content-type", "application/json".to_string())];
            headers.extend(extra);
            Request {
                method: "POST",
                host: mcp::MCP_HOST.into(),
                path: mcp::MCP_PATH.into(),
                headers,
                body,
                agent: mcp::AGENT.into(),
                alg,
            }
        };
        match self {
            RequestKind::Allow => http("allow_late_rule"),
            RequestKind::Deny => http("deny_no_match"),
            RequestKind::McpCall => mcp_post(mcp::refund_call(1, 40), Vec::new()),
            RequestKind::ToolsList => mcp_post(
                br#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#.to_vec(),
                vec![("accept", "application/json, text/event-stream".into())],
            ),
        }
    }

    /// What the upstream answers (for the proxied modes): status, content type, body.
    pub fn upstream_reply(self) -> (u16, &'static str, String) {
        match self {
            RequestKind::ToolsList => {
                let tools: Vec<Value> = TOOLS_LISTED
                    .iter()
                    .map(|name| {
                        json!({"name": name, "description": format!("The {name} tool of the bench's MCP server."),
                               "inputSchema": {"type": "object", "properties": {"id": {"type": "string"},
                                   "amount": {"type": "number"}, "note": {"type": "string"}}}})
                    })
                    .collect();
                (200, "application/json", json!({"jsonrpc": "2.0", "id": 7, "result": {"tools": tools}}).to_string())
            }
            _ => (
                200,
                "application/json",
                json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "refunded"}]}})
                    .to_string(),
            ),
        }
    }
}

/// The HTTP filters before the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chain {
    /// The router alone.
    Bare,
    /// `noop.wasm` (`benches/noop`): reads two headers, continues.
    Floor,
    /// Envoy's `jwt_authn` + `rbac` on the policy of the allowed request, with or without `jwt_cache_config`.
    Native { cache: bool },
    /// `warden.wasm` with the 10 000-rule bundle inline.
    Warden { hold: bool, log_decisions: bool },
}

/// Where the route sends a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `direct_response` 200 `ok`: only the filter chain costs.
    Direct,
    /// To an upstream Envoy (a second process, not measured) that buffers the whole request and answers it.
    Proxied,
}

/// How tokens are presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tokens {
    /// One token for every request (a token-cache hit after the first).
    Same,
    /// A new token every request (every request verifies a signature).
    Rotating,
}

/// What every response of a mode must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    pub status: u16,
    /// The filter's decision (`warden.decisions.<decision>`) and reason (`warden.reasons.<reason>`).
    pub decision: Option<(&'static str, &'static str)>,
    /// The body is the `tools/list` answer with only `refund` left.
    pub tools_filtered: bool,
}

#[derive(Clone, Debug)]
pub struct Mode {
    pub id: &'static str,
    pub label: &'static str,
    pub chain: Chain,
    pub route: Route,
    pub kind: RequestKind,
    pub alg: Alg,
    pub tokens: Tokens,
    pub expect: Expect,
    /// The mode of the same route and request without any filter: what "added over bare" subtracts.
    pub baseline: &'static str,
}

const OK: Expect = Expect { status: 200, decision: None, tools_filtered: false };
const ALLOW: Expect = Expect { status: 200, decision: Some(("allow", "allowed_by_rule")), tools_filtered: false };

/// Every mode, in the order of the report.
pub fn all() -> Vec<Mode> {
    use Chain::*;
    let warden = Warden { hold: false, log_decisions: false };
    let m = |id, label, chain, route, kind, tokens, expect, baseline| Mode {
        id,
        label,
        chain,
        route,
        kind,
        alg: Alg::EdDSA,
        tokens,
        expect,
        baseline,
    };
    let d = Route::Direct;
    let p = Route::Proxied;
    let (allow, same, rot) = (RequestKind::Allow, Tokens::Same, Tokens::Rotating);
    vec![
        m("bare", "bare Envoy (`direct_response`, router only)", Bare, d, allow, same, OK, "bare"),
        m("wasm_floor", "no-op proxy-wasm filter, reads two headers (`noop.wasm`)", Floor, d, allow, same, OK, "bare"),
        m(
            "jwt_rbac_cached",
            "Envoy `jwt_authn` + `rbac`, `jwt_cache_config`",
            Native { cache: true },
            d,
            allow,
            same,
            OK,
            "bare",
        ),
        m("jwt_rbac", "Envoy `jwt_authn` + `rbac`, no JWT cache", Native { cache: false }, d, allow, same, OK, "bare"),
        m("warden_allow", "warden.wasm, allowed GET, same token (cache hit)", warden, d, allow, same, ALLOW, "bare"),
        m(
            "warden_allow_logged",
            "the same with `log_decisions: true` (the filter's default; Envoy log at info)",
            Warden { hold: false, log_decisions: true },
            d,
            allow,
            same,
            ALLOW,
            "bare",
        ),
        m(
            "warden_deny",
            "warden.wasm, denied GET (403), same token",
            warden,
            d,
            RequestKind::Deny,
            same,
            Expect { status: 403, decision: Some(("deny", "no_matching_rule")), tools_filtered: false },
            "bare",
        ),
        m(
            "warden_fresh_eddsa",
            "warden.wasm, allowed GET, a new EdDSA token every request",
            warden,
            d,
            allow,
            rot,
            ALLOW,
            "bare",
        ),
        Mode {
            alg: Alg::ES256,
            ..m(
                "warden_fresh_es256",
                "warden.wasm, allowed GET, a new ES256 token every request",
                warden,
                d,
                allow,
                rot,
                ALLOW,
                "bare",
            )
        },
        m(
            "bare_proxied_call",
            "bare Envoy, MCP `tools/call` 2 KB proxied to the upstream",
            Bare,
            p,
            RequestKind::McpCall,
            same,
            OK,
            "bare_proxied_call",
        ),
        m(
            "warden_mcp_call_hold",
            "warden.wasm, MCP `tools/call` 2 KB, `allow_on_headers_stop_iteration: true`",
            Warden { hold: true, log_decisions: false },
            p,
            RequestKind::McpCall,
            same,
            ALLOW,
            "bare_proxied_call",
        ),
        m(
            "warden_mcp_call_stream",
            "warden.wasm, MCP `tools/call` 2 KB, `allow_on_headers_stop_iteration: false`",
            warden,
            p,
            RequestKind::McpCall,
            same,
            ALLOW,
            "bare_proxied_call",
        ),
        m(
            "bare_proxied_list",
            "bare Envoy, MCP `tools/list` proxied to the upstream",
            Bare,
            p,
            RequestKind::ToolsList,
            same,
            OK,
            "bare_proxied_list",
        ),
        m(
            "warden_tools_list",
            "warden.wasm, MCP `tools/list`, the response rewritten (8 tools → 1)",
            warden,
            p,
            RequestKind::ToolsList,
            same,
            Expect { status: 200, decision: Some(("allow", "mcp_lifecycle")), tools_filtered: true },
            "bare_proxied_list",
        ),
    ]
}

/// The native equivalent of the allowed request's policy: `jwt_authn` checks the EdDSA issuer's tokens (issuer,
/// audience, times; the payload kept in dynamic metadata) and `rbac` allows the agent of the bundle's last rule
/// on the tool's route (host, method, path pattern). With `cache`, verified tokens are cached
/// (`jwt_cache_config`).
pub fn native_filters(issuer: &str, jwk: &Value, request: &Request, cache: bool) -> Vec<Value> {
    let mut provider = json!({
        "issuer": issuer,
        "audiences": ["warden"],
        "local_jwks": {"inline_string": json!({"keys": [jwk]}).to_string()},
        "payload_in_metadata": "jwt_payload",
        "clock_skew_seconds": 30,
    });
    if cache {
        provider["jwt_cache_config"] = json!({"jwt_cache_size": 1024});
    }
    let Some((prefix, _)) = request.path.rsplit_once('/') else { panic!("path without a segment: {}", request.path) };
    vec![
        json!({
            "name": "envoy.filters.http.jwt_authn",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {"bench": provider},
                "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}]
            }
        }),
        json!({
            "name": "envoy.filters.http.rbac",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                "rules": {"action": "ALLOW", "policies": {"late-rule": {
                    "permissions": [{"and_rules": {"rules": [
                        {"header": {"name": ":authority", "string_match": {"exact": request.host}}},
                        {"header": {"name": ":method", "string_match": {"exact": request.method}}},
                        {"url_path": {"path": {"safe_regex": {"regex": format!("{prefix}/[^/]+")}}}}
                    ]}}],
                    "principals": [{"metadata": {
                        "filter": "envoy.filters.http.jwt_authn",
                        "path": [{"key": "jwt_payload"}, {"key": "sub"}],
                        "value": {"string_match": {"exact": request.agent}}
                    }}]
                }}}
            }
        }),
    ]
}
