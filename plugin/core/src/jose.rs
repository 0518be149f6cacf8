//! JOSE, written once for every signed thing Warden reads: agent tokens and Transaction Tokens ([`crate::identity`]),
//! step-up approvals ([`crate::approval`]) and bundle envelopes ([`crate::envelope`]). Here: the algorithm set
//! ([`Alg`]), the compact serialization reader ([`split_compact`], [`decode`]), the protected header and the claims
//! (duplicate names refused), `typ` comparison (RFC 7515 section 4.1.9), and verification keys, parsed once from
//! JWKs into their own signature crate's types ([`compile_keys`], [`VerifyKey::verify`]). Each caller keeps its own
//! refusal vocabulary and its order of checks.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// A JWS signature algorithm Warden verifies (asymmetric only; `none` and `HS*` are never accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    EdDSA,
    ES256,
    ES384,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
}

impl Alg {
    /// Parses a JOSE `alg` value (exact, case-sensitive).
    pub fn parse(alg: &str) -> Option<Alg> {
        Some(match alg {
            "EdDSA" => Alg::EdDSA,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            _ => return None,
        })
    }

    /// The JOSE `alg` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::EdDSA => "EdDSA",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
        }
    }
}

/// Largest accepted token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Largest `clock_skew_seconds` an issuer may configure.
pub const MAX_CLOCK_SKEW_SECONDS: u64 = 300;

/// The algorithms an issuer may allow.
pub const SUPPORTED_ALGORITHMS: &[&str] =
    &["EdDSA", "ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"];

/// The three segments of a compact serialization: the header ends at the first dot, the signature starts after the
/// last one, and the payload between them holds no dot. `None` for any other number of segments. (The payload is
/// most of the input: it is searched with `contains`, a word-at-a-time scan, not byte by byte.)
pub(crate) fn split_compact(signed: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let first = signed.iter().position(|b| *b == b'.')?;
    let last = signed.iter().rposition(|b| *b == b'.')?;
    let (header, rest) = signed.split_at(first);
    let payload = rest.get(1..last - first)?;
    let signature = signed.get(last + 1..)?;
    if payload.contains(&b'.') {
        return None;
    }
    Some((header, payload, signature))
}

/// One segment, unpadded base64url.
pub(crate) fn decode(segment: &[u8]) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(segment)
}

/// Unpadded base64url.
pub(crate) fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWK's members as Warden reads them, for every key it parses (token issuers, approvers, the bundle
/// authority); each message names the member.
pub(crate) struct JwkFields<'a>(&'a serde_json::Map<String, Value>);

impl<'a> JwkFields<'a> {
    pub(crate) fn of(jwk: &'a Value) -> Result<JwkFields<'a>, String> {
        jwk.as_object().map(JwkFields).ok_or_else(|| "a JWK must be a JSON object".to_string())
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// A string member, if present.
    pub(crate) fn text(&self, name: &str) -> Result<Option<&'a str>, String> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("\"{name}\" must be a string")),
        }
    }

    /// A required unpadded base64url member.
    pub(crate) fn bytes(&self, name: &str) -> Result<Vec<u8>, String> {
        let s = self.text(name)?.ok_or_else(|| format!("\"{name}\" is missing"))?;
        URL_SAFE_NO_PAD.decode(s).map_err(|e| format!("\"{name}\" is not unpadded base64url: {e}"))
    }

    /// A required unpadded base64url member of exactly `len` bytes.
    pub(crate) fn exact(&self, name: &str, len: usize) -> Result<Vec<u8>, String> {
        let b = self.bytes(name)?;
        if b.len() != len {
            return Err(format!("\"{name}\" must be {len} bytes, found {}", b.len()));
        }
        Ok(b)
    }

    /// `use`, when present, must be `sig`.
    pub(crate) fn check_use(&self) -> Result<(), String> {
        match self.text("use")? {
            Some(u) if u != "sig" => Err(format!("\"use\" is {u:?}, expected \"sig\"")),
            _ => Ok(()),
        }
    }

    /// A P-256 public key from `x` and `y`.
    pub(crate) fn p256(&self) -> Result<p256::ecdsa::VerifyingKey, String> {
        let sec1 = [vec![0x04], self.exact("x", 32)?, self.exact("y", 32)?].concat();
        p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| "\"x\"/\"y\" is not a point on P-256".to_string())
    }

    /// An Ed25519 public key from `x` (weak keys are the caller's to refuse, with its own message).
    pub(crate) fn ed25519(&self) -> Result<ed25519_dalek::VerifyingKey, String> {
        let x = self.exact("x", 32)?;
        let raw: [u8; 32] = x.as_slice().try_into().map_err(|_| "\"x\" must be 32 bytes".to_string())?;
        ed25519_dalek::VerifyingKey::from_bytes(&raw).map_err(|_| "\"x\" is not a valid Ed25519 public key".to_string())
    }
}

/// A compact JWT (agent token, Transaction Token, approval) read into its parts: header and claims parsed (the
/// claims are trusted only once the signature verified), the signature decoded, and the signing input.
pub(crate) struct Jwt<'t> {
    pub(crate) header: TokenHeader,
    pub(crate) claims: BTreeMap<String, Value>,
    pub(crate) signature: Vec<u8>,
    /// The first two segments exactly as received.
    pub(crate) signing_input: &'t [u8],
    /// Decoded payload length.
    pub(crate) payload_len: usize,
}

impl<'t> Jwt<'t> {
    /// Three unpadded base64url segments, a JSON-object header without `crit`, a JSON-object payload without
    /// duplicate member names. `None` otherwise (every caller refuses that as malformed).
    pub(crate) fn read(token: &'t str) -> Option<Jwt<'t>> {
        let (header_b64, payload_b64, signature_b64) = split_compact(token.as_bytes())?;
        let header = decode(header_b64).ok()?;
        let payload = decode(payload_b64).ok()?;
        let signature = decode(signature_b64).ok()?;
        let header: TokenHeader = serde_json::from_slice(&header).ok()?;
        if header.crit.is_some() {
            return None;
        }
        let Claims(claims) = serde_json::from_slice(&payload).ok()?;
        let signing_input = token.as_bytes().get(..header_b64.len() + 1 + payload_b64.len())?;
        Some(Jwt { header, claims, signature, signing_input, payload_len: payload.len() })
    }
}

pub(crate) struct IssuerKey {
    pub(crate) key: VerifyKey,
    /// The issuer's algorithms this key's type fits.
    pub(crate) algorithms: Vec<Alg>,
}

/// Whose keys and algorithms are being compiled: issuers (agent tokens) or approvers (step-up approvals, see
/// [`crate::approval`]), for the error locations and messages.
#[derive(Clone, Copy)]
pub(crate) struct KeyOwner<'a> {
    /// JSON pointer of the entry, e.g. `/issuers/2`.
    pub(crate) at: &'a str,
    /// `issuer` or `approver`.
    pub(crate) noun: &'static str,
    /// What its keys sign, e.g. `agent tokens`.
    pub(crate) signs: &'static str,
}

/// An issuer or approver key, parsed once by its own signature crate.
pub(crate) enum VerifyKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    /// An Ed25519 key with a fixed-base table of its negated point, for the keys that verify on the request path
    /// (token issuers, [`VerifyKey::precompute`]).
    Ed25519Table(Box<Ed25519Table>),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Rsa(rsa::PublicKey),
}

impl VerifyKey {
    /// Whether `signature` (already base64-decoded) signs `input` under this key with `alg`. An algorithm that does
    /// not fit the key type fails (the caller has already checked that it fits).
    pub(crate) fn verify(&self, alg: Alg, input: &[u8], signature: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier as _;
        use sha2::{Digest as _, Sha256, Sha384, Sha512};
        match (self, alg) {
            (VerifyKey::Ed25519(k), Alg::EdDSA) => ed25519_verify(k, input, signature),
            (VerifyKey::Ed25519Table(t), Alg::EdDSA) => t.verify(input, signature),
            (VerifyKey::P256(k), Alg::ES256) => {
                p256::ecdsa::Signature::from_slice(signature).is_ok_and(|s| k.verify(input, &s).is_ok())
            }
            (VerifyKey::P384(k), Alg::ES384) => {
                p384::ecdsa::Signature::from_slice(signature).is_ok_and(|s| k.verify(input, &s).is_ok())
            }
            (VerifyKey::Rsa(k), Alg::RS256) => {
                k.verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(input), signature).is_ok()
            }
            (VerifyKey::Rsa(k), Alg::RS384) => {
                k.verify(rsa::Pkcs1v15Sign::new::<Sha384>(), &Sha384::digest(input), signature).is_ok()
            }
            (VerifyKey::Rsa(k), Alg::RS512) => {
                k.verify(rsa::Pkcs1v15Sign::new::<Sha512>(), &Sha512::digest(input), signature).is_ok()
            }
            (VerifyKey::Rsa(k), Alg::PS256) => {
                k.verify(rsa::Pss::<Sha256>::new(), &Sha256::digest(input), signature).is_ok()
            }
            (VerifyKey::Rsa(k), Alg::PS384) => {
                k.verify(rsa::Pss::<Sha384>::new(), &Sha384::digest(input), signature).is_ok()
            }
            (VerifyKey::Rsa(k), Alg::PS512) => {
                k.verify(rsa::Pss::<Sha512>::new(), &Sha512::digest(input), signature).is_ok()
            }
            _ => false,
        }
    }
}

impl VerifyKey {
    /// The same key, made faster to verify with at the cost of a one-time table (Ed25519: 30 KiB and about 25
    /// verifications' work, built when the bundle compiles); other key types are returned as they are.
    pub(crate) fn precompute(self) -> VerifyKey {
        match self {
            VerifyKey::Ed25519(key) => VerifyKey::Ed25519Table(Box::new(Ed25519Table::new(key))),
            other => other,
        }
    }
}

/// An Ed25519 public key `A` with the radix-16 fixed-base table of `-A` (curve25519-dalek's
/// `EdwardsBasepointTable`, the form the crate keeps for the base point `B`).
pub(crate) struct Ed25519Table {
    key: ed25519_dalek::VerifyingKey,
    minus_a: curve25519_dalek::edwards::EdwardsBasepointTable,
}

impl Ed25519Table {
    fn new(key: ed25519_dalek::VerifyingKey) -> Ed25519Table {
        use curve25519_dalek::traits::BasepointTable as _;
        let minus_a = -curve25519_dalek::edwards::EdwardsPoint::from(key);
        Ed25519Table { key, minus_a: curve25519_dalek::edwards::EdwardsBasepointTable::create(&minus_a) }
    }

    /// [`ed25519_verify`] with the table: the same checks and the same equation, `R = [s]B + [k](-A)` compared as
    /// canonical encodings, with `k = SHA-512(R || A || input) mod l` over the key's own 32 bytes; only the two
    /// scalar multiplications are computed differently (both fixed-base, without the doublings of a double-scalar
    /// multiplication).
    fn verify(&self, input: &[u8], signature: &[u8]) -> bool {
        use curve25519_dalek::edwards::EdwardsPoint;
        use curve25519_dalek::scalar::Scalar;
        use sha2::{Digest as _, Sha512};
        let Ok(signature) = <&[u8; 64]>::try_from(signature) else { return false };
        let (r, s) = signature.split_at(32);
        let (Ok(r), Ok(s)) = (<[u8; 32]>::try_from(r), <[u8; 32]>::try_from(s)) else { return false };
        if small_order_encodings().contains(&r) {
            return false;
        }
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s)) else { return false };
        let hash: [u8; 64] =
            Sha512::new().chain_update(r).chain_update(self.key.as_bytes()).chain_update(input).finalize().into();
        let k = Scalar::from_bytes_mod_order_wide(&hash);
        let expected = EdwardsPoint::mul_base(&s) + &self.minus_a * &k;
        expected.compress().to_bytes() == r
    }
}

/// Ed25519 exactly as strict as `ed25519_dalek::VerifyingKey::verify_strict`, without its second point
/// decompression (≈ 10 % of a verification in wasm).
///
/// Both `verify` and `verify_strict` recompute `R' = [s]B - [k]A` and compare its canonical encoding with the
/// signature's `R` bytes, after refusing a non-canonical `s`. `verify_strict` also decompresses `R` and refuses a
/// small-order `R` or `A`. A weak (small-order) `A` is refused once, when the key is compiled; and once the bytes
/// of `R` equal a canonical encoding, `R` is small-order exactly when those bytes are one of the eight canonical
/// encodings of the small-order points, compared here without any field arithmetic.
fn ed25519_verify(key: &ed25519_dalek::VerifyingKey, input: &[u8], signature: &[u8]) -> bool {
    use ed25519_dalek::Verifier as _;
    let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else { return false };
    !small_order_encodings().contains(signature.r_bytes()) && key.verify(input, &signature).is_ok()
}

/// The canonical encodings of the eight points of small order (the eight-torsion subgroup).
fn small_order_encodings() -> &'static [[u8; 32]; 8] {
    static ENCODINGS: std::sync::OnceLock<[[u8; 32]; 8]> = std::sync::OnceLock::new();
    ENCODINGS.get_or_init(|| curve25519_dalek::constants::EIGHT_TORSION.map(|p| p.compress().to_bytes()))
}

pub(crate) fn parse_algorithm(alg: &str) -> Option<Alg> {
    Alg::parse(alg)
}

pub(crate) fn compile_algorithms(
    owner: KeyOwner<'_>,
    names: &[String],
    err: &mut impl FnMut(String, String),
) -> Vec<Alg> {
    let at = owner.at;
    if names.is_empty() {
        err(format!("{at}/algorithms"), "at least one algorithm is required".to_string());
    }
    let mut out = Vec::new();
    for (k, name) in names.iter().enumerate() {
        let location = format!("{at}/algorithms/{k}");
        match parse_algorithm(name) {
            Some(alg) if out.contains(&alg) => err(location, format!("duplicate algorithm {name:?}")),
            Some(alg) => out.push(alg),
            None if name.eq_ignore_ascii_case("none") => {
                err(location, format!("{name:?} is never accepted: tokens must be signed"))
            }
            None if name.starts_with("HS") => err(
                location,
                format!("{name:?} is symmetric (HMAC): {} must be signed with an asymmetric key", owner.signs),
            ),
            None => err(
                location,
                format!("unsupported algorithm {name:?} (supported: {})", SUPPORTED_ALGORITHMS.join(", ")),
            ),
        }
    }
    out
}

/// Which algorithms a key type fits.
fn fits(kty: &KeyType, alg: Alg) -> bool {
    match kty {
        KeyType::Ed25519 => alg == Alg::EdDSA,
        KeyType::P256 => alg == Alg::ES256,
        KeyType::P384 => alg == Alg::ES384,
        KeyType::Rsa => matches!(alg, Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512),
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

pub(crate) fn compile_keys(
    owner: KeyOwner<'_>,
    jwks: &[Value],
    algorithm_names: &[String],
    algorithms: &[Alg],
    err: &mut impl FnMut(String, String),
) -> HashMap<String, IssuerKey> {
    let at = owner.at;
    let mut keys = HashMap::new();
    if jwks.is_empty() {
        err(format!("{at}/jwks/keys"), "at least one key is required".to_string());
    }
    let mut first_at: HashMap<String, usize> = HashMap::new();
    for (k, jwk) in jwks.iter().enumerate() {
        let location = format!("{at}/jwks/keys/{k}");
        match compile_key(jwk, algorithm_names, algorithms, owner.noun) {
            Ok((kid, key)) => {
                if let Some(first) = first_at.get(&kid) {
                    err(location, format!("duplicate kid {kid:?} (also {at}/jwks/keys/{first})"));
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
    algorithms: &[Alg],
    noun: &str,
) -> Result<(String, IssuerKey), String> {
    let f = JwkFields::of(jwk)?;
    let text = |name: &str| f.text(name);
    let bytes = |name: &str| f.bytes(name);
    let kty_name = text("kty")?.ok_or("\"kty\" is missing")?;
    if kty_name == "oct" {
        return Err(format!("symmetric key (kty \"oct\") is never accepted: {noun} keys must be public keys"));
    }
    let kid = text("kid")?.ok_or_else(|| format!("\"kid\" is missing: every {noun} key needs a key id"))?;
    if kid.is_empty() {
        return Err("\"kid\" must not be empty".to_string());
    }
    if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| f.has(m)) {
        return Err(format!("private key material ({member:?}) in a public key set"));
    }
    f.check_use()?;
    let crv = text("crv")?;
    let (kty, key) = match (kty_name, crv) {
        ("OKP", Some("Ed25519")) => match f.ed25519() {
            Ok(k) if !k.is_weak() => (KeyType::Ed25519, VerifyKey::Ed25519(k)),
            Ok(_) => return Err("\"x\" is not a valid Ed25519 public key".to_string()),
            Err(e) => return Err(e),
        },
        ("EC", Some("P-256")) => (KeyType::P256, VerifyKey::P256(f.p256()?)),
        ("EC", Some("P-384")) => {
            let sec1 = [vec![0x04], f.exact("x", 48)?, f.exact("y", 48)?].concat();
            let k = p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                .map_err(|_| "\"x\"/\"y\" is not a point on P-384".to_string())?;
            (KeyType::P384, VerifyKey::P384(k))
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
            let k = rsa::PublicKey::new(
                rsa::BoxedUint::from_be_slice_vartime(&n),
                rsa::BoxedUint::from_be_slice_vartime(&e),
            )
            .map_err(|_| "\"n\"/\"e\" is not a valid RSA public key (the modulus must be odd)".to_string())?;
            (KeyType::Rsa, VerifyKey::Rsa(k))
        }
        ("OKP", c) | ("EC", c) => {
            return Err(format!(
                "unsupported curve {} for kty {kty_name:?} (supported: Ed25519, P-256, P-384)",
                c.map_or("(missing crv)".to_string(), |c| format!("{c:?}"))
            ))
        }
        (other, _) => return Err(format!("unsupported kty {other:?} (supported: OKP, EC, RSA)")),
    };
    let mut usable: Vec<Alg> = algorithms.iter().copied().filter(|a| fits(&kty, *a)).collect();
    if let Some(alg_name) = text("alg")? {
        let alg = parse_algorithm(alg_name)
            .ok_or_else(|| format!("key \"alg\" {alg_name:?} is not an accepted signature algorithm"))?;
        if !fits(&kty, alg) {
            return Err(format!("key \"alg\" {alg_name:?} does not fit {}", kty.describe()));
        }
        if !algorithms.contains(&alg) && !algorithms.is_empty() {
            return Err(format!("key \"alg\" {alg_name:?} is not in the {noun}'s algorithms"));
        }
        usable.retain(|a| *a == alg);
    }
    if usable.is_empty() && !algorithms.is_empty() {
        return Err(format!(
            "{} fits none of the {noun}'s algorithms [{}]",
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

#[derive(Deserialize)]
pub(crate) struct TokenHeader {
    pub(crate) alg: String,
    #[serde(default)]
    pub(crate) kid: Option<String>,
    #[serde(default)]
    pub(crate) crit: Option<Value>,
    #[serde(default)]
    pub(crate) typ: Option<String>,
}

/// A JSON object's top-level members, refusing duplicate names (a parser differential on `iss` or `sub` is an
/// attack; serde_json's `Value` would silently keep the last).
pub(crate) struct Claims(pub(crate) BTreeMap<String, Value>);

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

/// `typ` compared as RFC 7515 section 4.1.9 says: case-insensitive, with or without `application/`.
pub(crate) fn typ_is(typ: &str, want: &str) -> bool {
    let t = match typ.get(..12) {
        Some(p) if p.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    };
    t.eq_ignore_ascii_case(want)
}

#[cfg(test)]
mod tests {
    //! The Ed25519 table against `ed25519_dalek::VerifyingKey::verify_strict` (and this module's table-less
    //! `ed25519_verify`): every input gets the same answer from all three.

    use super::{ed25519_verify, Ed25519Table};
    use curve25519_dalek::constants::EIGHT_TORSION;
    use curve25519_dalek::edwards::CompressedEdwardsY;
    use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

    /// The order `l` of the base point, little-endian.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// SplitMix64: deterministic inputs without a random-number crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn bytes<const N: usize>(&mut self) -> [u8; N] {
            let mut out = [0u8; N];
            for b in out.iter_mut() {
                *b = self.next() as u8;
            }
            out
        }
        fn message(&mut self) -> Vec<u8> {
            let n = (self.next() % 300) as usize;
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    /// All three agree on `(key, message, signature)`; returns the answer.
    fn agree(key: &VerifyingKey, table: &Ed25519Table, message: &[u8], signature: &[u8]) -> bool {
        let strict =
            ed25519_dalek::Signature::from_slice(signature).is_ok_and(|s| key.verify_strict(message, &s).is_ok());
        assert_eq!(table.verify(message, signature), strict, "table vs verify_strict: {key:?} {signature:02x?}");
        assert_eq!(
            ed25519_verify(key, message, signature),
            strict,
            "ed25519_verify vs verify_strict: {signature:02x?}"
        );
        strict
    }

    /// `s + l` (same value mod `l`, not canonical); `None` when it overflows 256 bits.
    fn plus_l(s: &[u8]) -> Option<[u8; 32]> {
        let mut out = [0u8; 32];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(s[i]) + u16::from(L[i]) + carry;
            out[i] = v as u8;
            carry = v >> 8;
        }
        (carry == 0).then_some(out)
    }

    #[test]
    fn rfc8032_vectors() {
        // RFC 8032 section 7.1, TEST 1 to 3: secret key, public key, message, signature.
        let vectors = [
            ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
             "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
             "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
            ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
             "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
             "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
            ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
             "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
             "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
        ];
        for (secret, public, message, signature) in vectors {
            let sk = SigningKey::from_bytes(&hex(secret).try_into().unwrap());
            let key = sk.verifying_key();
            assert_eq!(key.as_bytes().as_slice(), hex(public), "public key of {secret}");
            let (message, signature) = (hex(message), hex(signature));
            assert_eq!(sk.sign(&message).to_bytes().as_slice(), signature, "signature of {secret}");
            let table = Ed25519Table::new(key);
            assert!(agree(&key, &table, &message, &signature), "vector {secret} verifies");
            let mut other = message.clone();
            other.push(0);
            assert!(!agree(&key, &table, &other, &signature), "vector {secret}, another message");
        }
    }

    #[test]
    fn the_table_answers_as_verify_strict() {
        assert!(bool::from(curve25519_dalek::scalar::Scalar::from_canonical_bytes(L).is_none()), "L is l");
        let mut rng = Rng(0x5eed_0017);
        let small_order: Vec<[u8; 32]> = EIGHT_TORSION.iter().map(|p| p.compress().to_bytes()).collect();
        // Non-canonical encodings of small-order points: the identity (y = 1) and y = -1... with the sign bit set,
        // and y + p for y = 0 and 1.
        let mut non_canonical_small = Vec::new();
        for enc in &small_order {
            let mut e = *enc;
            e[31] ^= 0x80;
            non_canonical_small.push(e);
        }
        let p_plus = |y: u8| {
            let mut e = [0xffu8; 32];
            e[0] = 0xed + y;
            e[31] = 0x7f;
            e
        };
        non_canonical_small.push(p_plus(0));
        non_canonical_small.push(p_plus(1));
        let (mut valid, mut refused) = (0, 0);
        let mut count = |ok: bool| if ok { valid += 1 } else { refused += 1 };
        for round in 0..64 {
            let sk = SigningKey::from_bytes(&rng.bytes::<32>());
            let key = sk.verifying_key();
            let table = Ed25519Table::new(key);
            let message = rng.message();
            let signature = sk.sign(&message).to_bytes();
            assert!(agree(&key, &table, &message, &signature), "a valid signature verifies");
            count(true);
            // Another key's table, another message.
            let other = SigningKey::from_bytes(&rng.bytes::<32>()).verifying_key();
            count(agree(&other, &Ed25519Table::new(other), &message, &signature));
            let mut changed = message.clone();
            changed.push(rng.next() as u8);
            count(agree(&key, &table, &changed, &signature));
            // Every bit of the signature flipped (in a few rounds), else a few random bits.
            let bits: Vec<usize> =
                if round < 3 { (0..512).collect() } else { (0..8).map(|_| (rng.next() % 512) as usize).collect() };
            for bit in bits {
                let mut s = signature;
                s[bit / 8] ^= 1 << (bit % 8);
                count(agree(&key, &table, &message, &s));
            }
            // Non-canonical s: s + l.
            if let Some(high) = plus_l(&signature[32..]) {
                let mut s = signature;
                s[32..].copy_from_slice(&high);
                assert!(!agree(&key, &table, &message, &s), "s + l is refused");
                count(false);
            }
            // R replaced by a small-order point, canonical or not, and R plus a small-order component.
            for r in small_order.iter().chain(&non_canonical_small) {
                let mut s = signature;
                s[..32].copy_from_slice(r);
                count(agree(&key, &table, &message, &s));
            }
            let r = CompressedEdwardsY(signature[..32].try_into().unwrap()).decompress().unwrap();
            for t in EIGHT_TORSION.iter().skip(1) {
                let mut s = signature;
                s[..32].copy_from_slice(&(r + t).compress().to_bytes());
                count(agree(&key, &table, &message, &s));
            }
            // Random signatures, and a zero s.
            count(agree(&key, &table, &message, &rng.bytes::<64>()));
            let mut s = signature;
            s[32..].fill(0);
            count(agree(&key, &table, &message, &s));
            // Wrong lengths.
            count(agree(&key, &table, &message, &signature[..63]));
            count(agree(&key, &table, &message, &[signature.as_slice(), &[0]].concat()));
        }
        assert!(valid >= 64 && refused > 3 * 512 + 61 * 30, "cases: {valid} valid, {refused} refused");
    }
}
