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
