//! Validation and indexing of the routes that need no identity: the bundle's `public_routes`, and the OAuth 2.0
//! protected resources (RFC 9728) — their resource identifiers, authorization servers, the metadata URL each 401
//! points to and, where the gateway serves it, the metadata document and the well-known route it is served on.
//!
//! A public route must not reach anything identity protects: one that can match a request a tool's HTTP route or an
//! MCP server also matches is refused here (host, method and path pattern overlap, [`route::paths_overlap`]).

use serde::Serialize;

use crate::bundle::{Bundle, TokenProfile};
use crate::fxhash::FxHashMap;
use crate::route::{self, HostPattern, RouteTable, Segment};
use crate::vocab::{valid_id, McpServerIdx, ToolIdx};

use super::{bad_id, Loc, EMPTY_STRING};

/// The well-known path prefix of protected-resource metadata (RFC 9728 section 3).
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The methods that reach an MCP server (any other is refused on its path).
const MCP_METHODS: [&str; 3] = ["GET", "POST", "DELETE"];

/// What a request that needs no identity reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicTarget {
    /// The public route at this index of `public_routes`: let through without identity.
    Route(u32),
    /// The metadata document of the protected resource at this index of `protected_resources`: the gateway answers.
    Metadata(u32),
}

/// A protected resource, compiled.
#[derive(Debug)]
pub(crate) struct CompiledResource {
    pub(crate) resource: Box<str>,
    /// What 401s carry as `resource_metadata`.
    pub(crate) metadata_url: Box<str>,
    /// The metadata document (JSON) when the gateway serves it.
    pub(crate) document: Option<Box<str>>,
}

/// The public routes and the protected resources of a bundle.
#[derive(Debug, Default)]
pub(crate) struct PublicIndex {
    /// Public routes (not preflight-only) and served metadata documents; the table's index is into `targets`.
    routes: RouteTable,
    /// `cors_preflight` public routes.
    preflights: RouteTable,
    targets: Vec<PublicTarget>,
    /// Public route ids by index.
    ids: Vec<Box<str>>,
    pub(crate) resources: Vec<CompiledResource>,
    by_server: FxHashMap<u32, u32>,
    by_host: FxHashMap<Box<str>, u32>,
}

impl PublicIndex {
    /// What a request reaches without identity: `host` as sent, `path` normalized without its query; `preflight`
    /// when the request is a CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`, no body).
    pub(crate) fn resolve(&self, host: &str, method: &str, path: &str, preflight: bool) -> Option<PublicTarget> {
        if self.targets.is_empty() {
            return None;
        }
        let found = if preflight { self.preflights.resolve(host, method, path) } else { None };
        let found = found.or_else(|| self.routes.resolve(host, method, path))?;
        self.targets.get(found.0 as usize).copied()
    }

    pub(crate) fn route_id(&self, i: u32) -> &str {
        self.ids.get(i as usize).map(|s| &**s).unwrap_or("")
    }

    /// The protected resource covering a request: its MCP server's, else its host's.
    pub(crate) fn resource_for(&self, server: Option<McpServerIdx>, host: &str) -> Option<&CompiledResource> {
        if self.resources.is_empty() {
            return None;
        }
        let by_server = server.and_then(|s| self.by_server.get(&s.0));
        let i = by_server.or_else(|| self.by_host.get(route::host_key(host).as_str()))?;
        self.resources.get(*i as usize)
    }
}

/// The metadata document the gateway serves (RFC 9728 section 2).
#[derive(Serialize)]
struct Document<'a> {
    resource: &'a str,
    authorization_servers: &'a [String],
    /// Warden reads the token from a header only.
    bearer_methods_supported: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    scopes_supported: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_documentation: Option<&'a str>,
}

/// A URL as a resource identifier, an issuer identifier or a metadata URL: `https` (or `http` on a loopback host),
/// an authority without user info, a path; no query, no fragment.
struct Url<'a> {
    /// `scheme://authority`.
    origin: &'a str,
    /// The host, lower case, without port.
    host: String,
    path: &'a str,
}

fn parse_url(raw: &str) -> Result<Url<'_>, &'static str> {
    let (scheme, rest) = raw.split_once("://").ok_or("not an absolute URL (scheme://host/path)")?;
    if raw.contains(['?', '#']) {
        return Err("must have no query or fragment");
    }
    if raw.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err("must be ASCII without spaces");
    }
    let split = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    let path = if path.is_empty() { "/" } else { path };
    if authority.is_empty() || authority.contains('@') {
        return Err("needs a host, and no user info");
    }
    let host = if authority.starts_with('[') {
        let end = authority.find(']').ok_or("unclosed IPv6 literal")?;
        let port = &authority[end + 1..];
        if !(port.is_empty()
            || port.strip_prefix(':').is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
        {
            return Err("invalid port");
        }
        authority[..=end].to_ascii_lowercase()
    } else {
        let (host, port) = authority.rsplit_once(':').unwrap_or((authority, ""));
        if authority.contains(':') && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit())) {
            return Err("invalid port");
        }
        match route::parse_host(host) {
            Ok(HostPattern::Exact(h)) => h,
            _ => return Err("invalid host"),
        }
    };
    let loopback = matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]");
    match scheme {
        "https" => {}
        "http" if loopback => {}
        _ => return Err("must use https (http only on a loopback host)"),
    }
    Ok(Url { origin: &raw[..scheme.len() + 3 + authority.len()], host, path })
}

/// A route that must not be reachable without identity, or a public one, for the overlap checks.
struct Reach {
    at: String,
    what: String,
    host: HostPattern,
    methods: Vec<String>,
    path: Vec<Segment>,
}

/// What identity protects: every tool's HTTP routes and every MCP server's path (the path itself, a trailing `/`
/// and everything below it), with the methods that reach them. Invalid entries are left out (reported elsewhere).
fn protected(bundle: &Bundle) -> Vec<Reach> {
    let mut out = Vec::new();
    for (ti, tool) in bundle.tools.iter().enumerate() {
        for (hi, m) in tool.http.iter().enumerate() {
            let (Some(host), Ok(path)) = (route::host_field(m.host.as_deref()).ok(), route::parse_path(&m.path)) else {
                continue;
            };
            let what = format!("the route of tool \"{}\"", tool.id);
            out.push(Reach { at: format!("/tools/{ti}/http/{hi}"), what, host, methods: m.methods.clone(), path });
        }
    }
    for (si, s) in bundle.mcp_servers.iter().enumerate() {
        let (Some(host), Ok(path)) = (route::host_field(s.host.as_deref()).ok(), route::parse_path(&s.path)) else {
            continue;
        };
        let base: Vec<Segment> =
            path.into_iter().filter(|seg| !matches!(seg, Segment::Literal(l) if l.is_empty())).collect();
        let methods: Vec<String> = MCP_METHODS.iter().map(|m| m.to_string()).collect();
        for tail in [None, Some(Segment::Literal(String::new())), Some(Segment::Rest)] {
            let mut path = base.clone();
            path.extend(tail);
            let what = format!("MCP server \"{}\"", s.name);
            out.push(Reach {
                at: format!("/mcp_servers/{si}"),
                what,
                host: host.clone(),
                methods: methods.clone(),
                path,
            });
        }
    }
    out
}

/// Validates `public_routes` and `protected_resources` and builds their index.
pub(super) fn public(bundle: &Bundle, err: &mut impl FnMut(String, String)) -> PublicIndex {
    let mut index = PublicIndex::default();
    let mut public: Vec<(Reach, bool, PublicTarget)> = Vec::new();

    let mut ids: FxHashMap<&str, usize> = FxHashMap::default();
    for (pi, r) in bundle.public_routes.iter().enumerate() {
        let at = Loc(&"", "/public_routes", pi);
        if !valid_id(&r.id) {
            err(format!("{at}/id"), bad_id(&r.id));
        } else if let Some(first) = ids.get(r.id.as_str()) {
            err(
                format!("{at}/id"),
                format!("duplicate public route id \"{}\" (first defined at /public_routes/{first})", r.id),
            );
        } else if let Some(ri) = bundle.rules.iter().position(|rule| rule.id == r.id) {
            err(
                format!("{at}/id"),
                format!(
                    "same id as the rule at /rules/{ri}: decision records name both as their rule, so they must differ"
                ),
            );
        } else {
            ids.insert(&r.id, pi);
        }
        index.ids.push(r.id.as_str().into());
        let host = route::host_field(r.host.as_deref()).map_err(|e| err(format!("{at}/host"), e)).ok();
        let mut methods_ok = true;
        if r.cors_preflight && !r.methods.is_empty() {
            methods_ok = false;
            err(
                format!("{at}/methods"),
                "a CORS preflight is an OPTIONS request: drop methods, or cors_preflight".into(),
            );
        } else if !r.cors_preflight && r.methods.is_empty() {
            methods_ok = false;
            err(
                format!("{at}/methods"),
                "a public route lists its methods (e.g. [\"GET\"]), or is a cors_preflight: it never covers every method"
                    .into(),
            );
        }
        for (mi, method) in r.methods.iter().enumerate() {
            if !route::valid_method(method) {
                methods_ok = false;
                err(
                    format!("{at}/methods/{mi}"),
                    format!("invalid method \"{method}\": use an upper-case HTTP method such as \"GET\""),
                );
            }
        }
        let path = match route::parse_path(&r.path) {
            Ok(p) => Some(p),
            Err(detail) => {
                err(format!("{at}/path"), format!("invalid path pattern \"{}\": {detail}", r.path));
                None
            }
        };
        if let (Some(host), Some(path), true) = (host, path, methods_ok) {
            let methods = if r.cors_preflight { vec!["OPTIONS".to_string()] } else { r.methods.clone() };
            let what = format!("public route \"{}\"", r.id);
            public.push((
                Reach { at: at.to_string(), what, host, methods, path },
                r.cors_preflight,
                PublicTarget::Route(pi as u32),
            ));
        }
    }

    let mut covered: FxHashMap<String, usize> = FxHashMap::default();
    for (ri, r) in bundle.protected_resources.iter().enumerate() {
        let at = Loc(&"", "/protected_resources", ri);
        let resource = match parse_url(&r.resource) {
            Ok(u) if u.path != "/" && u.path.ends_with('/') => {
                err(format!("{at}/resource"), format!("invalid resource \"{}\": drop the trailing \"/\"", r.resource));
                None
            }
            Ok(u) => Some(u),
            Err(detail) => {
                err(format!("{at}/resource"), format!("invalid resource \"{}\": {detail}", r.resource));
                None
            }
        };
        match (&r.mcp_server, &r.host) {
            (Some(name), None) => match bundle.mcp_servers.iter().position(|s| &s.name == name) {
                None => err(format!("{at}/mcp_server"), format!("no MCP server is named \"{name}\"")),
                Some(si) => {
                    if let Some(first) = covered.insert(format!("server {si}"), ri) {
                        err(
                            format!("{at}/mcp_server"),
                            format!("MCP server \"{name}\" is already covered by /protected_resources/{first}"),
                        );
                    }
                    index.by_server.insert(si as u32, ri as u32);
                }
            },
            (None, Some(h)) => match route::parse_host(h) {
                Ok(HostPattern::Exact(host)) => {
                    if let Some(first) = covered.insert(format!("host {host}"), ri) {
                        err(
                            format!("{at}/host"),
                            format!("host \"{h}\" is already covered by /protected_resources/{first}"),
                        );
                    }
                    index.by_host.insert(host.as_str().into(), ri as u32);
                }
                Ok(_) => err(format!("{at}/host"), route::invalid_host(h, "a protected resource is one exact host")),
                Err(detail) => err(format!("{at}/host"), route::invalid_host(h, detail)),
            },
            _ => {
                err(at.to_string(), "give exactly one of mcp_server and host: the requests this resource covers".into())
            }
        }
        if r.authorization_servers.is_empty() {
            err(format!("{at}/authorization_servers"), "name at least one authorization server".into());
        }
        for (ai, a) in r.authorization_servers.iter().enumerate() {
            if let Err(detail) = parse_url(a) {
                err(
                    format!("{at}/authorization_servers/{ai}"),
                    format!("invalid authorization server \"{a}\": {detail}"),
                );
            } else if !bundle.issuers.iter().any(|i| &i.iss == a && i.profile != TokenProfile::TxnToken) {
                err(
                    format!("{at}/authorization_servers/{ai}"),
                    format!(
                        "no agent-token issuer of this bundle has iss \"{a}\": a client that follows discovery would get \
                         tokens the gateway refuses; add that issuer or name the iss of one"
                    ),
                );
            }
        }
        if let Some(scopes) = &r.scopes_supported {
            for (si, scope) in scopes.iter().enumerate() {
                if scope.is_empty() || scope.bytes().any(|b| !b.is_ascii_graphic() || b == b'"' || b == b'\\') {
                    err(
                        format!("{at}/scopes_supported/{si}"),
                        format!(
                            "invalid scope \"{scope}\": RFC 6749 scope tokens are visible ASCII, no quote or backslash"
                        ),
                    );
                }
            }
        }
        if let Some(name) = &r.resource_name {
            if name.trim().is_empty() {
                err(format!("{at}/resource_name"), EMPTY_STRING.into());
            }
        }
        if let Some(doc) = &r.resource_documentation {
            if let Err(detail) = parse_url(doc) {
                err(format!("{at}/resource_documentation"), format!("invalid URL \"{doc}\": {detail}"));
            }
        }
        if let Some(url) = &r.metadata_url {
            if let Err(detail) = parse_url(url) {
                err(format!("{at}/metadata_url"), format!("invalid metadata URL \"{url}\": {detail}"));
            }
        }
        let Some(resource) = resource else { continue };
        let well_known =
            if resource.path == "/" { WELL_KNOWN.to_string() } else { format!("{WELL_KNOWN}{}", resource.path) };
        let (metadata_url, document) = match &r.metadata_url {
            Some(url) => (url.clone(), None),
            None => {
                let path = match route::parse_path(&well_known) {
                    Ok(p) if p.iter().all(|s| matches!(s, Segment::Literal(l) if !l.is_empty())) => p,
                    _ => {
                        err(
                            format!("{at}/resource"),
                            format!("invalid resource \"{}\": its path must be literal segments the gateway can serve the metadata under", r.resource),
                        );
                        continue;
                    }
                };
                let doc = Document {
                    resource: &r.resource,
                    authorization_servers: &r.authorization_servers,
                    bearer_methods_supported: ["header"],
                    scopes_supported: r.scopes_supported.as_deref(),
                    resource_name: r.resource_name.as_deref(),
                    resource_documentation: r.resource_documentation.as_deref(),
                };
                let reach = Reach {
                    at: at.to_string(),
                    what: format!("the metadata document of \"{}\"", r.resource),
                    host: HostPattern::Exact(resource.host.clone()),
                    methods: vec!["GET".to_string()],
                    path,
                };
                public.push((reach, false, PublicTarget::Metadata(ri as u32)));
                let json = serde_json::to_string(&doc).unwrap_or_default();
                (format!("{}{well_known}", resource.origin), Some(json.into_boxed_str()))
            }
        };
        index.resources.push(CompiledResource {
            resource: r.resource.as_str().into(),
            metadata_url: metadata_url.into(),
            document,
        });
    }

    // Nothing public may reach what identity protects; two public entries may not match the same request.
    if !public.is_empty() {
        let protected = protected(bundle);
        for (p, _, _) in &public {
            for q in &protected {
                if route::hosts_overlap(&p.host, &q.host)
                    && route::methods_overlap(&p.methods, &q.methods)
                    && route::paths_overlap(&p.path, &q.path)
                {
                    err(
                        p.at.clone(),
                        format!(
                            "{} overlaps {} ({}): a request it lets through without identity would reach what needs \
                             one; narrow its host, methods or path",
                            p.what, q.what, q.at
                        ),
                    );
                    break;
                }
            }
        }
    }
    for (p, preflight, target) in public {
        let table = if preflight { &mut index.preflights } else { &mut index.routes };
        let ti = ToolIdx(index.targets.len() as u32);
        if let Err((other, _)) = table.insert(&p.host, &p.methods, &p.path, ti, (ti.0, 0)) {
            let other_at = match index.targets.get(other as usize) {
                Some(PublicTarget::Route(i)) => format!("/public_routes/{i}"),
                Some(PublicTarget::Metadata(i)) => format!("/protected_resources/{i}"),
                None => String::new(),
            };
            err(p.at.clone(), format!("{} has the same host, method and path as {other_at}", p.what));
        }
        index.targets.push(target);
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let ok = |s: &str| parse_url(s).map(|u| (u.origin.to_string(), u.host, u.path.to_string()));
        assert_eq!(
            ok("https://Tools.Acme.example/mcp"),
            Ok(("https://Tools.Acme.example".into(), "tools.acme.example".into(), "/mcp".into()))
        );
        assert_eq!(ok("http://127.0.0.1:8080"), Ok(("http://127.0.0.1:8080".into(), "127.0.0.1".into(), "/".into())));
        assert_eq!(ok("http://[::1]:1/x"), Ok(("http://[::1]:1".into(), "[::1]".into(), "/x".into())));
        for bad in [
            "http://tools.acme.example/mcp",
            "https://tools.acme.example/mcp?x=1",
            "https://tools.acme.example/mcp#f",
            "https://u@tools.acme.example/",
            "https://tools.acme.example:/",
            "https://*.acme.example/",
            "tools.acme.example/mcp",
            "ftp://tools.acme.example/",
            "https:///x",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
