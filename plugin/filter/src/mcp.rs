//! MCP (Streamable HTTP) on the request path, without the host: the MCP headers, the content type, the check that
//! `Mcp-Method` / `Mcp-Name` agree with the body, JSON-RPC error replies and the `mcp` part of the decision record.
//!
//! The HTTP context (`filter.rs`) owns the flow: for a request to an MCP server of the bundle it decides from the
//! headers what it can (an early refusal), reads the body (holding the headers when the host allows pausing there,
//! else letting them go and buffering the body), parses it with `warden_core::mcp::parse_body`, and decides the
//! whole body with `warden_core::mcp::decide_body`.

use serde::Serialize;
use serde_json::{json, Value};
use warden_core::decision::{Decision, Outcome, Reason};
use warden_core::mcp::{self as core_mcp, McpBody, McpError, Visibility};

use crate::approval::StepUpInfo;
use crate::evaluate::Verdict;
use crate::reply::Reply;

/// JSON-RPC error code of a call the policy denies.
pub const CODE_DENIED: i64 = -32001;
/// JSON-RPC error code of a call that needs a step-up approval.
pub const CODE_STEP_UP: i64 = -32002;
/// JSON-RPC error code of a body over `max_body_bytes` (the request is refused before it is read).
pub const CODE_TOO_LARGE: i64 = -32600;

/// A request header the MCP path reads, as found in the header map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderValue<'h> {
    #[default]
    Absent,
    One(&'h str),
    /// Repeated, or not UTF-8: ambiguous, refused.
    Ambiguous,
}

impl<'h> HeaderValue<'h> {
    fn set(&mut self, value: &'h [u8]) {
        *self = match (*self, std::str::from_utf8(value)) {
            (HeaderValue::Absent, Ok(v)) => HeaderValue::One(v),
            _ => HeaderValue::Ambiguous,
        };
    }
}

/// The headers of an MCP request the filter looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct McpHeaders<'h> {
    pub content_type: HeaderValue<'h>,
    pub method: HeaderValue<'h>,
    pub name: HeaderValue<'h>,
}

/// One pass over the request header pairs (names are lower case in the host's map).
pub fn scan(headers: &[(String, Vec<u8>)]) -> McpHeaders<'_> {
    let mut h = McpHeaders::default();
    for (name, value) in headers {
        match name.to_ascii_lowercase().as_str() {
            "content-type" => h.content_type.set(value),
            "mcp-method" => h.method.set(value),
            "mcp-name" => h.name.set(value),
            _ => {}
        }
    }
    h
}

/// `application/json`, any case, optionally with parameters (`; charset=utf-8`; another charset is refused).
pub fn is_json(content_type: &str) -> bool {
    let mut parts = content_type.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        !k.trim().eq_ignore_ascii_case("charset") || v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
    })
}

/// Why the request headers of an MCP POST are refused before the body is read, as (status, reason code).
pub fn check_headers(h: &McpHeaders<'_>) -> Result<(), (u16, &'static str)> {
    match h.content_type {
        HeaderValue::One(ct) if is_json(ct) => {}
        HeaderValue::Ambiguous => return Err((400, "mcp_ambiguous_header")),
        HeaderValue::One(_) | HeaderValue::Absent => return Err((415, "mcp_content_type")),
    }
    if h.method == HeaderValue::Ambiguous || h.name == HeaderValue::Ambiguous {
        return Err((400, "mcp_ambiguous_header"));
    }
    if h.method == HeaderValue::Absent && h.name != HeaderValue::Absent {
        return Err((400, "mcp_header_mismatch"));
    }
    Ok(())
}

/// Whether `Mcp-Method` / `Mcp-Name`, when sent, say exactly what the body says (`mcp_header_mismatch` if not).
/// With `Mcp-Method`, the body must be one message with that method; `Mcp-Name` must be present exactly when the
/// message has a name (tool, prompt) or URI (resource), and equal it.
pub fn headers_agree(h: &McpHeaders<'_>, body: &McpBody) -> Result<(), &'static str> {
    let HeaderValue::One(method) = h.method else {
        return if h.name == HeaderValue::Absent { Ok(()) } else { Err("mcp_header_mismatch") };
    };
    let [msg] = body.messages.as_slice() else { return Err("mcp_header_mismatch") };
    if body.batch || msg.method() != method {
        return Err("mcp_header_mismatch");
    }
    let header_name = match h.name {
        HeaderValue::One(n) => Some(n),
        HeaderValue::Absent | HeaderValue::Ambiguous => None,
    };
    if header_name != msg.name() {
        return Err("mcp_header_mismatch");
    }
    Ok(())
}

/// A verdict from a core decision.
pub fn verdict(d: Decision) -> Verdict {
    Verdict {
        outcome: d.outcome,
        status: d.http_status(),
        reason: d.reason.code(),
        reason_kind: d.reason,
        rule: d.rule,
        revision: Some(d.revision),
    }
}

/// A refusal of the request's shape (bad body, headers, size): deny with a `mcp_*` code.
pub fn refusal(status: u16, code: &'static str, revision: Option<u64>) -> Verdict {
    Verdict { outcome: Outcome::Deny, status, reason: code, reason_kind: Reason::BadRequest, rule: None, revision }
}

/// The status and code for a body the parser refused.
pub fn parse_refusal(e: &McpError, revision: Option<u64>) -> Verdict {
    refusal(400, e.code(), revision)
}

#[derive(Serialize)]
struct RpcError<'a> {
    jsonrpc: &'static str,
    id: Value,
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    code: i64,
    message: &'a str,
    data: &'a crate::reply::Body<'a>,
}

/// The JSON-RPC error reply for a refused MCP body: one error object with the request's `id` (`null` when the body
/// could not be read), or for a batch an array with one error per request of the batch (the batch is refused
/// whole). `None` when every message is a notification: then the caller answers with the plain HTTP reply.
pub fn error_reply(
    v: &Verdict,
    decision_id: &str,
    body: Option<&McpBody>,
    approval: Option<&StepUpInfo>,
) -> Option<Reply> {
    let code = match (v.outcome, v.reason_kind) {
        (Outcome::StepUp, _) => CODE_STEP_UP,
        (_, Reason::BadRequest) if v.status == 413 => CODE_TOO_LARGE,
        (_, Reason::BadRequest) if matches!(v.reason, "mcp_not_utf8" | "mcp_not_json" | "mcp_duplicate_key") => -32700,
        (_, Reason::BadRequest) => -32600,
        _ => CODE_DENIED,
    };
    let message = match v.outcome {
        Outcome::StepUp => format!("approval required by warden ({})", v.reason),
        _ => format!("refused by warden ({})", v.reason),
    };
    let data = crate::reply::Body::new(v, decision_id, approval);
    let error =
        |id: Value| RpcError { jsonrpc: "2.0", id, error: ErrorObject { code, message: &message, data: &data } };
    let payload = match body {
        None => serde_json::to_vec(&error(Value::Null)),
        Some(b) => {
            let ids: Vec<Value> = b.messages.iter().filter_map(|m| m.id.clone()).collect();
            if ids.is_empty() {
                return None;
            }
            if b.batch {
                serde_json::to_vec(&ids.into_iter().map(error).collect::<Vec<_>>())
            } else {
                serde_json::to_vec(&error(ids.into_iter().next().unwrap_or(Value::Null)))
            }
        }
    };
    let body = payload.unwrap_or_else(|_| b"{}".to_vec());
    Some(Reply {
        status: v.status,
        headers: vec![
            ("content-type", "application/json".to_string()),
            ("cache-control", "no-store".to_string()),
            ("x-warden-decision-id", decision_id.to_string()),
        ],
        body,
    })
}

/// The `mcp` object of a decision record: the server, and the deciding message's method and tool / resource /
/// prompt name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct McpRecord {
    pub server: String,
    /// JSON-RPC method (`""` for a client answer; `GET`/`DELETE` for those HTTP methods).
    pub method: String,
    /// Tool or prompt name, or resource URI.
    pub name: Option<String>,
    /// Number of messages in the body (0 before the body was read).
    pub messages: usize,
    /// Whether the body was a batch.
    pub batch: bool,
}

/// The `_meta` key that marks a listed tool whose calls need a step-up approval.
pub const APPROVAL_META: &str = "dev.warden/approval";

/// How a `tools/list` response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFraming {
    /// `application/json`: one JSON-RPC response.
    Json,
    /// `text/event-stream`: server-sent events whose `data` are JSON-RPC messages.
    Sse,
}

/// The framing of a `tools/list` response from its headers; `None` (fail closed) for any other content type or a
/// content encoding other than `identity`.
pub fn list_framing(content_type: Option<&str>, content_encoding: Option<&str>) -> Option<ListFraming> {
    if content_encoding.is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity")) {
        return None;
    }
    let media = content_type?.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match media.as_str() {
        "application/json" => Some(ListFraming::Json),
        "text/event-stream" => Some(ListFraming::Sse),
        _ => None,
    }
}

/// A `tools/list` response the filter cannot read completely (it is replaced by an error, never passed on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unfilterable;

/// Rewrites one JSON-RPC message of a `tools/list` response: the answer to request `id` keeps only the tools
/// `visible` does not hide, and marks those needing approval in their `_meta`. Other messages (notifications,
/// requests of the server, error answers) are kept. `Err` when the message is not a JSON-RPC 2.0 object or the
/// answer has no `result.tools` array of objects with a string `name`.
fn rewrite_message(
    text: &str,
    id: &Value,
    visible: &dyn Fn(&str) -> Visibility,
) -> Result<Option<String>, Unfilterable> {
    let mut v = core_mcp::parse_strict(text.as_bytes()).map_err(|_| Unfilterable)?;
    let Some(obj) = v.as_object_mut() else { return Err(Unfilterable) };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(Unfilterable);
    }
    if obj.contains_key("method") || obj.contains_key("error") {
        return Ok(None);
    }
    if obj.get("id") != Some(id) {
        return Err(Unfilterable);
    }
    let tools = obj
        .get_mut("result")
        .and_then(Value::as_object_mut)
        .and_then(|r| r.get_mut("tools"))
        .and_then(Value::as_array_mut)
        .ok_or(Unfilterable)?;
    let mut kept = Vec::with_capacity(tools.len());
    for mut tool in tools.drain(..) {
        let name = tool.get("name").and_then(Value::as_str).ok_or(Unfilterable)?.to_string();
        match visible(&name) {
            Visibility::Hidden => {}
            Visibility::Visible => kept.push(tool),
            Visibility::NeedsApproval => {
                let t = tool.as_object_mut().ok_or(Unfilterable)?;
                let meta = t.entry("_meta").or_insert_with(|| json!({}));
                meta.as_object_mut().ok_or(Unfilterable)?.insert(APPROVAL_META.into(), json!("required"));
                kept.push(tool);
            }
        }
    }
    *tools = kept;
    serde_json::to_string(&v).map(Some).map_err(|_| Unfilterable)
}

/// Rewrites a whole `tools/list` response body. `Err` (fail closed) when it cannot be read completely: not UTF-8,
/// a message that is not JSON-RPC, an SSE event whose data is not JSON, or no answer to `id` at all.
pub fn filter_tools_list(
    framing: ListFraming,
    body: &[u8],
    id: &Value,
    visible: &dyn Fn(&str) -> Visibility,
) -> Result<Vec<u8>, Unfilterable> {
    let text = std::str::from_utf8(body).map_err(|_| Unfilterable)?;
    match framing {
        ListFraming::Json => match rewrite_message(text, id, visible)? {
            Some(out) => Ok(out.into_bytes()),
            None => Ok(body.to_vec()),
        },
        ListFraming::Sse => {
            let text = text.replace("\r\n", "\n");
            let mut out = String::with_capacity(text.len());
            let mut answered = false;
            for event in text.split("\n\n") {
                if event.is_empty() {
                    continue;
                }
                let mut data: Vec<&str> = Vec::new();
                let mut other: Vec<&str> = Vec::new();
                for line in event.split('\n') {
                    if let Some(d) = line.strip_prefix("data:") {
                        data.push(d.strip_prefix(' ').unwrap_or(d));
                    } else {
                        other.push(line);
                    }
                }
                for line in &other {
                    out.push_str(line);
                    out.push('\n');
                }
                if !data.is_empty() {
                    let joined = data.join("\n");
                    let rewritten = rewrite_message(&joined, id, visible)?;
                    answered |= rewritten.is_some();
                    out.push_str("data: ");
                    out.push_str(rewritten.as_deref().unwrap_or(&joined).replace('\n', "\ndata: ").as_str());
                    out.push('\n');
                }
                out.push('\n');
            }
            if !answered {
                return Err(Unfilterable);
            }
            Ok(out.into_bytes())
        }
    }
}

/// The body that replaces a `tools/list` response the filter could not read: a JSON-RPC error for `id` (as one SSE
/// event for an event stream).
pub fn list_failure(framing: Option<ListFraming>, id: &Value, decision_id: &str) -> Vec<u8> {
    let err = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603,
        "message": "warden could not filter the tools/list response (unreadable, compressed or unexpected content)",
        "data": {"decision_id": decision_id, "reason": "mcp_list_unfilterable"}}});
    match framing {
        Some(ListFraming::Sse) => format!("event: message\ndata: {err}\n\n").into_bytes(),
        _ => err.to_string().into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use warden_core::mcp::parse_body;

    fn hdrs(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn content_types() {
        for (ct, ok) in [
            ("application/json", true),
            ("Application/JSON; charset=UTF-8", true),
            ("application/json;charset=\"utf-8\"", true),
            ("application/json; charset=latin1", false),
            ("text/plain", false),
            ("application/json-seq", false),
            ("application/jsonx", false),
            ("", false),
        ] {
            assert_eq!(is_json(ct), ok, "{ct}");
        }
    }

    #[test]
    fn header_checks() {
        let check = |pairs: &[(&str, &str)]| check_headers(&scan(&hdrs(pairs))).map_err(|e| e.1);
        assert_eq!(check(&[("content-type", "application/json")]), Ok(()));
        assert_eq!(check(&[("content-type", "text/plain")]), Err("mcp_content_type"));
        assert_eq!(check(&[]), Err("mcp_content_type"));
        assert_eq!(
            check(&[("content-type", "application/json"), ("content-type", "text/plain")]),
            Err("mcp_ambiguous_header")
        );
        assert_eq!(
            check(&[("content-type", "application/json"), ("mcp-method", "a"), ("mcp-method", "b")]),
            Err("mcp_ambiguous_header")
        );
        assert_eq!(check(&[("content-type", "application/json"), ("mcp-name", "x")]), Err("mcp_header_mismatch"));
    }

    #[test]
    fn headers_must_agree_with_the_body() {
        let call = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"refund"}}"#;
        let body = parse_body(call, true).unwrap();
        let agree = |pairs: &[(&str, &str)]| headers_agree(&scan(&hdrs(pairs)), &body);
        assert_eq!(agree(&[]), Ok(()));
        assert_eq!(agree(&[("mcp-method", "tools/call"), ("mcp-name", "refund")]), Ok(()));
        assert_eq!(agree(&[("mcp-method", "tools/call"), ("mcp-name", "lookup")]), Err("mcp_header_mismatch"));
        assert_eq!(agree(&[("mcp-method", "tools/call")]), Err("mcp_header_mismatch"));
        assert_eq!(agree(&[("mcp-method", "Tools/Call"), ("mcp-name", "refund")]), Err("mcp_header_mismatch"));
        assert_eq!(agree(&[("mcp-method", "ping")]), Err("mcp_header_mismatch"));
        let batch = parse_body(&[b"[".as_slice(), call, b"]"].concat(), true).unwrap();
        let h = hdrs(&[("mcp-method", "tools/call"), ("mcp-name", "refund")]);
        assert_eq!(headers_agree(&scan(&h), &batch), Err("mcp_header_mismatch"));
    }

    #[test]
    fn tools_lists_are_filtered_or_replaced() {
        let vis = |name: &str| match name {
            "lookup" => Visibility::Visible,
            "refund" => Visibility::NeedsApproval,
            _ => Visibility::Hidden,
        };
        let list = json!({"jsonrpc": "2.0", "id": 3, "result": {"tools": [
            {"name": "lookup", "inputSchema": {}}, {"name": "wipe"}, {"name": "refund", "_meta": {"x": 1}}]}});
        let out = filter_tools_list(ListFraming::Json, list.to_string().as_bytes(), &json!(3), &vis).unwrap();
        let got: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            got["result"]["tools"],
            json!([{"name": "lookup", "inputSchema": {}}, {"name": "refund", "_meta": {"x": 1, APPROVAL_META: "required"}}])
        );
        // SSE: a notification before the answer is kept; the answer is filtered.
        let sse = format!(
            "event: message\ndata: {}\n\nevent: message\r\ndata: {}\r\n\r\n",
            json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}),
            list
        );
        let out =
            String::from_utf8(filter_tools_list(ListFraming::Sse, sse.as_bytes(), &json!(3), &vis).unwrap()).unwrap();
        assert!(out.contains("notifications/progress"), "{out}");
        assert!(!out.contains("wipe"), "{out}");
        assert!(out.contains("lookup") && out.contains(APPROVAL_META), "{out}");
        // Fail closed: a broken event, the wrong id, no answer, a duplicate key, not UTF-8.
        let broken = format!("data: {}\n\ndata: {{not json\n\n", list);
        for (framing, body) in [
            (ListFraming::Sse, broken.into_bytes()),
            (ListFraming::Json, list.to_string().replace("\"id\":3", "\"id\":4").into_bytes()),
            (ListFraming::Sse, b"event: ping\n\n".to_vec()),
            (
                ListFraming::Json,
                br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[],"tools":[{"name":"wipe"}]}}"#.to_vec(),
            ),
            (ListFraming::Json, b"\xff".to_vec()),
            (ListFraming::Json, br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"title":"no name"}]}}"#.to_vec()),
        ] {
            assert_eq!(filter_tools_list(framing, &body, &json!(3), &vis), Err(Unfilterable), "{body:?}");
        }
        assert_eq!(list_framing(Some("text/event-stream"), None), Some(ListFraming::Sse));
        assert_eq!(list_framing(Some("application/json; charset=utf-8"), Some("identity")), Some(ListFraming::Json));
        assert_eq!(list_framing(Some("application/json"), Some("gzip")), None);
        assert_eq!(list_framing(Some("text/html"), None), None);
        assert_eq!(list_framing(None, None), None);
    }

    #[test]
    fn error_replies_carry_the_id() {
        let v = Verdict {
            outcome: Outcome::Deny,
            status: 403,
            reason: "denied_by_rule",
            reason_kind: Reason::DeniedByRule,
            rule: Some(Arc::from("no-refunds")),
            revision: Some(3),
        };
        let body =
            parse_body(br#"{"jsonrpc":"2.0","id":"r-7","method":"tools/call","params":{"name":"x"}}"#, false).unwrap();
        let r = error_reply(&v, "id-1", Some(&body), None).unwrap();
        assert_eq!(r.status, 403);
        let got: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            got,
            json!({"jsonrpc": "2.0", "id": "r-7", "error": {"code": -32001, "message": "refused by warden (denied_by_rule)",
                "data": {"decision_id": "id-1", "decision": "deny", "reason": "denied_by_rule", "rule": "no-refunds",
                         "revision": 3}}})
        );
        let note = parse_body(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#, false).unwrap();
        assert!(error_reply(&v, "id-1", Some(&note), None).is_none());
        let batch = parse_body(
            br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"},
                {"jsonrpc":"2.0","id":2,"method":"ping"}]"#,
            true,
        )
        .unwrap();
        let got: Value = serde_json::from_slice(&error_reply(&v, "id-1", Some(&batch), None).unwrap().body).unwrap();
        assert_eq!(
            got.as_array().map(|a| a.iter().map(|e| e["id"].clone()).collect::<Vec<_>>()),
            Some(vec![json!(1), json!(2)])
        );
        let unread = refusal(400, "mcp_not_json", Some(3));
        let got: Value = serde_json::from_slice(&error_reply(&unread, "id-2", None, None).unwrap().body).unwrap();
        assert_eq!((got["id"].clone(), got["error"]["code"].clone()), (Value::Null, json!(-32700)));
    }
}
