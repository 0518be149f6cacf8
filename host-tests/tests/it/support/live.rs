//! Support for the live-update tests (`e2e_control`, `e2e_nginx`, `e2e_polling`, `governance`, the Envoy tests): a
//! test world (authority key and its files, token issuer key, bundles by revision), `warden serve` as a real child
//! process on loopback (with upload and fetch helpers over HTTP), a scripted control endpoint with faults
//! ([`ControlServer`]), `warden.wasm` started in the host with a manual clock, and helpers that read which revision
//! each worker VM enforces.
//!
//! `warden serve` and `warden sign` check validity windows against the system clock, and Envoy's clock is the real
//! one, so the host clock starts at the real time of the test process ([`t0`]) and bundles are valid from an hour
//! before it for a week. Keys are generated per test process; nothing here is a secret.
#![allow(dead_code)] // each test module uses a different part

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use warden_core::envelope::{self, SigningKey};
use warden_host::http_call::{self, CallResult};
use warden_host::{CannedUpstream, Clock, Exchange, HttpRequest, HttpResponse, Plugin, PluginConfig, UpstreamResponse};

pub use super::{warden_bin, warden_module, write_atomically, IssuerKey, TempDir};

pub const AUTHORITY: &str = "policy.acme.example";
pub const CRM: &str = "crm.acme.example";
pub const ISS: &str = "https://spire.acme.example";
pub const BOT: &str = "spiffe://acme.example/agents/support/bot-1";
pub const CLUSTER: &str = "warden-control";
pub const CONTROL_AUTHORITY: &str = "control.acme.example";
/// The filter's default `control.path` (the configurations below do not set it).
pub const CONTROL_PATH: &str = "/bundles/bundle.jws";
/// The `kid` of the test authority key.
pub const AUTHORITY_KID: &str = "authority-ctl";
pub const UPLOAD_TOKEN: &str = "e2e-upload-token-0123456789abcdef";

/// Host clock at plugin start, seconds since the epoch: the real time when first asked (see the module docs).
pub fn t0() -> i64 {
    static T0: OnceLock<i64> = OnceLock::new();
    *T0.get_or_init(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0))
}

// ---------------------------------------------------------------------------------------------------------------
// Keys, bundles, tokens

pub struct World {
    pub authority: SigningKey,
    pub issuer: IssuerKey,
}

pub fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| World {
        authority: SigningKey::generate(envelope::Algorithm::EdDSA, AUTHORITY_KID).expect("authority key"),
        issuer: IssuerKey::generate("issuer-ctl"),
    })
}

/// The pinned key set, as gateways and `warden serve --keys` take it.
pub fn authority_jwks() -> Value {
    json!({"keys": [world().authority.public_jwk()]})
}

fn rfc3339(t: i64) -> String {
    warden_core::time::format_rfc3339(t)
}

/// A bundle at `revision`: support agents may read CRM contacts and may not update them.
pub fn bundle(revision: u64) -> Value {
    let t0 = t0();
    json!({
        "format": "warden.bundle/v1",
        "revision": revision,
        "issued_at": rfc3339(t0 - 3600),
        "expires_at": rfc3339(t0 + 7 * 86_400),
        "owner": "security@acme.example",
        "authority": AUTHORITY,
        "issuers": [{
            "id": "acme-workload", "iss": ISS, "audiences": ["warden"],
            "jwks": {"keys": [world().issuer.public.clone()]}, "algorithms": ["EdDSA"],
            "max_token_lifetime_seconds": 900, "profile": "spiffe_jwt_svid", "claims": {"agent_id": "sub"}
        }],
        "tools": [
            {"id": "crm.contacts.read", "sensitivity": "read",
             "http": [{"host": CRM, "methods": ["GET"], "path": "/contacts/{id}"}]},
            {"id": "crm.contacts.update", "sensitivity": "write",
             "http": [{"host": CRM, "methods": ["PATCH"], "path": "/contacts/{id}"}]}
        ],
        "rules": [
            {"id": "support-no-writes", "effect": "deny",
             "agents": ["spiffe://acme.example/agents/support/*"], "tools": ["crm.contacts.update"]},
            {"id": "support-reads", "effect": "allow",
             "agents": ["spiffe://acme.example/agents/support/*"], "tools": ["crm.contacts.read"]}
        ],
        "defaults": {"unknown_tool": "deny"}
    })
}

/// `bundle(revision)` revoking the support bot.
pub fn revoking_bundle(revision: u64) -> Value {
    let mut b = bundle(revision);
    b["revocations"] = json!({"agents": [BOT]});
    b
}

/// Signs in-process (the same JWS `warden sign` writes).
pub fn sign(bundle: &Value) -> String {
    envelope::sign(serde_json::to_string_pretty(bundle).expect("json").as_bytes(), &world().authority)
}

static JTI: AtomicU64 = AtomicU64::new(1);

/// A token for `agent` issued at host time `now`.
pub fn token(agent: &str, now: i64) -> String {
    let claims = json!({"iss": ISS, "sub": agent, "aud": "warden", "iat": now, "exp": now + 300,
                        "jti": format!("jti-{}", JTI.fetch_add(1, Ordering::Relaxed))});
    world().issuer.sign(&claims)
}

// ---------------------------------------------------------------------------------------------------------------
// The policy owner's files and `warden serve`

/// A policy owner's working directory: the authority's private key and pinned key set, the upload token, and the
/// directory `warden serve` serves (`bundles/`).
pub struct Owner {
    pub dir: TempDir,
}

impl Owner {
    pub fn new() -> Owner {
        let dir = TempDir::new("control");
        let write = |rel: &str, bytes: &[u8]| std::fs::write(dir.join(rel), bytes).expect("write");
        write("authority.jwk.json", world().authority.private_jwk().to_string().as_bytes());
        write("authority.jwks.json", authority_jwks().to_string().as_bytes());
        write("upload.token", format!("{UPLOAD_TOKEN}\n").as_bytes());
        std::fs::create_dir_all(dir.join("bundles")).expect("bundles dir");
        Owner { dir }
    }

    pub fn bundles(&self) -> PathBuf {
        self.dir.join("bundles")
    }

    /// Signs `bundle` with `warden sign` (as the policy owner does) and returns the JWS.
    pub fn sign_with_cli(&self, bundle: &Value) -> String {
        let revision = bundle["revision"].as_u64().unwrap_or(0);
        let json_path = self.dir.join(&format!("bundle-{revision}.json"));
        let jws_path = self.dir.join(&format!("bundle-{revision}.jws"));
        std::fs::write(&json_path, serde_json::to_string_pretty(bundle).expect("json")).expect("write bundle");
        let out = Command::new(warden_bin())
            .arg("sign")
            .arg(&json_path)
            .arg("--key")
            .arg(self.dir.join("authority.jwk.json"))
            .arg("--out")
            .arg(&jws_path)
            .output()
            .expect("run warden sign");
        assert!(
            out.status.success(),
            "warden sign failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&jws_path).expect("read the signed bundle")
    }

    /// Starts `warden serve` on `127.0.0.1:0` for `bundles/`.
    pub fn serve(&self) -> Serve {
        self.serve_on("127.0.0.1:0")
    }

    /// Starts `warden serve` for `bundles/` listening on `listen` (e.g. the port of one that was stopped).
    pub fn serve_on(&self, listen: &str) -> Serve {
        Serve::start_on(
            &self.bundles(),
            &self.dir.join("authority.jwks.json"),
            &self.dir.join("upload.token"),
            &self.dir.join("serve.stderr"),
            listen,
        )
    }
}

/// `warden serve` running as a child process; killed (by its handle) on drop.
pub struct Serve {
    child: Child,
    pub addr: SocketAddr,
    stderr: PathBuf,
}

impl Serve {
    pub fn start(dir: &Path, keys: &Path, token_file: &Path, stderr: &Path) -> Serve {
        Serve::start_on(dir, keys, token_file, stderr, "127.0.0.1:0")
    }

    pub fn start_on(dir: &Path, keys: &Path, token_file: &Path, stderr: &Path, listen: &str) -> Serve {
        let log = std::fs::File::create(stderr).expect("serve stderr file");
        let mut child = Command::new(warden_bin())
            .arg("serve")
            .arg("--dir")
            .arg(dir)
            .arg("--listen")
            .arg(listen)
            .arg("--keys")
            .arg(keys)
            .arg("--authority")
            .arg(AUTHORITY)
            .arg("--upload-token-file")
            .arg(token_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", warden_bin().display()));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(20));
        let addr = line.ok().and_then(|l| l.strip_prefix("listening on http://").and_then(|a| a.trim().parse().ok()));
        match addr {
            Some(addr) => Serve { child, addr, stderr: stderr.to_path_buf() },
            None => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "warden serve did not report `listening on http://ADDR` ({status:?}); stderr:\n{}",
                    std::fs::read_to_string(stderr).unwrap_or_default()
                );
            }
        }
    }

    /// What `warden serve` logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// `PUT /bundles/NAME` with the upload token (what `curl -T FILE -H "Authorization: Bearer …"` does):
    /// `(status, JSON body, ETag)`.
    pub fn upload(&self, name: &str, jws: &str, token: &str) -> (u16, Value, Option<String>) {
        let headers = vec![
            (":method".to_string(), "PUT".to_string()),
            (":path".to_string(), format!("/bundles/{name}")),
            (":authority".to_string(), self.addr.to_string()),
            ("authorization".to_string(), format!("Bearer {token}")),
            ("content-type".to_string(), "application/jose".to_string()),
        ];
        let r = self.request(headers, jws.as_bytes());
        let etag = header(&r, "etag");
        (r.status().unwrap_or(0), serde_json::from_slice(&r.body).unwrap_or(Value::Null), etag)
    }

    /// `GET PATH` with an optional `If-None-Match`.
    pub fn get(&self, path: &str, if_none_match: Option<&str>) -> HttpResponse {
        let mut headers = vec![
            (":method".to_string(), "GET".to_string()),
            (":path".to_string(), path.to_string()),
            (":authority".to_string(), CONTROL_AUTHORITY.to_string()),
        ];
        if let Some(tag) = if_none_match {
            headers.push(("if-none-match".to_string(), tag.to_string()));
        }
        self.request(headers, &[])
    }

    /// `GET /healthz` as JSON.
    pub fn health(&self) -> Value {
        serde_json::from_slice(&self.get("/healthz", None).body).unwrap_or(Value::Null)
    }

    fn request(&self, headers: Vec<(String, String)>, body: &[u8]) -> HttpResponse {
        match http_call::request(self.addr, &headers, body) {
            CallResult::Response(r) => r,
            CallResult::Reset => panic!("warden serve reset the connection; stderr:\n{}", self.stderr()),
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn header(r: &HttpResponse, name: &str) -> Option<String> {
    r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
}

// ---------------------------------------------------------------------------------------------------------------
// A scripted control endpoint (ETag / 304, faults)

/// What the server answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with the body and a strong ETag; 304 when `If-None-Match` matches.
    Bundle { body: String, etag: String },
    /// This status and body (no ETag).
    Status(u16, String),
    /// These bytes, then the connection is closed.
    Raw(Vec<u8>),
    /// Waits (real time) before answering.
    Slow(Duration, Box<Reply>),
    /// 200 with `body_len` bytes of `a` streamed in 1 MiB writes (never held in memory whole), framed by
    /// `content-length` when given (which may lie: say more or less than is sent), chunked otherwise; then the
    /// connection is closed.
    Huge { body_len: u64, content_length: Option<u64> },
}

impl Reply {
    /// A signed bundle with an ETag derived from its contents.
    pub fn bundle(signed: &str) -> Reply {
        let etag = format!("\"{}\"", &envelope::sha256_hex(signed.as_bytes())[..16]);
        Reply::Bundle { body: signed.to_string(), etag }
    }

    pub fn body(body: &str) -> Reply {
        Reply::Bundle { body: body.to_string(), etag: "\"fixed\"".to_string() }
    }
}

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub authority: Option<String>,
    pub if_none_match: Option<String>,
}

struct ServerState {
    reply: Reply,
    down: bool,
    seen: Vec<Seen>,
}

/// A loopback HTTP/1.1 server on its own thread. `set_down(true)` closes the listening socket (connections are
/// refused) until `set_down(false)` binds the same port again.
pub struct ControlServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<ServerState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ControlServer {
    pub fn start(reply: Reply) -> ControlServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(ServerState { reply, down: false, seen: Vec::new() }));
        let stop = Arc::new(AtomicBool::new(false));
        let (state2, stop2) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || serve(listener, addr, state2, stop2));
        ControlServer { addr, state, stop, thread: Some(thread) }
    }

    pub fn set(&self, reply: Reply) {
        lock(&self.state).reply = reply;
    }

    pub fn set_down(&self, down: bool) {
        lock(&self.state).down = down;
        std::thread::sleep(Duration::from_millis(30)); // the accept loop notices within a few ms
    }

    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.state).seen.clone()
    }

    pub fn requests(&self) -> usize {
        lock(&self.state).seen.len()
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: TcpListener, addr: SocketAddr, state: Arc<Mutex<ServerState>>, stop: Arc<AtomicBool>) {
    let mut listener = Some(listener);
    while !stop.load(Ordering::SeqCst) {
        let down = lock(&state).down;
        if down {
            listener = None;
        } else if listener.is_none() {
            listener = TcpListener::bind(addr).ok();
        }
        let Some(l) = &listener else {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        let _ = l.set_nonblocking(true);
        match l.accept() {
            Ok((conn, _)) => {
                let state = state.clone();
                std::thread::spawn(move || handle(conn, &state));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

fn handle(conn: TcpStream, state: &Mutex<ServerState>) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split(' ').nth(1).unwrap_or("").to_string();
    let (mut authority, mut inm) = (None, None);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "host" => authority = Some(v.trim().to_string()),
                "if-none-match" => inm = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let reply = {
        let mut s = lock(state);
        s.seen.push(Seen { path, authority, if_none_match: inm.clone() });
        s.reply.clone()
    };
    write_reply(conn, reply, inm.as_deref());
}

fn write_reply(mut conn: TcpStream, reply: Reply, inm: Option<&str>) {
    let bytes = match reply {
        Reply::Slow(d, inner) => {
            std::thread::sleep(d);
            return write_reply(conn, *inner, inm);
        }
        Reply::Raw(b) => b,
        Reply::Huge { body_len, content_length } => return write_huge(conn, body_len, content_length),
        Reply::Bundle { etag, .. } if inm == Some(etag.as_str()) => {
            format!("HTTP/1.1 304 Not Modified\r\netag: {etag}\r\nconnection: close\r\n\r\n").into_bytes()
        }
        Reply::Bundle { body, etag } => format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/jose\r\netag: {etag}\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
        Reply::Status(status, body) => format!(
            "HTTP/1.1 {status} Whatever\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    };
    let _ = conn.write_all(&bytes);
    let _ = conn.flush();
}

fn write_huge(mut conn: TcpStream, body_len: u64, content_length: Option<u64>) {
    let framing = match content_length {
        Some(n) => format!("content-length: {n}"),
        None => "transfer-encoding: chunked".to_string(),
    };
    let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/jose\r\n{framing}\r\nconnection: close\r\n\r\n");
    if conn.write_all(head.as_bytes()).is_err() {
        return;
    }
    let piece = vec![b'a'; 1 << 20];
    let mut left = body_len;
    while left > 0 {
        let n = left.min(piece.len() as u64) as usize;
        let ok = match content_length {
            Some(_) => conn.write_all(&piece[..n]),
            None => conn
                .write_all(format!("{n:x}\r\n").as_bytes())
                .and_then(|()| conn.write_all(&piece[..n]))
                .and_then(|()| conn.write_all(b"\r\n")),
        };
        if ok.is_err() {
            return; // the peer gave up (or refused the body): nothing more to send
        }
        left -= n as u64;
    }
    if content_length.is_none() {
        let _ = conn.write_all(b"0\r\n\r\n");
    }
    let _ = conn.flush();
}

// ---------------------------------------------------------------------------------------------------------------
// The plugin

/// The plugin configuration: the authority pinned, `control` with these fields over cluster and authority (the
/// path is the filter's default, [`CONTROL_PATH`]), optionally an inline bundle.
pub fn config(control: Value, inline: Option<&str>) -> Value {
    let mut c = json!({"cluster": CLUSTER, "authority": CONTROL_AUTHORITY});
    for (k, v) in control.as_object().expect("object") {
        c[k] = v.clone();
    }
    let mut cfg = json!({
        "environment": "prod",
        "authority": AUTHORITY,
        "bundle_keys": authority_jwks(),
        "control": c,
        "log_decisions": false,
    });
    if let Some(b) = inline {
        cfg["inline_bundle"] = json!(b);
    }
    cfg
}

/// `warden.wasm` with `workers` VMs, a manual clock at [`t0`], and the control cluster mapped to `control`.
pub fn start(config: &Value, workers: usize, control: SocketAddr) -> Plugin {
    let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(t0() as u64));
    start_with(PluginConfig::new(config.to_string()).workers(workers).clock(clock).cluster(CLUSTER, control))
}

/// Starts `warden.wasm` with this host configuration (panics with the plugin's logs when it refuses to start).
pub fn start_with(pc: PluginConfig) -> Plugin {
    Plugin::start(&warden_module(), pc).unwrap_or_else(|e| panic!("plugin did not start: {e}; logs: {:#?}", e.logs()))
}

/// Host time in seconds.
pub fn now(p: &Plugin) -> i64 {
    (p.clock().now_nanos() / 1_000_000_000) as i64
}

/// Moves the host clock one second at a time (ticks fire on every VM); after each second the host delivers the
/// answers of the real server (waiting up to 5 s of real time for calls in flight) before the next one.
pub fn step(p: &mut Plugin, seconds: u64) {
    for _ in 0..seconds {
        p.advance(Duration::from_secs(1));
        assert!(p.settle(Duration::from_secs(5)), "an http call to the control endpoint did not finish in 5 s");
    }
}

/// Like [`step`], but a fetch still in flight after `wait` (a slow endpoint) is left pending.
pub fn step_waiting(p: &mut Plugin, seconds: u64, wait: Duration) {
    for _ in 0..seconds {
        p.advance(Duration::from_secs(1));
        p.settle(wait);
    }
}

/// [`step_waiting`] up to 3 s a second.
pub fn step1(p: &mut Plugin, seconds: u64) {
    step_waiting(p, seconds, Duration::from_secs(3));
}

/// Log lines (all VMs) containing `needle`.
pub fn count_logs(p: &Plugin, needle: &str) -> usize {
    p.logs().iter().filter(|l| l.message.contains(needle)).count()
}

/// Fetches the fleet made so far, whatever their outcome (the filter's fetch counters).
pub fn fetches(p: &Plugin) -> i64 {
    let causes = [
        "http_status",
        "connect",
        "timeout",
        "reset",
        "signature",
        "rollback",
        "expired",
        "invalid",
        "unknown_key",
        "revision_jump",
    ];
    metric(p, "warden.bundle.fetch.success")
        + metric(p, "warden.bundle.fetch.not_modified")
        + metric(p, "warden.bundle.fetch.failure.malformed")
        + causes.iter().map(|c| metric(p, &format!("warden.bundle.fetch.failure.{c}"))).sum::<i64>()
}

/// Failed fetches of any cause.
pub fn failures(p: &Plugin) -> i64 {
    fetches(p) - metric(p, "warden.bundle.fetch.success") - metric(p, "warden.bundle.fetch.not_modified")
}

fn send(p: &mut Plugin, worker: usize, req: HttpRequest) -> Exchange {
    let mut up = CannedUpstream(UpstreamResponse::ok("tool says hi"));
    p.send(worker, req, &mut up)
}

/// What a worker answers to a request without a token: `(status, reason, revision)`. 401 with the revision when a
/// bundle is active; 503 with the reason otherwise.
pub fn state(p: &mut Plugin, worker: usize) -> (u16, String, Option<u64>) {
    let x = send(p, worker, HttpRequest::new("GET", "/contacts/1").authority(CRM));
    let body: Value = serde_json::from_slice(&x.body).unwrap_or(Value::Null);
    (x.status.unwrap_or(0), body["reason"].as_str().unwrap_or("").to_string(), body["revision"].as_u64())
}

/// The revision every worker enforces (None where a worker has none).
pub fn revisions(p: &mut Plugin) -> Vec<Option<u64>> {
    (0..p.worker_count()).map(|w| state(p, w).2).collect()
}

/// The support bot reads a contact on `worker`: `(status, reason)`, `(200, "allowed")` when forwarded.
pub fn read(p: &mut Plugin, worker: usize) -> (u16, String) {
    decide(p, worker, "GET")
}

/// The support bot updates a contact (denied by every good bundle).
pub fn write(p: &mut Plugin, worker: usize) -> (u16, String) {
    decide(p, worker, "PATCH")
}

fn decide(p: &mut Plugin, worker: usize, method: &str) -> (u16, String) {
    let t = token(BOT, now(p));
    let x = send(
        p,
        worker,
        HttpRequest::new(method, "/contacts/1").authority(CRM).header("authorization", &format!("Bearer {t}")),
    );
    let status = x.status.unwrap_or(0);
    if status == 200 && !x.is_local_reply() {
        return (200, "allowed".into());
    }
    let body: Value = serde_json::from_slice(&x.body).unwrap_or(Value::Null);
    (status, body["reason"].as_str().unwrap_or("").to_string())
}

pub fn allowed(x: &(u16, String)) -> bool {
    x.0 == 200 && x.1 == "allowed"
}

pub fn denied_by_rule(x: &(u16, String)) -> bool {
    x.0 == 403 && x.1 == "denied_by_rule"
}

pub fn metric(p: &Plugin, name: &str) -> i64 {
    p.metric(name).unwrap_or_else(|| panic!("metric {name} is not defined"))
}
