//! Agent token verification, natively, per algorithm (EdDSA, ES256, RS256 2048):
//!
//! - `tokens/verify/<alg>`: `warden_core::identity::verify` of a valid token (structure, issuer, header, signature,
//!   claims) against the bundle's compiled issuers;
//! - `tokens/jsonwebtoken_crypto/<alg>`: the signature step alone as `identity::verify` runs it,
//!   `jsonwebtoken::crypto::verify` with a `DecodingKey` made once from the JWK (base64 decoding of the signature
//!   and the key's parsing happen inside, per call);
//! - `tokens/bare_signature/<alg>`: the floor, the signature crate's own verify of the same signing input and
//!   signature with the public key parsed once;
//! - `tokens/cache_hit/<alg>`: `token_cache::TokenCache::verify` of a token already in the cache (the claims, times,
//!   audience are checked again, the signature is not).
//!
//! The same steps inside wasm, looped in the token probe (`benches/probe`, `bench_probe.wasm`, built with the
//! `wasm` profile like `warden.wasm`) on one VM of the host, one request per criterion sample (`iter_custom`: the
//! request's own cost, ≈ 3 µs, is spread over the sample's iterations):
//!
//! - `tokens/wasm_bare/<alg>`: the bare signature check in wasm, the floor of issue 8's margin;
//! - `tokens/wasm_bare_strict/EdDSA`: the same with `verify_strict` (what the extra checks would cost there);
//! - `tokens/wasm_verify/<alg>`: `identity::verify` in wasm, the core's whole cold verification;
//! - `tokens/wasm_cache_hit/<alg>`: a `TokenCache` hit in wasm (every lookup checked to be a hit).
//!
//! Each algorithm's verify / bare in wasm is also measured back to back in rounds (figure
//! `wasm_verify_over_bare_ppm/<alg>`), so a noisy minute during one of the two criterion timings shows.
//!
//! The filter's own cold path (a token never seen, through the cache, in a whole request) is `wasm/fresh_token/*` in
//! the `wasm` bench. `benches/report.py` prints verify / bare per algorithm, natively and in wasm (the margin
//! is 10 %). Run: `cargo bench -p warden-benches --bench tokens` (about a minute). Needs `bench_probe.wasm`
//! (`warden_benches::host::PROBE_BUILD`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::DecodingKey;
use warden_benches::host::{probe, start_probe};
use warden_benches::tokens::{claims, split_jws, Alg, Keys};
use warden_benches::{generate_json, NOW};
use warden_core::compile::compile;
use warden_core::identity::{self, IssuerSet};
use warden_core::token_cache::TokenCache;

const AGENT: &str = "spiffe://bench.example/agents/late-team/eu/bot-1";

fn bench_tokens(c: &mut Criterion) {
    let keys = Keys::get();
    let issuers = match IssuerSet::compile(&keys.bundle_issuers()) {
        Ok(s) => s,
        Err(e) => panic!("bench issuers do not compile: {e:?}"),
    };
    let bundle = match compile(&keys.with_keys(&generate_json(10))) {
        Ok(b) => b,
        Err(e) => panic!("bench bundle does not compile: {e}"),
    };
    let mut group = c.benchmark_group("tokens");
    for alg in Alg::ALL {
        let key = keys.issuer(alg);
        let token = key.mint(&claims(alg, AGENT));
        let agent = match identity::verify(&issuers, &token, NOW) {
            Ok(a) => a,
            Err(e) => panic!("{} token refused: {e:?}", alg.name()),
        };
        assert_eq!(agent.id, AGENT);
        assert_eq!(agent.task.as_ref().and_then(|t| t.purpose.as_deref()), Some("customer-refund"));
        let (input, signature) = split_jws(&token);
        assert!(key.bare_verify(input, &signature), "{}: bare check refuses the token", alg.name());
        let jwk: Jwk = serde_json::from_value(key.public.clone()).unwrap_or_else(|e| panic!("JWK: {e}"));
        let decoding = DecodingKey::from_jwk(&jwk).unwrap_or_else(|e| panic!("DecodingKey: {e}"));
        let sig_b64 = &token[input.len() + 1..];
        let jwt_alg = match alg {
            Alg::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Alg::ES256 => jsonwebtoken::Algorithm::ES256,
            Alg::RS256 => jsonwebtoken::Algorithm::RS256,
        };
        assert!(matches!(jsonwebtoken::crypto::verify(sig_b64, input, &decoding, jwt_alg), Ok(true)));

        group.bench_function(BenchmarkId::new("verify", alg.name()), |b| {
            b.iter(|| identity::verify(black_box(&issuers), black_box(&token), black_box(NOW)))
        });
        group.bench_function(BenchmarkId::new("jsonwebtoken_crypto", alg.name()), |b| {
            b.iter(|| jsonwebtoken::crypto::verify(black_box(sig_b64), black_box(input), &decoding, jwt_alg))
        });
        group.bench_function(BenchmarkId::new("bare_signature", alg.name()), |b| {
            b.iter(|| key.bare_verify(black_box(input), black_box(&signature)))
        });
        let mut cache = TokenCache::default();
        for _ in 0..2 {
            let hit = cache.verify(&bundle, &token, None, NOW).map(|a| a.id);
            assert_eq!(hit.as_deref(), Ok(AGENT), "{} through the cache", alg.name());
        }
        assert_eq!(cache.stats(), (1, 1), "{}: one miss, then one hit", alg.name());
        group.bench_function(BenchmarkId::new("cache_hit", alg.name()), |b| {
            b.iter(|| cache.verify(black_box(&bundle), black_box(&token), None, black_box(NOW)))
        });
    }
    bench_in_wasm(&mut group, keys);
    group.finish();
}

fn bench_in_wasm(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, keys: &Keys) {
    let tokens: Vec<(&str, String)> =
        Alg::ALL.iter().map(|alg| (alg.name(), keys.issuer(*alg).mint(&claims(*alg, AGENT)))).collect();
    let named: Vec<(&str, &str)> = tokens.iter().map(|(a, t)| (*a, t.as_str())).collect();
    let mut vm = start_probe(&keys.bundle_value(&generate_json(10)), &named);
    for alg in Alg::ALL {
        let ops: &[&str] = if alg == Alg::EdDSA {
            &["bare", "bare_strict", "verify", "cache_hit"]
        } else {
            &["bare", "verify", "cache_hit"]
        };
        for op in ops {
            // The probe counts successes: a check that refuses the token (or a cache lookup that misses) fails here.
            assert_eq!(probe(&mut vm, op, alg.name(), 3), 3, "{op} {} in wasm", alg.name());
            group.bench_function(BenchmarkId::new(format!("wasm_{op}"), alg.name()), |b| {
                b.iter_custom(|iterations| {
                    let start = Instant::now();
                    let ok = probe(&mut vm, op, alg.name(), iterations);
                    let elapsed = start.elapsed();
                    assert_eq!(ok, iterations, "{op} {} in wasm", alg.name());
                    elapsed
                })
            });
        }
        interleaved_ratio(&mut vm, alg);
    }
}

/// verify / bare in wasm measured a second way, robust to a noisy minute: 15 rounds that each time `bare` then
/// `verify` for ≈ 10 ms apiece, back to back, and the median of the rounds' ratios. Recorded as the figure
/// `wasm_verify_over_bare_ppm/<alg>` (parts per million) next to criterion's medians, which time the two a minute
/// apart. Under `cargo test` one round of one iteration (nothing recorded).
fn interleaved_ratio(vm: &mut warden_host::Plugin, alg: Alg) {
    let benching = std::env::args().any(|a| a == "--bench");
    let time = |vm: &mut warden_host::Plugin, op: &str, n: u64| {
        let start = Instant::now();
        assert_eq!(probe(vm, op, alg.name(), n), n, "{op} {} in wasm", alg.name());
        start.elapsed().as_secs_f64()
    };
    let (rounds, n) = if benching {
        let one = time(vm, "bare", 3) / 3.0;
        (15, ((0.010 / one) as u64).max(1))
    } else {
        (1, 1)
    };
    let mut ratios: Vec<f64> = (0..rounds).map(|_| time(vm, "verify", n) / time(vm, "bare", n)).collect();
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    warden_benches::record_figure(&format!("wasm_verify_over_bare_ppm/{}", alg.name()), (median * 1e6) as u64, "ppm");
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = bench_tokens
}
criterion_main!(benches);
