//! A loopback upstream for tests through a real proxy: an HTTP/1.1 server on its own threads that records every
//! request it receives — method, path, headers, the body bytes and *when* each arrived, whether the request was
//! complete or the proxy aborted it — and answers with what a [`Responder`] says.
//!
//! A request is recorded as soon as its headers arrive, so a request the proxy sends on and then aborts (headers
//! forwarded, body refused) is visible as received with `complete == false`.
//!
//! ```no_run
//! use warden_host::upstream::{RecordingServer, Reply};
//! let tools = RecordingServer::canned(Reply::ok("from the tool"))?;
//! // … point a proxy's cluster at tools.addr, send requests through it …
//! for r in tools.received() {
//!     println!("{} {} {} body bytes, complete {}", r.method, r.path, r.body.len(), r.complete);
//! }
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::abi::Headers;

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// In arrival order, names lowercased (`host` included; there are no pseudo-headers on HTTP/1.1).
    pub headers: Headers,
    pub body: Vec<u8>,
    /// When the request headers had arrived.
    pub headers_at: Instant,
    /// Each piece of body as it was read: when, and how many bytes.
    pub body_pieces: Vec<(Instant, usize)>,
    /// The whole request (headers and the body its framing announced) arrived.
    pub complete: bool,
    /// The connection ended before the request was complete (the proxy reset it).
    pub aborted: bool,
    /// Which connection it came on (0, 1, … in accept order).
    pub connection: u64,
}

impl Received {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every value of a header.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    /// When the last body byte arrived (None without body bytes).
    pub fn body_done_at(&self) -> Option<Instant> {
        self.body_pieces.last().map(|(t, _)| *t)
    }
}

/// What the upstream answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
    /// Send the body chunked (`transfer-encoding: chunked`) in pieces of these sizes, with a short pause between.
    pub chunks: Option<Vec<usize>>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Close the connection without answering.
    pub reset: bool,
    /// Trailers after a chunked body (the body goes chunked when there are trailers).
    pub trailers: Headers,
    /// Keep the response open this long after the last body piece before ending it (a stream held open).
    pub hold_open: Duration,
}

impl Reply {
    pub fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            chunks: None,
            delay: Duration::ZERO,
            reset: false,
            trailers: Vec::new(),
            hold_open: Duration::ZERO,
        }
    }

    /// 200, `content-type: text/plain`, this body.
    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply::new(200).header("content-type", "text/plain").body(body)
    }

    /// A JSON body with this status.
    pub fn json(status: u16, body: &serde_json::Value) -> Reply {
        Reply::new(status).header("content-type", "application/json").body(body.to_string())
    }

    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.to_ascii_lowercase(), v.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }

    pub fn chunked(mut self, sizes: Vec<usize>) -> Reply {
        self.chunks = Some(sizes);
        self
    }

    pub fn delayed(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }

    /// Sends the body chunked with these trailers after it.
    pub fn trailer(mut self, k: &str, v: &str) -> Reply {
        self.trailers.push((k.to_ascii_lowercase(), v.to_string()));
        self
    }

    /// Keeps the (chunked) response open for `d` after the last body piece.
    pub fn held_open(mut self, d: Duration) -> Reply {
        self.hold_open = d;
        self
    }

    pub fn reset() -> Reply {
        Reply { reset: true, ..Reply::new(0) }
    }
}

/// Chooses the reply to a request (called once the request is complete).
pub type Responder = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

#[derive(Default)]
struct Log {
    requests: Vec<Received>,
}

struct Shared {
    log: Mutex<Log>,
    changed: Condvar,
    responder: Mutex<Responder>,
    stop: AtomicBool,
    connections: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A recording upstream on `127.0.0.1` (a free port). Stops accepting when dropped.
pub struct RecordingServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl RecordingServer {
    /// Starts a server answering with `responder`.
    pub fn start(responder: Responder) -> std::io::Result<RecordingServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            log: Mutex::new(Log::default()),
            changed: Condvar::new(),
            responder: Mutex::new(responder),
            stop: AtomicBool::new(false),
            connections: AtomicU64::new(0),
        });
        let s = shared.clone();
        std::thread::Builder::new().name(format!("upstream-{addr}")).spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                let n = s.connections.fetch_add(1, Ordering::SeqCst);
                let _ = std::thread::Builder::new().name(format!("upstream-conn-{n}")).spawn(move || {
                    serve(conn, n, &s);
                });
            }
        })?;
        Ok(RecordingServer { addr, shared })
    }

    /// A server that always answers `reply`.
    pub fn canned(reply: Reply) -> std::io::Result<RecordingServer> {
        RecordingServer::start(Arc::new(move |_: &Received| reply.clone()))
    }

    /// Replaces the responder.
    pub fn respond_with(&self, responder: Responder) {
        *lock(&self.shared.responder) = responder;
    }

    /// Every request received so far (complete or not), in arrival order.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.log).requests.clone()
    }

    /// Returns the requests received so far and forgets them.
    pub fn take(&self) -> Vec<Received> {
        std::mem::take(&mut lock(&self.shared.log).requests)
    }

    /// Waits (up to `timeout`) until `n` requests were received and each is complete or aborted; returns what
    /// was received by then.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let end = Instant::now() + timeout;
        let mut log = lock(&self.shared.log);
        loop {
            let settled = log.requests.iter().filter(|r| r.complete || r.aborted).count();
            let now = Instant::now();
            if settled >= n || now >= end {
                return log.requests.clone();
            }
            log = self.shared.changed.wait_timeout(log, end - now).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for RecordingServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// Bounds of what the recorder reads (it is a test server, but it should not be made to allocate without limit).
const MAX_LINE: usize = 64 * 1024;
const MAX_BODY: usize = 64 << 20;

fn read_line(r: &mut impl BufRead) -> Option<String> {
    let mut line = Vec::new();
    let n = r.take(MAX_LINE as u64).read_until(b'\n', &mut line).ok()?;
    if n == 0 || !line.ends_with(b"\n") {
        return None;
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line).ok()
}

/// Updates the request at `index` of the log.
fn update(shared: &Shared, index: usize, f: impl FnOnce(&mut Received)) {
    let mut log = lock(&shared.log);
    if let Some(r) = log.requests.get_mut(index) {
        f(r);
    }
    drop(log);
    shared.changed.notify_all();
}

/// Appends body bytes to the request at `index` as they arrive.
fn read_body_into(r: &mut BufReader<TcpStream>, mut left: usize, shared: &Shared, index: usize) -> Option<()> {
    let mut buf = [0u8; 16 * 1024];
    while left > 0 {
        let want = left.min(buf.len());
        let n = r.read(&mut buf[..want]).ok()?;
        if n == 0 {
            return None;
        }
        let at = Instant::now();
        update(shared, index, |rq| {
            rq.body.extend_from_slice(&buf[..n]);
            rq.body_pieces.push((at, n));
        });
        left -= n;
    }
    Some(())
}

/// Reads one request (recording it as it arrives); Some(index) when complete, None when the connection ended.
fn read_request(r: &mut BufReader<TcpStream>, conn: u64, shared: &Shared) -> Result<usize, Option<usize>> {
    let line = read_line(r).ok_or(None)?;
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = Headers::new();
    loop {
        let h = read_line(r).ok_or(None)?;
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').ok_or(None)?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let get = |k: &str| headers.iter().find(|(hk, _)| hk == k).map(|(_, v)| v.clone());
    let chunked = get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length: usize = get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let index = {
        let mut log = lock(&shared.log);
        log.requests.push(Received {
            method,
            path,
            headers,
            body: Vec::new(),
            headers_at: Instant::now(),
            body_pieces: Vec::new(),
            complete: false,
            aborted: false,
            connection: conn,
        });
        log.requests.len() - 1
    };
    shared.changed.notify_all();
    let body_ok = if chunked {
        let mut total = 0usize;
        loop {
            let Some(size_line) = read_line(r) else { break None };
            let Ok(size) = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16) else {
                break None;
            };
            if size == 0 {
                // trailers, then the empty line
                let mut ok = Some(());
                loop {
                    match read_line(r) {
                        Some(l) if l.is_empty() => break,
                        Some(_) => {}
                        None => {
                            ok = None;
                            break;
                        }
                    }
                }
                break ok;
            }
            total = total.saturating_add(size);
            if total > MAX_BODY || read_body_into(r, size, shared, index).is_none() || read_line(r).is_none() {
                break None;
            }
        }
    } else if length > MAX_BODY {
        None
    } else {
        read_body_into(r, length, shared, index)
    };
    match body_ok {
        Some(()) => {
            update(shared, index, |rq| rq.complete = true);
            Ok(index)
        }
        None => {
            update(shared, index, |rq| rq.aborted = true);
            Err(Some(index))
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn write_reply(w: &mut TcpStream, reply: &Reply, head: bool) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    let has = |k: &str| reply.headers.iter().any(|(hk, _)| hk == k);
    let whole = [reply.body.len()];
    let chunks = match &reply.chunks {
        None if !reply.trailers.is_empty() || !reply.hold_open.is_zero() => Some(&whole[..]),
        c => c.as_deref(),
    };
    match chunks {
        Some(sizes) if !head => {
            out.push_str("transfer-encoding: chunked\r\n\r\n");
            w.write_all(out.as_bytes())?;
            let mut pos = 0;
            let mut pieces: Vec<&[u8]> = Vec::new();
            for &n in sizes.iter() {
                let end = (pos + n).min(reply.body.len());
                pieces.push(&reply.body[pos..end]);
                pos = end;
            }
            if pos < reply.body.len() {
                pieces.push(&reply.body[pos..]);
            }
            for p in pieces.into_iter().filter(|p| !p.is_empty()) {
                w.write_all(format!("{:x}\r\n", p.len()).as_bytes())?;
                w.write_all(p)?;
                w.write_all(b"\r\n")?;
                w.flush()?;
                std::thread::sleep(Duration::from_millis(20));
            }
            if !reply.hold_open.is_zero() {
                std::thread::sleep(reply.hold_open);
            }
            w.write_all(b"0\r\n")?;
            for (k, v) in &reply.trailers {
                w.write_all(format!("{k}: {v}\r\n").as_bytes())?;
            }
            w.write_all(b"\r\n")?;
        }
        _ => {
            if !has("content-length") && !(100..200).contains(&reply.status) && reply.status != 204 {
                out.push_str(&format!("content-length: {}\r\n", reply.body.len()));
            }
            out.push_str("\r\n");
            w.write_all(out.as_bytes())?;
            if !head {
                w.write_all(&reply.body)?;
            }
        }
    }
    w.flush()
}

fn serve(conn: TcpStream, n: u64, shared: &Shared) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(mut writer) = conn.try_clone() else { return };
    let mut reader = BufReader::new(conn);
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let index = match read_request(&mut reader, n, shared) {
            Ok(i) => i,
            Err(_) => return,
        };
        let Some(req) = lock(&shared.log).requests.get(index).cloned() else { return };
        let responder = lock(&shared.responder).clone();
        let reply = responder(&req);
        if !reply.delay.is_zero() {
            std::thread::sleep(reply.delay);
        }
        if reply.reset {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
        if write_reply(&mut writer, &reply, req.method == "HEAD").is_err() {
            return;
        }
        if req.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            return;
        }
    }
}
