//! Support for `e2e_polling.rs`: a real loopback HTTP control endpoint with a settable response (ETag / 304,
//! faults), a test world (authority key, token issuer key, bundles by revision), and helpers that read which
//! revision each worker VM enforces.
//!
//! Keys are generated per test process; nothing here is a secret. The host clock is manual, starting at [`T0`].
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use warden_core::envelope::{self, SigningKey};
use warden_host::{
    CannedUpstream, Clock, CompiledModule, Exchange, HttpRequest, Plugin, PluginConfig, UpstreamResponse,
};

/// Host clock at plugin start, seconds since the epoch.
pub const T0: i64 = 1_780_000_000;
pub const AUTHORITY: &str = "policy.acme.example";
pub const CRM: &str = "crm.acme.example";
pub const ISS: &str = "https://spire.acme.example";
pub const BOT: &str = "spiffe://acme.example/agents/support/bot-1";
pub const CLUSTER: &str = "warden-control";
pub const CONTROL_AUTHORITY: &str = "control.acme.example";
pub const CONTROL_PATH: &str = "/bundles/bundle.jws";

// ---------------------------------------------------------------------------------------------------------------
// The module

pub fn module() -> CompiledModule {
    let path = std::env::var_os("WARDEN_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip1/wasm/warden.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p warden-filter --target wasm32-wasip1 --profile wasm` \
         (or set WARDEN_WASM)",
        path.display()
    );
    CompiledModule::load_cached(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------------------------
// Keys, bundles, tokens

pub struct World {
    pub authority: SigningKey,
    pub issuer_kid: String,
    pub issuer_encoding: EncodingKey,
    pub issuer_public: Value,
}

pub fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let issuer = SigningKey::generate(envelope::Algorithm::EdDSA, "issuer-1").expect("issuer key");
        let d = issuer.private_jwk()["d"].as_str().expect("d").to_string();
        let seed = URL_SAFE_NO_PAD.decode(d).expect("base64url");
        // PKCS#8 v1 (RFC 8410) wrapping of the Ed25519 seed, which jsonwebtoken reads.
        let mut der =
            vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        der.extend_from_slice(&seed);
        World {
            authority: SigningKey::generate(envelope::Algorithm::EdDSA, "authority-1").expect("authority key"),
            issuer_kid: "issuer-1".into(),
            issuer_encoding: EncodingKey::from_ed_der(&der),
            issuer_public: issuer.public_jwk(),
        }
    })
}

fn rfc3339(t: i64) -> String {
    warden_core::time::format_rfc3339(t)
}

/// A bundle at `revision`: support agents may read CRM contacts and may not update them.
pub fn bundle(revision: u64) -> Value {
    json!({
        "format": "warden.bundle/v1",
        "revision": revision,
        "issued_at": rfc3339(T0 - 3600),
        "expires_at": rfc3339(T0 + 7 * 86_400),
        "owner": "security@acme.example",
        "authority": AUTHORITY,
        "issuers": [{
            "id": "acme-workload", "iss": ISS, "audiences": ["warden"],
            "jwks": {"keys": [world().issuer_public.clone()]}, "algorithms": ["EdDSA"],
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

pub fn sign(bundle: &Value) -> String {
    envelope::sign(bundle.to_string().as_bytes(), &world().authority)
}

static JTI: AtomicU64 = AtomicU64::new(1);

/// A token for `agent` issued at host time `now`.
pub fn token(agent: &str, now: i64) -> String {
    let claims = json!({"iss": ISS, "sub": agent, "aud": "warden", "iat": now, "exp": now + 300,
                        "jti": format!("jti-{}", JTI.fetch_add(1, Ordering::Relaxed))});
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(world().issuer_kid.clone());
    jsonwebtoken::encode(&header, &claims, &world().issuer_encoding).expect("token")
}

// ---------------------------------------------------------------------------------------------------------------
// The control endpoint

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

// ---------------------------------------------------------------------------------------------------------------
// The plugin

/// The plugin configuration: `control` with these fields over the defaults, optionally an inline bundle.
pub fn config(control: Value, inline: Option<&str>) -> Value {
    let mut c = json!({"cluster": CLUSTER, "authority": CONTROL_AUTHORITY});
    for (k, v) in control.as_object().expect("object") {
        c[k] = v.clone();
    }
    let mut cfg = json!({
        "environment": "prod",
        "authority": AUTHORITY,
        "bundle_keys": {"keys": [world().authority.public_jwk()]},
        "control": c,
        "log_decisions": false,
    });
    if let Some(b) = inline {
        cfg["inline_bundle"] = json!(b);
    }
    cfg
}

pub fn start(config: &Value, workers: usize, control: SocketAddr) -> Plugin {
    let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(T0 as u64));
    let pc = PluginConfig::new(config.to_string()).workers(workers).clock(clock).cluster(CLUSTER, control);
    Plugin::start(&module(), pc).unwrap_or_else(|e| panic!("plugin did not start: {e}; logs: {:#?}", e.logs()))
}

/// Host time in seconds.
pub fn now(p: &Plugin) -> i64 {
    (p.clock().now_nanos() / 1_000_000_000) as i64
}

/// Moves the host clock one second at a time (ticks fire on every VM), letting fetches answer in real time
/// (up to `wait` each) before the next second.
pub fn step(p: &mut Plugin, seconds: u64, wait: Duration) {
    for _ in 0..seconds {
        p.advance(Duration::from_secs(1));
        p.settle(wait);
    }
}

pub fn step1(p: &mut Plugin, seconds: u64) {
    step(p, seconds, Duration::from_secs(3));
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

/// The support bot reads a contact (allowed by every good bundle unless it revokes the bot) on `worker`:
/// `(status, reason)`.
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

/// Log lines (all VMs) containing `needle`.
pub fn count_logs(p: &Plugin, needle: &str) -> usize {
    p.logs().iter().filter(|l| l.message.contains(needle)).count()
}

pub fn metric(p: &Plugin, name: &str) -> i64 {
    p.metric(name).unwrap_or_else(|| panic!("metric {name} is not defined"))
}
