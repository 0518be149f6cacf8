//! One mode at one worker count: start Envoy (and the upstream Envoy of a proxied mode), check one request, warm
//! up, then measure a window with wrk while reading Envoy's CPU time and counters around it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use warden_benches::host;
use warden_benches::mcp;
use warden_benches::tokens::{claims_at, Alg, Keys};
use warden_core::time::format_rfc3339;
use warden_host::client;
use warden_host::envoy::{DirectResponse, Envoy, EnvoyOptions};

use crate::modes::{native_filters, Chain, Mode, Request, Route, Tokens, TOOLS_LISTED};
use crate::wrk;

/// How long and how hard each mode is driven.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The measured window.
    pub seconds: u64,
    /// A load run before the window (V8 tiers up, caches fill); 0: none.
    pub warmup: u64,
    pub connections: usize,
    /// The quick mode (`cargo test`): every mode once, short, with the access log on to check decision records.
    pub quick: bool,
}

/// What the modes share: keys, the signed bundle valid now, the modules, a scratch directory.
pub struct Ctx {
    pub keys: &'static Keys,
    pub signed_bundle: String,
    pub warden_wasm: PathBuf,
    pub noop_wasm: PathBuf,
    pub dir: PathBuf,
    pub settings: Settings,
    clk_tck: f64,
}

pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The bench's MCP bundle (10 000 generated rules, the MCP server and its refund tool) valid from an hour before
/// `now` for 30 days: Envoy runs on the real clock.
pub fn bundle_at(now: i64) -> Value {
    let mut b = mcp::bundle();
    b["issued_at"] = json!(format_rfc3339(now - 3600));
    b["expires_at"] = json!(format_rfc3339(now + 30 * 86_400));
    b
}

/// The plugin configuration of the benches (`host::config`) with `log_decisions` set: off in the measured modes,
/// as in the shipped `envoy/envoy.yaml` (the record goes to the access log through filter state), on in
/// `warden_allow_logged`.
pub fn warden_config(signed: &str, log_decisions: bool) -> String {
    let mut v: Value = match serde_json::from_slice(&host::config(signed)) {
        Ok(v) => v,
        Err(e) => panic!("bench plugin configuration: {e}"),
    };
    v["log_decisions"] = json!(log_decisions);
    v.to_string()
}

impl Ctx {
    pub fn new(settings: Settings) -> Ctx {
        let now = unix_now();
        let keys = Keys::get();
        let target = warden_benches::target_dir().join("wasm32-wasip1/wasm");
        let noop_wasm = target.join("noop.wasm");
        assert!(
            noop_wasm.exists(),
            "{} is missing.\nBuild it first:\n  cargo build -p warden-bench-noop --target wasm32-wasip1 --profile wasm",
            noop_wasm.display()
        );
        let warden_wasm = host::wasm_path();
        assert!(warden_wasm.exists(), "{} is missing.\nBuild it first:\n  {}", warden_wasm.display(), host::BUILD);
        let dir = std::env::temp_dir().join(format!("warden-envoy-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("{}: {e}", dir.display());
        }
        let clk_tck = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
            .unwrap_or(100.0);
        Ctx { keys, signed_bundle: keys.sign_bundle(&bundle_at(now)), warden_wasm, noop_wasm, dir, settings, clk_tck }
    }

    /// A fresh token (new `jti`) for this request's agent from its algorithm's issuer, valid now.
    pub fn token(&self, r: &Request) -> String {
        self.keys.issuer(r.alg).mint(&claims_at(r.alg, &r.agent, unix_now()))
    }

    /// `n` fresh tokens in a file, one a line.
    fn token_file(&self, r: &Request, n: usize, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        let mut f = match std::fs::File::create(&path) {
            Ok(f) => std::io::BufWriter::new(f),
            Err(e) => panic!("{}: {e}", path.display()),
        };
        let claims_now = unix_now();
        let issuer = self.keys.issuer(r.alg);
        for _ in 0..n {
            if let Err(e) = writeln!(f, "{}", issuer.mint(&claims_at(r.alg, &r.agent, claims_now))) {
                panic!("{}: {e}", path.display());
            }
        }
        if let Err(e) = f.flush() {
            panic!("{}: {e}", path.display());
        }
        path
    }

    /// Envoy's CPU time so far (user + system, all threads), in seconds.
    fn cpu_seconds(&self, pid: u32) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which may contain spaces), from field 3 on: utime is field 14, stime 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / self.clk_tck
    }
}

/// The front Envoy and, for a proxied mode, the upstream Envoy behind it.
pub struct Stack {
    pub front: Envoy,
    /// Kept running as long as the front Envoy.
    _upstream: Option<Envoy>,
}

/// The `upstream` cluster of an Envoy whose route never uses it (`direct_response`).
const UNUSED_UPSTREAM: ([u8; 4], u16) = ([127, 0, 0, 1], 9);

/// Starts the Envoys of `mode` with `workers` worker threads.
pub fn start(mode: &Mode, workers: usize, ctx: &Ctx) -> Stack {
    let request = mode.kind.request(mode.alg);
    let upstream = match mode.route {
        Route::Direct => None,
        Route::Proxied => {
            let (status, content_type, body) = mode.kind.upstream_reply();
            let buffer = json!({
                "name": "envoy.filters.http.buffer",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                                 "max_request_bytes": 1_048_576}
            });
            let mut o = EnvoyOptions::new(&ctx.noop_wasm, "", UNUSED_UPSTREAM.into())
                .http_filters(vec![buffer])
                .without_access_log();
            o.direct_response =
                Some(DirectResponse { status, body, headers: vec![("content-type".into(), content_type.into())] });
            Some(Envoy::start(&o).unwrap_or_else(|e| panic!("the upstream Envoy did not start: {e}")))
        }
    };
    let upstream_addr = upstream.as_ref().map(Envoy::listener).unwrap_or_else(|| UNUSED_UPSTREAM.into());
    let (wasm, config) = match mode.chain {
        Chain::Warden { log_decisions, .. } => (&ctx.warden_wasm, warden_config(&ctx.signed_bundle, log_decisions)),
        _ => (&ctx.noop_wasm, String::new()),
    };
    let mut o = EnvoyOptions::new(wasm, config, upstream_addr).concurrency(workers);
    if let Chain::Warden { hold, .. } = mode.chain {
        o = o.allow_on_headers_stop_iteration(hold);
    }
    match mode.chain {
        Chain::Bare => o = o.http_filters(Vec::new()),
        Chain::Native { cache } => {
            let issuer = ctx.keys.issuer(Alg::EdDSA);
            o = o.http_filters(native_filters(&Alg::EdDSA.iss(), &issuer.public, &request, cache));
        }
        Chain::Floor | Chain::Warden { .. } => {}
    }
    if mode.route == Route::Direct {
        o = o.direct_response(200, "ok");
    }
    if !ctx.settings.quick {
        o = o.without_access_log();
    }
    let front = Envoy::start(&o).unwrap_or_else(|e| panic!("{}: Envoy did not start: {e}", mode.id));
    Stack { front, _upstream: upstream }
}

/// The counters a window is checked with: Envoy's downstream request counts and the filter's decisions.
#[derive(Clone, Debug, Default)]
struct Counters {
    total: i64,
    classes: [i64; 5],
    decision: i64,
    reason: i64,
}

fn counters(envoy: &Envoy, mode: &Mode) -> Counters {
    let s = envoy.stats("http.warden.downstream_rq_").unwrap_or_else(|e| panic!("{}: {e}", mode.id));
    let get = |k: &str| s.get(&format!("http.warden.downstream_rq_{k}")).copied().unwrap_or(0);
    let mut c = Counters {
        total: get("total"),
        classes: [get("1xx"), get("2xx"), get("3xx"), get("4xx"), get("5xx")],
        ..Counters::default()
    };
    if let Some((decision, reason)) = mode.expect.decision {
        let w = envoy.warden_stats().unwrap_or_else(|e| panic!("{}: {e}", mode.id));
        c.decision = w.get(&format!("warden.decisions.{decision}")).copied().unwrap_or(0);
        c.reason = w.get(&format!("warden.reasons.{reason}")).copied().unwrap_or(0);
    }
    c
}

/// Checks one request of the mode end to end: status, the `tools/list` rewrite, the filter's decision (its
/// counters, and in the quick mode the decision record in the access log).
pub fn check_one(mode: &Mode, stack: &mut Stack, ctx: &Ctx) {
    let request = mode.kind.request(mode.alg);
    let before = counters(&stack.front, mode);
    let r = client::send(stack.front.listener(), &request.http(&ctx.token(&request)))
        .unwrap_or_else(|e| panic!("{}: {e}", mode.id));
    assert_eq!(r.status, mode.expect.status, "{}: {}", mode.id, r.body_str());
    if mode.expect.tools_filtered {
        let v = r.json();
        let names: Vec<&str> =
            v["result"]["tools"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str()).collect();
        assert_eq!(names, ["refund"], "{}: tools/list not filtered from {TOOLS_LISTED:?}: {v}", mode.id);
    }
    if let Some((decision, reason)) = mode.expect.decision {
        if mode.expect.status >= 400 {
            let v = r.json();
            assert_eq!(v["reason"], reason, "{}: {v}", mode.id);
        }
        let after = wait_counted(&stack.front, mode, &before);
        assert_eq!(after.decision - before.decision, 1, "{}: warden.decisions.{decision}", mode.id);
        assert_eq!(after.reason - before.reason, 1, "{}: warden.reasons.{reason}", mode.id);
        if ctx.settings.quick {
            let lines = stack.front.new_access_log(1);
            let record = lines.last().and_then(|l| l.record.clone());
            let Some(record) = record else { panic!("{}: no decision record in the access log: {lines:?}", mode.id) };
            assert_eq!(record["decision"], decision, "{}: {record}", mode.id);
            assert_eq!(record["reason"], reason, "{}: {record}", mode.id);
        }
    }
}

/// The counters once Envoy has no active downstream request (`downstream_rq_active` 0; at most 5 s).
fn quiet_counters(envoy: &Envoy, mode: &Mode) -> Counters {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let active = envoy
            .stats("http.warden.downstream_rq_active")
            .unwrap_or_else(|e| panic!("{}: {e}", mode.id))
            .get("http.warden.downstream_rq_active")
            .copied()
            .unwrap_or(0);
        if active == 0 || std::time::Instant::now() >= end {
            return counters(envoy, mode);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The counters once the filter's decision of the last request shows (Envoy's stats are read through its admin).
fn wait_counted(envoy: &Envoy, mode: &Mode, before: &Counters) -> Counters {
    let end = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let c = counters(envoy, mode);
        if c.decision > before.decision || std::time::Instant::now() >= end {
            return c;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One measured row.
#[derive(Clone, Debug)]
pub struct Row {
    pub mode: &'static str,
    pub workers: usize,
    pub summary: wrk::Summary,
    /// Requests Envoy received in the window (`downstream_rq_total`), the denominator of the CPU figure.
    pub envoy_requests: i64,
    pub cpu_seconds: f64,
    pub load1: f64,
    /// Rotating modes: tokens in the list, and how many requests re-used one (0: every request verified).
    pub token_pool: u64,
    pub tokens_reused: u64,
}

impl Row {
    pub fn cpu_us_per_request(&self) -> f64 {
        if self.envoy_requests > 0 {
            self.cpu_seconds * 1e6 / self.envoy_requests as f64
        } else {
            0.0
        }
    }

    pub fn json(&self) -> Value {
        let s = &self.summary;
        json!({
            "mode": self.mode, "workers": self.workers, "requests": s.requests, "seconds": s.seconds,
            "rps": s.rps(), "p50_us": s.p50_us, "p99_us": s.p99_us, "mean_us": s.mean_us, "max_us": s.max_us,
            "envoy_requests": self.envoy_requests, "cpu_seconds": self.cpu_seconds,
            "cpu_us_per_request": self.cpu_us_per_request(), "load1": self.load1,
            "token_pool": self.token_pool, "tokens_reused": self.tokens_reused,
        })
    }
}

fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// Warms up, then measures one window; every response of the window is checked through Envoy's counters.
pub fn measure(mode: &Mode, workers: usize, stack: &Stack, ctx: &Ctx) -> Row {
    let request = mode.kind.request(mode.alg);
    let token = ctx.token(&request);
    let pid = stack.front.pid().unwrap_or_else(|| panic!("{}: no Envoy process", mode.id));
    let threads = workers.max(1);
    let connections = ctx.settings.connections.max(threads);
    let dir = ctx.dir.join(format!("{}-{workers}", mode.id));
    let _ = std::fs::create_dir_all(&dir);
    fn load<'a>(
        stack: &Stack,
        request: &'a Request,
        token: &'a str,
        token_file: Option<&'a Path>,
        (threads, connections, secs): (usize, usize, u64),
    ) -> wrk::Load<'a> {
        wrk::Load {
            target: stack.front.listener(),
            request,
            token,
            token_file,
            threads,
            connections,
            duration: Duration::from_secs(secs),
        }
    }
    let rotating = mode.tokens == Tokens::Rotating;
    let mut pool = if ctx.settings.quick { 2_000 } else { 5_000 };
    if ctx.settings.warmup > 0 {
        let warm_file = rotating.then(|| ctx.token_file(&request, pool, "warmup.tokens"));
        let warm = wrk::run(
            &load(stack, &request, &token, warm_file.as_deref(), (threads, connections, ctx.settings.warmup)),
            &dir,
        );
        // Enough new tokens for twice the warm-up's rate over the window (the warm-up still has V8 tiering up and,
        // on a busy machine, runs slower): none is sent twice. A window that still re-uses some says so.
        pool = ((warm.rps() * ctx.settings.seconds as f64 * 2.0) as usize).max(pool);
    }
    let token_file = rotating.then(|| ctx.token_file(&request, pool, "measure.tokens"));
    // The warm-up's last requests may still be in Envoy when wrk returns: counted as received before the window
    // and answered in it. Both snapshots wait until no request is active, so the window's counts are exact.
    let before = quiet_counters(&stack.front, mode);
    let perf = perf_record(mode, workers, pid, ctx.settings.seconds);
    let cpu0 = ctx.cpu_seconds(pid);
    let s = wrk::run(
        &load(stack, &request, &token, token_file.as_deref(), (threads, connections, ctx.settings.seconds)),
        &dir,
    );
    let cpu1 = ctx.cpu_seconds(pid);
    if let Some(mut p) = perf {
        let _ = p.wait();
    }
    let load1 = load1();
    let after = quiet_counters(&stack.front, mode);
    check_window(mode, &s, &before, &after);
    Row {
        mode: mode.id,
        workers,
        envoy_requests: after.total - before.total,
        cpu_seconds: cpu1 - cpu0,
        load1,
        token_pool: if rotating { pool as u64 } else { 0 },
        tokens_reused: if rotating { s.generated.saturating_sub(pool as u64) } else { 0 },
        summary: s,
    }
}

/// With `WARDEN_ENVOY_BENCH_PERF=DIR`: `perf record` of the Envoy process for the window, into
/// `DIR/<mode>-<workers>.data` (read with `perf report -i … --sort dso`: Envoy's binary is stripped and V8 writes no
/// perf map, so what it shows is the split between Envoy's own code, the kernel and V8's generated code, which is
/// where the guest runs). Off by default; perf's own sampling costs a little CPU in the window.
fn perf_record(mode: &Mode, workers: usize, pid: u32, seconds: u64) -> Option<std::process::Child> {
    let dir = std::env::var_os("WARDEN_ENVOY_BENCH_PERF")?;
    let out = Path::new(&dir).join(format!("{}-{workers}.data", mode.id));
    let _ = std::fs::create_dir_all(&dir);
    let child = std::process::Command::new("perf")
        .args(["record", "-q", "-F", "499", "-p", &pid.to_string(), "-o"])
        .arg(&out)
        .args(["--", "sleep", &seconds.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match child {
        Ok(c) => Some(c),
        Err(e) => panic!("WARDEN_ENVOY_BENCH_PERF is set but perf does not run: {e}"),
    }
}

/// Every response of the window had the expected status (wrk's count of non-2xx and Envoy's status classes), no
/// socket errors, and for warden every request was decided as expected.
fn check_window(mode: &Mode, s: &wrk::Summary, before: &Counters, after: &Counters) {
    let id = mode.id;
    assert!(s.requests > 0, "{id}: wrk completed no request");
    assert_eq!(s.socket_errors(), 0, "{id}: socket errors (connect/read/write/timeout) in the window: {s:?}");
    let want_non_2xx = if mode.expect.status >= 400 { s.requests } else { 0 };
    assert_eq!(s.non_2xx, want_non_2xx, "{id}: responses with another status than {}: {s:?}", mode.expect.status);
    let class = usize::from(mode.expect.status / 100 - 1);
    for (i, (a, b)) in after.classes.iter().zip(&before.classes).enumerate() {
        let d = a - b;
        if i == class {
            assert!(d >= s.requests as i64, "{id}: Envoy counted {d} {}xx responses, wrk read {}", i + 1, s.requests);
        } else {
            assert_eq!(d, 0, "{id}: Envoy answered {d} requests with {}xx", i + 1);
        }
    }
    if mode.expect.decision.is_some() {
        let (decided, reasons) = (after.decision - before.decision, after.reason - before.reason);
        let answered = after.classes[class] - before.classes[class];
        let received = after.total - before.total;
        assert!(
            decided >= answered && decided <= received,
            "{id}: {decided} decisions as expected for {answered} answered / {received} received requests"
        );
        assert_eq!(reasons, decided, "{id}: every decision with the expected reason");
    }
}
