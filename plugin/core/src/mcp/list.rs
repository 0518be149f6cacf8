//! Filtering a `tools/list` response: the agent sees only the tools it may call, step-up tools marked in `_meta`;
//! a response that cannot be read completely (framing, encoding, a message that is not JSON-RPC, no answer to the
//! request) is never passed on: the caller replaces it with [`list_failure`].

use serde_json::{json, Value};

use crate::mcp::parse::parse_strict;

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
    let mut v = parse_strict(text.as_bytes()).map_err(|_| Unfilterable)?;
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
}
