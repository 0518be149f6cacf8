//! Agent tokens: per-issuer JWT verification (RFC 8725 strict) and the mapping of claims to facts.
//!
//! # Issuers
//!
//! [`IssuerSet::compile`] checks the bundle's `issuers` and parses every JWK into a `jsonwebtoken::DecodingKey` once;
//! the request path never parses a key. Each key gets the algorithms it may verify: the issuer's allowlist
//! restricted to the algorithms its key type fits (`OKP`/`Ed25519` → `EdDSA`, `EC`/`P-256` → `ES256`, `EC`/`P-384`
//! → `ES384`, `RSA` → `RS*`/`PS*`). `none` and `HS*` are refused at compile time, as are symmetric (`oct`) keys,
//! private key material, a key whose own `alg` does not fit its type or is not allowlisted, and a key that fits none
//! of the issuer's algorithms.
//!
//! # Verification order ([`verify`])
//!
//! 1. size (at most [`MAX_TOKEN_BYTES`], else `TooLarge`);
//! 2. structure: three base64url segments (unpadded), a JSON-object header and payload (`Malformed`; duplicate
//!    top-level claim names and a `crit` header are `Malformed` too);
//! 3. issuer: the *unverified* `iss` is read only to pick the issuer (`UnknownIssuer`; no `iss`: `MissingClaim`);
//! 4. header: `alg` in the issuer's allowlist (`AlgorithmNotAllowed`, which is also what `none` and `HS*` get),
//!    `kid` present and one of the issuer's keys (`UnknownKey`), the key fits `alg` (`AlgorithmNotAllowed`);
//! 5. signature (`BadSignature`), by `jsonwebtoken::crypto::verify` with the pre-parsed key;
//! 6. claims, only now trusted: the agent claim (default `sub`, a non-empty string), `exp` and `iat` (required
//!    NumericDates), `nbf` (optional), `aud` (required, string or array), `jti` (optional string) present with the
//!    right type (`MissingClaim`); then `exp` (`Expired` once `now >= exp + skew`: `exp` itself is excluded, RFC 7519
//!    section 4.1.4), `nbf` (`NotYetValid` when `nbf > now + skew`), `iat` (`IssuedInFuture` when `iat > now + skew`),
//!    `exp - iat` at most `max_token_lifetime_seconds` (`LifetimeTooLong`), and `aud` naming at least one of the
//!    issuer's audiences (`WrongAudience`).
//!
//! `jsonwebtoken`'s own claim validation is not used: every time check is made here against the caller's `now`
//! (the core never reads a clock). The JWT `typ` header is not enforced yet (no per-issuer profile).
//!
//! # Facts
//!
//! `agent.id` is the mapped claim, `agent.trust_domain` the host of a `spiffe://` id (else of a URL id, else empty),
//! `token_id` the `jti`, `expires_at` the `exp`; task context comes from the configured task claims when the token
//! carries the task id claim.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::bundle::{ClaimMapping, Issuer};
use crate::compile::ValidationError;
use crate::facts::{Agent, Task, TokenFailure};

/// Largest accepted token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Largest `clock_skew_seconds` an issuer may configure.
pub const MAX_CLOCK_SKEW_SECONDS: u64 = 300;

/// The algorithms an issuer may allow.
pub const SUPPORTED_ALGORITHMS: &[&str] =
    &["EdDSA", "ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"];

/// The trusted issuers of a bundle with their keys parsed once at compile time.
#[derive(Debug, Default)]
pub struct IssuerSet {
    issuers: Vec<CompiledIssuer>,
    by_iss: HashMap<String, usize>,
}

struct CompiledIssuer {
    id: String,
    iss: String,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    keys: HashMap<String, IssuerKey>,
    max_lifetime: i64,
    skew: i64,
    claims: ClaimMapping,
}

impl fmt::Debug for CompiledIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("Issuer")
            .field("id", &self.id)
            .field("iss", &self.iss)
            .field("audiences", &self.audiences)
            .field("algorithms", &self.algorithms)
            .field("kids", &kids)
            .field("max_lifetime", &self.max_lifetime)
            .field("skew", &self.skew)
            .finish_non_exhaustive()
    }
}

struct IssuerKey {
    key: DecodingKey,
    /// The issuer's algorithms this key's type fits.
    algorithms: Vec<Algorithm>,
}

impl IssuerSet {
    /// Validates the bundle's issuers and parses their keys once. Reports every problem, each with its location
    /// (`/issuers/2/jwks/keys/0`).
    pub fn compile(issuers: &[Issuer]) -> Result<IssuerSet, Vec<ValidationError>> {
        let mut errors = Vec::new();
        let mut set = IssuerSet::default();
        let mut ids: HashMap<&str, usize> = HashMap::new();
        for (i, issuer) in issuers.iter().enumerate() {
            let at = |field: &str| format!("/issuers/{i}/{field}");
            let mut err = |location: String, message: String| errors.push(ValidationError { location, message });
            let id_ok = valid_id(&issuer.id);
            if !id_ok {
                err(at("id"), format!("bad issuer id {:?}: use [a-z0-9][a-z0-9._-]*", issuer.id));
            } else if let Some(first) = ids.insert(&issuer.id, i) {
                ids.insert(&issuer.id, first);
                err(at("id"), format!("duplicate issuer id {:?} (also /issuers/{first}/id)", issuer.id));
            }
            if issuer.iss.is_empty() {
                err(at("iss"), "must not be empty".to_string());
            } else if let Some(first) = set.by_iss.get(&issuer.iss) {
                err(at("iss"), format!("duplicate iss {:?} (also /issuers/{first}/iss)", issuer.iss));
            }
            if issuer.audiences.is_empty() {
                err(at("audiences"), "at least one audience is required".to_string());
            }
            for (k, aud) in issuer.audiences.iter().enumerate() {
                if aud.is_empty() {
                    err(format!("/issuers/{i}/audiences/{k}"), "must not be empty".to_string());
                }
            }
            let algorithms = compile_algorithms(i, &issuer.algorithms, &mut err);
            if issuer.max_token_lifetime_seconds == 0 {
                err(at("max_token_lifetime_seconds"), "must be at least 1".to_string());
            }
            let max_lifetime = i64::try_from(issuer.max_token_lifetime_seconds).unwrap_or(i64::MAX);
            if issuer.clock_skew_seconds > MAX_CLOCK_SKEW_SECONDS {
                err(at("clock_skew_seconds"), format!("must be at most 300, found {}", issuer.clock_skew_seconds));
            }
            let skew = i64::try_from(issuer.clock_skew_seconds.min(MAX_CLOCK_SKEW_SECONDS)).unwrap_or(0);
            compile_claims(i, &issuer.claims, &mut err);
            let keys = compile_keys(i, &issuer.jwks.keys, &issuer.algorithms, &algorithms, &mut err);
            if !issuer.iss.is_empty() && !set.by_iss.contains_key(&issuer.iss) {
                set.by_iss.insert(issuer.iss.clone(), set.issuers.len());
            }
            set.issuers.push(CompiledIssuer {
                id: issuer.id.clone(),
                iss: issuer.iss.clone(),
                audiences: issuer.audiences.clone(),
                algorithms,
                keys,
                max_lifetime,
                skew,
                claims: issuer.claims.clone(),
            });
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }

    /// Whether an issuer with this id is trusted.
    pub fn contains(&self, issuer_id: &str) -> bool {
        self.issuers.iter().any(|i| i.id == issuer_id)
    }

    /// Number of issuers.
    pub fn len(&self) -> usize {
        self.issuers.len()
    }

    /// Whether the bundle trusts no issuer (every token is then `UnknownIssuer`).
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// The issuer ids, in bundle order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.issuers.iter().map(|i| i.id.as_str())
    }
}

fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

fn parse_algorithm(alg: &str) -> Option<Algorithm> {
    Some(match alg {
        "EdDSA" => Algorithm::EdDSA,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        _ => return None,
    })
}

fn compile_algorithms(i: usize, names: &[String], err: &mut impl FnMut(String, String)) -> Vec<Algorithm> {
    if names.is_empty() {
        err(format!("/issuers/{i}/algorithms"), "at least one algorithm is required".to_string());
    }
    let mut out = Vec::new();
    for (k, name) in names.iter().enumerate() {
        let location = format!("/issuers/{i}/algorithms/{k}");
        match parse_algorithm(name) {
            Some(alg) if out.contains(&alg) => err(location, format!("duplicate algorithm {name:?}")),
            Some(alg) => out.push(alg),
            None if name.eq_ignore_ascii_case("none") => {
                err(location, format!("{name:?} is never accepted: tokens must be signed"))
            }
            None if name.starts_with("HS") => err(
                location,
                format!("{name:?} is symmetric (HMAC): agent tokens must be signed with an asymmetric key"),
            ),
            None => err(
                location,
                format!("unsupported algorithm {name:?} (supported: {})", SUPPORTED_ALGORITHMS.join(", ")),
            ),
        }
    }
    out
}

fn compile_claims(i: usize, claims: &ClaimMapping, err: &mut impl FnMut(String, String)) {
    if claims.agent_id.is_empty() {
        err(format!("/issuers/{i}/claims/agent_id"), "must not be empty".to_string());
    }
    for (field, value) in [
        ("task_id", &claims.task_id),
        ("task_purpose", &claims.task_purpose),
        ("task_expires_at", &claims.task_expires_at),
    ] {
        if value.as_deref() == Some("") {
            err(format!("/issuers/{i}/claims/{field}"), "must not be empty".to_string());
        }
    }
    if claims.task_id.is_none() {
        for (field, value) in [("task_purpose", &claims.task_purpose), ("task_expires_at", &claims.task_expires_at)] {
            if value.is_some() {
                err(format!("/issuers/{i}/claims/{field}"), "needs claims.task_id (task context starts there)".into());
            }
        }
    }
}

/// Which algorithms a key type fits.
fn fits(kty: &KeyType, alg: Algorithm) -> bool {
    match kty {
        KeyType::Ed25519 => alg == Algorithm::EdDSA,
        KeyType::P256 => alg == Algorithm::ES256,
        KeyType::P384 => alg == Algorithm::ES384,
        KeyType::Rsa => matches!(
            alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ),
    }
}

enum KeyType {
    Ed25519,
    P256,
    P384,
    Rsa,
}

impl KeyType {
    fn describe(&self) -> &'static str {
        match self {
            KeyType::Ed25519 => "an OKP Ed25519 key",
            KeyType::P256 => "an EC P-256 key",
            KeyType::P384 => "an EC P-384 key",
            KeyType::Rsa => "an RSA key",
        }
    }
}

const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

fn compile_keys(
    i: usize,
    jwks: &[Value],
    algorithm_names: &[String],
    algorithms: &[Algorithm],
    err: &mut impl FnMut(String, String),
) -> HashMap<String, IssuerKey> {
    let mut keys = HashMap::new();
    if jwks.is_empty() {
        err(format!("/issuers/{i}/jwks/keys"), "at least one key is required".to_string());
    }
    let mut first_at: HashMap<String, usize> = HashMap::new();
    for (k, jwk) in jwks.iter().enumerate() {
        let location = format!("/issuers/{i}/jwks/keys/{k}");
        match compile_key(jwk, algorithm_names, algorithms) {
            Ok((kid, key)) => {
                if let Some(first) = first_at.get(&kid) {
                    err(location, format!("duplicate kid {kid:?} (also /issuers/{i}/jwks/keys/{first})"));
                } else {
                    first_at.insert(kid.clone(), k);
                    keys.insert(kid, key);
                }
            }
            Err(message) => err(location, message),
        }
    }
    keys
}

fn compile_key(
    jwk: &Value,
    algorithm_names: &[String],
    algorithms: &[Algorithm],
) -> Result<(String, IssuerKey), String> {
    let obj = jwk.as_object().ok_or("a JWK must be a JSON object")?;
    let text = |name: &str| -> Result<Option<&str>, String> {
        match obj.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("\"{name}\" must be a string")),
        }
    };
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        let s = text(name)?.ok_or_else(|| format!("\"{name}\" is missing"))?;
        URL_SAFE_NO_PAD.decode(s).map_err(|e| format!("\"{name}\" is not unpadded base64url: {e}"))
    };
    let exact = |name: &str, len: usize| -> Result<Vec<u8>, String> {
        let b = bytes(name)?;
        if b.len() != len {
            return Err(format!("\"{name}\" must be {len} bytes, found {}", b.len()));
        }
        Ok(b)
    };
    let kty_name = text("kty")?.ok_or("\"kty\" is missing")?;
    if kty_name == "oct" {
        return Err("symmetric key (kty \"oct\") is never accepted: issuer keys must be public keys".to_string());
    }
    let kid = text("kid")?.ok_or("\"kid\" is missing: every issuer key needs a key id")?;
    if kid.is_empty() {
        return Err("\"kid\" must not be empty".to_string());
    }
    if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| obj.contains_key(**m)) {
        return Err(format!("private key material ({member:?}) in a public key set"));
    }
    if let Some(u) = text("use")? {
        if u != "sig" {
            return Err(format!("\"use\" is {u:?}, expected \"sig\""));
        }
    }
    let crv = text("crv")?;
    let (kty, key) = match (kty_name, crv) {
        ("OKP", Some("Ed25519")) => {
            let x = exact("x", 32)?;
            let raw: [u8; 32] = x.as_slice().try_into().map_err(|_| "\"x\" must be 32 bytes".to_string())?;
            match ed25519_dalek::VerifyingKey::from_bytes(&raw) {
                Ok(k) if !k.is_weak() => {}
                _ => return Err("\"x\" is not a valid Ed25519 public key".to_string()),
            }
            // jsonwebtoken's EdDSA verifier reads the key bytes as the raw 32-byte public key (its `from_ed_der`
            // stores them as given); the length was checked above, which its verifier relies on.
            (KeyType::Ed25519, DecodingKey::from_ed_der(&x))
        }
        ("EC", Some("P-256")) => {
            let sec1 = [vec![0x04], exact("x", 32)?, exact("y", 32)?].concat();
            p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                .map_err(|_| "\"x\"/\"y\" is not a point on P-256".to_string())?;
            // The ECDSA verifiers read the key bytes as an uncompressed SEC1 point.
            (KeyType::P256, DecodingKey::from_ec_der(&sec1))
        }
        ("EC", Some("P-384")) => {
            let sec1 = [vec![0x04], exact("x", 48)?, exact("y", 48)?].concat();
            p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                .map_err(|_| "\"x\"/\"y\" is not a point on P-384".to_string())?;
            (KeyType::P384, DecodingKey::from_ec_der(&sec1))
        }
        ("RSA", _) => {
            let n = bytes("n")?;
            let e = bytes("e")?;
            let n_bits = significant_bits(&n);
            if !(2048..=4096).contains(&n_bits) {
                return Err(format!("RSA modulus \"n\" must be 2048 to 4096 bits, found {n_bits}"));
            }
            let e_bits = significant_bits(&e);
            if !(2..=33).contains(&e_bits) || e.last().is_none_or(|b| b & 1 == 0) {
                return Err("RSA exponent \"e\" must be odd, at least 3 and at most 33 bits".to_string());
            }
            (KeyType::Rsa, DecodingKey::from_rsa_raw_components(&n, &e))
        }
        ("OKP", c) | ("EC", c) => {
            return Err(format!(
                "unsupported curve {} for kty {kty_name:?} (supported: Ed25519, P-256, P-384)",
                c.map_or("(missing crv)".to_string(), |c| format!("{c:?}"))
            ))
        }
        (other, _) => return Err(format!("unsupported kty {other:?} (supported: OKP, EC, RSA)")),
    };
    let mut usable: Vec<Algorithm> = algorithms.iter().copied().filter(|a| fits(&kty, *a)).collect();
    if let Some(alg_name) = text("alg")? {
        let alg = parse_algorithm(alg_name)
            .ok_or_else(|| format!("key \"alg\" {alg_name:?} is not an accepted signature algorithm"))?;
        if !fits(&kty, alg) {
            return Err(format!("key \"alg\" {alg_name:?} does not fit {}", kty.describe()));
        }
        if !algorithms.contains(&alg) && !algorithms.is_empty() {
            return Err(format!("key \"alg\" {alg_name:?} is not in the issuer's algorithms"));
        }
        usable.retain(|a| *a == alg);
    }
    if usable.is_empty() && !algorithms.is_empty() {
        return Err(format!(
            "{} fits none of the issuer's algorithms [{}]",
            kty.describe(),
            algorithm_names.join(", ")
        ));
    }
    Ok((kid.to_string(), IssuerKey { key, algorithms: usable }))
}

fn significant_bits(be: &[u8]) -> usize {
    match be.iter().position(|b| *b != 0) {
        Some(first) => (be.len() - first - 1) * 8 + (8 - be[first].leading_zeros() as usize),
        None => 0,
    }
}

/// Extracts the token from an `Authorization` header value: the scheme `Bearer` (any case), exactly one space, then
/// a non-empty token without whitespace or control characters. Anything else is `Malformed`.
pub fn bearer_token(header_value: &str) -> Result<&str, TokenFailure> {
    let scheme = header_value.get(..7).ok_or(TokenFailure::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer ") {
        return Err(TokenFailure::Malformed);
    }
    let token = &header_value[7..];
    if token.is_empty() || token.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b >= 0x80) {
        return Err(TokenFailure::Malformed);
    }
    Ok(token)
}

/// The trust domain of an agent id: the host of a `spiffe://` id, else of a URL (`scheme://host/...`), else empty.
pub fn trust_domain(agent_id: &str) -> &str {
    let Some((_, rest)) = agent_id.split_once("://") else { return "" };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or("");
    }
    host.split(':').next().unwrap_or("")
}

#[derive(Deserialize)]
struct TokenHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

/// A JSON object's top-level members, refusing duplicate names (a parser differential on `iss` or `sub` is an
/// attack; serde_json's `Value` would silently keep the last).
struct Claims(BTreeMap<String, Value>);

impl<'de> Deserialize<'de> for Claims {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Claims;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Claims, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    if out.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!("duplicate claim {k:?}")));
                    }
                    out.insert(k, v);
                }
                Ok(Claims(out))
            }
        }
        deserializer.deserialize_map(V)
    }
}

fn numeric_date(v: Option<&Value>) -> Result<Option<i64>, TokenFailure> {
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() && f.abs() < 1e15 => Ok(Some(f.floor() as i64)),
                    _ => Err(TokenFailure::MissingClaim),
                }
            }
        }
        Some(_) => Err(TokenFailure::MissingClaim),
    }
}

fn string_claim(v: Option<&Value>) -> Result<Option<&str>, TokenFailure> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(TokenFailure::MissingClaim),
    }
}

/// Verifies an agent token against the issuers (see the module doc for the order of checks).
pub fn verify(issuers: &IssuerSet, token: &str, now: i64) -> Result<Agent, TokenFailure> {
    // 1. size
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenFailure::TooLarge);
    }
    // 2. structure
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenFailure::Malformed);
    };
    let header = URL_SAFE_NO_PAD.decode(header_b64).map_err(|_| TokenFailure::Malformed)?;
    let payload = URL_SAFE_NO_PAD.decode(payload_b64).map_err(|_| TokenFailure::Malformed)?;
    let signature = URL_SAFE_NO_PAD.decode(signature_b64).map_err(|_| TokenFailure::Malformed)?;
    let header: TokenHeader = serde_json::from_slice(&header).map_err(|_| TokenFailure::Malformed)?;
    if header.crit.is_some() {
        return Err(TokenFailure::Malformed);
    }
    // Parsed now, trusted only after the signature: `iss` picks the issuer and nothing else is read before step 6.
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenFailure::Malformed)?;
    let claims = claims.0;

    // 3. issuer
    let iss = string_claim(claims.get("iss"))?.ok_or(TokenFailure::MissingClaim)?;
    let issuer = issuers.by_iss.get(iss).and_then(|i| issuers.issuers.get(*i)).ok_or(TokenFailure::UnknownIssuer)?;

    // 4. header
    let alg = parse_algorithm(&header.alg)
        .filter(|a| issuer.algorithms.contains(a))
        .ok_or(TokenFailure::AlgorithmNotAllowed)?;
    let kid = header.kid.ok_or(TokenFailure::UnknownKey)?;
    let key = issuer.keys.get(&kid).ok_or(TokenFailure::UnknownKey)?;
    if !key.algorithms.contains(&alg) {
        return Err(TokenFailure::AlgorithmNotAllowed);
    }

    // 5. signature
    if signature.is_empty() {
        return Err(TokenFailure::BadSignature);
    }
    let signing_input = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
    match jsonwebtoken::crypto::verify(signature_b64, signing_input, &key.key, alg) {
        Ok(true) => {}
        _ => return Err(TokenFailure::BadSignature),
    }

    // 6. claims
    let agent_id = string_claim(claims.get(&issuer.claims.agent_id))?
        .filter(|s| !s.is_empty())
        .ok_or(TokenFailure::MissingClaim)?;
    let exp = numeric_date(claims.get("exp"))?.ok_or(TokenFailure::MissingClaim)?;
    let iat = numeric_date(claims.get("iat"))?.ok_or(TokenFailure::MissingClaim)?;
    let nbf = numeric_date(claims.get("nbf"))?;
    let aud = claims.get("aud").ok_or(TokenFailure::MissingClaim)?;
    let token_id = string_claim(claims.get("jti"))?.map(str::to_string);
    let task = match &issuer.claims.task_id {
        Some(name) => match string_claim(claims.get(name))? {
            Some(id) => Some(Task {
                id: id.to_string(),
                purpose: match &issuer.claims.task_purpose {
                    Some(p) => string_claim(claims.get(p))?.map(str::to_string),
                    None => None,
                },
                expires_at: match &issuer.claims.task_expires_at {
                    Some(e) => numeric_date(claims.get(e))?,
                    None => None,
                },
            }),
            None => None,
        },
        None => None,
    };
    let skew = issuer.skew;
    if now >= exp.saturating_add(skew) {
        return Err(TokenFailure::Expired);
    }
    if let Some(nbf) = nbf {
        if nbf > now.saturating_add(skew) {
            return Err(TokenFailure::NotYetValid);
        }
    }
    if iat > now.saturating_add(skew) {
        return Err(TokenFailure::IssuedInFuture);
    }
    if exp.saturating_sub(iat) > issuer.max_lifetime {
        return Err(TokenFailure::LifetimeTooLong);
    }
    let audience_ok = match aud {
        Value::String(a) => issuer.audiences.iter().any(|x| x == a),
        Value::Array(list) => {
            let mut ok = false;
            for a in list {
                let a = a.as_str().ok_or(TokenFailure::MissingClaim)?;
                ok |= issuer.audiences.iter().any(|x| x == a);
            }
            ok
        }
        _ => return Err(TokenFailure::MissingClaim),
    };
    if !audience_ok {
        return Err(TokenFailure::WrongAudience);
    }
    Ok(Agent {
        id: agent_id.to_string(),
        trust_domain: trust_domain(agent_id).to_string(),
        issuer: issuer.id.clone(),
        token_id,
        expires_at: exp,
        task,
    })
}
