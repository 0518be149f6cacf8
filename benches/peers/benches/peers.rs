//! Warden against its peers on the same policy, in one criterion run: `decide`, Cedar's `is_authorized` and regorus
//! (one Rego rule per policy rule, and rules as indexed data) on the generated policy of 10, 100, 1 000 and 10 000
//! allow rules (see `warden_peers`).
//!
//! Before anything is timed, every engine decides every request and must agree with Warden (a disagreement
//! panics, so `cargo test --all-targets`, which runs each bench once, fails). Benchmark ids are
//! `peers/<engine>/<request>/<rules>`, engines `warden` (facts prepared, as the `decide` bench), `warden_facts`
//! (the facts built from the request's strings inside the loop, as the peers' requests are), `cedar`,
//! `rego_rule_per_rule`, `rego_indexed`. `benches/report.py` prints the ratios.
//!
//! Run: `cargo bench --manifest-path benches/peers/Cargo.toml` (about four minutes; `benches/report.py --run` runs
//! it with the main workspace's target directory, so the report reads both).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode};
use warden_bench_fixtures::record_figure;
use warden_core::decide::decide;
use warden_peers::{check_agreement, peer_requests, warden_compiled, Cedar, PeerPolicy, Rego, RegoStyle, PEER_SIZES};

fn timed<T>(what: &str, n: usize, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let v = f();
    let ms = t.elapsed().as_millis() as u64;
    record_figure(&format!("setup_ms/{what}/{n}"), ms, "ms");
    v
}

/// Engines whose cost grows with the rules take milliseconds from 1 000 rules on: flat sampling with fewer samples
/// keeps the run short.
fn configure(group: &mut BenchmarkGroup<'_, WallTime>, engine: &str, n: usize) {
    if n >= 1_000 && matches!(engine, "cedar" | "rego_rule_per_rule") {
        group.sampling_mode(SamplingMode::Flat).sample_size(10);
    } else {
        group.sampling_mode(SamplingMode::Auto).sample_size(50);
    }
}

fn bench_peers(c: &mut Criterion) {
    let mut group = c.benchmark_group("peers");
    for n in PEER_SIZES {
        let p = PeerPolicy::generate(n);
        let warden = timed("warden", n, || warden_compiled(&p));
        let cedar = timed("cedar", n, || Cedar::new(&p));
        let rules = timed("rego_rule_per_rule", n, || Rego::new(&p, RegoStyle::RulePerRule));
        let indexed = timed("rego_indexed", n, || Rego::new(&p, RegoStyle::Indexed));
        check_agreement(&p, &warden, Some(&cedar), &[&rules, &indexed]);

        for r in peer_requests() {
            configure(&mut group, "warden", n);
            let facts = r.facts(&warden);
            group.bench_with_input(BenchmarkId::new(format!("warden/{}", r.name), n), &facts, |b, facts| {
                b.iter(|| decide(black_box(&warden), black_box(facts), black_box(r.now)))
            });
            group.bench_function(BenchmarkId::new(format!("warden_facts/{}", r.name), n), |b| {
                b.iter(|| {
                    let facts = black_box(&r).facts(&warden);
                    decide(black_box(&warden), &facts, r.now)
                })
            });
            configure(&mut group, "cedar", n);
            group.bench_function(BenchmarkId::new(format!("cedar/{}", r.name), n), |b| {
                b.iter(|| cedar.decide(black_box(&r)))
            });
            for rego in [&rules, &indexed] {
                configure(&mut group, rego.style.bench_name(), n);
                group.bench_function(BenchmarkId::new(format!("{}/{}", rego.style.bench_name(), r.name), n), |b| {
                    b.iter(|| rego.decide(black_box(&r)))
                });
            }
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_millis(1500));
    targets = bench_peers
}
criterion_main!(benches);
