//! Request facts: everything `decide` looks at, gathered once per request by the filter (or the CLI, or a bench).

use crate::vocab::ToolIdx;

/// What the gateway knows about one request when it decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// The environment label of this gateway (plugin configuration), e.g. `prod`.
    pub environment: String,
    /// The verified identity of the caller, or why there is none.
    pub identity: Identity,
    /// The tool the request reaches, resolved against the bundle's catalog (`None`: no tool matched).
    pub tool: Option<ToolIdx>,
}

/// The caller's identity as established from its token(s).
// One per request, built once and moved: boxing the agent would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Identity {
    /// No token was presented.
    Missing,
    /// A token was presented and refused; the code says which check failed.
    Invalid(TokenFailure),
    /// A token verified against one of the bundle's issuers.
    Verified(Agent),
}

/// A verified agent and its task context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// `agent.id`: the workload identity (e.g. `spiffe://acme.example/agents/support/bot-1`).
    pub id: String,
    /// `agent.trust_domain`: the SPIFFE trust domain when `id` is a SPIFFE ID, else the URL host or empty.
    pub trust_domain: String,
    /// The bundle issuer id that vouched for the token.
    pub issuer: String,
    /// The token's `jti`, if any.
    pub token_id: Option<String>,
    /// The token's expiry (seconds since the epoch).
    pub expires_at: i64,
    /// Task context, when the token carries it (mapped claims) or a Transaction Token supplied it.
    pub task: Option<Task>,
    /// RFC 8693 delegation: present when the token has an `act` claim (`id` is then `act.sub`).
    pub delegation: Option<Delegation>,
    /// Whether the request's mTLS peer URI SAN equals `id` (required where the issuer or a rule says so). Checked
    /// for every token of a bundle with a rule that requires sender binding, and wherever the issuer requires it;
    /// in a bundle where nothing reads it, false.
    pub sender_bound: bool,
}

/// Who the agent acts for (RFC 8693 `act`): the token's `sub` is the delegator, `act.sub` the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    /// `delegator`: the token's `sub`, the party the agent acts for.
    pub delegator: String,
    /// Prior actors from nested `act` claims, nearest first. Recorded, never used to decide (RFC 8693 section 4.1).
    pub chain: Vec<String>,
}

impl Delegation {
    /// Number of `act` levels: 1 for a direct delegation, plus one per prior actor.
    pub fn depth(&self) -> u32 {
        u32::try_from(self.chain.len()).unwrap_or(u32::MAX - 1).saturating_add(1)
    }
}

/// The request's mTLS peer as the proxy saw it (Envoy `connection.uri_san_peer_certificate` and
/// `connection.sha256_peer_certificate_digest`). `None` in the facts: no client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The first URI SAN of the client certificate (e.g. a SPIFFE ID).
    pub uri_san: Option<String>,
    /// SHA-256 of the client certificate (DER), for RFC 8705 `cnf.x5t#S256`.
    pub cert_sha256: Option<[u8; 32]>,
}

impl PeerIdentity {
    /// From Envoy's property values: the URI SAN as is, the digest as 64 hex digits (either case). A digest that
    /// is not 64 hex digits is treated as absent (a certificate-bound token then fails closed).
    pub fn from_envoy(uri_san: Option<&str>, sha256_hex: Option<&str>) -> Option<PeerIdentity> {
        let uri_san = uri_san.filter(|s| !s.is_empty()).map(str::to_string);
        let cert_sha256 = sha256_hex.and_then(parse_hex32);
        if uri_san.is_none() && cert_sha256.is_none() {
            return None;
        }
        Some(PeerIdentity { uri_san, cert_sha256 })
    }
}

/// One property of the connection's mTLS peer, as the host is asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerProperty {
    /// The first URI SAN of the client certificate (Envoy `connection.uri_san_peer_certificate`).
    UriSan,
    /// The SHA-256 of the client certificate as hex (Envoy `connection.sha256_peer_certificate_digest`).
    CertSha256,
}

/// The connection's mTLS peer as the token checks see it: either given whole ([`Peer::given`]: tests, the gate's
/// driver, `warden eval`) or read from the host the first time a check needs each property ([`Peer::host`]: the
/// filter, where each property is a host call and most requests' checks need neither). Each property is read at
/// most once. Which properties a check reads depends only on the token and the bundle (sender binding required by
/// the issuer or used by a rule, a `cnf` claim), so a check that read nothing came out the same for any peer.
pub struct Peer<'a> {
    source: PeerSource<'a>,
    uri_san: std::cell::OnceCell<Option<String>>,
    cert_sha256: std::cell::OnceCell<Option<[u8; 32]>>,
}

enum PeerSource<'a> {
    Given(Option<&'a PeerIdentity>),
    /// The host's value of a property (`None`: absent, no client certificate, or the host refused).
    Host(&'a dyn Fn(PeerProperty) -> Option<String>),
}

/// What a check read of the peer: each property read, with its value (the token cache reuses a result for a
/// connection whose peer agrees on these).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PeerSeen {
    uri_san: Option<Option<String>>,
    cert_sha256: Option<Option<[u8; 32]>>,
}

impl<'a> Peer<'a> {
    /// A peer known in advance (`None`: no client certificate).
    pub fn given(peer: Option<&'a PeerIdentity>) -> Peer<'a> {
        Peer { source: PeerSource::Given(peer), uri_san: Default::default(), cert_sha256: Default::default() }
    }

    /// A peer whose properties `read` fetches from the host when first needed, normalized as
    /// [`PeerIdentity::from_envoy`] does (an empty URI SAN is absent, a digest that is not 64 hex digits too).
    pub fn host(read: &'a dyn Fn(PeerProperty) -> Option<String>) -> Peer<'a> {
        Peer { source: PeerSource::Host(read), uri_san: Default::default(), cert_sha256: Default::default() }
    }

    /// The peer's URI SAN.
    pub fn uri_san(&self) -> Option<&str> {
        self.uri_san
            .get_or_init(|| match &self.source {
                PeerSource::Given(p) => p.and_then(|p| p.uri_san.clone()),
                PeerSource::Host(read) => read(PeerProperty::UriSan).filter(|s| !s.is_empty()),
            })
            .as_deref()
    }

    /// The SHA-256 of the peer's certificate.
    pub fn cert_sha256(&self) -> Option<[u8; 32]> {
        *self.cert_sha256.get_or_init(|| match &self.source {
            PeerSource::Given(p) => p.and_then(|p| p.cert_sha256),
            PeerSource::Host(read) => read(PeerProperty::CertSha256).as_deref().and_then(parse_hex32),
        })
    }

    /// What has been read so far.
    pub(crate) fn seen(&self) -> PeerSeen {
        PeerSeen { uri_san: self.uri_san.get().cloned(), cert_sha256: self.cert_sha256.get().copied() }
    }

    /// Whether this peer has the values `seen` records (reading those properties, and only those).
    pub(crate) fn agrees(&self, seen: &PeerSeen) -> bool {
        seen.uri_san.as_ref().is_none_or(|u| u.as_deref() == self.uri_san())
            && seen.cert_sha256.is_none_or(|c| c == self.cert_sha256())
    }
}

impl std::fmt::Debug for Peer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match self.source {
            PeerSource::Given(p) => format!("given {p:?}"),
            PeerSource::Host(_) => "host".to_string(),
        };
        f.debug_struct("Peer")
            .field("source", &source)
            .field("uri_san", &self.uri_san.get())
            .field("cert_sha256", &self.cert_sha256.get())
            .finish()
    }
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let b = hex.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nibble = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(*b.get(2 * i)?)? << 4) | nibble(*b.get(2 * i + 1)?)?;
    }
    Some(out)
}

/// Task context of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: String,
    pub purpose: Option<String>,
    /// Seconds since the epoch; a task past its expiry is denied.
    pub expires_at: Option<i64>,
}

/// Why a token was refused. Stable reason codes, used in replies, logs and tests. Never carries token contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenFailure {
    /// Not three base64url segments, bad base64, bad JSON header or payload.
    Malformed,
    /// Over the size limit.
    TooLarge,
    /// The `iss` claim names no issuer the bundle trusts.
    UnknownIssuer,
    /// The `alg` is not in the issuer's allowlist (includes `none` and HMAC).
    AlgorithmNotAllowed,
    /// The `kid` is missing or names no key of the issuer.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// `exp` passed (beyond the skew).
    Expired,
    /// `nbf` in the future (beyond the skew).
    NotYetValid,
    /// `iat` in the future (beyond the skew).
    IssuedInFuture,
    /// `exp - iat` over the issuer's maximum.
    LifetimeTooLong,
    /// `aud` names none of the issuer's audiences.
    WrongAudience,
    /// A claim the profile requires is absent or has the wrong type.
    MissingClaim,
    /// More than one value for the token header.
    Ambiguous,
    /// The `typ` header is not the one the issuer's profile requires (RFC 8725 section 3.11).
    WrongType,
    /// The issuer's profile is not an agent credential here (a Transaction Token in the agent token header).
    WrongProfile,
    /// A JWT-SVID whose `sub` is not a SPIFFE ID.
    NotSpiffeId,
    /// The token has an `act` claim and its issuer does not allow delegation.
    DelegationNotAllowed,
    /// More `act` levels than the issuer's `delegation.max_depth`.
    DelegationTooDeep,
    /// The token must be sender-bound (issuer setting or `cnf`) and the request came without an mTLS peer.
    SenderNotMtls,
    /// The mTLS peer URI SAN is not the agent id.
    SenderMismatch,
    /// `cnf.x5t#S256` does not match the mTLS peer certificate (RFC 8705).
    CnfMismatch,
    /// A JWT-SVID whose `sub` is in none of the issuer's `trust_domains`.
    UntrustedTrustDomain,
    /// An access token's agent id (the mapped claim or `act.sub`) has a control character or an empty, `.` or `..`
    /// path segment.
    InvalidAgentId,
    /// The Transaction Token was refused; the inner code says which check failed.
    Txn(TxnFailure),
}

/// Why a Transaction Token (`Txn-Token` header) was refused. Codes are `txn_token_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnFailure {
    Malformed,
    TooLarge,
    UnknownIssuer,
    /// The issuer's profile is not `txn_token` (an agent token in the `Txn-Token` header).
    WrongProfile,
    AlgorithmNotAllowed,
    UnknownKey,
    BadSignature,
    /// `typ` is not `txntoken+jwt`.
    WrongType,
    NotYetValid,
    IssuedInFuture,
    LifetimeTooLong,
    WrongAudience,
    MissingClaim,
    /// The token's subject / requesting workload is not this agent.
    AgentMismatch,
    /// More than one `Txn-Token` header.
    Ambiguous,
    /// `exp` passed (beyond the skew): the task context is over.
    Expired,
}

impl TxnFailure {
    /// The stable reason code.
    pub fn code(self) -> &'static str {
        match self {
            TxnFailure::Malformed => "txn_token_malformed",
            TxnFailure::TooLarge => "txn_token_too_large",
            TxnFailure::UnknownIssuer => "txn_token_unknown_issuer",
            TxnFailure::WrongProfile => "txn_token_wrong_profile",
            TxnFailure::AlgorithmNotAllowed => "txn_token_algorithm_not_allowed",
            TxnFailure::UnknownKey => "txn_token_unknown_key",
            TxnFailure::BadSignature => "txn_token_bad_signature",
            TxnFailure::WrongType => "txn_token_wrong_type",
            TxnFailure::NotYetValid => "txn_token_not_yet_valid",
            TxnFailure::IssuedInFuture => "txn_token_issued_in_future",
            TxnFailure::LifetimeTooLong => "txn_token_lifetime_too_long",
            TxnFailure::WrongAudience => "txn_token_wrong_audience",
            TxnFailure::MissingClaim => "txn_token_missing_claim",
            TxnFailure::AgentMismatch => "txn_token_agent_mismatch",
            TxnFailure::Ambiguous => "txn_token_ambiguous",
            TxnFailure::Expired => "txn_token_expired",
        }
    }

    /// The Transaction Token counterpart of a generic check failure.
    pub(crate) fn from_token(f: TokenFailure) -> TxnFailure {
        match f {
            TokenFailure::Malformed => TxnFailure::Malformed,
            TokenFailure::TooLarge => TxnFailure::TooLarge,
            TokenFailure::UnknownIssuer => TxnFailure::UnknownIssuer,
            TokenFailure::AlgorithmNotAllowed => TxnFailure::AlgorithmNotAllowed,
            TokenFailure::UnknownKey => TxnFailure::UnknownKey,
            TokenFailure::BadSignature => TxnFailure::BadSignature,
            TokenFailure::NotYetValid => TxnFailure::NotYetValid,
            TokenFailure::IssuedInFuture => TxnFailure::IssuedInFuture,
            TokenFailure::LifetimeTooLong => TxnFailure::LifetimeTooLong,
            TokenFailure::WrongAudience => TxnFailure::WrongAudience,
            TokenFailure::Ambiguous => TxnFailure::Ambiguous,
            TokenFailure::WrongType => TxnFailure::WrongType,
            TokenFailure::WrongProfile => TxnFailure::WrongProfile,
            TokenFailure::Txn(t) => t,
            TokenFailure::Expired => TxnFailure::Expired,
            TokenFailure::MissingClaim
            | TokenFailure::UntrustedTrustDomain
            | TokenFailure::InvalidAgentId
            | TokenFailure::NotSpiffeId
            | TokenFailure::DelegationNotAllowed
            | TokenFailure::DelegationTooDeep
            | TokenFailure::SenderNotMtls
            | TokenFailure::SenderMismatch
            | TokenFailure::CnfMismatch => TxnFailure::MissingClaim,
        }
    }
}

impl TokenFailure {
    /// Every failure, Transaction Token ones included (for tools that take a reason code as input).
    pub const ALL: [TokenFailure; 39] = [
        TokenFailure::Malformed,
        TokenFailure::TooLarge,
        TokenFailure::UnknownIssuer,
        TokenFailure::AlgorithmNotAllowed,
        TokenFailure::UnknownKey,
        TokenFailure::BadSignature,
        TokenFailure::Expired,
        TokenFailure::NotYetValid,
        TokenFailure::IssuedInFuture,
        TokenFailure::LifetimeTooLong,
        TokenFailure::WrongAudience,
        TokenFailure::MissingClaim,
        TokenFailure::Ambiguous,
        TokenFailure::WrongType,
        TokenFailure::WrongProfile,
        TokenFailure::NotSpiffeId,
        TokenFailure::DelegationNotAllowed,
        TokenFailure::DelegationTooDeep,
        TokenFailure::SenderNotMtls,
        TokenFailure::SenderMismatch,
        TokenFailure::CnfMismatch,
        TokenFailure::UntrustedTrustDomain,
        TokenFailure::InvalidAgentId,
        TokenFailure::Txn(TxnFailure::Malformed),
        TokenFailure::Txn(TxnFailure::TooLarge),
        TokenFailure::Txn(TxnFailure::UnknownIssuer),
        TokenFailure::Txn(TxnFailure::WrongProfile),
        TokenFailure::Txn(TxnFailure::AlgorithmNotAllowed),
        TokenFailure::Txn(TxnFailure::UnknownKey),
        TokenFailure::Txn(TxnFailure::BadSignature),
        TokenFailure::Txn(TxnFailure::WrongType),
        TokenFailure::Txn(TxnFailure::NotYetValid),
        TokenFailure::Txn(TxnFailure::IssuedInFuture),
        TokenFailure::Txn(TxnFailure::LifetimeTooLong),
        TokenFailure::Txn(TxnFailure::WrongAudience),
        TokenFailure::Txn(TxnFailure::MissingClaim),
        TokenFailure::Txn(TxnFailure::AgentMismatch),
        TokenFailure::Txn(TxnFailure::Ambiguous),
        TokenFailure::Txn(TxnFailure::Expired),
    ];

    /// The failure whose [`code`](Self::code) is `code`.
    pub fn from_code(code: &str) -> Option<TokenFailure> {
        Self::ALL.into_iter().find(|f| f.code() == code)
    }

    /// The stable reason code.
    pub fn code(self) -> &'static str {
        match self {
            TokenFailure::Malformed => "token_malformed",
            TokenFailure::TooLarge => "token_too_large",
            TokenFailure::UnknownIssuer => "token_unknown_issuer",
            TokenFailure::AlgorithmNotAllowed => "token_algorithm_not_allowed",
            TokenFailure::UnknownKey => "token_unknown_key",
            TokenFailure::BadSignature => "token_bad_signature",
            TokenFailure::Expired => "token_expired",
            TokenFailure::NotYetValid => "token_not_yet_valid",
            TokenFailure::IssuedInFuture => "token_issued_in_future",
            TokenFailure::LifetimeTooLong => "token_lifetime_too_long",
            TokenFailure::WrongAudience => "token_wrong_audience",
            TokenFailure::MissingClaim => "token_missing_claim",
            TokenFailure::Ambiguous => "token_ambiguous",
            TokenFailure::WrongType => "token_wrong_type",
            TokenFailure::WrongProfile => "token_wrong_profile",
            TokenFailure::NotSpiffeId => "token_not_spiffe_id",
            TokenFailure::DelegationNotAllowed => "token_delegation_not_allowed",
            TokenFailure::DelegationTooDeep => "token_delegation_too_deep",
            TokenFailure::SenderNotMtls => "token_sender_not_mtls",
            TokenFailure::SenderMismatch => "token_sender_mismatch",
            TokenFailure::CnfMismatch => "token_cnf_mismatch",
            TokenFailure::UntrustedTrustDomain => "token_untrusted_trust_domain",
            TokenFailure::InvalidAgentId => "token_invalid_agent_id",
            TokenFailure::Txn(t) => t.code(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_listed_once_and_round_trips() {
        let mut codes: Vec<&str> = TokenFailure::ALL.iter().map(|f| f.code()).collect();
        for f in TokenFailure::ALL {
            assert_eq!(TokenFailure::from_code(f.code()), Some(f));
        }
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), TokenFailure::ALL.len(), "two failures share a code");
        assert_eq!(TokenFailure::from_code("token_nonsense"), None);
    }
}
