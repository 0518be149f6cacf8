//! The active bundle: a signed bundle verified against the pinned keys and compiled, ready for the request path.
//!
//! [`load`] is the whole of `on_configure` that does not talk to the host: parse the configuration, verify and compile
//! the inline bundle. [`check_candidate`] does the same for a bundle fetched from the control endpoint or shared by
//! another VM, against the active bundle (anti-rollback, revoked signing keys), and names the [`RejectCause`] of every
//! refusal ([`Rejected`]). Pure given `now`, so every refusal is tested natively. Polling ([`crate::poll`]) counts
//! these causes among its fetch failures.

use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::compile::{self, CompiledBundle};
use crate::config::{self, Config, ConfigError};
use crate::envelope::{self, EnvelopeError, VerifiedPayload};

/// Why a signed bundle was not activated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectCause {
    /// Signed, but the signature does not verify; or not signed at all (a plain JSON document).
    Signature,
    /// Revision not higher than the active one (or the same revision with different contents).
    Rollback,
    /// The bundle's `expires_at` has passed.
    Expired,
    /// Verified, but the bundle is not valid (format, authority, timestamps, compile errors).
    Invalid,
    /// Signed with a key that is not pinned, or with a key the active bundle (or one activated before) revokes.
    UnknownKey,
    /// Not a signed bundle (not JWS compact serialization, bad base64, bad header; for a fetch also a body too large
    /// or empty).
    Malformed,
    /// Verified, but its revision is more than `max_revision_jump` above the highest one this process activated.
    RevisionJump,
}

impl RejectCause {
    /// The stable code (metric names `warden.bundle.fetch.failure.<code>`, the shared-data record, logs).
    pub fn code(self) -> &'static str {
        match self {
            RejectCause::Signature => "signature",
            RejectCause::Rollback => "rollback",
            RejectCause::Expired => "expired",
            RejectCause::Invalid => "invalid",
            RejectCause::UnknownKey => "unknown_key",
            RejectCause::Malformed => "malformed",
            RejectCause::RevisionJump => "revision_jump",
        }
    }
}

/// A refused bundle: the cause and a one-line explanation for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub cause: RejectCause,
    pub detail: String,
}

impl Rejected {
    pub fn new(cause: RejectCause, detail: impl Into<String>) -> Rejected {
        Rejected { cause, detail: detail.into() }
    }
}

/// A verified, compiled bundle. Shared read-only with every HTTP context of the VM.
#[derive(Debug)]
pub struct Active {
    pub bundle: CompiledBundle,
    /// Key id of the authority key that signed it.
    pub key_id: String,
    /// What was verified: the signed payload (compared byte for byte) and its SHA-256, computed on first use.
    pub digest: Digest,
}

/// The identity of a verified bundle's contents. Made from a verified payload, it keeps the payload bytes: two such
/// digests are equal exactly when the payloads are (a byte comparison; no hash decides that two different payloads
/// are the same). Its text, for log lines, refusals and the shared-data record, is the SHA-256 of the payload in
/// lowercase hex, computed on first use only: verifying and activating a bundle does not hash its payload a second
/// time (the signature check already hashed the signed bytes). A digest read from a shared-data record carries only
/// the SHA-256 text; next to one of those, equality compares the SHA-256 texts (hashing the local payload once).
/// The price is memory: the active bundle keeps its payload (1.7 MB for 10 000 rules).
#[derive(Clone)]
pub struct Digest(Arc<DigestInner>);

struct DigestInner {
    payload: Option<Vec<u8>>,
    sha256: OnceLock<String>,
}

impl Digest {
    /// The digest of a verified payload.
    pub fn of_payload(payload: Vec<u8>) -> Digest {
        Digest(Arc::new(DigestInner { payload: Some(payload), sha256: OnceLock::new() }))
    }

    /// A digest known only by its SHA-256 text (as read from a shared-data record).
    pub fn from_sha256_hex(hex: String) -> Digest {
        Digest(Arc::new(DigestInner { payload: None, sha256: OnceLock::from(hex) }))
    }

    /// The SHA-256 of the payload, lowercase hex (computed on the first call).
    pub fn sha256(&self) -> &str {
        self.0.sha256.get_or_init(|| self.0.payload.as_deref().map(envelope::sha256_hex).unwrap_or_default())
    }
}

impl PartialEq for Digest {
    fn eq(&self, other: &Digest) -> bool {
        if Arc::ptr_eq(&self.0, &other.0) {
            return true;
        }
        match (&self.0.payload, &other.0.payload) {
            (Some(a), Some(b)) => a == b,
            _ => self.sha256() == other.sha256(),
        }
    }
}

impl Eq for Digest {}

/// The SHA-256 text.
impl std::ops::Deref for Digest {
    type Target = str;

    fn deref(&self) -> &str {
        self.sha256()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sha256())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.sha256())
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.sha256())
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        String::deserialize(d).map(Digest::from_sha256_hex)
    }
}

/// A configuration that passed every check, and its bundle if one was given inline.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub active: Option<Active>,
}

/// Parses the plugin configuration and activates its inline bundle (if any) at time `now` (seconds since the epoch).
/// A bundle that does not verify or does not validate refuses the whole configuration.
pub fn load(config_bytes: &[u8], now: i64) -> Result<Loaded, ConfigError> {
    let config = config::parse(config_bytes)?;
    let active = match &config.inline_bundle {
        None => None,
        Some(signed) => Some(activate(&config, signed.as_bytes(), now)?),
    };
    Ok(Loaded { config, active })
}

/// Verifies (signature, pinned key, authority, expiry) and compiles one signed bundle.
pub fn activate(config: &Config, signed: &[u8], now: i64) -> Result<Active, ConfigError> {
    verify_and_compile(config, &[], signed, now).map_err(|f| ConfigError::field("inline_bundle", f.detail))
}

/// Verification and compilation, each refusal with its [`Cause`]. `revoked` are signing keys the active bundle
/// revokes.
fn verify_and_compile(config: &Config, revoked: &[String], signed: &[u8], now: i64) -> Result<Active, Rejected> {
    compile_verified(verify(config, revoked, signed, now)?)
}

fn verify(config: &Config, revoked: &[String], signed: &[u8], now: i64) -> Result<VerifiedPayload, Rejected> {
    envelope::verify_payload(signed, &config.bundle_keys, &config.authority, revoked, now).map_err(|e| {
        let cause = envelope_cause(&e, signed);
        if cause == RejectCause::Signature && signed.trim_ascii_start().starts_with(b"{") {
            let detail = "a plain JSON document, not a signed bundle (JWS compact serialization): unsigned bundles \
                          are never accepted";
            return Rejected::new(cause, detail);
        }
        Rejected::new(cause, e.to_string())
    })
}

fn compile_verified(verified: VerifiedPayload) -> Result<Active, Rejected> {
    let bundle = compile::compile(&verified.bundle).map_err(|errors| {
        let all: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        Rejected::new(
            RejectCause::Invalid,
            format!("bundle revision {} is not valid: {}", verified.bundle.revision, all.join("; ")),
        )
    })?;
    if bundle.revoked_signing_keys().contains(&verified.key_id) {
        return Err(Rejected::new(
            RejectCause::Invalid,
            format!("bundle revision {} revokes its own signing key `{}`", bundle.revision, verified.key_id),
        ));
    }
    Ok(Active { bundle, key_id: verified.key_id, digest: Digest::of_payload(verified.payload) })
}

/// The failure cause of an envelope error. A plain JSON document (a bundle that was never signed) is a
/// `signature` failure; other bytes that are not a JWS are `malformed`.
pub fn envelope_cause(e: &EnvelopeError, signed: &[u8]) -> RejectCause {
    match e {
        EnvelopeError::NotCompact { .. } | EnvelopeError::EmptySegment { .. } | EnvelopeError::BadBase64 { .. }
            if signed.trim_ascii_start().starts_with(b"{") =>
        {
            RejectCause::Signature
        }
        EnvelopeError::NotCompact { .. }
        | EnvelopeError::EmptySegment { .. }
        | EnvelopeError::BadBase64 { .. }
        | EnvelopeError::BadHeader { .. }
        | EnvelopeError::WrongType { .. }
        | EnvelopeError::UnsupportedAlgorithm { .. }
        | EnvelopeError::MissingKid => RejectCause::Malformed,
        EnvelopeError::UnknownKid { .. } | EnvelopeError::RevokedKid { .. } => RejectCause::UnknownKey,
        EnvelopeError::AlgorithmMismatch { .. }
        | EnvelopeError::SignatureLength { .. }
        | EnvelopeError::BadSignature { .. } => RejectCause::Signature,
        EnvelopeError::Expired { .. } => RejectCause::Expired,
        EnvelopeError::BadPayload { .. }
        | EnvelopeError::WrongFormat { .. }
        | EnvelopeError::AuthorityMismatch { .. }
        | EnvelopeError::BadTimestamp { .. }
        | EnvelopeError::NotAfterIssued { .. }
        | EnvelopeError::IssuedInFuture { .. }
        | EnvelopeError::BadKey { .. }
        | EnvelopeError::RandomUnavailable { .. } => RejectCause::Invalid,
    }
}

/// What this Envoy process has activated, kept in shared data (`warden.activated|<authority>`) by every VM that
/// activates a bundle, so it binds every VM of the process, also one that starts later (a reload, a new worker, a
/// plugin configuration that polls another path) and has no active bundle or an older one: the highest revision
/// activated (and its payload's SHA-256, so the revision cannot be reused with other contents) and every signing
/// key any activated bundle revoked (a revoked key stays revoked, even when a later bundle no longer lists it).
/// Shared data lives as long as the Envoy process: a restart forgets it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mark {
    pub revision: u64,
    pub sha256: String,
    pub revoked_keys: Vec<String>,
}

impl Mark {
    /// The shared-data key of the marks of bundles from `authority`.
    pub fn key(authority: &str) -> String {
        format!("warden.activated|{authority}")
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// `None` for anything that is not a mark this version wrote.
    pub fn decode(bytes: &[u8]) -> Option<Mark> {
        serde_json::from_slice(bytes).ok()
    }

    /// The mark once `a` is activated too: the higher revision (with its digest), the union of revoked keys.
    pub fn merged(previous: Option<&Mark>, a: &Active) -> Mark {
        let mut keys: Vec<String> = previous.map(|m| m.revoked_keys.clone()).unwrap_or_default();
        keys.extend(a.bundle.revoked_signing_keys().iter().cloned());
        keys.sort();
        keys.dedup();
        match previous {
            Some(m) if m.revision >= a.bundle.revision => Mark { revoked_keys: keys, ..m.clone() },
            _ => Mark { revision: a.bundle.revision, sha256: a.digest.sha256().to_string(), revoked_keys: keys },
        }
    }
}

/// What a fetched (or shared) signed bundle means next to the active one.
#[derive(Debug)]
pub enum Candidate {
    /// A newer revision, verified and compiled: activate it.
    Newer(Box<Active>),
    /// The same revision and contents as the active bundle.
    Unchanged,
}

/// Checks a signed bundle from the control endpoint (or another VM) against the active one and the process's
/// [`Mark`] at `now`: signature with the pinned keys (minus every key the active bundle or any bundle activated
/// before revokes), authority, expiry, anti-rollback (the revision must be higher than the active one and not lower
/// than the highest activated in the process; the same revision must have the same payload), the jump bound (at
/// most `max_revision_jump` above the highest revision activated), validation.
pub fn check_candidate(
    config: &Config,
    current: Option<&Active>,
    mark: Option<&Mark>,
    signed: &[u8],
    now: i64,
) -> Result<Candidate, Rejected> {
    let mut revoked: Vec<String> = current.map(|a| a.bundle.revoked_signing_keys().to_vec()).unwrap_or_default();
    revoked.extend(mark.map(|m| m.revoked_keys.iter().cloned()).into_iter().flatten());
    let verified = verify(config, &revoked, signed, now)?;
    let new = verified.bundle.revision;
    if let Some(m) = mark.filter(|m| current.is_none_or(|a| a.bundle.revision < m.revision)) {
        if new < m.revision {
            return Err(Rejected::new(
                RejectCause::Rollback,
                format!(
                    "revision {new} is older than revision {}, which this Envoy process activated before (shared \
                     data `{}`): refused (rollback)",
                    m.revision,
                    Mark::key(&config.authority)
                ),
            ));
        }
        if new == m.revision && envelope::sha256_hex(&verified.payload) != m.sha256 {
            return Err(Rejected::new(
                RejectCause::Rollback,
                format!(
                    "revision {new} has other contents than the revision {new} this Envoy process activated before \
                     (sha256 {}): a revision must never be reused; refused",
                    m.sha256
                ),
            ));
        }
    }
    let highest = current.map(|a| a.bundle.revision).max(mark.map(|m| m.revision));
    if let Some(base) = highest {
        let jump = config.max_revision_jump;
        if new > base.saturating_add(jump) {
            return Err(Rejected::new(
                RejectCause::RevisionJump,
                format!(
                    "revision {new} is {} above revision {base}, the highest this Envoy process activated: more \
                     than max_revision_jump ({jump}), refused (a bundle that far ahead would leave no room for the \
                     revisions after it); publish a revision within the bound, or raise max_revision_jump in the \
                     plugin configuration if the jump is intended",
                    new - base
                ),
            ));
        }
    }
    if let Some(active) = current {
        let (new, old) = (verified.bundle.revision, active.bundle.revision);
        if new < old {
            return Err(Rejected::new(
                RejectCause::Rollback,
                format!("revision {new} is older than the active revision {old}: refused (rollback)"),
            ));
        }
        if new == old {
            // The same payload bytes (not merely the same hash): nothing to activate.
            let digest = Digest::of_payload(verified.payload);
            if digest == active.digest {
                return Ok(Candidate::Unchanged);
            }
            return Err(Rejected::new(
                RejectCause::Rollback,
                format!(
                    "revision {new} has different contents (sha256 {}) than the active revision {old} (sha256 {}): \
                     a revision must never be reused; refused",
                    digest, active.digest
                ),
            ));
        }
    }
    compile_verified(verified).map(|a| Candidate::Newer(Box::new(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_compare_payload_bytes_and_print_their_sha256() {
        let a = Digest::of_payload(b"{\"revision\":1}".to_vec());
        let same = Digest::of_payload(b"{\"revision\":1}".to_vec());
        let other = Digest::of_payload(b"{\"revision\":1} ".to_vec());
        assert_eq!(a, same);
        assert_ne!(a, other);
        assert_eq!(a.to_string(), envelope::sha256_hex(b"{\"revision\":1}"));
        assert_eq!(a.len(), 64);
        // A digest read from a record: compared by its SHA-256 text.
        let from_record: Digest = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(from_record, a);
        assert_eq!(a, from_record);
        assert_ne!(from_record, other);
        assert_ne!(Digest::from_sha256_hex("ab".into()), a);
    }
}
