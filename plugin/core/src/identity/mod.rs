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
//!    `verify_strict`, with a fixed-base table of each issuer key built at compile time: canonical `S`, no small-order
//!    `R`, weak keys refused at compile time; ES256/ES384 signatures
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
//! The JOSE steps (compact serialization, header, claims, keys, signatures) are [`crate::jose`]'s; every time check
//! is made here against the caller's `now`
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

mod keys;
mod profiles;

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

use crate::bundle::TokenProfile;
use crate::facts::{Agent, Delegation, Peer, PeerIdentity, Task, TokenFailure, TxnFailure};
use crate::jose::{parse_algorithm, Jwt};

pub use crate::jose::{MAX_CLOCK_SKEW_SECONDS, MAX_TOKEN_BYTES, SUPPORTED_ALGORITHMS};
pub(crate) use keys::CompiledIssuer;
pub use keys::{IssuerLimits, IssuerSet};
use profiles::typ_fits;
pub use profiles::{is_spiffe_id, MAX_DELEGATION_DEPTH};

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

/// The token in a token header value: `Bearer <token>` ([`identity::bearer_token`]). A header other than
/// `authorization` may instead carry the bare token (no spaces, visible ASCII).
pub fn token_in<'v>(value: &'v str, token_header: &str) -> Result<&'v str, TokenFailure> {
    if token_header == "authorization" || value.contains(' ') {
        return bearer_token(value);
    }
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenFailure::Malformed);
    }
    Ok(value)
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
pub(crate) struct Signed {
    /// Index of the issuer in its [`IssuerSet`].
    pub(crate) issuer: usize,
    pub(crate) typ: Option<String>,
    pub(crate) claims: BTreeMap<String, Value>,
    /// Decoded payload length (for the cache's byte accounting).
    pub(crate) payload_len: usize,
}

/// Steps 1 to 5: size, structure, issuer, header, signature.
pub(crate) fn check_signed(issuers: &IssuerSet, token: &str) -> Result<Signed, TokenFailure> {
    // 1. size
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenFailure::TooLarge);
    }
    // 2. structure. Parsed now, trusted only after the signature: `iss` picks the issuer and nothing else is
    // read before step 6.
    let Jwt { header, claims, signature, signing_input, payload_len } =
        Jwt::read(token).ok_or(TokenFailure::Malformed)?;

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
    if !key.key.verify(alg, signing_input, &signature) {
        return Err(TokenFailure::BadSignature);
    }
    Ok(Signed { issuer: index, typ: header.typ, claims, payload_len })
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
/// confirmation method supported; any other `cnf` is refused) that the peer certificate does not match. The peer's
/// properties are read only where they matter: the URI SAN where the issuer requires binding or a rule of the bundle
/// may read `bound` (else `bound` is false: [`IssuerSet`]'s `sender_bound_unused`), the digest for a `cnf`.
fn check_sender(
    issuers: &IssuerSet,
    issuer: &CompiledIssuer,
    agent_id: &str,
    cnf: Option<&Value>,
    peer: &Peer<'_>,
) -> Result<bool, TokenFailure> {
    let required = issuer.require_sender_binding || issuer.sender_binding_for.iter().any(|p| p.matches(agent_id));
    let uri_san = if required || !issuers.sender_bound_unused { peer.uri_san() } else { None };
    let bound = uri_san == Some(agent_id);
    if required {
        match uri_san {
            None => return Err(TokenFailure::SenderNotMtls),
            Some(_) if !bound => return Err(TokenFailure::SenderMismatch),
            Some(_) => {}
        }
    }
    if let Some(cnf) = cnf {
        let thumbprint =
            cnf.as_object().and_then(|o| o.get("x5t#S256")).and_then(Value::as_str).ok_or(TokenFailure::CnfMismatch)?;
        let digest = peer.cert_sha256().ok_or(TokenFailure::SenderNotMtls)?;
        if URL_SAFE_NO_PAD.encode(digest) != thumbprint {
            return Err(TokenFailure::CnfMismatch);
        }
    }
    Ok(bound)
}

/// Step 6 for an agent token: profile, `typ`, claims, delegation, times, audience, sender binding.
pub(crate) fn check_agent(
    issuers: &IssuerSet,
    signed: &Signed,
    peer: &Peer<'_>,
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
    if issuer.profile == TokenProfile::OauthAccessToken && !keys::clean_agent_id(&agent_id) {
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
    let sender_bound = check_sender(issuers, issuer, &agent_id, claims.get("cnf"), peer)?;
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
pub(crate) fn check_txn(issuers: &IssuerSet, signed: &Signed, agent: &Agent, now: i64) -> Result<Task, TokenFailure> {
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

pub(crate) fn txn_failure(f: TokenFailure) -> TokenFailure {
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
    verify_with_peer(issuers, token, &Peer::given(peer), now)
}

/// [`verify_presented`] with a peer whose properties are read only if a check needs them.
pub fn verify_with_peer(issuers: &IssuerSet, token: &str, peer: &Peer<'_>, now: i64) -> Result<Agent, TokenFailure> {
    let signed = check_signed(issuers, token)?;
    check_agent(issuers, &signed, peer, now)
}

/// Verifies a Transaction Token (`Txn-Token` header) presented by `agent` and returns its task context. Failures
/// are [`TokenFailure::Txn`]. The token's `exp` becomes `task.expires_at`, which `decide` enforces.
pub fn verify_txn_token(issuers: &IssuerSet, token: &str, agent: &Agent, now: i64) -> Result<Task, TokenFailure> {
    let signed = check_signed(issuers, token).map_err(txn_failure)?;
    check_txn(issuers, &signed, agent, now).map_err(txn_failure)
}
