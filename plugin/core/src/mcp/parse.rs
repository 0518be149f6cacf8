//! Strict parsing of an MCP (Streamable HTTP) POST body: JSON-RPC 2.0 messages, with every refusal a stable
//! [`McpError`] code (see the module documentation of [`crate::mcp`] for the rules).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

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
}

/// What kind of refusal an [`McpError`] is, without its detail: `Copy`, so a decision's reason can carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum McpErrorKind {
    NotUtf8,
    NotJson,
    DuplicateKey,
    BatchRefused,
    EmptyBatch,
    InvalidMessage,
    InvalidId,
    InvalidMethod,
    InvalidParams,
}

impl McpErrorKind {
    /// Stable reason code.
    pub fn code(self) -> &'static str {
        match self {
            McpErrorKind::NotUtf8 => "mcp_not_utf8",
            McpErrorKind::NotJson => "mcp_not_json",
            McpErrorKind::DuplicateKey => "mcp_duplicate_key",
            McpErrorKind::BatchRefused => "mcp_batch_refused",
            McpErrorKind::EmptyBatch => "mcp_empty_batch",
            McpErrorKind::InvalidMessage => "mcp_invalid_message",
            McpErrorKind::InvalidId => "mcp_invalid_id",
            McpErrorKind::InvalidMethod => "mcp_invalid_method",
            McpErrorKind::InvalidParams => "mcp_invalid_params",
        }
    }

    /// The JSON-RPC error code for a reply: -32700 (parse error) for bodies that are not JSON, -32600 (invalid
    /// request) otherwise.
    pub fn jsonrpc_code(self) -> i64 {
        match self {
            McpErrorKind::NotUtf8 | McpErrorKind::NotJson | McpErrorKind::DuplicateKey => -32700,
            _ => -32600,
        }
    }
}

impl McpError {
    /// The kind of refusal.
    pub fn kind(&self) -> McpErrorKind {
        match self {
            McpError::NotUtf8 => McpErrorKind::NotUtf8,
            McpError::NotJson(_) => McpErrorKind::NotJson,
            McpError::DuplicateKey(_) => McpErrorKind::DuplicateKey,
            McpError::BatchRefused => McpErrorKind::BatchRefused,
            McpError::EmptyBatch => McpErrorKind::EmptyBatch,
            McpError::InvalidMessage(_) => McpErrorKind::InvalidMessage,
            McpError::InvalidId => McpErrorKind::InvalidId,
            McpError::InvalidMethod(_) => McpErrorKind::InvalidMethod,
            McpError::InvalidParams(_) => McpErrorKind::InvalidParams,
        }
    }

    /// Stable reason code.
    pub fn code(&self) -> &'static str {
        self.kind().code()
    }

    /// The JSON-RPC error code for a reply (see [`McpErrorKind::jsonrpc_code`]).
    pub fn jsonrpc_code(&self) -> i64 {
        self.kind().jsonrpc_code()
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
    std::str::from_utf8(body).map_err(|_| McpError::NotUtf8)?;
    let value = parse_strict(body)?;
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

pub(crate) fn check_method(m: &str) -> Result<(), McpError> {
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
pub(crate) fn check_uri(uri: &str) -> Result<(), McpError> {
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
