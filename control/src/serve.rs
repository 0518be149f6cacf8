//! `warden serve`: the reference control endpoint. Serves signed bundles with strong ETags and long polling,
//! accepts authenticated uploads of newer signed bundles (verified, atomic replace, history kept), reports health.
//!
//! HTTP/1.1 is hyper's on a tokio runtime ([`net`]: connection limit, optional TLS with rustls, a total deadline per
//! request); this module is what the endpoint answers. Files are read from the directory on every request, so what
//! is served is always what is on disk (an operator may also copy files in by hand); uploads are serialized by one
//! lock and land with temp file + fsync + rename. A long poll (`If-None-Match` and `Prefer: wait=N`) is a task
//! waiting on a change notification (an upload, or the directory scan that sees a hand-copied file), so thousands
//! of waiting gateways cost memory, not threads.

mod net;

use std::convert::Infallible;
use std::fs;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;
use warden_core::envelope::{self, sha256_hex, TrustedKeys};

use crate::files;
use crate::lint;
use crate::Status;

/// Serve the signed bundles of a directory to gateways, and accept uploads of new revisions.
///
/// GET /bundles/NAME.jws serves DIR/NAME.jws with a strong ETag ("sha256-<hex of the bytes>"), `304 Not Modified`
/// for a matching If-None-Match, and `Cache-Control: no-cache`. Long polling: with a matching If-None-Match and
/// `Prefer: wait=N` the reply is held until a new revision lands or N seconds (at most --max-wait-secs) pass; such a
/// reply carries `Preference-Applied: wait=N`.
///
/// PUT /bundles/NAME.jws with `Authorization: Bearer <upload token>` uploads a new signed bundle: it must verify
/// with the pinned keys and authority, validate, and have a revision higher than the current one. It replaces the
/// file atomically and keeps the previous one as DIR/history/NAME.REVISION.jws. Refusals are JSON
/// `{"error", "message"}`: 401 no token, 403 wrong token, 409 revision not higher, 412 If-Match / If-None-Match
/// not met, 413 too large, 422 does not verify or validate.
///
/// GET /healthz reports the current revision of every bundle.
///
/// The upload token file holds one token, or one `LABEL TOKEN` per line (the label names the uploader in the log).
/// Binds loopback only unless --allow-non-loopback. Prints `listening on http://ADDR` (or https) on stdout once
/// bound (use --listen 127.0.0.1:0 for a free port).
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Directory holding NAME.jws files (and history/).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8181")]
    listen: String,
    /// Allow a --listen address that is not loopback (serve TLS with --tls-cert/--tls-key, or put TLS in front).
    #[arg(long)]
    allow_non_loopback: bool,
    /// The pinned authority public keys (JWKS) uploads must verify with.
    #[arg(long, value_name = "AUTHORITY.jwks.json")]
    keys: PathBuf,
    /// The authority uploaded bundles must name.
    #[arg(long, value_name = "NAME")]
    authority: String,
    /// File holding the upload token (at least 16 characters), or lines `LABEL TOKEN`.
    #[arg(long, value_name = "FILE")]
    upload_token_file: PathBuf,
    /// Largest accepted upload, in bytes (checked from Content-Length before reading).
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024)]
    max_upload_bytes: usize,
    /// Worker threads of the runtime.
    #[arg(long, value_name = "N", default_value_t = 2)]
    threads: usize,
    /// Most connections open at once; one more is answered 503 at once and closed.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    max_connections: usize,
    /// Time for a TLS handshake and for a whole request head; also how long an idle keep-alive connection stays.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    head_timeout_secs: u64,
    /// Total time for one request after its head: reading the body and deciding (408 past it); writing the reply
    /// gets --head-timeout-secs more, then the connection is closed. A long poll's wait comes on top.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    request_timeout_secs: u64,
    /// Longest long-poll wait granted (`Prefer: wait=N` is capped to it); 0 turns long polling off.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    max_wait_secs: u64,
    /// Most long polls held at once; past it, conditional GETs are answered at once (no `Preference-Applied`).
    #[arg(long, value_name = "N", default_value_t = 900)]
    max_waiting: usize,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "CERT.pem", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "KEY.pem", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// Largest request head (request line and headers).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How often the directory is scanned for files changed by hand (long polls wake on a change).
const SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// One accepted upload token: its label (for the log) and the SHA-256 of the token.
struct UploadToken {
    label: String,
    digest: [u8; 32],
}

struct Server {
    store: Arc<Store>,
    dir: PathBuf,
    keys: TrustedKeys,
    authority: String,
    tokens: Vec<UploadToken>,
    max_upload: usize,
    request_timeout: Duration,
    /// Time to write a reply after the request's deadline (the connection's deadline is the sum).
    reply_timeout: Duration,
    max_wait: u64,
    max_waiting: usize,
    waiting: AtomicUsize,
    /// Bumped whenever a bundle file may have changed (an upload, or the directory scan saw a change).
    changes: watch::Sender<u64>,
    slots: Arc<net::Slots>,
}

pub fn run(args: &Args) -> Result<Status> {
    let addr = listen_address(&args.listen, args.allow_non_loopback)?;
    if !args.dir.is_dir() {
        bail!("--dir {}: not a directory", args.dir.display());
    }
    let keys = files::read_trusted_keys(&args.keys)?;
    let tokens = read_upload_tokens(&args.upload_token_file)?;
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if args.max_connections == 0 {
        bail!("--max-connections must be at least 1");
    }
    if args.head_timeout_secs == 0 || args.request_timeout_secs == 0 {
        bail!("--head-timeout-secs and --request-timeout-secs must be at least 1");
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(net::tls_acceptor(cert, key)?),
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let slots = net::Slots::new(args.max_connections);
    let store = Arc::new(Store {
        dir: args.dir.clone(),
        keys: keys.clone(),
        authority: args.authority.clone(),
        lock: Mutex::new(()),
    });
    let server = Arc::new(Server {
        store,
        dir: args.dir.clone(),
        keys,
        authority: args.authority.clone(),
        tokens,
        max_upload: args.max_upload_bytes,
        request_timeout: Duration::from_secs(args.request_timeout_secs),
        reply_timeout: Duration::from_secs(args.head_timeout_secs),
        max_wait: args.max_wait_secs,
        max_waiting: args.max_waiting,
        waiting: AtomicUsize::new(0),
        changes: watch::Sender::new(0),
        slots: Arc::clone(&slots),
    });
    let head_timeout = Duration::from_secs(args.head_timeout_secs);
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr()?;
        for (name, state) in server.bundles() {
            eprintln!("warden serve: {name}: {}", state.get("summary").and_then(Value::as_str).unwrap_or(""));
        }
        let labels: Vec<&str> = server.tokens.iter().map(|t| t.label.as_str()).collect();
        eprintln!("warden serve: upload tokens: {}", labels.join(", "));
        println!("listening on {}://{bound}", if tls.is_some() { "https" } else { "http" });
        use std::io::Write as _;
        std::io::stdout().flush()?;

        tokio::spawn(scan_directory(Arc::clone(&server)));
        let listen = net::Listen { listener, tls, slots, head_timeout };
        net::accept_loop(listen, move |io, tls, peer, deadline| {
            let server = Arc::clone(&server);
            async move {
                match tls {
                    Some(acceptor) => match tokio::time::timeout(head_timeout, acceptor.accept(io)).await {
                        Ok(Ok(stream)) => server.serve_connection(stream, peer, deadline, head_timeout).await,
                        Ok(Err(e)) => eprintln!("warden serve: {peer} TLS handshake failed: {e}"),
                        Err(_) => eprintln!("warden serve: {peer} TLS handshake timed out"),
                    },
                    None => server.serve_connection(io, peer, deadline, head_timeout).await,
                }
            }
        })
        .await;
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(Status::Ok)
}

/// Reads the upload token file: one token, or lines `LABEL TOKEN` (blank lines and `#` comments skipped).
fn read_upload_tokens(path: &std::path::Path) -> Result<Vec<UploadToken>> {
    let text = files::read_text(path)?;
    let mut tokens = Vec::new();
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for (n, line) in &lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (label, token) = match fields.as_slice() {
            [token] if lines.len() == 1 => ("upload-token", *token),
            [label, token] => (*label, *token),
            _ => bail!(
                "{}:{n}: expected `LABEL TOKEN` (or a file holding just one token), e.g. `ci-pipeline $(openssl rand -hex 32)`",
                path.display()
            ),
        };
        if token.chars().count() < 16 {
            bail!(
                "{}: the upload token must be at least 16 characters without whitespace (e.g. `openssl rand -hex 32`)",
                path.display()
            );
        }
        if tokens.iter().any(|t: &UploadToken| t.label == label) {
            bail!("{}:{n}: the label {label:?} is used twice", path.display());
        }
        tokens.push(UploadToken { label: label.to_string(), digest: Sha256::digest(token.as_bytes()).into() });
    }
    if tokens.is_empty() {
        bail!(
            "{}: the upload token must be at least 16 characters without whitespace (e.g. `openssl rand -hex 32`)",
            path.display()
        );
    }
    Ok(tokens)
}

/// Bumps the change counter when the bundle files in the directory change (names, sizes, modification times), so
/// long polls also see files an operator copied in by hand.
async fn scan_directory(server: Arc<Server>) {
    let fingerprint = |dir: &std::path::Path| -> Vec<(String, u64, Option<std::time::SystemTime>)> {
        let mut out: Vec<_> = fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let meta = e.metadata().ok()?;
                        name.ends_with(".jws").then(|| (name, meta.len(), meta.modified().ok()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    };
    let mut last = fingerprint(&server.dir);
    loop {
        tokio::time::sleep(SCAN_INTERVAL).await;
        let now = fingerprint(&server.dir);
        if now != last {
            last = now;
            server.changes.send_modify(|n| *n += 1);
        }
    }
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

/// A reply.
struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// HEAD and 304: headers only, but `Content-Length` of the full body (HEAD).
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

    fn into_hyper(self) -> hyper::Response<Full<Bytes>> {
        let mut builder = hyper::Response::builder().status(self.status);
        for (name, value) in &self.headers {
            builder = builder.header(*name, value.as_str());
        }
        if self.status != 304 {
            builder = builder.header("Content-Length", self.body.len().to_string());
        }
        let body = if self.omit_body { Bytes::new() } else { Bytes::from(self.body) };
        builder.body(Full::new(body)).unwrap_or_else(|_| {
            let mut r = hyper::Response::new(Full::new(Bytes::from_static(b"{\"error\": \"internal\"}\n")));
            *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
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

/// The `wait` preference of `Prefer` headers (RFC 7240 section 4.3: `wait=<delta-seconds>`, among other
/// preferences, in any of the header's values). `None` when absent or not a number.
pub fn prefer_wait(values: &[&str]) -> Option<u64> {
    values.iter().flat_map(|v| v.split(',')).find_map(|pref| {
        let first = pref.split(';').next()?.trim();
        let (name, value) = first.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("wait") {
            return None;
        }
        let value = value.trim().trim_matches('"');
        (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit())).then(|| value.parse().unwrap_or(u64::MAX))
    })
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

/// All values of a header, joined as a list (RFC 9110 section 5.3).
fn header_list(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<&str> = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
    (!values.is_empty()).then(|| values.join(", "))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Holds a place among the long polls in progress; released when dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Server {
    fn bundle_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.jws"))
    }

    /// Serves HTTP/1.1 on one connection (keep-alive) until the client closes it or a deadline passes.
    async fn serve_connection<S>(self: Arc<Self>, io: S, peer: String, deadline: net::DeadlineHandle, head: Duration)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let server = Arc::clone(&self);
        let peer_for_service = peer.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let server = Arc::clone(&server);
            let peer = peer_for_service.clone();
            let deadline = deadline.clone();
            async move { Ok::<_, Infallible>(server.handle(req, &peer, &deadline).await.into_hyper()) }
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(head)
            .max_buf_size(MAX_HEAD_BYTES.max(8192))
            .keep_alive(true);
        if let Err(e) = http.serve_connection(hyper_util::rt::TokioIo::new(io), service).await {
            if !e.is_incomplete_message() {
                eprintln!("warden serve: {peer} connection closed: {e}");
            }
        }
    }

    async fn handle(&self, req: hyper::Request<Incoming>, peer: &str, deadline: &net::DeadlineHandle) -> Response {
        let started = Instant::now();
        deadline.set(started + self.request_timeout + self.reply_timeout);
        let method = req.method().as_str().to_string();
        let target = req.uri().path_and_query().map_or_else(|| req.uri().to_string(), |p| p.as_str().to_string());
        let mut response = self.route(req, peer, deadline, started).await;
        let waited = started.elapsed();
        let note =
            if waited >= Duration::from_secs(1) { format!(" (held {} s)", waited.as_secs()) } else { String::new() };
        eprintln!("warden serve: {peer} {method} {target} {}{note}", response.status);
        if response.status == 408 {
            response = response.with("Connection", "close");
        }
        response
    }

    async fn route(
        &self,
        req: hyper::Request<Incoming>,
        peer: &str,
        deadline: &net::DeadlineHandle,
        started: Instant,
    ) -> Response {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let head = method == hyper::Method::HEAD;
        if path == "/healthz" {
            return match method.as_str() {
                "GET" | "HEAD" => self.healthz(head),
                _ => method_not_allowed("GET, HEAD"),
            };
        }
        let Some(file) = path.strip_prefix("/bundles/") else {
            return Response::error(404, "not_found", format!("no such resource {path:?}"));
        };
        let Some(name) = file.strip_suffix(".jws").filter(|n| valid_name(n)).map(str::to_string) else {
            return Response::error(
                404,
                "not_found",
                format!("{path:?} is not /bundles/NAME.jws with NAME made of letters, digits, '.', '_' and '-'"),
            );
        };
        match method.as_str() {
            "GET" | "HEAD" => self.get(&name, req.headers(), head, deadline, started).await,
            "PUT" => self.put(&name, req, peer, started).await,
            _ => method_not_allowed("GET, HEAD, PUT"),
        }
    }

    /// The file and its ETag, or the reply that says why there is none.
    fn read_bundle(&self, name: &str) -> std::result::Result<(Vec<u8>, String), Response> {
        match fs::read(self.bundle_path(name)) {
            Ok(b) => {
                let tag = etag(&b);
                Ok((b, tag))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Response::error(404, "not_found", format!("no bundle named {name:?}")))
            }
            Err(e) => Err(Response::error(500, "io", format!("cannot read bundle {name:?}: {e}"))),
        }
    }

    async fn get(
        &self,
        name: &str,
        headers: &HeaderMap,
        head: bool,
        deadline: &net::DeadlineHandle,
        started: Instant,
    ) -> Response {
        let (mut bytes, mut tag) = match self.read_bundle(name) {
            Ok(found) => found,
            Err(r) => return r,
        };
        let inm = header_list(headers, "if-none-match");
        let prefer: Vec<&str> = headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).collect();
        let mut granted = prefer_wait(&prefer).filter(|_| self.max_wait > 0).map(|w| w.min(self.max_wait));
        let matches = |tag: &str| inm.as_deref().is_some_and(|inm| none_match(inm, tag));
        if let Some(wait) = granted.filter(|w| *w > 0 && matches(&tag)) {
            match self.enter_waiting() {
                None => granted = None,
                Some(_place) => {
                    let end = started + Duration::from_secs(wait);
                    deadline.set(end + self.request_timeout + self.reply_timeout);
                    let mut changes = self.changes.subscribe();
                    loop {
                        tokio::select! {
                            changed = changes.changed() => if changed.is_err() { break },
                            () = tokio::time::sleep_until(end) => break,
                        }
                        match self.read_bundle(name) {
                            Ok((b, t)) if !matches(&t) => {
                                (bytes, tag) = (b, t);
                                break;
                            }
                            Ok(_) => {}
                            Err(r) => return r,
                        }
                    }
                    if Instant::now() >= end {
                        match self.read_bundle(name) {
                            Ok(found) => (bytes, tag) = found,
                            Err(r) => return r,
                        }
                    }
                }
            }
        }
        let not_modified = matches(&tag);
        let mut r = Response {
            status: if not_modified { 304 } else { 200 },
            headers: vec![
                ("Content-Type", "application/jose".into()),
                ("ETag", tag),
                ("Cache-Control", "no-cache".into()),
            ],
            body: bytes,
            omit_body: not_modified || head,
        };
        if not_modified {
            r.headers.retain(|(k, _)| *k != "Content-Type");
        }
        if let Some(wait) = granted {
            r = r.with("Preference-Applied", format!("wait={wait}"));
        }
        r
    }

    fn enter_waiting(&self) -> Option<Waiting<'_>> {
        let mut n = self.waiting.load(Ordering::Acquire);
        loop {
            if n >= self.max_waiting {
                return None;
            }
            match self.waiting.compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(Waiting(&self.waiting)),
                Err(now) => n = now,
            }
        }
    }

    /// The label of the upload token presented, compared in constant time against every accepted token.
    fn token_label(&self, presented: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for t in &self.tokens {
            if constant_time_eq(&digest, &t.digest) {
                found = Some(t.label.as_str());
            }
        }
        found
    }

    async fn put(&self, name: &str, req: hyper::Request<Incoming>, peer: &str, started: Instant) -> Response {
        let headers = req.headers();
        // Authenticate before reading the body.
        let Some(auth) = header(headers, "authorization") else {
            return Response::error(401, "unauthenticated", "uploads need `Authorization: Bearer <upload token>`")
                .with("WWW-Authenticate", "Bearer realm=\"warden\"");
        };
        let presented = auth.get(..7).filter(|s| s.eq_ignore_ascii_case("bearer ")).map(|_| auth[7..].trim());
        let Some(presented) = presented else {
            return Response::error(401, "unauthenticated", "the Authorization header is not `Bearer <upload token>`")
                .with("WWW-Authenticate", "Bearer realm=\"warden\"");
        };
        let Some(label) = self.token_label(presented).map(str::to_string) else {
            eprintln!("warden serve: upload from {peer}: {name}: refused: unknown upload token");
            return Response::error(403, "forbidden", "the upload token is not the one this endpoint accepts");
        };
        if headers.contains_key("transfer-encoding") {
            return Response::error(411, "length_required", "send the bundle with a Content-Length, not chunked");
        }
        let Some(length) = header(headers, "content-length") else {
            return Response::error(411, "length_required", "send the bundle with a Content-Length");
        };
        let Ok(length) = length.trim().parse::<usize>() else {
            return Response::error(400, "bad_request", format!("Content-Length {length:?} is not a number"));
        };
        if length > self.max_upload {
            eprintln!("warden serve: upload by {label:?} from {peer}: {name}: refused: {length} bytes");
            return Response::error(
                413,
                "too_large",
                format!("the upload is {length} bytes; this endpoint accepts at most {}", self.max_upload),
            )
            .with("Connection", "close");
        }
        let precondition = Precondition {
            if_match: header_list(headers, "if-match"),
            if_none_match: header_list(headers, "if-none-match"),
        };
        let until = started + self.request_timeout;
        let body = match tokio::time::timeout_at(until, Limited::new(req.into_body(), self.max_upload).collect()).await
        {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) => {
                return Response::error(400, "bad_request", format!("the body ended before Content-Length bytes: {e}"))
            }
            Err(_) => {
                return Response::error(
                    408,
                    "request_timeout",
                    format!("the upload did not arrive within {} s", self.request_timeout.as_secs()),
                )
            }
        };
        let store = Arc::clone(&self.store);
        let name_owned = name.to_string();
        let stored = tokio::task::spawn_blocking(move || {
            let Ok(_guard) = store.lock.lock() else {
                return Response::error(500, "internal", "upload lock poisoned");
            };
            store.store(&name_owned, &body, &precondition)
        })
        .await
        .unwrap_or_else(|e| Response::error(500, "internal", format!("upload task failed: {e}")));
        if stored.status < 300 {
            self.changes.send_modify(|n| *n += 1);
            let revision = stored_revision(&stored);
            eprintln!("warden serve: upload by {label:?} from {peer}: {name}: revision {revision} accepted");
        } else {
            let code = serde_json::from_slice::<Value>(&stored.body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_default();
            eprintln!("warden serve: upload by {label:?} from {peer}: {name}: refused {} {code}", stored.status);
        }
        stored
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
        let mut r = Response::json(
            200,
            &json!({
                "status": "ok",
                "bundles": bundles,
                "connections": self.slots.open(),
                "waiting": self.waiting.load(Ordering::Acquire),
            }),
        );
        r.omit_body = head;
        r
    }
}

/// Where uploads land: verified, checked against the current revision and stored by one blocking task at a time
/// (`lock`), off the runtime's threads.
struct Store {
    dir: PathBuf,
    keys: TrustedKeys,
    authority: String,
    lock: Mutex<()>,
}

/// The conditions of an upload (RFC 9110 section 13): `If-Match` with the ETag the publisher last saw (`warden
/// publish` sends it, so two publishers cannot overwrite each other's revision unseen), or `If-None-Match: *` for
/// a first upload.
struct Precondition {
    if_match: Option<String>,
    if_none_match: Option<String>,
}

impl Precondition {
    /// `Some(412 reply)` when the current file (its ETag and revision, if any) does not satisfy the conditions.
    fn refusal(&self, current: Option<(String, u64)>) -> Option<Response> {
        let failed = |message: String| {
            let mut body = json!({ "error": "precondition_failed", "message": message });
            if let Some((tag, revision)) = &current {
                body["current_etag"] = json!(tag);
                body["current_revision"] = json!(revision);
            }
            Some(Response::json(412, &body))
        };
        if let Some(if_match) = &self.if_match {
            match &current {
                None => return failed(format!("If-Match {if_match}: there is no current bundle")),
                Some((tag, revision)) if !none_match(if_match, tag) => {
                    return failed(format!(
                        "If-Match {if_match}: the current bundle is revision {revision} with ETag {tag}; fetch it \
                         again and review what changed"
                    ))
                }
                Some(_) => {}
            }
        }
        if let (Some(inm), Some((tag, revision))) = (&self.if_none_match, &current) {
            if none_match(inm, tag) {
                return failed(format!("If-None-Match {inm}: a bundle exists already (revision {revision})"));
            }
        }
        None
    }
}

fn stored_revision(r: &Response) -> String {
    serde_json::from_slice::<Value>(&r.body).ok().map(|v| v["revision"].to_string()).unwrap_or_default()
}

impl Store {
    /// Verifies, validates, checks the revision and stores an upload. Called with the upload lock held.
    fn store(&self, name: &str, body: &[u8], precondition: &Precondition) -> Response {
        let path = self.dir.join(format!("{name}.jws"));
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
        if let Some(refusal) = precondition.refusal(current.as_ref().map(|(bytes, head)| (etag(bytes), head.revision)))
        {
            return refusal;
        }
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
    fn prefer_wait_follows_rfc_7240() {
        assert_eq!(prefer_wait(&["wait=30"]), Some(30));
        assert_eq!(prefer_wait(&["respond-async, wait=5"]), Some(5));
        assert_eq!(prefer_wait(&["handling=lenient", "Wait = 7"]), Some(7));
        assert_eq!(prefer_wait(&["wait=\"9\""]), Some(9));
        assert_eq!(prefer_wait(&["wait=99999999999999999999999"]), Some(u64::MAX));
        assert_eq!(prefer_wait(&["wait=-1"]), None);
        assert_eq!(prefer_wait(&["wait=soon"]), None);
        assert_eq!(prefer_wait(&["waiting=3"]), None);
        assert_eq!(prefer_wait(&[]), None);
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
