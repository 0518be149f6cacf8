//! Issue 19 item 11 through real Envoy: a `tools/list` response the filter must filter or replace, whatever its
//! shape: response trailers (Envoy with HTTP/1 trailers on, both sides), a byte-order mark before the first SSE
//! event, `Data:` in another case, SSE comments, a lone-CR line ending, an error answer that also carries a
//! `result`, a decoy answer after the real one, a response over the filter's bound; and an SSE answer on a stream
//! the server keeps open (the client gets the filtered answer while the upstream still holds the stream).
//!
//! Each shape hides `wipe` and `not_in_catalog` from the support bot: the client must never see them, and gets
//! either the filtered list or the JSON-RPC error `mcp_list_unfilterable` / `mcp_list_too_large`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use warden_host::envoy::{Envoy, EnvoyOptions};
use warden_host::upstream::Reply;
use warden_host::HttpRequest;

use crate::support::envoy::{now, tool_reply, Gateway, ReplyFn, Seen};
use crate::support::filter::{authed, claims, config, mcp_bundle_at, sign, token, MCP_HOST, SUPPORT_BOT};
use crate::support::warden_wasm;

const LIST_BOUND: usize = 8192;

fn full_list() -> Value {
    json!({"jsonrpc": "2.0", "id": 11, "result": {"tools": [
        {"name": "lookup", "inputSchema": {"type": "object"}},
        {"name": "wipe", "inputSchema": {"type": "object"}},
        {"name": "not_in_catalog", "inputSchema": {"type": "object"}}
    ]}})
}

/// An innocuous answer to the same id, for the shapes where a real answer hides before it.
fn decoy() -> Value {
    json!({"jsonrpc": "2.0", "id": 11, "result": {"tools": [{"name": "lookup", "inputSchema": {"type": "object"}}]}})
}

fn sse(body: String) -> Reply {
    let n = body.len();
    Reply::new(200).header("content-type", "text/event-stream").body(body).chunked(vec![48; n.div_ceil(48)])
}

fn reply() -> ReplyFn {
    Arc::new(|path: &str, headers: &[(String, String)]| {
        let which = headers.iter().find(|(k, _)| k == "x-test-reply").map(|(_, v)| v.as_str()).unwrap_or("");
        let (list, decoy) = (full_list(), decoy());
        match which {
            "json-trailers" => Reply::new(200)
                .header("content-type", "application/json")
                .body(list.to_string())
                .trailer("x-checksum", "1"),
            "sse-trailers" => sse(format!("event: message\ndata: {list}\n\n")).trailer("x-checksum", "1"),
            "bom" => sse(format!("\u{feff}data: {list}\n\nevent: message\ndata: {decoy}\n\n")),
            "data-case" => sse(format!("Data: {list}\n\ndata: {decoy}\n\n")),
            "comment" => sse(format!(": {list}\n\ndata: {decoy}\n\n")),
            "lone-cr" => sse(format!("data: {decoy}\r\rdata: {list}\r\r")),
            "error-and-result" => {
                let mut v = list.clone();
                v["error"] = json!({"code": -32000, "message": "partial"});
                Reply::new(200).header("content-type", "application/json").body(v.to_string())
            }
            "second-answer" => sse(format!("data: {decoy}\n\ndata: {list}\n\n")),
            "too-large" => {
                let mut v = list.clone();
                v["result"]["tools"][0]["description"] = json!("x".repeat(2 * LIST_BOUND));
                Reply::new(200).header("content-type", "application/json").body(v.to_string())
            }
            _ => tool_reply(path),
        }
    })
}

fn gateway(hold: bool) -> &'static Gateway {
    static G: [OnceLock<Gateway>; 2] = [OnceLock::new(), OnceLock::new()];
    G[hold as usize].get_or_init(|| {
        let mut c = config(Some(&sign(&mcp_bundle_at(now()))));
        c["max_list_response_bytes"] = json!(LIST_BOUND);
        Gateway::start_full(&c, hold, reply(), |o| o.concurrency(1).http1_trailers(true))
    })
}

fn list_request() -> HttpRequest {
    authed("POST", MCP_HOST, "/mcp", &token(&claims(SUPPORT_BOT, now())))
        .header("content-type", "application/json")
        .header("mcp-method", "tools/list")
        .body(r#"{"jsonrpc":"2.0","id":11,"method":"tools/list"}"#)
}

fn list(g: &Gateway, which: &str) -> Seen {
    g.send(list_request().header("x-test-reply", which))
}

/// The client saw no hidden tool; returns what it saw: `Ok(listed names of every answer)` or `Err(reason)`.
fn client_view(which: &str, seen: &Seen) -> Result<Vec<Vec<String>>, String> {
    let body = seen.response.body_str();
    assert!(
        !body.contains("wipe") && !body.contains("not_in_catalog"),
        "{which}: a hidden tool reached the client: {body}"
    );
    assert_eq!(seen.response.status, 200, "{which}: {seen:#?}");
    let messages: Vec<Value> = if seen.response.header("content-type").is_some_and(|c| c.contains("event-stream")) {
        body.split('\n')
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| serde_json::from_str(d.trim()).unwrap())
            .collect()
    } else {
        vec![seen.json()]
    };
    if let Some(err) = messages.iter().find(|m| m.get("error").is_some()) {
        return Err(err["error"]["data"]["reason"].as_str().unwrap_or("").to_string());
    }
    Ok(messages
        .iter()
        .map(|m| m["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().into()).collect())
        .collect())
}

#[test]
fn every_shape_of_response_is_filtered_or_replaced() {
    for hold in [false, true] {
        let g = gateway(hold);
        for which in ["json-trailers", "sse-trailers", "bom", "data-case", "comment", "lone-cr", "error-and-result"] {
            let seen = list(g, which);
            match client_view(which, &seen) {
                Ok(answers) => assert!(answers.iter().all(|a| a == &["lookup"]), "{which}: {answers:?}"),
                Err(reason) => assert_eq!(reason, "mcp_list_unfilterable", "{which}"),
            }
        }
        // Two answers to one request: the stream ends for the client with the first (filtered); the second, which
        // a client reading the last answer would take, never reaches it.
        assert_eq!(client_view("second-answer", &list(g, "second-answer")), Ok(vec![vec!["lookup".to_string()]]));
        // Over the bound: replaced, never passed on or cut.
        assert_eq!(client_view("too-large", &list(g, "too-large")), Err("mcp_list_too_large".into()));
    }
}

/// An upstream that answers one request with SSE: the answer event, then it holds the stream open until told to
/// end it.
fn held_open_upstream(release: mpsc::Receiver<()>) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((s, _)) = l.accept() else { return };
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut length = 0;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        let _ = r.read_exact(&mut body);
        let mut w = s;
        let event = format!("event: message\ndata: {}\n\n", full_list());
        let _ = write!(
            w,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n",
            event.len()
        );
        let _ = w.flush();
        let _ = release.recv_timeout(Duration::from_secs(60));
        let _ = w.write_all(b"0\r\n\r\n");
    });
    addr
}

#[test]
fn an_sse_answer_on_a_stream_held_open_reaches_the_client_filtered() {
    let (release, rx) = mpsc::channel();
    let upstream = held_open_upstream(rx);
    let c = config(Some(&sign(&mcp_bundle_at(now()))));
    let envoy = Envoy::start(&EnvoyOptions::new(warden_wasm(), c.to_string(), upstream)).unwrap();
    let req = list_request();
    let mut s = TcpStream::connect(envoy.listener()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let body = String::from_utf8(req.body.clone()).unwrap();
    let auth = req.headers.iter().find(|(k, _)| k == "authorization").unwrap().1.clone();
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nhost: {MCP_HOST}\r\nauthorization: {auth}\r\ncontent-type: application/json\r\n\
         mcp-method: tools/list\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Read until the answer's event is complete, while the upstream still holds its stream open.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let text = loop {
        let n = s.read(&mut buf).unwrap_or_else(|e| panic!("no answer while the stream is held open: {e}"));
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if text.contains("\"id\":11") && text.contains("\n\n") {
            break text;
        }
    };
    release.send(()).unwrap();
    assert!(text.contains("\"lookup\""), "{text}");
    assert!(!text.contains("wipe") && !text.contains("not_in_catalog"), "{text}");
}
