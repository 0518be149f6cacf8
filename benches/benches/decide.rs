//! `decide` on generated bundles of 10, 100, 1 000 and 10 000 rules: the cost must stay flat as bundles grow.
//!
//! Run: `cargo bench -p warden-benches --bench decide` (about a minute; figures in benches/README.md).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use warden_benches::{generate, scenarios, NOW, SIZES};
use warden_core::compile::compile;
use warden_core::decide::decide;

fn bench_decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    for size in SIZES {
        let compiled = match compile(&generate(size)) {
            Ok(b) => b,
            Err(e) => panic!("generated bundle of {size} rules does not compile:\n{e}"),
        };
        for s in scenarios() {
            let facts = s.facts(&compiled);
            let d = decide(&compiled, &facts, NOW);
            assert_eq!((d.outcome, d.reason.code()), s.expected, "{} at {size}", s.name);
            group.bench_with_input(BenchmarkId::new(s.name, size), &facts, |b, facts| {
                b.iter(|| decide(black_box(&compiled), black_box(facts), black_box(NOW)))
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench_decide
}
criterion_main!(benches);
