//! Keys, agent tokens and signed bundles for the token and in-wasm benches.
//!
//! [`IssuerKey::generate`] makes a fresh token issuer key for EdDSA, ES256 or RS256 (RSA 2048): the
//! `jsonwebtoken` encoding key that mints tokens, the public JWK a bundle trusts, and the same public key parsed
//! once by the signature crate itself ([`IssuerKey::bare_verify`]), which is the floor `identity::verify` is
//! compared with. [`Keys`] holds one issuer per algorithm and the bundle-signing authority; [`Keys::issuers`] are
//! the bundle's issuers (`iss` = `https://{alg}.idp.bench.example`, audience `warden`, task claims mapped).
//! Nothing here is a secret: keys are generated per process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};
use warden_core::bundle::{Bundle, Issuer};

use warden_core::envelope::{self, SigningKey};

use crate::NOW;

/// Token algorithms benchmarked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    EdDSA,
    ES256,
    RS256,
}

impl Alg {
    pub const ALL: [Alg; 3] = [Alg::EdDSA, Alg::ES256, Alg::RS256];

    pub fn name(self) -> &'static str {
        match self {
            Alg::EdDSA => "EdDSA",
            Alg::ES256 => "ES256",
            Alg::RS256 => "RS256",
        }
    }

    fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Alg::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Alg::ES256 => jsonwebtoken::Algorithm::ES256,
            Alg::RS256 => jsonwebtoken::Algorithm::RS256,
        }
    }

    /// The `iss` of this algorithm's issuer.
    pub fn iss(self) -> String {
        format!("https://{}.idp.bench.example", self.name().to_ascii_lowercase())
    }
}

/// A public key parsed once by its own crate: the bare signature check.
pub enum BareKey {
    Ed(ed25519_dalek::VerifyingKey),
    Es(p256::ecdsa::VerifyingKey),
    Rs(Box<rsa::pkcs1v15::VerifyingKey<rsa::sha2::Sha256>>),
}

/// A token issuer key.
pub struct IssuerKey {
    pub alg: Alg,
    pub kid: String,
    pub encoding: EncodingKey,
    /// The public JWK (with `kid`) a bundle trusts.
    pub public: Value,
    pub bare: BareKey,
}

fn seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut s) {
        panic!("no random source: {e}");
    }
    s
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl IssuerKey {
    /// A fresh key (RSA keys are 2048 bits).
    pub fn generate(alg: Alg) -> IssuerKey {
        let kid = format!("bench-{}", alg.name().to_ascii_lowercase());
        let (encoding, bare) = match alg {
            Alg::EdDSA => {
                use ed25519_dalek::pkcs8::EncodePrivateKey;
                let sk = ed25519_dalek::SigningKey::from_bytes(&seed());
                let der = sk.to_pkcs8_der().unwrap_or_else(|e| panic!("ed25519 pkcs8: {e}"));
                (EncodingKey::from_ed_der(der.as_bytes()), BareKey::Ed(sk.verifying_key()))
            }
            Alg::ES256 => {
                use p256::pkcs8::EncodePrivateKey;
                let sk = p256::ecdsa::SigningKey::from_slice(&seed()).unwrap_or_else(|e| panic!("p256 key: {e}"));
                let der = sk.to_pkcs8_der().unwrap_or_else(|e| panic!("p256 pkcs8: {e}"));
                (EncodingKey::from_ec_der(der.as_bytes()), BareKey::Es(*sk.verifying_key()))
            }
            Alg::RS256 => {
                use rsa::pkcs1::EncodeRsaPrivateKey;
                let sk = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap_or_else(|e| panic!("rsa key: {e}"));
                let der = sk.to_pkcs1_der().unwrap_or_else(|e| panic!("rsa pkcs1: {e}"));
                let vk = rsa::pkcs1v15::VerifyingKey::<rsa::sha2::Sha256>::new(sk.to_public_key());
                (EncodingKey::from_rsa_der(der.as_bytes()), BareKey::Rs(Box::new(vk)))
            }
        };
        let public = match &bare {
            // jsonwebtoken's Jwk::from_encoding_key reads only PKCS#8 v1 Ed25519 keys; dalek writes v2.
            BareKey::Ed(vk) => json!({"kty": "OKP", "crv": "Ed25519", "x": b64(vk.as_bytes()), "alg": "EdDSA"}),
            _ => match Jwk::from_encoding_key(&encoding, alg.jwt()).map(serde_json::to_value) {
                Ok(Ok(v)) => v,
                _ => panic!("public JWK of the {} key", alg.name()),
            },
        };
        let mut public = public;
        public["kid"] = json!(kid);
        IssuerKey { alg, kid, encoding, public, bare }
    }

    /// Mints a token with these claims (`kid` set).
    pub fn mint(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg.jwt());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap_or_else(|e| panic!("token encodes: {e}"))
    }

    /// The bare signature check of a compact JWS: the signing input and the decoded signature verified with the
    /// pre-parsed key, nothing else.
    pub fn bare_verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        match &self.bare {
            BareKey::Ed(k) => {
                // `verify`, as jsonwebtoken's EdDSA verifier does.
                use ed25519_dalek::Verifier as _;
                ed25519_dalek::Signature::from_slice(signature).is_ok_and(|s| k.verify(signing_input, &s).is_ok())
            }
            BareKey::Es(k) => {
                use p256::ecdsa::signature::Verifier as _;
                p256::ecdsa::Signature::from_slice(signature).is_ok_and(|s| k.verify(signing_input, &s).is_ok())
            }
            BareKey::Rs(k) => {
                use rsa::signature::Verifier as _;
                rsa::pkcs1v15::Signature::try_from(signature).is_ok_and(|s| k.verify(signing_input, &s).is_ok())
            }
        }
    }
}

/// Splits a compact JWS into (signing input, decoded signature).
pub fn split_jws(token: &str) -> (&[u8], Vec<u8>) {
    let Some(dot) = token.rfind('.') else { panic!("not a compact JWS") };
    let sig = URL_SAFE_NO_PAD.decode(&token[dot + 1..]).unwrap_or_else(|e| panic!("signature base64: {e}"));
    (&token.as_bytes()[..dot], sig)
}

/// The keys of one bench process: a token issuer per algorithm and the bundle authority.
pub struct Keys {
    pub issuers: Vec<IssuerKey>,
    pub authority: SigningKey,
}

/// The bundle authority of the benches.
pub const AUTHORITY: &str = "policy.bench.example";

impl Keys {
    /// The process's keys (generated on first use; the RSA key takes a moment).
    pub fn get() -> &'static Keys {
        static K: OnceLock<Keys> = OnceLock::new();
        K.get_or_init(|| Keys {
            issuers: Alg::ALL.iter().map(|a| IssuerKey::generate(*a)).collect(),
            authority: SigningKey::generate(envelope::Algorithm::EdDSA, "bench-authority")
                .unwrap_or_else(|e| panic!("authority key: {e}")),
        })
    }

    pub fn issuer(&self, alg: Alg) -> &IssuerKey {
        match self.issuers.iter().find(|k| k.alg == alg) {
            Some(k) => k,
            None => panic!("no {} issuer", alg.name()),
        }
    }

    /// The bundle issuers (JSON, as authored): one per algorithm, with the task claims mapped.
    pub fn issuers_json(&self) -> Vec<Value> {
        self.issuers
            .iter()
            .map(|k| {
                json!({
                    "id": format!("bench-{}", k.alg.name().to_ascii_lowercase()),
                    "iss": k.alg.iss(),
                    "audiences": ["warden"],
                    "jwks": {"keys": [k.public]},
                    "algorithms": [k.alg.name()],
                    "max_token_lifetime_seconds": 900,
                    "clock_skew_seconds": 30,
                    "profile": "spiffe_jwt_svid",
                    "claims": {"agent_id": "sub", "task_id": "task_id", "task_purpose": "task_purpose",
                        "task_expires_at": "task_exp"},
                })
            })
            .collect()
    }

    /// The bundle issuers, deserialized.
    pub fn bundle_issuers(&self) -> Vec<Issuer> {
        match serde_json::from_value(Value::Array(self.issuers_json())) {
            Ok(v) => v,
            Err(e) => panic!("bench issuers: {e}"),
        }
    }

    /// An authored bundle (JSON) with this process's issuers and authority, as a bundle.
    pub fn with_keys(&self, bundle: &Value) -> Bundle {
        crate::to_bundle(self.bundle_value(bundle))
    }

    /// An authored bundle (JSON) with this process's issuers and authority.
    pub fn bundle_value(&self, bundle: &Value) -> Value {
        let mut v = bundle.clone();
        v["issuers"] = Value::Array(self.issuers_json());
        v["authority"] = json!(AUTHORITY);
        v
    }

    /// An authored bundle (JSON) with this process's issuers and authority, signed (JWS compact).
    pub fn sign_bundle(&self, bundle: &Value) -> String {
        envelope::sign(self.bundle_value(bundle).to_string().as_bytes(), &self.authority)
    }
}

static JTI: AtomicU64 = AtomicU64::new(1);

/// Claims of a valid token for `agent` from `alg`'s issuer at [`NOW`], with task context; every call gets a new
/// `jti`, so every token is new.
pub fn claims(alg: Alg, agent: &str) -> Value {
    claims_at(alg, agent, NOW)
}

/// [`claims`] valid at `now` (the Envoy bench runs on the real clock).
pub fn claims_at(alg: Alg, agent: &str, now: i64) -> Value {
    json!({
        "iss": alg.iss(),
        "sub": agent,
        "aud": "warden",
        "iat": now - 60,
        "exp": now + 600,
        "jti": format!("jti-{}", JTI.fetch_add(1, Ordering::Relaxed)),
        "task_id": "task-5521",
        "task_purpose": "customer-refund",
        "task_exp": now + 900,
    })
}
