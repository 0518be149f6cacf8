//! `warden.wasm` in the host (`warden-host`): finding and compiling the module once, the plugin configuration with
//! an inline signed bundle, starting N worker VMs on a manual clock at [`NOW`], and the requests of the benches.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;
use warden_host::{
    CannedUpstream, Clock, CompiledModule, Exchange, HttpRequest, Plugin, PluginConfig, StartError, UpstreamResponse,
};

use crate::tokens::{Keys, AUTHORITY};
use crate::{target_dir, NOW};

/// The command that builds `warden.wasm`.
pub const BUILD: &str = "cargo build -p warden-filter --target wasm32-wasip1 --profile wasm";

/// Where `warden.wasm` is: `WARDEN_WASM`, else `<target>/wasm32-wasip1/wasm/warden.wasm`.
pub fn wasm_path() -> PathBuf {
    match std::env::var_os("WARDEN_WASM") {
        Some(p) => PathBuf::from(p),
        None => target_dir().join("wasm32-wasip1/wasm/warden.wasm"),
    }
}

/// The compiled module (once per process). Panics with the build command when the file is missing.
pub fn module() -> CompiledModule {
    let path = wasm_path();
    assert!(
        path.exists(),
        "warden.wasm not built: {} is missing.\nBuild it first, from the workspace root:\n  {BUILD}\n\
         (or set WARDEN_WASM to another file)",
        path.display()
    );
    CompiledModule::load_cached(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The host's conformance fixture (`host-tests/fixtures/test-filter`): with no `x-ops` header it lets a request
/// through doing nothing, which makes it the floor of one request through this host. `None` when it is not built
/// (`cargo build -p warden-test-filter --target wasm32-wasip1 --profile wasm`).
pub fn floor_module() -> Option<CompiledModule> {
    let path = target_dir().join("wasm32-wasip1/wasm/test_filter.wasm");
    if !path.exists() {
        println!("{} is not built: the host floor is not measured", path.display());
        return None;
    }
    Some(CompiledModule::load_cached(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// The command that builds the token probe (`benches/probe`).
pub const PROBE_BUILD: &str = "cargo build -p warden-bench-probe --target wasm32-wasip1 --profile wasm";

/// The token probe (`bench_probe.wasm`, built like `warden.wasm`; `WARDEN_BENCH_PROBE_WASM` names another file,
/// e.g. one built with `CARGO_PROFILE_WASM_STRIP=false` for `perf`): the bare signature checks, `identity::verify`
/// and a `TokenCache` hit looped inside wasm. Panics with the build command when it is missing, so the in-wasm token
/// figures cannot silently drop out of a run.
pub fn probe_module() -> CompiledModule {
    let path = match std::env::var_os("WARDEN_BENCH_PROBE_WASM") {
        Some(p) => PathBuf::from(p),
        None => target_dir().join("wasm32-wasip1/wasm/bench_probe.wasm"),
    };
    assert!(path.exists(), "{} is missing.\nBuild it first, from the workspace root:\n  {PROBE_BUILD}", path.display());
    CompiledModule::load_cached(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Starts the token probe on one VM with this authored bundle (issuers included) and one token per algorithm.
pub fn start_probe(bundle: &serde_json::Value, tokens: &[(&str, &str)]) -> Plugin {
    let tokens: serde_json::Map<String, serde_json::Value> =
        tokens.iter().map(|(alg, t)| (alg.to_string(), json!(t))).collect();
    let config = json!({"bundle": bundle, "now": NOW, "tokens": tokens}).to_string();
    let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(NOW as u64));
    match Plugin::start(&probe_module(), PluginConfig::new(config).workers(1).clock(clock)) {
        Ok(p) => p,
        Err(e) => panic!("the token probe did not start: {e}\nlogs: {:#?}", e.logs()),
    }
}

/// Runs `op` `iterations` times on `alg`'s token inside the probe: how many succeeded (panics on a refusal, with
/// the probe's reason).
pub fn probe(plugin: &mut Plugin, op: &str, alg: &str, iterations: u64) -> u64 {
    let req =
        HttpRequest::new("GET", "/probe").authority("probe").header("x-probe", &format!("{op} {alg} {iterations}"));
    let x = send(plugin, req, &mut upstream());
    match (x.status, x.header("x-probe-ok").map(str::parse::<u64>)) {
        (Some(200), Some(Ok(n))) => n,
        _ => panic!("probe {op} {alg} {iterations}: {:?} {}", x.status, x.body_str()),
    }
}

/// The size of `warden.wasm` in bytes.
pub fn wasm_size() -> u64 {
    let path = wasm_path();
    match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) => panic!("{}: {e}\nBuild it first:\n  {BUILD}", path.display()),
    }
}

/// The plugin configuration: environment `prod`, the bench authority pinned, this signed bundle inline.
pub fn config(signed_bundle: &str) -> Vec<u8> {
    json!({
        "environment": "prod",
        "authority": AUTHORITY,
        "bundle_keys": {"keys": [Keys::get().authority.public_jwk()]},
        "inline_bundle": signed_bundle,
    })
    .to_string()
    .into_bytes()
}

/// Starts the plugin on `workers` VMs with this configuration, on a manual clock at [`NOW`].
pub fn try_start(config: &[u8], workers: usize) -> Result<Plugin, StartError> {
    let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(NOW as u64));
    Plugin::start(&module(), PluginConfig::new(config.to_vec()).workers(workers).clock(clock))
}

/// [`try_start`], panicking with the filter's logs on failure.
pub fn start(config: &[u8], workers: usize) -> Plugin {
    match try_start(config, workers) {
        Ok(p) => p,
        Err(e) => panic!("warden.wasm did not start: {e}\nlogs: {:#?}", e.logs()),
    }
}

/// Signs an authored bundle (JSON) with the bench keys and starts it.
pub fn start_bundle(bundle: &serde_json::Value, workers: usize) -> Plugin {
    start(&config(&Keys::get().sign_bundle(bundle)), workers)
}

/// A headers-only request, with `authorization: Bearer <token>` when a token is given.
pub fn request(method: &str, host: &str, path: &str, token: Option<&str>) -> HttpRequest {
    let r = HttpRequest::new(method, path).authority(host);
    match token {
        Some(t) => r.header("authorization", &format!("Bearer {t}")),
        None => r,
    }
}

/// The upstream of every bench: a canned 200.
pub fn upstream() -> CannedUpstream {
    CannedUpstream(UpstreamResponse::ok("ok"))
}

/// Sends on the next worker (round robin) and drops the captured log lines, so the host's log buffer does not
/// grow across iterations (the filter still writes its decision record at info on every request).
pub fn send(plugin: &mut Plugin, req: HttpRequest, up: &mut CannedUpstream) -> Exchange {
    let x = plugin.send_round_robin(req, up);
    plugin.take_logs();
    x
}

/// The status and the reply's `reason` (empty when the request went through).
pub fn status_reason(x: &Exchange) -> (Option<u16>, String) {
    let reason = if x.is_local_reply() {
        serde_json::from_slice::<serde_json::Value>(&x.body)
            .ok()
            .and_then(|v| v["reason"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("<no JSON reason: {}>", x.body_str()))
    } else {
        String::new()
    };
    (x.status, reason)
}
