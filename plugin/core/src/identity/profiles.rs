//! Token profiles: what each issuer profile requires of the issuer's settings ([`compile_profile`]) and of a
//! token's `typ` ([`typ_fits`], RFC 8725 section 3.11: the profiles' sets are disjoint, so a token of one profile
//! never passes as another), and the SPIFFE ID syntax JWT-SVIDs must use.

use crate::bundle::{ClaimMapping, Issuer, TokenProfile};
use crate::jose::typ_is;

/// Largest `delegation.max_depth` an issuer may configure.
pub const MAX_DELEGATION_DEPTH: u32 = 8;

/// The profile's constraints on the other issuer settings.
pub(super) fn compile_profile(i: usize, issuer: &Issuer, err: &mut impl FnMut(String, String)) {
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

/// Whether `typ` is what the profile requires (RFC 8725 section 3.11): each profile's set is disjoint from the
/// others', so a token of one profile never passes as another.
pub(super) fn typ_fits(profile: TokenProfile, typ: Option<&str>) -> bool {
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
