//! Agent tokens: per-issuer JWT verification (RFC 8725 strict) and the mapping of claims to facts.
//!
//! # Issuers
//!
//! [`IssuerSet::compile`] checks the bundle's `issuers` and parses every JWK once, into the verifying key of its own
//! signature crate (`ed25519_dalek`, `p256`, `p384`, `rsa`); the request path never parses a key. Each key gets the algorithms it may verify: the issuer's allowlist
//! restricted to the algorithms its key type fits (`OKP`/`Ed25519` → `EdDSA`, `EC`/`P-256` → `ES256`, `EC`/`P-384`
//! → `ES384`, `RSA` → `RS*`/`PS*`). `none` and `HS*` are refused at compile time, as are symmetric (`oct`) keys,
//! private key material, a key whose own `alg` does not fit its type or is not allowlisted, and a key that fits none
//! of the issuer's algorithms. The same key code parses the keys of the bundle's approval services
//! ([`crate::approval::ApproverSet`]).
//!
//! # Verification order ([`verify`])
//!
//! 1. size (at most [`MAX_TOKEN_BYTES`], else `TooLarge`);
//! 2. structure: three base64url segments (unpadded), a JSON-object header and payload (`Malformed`; duplicate
//!    top-level claim names and a `crit` header are `Malformed` too);
//! 3. issuer: the *unverified* `iss` is read only to pick the issuer (`UnknownIssuer`; no `iss`: `MissingClaim`);
//! 4. header: `alg` in the issuer's allowlist (`AlgorithmNotAllowed`, which is also what `none` and `HS*` get),
//!    `kid` present and one of the issuer's keys (`UnknownKey`), the key fits `alg` (`AlgorithmNotAllowed`);
//! 5. signature (`BadSignature`): the decoded signature bytes checked with the pre-parsed key (Ed25519 as strictly as
//!    `verify_strict`: canonical `S`, no small-order `R`, weak keys refused at compile time; ES256/ES384 signatures
//!    are the raw JOSE `r || s`; RS*/PS* as PKCS#1 v1.5 / PSS with the algorithm's SHA-2);
//! 6. only now, on signed content: the issuer's **profile** (a `txn_token` issuer's token is never an agent token:
//!    `WrongProfile`, and the reverse in the `Txn-Token` header), the profile's `typ` (`WrongType`; RFC 8725
//!    section 3.11, the three profiles' `typ` sets are disjoint), the profile's required claims with their types
//!    (`MissingClaim`; JWT-SVID: `sub` a SPIFFE ID or `NotSpiffeId`; access token: `client_id`, `iat`, `jti` too),
//!    delegation (`act`: `DelegationNotAllowed`, `DelegationTooDeep`, `MissingClaim`), then `exp` (`Expired` once
//!    `now >= exp + skew`: `exp` itself is excluded, RFC 7519 section 4.1.4), `nbf` (`NotYetValid` when
//!    `nbf > now + skew`), `iat` (`IssuedInFuture` when `iat > now + skew`), `exp - iat` at most
//!    `max_token_lifetime_seconds` (`LifetimeTooLong`; a JWT-SVID without `iat`: `exp - now`), `aud` naming at least
//!    one of the issuer's audiences (`WrongAudience`), and sender binding (`SenderNotMtls`, `SenderMismatch`,
//!    `CnfMismatch`).
//!
//! `jsonwebtoken`'s own claim validation is not used: every time check is made here against the caller's `now`
//! (the core never reads a clock). `policies/README.md` ("Token profiles") documents each profile's claims and facts.
//!
//! # Facts
//!
//! `agent.id` is the mapped claim, or `act.sub` for a delegated token (`delegation.delegator` is then `sub`, and the
//! nested `act` subjects are `delegation.chain`, recorded and never used to decide); `agent.trust_domain` the host
//! of a `spiffe://` id (else of a URL id, else empty), `token_id` the `jti`, `expires_at` the `exp`,
//! `sender_bound` whether the mTLS peer URI SAN is `agent.id`; task context comes from the configured task claims,
//! or from a Transaction Token ([`verify_txn_token`]: `txn`, `purp`, `exp`).
//!
//! # Cache
//!
//! [`TokenCache`] keeps tokens that passed steps 1 to 5 (by their exact bytes), so that a hit skips the signature
//! check, and reuses an agent token's step 6 only where it cannot come out differently; see its documentation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::bundle::{ClaimMapping, Issuer, TokenProfile};
use crate::compile::{CompiledBundle, ValidationError};
use crate::facts::{Agent, Delegation, PeerIdentity, Task, TokenFailure, TxnFailure};

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
    profile: TokenProfile,
    require_sender_binding: bool,
    /// `require_sender_binding_for`: agents whose tokens must be sender-bound.
    sender_binding_for: Vec<OwnedAgentPattern>,
    require_iat: bool,
    /// `trust_domains` of a JWT-SVID issuer; `None`: any.
    trust_domains: Option<Vec<String>>,
    /// `delegation.max_depth`; `None`: tokens with `act` are refused.
    max_delegation_depth: Option<u32>,
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
            .field("profile", &self.profile)
            .field("require_sender_binding", &self.require_sender_binding)
            .field("max_delegation_depth", &self.max_delegation_depth)
            .finish_non_exhaustive()
    }
}

pub(crate) struct IssuerKey {
    pub(crate) key: VerifyKey,
    /// The issuer's algorithms this key's type fits.
    pub(crate) algorithms: Vec<Algorithm>,
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
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Rsa(rsa::PublicKey),
}

impl VerifyKey {
    /// Whether `signature` (already base64-decoded) signs `input` under this key with `alg`. An algorithm that does
    /// not fit the key type fails (the caller has already checked that it fits).
    pub(crate) fn verify(&self, alg: Algorithm, input: &[u8], signature: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier as _;
        use sha2::{Digest as _, Sha256, Sha384, Sha512};
        match (self, alg) {
            (VerifyKey::Ed25519(k), Algorithm::EdDSA) => ed25519_verify(k, input, signature),
            (VerifyKey::P256(k), Algorithm::ES256) => {
                p256::ecdsa::Signature::from_slice(signature).is_ok_and(|s| k.verify(input, &s).is_ok())
            }
            (VerifyKey::P384(k), Algorithm::ES384) => {
                p384::ecdsa::Signature::from_slice(signature).is_ok_and(|s| k.verify(input, &s).is_ok())
            }
            (VerifyKey::Rsa(k), Algorithm::RS256) => {
                k.verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(input), signature).is_ok()
            }
            (VerifyKey::Rsa(k), Algorithm::RS384) => {
                k.verify(rsa::Pkcs1v15Sign::new::<Sha384>(), &Sha384::digest(input), signature).is_ok()
            }
            (VerifyKey::Rsa(k), Algorithm::RS512) => {
                k.verify(rsa::Pkcs1v15Sign::new::<Sha512>(), &Sha512::digest(input), signature).is_ok()
            }
            (VerifyKey::Rsa(k), Algorithm::PS256) => {
                k.verify(rsa::Pss::<Sha256>::new(), &Sha256::digest(input), signature).is_ok()
            }
            (VerifyKey::Rsa(k), Algorithm::PS384) => {
                k.verify(rsa::Pss::<Sha384>::new(), &Sha384::digest(input), signature).is_ok()
            }
            (VerifyKey::Rsa(k), Algorithm::PS512) => {
                k.verify(rsa::Pss::<Sha512>::new(), &Sha512::digest(input), signature).is_ok()
            }
            _ => false,
        }
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
            let owner_at = format!("/issuers/{i}");
            let owner = KeyOwner { at: &owner_at, noun: "issuer", signs: "agent tokens" };
            let algorithms = compile_algorithms(owner, &issuer.algorithms, &mut err);
            if issuer.max_token_lifetime_seconds == 0 {
                err(at("max_token_lifetime_seconds"), "must be at least 1".to_string());
            }
            let max_lifetime = i64::try_from(issuer.max_token_lifetime_seconds).unwrap_or(i64::MAX);
            if issuer.clock_skew_seconds > MAX_CLOCK_SKEW_SECONDS {
                err(at("clock_skew_seconds"), format!("must be at most 300, found {}", issuer.clock_skew_seconds));
            }
            let skew = i64::try_from(issuer.clock_skew_seconds.min(MAX_CLOCK_SKEW_SECONDS)).unwrap_or(0);
            compile_claims(i, &issuer.claims, &mut err);
            compile_profile(i, issuer, &mut err);
            let sender_binding_for = compile_issuer_options(i, issuer, &mut err);
            let keys = compile_keys(owner, &issuer.jwks.keys, &issuer.algorithms, &algorithms, &mut err);
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
                profile: issuer.profile,
                require_sender_binding: issuer.require_sender_binding,
                sender_binding_for,
                require_iat: issuer.require_iat,
                trust_domains: issuer.trust_domains.clone(),
                max_delegation_depth: issuer.delegation.as_ref().map(|d| d.max_depth),
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

/// An agent pattern of `require_sender_binding_for`, owned (the rules' syntax, [`parse_agent_pattern`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum OwnedAgentPattern {
    Any,
    Exact(String),
    /// The prefix including its trailing `/`.
    Prefix(String),
}

impl OwnedAgentPattern {
    fn matches(&self, agent_id: &str) -> bool {
        match self {
            OwnedAgentPattern::Any => true,
            OwnedAgentPattern::Exact(id) => id == agent_id,
            OwnedAgentPattern::Prefix(p) => agent_id.starts_with(p.as_str()),
        }
    }
}

/// `require_sender_binding_for`, `require_iat` and `trust_domains` of one issuer: validated, the patterns parsed.
fn compile_issuer_options(i: usize, issuer: &Issuer, err: &mut impl FnMut(String, String)) -> Vec<OwnedAgentPattern> {
    let mut patterns = Vec::new();
    if issuer.profile == TokenProfile::TxnToken && !issuer.require_sender_binding_for.is_empty() {
        err(
            format!("/issuers/{i}/require_sender_binding_for"),
            "not allowed for profile \"txn_token\": a Transaction Token is bound to the agent through its subject"
                .to_string(),
        );
    }
    for (k, raw) in issuer.require_sender_binding_for.iter().enumerate() {
        match crate::index::parse_agent_pattern(raw) {
            Some(crate::index::AgentPattern::Any) => patterns.push(OwnedAgentPattern::Any),
            Some(crate::index::AgentPattern::Exact(id)) => patterns.push(OwnedAgentPattern::Exact(id.to_string())),
            Some(crate::index::AgentPattern::Prefix(p)) => patterns.push(OwnedAgentPattern::Prefix(p.to_string())),
            None => err(
                format!("/issuers/{i}/require_sender_binding_for/{k}"),
                format!("bad agent pattern {raw:?}: use *, prefix/* or an exact agent id"),
            ),
        }
    }
    if let Some(domains) = &issuer.trust_domains {
        if issuer.profile != TokenProfile::SpiffeJwtSvid {
            err(
                format!("/issuers/{i}/trust_domains"),
                "not allowed for this profile: only spiffe_jwt_svid issuers name SPIFFE trust domains".to_string(),
            );
        }
        if domains.is_empty() {
            err(format!("/issuers/{i}/trust_domains"), "at least one trust domain (or leave it out)".to_string());
        }
        for (k, d) in domains.iter().enumerate() {
            if !is_spiffe_id(&format!("spiffe://{d}/x")) {
                err(
                    format!("/issuers/{i}/trust_domains/{k}"),
                    format!("bad trust domain {d:?}: lower-case letters, digits, '.', '-' and '_'"),
                );
            }
        }
    }
    patterns
}

/// An access token's agent id is clean: no control characters, and after the scheme's `//` (or in the whole id)
/// no empty, `.` or `..` segment, so a `prefix/*` rule cannot be climbed out of.
fn clean_agent_id(id: &str) -> bool {
    if id.chars().any(char::is_control) {
        return false;
    }
    let path = match id.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map_or("", |(_, p)| p),
        None => id,
    };
    path.is_empty() || path.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

pub(crate) fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

pub(crate) fn parse_algorithm(alg: &str) -> Option<Algorithm> {
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

pub(crate) fn compile_algorithms(
    owner: KeyOwner<'_>,
    names: &[String],
    err: &mut impl FnMut(String, String),
) -> Vec<Algorithm> {
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

/// Largest `delegation.max_depth` an issuer may configure.
pub const MAX_DELEGATION_DEPTH: u32 = 8;

/// The profile's constraints on the other issuer settings.
fn compile_profile(i: usize, issuer: &Issuer, err: &mut impl FnMut(String, String)) {
    let at = |field: &str| format!("/issuers/{i}/{field}");
    let profile = issuer.profile.as_str();
    match issuer.profile {
        TokenProfile::SpiffeJwtSvid => {
            if issuer.claims.agent_id != "sub" {
                err(
                    at("claims/agent_id"),
                    format!("must be \"sub\" for profile \"{profile}\": a JWT-SVID names its workload in sub"),
                );
            }
        }
        TokenProfile::OauthAccessToken => {}
        TokenProfile::TxnToken => {
            if issuer.claims != ClaimMapping::default() {
                err(
                    at("claims"),
                    format!("not allowed for profile \"{profile}\": the task comes from txn, purp and exp"),
                );
            }
            if issuer.require_sender_binding {
                err(at("require_sender_binding"), format!("not allowed for profile \"{profile}\": a Transaction Token is bound to the agent through its subject"));
            }
        }
    }
    match &issuer.delegation {
        Some(_) if issuer.profile != TokenProfile::OauthAccessToken => err(
            at("delegation"),
            format!("not allowed for profile \"{profile}\": only oauth_access_token issuers (RFC 8693 token exchange) delegate"),
        ),
        Some(d) if d.max_depth == 0 || d.max_depth > MAX_DELEGATION_DEPTH => err(
            at("delegation/max_depth"),
            format!("must be 1 to {MAX_DELEGATION_DEPTH}, found {}", d.max_depth),
        ),
        _ => {}
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

pub(crate) fn compile_keys(
    owner: KeyOwner<'_>,
    jwks: &[Value],
    algorithm_names: &[String],
    algorithms: &[Algorithm],
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
    algorithms: &[Algorithm],
    noun: &str,
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
        return Err(format!("symmetric key (kty \"oct\") is never accepted: {noun} keys must be public keys"));
    }
    let kid = text("kid")?.ok_or_else(|| format!("\"kid\" is missing: every {noun} key needs a key id"))?;
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
                Ok(k) if !k.is_weak() => (KeyType::Ed25519, VerifyKey::Ed25519(k)),
                _ => return Err("\"x\" is not a valid Ed25519 public key".to_string()),
            }
        }
        ("EC", Some("P-256")) => {
            let sec1 = [vec![0x04], exact("x", 32)?, exact("y", 32)?].concat();
            let k = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                .map_err(|_| "\"x\"/\"y\" is not a point on P-256".to_string())?;
            (KeyType::P256, VerifyKey::P256(k))
        }
        ("EC", Some("P-384")) => {
            let sec1 = [vec![0x04], exact("x", 48)?, exact("y", 48)?].concat();
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
    let mut usable: Vec<Algorithm> = algorithms.iter().copied().filter(|a| fits(&kty, *a)).collect();
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

/// Extracts the token from an `Authorization` header value: the scheme `Bearer` (any case), one or more spaces
/// (RFC 9110 section 11.4 `auth-scheme 1*SP token68`, RFC 6750 section 2.1; spaces only, no tab), then a non-empty
/// token without whitespace or control characters. Anything else is `Malformed`.
pub fn bearer_token(header_value: &str) -> Result<&str, TokenFailure> {
    let scheme = header_value.get(..7).ok_or(TokenFailure::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer ") {
        return Err(TokenFailure::Malformed);
    }
    let token = header_value[7..].trim_start_matches(' ');
    // Visible ASCII only (no whitespace, control characters or non-ASCII): one range check per byte.
    if token.is_empty() || !token.bytes().all(|b| (0x21..0x7f).contains(&b)) {
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

/// A token whose size, structure, issuer, header and signature were checked: everything that does not depend on
/// the time, the request or the purpose the token is presented for. This is what the [`TokenCache`] keeps.
#[derive(Debug, Clone)]
struct Signed {
    /// Index of the issuer in its [`IssuerSet`].
    issuer: usize,
    typ: Option<String>,
    claims: BTreeMap<String, Value>,
    /// Decoded payload length (for the cache's byte accounting).
    payload_len: usize,
}

/// Steps 1 to 5: size, structure, issuer, header, signature.
fn check_signed(issuers: &IssuerSet, token: &str) -> Result<Signed, TokenFailure> {
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
    let index = *issuers.by_iss.get(iss).ok_or(TokenFailure::UnknownIssuer)?;
    let issuer = issuers.issuers.get(index).ok_or(TokenFailure::UnknownIssuer)?;

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
    if !key.key.verify(alg, signing_input, &signature) {
        return Err(TokenFailure::BadSignature);
    }
    Ok(Signed { issuer: index, typ: header.typ, claims, payload_len: payload.len() })
}

/// `typ` compared as RFC 7515 section 4.1.9 says: case-insensitive, with or without `application/`.
fn typ_is(typ: &str, want: &str) -> bool {
    let t = match typ.get(..12) {
        Some(p) if p.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    };
    t.eq_ignore_ascii_case(want)
}

/// Whether `typ` is what the profile requires (RFC 8725 section 3.11): each profile's set is disjoint from the
/// others', so a token of one profile never passes as another.
fn typ_fits(profile: TokenProfile, typ: Option<&str>) -> bool {
    match (profile, typ) {
        (TokenProfile::SpiffeJwtSvid, None) => true,
        (TokenProfile::SpiffeJwtSvid, Some(t)) => typ_is(t, "JWT") || typ_is(t, "JOSE"),
        (TokenProfile::OauthAccessToken, Some(t)) => typ_is(t, "at+jwt"),
        (TokenProfile::TxnToken, Some(t)) => typ_is(t, "txntoken+jwt"),
        (TokenProfile::OauthAccessToken | TokenProfile::TxnToken, None) => false,
    }
}

/// A SPIFFE ID: `spiffe://<trust domain>/<path>`, lower-case trust domain of `[a-z0-9.-_]`, a non-empty path of
/// segments of `[A-Za-z0-9.-_]` (no `.`/`..` segment), no query, fragment, port or user info.
pub fn is_spiffe_id(id: &str) -> bool {
    let Some(rest) = id.strip_prefix("spiffe://") else { return false };
    let Some((domain, path)) = rest.split_once('/') else { return false };
    let domain_ok = !domain.is_empty()
        && domain.len() <= 255
        && domain.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'));
    domain_ok
        && id.len() <= 2048
        && path.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        })
}

/// The time checks shared by every profile: `nbf`, `iat` in the future, `exp - iat` over the issuer's maximum.
/// Without `iat` (allowed for JWT-SVIDs only) the remaining lifetime `exp - now` is capped instead.
fn check_times(
    issuer: &CompiledIssuer,
    exp: i64,
    iat: Option<i64>,
    nbf: Option<i64>,
    now: i64,
) -> Result<(), TokenFailure> {
    let skew = issuer.skew;
    if let Some(nbf) = nbf {
        if nbf > now.saturating_add(skew) {
            return Err(TokenFailure::NotYetValid);
        }
    }
    match iat {
        Some(iat) => {
            if iat > now.saturating_add(skew) {
                return Err(TokenFailure::IssuedInFuture);
            }
            if exp.saturating_sub(iat) > issuer.max_lifetime {
                return Err(TokenFailure::LifetimeTooLong);
            }
        }
        None => {
            if exp.saturating_sub(now) > issuer.max_lifetime.saturating_add(skew) {
                return Err(TokenFailure::LifetimeTooLong);
            }
        }
    }
    Ok(())
}

fn check_audience(issuer: &CompiledIssuer, aud: &Value) -> Result<(), TokenFailure> {
    let ok = match aud {
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
    if ok {
        Ok(())
    } else {
        Err(TokenFailure::WrongAudience)
    }
}

/// Nesting of `act` objects that is looked at before a token counts as too deep.
const ACT_SCAN_LIMIT: usize = 64;

/// RFC 8693 `act`: `Some((agent, delegation))` when present. Every level must be an object with a non-empty `sub`.
fn delegation(
    issuer: &CompiledIssuer,
    subject: &str,
    act: Option<&Value>,
) -> Result<Option<(String, Delegation)>, TokenFailure> {
    let Some(act) = act else { return Ok(None) };
    let Some(max_depth) = issuer.max_delegation_depth else {
        return Err(TokenFailure::DelegationNotAllowed);
    };
    let mut actors: Vec<String> = Vec::new();
    let mut level = Some(act);
    while let Some(a) = level {
        if actors.len() >= ACT_SCAN_LIMIT {
            return Err(TokenFailure::DelegationTooDeep);
        }
        let obj = a.as_object().ok_or(TokenFailure::MissingClaim)?;
        let sub = string_claim(obj.get("sub"))?.filter(|s| !s.is_empty()).ok_or(TokenFailure::MissingClaim)?;
        actors.push(sub.to_string());
        level = obj.get("act");
    }
    if actors.len() > max_depth as usize {
        return Err(TokenFailure::DelegationTooDeep);
    }
    let mut chain = actors.into_iter();
    let agent = chain.next().ok_or(TokenFailure::MissingClaim)?;
    Ok(Some((agent, Delegation { delegator: subject.to_string(), chain: chain.collect() })))
}

/// Sender binding: `Ok(bound)` where `bound` says whether the peer URI SAN is the agent id. Refused when the issuer
/// requires binding and it does not hold, and when the token carries `cnf` (RFC 8705 `x5t#S256` is the only
/// confirmation method supported; any other `cnf` is refused) that the peer certificate does not match.
fn check_sender(
    issuer: &CompiledIssuer,
    agent_id: &str,
    cnf: Option<&Value>,
    peer: Option<&PeerIdentity>,
) -> Result<bool, TokenFailure> {
    let uri_san = peer.and_then(|p| p.uri_san.as_deref());
    let bound = uri_san == Some(agent_id);
    if issuer.require_sender_binding || issuer.sender_binding_for.iter().any(|p| p.matches(agent_id)) {
        match uri_san {
            None => return Err(TokenFailure::SenderNotMtls),
            Some(_) if !bound => return Err(TokenFailure::SenderMismatch),
            Some(_) => {}
        }
    }
    if let Some(cnf) = cnf {
        let thumbprint =
            cnf.as_object().and_then(|o| o.get("x5t#S256")).and_then(Value::as_str).ok_or(TokenFailure::CnfMismatch)?;
        let digest = peer.and_then(|p| p.cert_sha256).ok_or(TokenFailure::SenderNotMtls)?;
        if URL_SAFE_NO_PAD.encode(digest) != thumbprint {
            return Err(TokenFailure::CnfMismatch);
        }
    }
    Ok(bound)
}

/// Step 6 for an agent token: profile, `typ`, claims, delegation, times, audience, sender binding.
fn check_agent(
    issuers: &IssuerSet,
    signed: &Signed,
    peer: Option<&PeerIdentity>,
    now: i64,
) -> Result<Agent, TokenFailure> {
    let issuer = issuers.issuers.get(signed.issuer).ok_or(TokenFailure::UnknownIssuer)?;
    let claims = &signed.claims;
    if issuer.profile == TokenProfile::TxnToken {
        return Err(TokenFailure::WrongProfile);
    }
    if !typ_fits(issuer.profile, signed.typ.as_deref()) {
        return Err(TokenFailure::WrongType);
    }
    let sub = string_claim(claims.get("sub"))?.filter(|s| !s.is_empty()).ok_or(TokenFailure::MissingClaim)?;
    let exp = numeric_date(claims.get("exp"))?.ok_or(TokenFailure::MissingClaim)?;
    let iat = numeric_date(claims.get("iat"))?;
    let nbf = numeric_date(claims.get("nbf"))?;
    let aud = claims.get("aud").ok_or(TokenFailure::MissingClaim)?;
    let token_id = string_claim(claims.get("jti"))?.map(str::to_string);
    if issuer.require_iat && iat.is_none() {
        return Err(TokenFailure::MissingClaim);
    }
    match issuer.profile {
        TokenProfile::SpiffeJwtSvid => {
            if !is_spiffe_id(sub) {
                return Err(TokenFailure::NotSpiffeId);
            }
            if let Some(domains) = &issuer.trust_domains {
                if !domains.iter().any(|d| d == trust_domain(sub)) {
                    return Err(TokenFailure::UntrustedTrustDomain);
                }
            }
        }
        TokenProfile::OauthAccessToken => {
            string_claim(claims.get("client_id"))?.filter(|s| !s.is_empty()).ok_or(TokenFailure::MissingClaim)?;
            if iat.is_none() || token_id.as_deref().is_none_or(str::is_empty) {
                return Err(TokenFailure::MissingClaim);
            }
        }
        TokenProfile::TxnToken => return Err(TokenFailure::WrongProfile),
    }
    let mapped = string_claim(claims.get(&issuer.claims.agent_id))?
        .filter(|s| !s.is_empty())
        .ok_or(TokenFailure::MissingClaim)?;
    let (agent_id, delegation) = match delegation(issuer, sub, claims.get("act"))? {
        Some((agent, d)) => (agent, Some(d)),
        None => (mapped.to_string(), None),
    };
    if issuer.profile == TokenProfile::OauthAccessToken && !clean_agent_id(&agent_id) {
        return Err(TokenFailure::InvalidAgentId);
    }
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
    if now >= exp.saturating_add(issuer.skew) {
        return Err(TokenFailure::Expired);
    }
    check_times(issuer, exp, iat, nbf, now)?;
    check_audience(issuer, aud)?;
    let sender_bound = check_sender(issuer, &agent_id, claims.get("cnf"), peer)?;
    Ok(Agent {
        trust_domain: trust_domain(&agent_id).to_string(),
        id: agent_id,
        issuer: issuer.id.clone(),
        token_id,
        expires_at: exp,
        task,
        delegation,
        sender_bound,
    })
}

/// Step 6 for a Transaction Token, presented by `agent`.
fn check_txn(issuers: &IssuerSet, signed: &Signed, agent: &Agent, now: i64) -> Result<Task, TokenFailure> {
    let issuer = issuers.issuers.get(signed.issuer).ok_or(TokenFailure::UnknownIssuer)?;
    let claims = &signed.claims;
    if issuer.profile != TokenProfile::TxnToken {
        return Err(TokenFailure::WrongProfile);
    }
    if !typ_fits(issuer.profile, signed.typ.as_deref()) {
        return Err(TokenFailure::WrongType);
    }
    let non_empty = |name: &str| -> Result<&str, TokenFailure> {
        string_claim(claims.get(name))?.filter(|s| !s.is_empty()).ok_or(TokenFailure::MissingClaim)
    };
    let txn = non_empty("txn")?;
    let purp = non_empty("purp")?;
    let sub = non_empty("sub")?;
    let exp = numeric_date(claims.get("exp"))?.ok_or(TokenFailure::MissingClaim)?;
    let iat = numeric_date(claims.get("iat"))?.ok_or(TokenFailure::MissingClaim)?;
    let nbf = numeric_date(claims.get("nbf"))?;
    let aud = claims.get("aud").ok_or(TokenFailure::MissingClaim)?;
    let requesting_workload = match claims.get("rctx") {
        None => None,
        Some(Value::Object(rctx)) => string_claim(rctx.get("req_wl"))?,
        Some(_) => return Err(TokenFailure::MissingClaim),
    };
    // `exp` is the task's expiry: past it the Transaction Token is invalid (`txn_token_expired`). No skew: the task
    // is over at `exp`, as `decide` reads `task.expires_at`.
    if now >= exp {
        return Err(TokenFailure::Expired);
    }
    check_times(issuer, exp, Some(iat), nbf, now)?;
    check_audience(issuer, aud)?;
    let for_agent = sub == agent.id && requesting_workload.is_none_or(|w| w == agent.id);
    let for_delegator =
        agent.delegation.as_ref().is_some_and(|d| d.delegator == sub) && requesting_workload == Some(agent.id.as_str());
    if !(for_agent || for_delegator) {
        return Err(TokenFailure::Txn(TxnFailure::AgentMismatch));
    }
    Ok(Task { id: txn.to_string(), purpose: Some(purp.to_string()), expires_at: Some(exp) })
}

fn txn_failure(f: TokenFailure) -> TokenFailure {
    TokenFailure::Txn(TxnFailure::from_token(f))
}

/// Verifies an agent token against the issuers, without an mTLS peer (see the module doc for the order of checks).
pub fn verify(issuers: &IssuerSet, token: &str, now: i64) -> Result<Agent, TokenFailure> {
    verify_presented(issuers, token, None, now)
}

/// Verifies an agent token presented over a connection with this mTLS peer (`None`: no client certificate).
pub fn verify_presented(
    issuers: &IssuerSet,
    token: &str,
    peer: Option<&PeerIdentity>,
    now: i64,
) -> Result<Agent, TokenFailure> {
    let signed = check_signed(issuers, token)?;
    check_agent(issuers, &signed, peer, now)
}

/// Verifies a Transaction Token (`Txn-Token` header) presented by `agent` and returns its task context. Failures
/// are [`TokenFailure::Txn`]. The token's `exp` becomes `task.expires_at`, which `decide` enforces.
pub fn verify_txn_token(issuers: &IssuerSet, token: &str, agent: &Agent, now: i64) -> Result<Task, TokenFailure> {
    let signed = check_signed(issuers, token).map_err(txn_failure)?;
    check_txn(issuers, &signed, agent, now).map_err(txn_failure)
}

/// Default bound on the entries of a [`TokenCache`].
pub const DEFAULT_CACHE_ENTRIES: usize = 1024;
/// Default bound on the bytes of a [`TokenCache`] (tokens plus their decoded claims, estimated).
pub const DEFAULT_CACHE_BYTES: usize = 2 * 1024 * 1024;

/// Per-VM cache of tokens whose signature verified, keyed by the exact token text (hash, then full comparison).
///
/// A hit skips steps 1 to 5 (size, structure, issuer, header, signature). Step 6 (profile, claims, expiry, `nbf`,
/// lifetime, audience, delegation, sender binding) is checked again against the current time and the current
/// request, except that an agent token's last successful step 6 is reused when the request comes over a connection
/// with the same mTLS peer at the same time or later: every time check of step 6 only gets easier to pass as time goes
/// on, and the entry is dropped at `exp`. Revocations are `decide`'s, which runs on every request. Entries are dropped once the
/// token expires, and all at once when the bundle changes (new keys, new issuers). Bounded in entries and bytes: when
/// full, expired entries go first, then the one that expires soonest, both found through an index by expiry (a cache
/// full of distinct tokens costs O(log n) per new token, not a scan).
#[derive(Debug)]
pub struct TokenCache {
    /// Keyed by the fast hash of the token text, each entry holding the text it was made for: a lookup whose hash
    /// matches but whose text differs is a miss (and the entry is replaced if that token verifies), never a hit.
    /// Tokens only get in after their signature verified, so a client cannot fill the cache with chosen keys.
    entries: HashMap<u64, CacheEntry, crate::fxhash::FxBuild>,
    /// `(expires_at, key)` of every entry, soonest first.
    by_expiry: BTreeSet<(i64, u64)>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
    /// The bundle the entries were verified against (revision, issued_at, expires_at).
    bundle: Option<(u64, i64, i64)>,
    hits: u64,
    misses: u64,
}

#[derive(Debug)]
struct CacheEntry {
    /// The exact token text.
    token: Box<str>,
    signed: Signed,
    /// The token's `exp`: the entry is dropped from then on.
    expires_at: i64,
    bytes: usize,
    /// The agent token's step-6 result for one peer (not for Transaction Tokens, whose result depends on the agent).
    memo: Option<Memo>,
}

/// An agent that passed step 6 at `at` over a connection with this peer.
#[derive(Debug)]
struct Memo {
    at: i64,
    peer: Option<PeerIdentity>,
    agent: Agent,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache::new(DEFAULT_CACHE_ENTRIES, DEFAULT_CACHE_BYTES)
    }
}

impl TokenCache {
    /// An empty cache holding at most `max_entries` tokens and about `max_bytes` bytes.
    pub fn new(max_entries: usize, max_bytes: usize) -> TokenCache {
        TokenCache {
            entries: HashMap::default(),
            by_expiry: BTreeSet::new(),
            bytes: 0,
            max_entries,
            max_bytes,
            bundle: None,
            hits: 0,
            misses: 0,
        }
    }

    /// Drops every entry (a new bundle was activated).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.by_expiry.clear();
        self.bytes = 0;
        self.bundle = None;
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Estimated bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Lookups answered from the cache, and lookups that verified a signature.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Clears the cache when `bundle` is not the one its entries were verified against.
    pub fn sync(&mut self, bundle: &CompiledBundle) {
        let id = (bundle.revision, bundle.issued_at, bundle.expires_at);
        if self.bundle != Some(id) {
            self.clear();
            self.bundle = Some(id);
        }
    }

    /// [`verify_presented`] through the cache.
    pub fn verify(
        &mut self,
        bundle: &CompiledBundle,
        token: &str,
        peer: Option<&PeerIdentity>,
        now: i64,
    ) -> Result<Agent, TokenFailure> {
        self.sync(bundle);
        let issuers = &bundle.issuers;
        if let Some(entry) = self.lookup(token, now) {
            // The checks of step 6 only get easier to pass as time goes on (`nbf`, `iat` in the past, lifetime), and
            // the entry is gone at `exp`: an agent checked at or before `now` for the same peer is still good.
            if let Some(memo) = entry.memo.as_ref().filter(|m| m.at <= now && m.peer.as_ref() == peer) {
                return Ok(memo.agent.clone());
            }
            let agent = check_agent(issuers, &entry.signed, peer, now)?;
            entry.memo = Some(Memo { at: now, peer: peer.cloned(), agent: agent.clone() });
            return Ok(agent);
        }
        let signed = check_signed(issuers, token)?;
        let agent = check_agent(issuers, &signed, peer, now)?;
        let memo = Memo { at: now, peer: peer.cloned(), agent: agent.clone() };
        self.insert(token, signed, Some(memo), agent.expires_at, now);
        Ok(agent)
    }

    /// [`verify_txn_token`] through the cache.
    pub fn verify_txn_token(
        &mut self,
        bundle: &CompiledBundle,
        token: &str,
        agent: &Agent,
        now: i64,
    ) -> Result<Task, TokenFailure> {
        self.sync(bundle);
        let issuers = &bundle.issuers;
        if let Some(entry) = self.lookup(token, now) {
            return check_txn(issuers, &entry.signed, agent, now).map_err(txn_failure);
        }
        let signed = check_signed(issuers, token).map_err(txn_failure)?;
        let task = check_txn(issuers, &signed, agent, now).map_err(txn_failure)?;
        let expires_at = task.expires_at.unwrap_or(now);
        self.insert(token, signed, None, expires_at, now);
        Ok(task)
    }

    /// The live entry of `token` (one hash of the token); an expired one is dropped.
    fn lookup(&mut self, token: &str, now: i64) -> Option<&mut CacheEntry> {
        let key = crate::fxhash::hash_bytes(token.as_bytes());
        let expired = match self.entries.get_mut(&key) {
            Some(e) if !crate::fxhash::same_bytes(e.token.as_bytes(), token.as_bytes()) => false,
            None => false,
            Some(e) if now >= e.expires_at => true,
            Some(_) => {
                self.hits += 1;
                return self.entries.get_mut(&key);
            }
        };
        if expired {
            self.remove(key);
        }
        self.misses += 1;
        None
    }

    fn remove(&mut self, key: u64) {
        if let Some(e) = self.entries.remove(&key) {
            self.by_expiry.remove(&(e.expires_at, key));
            self.bytes = self.bytes.saturating_sub(e.bytes);
        }
    }

    fn insert(&mut self, token: &str, signed: Signed, memo: Option<Memo>, expires_at: i64, now: i64) {
        if now >= expires_at {
            return;
        }
        let bytes =
            token.len().saturating_mul(2).saturating_add(signed.payload_len.saturating_mul(3)).saturating_add(256);
        if bytes > self.max_bytes || self.max_entries == 0 {
            return;
        }
        // Expired entries first, then the ones that expire soonest: both are the front of the expiry index.
        while self.entries.len() >= self.max_entries || self.bytes.saturating_add(bytes) > self.max_bytes {
            let Some(&(_, soonest)) = self.by_expiry.first() else { break };
            self.remove(soonest);
        }
        let key = crate::fxhash::hash_bytes(token.as_bytes());
        // A different token with the same hash is replaced.
        self.remove(key);
        self.bytes = self.bytes.saturating_add(bytes);
        self.by_expiry.insert((expires_at, key));
        self.entries.insert(key, CacheEntry { token: token.into(), signed, expires_at, bytes, memo });
    }
}
