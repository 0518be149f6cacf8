//! The signed bundle artifact: a JWS that gateways verify against pinned authority keys.
//!
//! # Format
//!
//! A signed bundle (file name convention `bundle.jws`) is a JWS Compact Serialization (RFC 7515):
//!
//! ```text
//! b64url(protected header) "." b64url(bundle JSON bytes) "." b64url(signature)
//! ```
//!
//! - base64url without padding, canonical (no trailing bits); trailing ASCII whitespace after the signature (a final
//!   newline in the file) is ignored, nothing else is.
//! - The protected header is exactly `{"alg":"EdDSA"|"ES256","kid":"<key id>","typ":"warden-bundle+jws"}`; any other
//!   header parameter (`crit`, `jku`, `jwk`, `x5u`, `b64`, ...) is refused, so nothing in the artifact can choose its own
//!   verification key or change how the payload is read. `typ` is compared case-insensitively and may carry the
//!   `application/` prefix (RFC 7515 section 4.1.9).
//! - `EdDSA` is Ed25519 (RFC 8037), verified strictly (`verify_strict`: no small-order keys, canonical `S`).
//!   `ES256` is ECDSA P-256 with SHA-256 and the JOSE signature encoding: the 64-byte `r || s`, *not* DER (RFC 7518
//!   section 3.4).
//! - The payload is the bundle JSON ([`crate::bundle::Bundle`], unknown fields refused).
//!
//! Any JOSE library can produce or check it (the tests verify a JWS made by python `jwcrypto`).
//!
//! # Verification
//!
//! [`verify`] is pure (the caller passes `now`) and checks, in this order, stopping at the first failure, each with
//! its own [`EnvelopeError`]: compact form, base64url, header JSON, `typ`, `alg` (EdDSA or ES256 only), `kid`
//! present, not revoked, pinned, the pinned key's algorithm equals `alg`, the signature, then the payload as a bundle,
//! its `format`, its `authority` (must equal the authority pinned in the plugin configuration), its timestamps,
//! `issued_at` not more than [`MAX_ISSUED_AHEAD_SECONDS`] ahead of `now`, and `expires_at > now`. Nothing in the
//! payload is read before the signature verified. Rollback (a revision not above the active one) is the filter's
//! check, since only it knows the active revision.
//!
//! # Keys
//!
//! Keys are JWKs (RFC 7517): Ed25519 as `{"kty":"OKP","crv":"Ed25519","x":...}`, P-256 as
//! `{"kty":"EC","crv":"P-256","x":...,"y":...}`; private keys add `d`. Every key needs a `kid`. A pinned (public)
//! key set must not contain private material.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::bundle::{Bundle, FORMAT_V1};
use crate::jose::{self, typ_is, Alg, JwkFields, VerifyKey};
use crate::time::{format_rfc3339, parse_rfc3339};

/// The `typ` of the protected header.
pub const TYPE: &str = "warden-bundle+jws";

/// How far `issued_at` may lie ahead of the gateway's clock (seconds).
pub const MAX_ISSUED_AHEAD_SECONDS: i64 = 300;

/// A bundle-signing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Ed25519 (RFC 8037).
    EdDSA,
    /// ECDSA P-256 with SHA-256, JOSE `r || s` signature.
    ES256,
}

impl Algorithm {
    /// The JOSE `alg` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::EdDSA => "EdDSA",
            Algorithm::ES256 => "ES256",
        }
    }

    /// Parses a JOSE `alg` value (exact, case-sensitive); `None` for everything but `EdDSA` and `ES256`.
    pub fn parse(alg: &str) -> Option<Algorithm> {
        match alg {
            "EdDSA" => Some(Algorithm::EdDSA),
            "ES256" => Some(Algorithm::ES256),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a signed bundle (or a key) was refused. The Display text says what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EnvelopeError {
    #[error("signed bundle: not a JWS compact serialization: expected 3 dot-separated segments, found {found}")]
    NotCompact { found: usize },
    #[error("signed bundle: the {segment} segment is empty")]
    EmptySegment { segment: &'static str },
    #[error("signed bundle: the {segment} segment is not unpadded base64url: {detail}")]
    BadBase64 { segment: &'static str, detail: String },
    #[error("signed bundle: protected header: {detail}")]
    BadHeader { detail: String },
    #[error("signed bundle: protected header typ is {}, expected \"warden-bundle+jws\"", describe(.found))]
    WrongType { found: Option<String> },
    #[error("signed bundle: protected header alg {alg:?} is not accepted (only EdDSA and ES256)")]
    UnsupportedAlgorithm { alg: String },
    #[error("signed bundle: protected header has no kid")]
    MissingKid,
    #[error("signed bundle: signing key {kid:?} has been revoked")]
    RevokedKid { kid: String },
    #[error("signed bundle: kid {kid:?} is not one of the pinned authority keys")]
    UnknownKid { kid: String },
    #[error(
        "signed bundle: protected header alg {header_alg} does not match the pinned key {kid:?}, which is {key_alg}"
    )]
    AlgorithmMismatch { kid: String, header_alg: Algorithm, key_alg: Algorithm },
    #[error("signed bundle: {alg} signature must be {expected} bytes, found {found}{}", der_hint(*.alg, *.found))]
    SignatureLength { alg: Algorithm, expected: usize, found: usize },
    #[error("signed bundle: signature does not verify with the pinned key {kid:?}")]
    BadSignature { kid: String },
    #[error("signed bundle: payload is not a valid bundle: {detail}")]
    BadPayload { detail: String },
    #[error("signed bundle: /format is {found:?}, expected \"warden.bundle/v1\"")]
    WrongFormat { found: String },
    #[error("signed bundle: /authority is {found:?}, but this gateway trusts bundles from {expected:?}")]
    AuthorityMismatch { expected: String, found: String },
    #[error("signed bundle: /{field} {value:?} is not an RFC 3339 UTC timestamp")]
    BadTimestamp { field: &'static str, value: String },
    #[error("signed bundle: /expires_at {expires_at} is not after /issued_at {issued_at}")]
    NotAfterIssued { issued_at: String, expires_at: String },
    #[error("signed bundle: /issued_at {issued_at} is more than 300 s ahead of the gateway clock ({now})")]
    IssuedInFuture { issued_at: String, now: String },
    #[error("signed bundle: expired at {expires_at} (gateway clock {now})")]
    Expired { expires_at: String, now: String },
    #[error("key {location}: {message}")]
    BadKey { location: String, message: String },
    #[error("no system randomness to generate a key: {detail}")]
    RandomUnavailable { detail: String },
}

fn describe(found: &Option<String>) -> String {
    match found {
        Some(t) => format!("{t:?}"),
        None => "missing".to_string(),
    }
}

fn der_hint(alg: Algorithm, found: usize) -> &'static str {
    if alg == Algorithm::ES256 && found > 64 {
        " (ES256 signatures are the JOSE r||s form, not DER)"
    } else {
        ""
    }
}

/// A public key pinned for bundle verification.
#[derive(Clone)]
enum PublicKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    Es256(p256::ecdsa::VerifyingKey),
}

impl PublicKey {
    fn alg(&self) -> Algorithm {
        match self {
            PublicKey::Ed25519(_) => Algorithm::EdDSA,
            PublicKey::Es256(_) => Algorithm::ES256,
        }
    }

    fn to_jwk(&self, kid: &str) -> Value {
        match self {
            PublicKey::Ed25519(k) => json!({
                "kty": "OKP", "crv": "Ed25519", "x": b64(k.as_bytes()), "kid": kid, "alg": "EdDSA", "use": "sig"
            }),
            PublicKey::Es256(k) => {
                let point = k.to_sec1_point(false);
                let bytes = point.as_bytes();
                // Uncompressed SEC1: 0x04 || x (32) || y (32).
                let (x, y) = match bytes.get(1..33).zip(bytes.get(33..65)) {
                    Some(xy) => xy,
                    None => (&[][..], &[][..]),
                };
                json!({
                    "kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y), "kid": kid, "alg": "ES256", "use": "sig"
                })
            }
        }
    }
}

/// The pinned authority public keys, by key id, each with its algorithm.
#[derive(Clone, Default)]
pub struct TrustedKeys {
    keys: BTreeMap<String, PublicKey>,
}

impl fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.keys.iter().map(|(k, v)| (k, v.alg()))).finish()
    }
}

impl TrustedKeys {
    /// Parses a public JWKS `{"keys": [...]}` of Ed25519 (`OKP`) and P-256 (`EC`) keys, each with a unique `kid`.
    /// Errors name the key: `key /keys/1: ...`.
    pub fn from_jwks(jwks: &Value) -> Result<TrustedKeys, EnvelopeError> {
        let bad = |location: &str, message: &str| EnvelopeError::BadKey {
            location: location.to_string(),
            message: message.to_string(),
        };
        let obj = jwks.as_object().ok_or_else(|| bad("/", "a JWKS must be an object {\"keys\": [...]}"))?;
        if let Some(other) = obj.keys().find(|k| k.as_str() != "keys") {
            return Err(bad("/", &format!("unknown JWKS member {other:?}")));
        }
        let list = obj.get("keys").and_then(Value::as_array).ok_or_else(|| bad("/keys", "must be an array"))?;
        if list.is_empty() {
            return Err(bad("/keys", "no keys: at least one authority key must be pinned"));
        }
        let mut keys = BTreeMap::new();
        for (i, jwk) in list.iter().enumerate() {
            let location = format!("/keys/{i}");
            let parsed = parse_jwk(jwk, false).map_err(|m| bad(&location, &m))?;
            if parsed.has_private {
                return Err(bad(&location, "private key material (\"d\") in a public key set"));
            }
            if keys.insert(parsed.kid.clone(), parsed.public).is_some() {
                return Err(bad(&location, &format!("duplicate kid {:?}", parsed.kid)));
            }
        }
        Ok(TrustedKeys { keys })
    }

    /// Number of pinned keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is pinned (never the case for a set made by [`TrustedKeys::from_jwks`]).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The pinned key ids, sorted.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// The algorithm of the key with this id.
    pub fn algorithm(&self, kid: &str) -> Option<Algorithm> {
        self.keys.get(kid).map(PublicKey::alg)
    }

    /// The public JWKS of these keys.
    pub fn to_jwks(&self) -> Value {
        json!({ "keys": self.keys.iter().map(|(kid, k)| k.to_jwk(kid)).collect::<Vec<_>>() })
    }
}

#[derive(Clone)]
enum SecretKey {
    Ed25519(ed25519_dalek::SigningKey),
    Es256(p256::ecdsa::SigningKey),
}

/// A bundle-signing private key with its key id and algorithm. Debug output never shows the secret.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    secret: SecretKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).field("alg", &self.alg()).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads a private JWK (`d` present, public part must match it; `kid` required).
    pub fn from_jwk(jwk: &Value) -> Result<SigningKey, EnvelopeError> {
        let parsed =
            parse_jwk(jwk, true).map_err(|message| EnvelopeError::BadKey { location: "/".to_string(), message })?;
        match parsed.secret {
            Some(secret) => Ok(SigningKey { kid: parsed.kid, secret }),
            None => Err(EnvelopeError::BadKey {
                location: "/".to_string(),
                message: "not a private key: \"d\" is missing".to_string(),
            }),
        }
    }

    /// A fresh key from the operating system's random source.
    pub fn generate(alg: Algorithm, kid: &str) -> Result<SigningKey, EnvelopeError> {
        check_kid(kid).map_err(|message| EnvelopeError::BadKey { location: "/kid".to_string(), message })?;
        let random = |dest: &mut [u8; 32]| {
            getrandom::fill(dest).map_err(|e| EnvelopeError::RandomUnavailable { detail: e.to_string() })
        };
        let mut seed = [0u8; 32];
        let secret = match alg {
            Algorithm::EdDSA => {
                random(&mut seed)?;
                SecretKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed))
            }
            Algorithm::ES256 => {
                // A uniformly random 32-byte string is a valid scalar except with probability ~2^-32; retry then.
                let mut found = None;
                for _ in 0..8 {
                    random(&mut seed)?;
                    if let Ok(k) = p256::ecdsa::SigningKey::from_slice(&seed) {
                        found = Some(k);
                        break;
                    }
                }
                match found {
                    Some(k) => SecretKey::Es256(k),
                    None => {
                        return Err(EnvelopeError::RandomUnavailable {
                            detail: "random source produced no valid P-256 scalar".to_string(),
                        })
                    }
                }
            }
        };
        seed.fill(0);
        Ok(SigningKey { kid: kid.to_string(), secret })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> Algorithm {
        match self.secret {
            SecretKey::Ed25519(_) => Algorithm::EdDSA,
            SecretKey::Es256(_) => Algorithm::ES256,
        }
    }

    fn public(&self) -> PublicKey {
        match &self.secret {
            SecretKey::Ed25519(k) => PublicKey::Ed25519(k.verifying_key()),
            SecretKey::Es256(k) => PublicKey::Es256(*k.verifying_key()),
        }
    }

    /// The public JWK (with `kid`, `alg`, `use: sig`): what gateways pin.
    pub fn public_jwk(&self) -> Value {
        self.public().to_jwk(&self.kid)
    }

    /// The private JWK (the public JWK plus `d`). Handle as a secret.
    pub fn private_jwk(&self) -> Value {
        let mut jwk = self.public_jwk();
        let d = match &self.secret {
            SecretKey::Ed25519(k) => b64(k.as_bytes()),
            SecretKey::Es256(k) => b64(&k.to_bytes()),
        };
        if let Some(obj) = jwk.as_object_mut() {
            obj.insert("d".to_string(), Value::String(d));
        }
        jwk
    }

    /// A [`TrustedKeys`] holding just this key's public part (handy for tests and the CLI).
    pub fn trusted_keys(&self) -> TrustedKeys {
        let mut keys = BTreeMap::new();
        keys.insert(self.kid.clone(), self.public());
        TrustedKeys { keys }
    }
}

/// Signs `payload` (the bundle JSON bytes) into a JWS compact serialization.
pub fn sign(payload: &[u8], key: &SigningKey) -> String {
    sign_typed(payload, key, TYPE)
}

/// Signs `payload` into a JWS compact serialization whose protected header is `{"alg","kid","typ"}` with this
/// `typ` (e.g. [`crate::approval::APPROVAL_TYP`] for step-up approvals).
pub fn sign_typed(payload: &[u8], key: &SigningKey, typ: &str) -> String {
    let header = json!({ "alg": key.alg().as_str(), "kid": key.kid, "typ": typ }).to_string();
    sign_with_header(header.as_bytes(), payload, key)
}

/// Signs `payload` under an exact protected header (the JSON bytes, taken as given).
pub(crate) fn sign_with_header(header: &[u8], payload: &[u8], key: &SigningKey) -> String {
    let mut out = String::with_capacity(header.len() * 2 + payload.len() * 4 / 3 + 100);
    out.push_str(&b64(header));
    out.push('.');
    out.push_str(&b64(payload));
    let signature: Vec<u8> = match &key.secret {
        SecretKey::Ed25519(k) => {
            use ed25519_dalek::Signer as _;
            k.sign(out.as_bytes()).to_bytes().to_vec()
        }
        SecretKey::Es256(k) => {
            use p256::ecdsa::signature::Signer as _;
            let sig: p256::ecdsa::Signature = k.sign(out.as_bytes());
            sig.to_bytes().to_vec()
        }
    };
    out.push('.');
    out.push_str(&b64(&signature));
    out
}

/// A bundle whose signature, authority and validity window checked out.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedBundle {
    pub bundle: Bundle,
    /// The `kid` of the authority key that signed it.
    pub key_id: String,
    /// SHA-256 of the payload bytes, lowercase hex: identifies exactly what was verified.
    pub digest: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProtectedHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
}

/// A bundle whose signature, authority and validity window checked out, with the payload bytes it was read from
/// (what [`verify_payload`] returns: no digest is computed).
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedPayload {
    pub bundle: Bundle,
    /// The `kid` of the authority key that signed it.
    pub key_id: String,
    /// The payload bytes (the bundle JSON exactly as signed).
    pub payload: Vec<u8>,
}

/// Verifies a signed bundle (see the module doc for the checks and their order) and returns it with the SHA-256 of
/// its payload.
pub fn verify(
    signed: &[u8],
    keys: &TrustedKeys,
    authority: &str,
    revoked_kids: &[String],
    now: i64,
) -> Result<VerifiedBundle, EnvelopeError> {
    let v = verify_payload(signed, keys, authority, revoked_kids, now)?;
    Ok(VerifiedBundle { digest: sha256_hex(&v.payload), bundle: v.bundle, key_id: v.key_id })
}

/// [`verify`] without the digest: the same checks in the same order with the same errors, returning the payload
/// bytes instead of their SHA-256 (for a caller that compares payloads, or hashes them only when it needs to).
pub fn verify_payload(
    signed: &[u8],
    keys: &TrustedKeys,
    authority: &str,
    revoked_kids: &[String],
    now: i64,
) -> Result<VerifiedPayload, EnvelopeError> {
    let signed = trim_trailing_whitespace(signed);
    let Some((header_b64, payload_b64, signature_b64)) = jose::split_compact(signed) else {
        return Err(EnvelopeError::NotCompact { found: signed.split(|b| *b == b'.').count() });
    };
    let header = decode_segment("header", header_b64)?;
    let payload = decode_segment("payload", payload_b64)?;
    let signature = decode_segment("signature", signature_b64)?;

    let header: ProtectedHeader =
        serde_json::from_slice(&header).map_err(|e| EnvelopeError::BadHeader { detail: e.to_string() })?;
    if !typ_matches(header.typ.as_deref()) {
        return Err(EnvelopeError::WrongType { found: header.typ });
    }
    let alg = Algorithm::parse(&header.alg).ok_or(EnvelopeError::UnsupportedAlgorithm { alg: header.alg })?;
    let kid = header.kid.ok_or(EnvelopeError::MissingKid)?;
    if revoked_kids.contains(&kid) {
        return Err(EnvelopeError::RevokedKid { kid });
    }
    let Some(key) = keys.keys.get(&kid) else {
        return Err(EnvelopeError::UnknownKid { kid });
    };
    if key.alg() != alg {
        return Err(EnvelopeError::AlgorithmMismatch { kid, header_alg: alg, key_alg: key.alg() });
    }
    if signature.len() != 64 {
        return Err(EnvelopeError::SignatureLength { alg, expected: 64, found: signature.len() });
    }
    // The signing input is the ASCII of the first two segments exactly as received.
    let signing_input = &signed[..header_b64.len() + 1 + payload_b64.len()];
    let ok = match key {
        PublicKey::Ed25519(k) => VerifyKey::Ed25519(*k).verify(Alg::EdDSA, signing_input, &signature),
        PublicKey::Es256(k) => VerifyKey::P256(*k).verify(Alg::ES256, signing_input, &signature),
    };
    if !ok {
        return Err(EnvelopeError::BadSignature { kid });
    }

    let bundle: Bundle =
        serde_json::from_slice(&payload).map_err(|e| EnvelopeError::BadPayload { detail: e.to_string() })?;
    if bundle.format != FORMAT_V1 {
        return Err(EnvelopeError::WrongFormat { found: bundle.format });
    }
    if bundle.authority != authority {
        return Err(EnvelopeError::AuthorityMismatch { expected: authority.to_string(), found: bundle.authority });
    }
    let issued_at = parse_rfc3339(&bundle.issued_at)
        .ok_or_else(|| EnvelopeError::BadTimestamp { field: "issued_at", value: bundle.issued_at.clone() })?;
    let expires_at = parse_rfc3339(&bundle.expires_at)
        .ok_or_else(|| EnvelopeError::BadTimestamp { field: "expires_at", value: bundle.expires_at.clone() })?;
    if expires_at <= issued_at {
        return Err(EnvelopeError::NotAfterIssued {
            issued_at: bundle.issued_at.clone(),
            expires_at: bundle.expires_at.clone(),
        });
    }
    if issued_at > now.saturating_add(MAX_ISSUED_AHEAD_SECONDS) {
        return Err(EnvelopeError::IssuedInFuture { issued_at: bundle.issued_at.clone(), now: format_rfc3339(now) });
    }
    if expires_at <= now {
        return Err(EnvelopeError::Expired { expires_at: bundle.expires_at.clone(), now: format_rfc3339(now) });
    }
    Ok(VerifiedPayload { bundle, key_id: kid, payload })
}

/// SHA-256 of `bytes` as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

fn trim_trailing_whitespace(mut bytes: &[u8]) -> &[u8] {
    while let [rest @ .., last] = bytes {
        if last.is_ascii_whitespace() {
            bytes = rest;
        } else {
            break;
        }
    }
    bytes
}

fn typ_matches(typ: Option<&str>) -> bool {
    typ.is_some_and(|t| typ_is(t, TYPE))
}

fn decode_segment(segment: &'static str, data: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    if data.is_empty() {
        return Err(EnvelopeError::EmptySegment { segment });
    }
    jose::decode(data).map_err(|e| EnvelopeError::BadBase64 { segment, detail: e.to_string() })
}

fn b64(bytes: &[u8]) -> String {
    jose::encode(bytes)
}

struct ParsedJwk {
    kid: String,
    public: PublicKey,
    secret: Option<SecretKey>,
    has_private: bool,
}

fn check_kid(kid: &str) -> Result<(), String> {
    if kid.is_empty() || kid.len() > 128 || kid.chars().any(|c| c.is_control()) {
        return Err("kid must be 1 to 128 characters without control characters".to_string());
    }
    Ok(())
}

/// Reads one JWK; `d` is parsed only with `allow_private` (the caller decides whether it may exist at all).
fn parse_jwk(jwk: &Value, allow_private: bool) -> Result<ParsedJwk, String> {
    let f = JwkFields::of(jwk)?;
    let text = |name: &str| f.text(name);
    let bytes = |name: &str, len: usize| f.exact(name, len);
    let kid = text("kid")?.ok_or("\"kid\" is missing: every key needs a key id")?.to_string();
    check_kid(&kid)?;
    f.check_use()?;
    let kty = text("kty")?.ok_or("\"kty\" is missing")?;
    let crv = text("crv")?;
    let has_d = f.has("d");
    let (public, secret) = match (kty, crv) {
        ("OKP", Some("Ed25519")) => {
            let public = f.ed25519()?;
            if public.is_weak() {
                return Err("\"x\" is a small-order (weak) Ed25519 public key".to_string());
            }
            let secret = if has_d && allow_private {
                let d = bytes("d", 32)?;
                let d: [u8; 32] = d.try_into().map_err(|_| "\"d\" must be 32 bytes".to_string())?;
                let sk = ed25519_dalek::SigningKey::from_bytes(&d);
                if sk.verifying_key() != public {
                    return Err("\"d\" does not belong to the public key \"x\"".to_string());
                }
                Some(SecretKey::Ed25519(sk))
            } else {
                None
            };
            (PublicKey::Ed25519(public), secret)
        }
        ("EC", Some("P-256")) => {
            let public = f.p256()?;
            let secret = if has_d && allow_private {
                let d = bytes("d", 32)?;
                let sk = p256::ecdsa::SigningKey::from_slice(&d)
                    .map_err(|_| "\"d\" is not a valid P-256 private scalar".to_string())?;
                if *sk.verifying_key() != public {
                    return Err("\"d\" does not belong to the public key \"x\"/\"y\"".to_string());
                }
                Some(SecretKey::Es256(sk))
            } else {
                None
            };
            (PublicKey::Es256(public), secret)
        }
        ("OKP", c) | ("EC", c) => {
            return Err(format!(
                "unsupported curve {}: bundle keys are Ed25519 (OKP) or P-256 (EC)",
                c.map_or("(missing crv)".to_string(), |c| format!("{c:?}"))
            ))
        }
        (other, _) => return Err(format!("unsupported kty {other:?}: bundle keys are Ed25519 (OKP) or P-256 (EC)")),
    };
    if let Some(alg) = text("alg")? {
        if Algorithm::parse(alg) != Some(public.alg()) {
            return Err(format!("\"alg\" is {alg:?} but the key is {}", public.alg()));
        }
    }
    Ok(ParsedJwk { kid, public, secret, has_private: has_d })
}
