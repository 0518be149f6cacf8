//! A small blocking HTTP/1.1 server: one thread per connection, keep-alive, `Content-Length` and chunked request
//! bodies, `Expect: 100-continue`, strict parsing (no obsolete line folding, no `Transfer-Encoding` together with
//! `Content-Length`, bounded sizes), and responses always framed by `Content-Length`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

/// Request line plus headers.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
const MAX_BODY: usize = 16 * 1024 * 1024;
const MAX_CONNECTIONS: usize = 512;
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A parsed request. Header names are lowercased; framing headers are already consumed.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// The request target as sent (origin form: path and query).
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The downstream connection it came on (1, 2, … per server): requests on one kept-alive connection share it,
    /// as Envoy's `connection.id` does.
    pub connection: u64,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A response. `content-length`, `connection` and `transfer-encoding` are set by the server.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response { status, headers: vec![("content-type".into(), content_type.into())], body: body.into() }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::new(status, "application/json", value.to_string())
    }
}

/// What the handler wants done: answer, or drop the connection without an answer (a stream reset).
pub enum Reply {
    Respond(Response),
    Reset,
}

pub type Handler = Arc<dyn Fn(Request) -> Reply + Send + Sync>;

/// A running server. Dropping it stops accepting (connections in flight finish their current request).
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Binds `addr` and serves `handler` on background threads.
    pub fn start(addr: SocketAddr, handler: Handler) -> Result<Server> {
        let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
        let addr = listener.local_addr().context("cannot read the listening address")?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        std::thread::Builder::new()
            .name(format!("http-{addr}"))
            .spawn(move || accept_loop(listener, handler, stop_flag))
            .context("cannot start the accept thread")?;
        Ok(Server { addr, stop })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn accept_loop(listener: TcpListener, handler: Handler, stop: Arc<AtomicBool>) {
    let open = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut conn) = conn else { continue };
        if open.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            let _ = write_response(&mut conn, &text(503, "too many connections\n"), false, false);
            continue;
        }
        open.fetch_add(1, Ordering::SeqCst);
        let handler = handler.clone();
        let open_in = open.clone();
        let spawned = std::thread::Builder::new().name("http-conn".into()).spawn(move || {
            serve_connection(conn, &handler);
            open_in.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn text(status: u16, body: &str) -> Response {
    Response::new(status, "text/plain", body)
}

/// Why a request could not be read: answer with this status and close, or just close.
enum ReadError {
    Closed,
    Bad(u16, &'static str),
}

fn serve_connection(conn: TcpStream, handler: &Handler) {
    static CONNECTIONS: AtomicU64 = AtomicU64::new(1);
    let connection = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    let (Ok(peer), Ok(local)) = (conn.peer_addr(), conn.local_addr()) else { return };
    let _ = conn.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = conn.set_write_timeout(Some(IDLE_TIMEOUT));
    let _ = conn.set_nodelay(true);
    let Ok(mut writer) = conn.try_clone() else { return };
    let mut reader = BufReader::new(conn);
    loop {
        let (request, keep_alive) = match read_request(&mut reader, &mut writer, peer, local, connection) {
            Ok(r) => r,
            Err(ReadError::Closed) => return,
            Err(ReadError::Bad(status, why)) => {
                let _ = write_response(&mut writer, &text(status, &format!("{why}\n")), false, false);
                return;
            }
        };
        let head_only = request.method == "HEAD";
        match handler(request) {
            Reply::Respond(resp) => {
                if write_response(&mut writer, &resp, keep_alive, head_only).is_err() || !keep_alive {
                    return;
                }
            }
            Reply::Reset => return,
        }
    }
}

fn read_line(r: &mut impl BufRead, budget: &mut usize) -> Result<String, ReadError> {
    let mut line = Vec::new();
    let n = r.by_ref().take(*budget as u64 + 1).read_until(b'\n', &mut line).map_err(|_| ReadError::Closed)?;
    if n == 0 {
        return Err(ReadError::Closed);
    }
    if n > *budget {
        return Err(ReadError::Bad(431, "request header fields too large"));
    }
    *budget -= n;
    if !line.ends_with(b"\n") {
        return Err(ReadError::Closed);
    }
    line.pop();
    if line.ends_with(b"\r") {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| ReadError::Bad(400, "request head is not UTF-8"))
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// Reads one request; returns it and whether the connection stays open after the response.
fn read_request(
    r: &mut BufReader<TcpStream>,
    w: &mut TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    connection_id: u64,
) -> Result<(Request, bool), ReadError> {
    let mut budget = MAX_HEAD;
    let mut line = read_line(r, &mut budget)?;
    // RFC 9112 section 2.2: ignore empty lines before the request line.
    while line.is_empty() {
        line = read_line(r, &mut budget)?;
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad(400, "malformed request line"));
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(ReadError::Bad(400, "malformed method"));
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(ReadError::Bad(505, "only HTTP/1.0 and HTTP/1.1 are supported")),
    };
    if !target.starts_with('/') {
        // Absolute-form and authority-form (CONNECT) are for forward proxies; `*` for OPTIONS is not routed.
        return Err(ReadError::Bad(400, "only origin-form request targets (/path?query) are supported"));
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let line = read_line(r, &mut budget)?;
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            return Err(ReadError::Bad(400, "obsolete line folding is not accepted"));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ReadError::Bad(400, "malformed header line"));
        };
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(ReadError::Bad(400, "malformed header name"));
        }
        let value = value.trim_matches([' ', '\t']);
        if value.bytes().any(|c| (c < b' ' && c != b'\t') || c == 0x7f) {
            return Err(ReadError::Bad(400, "control character in a header value"));
        }
        headers.push((name.to_ascii_lowercase(), value.to_string()));
        if headers.len() > MAX_HEADERS {
            return Err(ReadError::Bad(431, "too many header fields"));
        }
    }
    let values = |name: &str| headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    let connection = values("connection").join(",").to_ascii_lowercase();
    let has_token = |t: &str| connection.split(',').any(|x| x.trim() == t);
    let keep_alive = if http10 { has_token("keep-alive") } else { !has_token("close") };
    let te = values("transfer-encoding");
    let cl = values("content-length");
    let chunked = match te.as_slice() {
        [] => false,
        [v] if v.eq_ignore_ascii_case("chunked") => true,
        _ => return Err(ReadError::Bad(501, "only `Transfer-Encoding: chunked` is supported")),
    };
    if chunked && !cl.is_empty() {
        return Err(ReadError::Bad(400, "both Transfer-Encoding and Content-Length"));
    }
    let length = match cl.as_slice() {
        [] => None,
        [first, rest @ ..] => {
            if rest.iter().any(|v| v != first) {
                return Err(ReadError::Bad(400, "conflicting Content-Length values"));
            }
            match first.parse::<usize>() {
                Ok(n) if first.bytes().all(|c| c.is_ascii_digit()) => Some(n),
                _ => return Err(ReadError::Bad(400, "malformed Content-Length")),
            }
        }
    };
    if length.is_some_and(|n| n > MAX_BODY) {
        return Err(ReadError::Bad(413, "request body too large"));
    }
    let expects_continue = values("expect").iter().any(|v| v.eq_ignore_ascii_case("100-continue"));
    if expects_continue && !http10 && (chunked || length.unwrap_or(0) > 0) {
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").map_err(|_| ReadError::Closed)?;
    }
    let body = if chunked {
        read_chunked(r)?
    } else {
        let mut body = vec![0; length.unwrap_or(0)];
        r.read_exact(&mut body).map_err(|_| ReadError::Closed)?;
        body
    };
    // Framing and hop-by-hop headers stay with this connection (RFC 9110 section 7.6.1).
    let mut hop: Vec<String> = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "upgrade",
        "expect",
        "content-length",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    hop.extend(connection.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()));
    headers.retain(|(k, _)| !hop.contains(k));
    Ok((
        Request {
            method: method.to_string(),
            target: target.to_string(),
            headers,
            body,
            peer,
            local,
            connection: connection_id,
        },
        keep_alive,
    ))
}

fn read_chunked(r: &mut BufReader<TcpStream>) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    let mut budget = MAX_HEAD;
    loop {
        let size_line = read_line(r, &mut budget)?;
        let size_text = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| ReadError::Bad(400, "malformed chunk size"))?;
        if size == 0 {
            // Trailers are read and dropped: the gateway does not forward request trailers.
            while !read_line(r, &mut budget)?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(ReadError::Bad(413, "request body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..]).map_err(|_| ReadError::Closed)?;
        if !read_line(r, &mut budget)?.is_empty() {
            return Err(ReadError::Bad(400, "malformed chunk"));
        }
    }
}

fn write_response(w: &mut TcpStream, resp: &Response, keep_alive: bool, head_only: bool) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        if matches!(k.as_str(), "content-length" | "connection" | "transfer-encoding" | "keep-alive") {
            continue;
        }
        if k.bytes().all(is_tchar) && !v.bytes().any(|c| c == b'\r' || c == b'\n') {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    let no_body = resp.status == 204 || resp.status == 304 || (100..200).contains(&resp.status);
    if !no_body {
        head.push_str(&format!("content-length: {}\r\n", resp.body.len()));
    }
    head.push_str(if keep_alive { "connection: keep-alive\r\n\r\n" } else { "connection: close\r\n\r\n" });
    let mut out = head.into_bytes();
    if !head_only && !no_body {
        out.extend_from_slice(&resp.body);
    }
    w.write_all(&out)?;
    w.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}
