//! Benchmark probe: the steps of agent-token verification looped inside wasm, so `benches/tokens.rs` can time them
//! in the same host, engine and code generation as `warden.wasm` (issue 8: cache hit ≤ 1 µs in wasm, cold
//! verification within 10 % of the bare signature check in wasm).
//!
//! The plugin configuration (JSON) carries an authored bundle with its `issuers`, the time `now`, and one valid
//! agent token per algorithm: `{"bundle": {...}, "now": 1767225600, "tokens": {"EdDSA": "…", …}}`. On configure the
//! probe compiles the bundle with `warden_core::compile::compile` (as the filter does after the envelope check),
//! parses each issuer key a second time with its own signature crate (the bare check's key), and splits each token
//! into its signing input and decoded signature. A configuration it cannot use is refused with the reason logged.
//!
//! A request with the header `x-probe: <op> <alg> <iterations>` runs one operation `iterations` times on that
//! algorithm's token and replies 200 with `x-probe-ok: <how many succeeded>` (a 400 says what was wrong):
//!
//! - `bare`: the signature crate's own check with the key parsed once and the signature already decoded
//!   (Ed25519 `Verifier::verify`, P-256 ECDSA `verify`, RSA PKCS#1 v1.5 over SHA-256): the floor;
//! - `bare_strict`: the same with `ed25519_dalek::VerifyingKey::verify_strict` (other algorithms as `bare`);
//! - `verify`: `warden_core::identity::verify`, the whole cold verification of an agent token (size, structure,
//!   issuer, header, signature, claims and times);
//! - `cache_hit`: `token_cache::TokenCache::verify` of the token, which the probe put in the cache on configure.
//!
//! Nothing here is part of the filter; the module exists only for the benchmarks (and their test-mode run in CI).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel};
use serde_json::Value;
use warden_core::bundle::Bundle;
use warden_core::compile::{compile, CompiledBundle};
use warden_core::identity::{self, IssuerSet};
use warden_core::token_cache::TokenCache;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

/// A public key parsed once by its own crate.
enum BareKey {
    Ed(ed25519_dalek::VerifyingKey),
    Es(p256::ecdsa::VerifyingKey),
    Rs(rsa::PublicKey),
}

/// One algorithm's token, ready for every operation.
struct Case {
    token: String,
    /// Length of the signing input (`header.payload`).
    input_len: usize,
    signature: Vec<u8>,
    key: BareKey,
}

struct Probe {
    bundle: CompiledBundle,
    issuers: IssuerSet,
    now: i64,
    cases: BTreeMap<String, Case>,
    cache: TokenCache,
}

thread_local! {
    static PROBE: RefCell<Option<Probe>> = const { RefCell::new(None) };
}

fn log(level: LogLevel, message: &str) {
    let _ = proxy_wasm::hostcalls::log(level, message);
}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let bytes = proxy_wasm::hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size).ok().flatten();
        match bytes.ok_or_else(|| "no plugin configuration".to_string()).and_then(|b| configure(&b)) {
            Ok(probe) => {
                log(
                    LogLevel::Info,
                    &format!("probe ready: {}", probe.cases.keys().cloned().collect::<Vec<_>>().join(", ")),
                );
                PROBE.with(|p| *p.borrow_mut() = Some(probe));
                true
            }
            Err(e) => {
                log(LogLevel::Error, &format!("probe configuration refused: {e}"));
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

fn configure(bytes: &[u8]) -> Result<Probe, String> {
    let cfg: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let bundle: Bundle =
        serde_json::from_value(cfg["bundle"].clone()).map_err(|e| format!("/bundle is not a bundle: {e}"))?;
    let compiled = compile(&bundle).map_err(|e| format!("/bundle does not compile: {e}"))?;
    let issuers = IssuerSet::compile(&bundle.issuers).map_err(|e| format!("/bundle/issuers: {e:?}"))?;
    let now = cfg["now"].as_i64().ok_or("/now must be an integer (seconds since the epoch)")?;
    let tokens = cfg["tokens"].as_object().ok_or("/tokens must be an object of algorithm to token")?;
    let mut cache = TokenCache::default();
    let mut cases = BTreeMap::new();
    for (alg, token) in tokens {
        let token = token.as_str().ok_or_else(|| format!("/tokens/{alg} must be a string"))?;
        let case = split(&cfg["bundle"], alg, token)?;
        if let Err(e) = cache.verify(&compiled, token, None, now) {
            return Err(format!("/tokens/{alg} does not verify: {e:?}"));
        }
        cases.insert(alg.clone(), case);
    }
    Ok(Probe { bundle: compiled, issuers, now, cases, cache })
}

fn b64(v: &Value, what: &str) -> Result<Vec<u8>, String> {
    let s = v.as_str().ok_or_else(|| format!("{what} is missing"))?;
    URL_SAFE_NO_PAD.decode(s).map_err(|e| format!("{what}: {e}"))
}

/// The token's signing input length, its decoded signature, and its issuer's key (the issuer whose `iss` the token
/// names, first key) parsed by the signature crate.
fn split(bundle: &Value, alg: &str, token: &str) -> Result<Case, String> {
    let dot = token.rfind('.').ok_or_else(|| format!("/tokens/{alg} is not a compact JWS"))?;
    let signature = b64(&Value::from(&token[dot + 1..]), &format!("/tokens/{alg} signature"))?;
    let payload = token[..dot].split('.').nth(1).ok_or_else(|| format!("/tokens/{alg} has no payload"))?;
    let claims: Value = serde_json::from_slice(&b64(&Value::from(payload), "payload")?)
        .map_err(|e| format!("/tokens/{alg} payload: {e}"))?;
    let issuer = bundle["issuers"]
        .as_array()
        .and_then(|all| all.iter().find(|i| i["iss"] == claims["iss"]))
        .ok_or_else(|| format!("/tokens/{alg}: no issuer {}", claims["iss"]))?;
    let jwk = &issuer["jwks"]["keys"][0];
    let key = match alg {
        "EdDSA" => {
            let x: [u8; 32] = b64(&jwk["x"], "x")?.try_into().map_err(|_| "x is not 32 bytes")?;
            BareKey::Ed(ed25519_dalek::VerifyingKey::from_bytes(&x).map_err(|e| format!("Ed25519 key: {e}"))?)
        }
        "ES256" => {
            let sec1 = [vec![0x04], b64(&jwk["x"], "x")?, b64(&jwk["y"], "y")?].concat();
            BareKey::Es(p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(|e| format!("P-256 key: {e}"))?)
        }
        "RS256" => {
            let n = rsa::BoxedUint::from_be_slice_vartime(&b64(&jwk["n"], "n")?);
            let e = rsa::BoxedUint::from_be_slice_vartime(&b64(&jwk["e"], "e")?);
            BareKey::Rs(rsa::PublicKey::new(n, e).map_err(|e| format!("RSA key: {e}"))?)
        }
        other => return Err(format!("/tokens/{other}: unsupported algorithm (EdDSA, ES256, RS256)")),
    };
    Ok(Case { token: token.to_string(), input_len: dot, signature, key })
}

impl Probe {
    fn bare(&self, case: &Case, strict: bool) -> bool {
        let input = black_box(&case.token.as_bytes()[..case.input_len]);
        let signature = black_box(case.signature.as_slice());
        match &case.key {
            BareKey::Ed(k) => {
                use ed25519_dalek::Verifier as _;
                ed25519_dalek::Signature::from_slice(signature).is_ok_and(|s| {
                    if strict {
                        k.verify_strict(input, &s).is_ok()
                    } else {
                        k.verify(input, &s).is_ok()
                    }
                })
            }
            BareKey::Es(k) => {
                use p256::ecdsa::signature::Verifier as _;
                p256::ecdsa::Signature::from_slice(signature).is_ok_and(|s| k.verify(input, &s).is_ok())
            }
            BareKey::Rs(k) => {
                use sha2::{Digest as _, Sha256};
                k.verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(input), signature).is_ok()
            }
        }
    }

    /// Runs `op` `iterations` times on `alg`'s token: how many succeeded.
    fn run(&mut self, op: &str, alg: &str, iterations: u64) -> Result<u64, String> {
        let Some(case) = self.cases.get(alg) else {
            return Err(format!("no token for algorithm {alg:?} in the probe's configuration"));
        };
        let mut ok = 0u64;
        match op {
            "bare" | "bare_strict" => {
                for _ in 0..iterations {
                    ok += u64::from(black_box(self.bare(case, op == "bare_strict")));
                }
            }
            "verify" => {
                for _ in 0..iterations {
                    let agent = identity::verify(black_box(&self.issuers), black_box(&case.token), self.now);
                    ok += u64::from(black_box(agent).is_ok());
                }
            }
            "cache_hit" => {
                let hits_before = self.cache.stats().0;
                for _ in 0..iterations {
                    let agent = self.cache.verify(black_box(&self.bundle), black_box(&case.token), None, self.now);
                    ok += u64::from(black_box(agent).is_ok());
                }
                // Every lookup must have been a hit, or this is not the figure it claims to be.
                ok = ok.min(self.cache.stats().0 - hits_before);
            }
            other => return Err(format!("unknown op {other:?} (bare, bare_strict, verify, cache_hit)")),
        }
        Ok(ok)
    }
}

struct Stream;

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let asked = self.get_http_request_header("x-probe").unwrap_or_default();
        let mut words = asked.split_ascii_whitespace();
        let result = match (words.next(), words.next(), words.next().map(str::parse::<u64>)) {
            (Some(op), Some(alg), Some(Ok(n))) => PROBE.with(|p| match p.borrow_mut().as_mut() {
                Some(probe) => probe.run(op, alg, n),
                None => Err("the probe is not configured".to_string()),
            }),
            _ => Err(format!("x-probe must be \"<op> <alg> <iterations>\", found {asked:?}")),
        };
        match result {
            Ok(ok) => self.send_http_response(200, vec![("x-probe-ok", ok.to_string().as_str())], None),
            Err(e) => self.send_http_response(400, vec![], Some(e.as_bytes())),
        }
        Action::Pause
    }
}
