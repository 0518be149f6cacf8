//! MCP (Model Context Protocol, Streamable HTTP): strict parsing of a JSON-RPC 2.0 POST body, the MCP servers of the
//! catalog, and what a message reaches.
//!
//! # Parsing ([`parse_body`])
//!
//! A gateway that parses a body differently from the server behind it can be walked around, so the parser refuses
//! everything a lenient server might read another way. Refused, each with a stable [`McpError::code`]:
//! - bytes that are not UTF-8 (`mcp_not_utf8`), text that is not one JSON value (`mcp_not_json`; includes truncated
//!   bodies, trailing data, lone surrogates, nesting beyond 128), a member name used twice in any object, at any
//!   depth, after unescaping (`mcp_duplicate_key`; `serde_json` alone would keep the last one);
//! - an array (a batch) unless the server allows batches (`mcp_batch_refused`), an empty batch (`mcp_empty_batch`);
//! - a message that is not an object, has members other than `jsonrpc`, `id`, `method`, `params`, `result`,
//!   `error`, or lacks `"jsonrpc": "2.0"` exactly (`mcp_invalid_message`);
//! - an `id` that is not a string or an integer (`null` included) (`mcp_invalid_id`);
//! - a method that is empty, has characters outside visible ASCII, or differs only in letter case from a method of
//!   MCP (`Tools/Call`) (`mcp_invalid_method`);
//! - `params` that are not an object, or do not have the shape of the method (`mcp_invalid_params`): `tools/call`
//!   needs an `id` and `params` `{name: string, arguments?: object, _meta?: object, task?: object}`;
//!   `resources/read` needs an `id` and `{uri: string, _meta?: object}` where the URI has no `.`/`..` segments, no
//!   `\`, no whitespace or control characters and no percent-encoded `.`, `/` or `\`; `prompts/get` needs an `id`
//!   and `{name: string, arguments?: {string: string}, _meta?: object}`; a `notifications/…` method must not have
//!   an `id`. Unknown members of these three methods' `params` are refused.
//!
//! A message with `result` or `error` (and no `method`) is the client's answer to a request of the server; it
//! needs an `id`.
//!
//! # Resolution
//!
//! [`CompiledBundle::resolve_mcp_server`] says whether a request goes to an MCP server of the catalog (host, then
//! the longest path prefix, as HTTP routes are resolved). [`CompiledBundle::resolve_mcp`] maps a message to an
//! [`McpTarget`]: `tools/call` by `params.name`, `resources/read` by `params.uri` (an exact URI first, then the
//! pattern with the longest literal prefix, then the earliest), `prompts/get` by `params.name`, any other method by
//! its name; unbound methods of the protocol's own life cycle ([`LIFECYCLE_METHODS`], and client answers) get the
//! server's `lifecycle` effect; everything else is an unknown tool (`defaults.unknown_tool`).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::args::{glob_literal, glob_literal_prefix, glob_matches, parse_glob, GlobToken};
use crate::bundle::{Bundle, Effect};
use crate::compile::{valid_id, CompiledBundle, ToolIdx};
use crate::decide::{decide, decide_gate, decide_listing, decide_with_args};
use crate::decision::{Decision, Outcome, Reason};
use crate::facts::Facts;
use crate::fxhash::FxHashMap;
use crate::route::{self, HostPattern, RouteTable, Segment};

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

/// Every method MCP defines (client to server and server to client), for the letter-case check.
const KNOWN_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
    "tasks/get",
    "tasks/result",
    "tasks/list",
    "tasks/cancel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/message",
    "notifications/roots/list_changed",
    "notifications/resources/updated",
    "notifications/resources/list_changed",
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/tasks/status",
    "notifications/elicitation/complete",
];

/// Why a body was refused. `code()` is stable; `Display` adds the detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpError {
    NotUtf8,
    NotJson(String),
    DuplicateKey(String),
    BatchRefused,
    EmptyBatch,
    InvalidMessage(String),
    InvalidId,
    InvalidMethod(String),
    InvalidParams(String),
    /// A number without an exact canonical form ([`crate::args::check_exact_numbers`]).
    InexactNumber(crate::args::InexactNumber),
}

impl McpError {
    /// Stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            McpError::NotUtf8 => "mcp_not_utf8",
            McpError::NotJson(_) => "mcp_not_json",
            McpError::DuplicateKey(_) => "mcp_duplicate_key",
            McpError::BatchRefused => "mcp_batch_refused",
            McpError::EmptyBatch => "mcp_empty_batch",
            McpError::InvalidMessage(_) => "mcp_invalid_message",
            McpError::InvalidId => "mcp_invalid_id",
            McpError::InvalidMethod(_) => "mcp_invalid_method",
            McpError::InvalidParams(_) => "mcp_invalid_params",
            McpError::InexactNumber(_) => "mcp_inexact_number",
        }
    }

    /// The JSON-RPC error code for a reply: -32700 (parse error) for bodies that are not JSON, -32600 (invalid
    /// request) otherwise.
    pub fn jsonrpc_code(&self) -> i64 {
        match self {
            McpError::NotUtf8 | McpError::NotJson(_) | McpError::DuplicateKey(_) => -32700,
            _ => -32600,
        }
    }
}

impl fmt::Display for McpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            McpError::NotUtf8 => write!(f, "the body is not UTF-8"),
            McpError::NotJson(e) => write!(f, "the body is not one JSON value: {e}"),
            McpError::DuplicateKey(k) => write!(f, "member \"{k}\" appears twice in one object"),
            McpError::BatchRefused => write!(f, "JSON-RPC batches are not allowed on this server"),
            McpError::EmptyBatch => write!(f, "empty JSON-RPC batch"),
            McpError::InvalidMessage(d) => write!(f, "not a JSON-RPC 2.0 message: {d}"),
            McpError::InvalidId => write!(f, "\"id\" must be a string or an integer"),
            McpError::InvalidMethod(m) => write!(f, "invalid method {m:?}"),
            McpError::InvalidParams(d) => write!(f, "invalid params: {d}"),
            McpError::InexactNumber(n) => write!(f, "{n}"),
        }
    }
}

impl std::error::Error for McpError {}

/// What one message asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum McpKind {
    /// `tools/call`.
    ToolCall { name: String, arguments: Option<Value> },
    /// `resources/read`.
    ResourceRead { uri: String },
    /// `prompts/get`.
    PromptGet { name: String, arguments: Option<Value> },
    /// Any other method.
    Other { method: String },
    /// The client's answer to a request of the server (`result` or `error`).
    Response,
}

/// One JSON-RPC message of a body.
#[derive(Debug, Clone, PartialEq)]
pub struct McpMessage {
    /// The request id (a string or an integer), `None` for a notification.
    pub id: Option<Value>,
    pub kind: McpKind,
}

impl McpMessage {
    /// The JSON-RPC method (`""` for a response).
    pub fn method(&self) -> &str {
        match &self.kind {
            McpKind::ToolCall { .. } => "tools/call",
            McpKind::ResourceRead { .. } => "resources/read",
            McpKind::PromptGet { .. } => "prompts/get",
            McpKind::Other { method } => method,
            McpKind::Response => "",
        }
    }

    /// What `Mcp-Name` carries for this message: the tool or prompt name, or the resource URI.
    pub fn name(&self) -> Option<&str> {
        match &self.kind {
            McpKind::ToolCall { name, .. } | McpKind::PromptGet { name, .. } => Some(name),
            McpKind::ResourceRead { uri } => Some(uri),
            McpKind::Other { .. } | McpKind::Response => None,
        }
    }

    /// The arguments conditions look at (`tools/call` and `prompts/get`).
    pub fn arguments(&self) -> Option<&Value> {
        match &self.kind {
            McpKind::ToolCall { arguments, .. } | McpKind::PromptGet { arguments, .. } => arguments.as_ref(),
            _ => None,
        }
    }

    /// A request without an id (a notification gets no JSON-RPC reply).
    pub fn is_notification(&self) -> bool {
        self.id.is_none() && !matches!(self.kind, McpKind::Response)
    }
}

/// A parsed POST body.
#[derive(Debug, Clone, PartialEq)]
pub struct McpBody {
    pub messages: Vec<McpMessage>,
    /// Whether the body was an array.
    pub batch: bool,
}

/// Parses a POST body strictly (see the module documentation).
pub fn parse_body(body: &[u8], batches: bool) -> Result<McpBody, McpError> {
    let text = std::str::from_utf8(body).map_err(|_| McpError::NotUtf8)?;
    let value = parse_strict(body)?;
    // Arguments are digested for approvals and compared by conditions: a number they would round is refused.
    crate::args::check_exact_numbers(text).map_err(McpError::InexactNumber)?;
    match value {
        Value::Array(list) => {
            if !batches {
                return Err(McpError::BatchRefused);
            }
            if list.is_empty() {
                return Err(McpError::EmptyBatch);
            }
            let messages = list.into_iter().map(message).collect::<Result<Vec<_>, _>>()?;
            Ok(McpBody { messages, batch: true })
        }
        other => Ok(McpBody { messages: vec![message(other)?], batch: false }),
    }
}

/// Parses JSON (UTF-8 checked by the caller; the parser checks it again) into a value, refusing duplicate member
/// names at any depth.
pub fn parse_strict(text: &[u8]) -> Result<Value, McpError> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let parsed = StrictValue::deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(v) => Ok(v.0),
        Err(e) => {
            let msg = e.to_string();
            match msg.strip_prefix(DUPLICATE) {
                Some(rest) => {
                    let key = rest.split(" at line ").next().unwrap_or(rest);
                    Err(McpError::DuplicateKey(key.to_string()))
                }
                None => Err(McpError::NotJson(msg)),
            }
        }
    }
}

const DUPLICATE: &str = "duplicate member: ";

struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = StrictValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::from(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<StrictValue, E> {
        serde_json::Number::from_f64(v)
            .map(|n| StrictValue(Value::Number(n)))
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrictValue, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(StrictValue(Value::Array(out)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictValue, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("{DUPLICATE}{key}")));
            }
            let StrictValue(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(StrictValue(Value::Object(out)))
    }
}

fn invalid(detail: &str) -> McpError {
    McpError::InvalidMessage(detail.to_string())
}

fn params_err(detail: impl Into<String>) -> McpError {
    McpError::InvalidParams(detail.into())
}

/// One message of a body.
fn message(v: Value) -> Result<McpMessage, McpError> {
    let Value::Object(mut obj) = v else { return Err(invalid("not an object")) };
    if let Some(k) =
        obj.keys().find(|k| !matches!(k.as_str(), "jsonrpc" | "id" | "method" | "params" | "result" | "error"))
    {
        return Err(McpError::InvalidMessage(format!("unexpected member \"{k}\"")));
    }
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid("\"jsonrpc\" must be \"2.0\""));
    }
    let id = match obj.remove("id") {
        None => None,
        Some(Value::String(s)) => Some(Value::String(s)),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(Value::Number(n)),
        Some(_) => return Err(McpError::InvalidId),
    };
    let method = match obj.remove("method") {
        None => {
            let answers = usize::from(obj.contains_key("result")) + usize::from(obj.contains_key("error"));
            if answers != 1 || obj.contains_key("params") {
                return Err(invalid(
                    "a request needs \"method\"; an answer needs exactly one of \"result\", \"error\"",
                ));
            }
            if id.is_none() {
                return Err(McpError::InvalidId);
            }
            return Ok(McpMessage { id, kind: McpKind::Response });
        }
        Some(Value::String(m)) => m,
        Some(_) => return Err(McpError::InvalidMethod("(not a string)".into())),
    };
    if obj.contains_key("result") || obj.contains_key("error") {
        return Err(invalid("a request must not have \"result\" or \"error\""));
    }
    check_method(&method)?;
    let params = match obj.remove("params") {
        None => None,
        Some(Value::Object(p)) => Some(p),
        Some(_) => return Err(params_err("\"params\" must be an object")),
    };
    let needs_id = |what: &str| -> Result<(), McpError> {
        if id.is_none() {
            Err(params_err(format!("{what} is a request: it needs an \"id\"")))
        } else {
            Ok(())
        }
    };
    let kind = match method.as_str() {
        "tools/call" => {
            needs_id("tools/call")?;
            let mut p = params.ok_or_else(|| params_err("tools/call needs params"))?;
            only(&p, &["name", "arguments", "_meta", "task"], "tools/call")?;
            meta_object(&p, "_meta")?;
            meta_object(&p, "task")?;
            let name = name_of(&mut p, "name", "tools/call")?;
            let arguments = match p.remove("arguments") {
                None => None,
                Some(a @ Value::Object(_)) => Some(a),
                Some(_) => return Err(params_err("tools/call \"arguments\" must be an object")),
            };
            McpKind::ToolCall { name, arguments }
        }
        "resources/read" => {
            needs_id("resources/read")?;
            let mut p = params.ok_or_else(|| params_err("resources/read needs params"))?;
            only(&p, &["uri", "_meta"], "resources/read")?;
            meta_object(&p, "_meta")?;
            let uri = name_of(&mut p, "uri", "resources/read")?;
            check_uri(&uri)?;
            McpKind::ResourceRead { uri }
        }
        "prompts/get" => {
            needs_id("prompts/get")?;
            let mut p = params.ok_or_else(|| params_err("prompts/get needs params"))?;
            only(&p, &["name", "arguments", "_meta"], "prompts/get")?;
            meta_object(&p, "_meta")?;
            let name = name_of(&mut p, "name", "prompts/get")?;
            let arguments = match p.remove("arguments") {
                None => None,
                Some(Value::Object(a)) if a.values().all(Value::is_string) => Some(Value::Object(a)),
                Some(_) => return Err(params_err("prompts/get \"arguments\" must map names to strings")),
            };
            McpKind::PromptGet { name, arguments }
        }
        m => {
            if m.starts_with("notifications/") && id.is_some() {
                return Err(params_err(format!("{m} is a notification: it must not have an \"id\"")));
            }
            McpKind::Other { method }
        }
    };
    Ok(McpMessage { id, kind })
}

fn check_method(m: &str) -> Result<(), McpError> {
    if m.is_empty() || m.len() > 256 || !m.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(McpError::InvalidMethod(m.to_string()));
    }
    if KNOWN_METHODS.iter().any(|k| k.eq_ignore_ascii_case(m) && *k != m) {
        return Err(McpError::InvalidMethod(m.to_string()));
    }
    Ok(())
}

fn only(p: &Map<String, Value>, allowed: &[&str], method: &str) -> Result<(), McpError> {
    match p.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(params_err(format!("{method} has an unexpected member \"{k}\""))),
        None => Ok(()),
    }
}

fn meta_object(p: &Map<String, Value>, key: &str) -> Result<(), McpError> {
    match p.get(key) {
        None | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(params_err(format!("\"{key}\" must be an object"))),
    }
}

fn name_of(p: &mut Map<String, Value>, key: &str, method: &str) -> Result<String, McpError> {
    match p.remove(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(params_err(format!("{method} needs \"{key}\": a non-empty string"))),
    }
}

/// Resource URIs are matched as text: refuse the forms a server might resolve to another resource.
fn check_uri(uri: &str) -> Result<(), McpError> {
    let bad = || params_err(format!("resource URI {uri:?} is not in a form the gateway matches"));
    if uri.len() > 4096 || uri.chars().any(|c| c.is_whitespace() || c.is_control() || c == '\\') {
        return Err(bad());
    }
    let lower = uri.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c", "%00"].iter().any(|e| lower.contains(e)) {
        return Err(bad());
    }
    let path = uri.split(['?', '#']).next().unwrap_or(uri);
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(bad());
    }
    Ok(())
}

/// Index of an MCP server in a compiled bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct McpServerIdx(pub u32);

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
            let host = match &s.host {
                None => Some(HostPattern::Any),
                Some(h) => match route::parse_host(h) {
                    Ok(p) => Some(p),
                    Err(detail) => {
                        err(format!("{at}/host"), format!("invalid host \"{h}\": {detail}"));
                        None
                    }
                },
            };
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
            index.servers.push(ServerEntry {
                name: s.name.as_str().into(),
                batches: s.batches,
                lifecycle: s.lifecycle,
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

impl CompiledBundle {
    /// The MCP server a request goes to: `host` as sent (port and case ignored), `path` the normalized path without
    /// its query. `None`: not an MCP endpoint of the catalog (HTTP routes apply).
    pub fn resolve_mcp_server(&self, host: &str, path: &str) -> Option<McpServerIdx> {
        self.mcp.routes.resolve(host, "POST", path).map(|t| McpServerIdx(t.0))
    }

    /// The server's name (empty for an index from another bundle).
    pub fn mcp_server_name(&self, s: McpServerIdx) -> &str {
        self.mcp.servers.get(s.0 as usize).map(|e| &*e.name).unwrap_or("")
    }

    /// Whether the server accepts JSON-RPC batches (`false` for an index from another bundle).
    pub fn mcp_batches(&self, s: McpServerIdx) -> bool {
        self.mcp.servers.get(s.0 as usize).is_some_and(|e| e.batches)
    }

    /// Number of MCP servers in the catalog.
    pub fn mcp_server_count(&self) -> usize {
        self.mcp.servers.len()
    }

    /// What a message reaches on a server.
    pub fn resolve_mcp(&self, s: McpServerIdx, msg: &McpMessage) -> McpTarget {
        let Some(server) = self.mcp.servers.get(s.0 as usize) else { return McpTarget::Unknown };
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
    pub fn mcp_tool(&self, s: McpServerIdx, name: &str) -> Option<ToolIdx> {
        self.mcp.servers.get(s.0 as usize).and_then(|e| e.tools.get(name).copied())
    }
}

/// Decides one message. `facts.tool` is ignored: the message's target decides the tool.
pub fn decide_message(bundle: &CompiledBundle, facts: &Facts, s: McpServerIdx, msg: &McpMessage, now: i64) -> Decision {
    match bundle.resolve_mcp(s, msg) {
        McpTarget::Tool(t) => {
            let facts = Facts { tool: Some(t), ..facts.clone() };
            decide_with_args(bundle, &facts, msg.arguments(), now)
        }
        McpTarget::Unknown => {
            let facts = Facts { tool: None, ..facts.clone() };
            decide(bundle, &facts, now)
        }
        McpTarget::Lifecycle => decide_lifecycle(bundle, facts, s, now),
    }
}

/// The server's `lifecycle` effect, after identity, revocations and task expiry. Also what a `GET` or `DELETE` on
/// the endpoint (the SSE stream and session end of older MCP revisions) gets.
pub fn decide_lifecycle(bundle: &CompiledBundle, facts: &Facts, s: McpServerIdx, now: i64) -> Decision {
    if let Err(d) = decide_gate(bundle, facts, now) {
        return d;
    }
    let lifecycle = bundle.mcp.servers.get(s.0 as usize).map(|e| e.lifecycle).unwrap_or(Effect::Deny);
    let outcome = if lifecycle == Effect::Allow { Outcome::Allow } else { Outcome::Deny };
    Decision { outcome, reason: Reason::McpLifecycle, rule: None, revision: bundle.revision }
}

/// The decision the `Mcp-Method` / `Mcp-Name` headers alone allow, before the body is read: argument conditions
/// are read as for `tools/list` (they may hold), so a `Deny` here is final whatever the arguments, while anything
/// else must still be confirmed on the body. `None` when the headers do not make a well-formed message (the body
/// decides, and must agree with them).
pub fn decide_headers(
    bundle: &CompiledBundle,
    facts: &Facts,
    s: McpServerIdx,
    method: &str,
    name: Option<&str>,
    now: i64,
) -> Option<Decision> {
    check_method(method).ok()?;
    let kind = match (method, name) {
        ("tools/call", Some(n)) => McpKind::ToolCall { name: n.to_string(), arguments: None },
        ("resources/read", Some(u)) => {
            check_uri(u).ok()?;
            McpKind::ResourceRead { uri: u.to_string() }
        }
        ("prompts/get", Some(n)) => McpKind::PromptGet { name: n.to_string(), arguments: None },
        ("tools/call" | "resources/read" | "prompts/get", None) => return None,
        (m, None) => McpKind::Other { method: m.to_string() },
        (_, Some(_)) => return None,
    };
    let msg = McpMessage { id: Some(Value::from(0)), kind };
    Some(match bundle.resolve_mcp(s, &msg) {
        McpTarget::Tool(t) => decide_listing(bundle, &Facts { tool: Some(t), ..facts.clone() }, now),
        McpTarget::Unknown => decide(bundle, &Facts { tool: None, ..facts.clone() }, now),
        McpTarget::Lifecycle => decide_lifecycle(bundle, facts, s, now),
    })
}

/// The decision for a whole body and the message that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyDecision {
    pub decision: Decision,
    /// Index of the deciding message in the body: the first denied one, else the first needing step-up, else the
    /// first (every message allowed).
    pub message: usize,
}

/// Decides a body: allowed only if every message is allowed; otherwise the whole body is refused by its first denied
/// message, or, without denials, needs its one step-up call's approval. A batch with two or more step-up calls is
/// denied (`step_up_batch`, the rule of the first, the message of the second): one approval covers one call.
pub fn decide_body(bundle: &CompiledBundle, facts: &Facts, s: McpServerIdx, body: &McpBody, now: i64) -> BodyDecision {
    let mut first: Option<BodyDecision> = None;
    let mut step_up: Option<BodyDecision> = None;
    for (i, msg) in body.messages.iter().enumerate() {
        let d = decide_message(bundle, facts, s, msg, now);
        match d.outcome {
            Outcome::Deny => return BodyDecision { decision: d, message: i },
            Outcome::StepUp => match &step_up {
                None => step_up = Some(BodyDecision { decision: d, message: i }),
                Some(first) => {
                    let decision = Decision {
                        outcome: Outcome::Deny,
                        reason: Reason::StepUpBatch,
                        rule: first.decision.rule.clone(),
                        revision: bundle.revision,
                    };
                    return BodyDecision { decision, message: i };
                }
            },
            Outcome::Allow => {
                if first.is_none() {
                    first = Some(BodyDecision { decision: d, message: i });
                }
            }
        }
    }
    match (step_up, first) {
        (Some(s), _) | (None, Some(s)) => s,
        (None, None) => BodyDecision {
            decision: Decision {
                outcome: Outcome::Deny,
                reason: Reason::BadRequest,
                rule: None,
                revision: bundle.revision,
            },
            message: 0,
        },
    }
}

/// How a tool appears in a filtered `tools/list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// The agent may call it (for some arguments, when rules have conditions).
    Visible,
    /// Calling it needs an approval.
    NeedsApproval,
    /// The agent may not call it.
    Hidden,
}

/// Whether an agent sees a tool of a server in `tools/list`. Argument conditions are read optimistically (the agent
/// may be allowed for some arguments): an allow or step-up rule with conditions counts, a deny rule with conditions
/// does not hide the tool. Calls are still decided one by one.
pub fn tool_visibility(bundle: &CompiledBundle, facts: &Facts, s: McpServerIdx, name: &str, now: i64) -> Visibility {
    let tool = bundle.mcp_tool(s, name);
    let facts = Facts { tool, ..facts.clone() };
    let d = decide_listing(bundle, &facts, now);
    match d.outcome {
        Outcome::Allow => Visibility::Visible,
        Outcome::StepUp => Visibility::NeedsApproval,
        Outcome::Deny => Visibility::Hidden,
    }
}
