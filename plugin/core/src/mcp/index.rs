//! The MCP servers of the catalog and what their messages reach: the server routes (host, then longest path prefix)
//! and, per server, the tool / prompt / method / resource bindings of the catalog's tools and the server's pinned
//! tool definitions ([`crate::pins::ServerPins`]). Built by `compile`.

use crate::args::{glob_literal, glob_literal_prefix, glob_matches, parse_glob, GlobToken};
use crate::bundle::{Bundle, Effect};
use crate::fxhash::FxHashMap;
use crate::mcp::parse::{check_method, McpKind, McpMessage};
use crate::pins::{valid_pin, ServerPins};
use crate::route::{self, RouteTable, Segment};
use crate::vocab::{valid_id, McpServerIdx, ToolIdx};

/// The methods of MCP's own life cycle and discovery. When no tool of the catalog binds one of them, it gets the
/// server's `lifecycle` effect. Client answers to server requests (`result` / `error` messages) are treated alike.
pub const LIFECYCLE_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "prompts/list",
    "logging/setLevel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
];

/// What one message reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McpTarget {
    /// A tool of the catalog.
    Tool(ToolIdx),
    /// An unbound life-cycle method or a client answer: the server's `lifecycle` effect.
    Lifecycle,
    /// Nothing in the catalog: `defaults.unknown_tool`.
    Unknown,
}

#[derive(Debug, Default)]
pub(crate) struct McpIndex {
    servers: Vec<ServerEntry>,
    routes: RouteTable,
}

#[derive(Debug)]
struct ServerEntry {
    name: Box<str>,
    batches: bool,
    lifecycle: Effect,
    pins: ServerPins,
    tools: FxHashMap<Box<str>, ToolIdx>,
    prompts: FxHashMap<Box<str>, ToolIdx>,
    methods: FxHashMap<Box<str>, ToolIdx>,
    resources_exact: FxHashMap<Box<str>, ToolIdx>,
    /// (pattern, literal prefix length, tool), longest literal prefix first, then catalog order.
    resource_patterns: Vec<(Box<[GlobToken]>, usize, ToolIdx)>,
}

impl McpIndex {
    /// Validates `mcp_servers` and every tool's `mcp` entries, reporting problems through `err`.
    pub(crate) fn build(bundle: &Bundle, err: &mut impl FnMut(String, String)) -> McpIndex {
        let mut index = McpIndex::default();
        let mut names: FxHashMap<&str, usize> = FxHashMap::default();
        for (si, s) in bundle.mcp_servers.iter().enumerate() {
            let at = format!("/mcp_servers/{si}");
            if !valid_id(&s.name) {
                err(
                    format!("{at}/name"),
                    format!("invalid id \"{}\": use lower-case letters, digits, \".\", \"_\" and \"-\", starting with a letter or digit", s.name),
                );
            } else if let Some(first) = names.get(s.name.as_str()) {
                err(
                    format!("{at}/name"),
                    format!("duplicate MCP server name \"{}\" (first defined at /mcp_servers/{first})", s.name),
                );
            } else {
                names.insert(&s.name, si);
            }
            if s.lifecycle == Effect::StepUp {
                err(format!("{at}/lifecycle"), "must be \"allow\" or \"deny\"".into());
            }
            let host = route::host_field(s.host.as_deref()).map_err(|e| err(format!("{at}/host"), e)).ok();
            let path = match route::parse_path(&s.path) {
                // `/`: the root and everything below it.
                Ok(_) if s.path == "/" => Some(vec![Segment::Literal(String::new())]),
                Ok(p) if p.iter().all(|seg| matches!(seg, Segment::Literal(l) if !l.is_empty())) => Some(p),
                Ok(_) => {
                    err(
                        format!("{at}/path"),
                        format!("invalid MCP path \"{}\": literal segments only, no trailing \"/\"", s.path),
                    );
                    None
                }
                Err(detail) => {
                    err(format!("{at}/path"), format!("invalid path pattern \"{}\": {detail}", s.path));
                    None
                }
            };
            if let (Some(host), Some(path)) = (host, path) {
                let idx = ToolIdx(si as u32);
                let loc = (si as u32, 0);
                let mut below: Vec<Segment> =
                    path.iter().filter(|seg| !matches!(seg, Segment::Literal(l) if l.is_empty())).cloned().collect();
                below.push(Segment::Rest);
                let clash = index.routes.insert(&host, &[], &path, idx, loc).and(index.routes.insert(
                    &host,
                    &[],
                    &below,
                    idx,
                    loc,
                ));
                if let Err((other, _)) = clash {
                    err(
                        at.clone(),
                        format!("same host and path as /mcp_servers/{other}: a request must reach one MCP server"),
                    );
                }
            }
            for (tool, pin) in &s.pins {
                let at = format!("{at}/pins/{}", pointer_escape(tool));
                if tool.is_empty() {
                    err(at.clone(), "a pinned tool name must not be empty".into());
                }
                if !valid_pin(pin) {
                    err(
                        at,
                        format!(
                            "invalid pin \"{pin}\" for tool \"{tool}\": the SHA-256 of its definition as 64 lower-case hex \
                             digits (`warden pin` writes them)"
                        ),
                    );
                }
            }
            index.servers.push(ServerEntry {
                name: s.name.as_str().into(),
                batches: s.batches,
                lifecycle: s.lifecycle,
                pins: ServerPins::new(s.pinned, s.pins.clone()),
                tools: FxHashMap::default(),
                prompts: FxHashMap::default(),
                methods: FxHashMap::default(),
                resources_exact: FxHashMap::default(),
                resource_patterns: Vec::new(),
            });
        }

        for (ti, tool) in bundle.tools.iter().enumerate() {
            let t = ToolIdx(ti as u32);
            for (mi, m) in tool.mcp.iter().enumerate() {
                let at = format!("/tools/{ti}/mcp/{mi}");
                let given = [m.tool.is_some(), m.resource.is_some(), m.prompt.is_some(), m.method.is_some()];
                if given.iter().filter(|&&g| g).count() != 1 {
                    err(at.clone(), "give exactly one of \"tool\", \"resource\", \"prompt\", \"method\"".into());
                    continue;
                }
                let Some(&si) = names.get(m.server.as_str()) else {
                    err(format!("{at}/server"), format!("unknown MCP server \"{}\"", m.server));
                    continue;
                };
                let Some(server) = index.servers.get_mut(si) else { continue };
                let mut claim = |map: &mut FxHashMap<Box<str>, ToolIdx>, key: &str, field: &str| {
                    if key.is_empty() {
                        err(format!("{at}/{field}"), "must not be empty".into());
                        return;
                    }
                    match map.get(key) {
                        Some(other) if *other != t => err(
                            format!("{at}/{field}"),
                            format!(
                                "ambiguous: {field} \"{key}\" of server \"{}\" already reaches tool \"{}\"",
                                m.server,
                                bundle.tools.get(other.0 as usize).map(|o| o.id.as_str()).unwrap_or("")
                            ),
                        ),
                        Some(_) => {}
                        None => {
                            map.insert(key.into(), t);
                        }
                    }
                };
                if let Some(name) = &m.tool {
                    claim(&mut server.tools, name, "tool");
                } else if let Some(name) = &m.prompt {
                    claim(&mut server.prompts, name, "prompt");
                } else if let Some(method) = &m.method {
                    if matches!(method.as_str(), "tools/call" | "resources/read" | "prompts/get") {
                        err(
                            format!("{at}/method"),
                            format!("\"{method}\" is bound by \"tool\", \"resource\" or \"prompt\", not \"method\""),
                        );
                    } else if check_method(method).is_err() {
                        err(format!("{at}/method"), format!("invalid method \"{method}\""));
                    } else {
                        claim(&mut server.methods, method, "method");
                    }
                } else if let Some(pattern) = &m.resource {
                    match parse_glob(pattern) {
                        Err(detail) => {
                            err(format!("{at}/resource"), format!("invalid URI pattern \"{pattern}\": {detail}"))
                        }
                        Ok(tokens) => match glob_literal(&tokens) {
                            Some(exact) => claim(&mut server.resources_exact, &exact, "resource"),
                            None => {
                                if server.resource_patterns.iter().any(|(p, _, o)| *p == tokens && *o != t) {
                                    err(
                                        format!("{at}/resource"),
                                        format!("ambiguous: resource pattern \"{pattern}\" is already bound to another tool"),
                                    );
                                } else {
                                    let lit = glob_literal_prefix(&tokens);
                                    server.resource_patterns.push((tokens, lit, t));
                                }
                            }
                        },
                    }
                }
            }
        }
        for server in &mut index.servers {
            // Stable: equal literal prefixes keep catalog order.
            server.resource_patterns.sort_by_key(|p| std::cmp::Reverse(p.1));
        }
        index
    }
}

impl McpIndex {
    /// The MCP server a request goes to: `host` as sent (port and case ignored), `path` the normalized path without
    /// its query. `None`: not an MCP endpoint of the catalog (HTTP routes apply).
    /// A trailing `/` after the server's path (`/mcp/`, also what `/mcp/.` normalizes to) is the endpoint too.
    pub(crate) fn resolve_server(&self, host: &str, path: &str) -> Option<McpServerIdx> {
        let at = |p: &str| self.routes.resolve(host, "POST", p).map(|t| McpServerIdx(t.0));
        at(path).or_else(|| path.strip_suffix('/').filter(|p| !p.is_empty()).and_then(at))
    }

    /// A server whose path the request misses only by spelling (see `RouteTable::near_miss`).
    pub(crate) fn near_miss(&self, host: &str, path: &str) -> Option<McpServerIdx> {
        self.routes.near_miss(host, "POST", path).map(|t| McpServerIdx(t.0))
    }

    /// The server's name (empty for an index from another bundle).
    pub(crate) fn server_name(&self, s: McpServerIdx) -> &str {
        self.servers.get(s.0 as usize).map(|e| &*e.name).unwrap_or("")
    }

    /// Whether the server accepts JSON-RPC batches (`false` for an index from another bundle).
    pub(crate) fn batches(&self, s: McpServerIdx) -> bool {
        self.servers.get(s.0 as usize).is_some_and(|e| e.batches)
    }

    /// Number of MCP servers in the catalog.
    pub(crate) fn server_count(&self) -> usize {
        self.servers.len()
    }

    /// What a message reaches on a server.
    pub(crate) fn resolve(&self, s: McpServerIdx, msg: &McpMessage) -> McpTarget {
        let Some(server) = self.servers.get(s.0 as usize) else { return McpTarget::Unknown };
        let found =
            match &msg.kind {
                McpKind::ToolCall { name, .. } => server.tools.get(name.as_str()).copied(),
                McpKind::PromptGet { name, .. } => server.prompts.get(name.as_str()).copied(),
                McpKind::ResourceRead { uri } => server.resources_exact.get(uri.as_str()).copied().or_else(|| {
                    server.resource_patterns.iter().find(|(p, _, _)| glob_matches(p, uri)).map(|(_, _, t)| *t)
                }),
                McpKind::Other { method } => {
                    if let Some(t) = server.methods.get(method.as_str()) {
                        return McpTarget::Tool(*t);
                    }
                    return if LIFECYCLE_METHODS.contains(&method.as_str()) {
                        McpTarget::Lifecycle
                    } else {
                        McpTarget::Unknown
                    };
                }
                McpKind::Response => return McpTarget::Lifecycle,
            };
        match found {
            Some(t) => McpTarget::Tool(t),
            None => McpTarget::Unknown,
        }
    }

    /// The tool a `tools/call` of `name` would reach on a server (for `tools/list` filtering).
    pub(crate) fn tool(&self, s: McpServerIdx, name: &str) -> Option<ToolIdx> {
        self.servers.get(s.0 as usize).and_then(|e| e.tools.get(name).copied())
    }

    /// The server's pins (none for an index from another bundle).
    pub(crate) fn pins(&self, s: McpServerIdx) -> Option<&ServerPins> {
        self.servers.get(s.0 as usize).map(|e| &e.pins)
    }

    /// The tool names a server's `tools/call`s reach, with their catalog tools.
    pub(crate) fn bound_tools(&self, s: McpServerIdx) -> impl Iterator<Item = (&str, ToolIdx)> {
        self.servers.get(s.0 as usize).into_iter().flat_map(|e| e.tools.iter().map(|(k, v)| (&**k, *v)))
    }

    /// The server's `lifecycle` effect (`deny` for an index from another bundle).
    pub(crate) fn lifecycle(&self, s: McpServerIdx) -> Effect {
        self.servers.get(s.0 as usize).map(|e| e.lifecycle).unwrap_or(Effect::Deny)
    }
}

/// A JSON Pointer reference token (RFC 6901: `~` as `~0`, `/` as `~1`).
fn pointer_escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}
