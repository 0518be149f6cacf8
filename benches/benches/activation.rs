//! Bundle activation: a signed bundle of 10 000 rules (the `decide` bench's generator) verified and compiled.
//!
//! - `activation/native_verify_compile/10000`: `envelope::verify` (signature, payload parsed as a bundle, authority,
//!   validity) then `compile::compile`, natively; `native_verify/10000` and `native_compile/10000` split it.
//! - `activation/wasm_start/<rules>`: `Plugin::start` of `warden.wasm` with the signed bundle inline, one VM:
//!   instantiate the module, `on_vm_start`, `on_configure` (which verifies and compiles the bundle inside the VM).
//!   At 10 rules it is mostly instantiation; the difference to 10 000 rules is the bundle's verify + compile in
//!   wasm. Dropping what was built (the plugin, the compiled bundle) is not timed.
//! - figures (not timings): `memory_bytes_after_activation/10000`, the VM's linear memory once the 10 000-rule
//!   bundle is active, and `signed_bundle_bytes/10000`.
//!
//! Run: `cargo bench -p warden-benches --bench activation` (about 40 s). Needs `warden.wasm` (see
//! `warden_benches::host::BUILD`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use warden_benches::host::{config, start, try_start};
use warden_benches::tokens::{Keys, AUTHORITY};
use warden_benches::{generate_json, record_figure, NOW};
use warden_core::compile::compile;
use warden_core::envelope;

const RULES: usize = 10_000;

fn bench_activation(c: &mut Criterion) {
    let keys = Keys::get();
    let trusted = keys.authority.trusted_keys();
    let mut group = c.benchmark_group("activation");
    group.sampling_mode(SamplingMode::Flat).sample_size(20);

    let signed = keys.sign_bundle(&generate_json(RULES));
    record_figure(&format!("signed_bundle_bytes/{RULES}"), signed.len() as u64, "bytes");
    let verified = match envelope::verify(signed.as_bytes(), &trusted, AUTHORITY, &[], NOW) {
        Ok(v) => v,
        Err(e) => panic!("signed bundle refused: {e}"),
    };
    assert_eq!(verified.bundle.rules.len(), RULES);
    if let Err(e) = compile(&verified.bundle) {
        panic!("bundle does not compile: {e}");
    }
    group.bench_function(BenchmarkId::new("native_verify_compile", RULES), |b| {
        b.iter_with_large_drop(|| {
            let v = envelope::verify(black_box(signed.as_bytes()), &trusted, AUTHORITY, &[], NOW);
            v.map(|v| compile(&v.bundle))
        })
    });
    group.bench_function(BenchmarkId::new("native_verify", RULES), |b| {
        b.iter_with_large_drop(|| envelope::verify(black_box(signed.as_bytes()), &trusted, AUTHORITY, &[], NOW))
    });
    group.bench_function(BenchmarkId::new("native_compile", RULES), |b| {
        b.iter_with_large_drop(|| compile(black_box(&verified.bundle)))
    });

    for rules in [10, RULES] {
        let cfg = config(&keys.sign_bundle(&generate_json(rules)));
        let plugin = start(&cfg, 1);
        assert!(plugin.logged(&format!("bundle revision {rules} from")), "no activation logged: {:#?}", plugin.logs());
        if rules == RULES {
            let memory = plugin.worker(0).map(|w| w.memory_bytes()).unwrap_or(0);
            record_figure(&format!("memory_bytes_after_activation/{rules}"), memory as u64, "bytes");
        }
        drop(plugin);
        group.bench_function(BenchmarkId::new("wasm_start", rules), |b| {
            b.iter_with_large_drop(|| match try_start(black_box(&cfg), 1) {
                Ok(p) => p,
                Err(e) => panic!("start: {e}"),
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(4));
    targets = bench_activation
}
criterion_main!(benches);
