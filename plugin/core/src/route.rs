//! The HTTP route table of a compiled bundle: host, then method, then a segment trie over the normalized path.
//!
//! Resolution picks the most specific match, level by level:
//! 1. host: an exact host beats the longest matching `*.domain` wildcard, which beats routes without a host;
//! 2. method: routes that list the request's method beat routes that accept any method;
//! 3. path, segment by segment: a literal segment beats `{name}`, which beats a final `{name...}` / `**`.
//!
//! A level falls through to the next candidate only when nothing below it matches. Two routes with the same host,
//! method and path shape (parameter names aside) are ambiguous and refused at compile time. Lookups do not allocate
//! unless the host has upper-case letters.

use crate::fxhash::FxHashMap;
use crate::vocab::ToolIdx;

/// Maximum number of segments in a path pattern.
pub(crate) const MAX_SEGMENTS: usize = 64;

/// Where a route was defined: (tool index in the catalog, index in the tool's `http` list).
pub(crate) type RouteLoc = (u32, u32);

#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    exact_hosts: FxHashMap<Box<str>, MethodTable>,
    /// Keyed by the domain after `*.`.
    wildcard_hosts: FxHashMap<Box<str>, MethodTable>,
    any_host: MethodTable,
    /// The same routes in their loose form (literal segments lower-cased, a trailing `/` dropped), for
    /// [`RouteTable::near_miss`]; `None` in the loose table itself.
    loose: Option<Box<RouteTable>>,
}

#[derive(Debug, Default)]
struct MethodTable {
    by_method: FxHashMap<Box<str>, Node>,
    any_method: Node,
}

#[derive(Debug, Default)]
struct Node {
    literal: FxHashMap<Box<str>, Node>,
    param: Option<Box<Node>>,
    rest: Option<(ToolIdx, RouteLoc)>,
    end: Option<(ToolIdx, RouteLoc)>,
}

/// One segment of a parsed path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Literal(String),
    Param,
    Rest,
}

/// A validated host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostPattern {
    Any,
    Exact(String),
    /// The domain after `*.`: matches any name with at least one more label in front.
    Wildcard(String),
}

impl RouteTable {
    /// Adds a route. On conflict returns the location of the route already there (for a different tool).
    pub(crate) fn insert(
        &mut self,
        host: &HostPattern,
        methods: &[String],
        path: &[Segment],
        tool: ToolIdx,
        loc: RouteLoc,
    ) -> Result<(), RouteLoc> {
        // The loose table takes whichever tool comes first: a near miss is refused whichever tool it names.
        let loose_path: Vec<Segment> = path
            .iter()
            .enumerate()
            .filter(|(i, seg)| !(*i + 1 == path.len() && path.len() > 1 && **seg == Segment::Literal(String::new())))
            .map(|(_, seg)| match seg {
                Segment::Literal(l) => Segment::Literal(l.to_ascii_lowercase()),
                other => other.clone(),
            })
            .collect();
        let loose = self.loose.get_or_insert_with(Box::default);
        let _ = loose.insert_exact(host, methods, &loose_path, tool, loc);
        self.insert_exact(host, methods, path, tool, loc)
    }

    fn insert_exact(
        &mut self,
        host: &HostPattern,
        methods: &[String],
        path: &[Segment],
        tool: ToolIdx,
        loc: RouteLoc,
    ) -> Result<(), RouteLoc> {
        let table = match host {
            HostPattern::Any => &mut self.any_host,
            HostPattern::Exact(h) => self.exact_hosts.entry(h.as_str().into()).or_default(),
            HostPattern::Wildcard(d) => self.wildcard_hosts.entry(d.as_str().into()).or_default(),
        };
        if methods.is_empty() {
            return insert_path(&mut table.any_method, path, tool, loc);
        }
        let mut result = Ok(());
        for m in methods {
            let node = table.by_method.entry(m.as_str().into()).or_default();
            if let Err(other) = insert_path(node, path, tool, loc) {
                result = Err(other);
            }
        }
        result
    }

    /// The tool a request reaches, if any. `host` may carry a port and any case; `path` is the normalized path
    /// without its query.
    pub(crate) fn resolve(&self, host: &str, method: &str, path: &str) -> Option<ToolIdx> {
        let rem = path.strip_prefix('/')?;
        let host = strip_port(host);
        let host = host.strip_suffix('.').unwrap_or(host);
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host
        };
        if let Some(t) = self.exact_hosts.get(host).and_then(|mt| mt.resolve(method, rem)) {
            return Some(t);
        }
        if !self.wildcard_hosts.is_empty() {
            // Longest domain first: walk the dots from the left.
            for (i, b) in host.bytes().enumerate() {
                if b != b'.' {
                    continue;
                }
                let domain = host.get(i + 1..).unwrap_or("");
                if let Some(t) = self.wildcard_hosts.get(domain).and_then(|mt| mt.resolve(method, rem)) {
                    return Some(t);
                }
            }
        }
        self.any_host.resolve(method, rem)
    }

    /// For a request that reaches no route: a route it misses only by spelling, which a tool may well answer as
    /// that route — letter case (`/V1/Payouts`), a trailing `/` (`/v1/payouts/` for `/v1/payouts` and the other way
    /// round), a `.suffix` on the last segment (`/v1/payouts.json`), or the method's case / `HEAD` for `GET`.
    /// Allocates (the loose spelling); meant for the unknown-tool path only.
    pub(crate) fn near_miss(&self, host: &str, method: &str, path: &str) -> Option<ToolIdx> {
        let loose = self.loose.as_deref()?;
        let lower = path.to_ascii_lowercase();
        let trimmed = match lower.strip_suffix('/') {
            Some(t) if !t.is_empty() => t,
            _ => lower.as_str(),
        };
        let (dir, last) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
        let unsuffixed = match last.split_once('.') {
            Some((stem, _)) if !stem.is_empty() => Some(format!("{dir}/{stem}")),
            _ => None,
        };
        let upper = method.to_ascii_uppercase();
        let mut methods = vec![upper.as_str()];
        if upper == "HEAD" {
            methods.push("GET");
        }
        methods.iter().find_map(|m| {
            loose.resolve(host, m, trimmed).or_else(|| unsuffixed.as_deref().and_then(|p| loose.resolve(host, m, p)))
        })
    }
}

impl MethodTable {
    fn resolve(&self, method: &str, rem: &str) -> Option<ToolIdx> {
        if let Some(t) = self.by_method.get(method).and_then(|n| find(n, Some(rem))) {
            return Some(t);
        }
        find(&self.any_method, Some(rem))
    }
}

fn insert_path(root: &mut Node, path: &[Segment], tool: ToolIdx, loc: RouteLoc) -> Result<(), RouteLoc> {
    let mut node = root;
    for seg in path {
        let slot = match seg {
            Segment::Literal(s) => node.literal.entry(s.as_str().into()).or_default(),
            Segment::Param => node.param.get_or_insert_with(Box::default),
            Segment::Rest => return claim(&mut node.rest, tool, loc),
        };
        node = slot;
    }
    claim(&mut node.end, tool, loc)
}

fn claim(slot: &mut Option<(ToolIdx, RouteLoc)>, tool: ToolIdx, loc: RouteLoc) -> Result<(), RouteLoc> {
    match slot {
        Some((t, _)) if *t == tool => Ok(()),
        Some((_, other)) => Err(*other),
        None => {
            *slot = Some((tool, loc));
            Ok(())
        }
    }
}

/// `rem` is the rest of the path after the segments consumed so far (`None`: all consumed).
fn find(node: &Node, rem: Option<&str>) -> Option<ToolIdx> {
    let Some(rem) = rem else {
        return node.end.map(|(t, _)| t);
    };
    let (seg, next) = match rem.split_once('/') {
        Some((seg, next)) => (seg, Some(next)),
        None => (rem, None),
    };
    if let Some(t) = node.literal.get(seg).and_then(|child| find(child, next)) {
        return Some(t);
    }
    if !seg.is_empty() {
        if let Some(t) = node.param.as_deref().and_then(|child| find(child, next)) {
            return Some(t);
        }
    }
    if !rem.is_empty() {
        if let Some((t, _)) = node.rest {
            return Some(t);
        }
    }
    None
}

/// A request's host as routes compare it: port and a trailing `.` dropped, lower case.
pub(crate) fn host_key(host: &str) -> String {
    let host = strip_port(host);
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Drops a `:port` suffix (also after a bracketed IPv6 literal).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => host.get(..=i).unwrap_or(host),
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// A bundle's optional `host` field (a tool's HTTP route, a rule, an MCP server): absent is any host; `Err` is the
/// refusal message.
pub(crate) fn host_field(host: Option<&str>) -> Result<HostPattern, String> {
    match host {
        None => Ok(HostPattern::Any),
        Some(h) => parse_host(h).map_err(|detail| invalid_host(h, detail)),
    }
}

/// The message of a refused `host` field: the value and what is wrong with it.
pub(crate) fn invalid_host(host: &str, detail: &str) -> String {
    format!("invalid host \"{host}\": {detail}")
}

/// Parses a host pattern; `Err` carries the detail of the message.
pub(crate) fn parse_host(raw: &str) -> Result<HostPattern, &'static str> {
    let lower = raw.to_ascii_lowercase();
    if lower.contains(':') {
        return Err("must not include a port");
    }
    let (wildcard, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    if name.contains('*') || name.is_empty() {
        return Err("\"*\" may only be the first label, as in \"*.example.com\"");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err("labels are letters, digits and \"-\"");
        }
    }
    Ok(if wildcard { HostPattern::Wildcard(name.to_string()) } else { HostPattern::Exact(name.to_string()) })
}

/// Is `m` an HTTP method token as the table stores it (upper case)?
pub(crate) fn valid_method(m: &str) -> bool {
    let mut bytes = m.bytes();
    matches!(bytes.next(), Some(b'A'..=b'Z')) && bytes.all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
}

/// Parses a path pattern into segments; `Err` carries the detail of the message.
pub(crate) fn parse_path(raw: &str) -> Result<Vec<Segment>, String> {
    let Some(body) = raw.strip_prefix('/') else {
        return Err("must start with \"/\"".to_string());
    };
    if raw.contains('?') || raw.contains('#') {
        return Err("must not contain a query or fragment".to_string());
    }
    let parts: Vec<&str> = body.split('/').collect();
    if parts.len() > MAX_SEGMENTS {
        return Err(format!("too many segments (at most {MAX_SEGMENTS})"));
    }
    let mut names: Vec<&str> = Vec::new();
    let mut out = Vec::with_capacity(parts.len());
    let last = parts.len() - 1;
    for (i, seg) in parts.iter().copied().enumerate() {
        let parsed = if seg.is_empty() {
            if i != last {
                return Err("empty segment (\"//\" never matches a normalized path)".to_string());
            }
            Segment::Literal(String::new())
        } else if seg == "." || seg == ".." {
            return Err("\".\" and \"..\" segments never match a normalized path".to_string());
        } else if seg == "**" {
            Segment::Rest
        } else if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let (name, rest) = match inner.strip_suffix("...") {
                Some(name) => (name, true),
                None => (inner, false),
            };
            if !valid_param_name(name) {
                return Err(format!("invalid parameter name \"{name}\""));
            }
            if names.contains(&name) {
                return Err(format!("duplicate parameter name \"{name}\""));
            }
            names.push(name);
            if rest {
                Segment::Rest
            } else {
                Segment::Param
            }
        } else if seg.contains(['{', '}', '*']) {
            return Err("a segment is literal text, \"{name}\", \"{name...}\" or \"**\", not a mix".to_string());
        } else {
            check_literal(seg)?;
            Segment::Literal(seg.to_string())
        };
        if parsed == Segment::Rest && i != last {
            return Err("\"{name...}\" and \"**\" must be the last segment".to_string());
        }
        out.push(parsed);
    }
    Ok(out)
}

fn valid_param_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn check_literal(seg: &str) -> Result<(), String> {
    let b = seg.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let hex = |x: u8| x.is_ascii_digit() || (b'A'..=b'F').contains(&x);
            let ok = i + 2 < b.len() && hex(b[i + 1]) && hex(b[i + 2]);
            if !ok {
                return Err("percent-escapes are \"%\" and two upper-case hex digits".to_string());
            }
            let decoded = u8::from_str_radix(seg.get(i + 1..i + 3).unwrap_or("00"), 16).unwrap_or(0);
            if decoded.is_ascii_alphanumeric() || matches!(decoded, b'-' | b'.' | b'_' | b'~') {
                return Err(format!(
                    "\"%{:02X}\" escapes an unreserved character; write \"{}\" (paths are matched decoded)",
                    decoded, decoded as char
                ));
            }
            i += 3;
            continue;
        }
        if !c.is_ascii() {
            return Err("non-ASCII characters must be percent-encoded".to_string());
        }
        if !c.is_ascii_graphic() || c == b'\\' {
            return Err(format!("invalid character {:?}", char::from(c)));
        }
        i += 1;
    }
    Ok(())
}

/// Whether two host patterns can match the same host (for the lint's overlap checks).
pub(crate) fn hosts_overlap(a: &HostPattern, b: &HostPattern) -> bool {
    // `*.d` matches names with at least one more label in front of `d`.
    let below =
        |name: &str, domain: &str| name.strip_suffix(domain).is_some_and(|head| head.len() > 1 && head.ends_with('.'));
    match (a, b) {
        (HostPattern::Any, _) | (_, HostPattern::Any) => true,
        (HostPattern::Exact(x), HostPattern::Exact(y)) => x == y,
        (HostPattern::Exact(x), HostPattern::Wildcard(d)) | (HostPattern::Wildcard(d), HostPattern::Exact(x)) => {
            below(x, d)
        }
        (HostPattern::Wildcard(x), HostPattern::Wildcard(y)) => x == y || below(x, y) || below(y, x),
    }
}

/// Whether two method lists can match the same method (an empty list is any method).
pub(crate) fn methods_overlap(a: &[String], b: &[String]) -> bool {
    a.is_empty() || b.is_empty() || a.iter().any(|m| b.contains(m))
}

/// Whether two parsed path patterns can match the same normalized path, as [`RouteTable::resolve`] matches them: a
/// literal segment itself, `{name}` one non-empty segment, a final `**` / `{name...}` the rest of the path when it is
/// not empty, and an empty final literal a trailing `/`.
pub(crate) fn paths_overlap(a: &[Segment], b: &[Segment]) -> bool {
    // What a final rest segment can stand for: any non-empty remainder, which every pattern but the empty one and a
    // lone trailing `/` can produce.
    let fills_rest = |p: &[Segment]| !p.is_empty() && !matches!(p, [Segment::Literal(l)] if l.is_empty());
    match (a.split_first(), b.split_first()) {
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some((Segment::Rest, _)), Some(_)) => fills_rest(b),
        (Some(_), Some((Segment::Rest, _))) => fills_rest(a),
        (Some((x, a_next)), Some((y, b_next))) => {
            let segment = match (x, y) {
                (Segment::Literal(l), Segment::Literal(m)) => l == m,
                (Segment::Literal(l), Segment::Param) | (Segment::Param, Segment::Literal(l)) => !l.is_empty(),
                (Segment::Param, Segment::Param) => true,
                (Segment::Rest, _) | (_, Segment::Rest) => true,
            };
            segment && paths_overlap(a_next, b_next)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Vec<Segment> {
        parse_path(p).unwrap()
    }

    #[test]
    fn path_patterns_overlap_where_one_path_matches_both() {
        for (a, b, overlap) in [
            ("/healthz", "/healthz", true),
            ("/healthz", "/health", false),
            ("/v1/{id}", "/v1/payouts", true),
            ("/v1/{id}", "/v1/", false),
            ("/v1/**", "/v1/a/b", true),
            ("/v1/**", "/v1", false),
            ("/v1/**", "/v1/", false),
            ("/v1/**", "/{x}/{y}/", true),
            ("/**", "/.well-known/oauth-protected-resource/mcp", true),
            ("/.well-known/**", "/mcp/**", false),
            ("/{a}/x", "/y/{b}", true),
            ("/{a}/x", "/y/z", false),
            ("/", "/{a}", false),
            ("/", "/", true),
        ] {
            assert_eq!(paths_overlap(&path(a), &path(b)), overlap, "{a} {b}");
            assert_eq!(paths_overlap(&path(b), &path(a)), overlap, "{b} {a}");
            // Held to the table itself where one side is a concrete path.
            if !b.contains(['{', '*']) {
                let mut t = RouteTable::default();
                t.insert(&HostPattern::Any, &[], &path(a), ToolIdx(0), (0, 0)).unwrap();
                assert_eq!(t.resolve("h", "GET", b).is_some(), overlap, "{a} resolves {b}");
            }
        }
    }

    #[test]
    fn hosts_and_methods_overlap() {
        let h = |s: &str| if s.is_empty() { HostPattern::Any } else { parse_host(s).unwrap() };
        for (a, b, overlap) in [
            ("", "a.example", true),
            ("a.example", "a.example", true),
            ("a.example", "b.example", false),
            ("*.example", "a.example", true),
            ("*.example", "example", false),
            ("*.a.example", "*.example", true),
            ("*.example", "*.other", false),
            ("*.b.example", "xb.example", false),
        ] {
            assert_eq!(hosts_overlap(&h(a), &h(b)), overlap, "{a} {b}");
            assert_eq!(hosts_overlap(&h(b), &h(a)), overlap, "{b} {a}");
        }
        let m = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(methods_overlap(&m(&[]), &m(&["GET"])));
        assert!(methods_overlap(&m(&["GET", "HEAD"]), &m(&["HEAD"])));
        assert!(!methods_overlap(&m(&["OPTIONS"]), &m(&["GET", "POST"])));
    }
}
