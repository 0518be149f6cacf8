//! The revocation bench (issue 16): how long a revocation takes from its upload to its enforcement on every VM of
//! a real Envoy 1.40 (`.venv/bin/envoy`) with 2 workers, the control endpoint (`warden serve`, started here) on
//! loopback. Two modes: `long_poll` (`control.long_poll_wait_seconds: 30`) and `plain` (plain polls at the default
//! `poll_seconds`, 10 s, with the default jitter). Each repetition uploads the next revision (revoking one more agent)
//! through `warden serve`'s authenticated PUT and reads Envoy's `warden.bundle.activations` from the admin
//! endpoint every few milliseconds: the time at which the first VM activated it (the fetching VM) and the time at
//! which every VM that had the previous revision did (the others, woken through their shared queues, or on their
//! tick). Then a request confirms that the answering VM enforces the new revision. Median, p90 and max per mode.
//!
//! ```sh
//! cargo build -p warden-filter --target wasm32-wasip1 --profile wasm && cargo build -p warden-cli
//! cargo bench -p warden-benches --bench revocation                 # 20 long-poll and 10 plain repetitions
//! cargo bench -p warden-benches --bench revocation -- long_poll    # only the modes whose id contains this
//! cargo test  -p warden-benches --bench revocation                 # quick mode (CI): 2 long-poll repetitions
//! ```
//!
//! Knobs: `WARDEN_REVOCATION_BENCH_N` (long-poll repetitions, default 20; plain: half, at least 1). Artifacts are
//! found as the tests find them (`WARDEN_WASM`, `WARDEN_BIN`, `WARDEN_ENVOY`; `warden_host::artifacts`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use warden_core::envelope::{self, Algorithm, SigningKey};
use warden_host::envoy::{Envoy, EnvoyOptions};
use warden_host::http_call::{self, CallResult};
use warden_host::upstream::{RecordingServer, Reply};
use warden_host::{artifacts, HttpRequest};

const AUTHORITY: &str = "policy.bench.example";
const CLUSTER: &str = "warden-control";
const UPLOAD_TOKEN: &str = "bench-upload-token-0123456789abcdef";
const WORKERS: usize = 2;

struct Mode {
    id: &'static str,
    control: Value,
    repetitions: usize,
    /// Each upload comes after a random pause of up to this long, so it lands at a random point of the poll
    /// period (plain polls) or of a long poll's life.
    spread_ms: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench");
    let filters: Vec<&str> = args.iter().filter(|a| !a.starts_with('-')).map(String::as_str).collect();
    let n = std::env::var("WARDEN_REVOCATION_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(20usize);
    let modes = if full {
        vec![
            Mode { id: "long_poll", control: json!({"long_poll_wait_seconds": 30}), repetitions: n, spread_ms: 1000 },
            Mode { id: "plain", control: json!({}), repetitions: (n / 2).max(1), spread_ms: 10_000 },
        ]
    } else {
        vec![Mode { id: "long_poll", control: json!({"long_poll_wait_seconds": 30}), repetitions: 2, spread_ms: 1000 }]
    };
    println!("revocation bench: real Envoy, {WORKERS} workers, warden serve on loopback");
    println!("| mode | n | first VM: median / p90 / max | every VM: median / p90 / max |");
    println!("|---|---|---|---|");
    for mode in modes.iter().filter(|m| filters.is_empty() || filters.iter().any(|f| m.id.contains(f))) {
        let (first, all) = run(mode);
        println!("| `{}` | {} | {} | {} |", mode.id, all.len(), summary(&first), summary(&all));
    }
}

/// `median / p90 / max` in milliseconds.
fn summary(samples: &[Duration]) -> String {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    format!("{:.0} / {:.0} / {:.0} ms", at(0.5), at(0.9), ms[ms.len() - 1])
}

fn run(mode: &Mode) -> (Vec<Duration>, Vec<Duration>) {
    let world = World::new();
    let serve = world.serve();
    world.put(serve.addr, 1);
    let mut control = json!({"cluster": CLUSTER, "authority": "control.bench.example"});
    for (k, v) in mode.control.as_object().into_iter().flatten() {
        control[k] = v.clone();
    }
    let config = json!({"environment": "prod", "authority": AUTHORITY, "bundle_keys": world.jwks(),
                        "control": control, "log_decisions": false});
    let tools = RecordingServer::canned(Reply::ok("from the tool")).expect("tool server");
    let wasm = artifacts::warden_wasm().unwrap_or_else(|e| panic!("{e}"));
    let opts = EnvoyOptions::new(wasm, config.to_string(), tools.addr)
        .cluster(CLUSTER, serve.addr)
        .concurrency(WORKERS)
        .without_access_log();
    let envoy = Envoy::start(&opts).unwrap_or_else(|e| panic!("{e}"));
    let vms = settle(&envoy);
    let (mut first, mut all) = (Vec::new(), Vec::new());
    let mut rng = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(1) as u64 | 1;
    for i in 0..mode.repetitions {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(200 + rng % mode.spread_ms));
        let revision = i as u64 + 2;
        let before = activations(&envoy);
        let uploaded = Instant::now();
        world.put(serve.addr, revision);
        let mut first_at = None;
        let deadline = uploaded + Duration::from_secs(60);
        let every = loop {
            let now = activations(&envoy);
            if now > before && first_at.is_none() {
                first_at = Some(uploaded.elapsed());
            }
            if now >= before + vms {
                break uploaded.elapsed();
            }
            assert!(Instant::now() < deadline, "{}: revision {revision} not active on {vms} VMs within 60 s", mode.id);
            std::thread::sleep(Duration::from_millis(3));
        };
        let answered = enforced_revision(&envoy);
        assert_eq!(answered, Some(revision), "{}: the answering VM enforces revision {revision}", mode.id);
        first.push(first_at.unwrap_or(every));
        all.push(every);
    }
    (first, all)
}

/// Every VM's activation of the first revision: the number of VMs (workers and Envoy's main-thread VMs).
fn settle(envoy: &Envoy) -> i64 {
    let end = Instant::now() + Duration::from_secs(20);
    while activations(envoy) <= WORKERS as i64 {
        assert!(Instant::now() < end, "the first revision was not activated by every worker within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut last = activations(envoy);
    loop {
        std::thread::sleep(Duration::from_millis(1500));
        let now = activations(envoy);
        if now == last {
            return now;
        }
        last = now;
    }
}

fn activations(envoy: &Envoy) -> i64 {
    envoy.warden_stat("warden.bundle.activations")
}

/// The revision named by a refusal (a request without a token is answered 401 with the revision that decided it).
fn enforced_revision(envoy: &Envoy) -> Option<u64> {
    let r = envoy.send(&HttpRequest::new("GET", "/contacts/1").authority("crm.bench.example")).ok()?;
    r.json()["revision"].as_u64()
}

/// The authority key, its files and the bundles.
struct World {
    key: SigningKey,
    dir: PathBuf,
}

impl World {
    fn new() -> World {
        let key = SigningKey::generate(Algorithm::EdDSA, "bench-authority").expect("authority key");
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("warden-revocation-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(dir.join("bundles")).expect("bench dir");
        let world = World { key, dir };
        std::fs::write(world.dir.join("keys.jwks.json"), world.jwks().to_string()).expect("keys");
        std::fs::write(world.dir.join("upload.token"), format!("{UPLOAD_TOKEN}\n")).expect("token");
        world
    }

    fn jwks(&self) -> Value {
        json!({"keys": [self.key.public_jwk()]})
    }

    /// Revision `r`: agents `bot-2` … `bot-r` revoked (revision 1 revokes none).
    fn bundle(&self, revision: u64) -> String {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        let revoked: Vec<String> = (2..=revision).map(|i| format!("spiffe://bench.example/agents/bot-{i}")).collect();
        let bundle = json!({
            "format": "warden.bundle/v1", "revision": revision, "owner": "security@bench.example",
            "issued_at": warden_core::time::format_rfc3339(t - 3600),
            "expires_at": warden_core::time::format_rfc3339(t + 86_400), "authority": AUTHORITY,
            "issuers": [{"id": "bench", "iss": "https://issuer.bench.example", "audiences": ["warden"],
                         "jwks": self.jwks(), "algorithms": ["EdDSA"], "max_token_lifetime_seconds": 900,
                         "profile": "spiffe_jwt_svid", "claims": {"agent_id": "sub"}}],
            "tools": [{"id": "crm.contacts.read", "sensitivity": "read",
                       "http": [{"host": "crm.bench.example", "methods": ["GET"], "path": "/contacts/{id}"}]}],
            "rules": [{"id": "reads", "effect": "allow", "agents": ["spiffe://bench.example/agents/*"],
                       "tools": ["crm.contacts.read"]}],
            "revocations": {"agents": revoked},
            "defaults": {"unknown_tool": "deny"}
        });
        envelope::sign(bundle.to_string().as_bytes(), &self.key)
    }

    /// Uploads revision `r` with `warden serve`'s authenticated PUT.
    fn put(&self, addr: SocketAddr, revision: u64) {
        let headers = vec![
            (":method".to_string(), "PUT".to_string()),
            (":path".to_string(), "/bundles/bundle.jws".to_string()),
            (":authority".to_string(), addr.to_string()),
            ("authorization".to_string(), format!("Bearer {UPLOAD_TOKEN}")),
            ("content-type".to_string(), "application/jose".to_string()),
        ];
        match http_call::request(addr, &headers, self.bundle(revision).as_bytes()) {
            CallResult::Response(r) if matches!(r.status(), Some(200 | 201)) => {}
            CallResult::Response(r) => {
                panic!("upload of revision {revision}: {:?} {}", r.status(), String::from_utf8_lossy(&r.body))
            }
            CallResult::Reset => panic!("upload of revision {revision}: connection reset"),
        }
    }

    fn serve(&self) -> Serve {
        let bin = artifacts::warden_bin().unwrap_or_else(|e| panic!("{e}"));
        Serve::start(&bin, &self.dir)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `warden serve` as a child process, killed on drop.
struct Serve {
    child: Child,
    addr: SocketAddr,
}

impl Serve {
    fn start(bin: &Path, dir: &Path) -> Serve {
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--authority", AUTHORITY])
            .arg("--dir")
            .arg(dir.join("bundles"))
            .arg("--keys")
            .arg(dir.join("keys.jwks.json"))
            .arg("--upload-token-file")
            .arg(dir.join("upload.token"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        // Keep reading (and dropping) what it prints, so its stdout never fills or breaks.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let addr = line.strip_prefix("listening on http://").and_then(|a| a.trim().parse().ok());
        match addr {
            Some(addr) => Serve { child, addr },
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("warden serve did not report `listening on http://ADDR` (got {line:?})");
            }
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
