//! The trusted issuers of a bundle ([`IssuerSet`]): their settings and claim mappings checked and their keys parsed
//! once at compile time ([`crate::jose::compile_keys`]).

use std::collections::HashMap;
use std::fmt;

use crate::bundle::{ClaimMapping, Issuer, TokenProfile};
use crate::jose::{compile_algorithms, compile_keys, Alg, IssuerKey, KeyOwner, MAX_CLOCK_SKEW_SECONDS};
use crate::vocab::{valid_id, ValidationError};

use super::profiles::compile_profile;

/// The trusted issuers of a bundle with their keys parsed once at compile time.
#[derive(Debug, Default)]
pub struct IssuerSet {
    pub(crate) issuers: Vec<CompiledIssuer>,
    pub(crate) by_iss: HashMap<String, usize>,
}

pub(crate) struct CompiledIssuer {
    pub(crate) id: String,
    pub(crate) iss: String,
    pub(crate) audiences: Vec<String>,
    pub(crate) algorithms: Vec<Alg>,
    pub(crate) keys: HashMap<String, IssuerKey>,
    pub(crate) max_lifetime: i64,
    pub(crate) skew: i64,
    pub(crate) claims: ClaimMapping,
    pub(crate) profile: TokenProfile,
    pub(crate) require_sender_binding: bool,
    /// `delegation.max_depth`; `None`: tokens with `act` are refused.
    pub(crate) max_delegation_depth: Option<u32>,
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
