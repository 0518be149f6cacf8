//! `warden serve`: the reference control endpoint. Serves signed bundles with strong ETags, accepts authenticated
//! uploads of newer signed bundles (verified, atomic replace, history kept), and reports health.
//!
//! A small HTTP/1.1 server on `std::net`: a fixed pool of worker threads, one request per connection
//! (`Connection: close`), bounded request heads and bodies, read and write timeouts. Files are read from the
//! directory on every request, so what is served is always what is on disk (an operator may also copy files in by
//! hand); uploads are serialized by one lock and land with temp file + fsync + rename.

use std::fs;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs as _};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use warden_core::envelope::{self, sha256_hex, TrustedKeys};

use crate::files;
use crate::lint;
use crate::Status;

/// Serve the signed bundles of a directory to gateways, and accept uploads of new revisions.
///
/// GET /bundles/NAME.jws serves DIR/NAME.jws with a strong ETag ("sha256-<hex of the bytes>"), `304 Not Modified`
/// for a matching If-None-Match, and `Cache-Control: no-cache`.
///
/// PUT /bundles/NAME.jws with `Authorization: Bearer <upload token>` uploads a new signed bundle: it must verify
/// with the pinned keys and authority, validate, and have a revision higher than the current one. It replaces the
/// file atomically and keeps the previous one as DIR/history/NAME.REVISION.jws. Refusals are JSON
/// `{"error", "message"}`: 401 no token, 403 wrong token, 409 revision not higher, 422 does not verify or validate.
///
/// GET /healthz reports the current revision of every bundle.
///
/// Binds loopback only unless --allow-non-loopback. Prints `listening on http://ADDR` on stdout once bound
/// (use --listen 127.0.0.1:0 for a free port).
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Directory holding NAME.jws files (and history/).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8181")]
    listen: String,
    /// Allow a --listen address that is not loopback (put TLS in front of it).
    #[arg(long)]
    allow_non_loopback: bool,
    /// The pinned authority public keys (JWKS) uploads must verify with.
    #[arg(long, value_name = "AUTHORITY.jwks.json")]
    keys: PathBuf,
    /// The authority uploaded bundles must name.
    #[arg(long, value_name = "NAME")]
    authority: String,
    /// File holding the bearer token that authorizes uploads (at least 16 characters).
    #[arg(long, value_name = "FILE")]
    upload_token_file: PathBuf,
    /// Largest accepted upload, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024)]
    max_upload_bytes: usize,
    /// Worker threads.
    #[arg(long, value_name = "N", default_value_t = 8)]
    threads: usize,
}

/// Largest request head (request line and headers).
const MAX_HEAD_BYTES: usize = 16 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

struct Server {
    dir: PathBuf,
    keys: TrustedKeys,
    authority: String,
    token_digest: [u8; 32],
    max_upload: usize,
    upload_lock: Mutex<()>,
}

pub fn run(args: &Args) -> Result<Status> {
    let addr = listen_address(&args.listen, args.allow_non_loopback)?;
    if !args.dir.is_dir() {
        bail!("--dir {}: not a directory", args.dir.display());
    }
    let keys = files::read_trusted_keys(&args.keys)?;
    let token = files::read_text(&args.upload_token_file)?;
    let token = token.trim();
    if token.chars().count() < 16 || token.chars().any(char::is_whitespace) {
        bail!(
            "{}: the upload token must be at least 16 characters without whitespace (e.g. `openssl rand -hex 32`)",
            args.upload_token_file.display()
        );
    }
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let server = Arc::new(Server {
        dir: args.dir.clone(),
        keys,
        authority: args.authority.clone(),
        token_digest: Sha256::digest(token.as_bytes()).into(),
        max_upload: args.max_upload_bytes,
        upload_lock: Mutex::new(()),
    });
    let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    for (name, state) in server.bundles() {
        eprintln!("warden serve: {name}: {}", state.get("summary").and_then(Value::as_str).unwrap_or(""));
    }
    println!("listening on http://{bound}");
    std::io::stdout().flush()?;

    let (tx, rx) = mpsc::sync_channel::<TcpStream>(64);
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..args.threads {
        let rx = Arc::clone(&rx);
        let server = Arc::clone(&server);
        std::thread::spawn(move || loop {
            let stream = match rx.lock() {
                Ok(rx) => rx.recv(),
                Err(_) => return,
            };
            match stream {
                Ok(stream) => server.handle(stream),
                Err(_) => return,
            }
        });
    }
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                if tx.send(stream).is_err() {
                    bail!("worker threads stopped");
                }
            }
            Err(e) => eprintln!("warden serve: accept: {e}"),
        }
    }
    Ok(Status::Ok)
}

/// Resolves `--listen`, refusing addresses that are not loopback unless allowed.
fn listen_address(listen: &str, allow_non_loopback: bool) -> Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = match listen.parse::<SocketAddr>() {
        Ok(a) => vec![a],
        Err(_) => listen
            .to_socket_addrs()
            .with_context(|| format!("--listen {listen:?}: expected ADDR:PORT such as 127.0.0.1:8181"))?
            .collect(),
    };
    let first = *addrs.first().ok_or_else(|| anyhow!("--listen {listen:?}: resolves to no address"))?;
    if !allow_non_loopback && !addrs.iter().all(|a| a.ip().is_loopback()) {
        bail!(
            "--listen {listen}: not a loopback address; refusing to expose the control endpoint \
             (pass --allow-non-loopback, and put TLS in front of it)"
        );
    }
    Ok(first)
}

/// A parsed request head.
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// All values of a header, joined as a list (RFC 9110 section 5.3).
    fn header_list(&self, name: &str) -> Option<String> {
        let values: Vec<&str> =
            self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect();
        (!values.is_empty()).then(|| values.join(", "))
    }
}

/// A reply.
struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// HEAD and 304: headers only, but `Content-Length` of the full body.
    omit_body: bool,
}

impl Response {
    fn json(status: u16, body: &Value) -> Response {
        let mut bytes = serde_json::to_vec_pretty(body).unwrap_or_default();
        bytes.push(b'\n');
        Response {
            status,
            headers: vec![("Content-Type", "application/json".into()), ("Cache-Control", "no-store".into())],
            body: bytes,
            omit_body: false,
        }
    }

    fn error(status: u16, code: &str, message: impl Into<String>) -> Response {
        Response::json(status, &json!({ "error": code, "message": message.into() }))
    }

    fn with(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        _ => "Unknown",
    }
}

/// The strong ETag of a file's bytes.
pub fn etag(bytes: &[u8]) -> String {
    format!("\"sha256-{}\"", sha256_hex(bytes))
}

/// Does an If-None-Match value match `etag`? `*` matches any existing representation; a list matches if any member
/// does, by the weak comparison RFC 9110 prescribes for If-None-Match (a `W/` prefix is ignored).
pub fn none_match(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// Is `name` a bundle name we serve: `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 128 characters (no path separators)?
fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 128
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What the server needs from a bundle already on disk (read without verifying: it verified when it was uploaded,
/// or an operator placed it there).
#[derive(Deserialize)]
struct StoredHead {
    revision: u64,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    revocations: Option<StoredRevocations>,
}

#[derive(Deserialize, Default)]
struct StoredRevocations {
    #[serde(default)]
    signing_keys: Vec<String>,
}

fn stored_head(signed: &[u8]) -> Result<StoredHead> {
    use base64::Engine as _;
    let text = std::str::from_utf8(signed).map_err(|_| anyhow!("not ASCII"))?;
    let payload = text.trim_end().split('.').nth(1).ok_or_else(|| anyhow!("not a JWS compact serialization"))?;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|e| anyhow!("payload is not base64url: {e}"))?;
    serde_json::from_slice(&payload).map_err(|e| anyhow!("payload has no revision: {e}"))
}

impl Server {
    fn bundle_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.jws"))
    }

    /// Handles one connection: one request, one reply, then close.
    fn handle(&self, mut stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
        let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        let Ok(read_half) = stream.try_clone() else { return };
        let mut reader = BufReader::new(read_half);
        let (response, line) = match read_head(&mut reader) {
            Ok(Some(req)) => {
                let line = format!("{} {}", req.method, req.path);
                (self.route(&req, &mut reader, &mut stream), line)
            }
            Ok(None) => return,
            Err(resp) => (resp, "(bad request)".to_string()),
        };
        eprintln!("warden serve: {peer} {line} {}", response.status);
        let _ = write_response(&mut stream, &response);
        // Lingering close: stop sending, then drain what the client still sends (an unread body would otherwise
        // turn the close into a reset that can destroy the reply in flight).
        let _ = stream.shutdown(Shutdown::Write);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut sink = [0u8; 8192];
        let mut drained = 0usize;
        while let Ok(n) = reader.read(&mut sink) {
            drained += n;
            if n == 0 || drained > self.max_upload + MAX_HEAD_BYTES {
                break;
            }
        }
    }

    fn route(&self, req: &Request, reader: &mut BufReader<TcpStream>, stream: &mut TcpStream) -> Response {
        let path = req.path.split('?').next().unwrap_or("");
        if path == "/healthz" {
            return match req.method.as_str() {
                "GET" | "HEAD" => self.healthz(req.method == "HEAD"),
                _ => method_not_allowed("GET, HEAD"),
            };
        }
        let Some(file) = path.strip_prefix("/bundles/") else {
            return Response::error(404, "not_found", format!("no such resource {path:?}"));
        };
        let Some(name) = file.strip_suffix(".jws").filter(|n| valid_name(n)) else {
            return Response::error(
                404,
                "not_found",
                format!("{path:?} is not /bundles/NAME.jws with NAME made of letters, digits, '.', '_' and '-'"),
            );
        };
        match req.method.as_str() {
            "GET" | "HEAD" => self.get(name, req),
            "PUT" => self.put(name, req, reader, stream),
            _ => method_not_allowed("GET, HEAD, PUT"),
        }
    }

    fn get(&self, name: &str, req: &Request) -> Response {
        let bytes = match fs::read(self.bundle_path(name)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Response::error(404, "not_found", format!("no bundle named {name:?}"))
            }
            Err(e) => return Response::error(500, "io", format!("cannot read bundle {name:?}: {e}")),
        };
        let tag = etag(&bytes);
        let not_modified = req.header_list("if-none-match").is_some_and(|inm| none_match(&inm, &tag));
        Response {
            status: if not_modified { 304 } else { 200 },
            headers: vec![
                ("Content-Type", "application/jose".into()),
                ("ETag", tag),
                ("Cache-Control", "no-cache".into()),
            ],
            body: bytes,
            omit_body: not_modified || req.method == "HEAD",
        }
    }

    fn put(&self, name: &str, req: &Request, reader: &mut BufReader<TcpStream>, stream: &mut TcpStream) -> Response {
        // Authenticate before reading the body.
        let Some(auth) = req.header("authorization") else {
            return Response::error(401, "unauthenticated", "uploads need `Authorization: Bearer <upload token>`")
                .with("WWW-Authenticate", "Bearer realm=\"warden\"");
        };
        let presented = auth.get(..7).filter(|s| s.eq_ignore_ascii_case("bearer ")).map(|_| auth[7..].trim());
        let Some(presented) = presented else {
            return Response::error(401, "unauthenticated", "the Authorization header is not `Bearer <upload token>`")
                .with("WWW-Authenticate", "Bearer realm=\"warden\"");
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if !constant_time_eq(&digest, &self.token_digest) {
            return Response::error(403, "forbidden", "the upload token is not the one this endpoint accepts");
        }
        if req.header("transfer-encoding").is_some() {
            return Response::error(411, "length_required", "send the bundle with a Content-Length, not chunked");
        }
        let Some(length) = req.header("content-length") else {
            return Response::error(411, "length_required", "send the bundle with a Content-Length");
        };
        let Ok(length) = length.trim().parse::<usize>() else {
            return Response::error(400, "bad_request", format!("Content-Length {length:?} is not a number"));
        };
        if length > self.max_upload {
            return Response::error(
                413,
                "too_large",
                format!("the upload is {length} bytes; this endpoint accepts at most {}", self.max_upload),
            );
        }
        if req.header("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) {
            let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let mut body = vec![0u8; length];
        if let Err(e) = reader.read_exact(&mut body) {
            return Response::error(400, "bad_request", format!("the body ended before Content-Length bytes: {e}"));
        }

        let Ok(_guard) = self.upload_lock.lock() else {
            return Response::error(500, "internal", "upload lock poisoned");
        };
        self.store(name, &body)
    }

    /// Verifies, validates, checks the revision and stores an upload. Called with the upload lock held.
    fn store(&self, name: &str, body: &[u8]) -> Response {
        let path = self.bundle_path(name);
        let current = match fs::read(&path) {
            Ok(bytes) => match stored_head(&bytes) {
                Ok(head) => Some((bytes, head)),
                Err(e) => {
                    return Response::error(
                        500,
                        "current_unreadable",
                        format!("cannot read the revision of the current {}: {e}; fix or remove it", path.display()),
                    )
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Response::error(500, "io", format!("cannot read {}: {e}", path.display())),
        };
        let revoked: &[String] =
            current.as_ref().and_then(|(_, h)| h.revocations.as_ref()).map_or(&[], |r| &r.signing_keys);
        let now = files::clock();
        let verified = match envelope::verify(body, &self.keys, &self.authority, revoked, now) {
            Ok(v) => v,
            Err(e) => return Response::error(422, "not_verified", e.to_string()),
        };
        let payload = files::jws_segment_text(body, 1);
        if let Err(diagnostics) = lint::check("bundle", &payload) {
            return Response::json(
                422,
                &json!({
                    "error": "invalid_bundle",
                    "message": "the signature verifies but the bundle does not validate",
                    "errors": diagnostics,
                }),
            );
        }
        let revision = verified.bundle.revision;
        if let Some((old_bytes, head)) = &current {
            if revision <= head.revision {
                return Response::json(
                    409,
                    &json!({
                        "error": "rollback",
                        "message": format!(
                            "revision {revision} is not higher than the current revision {}", head.revision
                        ),
                        "current_revision": head.revision,
                        "uploaded_revision": revision,
                    }),
                );
            }
            let history = self.dir.join("history");
            let kept = history.join(format!("{name}.{}.jws", head.revision));
            let saved = fs::create_dir_all(&history)
                .with_context(|| format!("cannot create {}", history.display()))
                .and_then(|()| if kept.exists() { Ok(()) } else { files::write_atomic(&kept, old_bytes, 0o644) });
            if let Err(e) = saved {
                return Response::error(500, "io", format!("{e:#}"));
            }
        }
        if let Err(e) = files::write_atomic(&path, body, 0o644) {
            return Response::error(500, "io", format!("{e:#}"));
        }
        let tag = etag(body);
        let previous = current.as_ref().map(|(_, h)| h.revision);
        let before = previous.map_or("no previous revision".to_string(), |p| format!("previous revision {p} kept"));
        eprintln!("warden serve: {name}: revision {revision} stored ({before}; kid {})", verified.key_id);
        Response::json(
            if previous.is_some() { 200 } else { 201 },
            &json!({
                "bundle": name,
                "revision": revision,
                "previous_revision": previous,
                "kid": verified.key_id,
                "digest": format!("sha256:{}", verified.digest),
                "etag": tag,
                "expires_at": verified.bundle.expires_at,
            }),
        )
        .with("ETag", tag)
    }

    /// Every NAME.jws in the directory with its state, by name.
    fn bundles(&self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(&self.dir) else { return out };
        let now = files::clock();
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = file.strip_suffix(".jws").filter(|n| valid_name(n)) else { continue };
            let Ok(bytes) = fs::read(entry.path()) else { continue };
            let mut state = json!({ "etag": etag(&bytes) });
            let summary = match envelope::verify(&bytes, &self.keys, &self.authority, &[], now) {
                Ok(v) => {
                    state["revision"] = json!(v.bundle.revision);
                    state["expires_at"] = json!(v.bundle.expires_at);
                    state["verified"] = json!(true);
                    format!("revision {}, kid {}, expires {}", v.bundle.revision, v.key_id, v.bundle.expires_at)
                }
                Err(e) => {
                    if let Ok(head) = stored_head(&bytes) {
                        state["revision"] = json!(head.revision);
                        state["expires_at"] = json!(head.expires_at);
                    }
                    state["verified"] = json!(false);
                    state["problem"] = json!(e.to_string());
                    format!("does not verify: {e}")
                }
            };
            state["summary"] = json!(summary);
            out.push((name.to_string(), state));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn healthz(&self, head: bool) -> Response {
        let bundles: serde_json::Map<String, Value> = self
            .bundles()
            .into_iter()
            .map(|(name, mut state)| {
                if let Some(obj) = state.as_object_mut() {
                    obj.remove("summary");
                }
                (name, state)
            })
            .collect();
        let mut r = Response::json(200, &json!({ "status": "ok", "bundles": bundles }));
        r.omit_body = head;
        r
    }
}

fn method_not_allowed(allow: &str) -> Response {
    Response::error(405, "method_not_allowed", format!("allowed methods: {allow}")).with("Allow", allow.to_string())
}

/// Compares two digests without an early exit (both are SHA-256 outputs, so the length leaks nothing).
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// Reads the request line and headers. `Ok(None)`: the client closed without sending anything.
fn read_head(reader: &mut BufReader<TcpStream>) -> std::result::Result<Option<Request>, Response> {
    let mut total = 0usize;
    let mut lines: Vec<String> = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = reader
            .by_ref()
            .take((MAX_HEAD_BYTES - total + 1) as u64)
            .read_until(b'\n', &mut line)
            .map_err(|e| Response::error(400, "bad_request", format!("cannot read the request: {e}")))?;
        if n == 0 {
            if lines.is_empty() && total == 0 {
                return Ok(None);
            }
            return Err(Response::error(400, "bad_request", "the request head ended early"));
        }
        total += n;
        if total > MAX_HEAD_BYTES {
            return Err(Response::error(431, "head_too_large", format!("request head over {MAX_HEAD_BYTES} bytes")));
        }
        let line =
            String::from_utf8(line).map_err(|_| Response::error(400, "bad_request", "request head not UTF-8"))?;
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue; // tolerate a leading empty line (RFC 9112 section 2.2)
            }
            break;
        }
        lines.push(line);
    }
    let mut parts = lines[0].split(' ');
    let (Some(method), Some(path), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Response::error(400, "bad_request", "malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Response::error(400, "bad_request", format!("unsupported protocol {version:?}")));
    }
    if !path.starts_with('/') {
        return Err(Response::error(400, "bad_request", "the request target must start with '/'"));
    }
    let mut headers = Vec::new();
    for line in &lines[1..] {
        let Some((name, value)) = line.split_once(':') else {
            return Err(Response::error(400, "bad_request", "malformed header line"));
        };
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err(Response::error(400, "bad_request", "malformed header name"));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let lengths: Vec<&str> =
        headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.as_str()).collect();
    if lengths.windows(2).any(|w| w[0] != w[1]) {
        return Err(Response::error(400, "bad_request", "conflicting Content-Length headers"));
    }
    Ok(Some(Request { method: method.to_string(), path: path.to_string(), headers }))
}

fn write_response(stream: &mut TcpStream, r: &Response) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", r.status, reason_phrase(r.status));
    for (name, value) in &r.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if r.status != 304 {
        head.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;
    if !r.omit_body {
        stream.write_all(&r.body)?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_lists_star_and_weak_tags() {
        let tag = "\"sha256-ab\"";
        assert!(none_match("\"sha256-ab\"", tag));
        assert!(none_match("*", tag));
        assert!(none_match("\"x\", \"sha256-ab\"", tag));
        assert!(none_match("W/\"sha256-ab\"", tag));
        assert!(!none_match("\"sha256-abc\"", tag));
        assert!(!none_match("sha256-ab", tag));
        assert!(!none_match("", tag));
    }

    #[test]
    fn bundle_names_cannot_leave_the_directory() {
        assert!(valid_name("support-agent"));
        assert!(valid_name("a.b_c-1"));
        assert!(!valid_name(""));
        assert!(!valid_name(".hidden"));
        assert!(!valid_name("../etc/passwd"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("a%2Fb"));
        assert!(!valid_name(&"a".repeat(129)));
    }

    #[test]
    fn non_loopback_listen_is_refused_unless_allowed() {
        assert!(listen_address("127.0.0.1:0", false).is_ok());
        assert!(listen_address("[::1]:0", false).is_ok());
        let e = listen_address("0.0.0.0:8181", false).unwrap_err().to_string();
        assert!(e.contains("not a loopback address"), "{e}");
        assert!(listen_address("0.0.0.0:8181", true).is_ok());
        assert!(listen_address("nonsense", false).is_err());
    }

    #[test]
    fn token_compare() {
        let a: [u8; 32] = Sha256::digest(b"a").into();
        let b: [u8; 32] = Sha256::digest(b"b").into();
        assert!(constant_time_eq(&a, &a));
        assert!(!constant_time_eq(&a, &b));
    }
}
