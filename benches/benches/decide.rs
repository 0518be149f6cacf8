//! `decide` on generated bundles of 10, 100, 1 000 and 10 000 rules: the cost must stay flat as bundles grow.
//!
//! `decide/<request>/<rules>` for the four requests of `warden_benches::scenarios` (allowed by the last rule,
//! matching nothing, a revoked agent, a step-up), and `decide/mcp_arguments/<rules>`: the MCP `refund` tool whose two
//! rules (after every generated rule) hold argument conditions (`/amount` in a range, `/currency` one of two), decided
//! with `decide_with_args` on the arguments of the 2 KB `tools/call` of the `mcp` bench (allowed by `refund-small`).
//!
//! Run: `cargo bench -p warden-benches --bench decide` (about a minute; figures in benches/README.md).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use warden_benches::{generate, mcp, scenarios, to_bundle, verified_agent, NOW, SIZES};
use warden_core::compile::compile;
use warden_core::decide::{decide, decide_with_args};
use warden_core::decision::Outcome;
use warden_core::facts::{Facts, Identity};

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
        let compiled = match compile(&to_bundle(mcp::bundle_of(size))) {
            Ok(b) => b,
            Err(e) => panic!("MCP bundle of {size} rules does not compile:\n{e}"),
        };
        let facts = Facts {
            environment: "prod".to_string(),
            identity: Identity::Verified(verified_agent(mcp::AGENT, "customer-refund", NOW + 900)),
            tool: compiled.tool_by_id(mcp::TOOL_ID),
        };
        let arguments = mcp::refund_arguments(40);
        let d = decide_with_args(&compiled, &facts, Some(&arguments), NOW);
        assert_eq!((d.outcome, d.reason.code(), d.rule_id()), (Outcome::Allow, "allowed_by_rule", "refund-small"));
        let over = mcp::refund_arguments(400);
        let d = decide_with_args(&compiled, &facts, Some(&over), NOW);
        assert_eq!((d.outcome, d.rule_id()), (Outcome::StepUp, "refund-large"), "400 is over refund-small's limit");
        group.bench_with_input(BenchmarkId::new("mcp_arguments", size), &facts, |b, facts| {
            b.iter(|| decide_with_args(black_box(&compiled), black_box(facts), Some(black_box(&arguments)), NOW))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench_decide
}
criterion_main!(benches);
