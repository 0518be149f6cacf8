//! The Envoy benchmark (issue 17): what a request costs in real Envoy 1.40 (`.venv/bin/envoy`, V8), with no
//! filter, a no-op proxy-wasm filter (the wasm floor), Envoy's native `jwt_authn` + `rbac`, and `warden.wasm` in
//! each of its request paths, at 1 and 2 Envoy workers, driven by wrk. Per mode: req/s, p50 / p99 latency, and
//! Envoy's CPU per request (utime + stime of the Envoy process from `/proc/PID/stat` over the measured window,
//! divided by the requests Envoy received in it); then the host calls of one request of each wasm mode, counted
//! in `warden-host`.
//!
//! ```sh
//! cargo bench -p warden-benches --bench envoy              # the full run (part of `cargo bench -p warden-benches`)
//! cargo bench -p warden-benches --bench envoy -- --quick   # 3 s windows after 1 s warm-ups
//! cargo bench -p warden-benches --bench envoy -- warden_allow bare   # only modes whose id contains a filter
//! cargo test  -p warden-benches --bench envoy              # the quick mode of CI: every mode once, checked
//! ```
//!
//! Under `cargo bench` (the harness gets `--bench`) the figures go to `<target>/criterion/warden-envoy.json`
//! (`warden-envoy-partial.json` when filtered), which `benches/report.py` turns into the Envoy tables of
//! `benches/README.md`. Without `--bench` (`cargo test`) every mode runs once for a second (at 1 worker;
//! `warden_allow` at 2 workers too), with every response checked as in the full run and each decision record read
//! from the access log; nothing is written and no figure is judged.
//!
//! Knobs (environment): `WARDEN_ENVOY_BENCH_SECONDS` (window, default 10), `WARDEN_ENVOY_BENCH_WARMUP` (default
//! 3), `WARDEN_ENVOY_BENCH_CONNECTIONS` (default 16), `WARDEN_ENVOY_BENCH_WORKERS` (default `1,2`),
//! `WARDEN_ENVOY_BENCH_PERF=DIR` (`perf record` of Envoy in each window, see `run::perf_record`); `WARDEN_WRK`
//! names the wrk binary, `WARDEN_ENVOY` the Envoy binary.

mod hostcalls;
mod modes;
mod run;
mod wrk;

use std::time::Instant;

use serde_json::{json, Value};

use crate::run::{Ctx, Row, Settings};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn version(cmd: &std::path::Path, arg: &str) -> String {
    std::process::Command::new(cmd)
        .arg(arg)
        .output()
        .map(|o| {
            let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            text.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
        })
        .unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench");
    let short = args.iter().any(|a| a == "--quick");
    let filters: Vec<&str> = args.iter().filter(|a| !a.starts_with('-')).map(String::as_str).collect();
    let all = modes::all();
    let selected: Vec<modes::Mode> = all
        .iter()
        .filter(|m| filters.is_empty() || filters.iter().any(|f| format!("envoy/{}", m.id).contains(f)))
        .cloned()
        .collect();
    if selected.is_empty() {
        println!("envoy bench: no mode matches {filters:?}");
        return;
    }
    let settings = if full {
        Settings {
            seconds: env_u64("WARDEN_ENVOY_BENCH_SECONDS", if short { 3 } else { 10 }),
            warmup: env_u64("WARDEN_ENVOY_BENCH_WARMUP", if short { 1 } else { 3 }),
            connections: env_u64("WARDEN_ENVOY_BENCH_CONNECTIONS", 16) as usize,
            quick: false,
        }
    } else {
        Settings { seconds: 1, warmup: 0, connections: 2, quick: true }
    };
    let workers: Vec<usize> = std::env::var("WARDEN_ENVOY_BENCH_WORKERS")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .filter_map(|w| w.trim().parse().ok())
        .collect();
    // The quick mode runs every mode at the first worker count, and only `warden_allow` at the others.
    let quick_at_more_workers = |m: &modes::Mode| m.id == "warden_allow";
    let wrk_bin = wrk::binary();
    let envoy_bin = warden_host::artifacts::envoy().unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let ctx = Ctx::new(settings.clone());
    println!(
        "envoy bench ({}): {} modes × workers {workers:?}, {} s windows after {} s warm-up, {} connections; {}; {}",
        if full { "full" } else { "quick: every mode once, responses checked, no figure judged" },
        selected.len(),
        settings.seconds,
        settings.warmup,
        settings.connections,
        version(&envoy_bin, "--version"),
        version(&wrk_bin, "--version"),
    );

    let mut rows: Vec<Row> = Vec::new();
    for (i, &w) in workers.iter().enumerate() {
        for mode in selected.iter().filter(|m| full || i == 0 || quick_at_more_workers(m)) {
            let t = Instant::now();
            let mut stack = run::start(mode, w, &ctx);
            run::check_one(mode, &mut stack, &ctx);
            let row = run::measure(mode, w, &stack, &ctx);
            drop(stack);
            let s = &row.summary;
            println!(
                "envoy/{}/{w}: {:>8.0} req/s  p50 {:>7.1} µs  p99 {:>8.1} µs  Envoy CPU {:>6.2} µs/req  \
                 ({} requests{}; load {:.2}; {:.1} s)",
                mode.id,
                s.rps(),
                s.p50_us,
                s.p99_us,
                row.cpu_us_per_request(),
                row.envoy_requests,
                if row.token_pool > 0 {
                    format!(", {} tokens, {} reused", row.token_pool, row.tokens_reused)
                } else {
                    String::new()
                },
                row.load1,
                t.elapsed().as_secs_f64()
            );
            rows.push(row);
        }
    }

    let counts = hostcalls::count(&selected);
    for c in &counts {
        let total: u64 = c.calls.values().sum();
        let list: Vec<String> = c.calls.iter().map(|(k, v)| format!("{}×{v}", k.trim_start_matches("env."))).collect();
        println!("host calls/{}: {total} in {} callbacks: {}", c.mode, c.callbacks, list.join(" "));
    }
    println!("envoy bench: {:.1} s", started.elapsed().as_secs_f64());

    if !full {
        return;
    }
    let mode_info: Vec<Value> = all
        .iter()
        .map(|m| {
            json!({"id": m.id, "label": m.label, "baseline": m.baseline,
                   "request": format!("{} {}{} ({} body bytes)", m.kind.request(m.alg).method,
                       m.kind.request(m.alg).host, m.kind.request(m.alg).path, m.kind.request(m.alg).body.len())})
        })
        .collect();
    let record = json!({
        "started_unix": run::unix_now() - started.elapsed().as_secs() as i64,
        "wall_seconds": started.elapsed().as_secs(),
        "envoy": version(&envoy_bin, "--version"),
        "wrk": version(&wrk_bin, "--version"),
        "settings": {"seconds": settings.seconds, "warmup": settings.warmup, "connections": settings.connections,
                     "threads": "one per Envoy worker", "workers": workers},
        "modes": mode_info,
        "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
        "host_calls": counts.iter().map(|c| (c.mode.to_string(), c.json())).collect::<serde_json::Map<_, _>>(),
    });
    let name = if filters.is_empty() { "warden-envoy.json" } else { "warden-envoy-partial.json" };
    let path = warden_benches::target_dir().join("criterion").join(name);
    let _ = std::fs::create_dir_all(path.parent().unwrap_or(&path));
    match serde_json::to_vec_pretty(&record) {
        Ok(bytes) => {
            if let Err(e) = std::fs::write(&path, bytes) {
                panic!("cannot write {}: {e}", path.display());
            }
            println!("envoy bench: figures in {}", path.display());
        }
        Err(e) => panic!("{e}"),
    }
    let _ = std::fs::remove_dir_all(&ctx.dir);
}
