//! One request through `warden.wasm` in the host (`warden-host`, wasmtime), the 10 000-rule bundle of the `decide`
//! bench active, on a plugin of 1 and of 4 worker VMs (requests sent round robin from one thread).
//!
//! - `wasm/headers_allow/<vms>`: a headers-only `GET` allowed by the last rule of the bundle, the same EdDSA token
//!   every time, through to the canned upstream and back. A filter with a token cache serves the reused token
//!   from it (compare `same_token` with `fresh_token`); one without verifies it on every request.
//! - `wasm/deny/<vms>`: an agent no rule names: 403 `no_matching_rule`.
//! - `wasm/unauthenticated/<vms>`: no token: 401 `identity_missing`.
//! - `wasm/fresh_token/<alg>`: the allowed request with a token never seen before (a new `jti` each, all of a
//!   sample's tokens minted before its timing starts), per algorithm, one VM; `wasm/same_token/<alg>` the same with
//!   one token reused.
//! - `wasm/host_floor/1`: the same allowed request through the host's do-nothing conformance filter
//!   (`test_filter.wasm`, skipped when it is not built): what the host itself costs per request.
//! - figures: `warden_wasm_bytes`, the size of the module; `memory_bytes_after_requests/<vms>`, worker 0's linear
//!   memory after the run.
//!
//! Each figure includes the host's own work per request (stream set-up, header maps, the upstream, the response
//! path, `on_log`/`on_done`/`on_delete`, dropping captured logs): it is what one request costs here, not the filter
//! alone. Every request is checked for its status and reason before it is timed.
//!
//! Run: `cargo bench -p warden-benches --bench wasm` (about a minute). Needs `warden.wasm` (see
//! `warden_benches::host::BUILD`).

use std::time::{Duration, Instant, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use warden_benches::host::{floor_module, request, send, start, status_reason, upstream, wasm_size};
use warden_benches::tokens::{claims, Alg, Keys};
use warden_benches::{generate_json, record_figure, scenarios, NOW};
use warden_host::{Clock, Plugin, PluginConfig};

const RULES: usize = 10_000;

struct Req {
    method: &'static str,
    host: String,
    path: String,
    agent: String,
}

fn expect(plugin: &mut Plugin, what: &str, req: &Req, token: Option<&str>, want: (u16, &str)) {
    let x = send(plugin, request(req.method, &req.host, &req.path, token), &mut upstream());
    let (status, reason) = status_reason(&x);
    assert_eq!((status, reason.as_str()), (Some(want.0), want.1), "{what}: {}", x.body_str());
}

fn bench_wasm(c: &mut Criterion) {
    record_figure("warden_wasm_bytes", wasm_size(), "bytes");
    let keys = Keys::get();
    let signed = keys.sign_bundle(&generate_json(RULES));
    let cfg = warden_benches::host::config(&signed);
    let pick = |name: &str| match scenarios().into_iter().find(|s| s.name == name) {
        Some(s) => Req { method: s.method, host: s.host, path: s.path, agent: s.agent_id },
        None => panic!("no scenario {name}"),
    };
    let allow = pick("allow_late_rule");
    let deny = pick("deny_no_match");
    let ed = keys.issuer(Alg::EdDSA);
    let allow_token = ed.mint(&claims(Alg::EdDSA, &allow.agent));
    let deny_token = ed.mint(&claims(Alg::EdDSA, &deny.agent));

    let mut group = c.benchmark_group("wasm");
    for vms in [1, 4] {
        let mut plugin = start(&cfg, vms);
        for _ in 0..vms {
            expect(&mut plugin, "allow", &allow, Some(&allow_token), (200, ""));
            expect(&mut plugin, "deny", &deny, Some(&deny_token), (403, "no_matching_rule"));
            expect(&mut plugin, "unauthenticated", &allow, None, (401, "identity_missing"));
        }
        let mut up = upstream();
        group.bench_function(BenchmarkId::new("headers_allow", vms), |b| {
            b.iter(|| send(&mut plugin, request(allow.method, &allow.host, &allow.path, Some(&allow_token)), &mut up))
        });
        group.bench_function(BenchmarkId::new("deny", vms), |b| {
            b.iter(|| send(&mut plugin, request(deny.method, &deny.host, &deny.path, Some(&deny_token)), &mut up))
        });
        group.bench_function(BenchmarkId::new("unauthenticated", vms), |b| {
            b.iter(|| send(&mut plugin, request(allow.method, &allow.host, &allow.path, None), &mut up))
        });
        let memory = plugin.worker(0).map(|w| w.memory_bytes()).unwrap_or(0);
        record_figure(&format!("memory_bytes_after_requests/{vms}"), memory as u64, "bytes");
    }

    if let Some(floor) = floor_module() {
        let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(NOW as u64));
        let mut plugin = match Plugin::start(&floor, PluginConfig::new("{}").clock(clock)) {
            Ok(p) => p,
            Err(e) => panic!("test_filter.wasm did not start: {e}"),
        };
        expect(&mut plugin, "host floor", &allow, Some(&allow_token), (200, ""));
        let mut up = upstream();
        group.bench_function(BenchmarkId::new("host_floor", 1), |b| {
            b.iter(|| send(&mut plugin, request(allow.method, &allow.host, &allow.path, Some(&allow_token)), &mut up))
        });
    }

    let mut plugin = start(&cfg, 1);
    for alg in Alg::ALL {
        let key = keys.issuer(alg);
        let same = key.mint(&claims(alg, &allow.agent));
        expect(&mut plugin, alg.name(), &allow, Some(&same), (200, ""));
        let mut up = upstream();
        group.bench_function(BenchmarkId::new("same_token", alg.name()), |b| {
            b.iter(|| send(&mut plugin, request(allow.method, &allow.host, &allow.path, Some(&same)), &mut up))
        });
        // A sample's tokens are all minted before its timing starts: minting between requests (RSA signing takes
        // milliseconds) would evict the guest's code and data from the CPU caches and time that too.
        group.bench_function(BenchmarkId::new("fresh_token", alg.name()), |b| {
            b.iter_custom(|iterations| {
                let requests: Vec<_> = (0..iterations)
                    .map(|_| {
                        request(allow.method, &allow.host, &allow.path, Some(&key.mint(&claims(alg, &allow.agent))))
                    })
                    .collect();
                let start = Instant::now();
                for req in requests {
                    send(&mut plugin, req, &mut up);
                }
                start.elapsed()
            })
        });
    }
    let x = send(&mut plugin, request(allow.method, &allow.host, &allow.path, Some(&allow_token)), &mut upstream());
    assert_eq!(status_reason(&x), (Some(200), String::new()), "after the token benches");
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = bench_wasm
}
criterion_main!(benches);
