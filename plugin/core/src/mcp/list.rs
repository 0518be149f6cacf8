//! Filtering a `tools/list` response: the agent sees only the tools it may call, step-up tools marked in `_meta`;
//! a response that cannot be read completely (framing, encoding, a message that is not JSON-RPC, no answer to the
//! request) is never passed on: the caller replaces it with [`list_failure`].
//!
//! JSON (`application/json`) is one JSON-RPC message, read whole. Server-sent events (`text/event-stream`) are read
//! as the WHATWG event-stream format says, strictly ([`SseFilter`]): one byte-order mark at the start is dropped;
//! lines end at CRLF, LF or a lone CR; a line starting with `:` is a comment and is dropped; the fields are `data`,
//! `event`, `id` and `retry`, case-sensitive, and any other field name (`Data`, `DATA`, `x`) makes the response
//! unfilterable, since a lenient client could read it as data. Every event's data must be a JSON-RPC message; a
//! message that is both a request and an answer, or an error answer that also has a `result`, is unfilterable.
//! The stream ends, for the client, with the first answer to the request: the events up to it go out (filtered) as
//! soon as it is complete, and anything the server sends after it is dropped (MCP servers end the stream after the
//! answer), so a server that keeps the stream open cannot hold the answer back, and a second answer (a decoy) never
//! reaches the client.
//!
//! On a server with pinned tool definitions ([`crate::pins`]), the answer also loses every tool its pins refuse (a
//! definition other than its pin, or no pin on a `pinned` server), whatever the policy would show; what was removed,
//! and which pinned tools matched, comes back as a [`PinReport`]. The answer of such a server must hold only numbers
//! the canonical form represents exactly ([`crate::args::check_exact_numbers`]), else it is unfilterable: two
//! definitions must never share a digest.

use serde_json::{json, Value};

use crate::args::check_exact_numbers;
use crate::mcp::parse::parse_strict;
use crate::pins::{PinReport, ServerPins};

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

/// The largest `tools/list` response body buffered by default (`max_list_response_bytes`), below Envoy's default
/// per-connection buffer limit (1 MiB), so that the filter, not Envoy, answers a response over it.
pub const DEFAULT_MAX_LIST_BYTES: usize = 512 * 1024;

/// How long a `tools/list` response may take from its headers to its answer (seconds), checked whenever a piece of
/// it arrives; a stream that sends nothing at all is ended by Envoy's route timeout.
pub const LIST_DEADLINE_SECS: i64 = 30;

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

/// Why a `tools/list` response was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFailure {
    /// Unreadable, compressed, unexpected content, or no answer.
    Unfilterable,
    /// Over `max_list_response_bytes` before its answer was complete.
    TooLarge,
    /// No answer within [`LIST_DEADLINE_SECS`].
    Deadline,
}

impl ListFailure {
    /// The reason code in the JSON-RPC error's `data`.
    pub fn code(self) -> &'static str {
        match self {
            ListFailure::Unfilterable => "mcp_list_unfilterable",
            ListFailure::TooLarge => "mcp_list_too_large",
            ListFailure::Deadline => "mcp_list_deadline",
        }
    }

    fn message(self) -> &'static str {
        match self {
            ListFailure::Unfilterable => {
                "warden could not filter the tools/list response (unreadable, compressed or unexpected content)"
            }
            ListFailure::TooLarge => "the tools/list response is larger than warden buffers (max_list_response_bytes)",
            ListFailure::Deadline => "the tools/list response did not answer in time",
        }
    }
}

/// One JSON-RPC message of a `tools/list` response, read.
enum Read {
    /// A request or notification of the server: kept as it was.
    Other,
    /// The answer to the request: its text as it goes out (filtered, or an error answer as it was), and what the
    /// pins found.
    Answer(String, PinReport),
}

/// How a `tools/list` answer is judged: the policy's view of each tool name, and the server's pins (`None`: none).
#[derive(Clone, Copy)]
pub struct Lens<'a> {
    pub visible: &'a dyn Fn(&str) -> Visibility,
    pub pins: Option<&'a ServerPins>,
}

/// Reads one JSON-RPC message of a `tools/list` response: the answer to request `id` keeps only the tools the pins
/// accept and `visible` does not hide, and marks those needing approval in their `_meta`. `Err` when the message is
/// not a JSON-RPC 2.0 object, is both a request and an answer, is an answer to another id, has both `error` and
/// `result`, or its result has no `tools` array of objects with a string `name`; or, on a server with pins, holds
/// a number without an exact canonical form.
fn read_message(text: &str, id: Option<&Value>, lens: Lens<'_>) -> Result<Read, Unfilterable> {
    let pins = lens.pins.filter(|p| p.judges());
    if pins.is_some() {
        check_exact_numbers(text).map_err(|_| Unfilterable)?;
    }
    let mut v = parse_strict(text.as_bytes()).map_err(|_| Unfilterable)?;
    let Some(obj) = v.as_object_mut() else { return Err(Unfilterable) };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(Unfilterable);
    }
    let (request, result, error) = (obj.contains_key("method"), obj.contains_key("result"), obj.contains_key("error"));
    if request {
        return if result || error { Err(Unfilterable) } else { Ok(Read::Other) };
    }
    let answers = match id {
        Some(id) => obj.get("id") == Some(id),
        // Any request's answer (a saved response read by `warden pin`).
        None => obj.get("id").is_some_and(|i| !i.is_null()),
    };
    if !answers || result == error {
        return Err(Unfilterable);
    }
    if error {
        return Ok(Read::Answer(text.to_string(), PinReport::default()));
    }
    let tools = obj
        .get_mut("result")
        .and_then(Value::as_object_mut)
        .and_then(|r| r.get_mut("tools"))
        .and_then(Value::as_array_mut)
        .ok_or(Unfilterable)?;
    let mut kept = Vec::with_capacity(tools.len());
    let mut report = PinReport::default();
    for mut tool in tools.drain(..) {
        let name = tool.get("name").and_then(Value::as_str).ok_or(Unfilterable)?.to_string();
        if let Some(pins) = pins {
            match pins.check(&name, &tool) {
                Ok(true) => report.matched.push(name.clone()),
                Ok(false) => {}
                Err(finding) => {
                    report.removed.push(finding);
                    continue;
                }
            }
        }
        match (lens.visible)(&name) {
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
    serde_json::to_string(&v).map(|out| Read::Answer(out, report)).map_err(|_| Unfilterable)
}

/// Rewrites a whole `tools/list` response body, with what the pins found. `Err` (fail closed) when it cannot be read
/// completely: not UTF-8, a message that is not JSON-RPC, an SSE line the filter does not know, or no answer to
/// `id` at all.
pub fn filter_tools_list(
    framing: ListFraming,
    body: &[u8],
    id: &Value,
    lens: Lens<'_>,
) -> Result<(Vec<u8>, PinReport), Unfilterable> {
    filter_whole(framing, body, Some(id), lens)
}

fn filter_whole(
    framing: ListFraming,
    body: &[u8],
    id: Option<&Value>,
    lens: Lens<'_>,
) -> Result<(Vec<u8>, PinReport), Unfilterable> {
    match framing {
        ListFraming::Json => {
            let text = std::str::from_utf8(body).map_err(|_| Unfilterable)?;
            match read_message(text, id, lens)? {
                Read::Answer(out, report) => Ok((out.into_bytes(), report)),
                Read::Other => Err(Unfilterable),
            }
        }
        ListFraming::Sse => {
            let mut f = SseFilter::default();
            match f.feed(body, id, lens)? {
                Some(out) => Ok(out),
                None => f.finish().map(|b| (b, PinReport::default())),
            }
        }
    }
}

/// The tools of the first answer in a saved `tools/list` response body (whatever its request's id), as the server
/// listed them, read exactly as the filter reads a response (`warden pin`), with the result's `nextCursor` (a
/// further page); `Err` where the filter would refuse the response, or for an error answer.
pub fn answer_tools(framing: ListFraming, body: &[u8]) -> Result<(Vec<Value>, Option<String>), Unfilterable> {
    let all = Lens { visible: &|_: &str| Visibility::Visible, pins: None };
    let (out, _) = filter_whole(framing, body, None, all)?;
    let text = String::from_utf8(out).map_err(|_| Unfilterable)?;
    let answer = match framing {
        ListFraming::Json => text,
        // The filter's own output: the answer is the last event, its data on `data: ` lines.
        ListFraming::Sse => {
            let last = text.trim_end_matches('\n').rsplit("\n\n").next().unwrap_or_default();
            last.lines().filter_map(|l| l.strip_prefix("data: ")).collect::<Vec<_>>().join("\n")
        }
    };
    let v: Value = serde_json::from_str(&answer).map_err(|_| Unfilterable)?;
    let result = v.get("result").ok_or(Unfilterable)?;
    let tools = result.get("tools").and_then(Value::as_array).cloned().ok_or(Unfilterable)?;
    Ok((tools, result.get("nextCursor").and_then(Value::as_str).map(str::to_string)))
}

/// The UTF-8 byte-order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// An event-stream `tools/list` response read as it arrives (see the module documentation): [`SseFilter::push`]
/// each new piece; the first complete answer gives the whole filtered output.
#[derive(Debug, Default)]
pub struct SseFilter {
    /// The stream's first bytes were checked for a byte-order mark.
    bom_done: bool,
    /// The start of a line not complete yet.
    partial: Vec<u8>,
    /// The last piece ended with CR: an LF starting the next one belongs to that line end.
    after_cr: bool,
    /// The output for the events complete so far.
    out: String,
    /// The event being read: its other fields (as output lines) and its data lines.
    fields: Vec<String>,
    data: Vec<String>,
}

impl SseFilter {
    /// Reads the next piece of the body: `Ok(Some(output))` once the answer's event is complete (the events up to
    /// and including it, filtered; what follows is not the client's), `Ok(None)` while it is not.
    pub fn push(
        &mut self,
        piece: &[u8],
        id: &Value,
        lens: Lens<'_>,
    ) -> Result<Option<(Vec<u8>, PinReport)>, Unfilterable> {
        self.feed(piece, Some(id), lens)
    }

    fn feed(
        &mut self,
        piece: &[u8],
        id: Option<&Value>,
        lens: Lens<'_>,
    ) -> Result<Option<(Vec<u8>, PinReport)>, Unfilterable> {
        let mut bytes = piece;
        if !self.bom_done {
            // A byte-order mark at the very start of the stream is not part of the first line.
            self.partial.extend_from_slice(bytes);
            if self.partial.len() < BOM.len() && BOM.starts_with(&self.partial) {
                return Ok(None);
            }
            self.bom_done = true;
            let head = std::mem::take(&mut self.partial);
            let skip = if head.starts_with(BOM) { BOM.len() } else { 0 };
            return self.lines(&head[skip..], id, lens);
        }
        if self.after_cr && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.after_cr = false;
        self.lines(bytes, id, lens)
    }

    fn lines(
        &mut self,
        mut bytes: &[u8],
        id: Option<&Value>,
        lens: Lens<'_>,
    ) -> Result<Option<(Vec<u8>, PinReport)>, Unfilterable> {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&bytes[..end]);
            let crlf = bytes[end] == b'\r' && bytes.get(end + 1) == Some(&b'\n');
            if bytes[end] == b'\r' && end + 1 == bytes.len() {
                self.after_cr = true;
            }
            bytes = &bytes[end + if crlf { 2 } else { 1 }..];
            let text = String::from_utf8(line).map_err(|_| Unfilterable)?;
            if let Some(out) = self.line(&text, id, lens)? {
                return Ok(Some(out));
            }
        }
        self.partial.extend_from_slice(bytes);
        Ok(None)
    }

    /// One complete line; at an empty line, the event ends.
    fn line(
        &mut self,
        line: &str,
        id: Option<&Value>,
        lens: Lens<'_>,
    ) -> Result<Option<(Vec<u8>, PinReport)>, Unfilterable> {
        if line.is_empty() {
            return self.dispatch(id, lens);
        }
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => self.data.push(value.to_string()),
            "event" | "id" | "retry" => self.fields.push(format!("{field}: {value}")),
            _ => return Err(Unfilterable),
        }
        Ok(None)
    }

    fn dispatch(&mut self, id: Option<&Value>, lens: Lens<'_>) -> Result<Option<(Vec<u8>, PinReport)>, Unfilterable> {
        let fields = std::mem::take(&mut self.fields);
        let data = std::mem::take(&mut self.data);
        for f in &fields {
            self.out.push_str(f);
            self.out.push('\n');
        }
        let mut answered = None;
        if !data.is_empty() {
            let joined = data.join("\n");
            let text = match read_message(&joined, id, lens)? {
                Read::Other => joined,
                Read::Answer(a, report) => {
                    answered = Some(report);
                    a
                }
            };
            for l in text.split('\n') {
                self.out.push_str("data: ");
                self.out.push_str(l);
                self.out.push('\n');
            }
        }
        if !fields.is_empty() || !data.is_empty() {
            self.out.push('\n');
        }
        Ok(answered.map(|report| (std::mem::take(&mut self.out).into_bytes(), report)))
    }

    /// The end of the stream without an answer: unfilterable (also when an event was left incomplete).
    pub fn finish(&mut self) -> Result<Vec<u8>, Unfilterable> {
        Err(Unfilterable)
    }
}

/// The body that replaces a `tools/list` response the filter could not read: a JSON-RPC error for `id` (as one SSE
/// event for an event stream).
pub fn list_failure(framing: Option<ListFraming>, id: &Value, decision_id: &str, why: ListFailure) -> Vec<u8> {
    let err = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": why.message(),
        "data": {"decision_id": decision_id, "reason": why.code()}}});
    match framing {
        Some(ListFraming::Sse) => format!("event: message\ndata: {err}\n\n").into_bytes(),
        _ => err.to_string().into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vis(name: &str) -> Visibility {
        match name {
            "lookup" => Visibility::Visible,
            "refund" => Visibility::NeedsApproval,
            _ => Visibility::Hidden,
        }
    }

    fn lens() -> Lens<'static> {
        Lens { visible: &vis, pins: None }
    }

    fn filter(framing: ListFraming, body: &[u8], id: &Value) -> Result<Vec<u8>, Unfilterable> {
        filter_tools_list(framing, body, id, lens()).map(|(b, _)| b)
    }

    fn list() -> Value {
        json!({"jsonrpc": "2.0", "id": 3, "result": {"tools": [
            {"name": "lookup", "inputSchema": {}}, {"name": "wipe"}, {"name": "refund", "_meta": {"x": 1}}]}})
    }

    #[test]
    fn tools_lists_are_filtered_or_replaced() {
        let out = filter(ListFraming::Json, list().to_string().as_bytes(), &json!(3)).unwrap();
        let got: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            got["result"]["tools"],
            json!([{"name": "lookup", "inputSchema": {}}, {"name": "refund", "_meta": {"x": 1, APPROVAL_META: "required"}}])
        );
        // SSE: a notification before the answer is kept; the answer is filtered.
        let sse = format!(
            "event: message\ndata: {}\n\nevent: message\r\ndata: {}\r\n\r\n",
            json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}),
            list()
        );
        let out = String::from_utf8(filter(ListFraming::Sse, sse.as_bytes(), &json!(3)).unwrap()).unwrap();
        assert!(out.contains("notifications/progress"), "{out}");
        assert!(!out.contains("wipe"), "{out}");
        assert!(out.contains("lookup") && out.contains(APPROVAL_META), "{out}");
        // Fail closed: a broken event, the wrong id, no answer, a duplicate key, not UTF-8.
        let broken = format!("data: {{not json\n\ndata: {}\n\n", list());
        for (framing, body) in [
            (ListFraming::Sse, broken.into_bytes()),
            (ListFraming::Json, list().to_string().replace("\"id\":3", "\"id\":4").into_bytes()),
            (ListFraming::Sse, b"event: ping\n\n".to_vec()),
            (
                ListFraming::Json,
                br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[],"tools":[{"name":"wipe"}]}}"#.to_vec(),
            ),
            (ListFraming::Json, b"\xff".to_vec()),
            (ListFraming::Json, br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"title":"no name"}]}}"#.to_vec()),
        ] {
            assert_eq!(filter(framing, &body, &json!(3)), Err(Unfilterable), "{body:?}");
        }
        assert_eq!(list_framing(Some("text/event-stream"), None), Some(ListFraming::Sse));
        assert_eq!(list_framing(Some("application/json; charset=utf-8"), Some("identity")), Some(ListFraming::Json));
        assert_eq!(list_framing(Some("application/json"), Some("gzip")), None);
        assert_eq!(list_framing(Some("text/html"), None), None);
        assert_eq!(list_framing(None, None), None);
    }

    /// Issue 19 item 11: every shape a lenient client could read differently is filtered or refused.
    #[test]
    fn sse_shapes_that_could_hide_a_list_are_filtered_or_refused() {
        let full = list();
        let decoy = json!({"jsonrpc": "2.0", "id": 3, "result": {"tools": [{"name": "lookup"}]}});
        let mut both = full.clone();
        both["error"] = json!({"code": 1, "message": "x"});
        let run = |body: String| filter(ListFraming::Sse, body.as_bytes(), &json!(3));
        let shown = |r: Result<Vec<u8>, Unfilterable>| r.map(|b| String::from_utf8(b).unwrap());
        // A BOM before the first event: dropped, the event filtered.
        let out = shown(run(format!("\u{feff}data: {full}\n\ndata: {decoy}\n\n"))).unwrap();
        assert!(!out.contains("wipe") && out.contains("lookup") && !out.starts_with('\u{feff}'), "{out}");
        // Other spellings of a field, and unknown fields: refused.
        assert_eq!(run(format!("Data: {full}\n\ndata: {decoy}\n\n")), Err(Unfilterable));
        assert_eq!(run(format!("DATA: {full}\n\ndata: {decoy}\n\n")), Err(Unfilterable));
        assert_eq!(run(format!("x: {full}\n\ndata: {decoy}\n\n")), Err(Unfilterable));
        // Comments are dropped.
        let out = shown(run(format!(": {full}\n\ndata: {decoy}\n\n"))).unwrap();
        assert!(!out.contains("wipe"), "{out}");
        // Lone CR line ends: read as line ends.
        let out = shown(run(format!("data: {full}\r\rdata: {decoy}\r\r"))).unwrap();
        assert!(!out.contains("wipe") && out.contains("lookup"), "{out}");
        // An error answer with a result, a notification with a result: refused.
        assert_eq!(run(format!("data: {both}\n\n")), Err(Unfilterable));
        let note = json!({"jsonrpc": "2.0", "method": "notifications/x", "result": full["result"]});
        assert_eq!(run(format!("data: {note}\n\ndata: {decoy}\n\n")), Err(Unfilterable));
        // A second answer after the first: not the client's (dropped).
        let out = shown(run(format!("data: {decoy}\n\ndata: {full}\n\n"))).unwrap();
        assert!(!out.contains("wipe") && !out.contains("refund"), "{out}");
        // An answer whose event never ends: no answer.
        assert_eq!(run(format!("data: {full}")), Err(Unfilterable));
        // JSON: an error answer with a result is refused too.
        assert_eq!(filter(ListFraming::Json, both.to_string().as_bytes(), &json!(3)), Err(Unfilterable));
    }

    #[test]
    fn sse_pieces_of_any_size_give_the_same_output() {
        let body = format!(
            "\u{feff}event: message\r\ndata: {}\r\n\r\n: ping\rdata: {}\r\rdata: {{\"never\": 1}}\n\n",
            json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}),
            list()
        );
        let whole = filter(ListFraming::Sse, body.as_bytes(), &json!(3)).unwrap();
        for size in [1, 2, 3, 5, 64] {
            let mut f = SseFilter::default();
            let mut got = None;
            for piece in body.as_bytes().chunks(size) {
                if let Some(out) = f.push(piece, &json!(3), lens()).unwrap().map(|(b, _)| b) {
                    got = Some(out);
                    break;
                }
            }
            assert_eq!(got.as_deref(), Some(&whole[..]), "pieces of {size}");
        }
    }

    /// Pins remove changed and (on a `pinned` server) unpinned tools, whatever the policy shows; matching tools and
    /// everything else come out as without pins; JSON and SSE agree.
    #[test]
    fn pins_remove_changed_and_unpinned_tools() {
        use crate::pins::{definition_digest, PinFailure, ServerPins};
        let lookup = json!({"name": "lookup", "description": "Look a charge up.", "inputSchema": {"type": "object"}});
        let refund = json!({"name": "refund", "description": "Refund.", "_meta": {"x": 1}});
        let pins = ServerPins::new(
            true,
            [
                ("lookup".to_string(), definition_digest(&lookup)),
                ("refund".to_string(), definition_digest(&json!({"description": "Refund a charge."}))),
            ],
        );
        let answer = json!({"jsonrpc": "2.0", "id": 3, "result": {"tools": [lookup, refund, {"name": "wipe"}]}});
        let lens = Lens { visible: &|_: &str| Visibility::Visible, pins: Some(&pins) };
        let (out, report) =
            filter_tools_list(ListFraming::Json, answer.to_string().as_bytes(), &json!(3), lens).unwrap();
        let got: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(got["result"]["tools"], json!([lookup]));
        assert_eq!(report.matched, vec!["lookup".to_string()]);
        let removed: Vec<(&str, PinFailure)> = report.removed.iter().map(|f| (f.tool.as_str(), f.failure)).collect();
        assert_eq!(removed, vec![("refund", PinFailure::DefinitionChanged), ("wipe", PinFailure::NotPinned)]);
        assert_eq!(report.removed[0].seen, definition_digest(&refund));
        assert_eq!(report.removed[0].expected.as_deref(), pins.pin("refund"));
        // The same through SSE, in pieces.
        let sse = format!("event: message\ndata: {answer}\n\n");
        let (sse_out, sse_report) = filter_tools_list(ListFraming::Sse, sse.as_bytes(), &json!(3), lens).unwrap();
        assert_eq!(sse_out, format!("event: message\ndata: {}\n\n", String::from_utf8(out).unwrap()).into_bytes());
        assert_eq!(sse_report, report);
        // Without pins the answer is what it was before pins existed (nothing judged, nothing reported).
        let loose = ServerPins::new(false, []);
        let plain = Lens { visible: &|_: &str| Visibility::Visible, pins: Some(&loose) };
        let (out, report) =
            filter_tools_list(ListFraming::Json, answer.to_string().as_bytes(), &json!(3), plain).unwrap();
        let none = Lens { visible: &|_: &str| Visibility::Visible, pins: None };
        assert_eq!(
            out,
            filter_tools_list(ListFraming::Json, answer.to_string().as_bytes(), &json!(3), none).unwrap().0
        );
        assert_eq!(report, PinReport::default());
        // A number without an exact canonical form on a judged server: unfilterable (two definitions must not share
        // a digest); on a server without pins it is not looked at.
        let inexact = r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"lookup","inputSchema":{"maximum":18446744073709551616}}]}}"#;
        assert_eq!(filter_tools_list(ListFraming::Json, inexact.as_bytes(), &json!(3), lens), Err(Unfilterable));
        assert!(filter_tools_list(ListFraming::Json, inexact.as_bytes(), &json!(3), none).is_ok());
    }
}
