//! The trusted issuers of a bundle ([`IssuerSet`]): their settings and claim mappings checked and their keys parsed
//! once at compile time ([`crate::jose::compile_keys`]).

use std::collections::HashMap;
use std::fmt;

use crate::bundle::{ClaimMapping, Issuer, TokenProfile};
use crate::jose::{compile_algorithms, compile_keys, Alg, IssuerKey, KeyOwner, MAX_CLOCK_SKEW_SECONDS};
use crate::vocab::{valid_id, ValidationError};

use super::profiles::compile_profile;
use crate::index::{parse_agent_pattern, AgentPattern};

/// The trusted issuers of a bundle with their keys parsed once at compile time.
#[derive(Debug, Default)]
pub struct IssuerSet {
    pub(crate) issuers: Vec<CompiledIssuer>,
    pub(crate) by_iss: HashMap<String, usize>,
    /// No rule of the bundle requires sender binding, so nothing reads `Agent::sender_bound` where the issuer does
    /// not require it: it is not computed (false) and the peer's URI SAN is not read for it. Set by
    /// [`crate::compile::compile`]; false for a set compiled on its own (`sender_bound` always computed).
    pub(crate) sender_bound_unused: bool,
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
    /// `require_sender_binding_for`: agents whose tokens must be sender-bound.
    pub(crate) sender_binding_for: Vec<OwnedAgentPattern>,
    pub(crate) require_iat: bool,
    /// `trust_domains` of a JWT-SVID issuer; `None`: any.
    pub(crate) trust_domains: Option<Vec<String>>,
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

/// See [`IssuerSet::limits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerLimits<'a> {
    pub audiences: Vec<&'a str>,
    pub max_lifetime: i64,
    pub skew: i64,
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
            // Issuer keys verify on the request path (every new token): worth their fixed-base tables.
            let keys = compile_keys(owner, &issuer.jwks.keys, &issuer.algorithms, &algorithms, &mut err)
                .into_iter()
                .map(|(kid, k)| (kid, IssuerKey { key: k.key.precompute(), algorithms: k.algorithms }))
                .collect();
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

    /// What the trusted issuers accept, for refusals that say which limit a token broke: every audience, and the
    /// largest maximum lifetime and clock skew (one issuer's own values when the bundle has one).
    pub fn limits(&self) -> IssuerLimits<'_> {
        let mut audiences: Vec<&str> =
            self.issuers.iter().flat_map(|i| i.audiences.iter().map(String::as_str)).collect();
        audiences.sort_unstable();
        audiences.dedup();
        IssuerLimits {
            audiences,
            max_lifetime: self.issuers.iter().map(|i| i.max_lifetime).max().unwrap_or(0),
            skew: self.issuers.iter().map(|i| i.skew).max().unwrap_or(0),
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

/// An agent pattern of `require_sender_binding_for`, owned (the rules' syntax, [`parse_agent_pattern`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OwnedAgentPattern {
    Any,
    Exact(String),
    /// The prefix including its trailing `/`.
    Prefix(String),
}

impl OwnedAgentPattern {
    pub(crate) fn matches(&self, agent_id: &str) -> bool {
        match self {
            OwnedAgentPattern::Any => true,
            OwnedAgentPattern::Exact(id) => id == agent_id,
            OwnedAgentPattern::Prefix(p) => agent_id.starts_with(p.as_str()),
        }
    }
}

/// `require_sender_binding_for`, `require_iat` and `trust_domains` of one issuer: validated, the patterns parsed.
pub(super) fn compile_issuer_options(
    i: usize,
    issuer: &Issuer,
    err: &mut impl FnMut(String, String),
) -> Vec<OwnedAgentPattern> {
    let mut patterns = Vec::new();
    if issuer.profile == TokenProfile::TxnToken && !issuer.require_sender_binding_for.is_empty() {
        err(
            format!("/issuers/{i}/require_sender_binding_for"),
            "not allowed for profile \"txn_token\": a Transaction Token is bound to the agent through its subject"
                .to_string(),
        );
    }
    for (k, raw) in issuer.require_sender_binding_for.iter().enumerate() {
        match parse_agent_pattern(raw) {
            Some(AgentPattern::Any) => patterns.push(OwnedAgentPattern::Any),
            Some(AgentPattern::Exact(id)) => patterns.push(OwnedAgentPattern::Exact(id.to_string())),
            Some(AgentPattern::Prefix(p)) => patterns.push(OwnedAgentPattern::Prefix(p.to_string())),
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
            if !super::profiles::is_spiffe_id(&format!("spiffe://{d}/x")) {
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
pub(super) fn clean_agent_id(id: &str) -> bool {
    if id.chars().any(char::is_control) {
        return false;
    }
    let path = match id.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map_or("", |(_, p)| p),
        None => id,
    };
    path.is_empty() || path.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}
