//! Agent token verification, natively, per algorithm (EdDSA, ES256, RS256 2048):
//!
//! - `tokens/verify/<alg>`: `warden_core::identity::verify` of a valid token (structure, issuer, header, signature,
//!   claims) against the bundle's compiled issuers;
//! - `tokens/jsonwebtoken_crypto/<alg>`: the signature step alone as `identity::verify` runs it,
//!   `jsonwebtoken::crypto::verify` with a `DecodingKey` made once from the JWK (base64 decoding of the signature
//!   and the key's parsing happen inside, per call);
//! - `tokens/bare_signature/<alg>`: the floor, the signature crate's own verify of the same signing input and
//!   signature with the public key parsed once;
//! - `tokens/cache_hit/<alg>`: `identity::TokenCache::verify` of a token already in the cache (the claims, times,
//!   audience are checked again, the signature is not).
//!
//! `benches/report.py` prints verify / bare per algorithm (the margin is 10 %). The in-wasm figures are in
//! the `wasm` bench. Run: `cargo bench -p warden-benches --bench tokens` (about 30 s).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::DecodingKey;
use warden_benches::tokens::{claims, split_jws, Alg, Keys};
use warden_benches::{generate_json, NOW};
use warden_core::compile::compile;
use warden_core::identity::{self, IssuerSet, TokenCache};

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
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = bench_tokens
}
criterion_main!(benches);
