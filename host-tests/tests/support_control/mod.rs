//! Support for `e2e_control.rs` and `e2e_nginx.rs`: a test world (authority key and its files, token issuer key,
//! bundles by revision), `warden serve` as a real child process on loopback (with upload and fetch helpers over
//! HTTP), `warden.wasm` started in the host with a manual clock, and helpers that read which revision each worker
//! VM enforces.
//!
//! `warden serve` and `warden sign` check validity windows against the system clock, so the host clock starts at
//! the real time of the test process ([`t0`]) and bundles are valid from an hour before it for a week. Keys are
//! generated per test process; nothing here is a secret.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use warden_core::envelope::{self, SigningKey};
use warden_host::http_call::{self, CallResult};
use warden_host::{
    CannedUpstream, Clock, CompiledModule, Exchange, HttpRequest, HttpResponse, Plugin, PluginConfig, UpstreamResponse,
};

pub const AUTHORITY: &str = "policy.acme.example";
pub const CRM: &str = "crm.acme.example";
pub const ISS: &str = "https://spire.acme.example";
pub const BOT: &str = "spiffe://acme.example/agents/support/bot-1";
pub const CLUSTER: &str = "warden-control";
pub const CONTROL_AUTHORITY: &str = "control.acme.example";
/// The filter's default `control.path` (the configurations below do not set it).
pub const CONTROL_PATH: &str = "/bundles/bundle.jws";
pub const UPLOAD_TOKEN: &str = "e2e-upload-token-0123456789abcdef";

/// Host clock at plugin start, seconds since the epoch: the real time when first asked (see the module docs).
pub fn t0() -> i64 {
    static T0: OnceLock<i64> = OnceLock::new();
    *T0.get_or_init(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0))
}

// ---------------------------------------------------------------------------------------------------------------
// Binaries

/// `warden.wasm`: `WARDEN_WASM`, else the workspace's `target/wasm32-wasip1/wasm/warden.wasm`.
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

/// The `warden` CLI: `WARDEN_BIN`, else `<target dir>/debug/warden` (`CARGO_TARGET_DIR`, else the workspace's
/// `target/`). `cargo test --workspace --all-targets` builds it before any test runs.
pub fn warden_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WARDEN_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "WARDEN_BIN={} does not exist", p.display());
        return p;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|t| !t.is_empty()) {
        Some(t) => workspace.join(t), // an absolute CARGO_TARGET_DIR replaces the workspace prefix
        None => workspace.join("target"),
    };
    let bin = target.join("debug").join(format!("warden{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "the `warden` CLI is not built ({} is missing): run `cargo build -p warden-cli` (with the same \
         CARGO_TARGET_DIR as the tests), or set WARDEN_BIN to its path",
        bin.display()
    );
    bin
}

// ---------------------------------------------------------------------------------------------------------------
// A temporary directory

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "warden-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, then a rename over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).unwrap_or_else(|e| panic!("{}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
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
        let issuer = SigningKey::generate(envelope::Algorithm::EdDSA, "issuer-ctl").expect("issuer key");
        let d = issuer.private_jwk()["d"].as_str().expect("d").to_string();
        let seed = URL_SAFE_NO_PAD.decode(d).expect("base64url");
        // PKCS#8 v1 (RFC 8410) wrapping of the Ed25519 seed, which jsonwebtoken reads.
        let mut der =
            vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        der.extend_from_slice(&seed);
        World {
            authority: SigningKey::generate(envelope::Algorithm::EdDSA, "authority-ctl").expect("authority key"),
            issuer_kid: "issuer-ctl".into(),
            issuer_encoding: EncodingKey::from_ed_der(&der),
            issuer_public: issuer.public_jwk(),
        }
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
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(world().issuer_kid.clone());
    jsonwebtoken::encode(&header, &claims, &world().issuer_encoding).expect("token")
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
        Serve::start(
            &self.bundles(),
            &self.dir.join("authority.jwks.json"),
            &self.dir.join("upload.token"),
            &self.dir.join("serve.stderr"),
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
        let log = std::fs::File::create(stderr).expect("serve stderr file");
        let mut child = Command::new(warden_bin())
            .arg("serve")
            .arg("--dir")
            .arg(dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
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
// The plugin

/// The plugin configuration: the authority pinned, `control` with these fields over cluster and authority (the
/// path is the filter's default, [`CONTROL_PATH`]), no inline bundle.
pub fn config(control: Value) -> Value {
    let mut c = json!({"cluster": CLUSTER, "authority": CONTROL_AUTHORITY});
    for (k, v) in control.as_object().expect("object") {
        c[k] = v.clone();
    }
    json!({
        "environment": "prod",
        "authority": AUTHORITY,
        "bundle_keys": authority_jwks(),
        "control": c,
        "log_decisions": false,
    })
}

/// `warden.wasm` with `workers` VMs, a manual clock at [`t0`], and the control cluster mapped to `control`.
pub fn start(config: &Value, workers: usize, control: SocketAddr) -> Plugin {
    let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(t0() as u64));
    let pc = PluginConfig::new(config.to_string()).workers(workers).clock(clock).cluster(CLUSTER, control);
    Plugin::start(&module(), pc).unwrap_or_else(|e| panic!("plugin did not start: {e}; logs: {:#?}", e.logs()))
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

/// Fetches the fleet made so far, whatever their outcome (the filter's fetch counters).
pub fn fetches(p: &Plugin) -> i64 {
    let causes =
        ["http_status", "connect", "timeout", "reset", "signature", "rollback", "expired", "invalid", "unknown_key"];
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
