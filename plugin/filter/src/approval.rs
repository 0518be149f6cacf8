//! Step-up approvals in the filter: reading the approval header, checking the approval against the call, the
//! process-wide record of used approvals, and what a step-up reply tells the approval service.
//!
//! The core verifies an approval ([`warden_core::approval::verify`]); this module adds what only a gateway process
//! can know: whether the approval was already used. Used approvals live in one shared-data entry
//! ([`USED_KEY`]) that every worker VM updates by compare-and-swap, so an approval lets exactly one call through per
//! Envoy process, whichever worker handles the retry. Entries are kept until the approval has expired (plus the
//! largest clock skew an approver may allow) and pruned on every write.

use serde::Serialize;
use warden_core::approval::{self as core_approval, ApprovalFailure, CallBinding, VerifiedApproval};
use warden_core::compile::CompiledBundle;

use crate::evaluate::{token_in, TokenHeader};

/// Shared-data key of the used-approval record (per Envoy `vm_id`, like every shared-data key).
pub const USED_KEY: &str = "warden.approvals.used";

/// Most approvals remembered at once; a claim beyond it is refused (`approval_store_unavailable`) rather than
/// forgetting an unexpired one.
pub const MAX_USED: usize = 20_000;

/// How long past `exp` a used approval is remembered: the largest clock skew an approver may allow.
const RETAIN_AFTER_EXPIRY_SECONDS: i64 = 300;

/// The approval a request presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// No approval header.
    Absent,
    /// One approval token (the JWS, without `Bearer `).
    Token(String),
    /// The header is there but unusable (repeated, not UTF-8, not a token).
    Refused(ApprovalFailure),
}

impl Presented {
    /// From the approval header: a bare JWS or `Bearer <jws>`.
    pub fn from_header(header: TokenHeader<'_>) -> Presented {
        match header {
            TokenHeader::Absent => Presented::Absent,
            TokenHeader::Repeated => Presented::Refused(ApprovalFailure::Ambiguous),
            TokenHeader::One(bytes) => match std::str::from_utf8(bytes).ok().map(|v| token_in(v, "")) {
                Some(Ok(token)) => Presented::Token(token.to_string()),
                _ => Presented::Refused(ApprovalFailure::Malformed),
            },
        }
    }
}

/// Checks a presented approval for a step-up decided by `rule_id`: `None` when none was presented. The result is
/// final except for single use, which [`claim`] decides against the shared record.
pub fn check(
    bundle: &CompiledBundle,
    rule_id: &str,
    presented: &Presented,
    call: &CallBinding<'_>,
    now: i64,
) -> Option<Result<VerifiedApproval, ApprovalFailure>> {
    match presented {
        Presented::Absent => None,
        Presented::Refused(f) => Some(Err(*f)),
        Presented::Token(token) => Some(core_approval::verify(bundle, rule_id, token, call, now)),
    }
}

/// The shared-record key of an approval: 128 bits of SHA-256 over approver id and `jti` (fixed size, whatever the
/// `jti` holds).
pub fn used_id(approval: &VerifiedApproval) -> String {
    // Length-prefixed, so no (approver, jti) pair can spell another.
    let mut key = format!("{}:", approval.approver.len()).into_bytes();
    key.extend_from_slice(approval.approver.as_bytes());
    key.extend_from_slice(approval.id.as_bytes());
    let mut hex = core_approval::body_digest(&key);
    hex.truncate(32);
    hex
}

/// The used-approval record after claiming `id` (expiring at `expires_at`) at `now`: lines `<retain-until> <id>`,
/// expired lines dropped. `Err(Replayed)` when `id` is in the record; `Err(StoreUnavailable)` when the record is
/// full. A record that cannot be read is treated as full (fail closed), never as empty.
pub fn claim(current: Option<&[u8]>, id: &str, expires_at: i64, now: i64) -> Result<Vec<u8>, ApprovalFailure> {
    let mut out = Vec::new();
    let mut kept = 0usize;
    if let Some(bytes) = current {
        let text = std::str::from_utf8(bytes).map_err(|_| ApprovalFailure::StoreUnavailable)?;
        for line in text.lines() {
            let (until, used) = line.split_once(' ').ok_or(ApprovalFailure::StoreUnavailable)?;
            let until: i64 = until.parse().map_err(|_| ApprovalFailure::StoreUnavailable)?;
            if until < now {
                continue;
            }
            if used == id {
                return Err(ApprovalFailure::Replayed);
            }
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
            kept += 1;
        }
    }
    if kept >= MAX_USED {
        return Err(ApprovalFailure::StoreUnavailable);
    }
    let until = expires_at.saturating_add(RETAIN_AFTER_EXPIRY_SECONDS);
    out.extend_from_slice(format!("{until} {id}\n").as_bytes());
    Ok(out)
}

/// One approver a step-up reply names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApproverRef {
    pub id: String,
    pub iss: String,
}

/// What a step-up reply tells the agent and its approval service: what the approval must bind to, who may approve,
/// for how long at most, and where to send it (the `approval` object of the reply body, or of a JSON-RPC error's
/// `data`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepUpInfo {
    pub agent: Option<String>,
    pub task: Option<String>,
    pub tool: Option<String>,
    /// Lower-case hex SHA-256: of the canonical JSON arguments (MCP) or of the raw request body (HTTP).
    pub arguments_digest: String,
    /// `arguments` or `body`: what the digest was taken over.
    pub digest_of: &'static str,
    pub decision_id: String,
    pub rule: String,
    pub approvers: Vec<ApproverRef>,
    /// Longest approval lifetime (`exp - iat`) the gateway accepts for this rule.
    pub max_age_seconds: u64,
    /// The request header the approval goes in on the retry.
    pub header: String,
}

/// What the call must bind to, from the bundle's step-up requirement for `rule`.
pub struct StepUpCall<'a> {
    pub call: CallBinding<'a>,
    pub digest_of: &'static str,
    pub decision_id: &'a str,
    pub rule: &'a str,
    pub header: &'a str,
}

impl StepUpInfo {
    pub fn new(bundle: &CompiledBundle, s: &StepUpCall<'_>) -> StepUpInfo {
        let requirement = bundle.step_up_requirement(s.rule);
        StepUpInfo {
            agent: Some(s.call.agent.to_string()),
            task: s.call.task.map(str::to_string),
            tool: Some(s.call.tool.to_string()),
            arguments_digest: s.call.arguments_digest.to_string(),
            digest_of: s.digest_of,
            decision_id: s.decision_id.to_string(),
            rule: s.rule.to_string(),
            approvers: requirement
                .as_ref()
                .map(|r| {
                    r.approvers
                        .iter()
                        .map(|(id, iss)| ApproverRef { id: id.to_string(), iss: iss.to_string() })
                        .collect()
                })
                .unwrap_or_default(),
            max_age_seconds: requirement.map_or(0, |r| r.max_age_seconds),
            header: s.header.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(approver: &str, jti: &str) -> VerifiedApproval {
        VerifiedApproval {
            id: jti.to_string(),
            approver: approver.to_string(),
            approved_by: None,
            expires_at: 1_000,
            decision_id: None,
        }
    }

    #[test]
    fn presented_from_header() {
        assert_eq!(Presented::from_header(TokenHeader::Absent), Presented::Absent);
        assert_eq!(Presented::from_header(TokenHeader::Repeated), Presented::Refused(ApprovalFailure::Ambiguous));
        assert_eq!(Presented::from_header(TokenHeader::One(b"a.b.c")), Presented::Token("a.b.c".into()));
        assert_eq!(Presented::from_header(TokenHeader::One(b"Bearer a.b.c")), Presented::Token("a.b.c".into()));
        for bad in [&b""[..], b"\xff\xfe", b"a b c"] {
            assert_eq!(
                Presented::from_header(TokenHeader::One(bad)),
                Presented::Refused(ApprovalFailure::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn used_ids_separate_approvers_and_have_fixed_size() {
        let a = used_id(&approval("payments", "j-1"));
        assert_eq!(a.len(), 32);
        assert_ne!(a, used_id(&approval("other", "j-1")));
        assert_ne!(a, used_id(&approval("payments", "j-2")));
        assert_eq!(a, used_id(&approval("payments", "j-1")));
        assert_ne!(used_id(&approval("a", "b\u{0}c")), used_id(&approval("a\u{0}b", "c")));
    }

    #[test]
    fn claim_once_then_replayed_until_expiry() {
        let first = claim(None, "aa", 1_000, 900).unwrap();
        assert_eq!(first, b"1300 aa\n");
        assert_eq!(claim(Some(&first), "aa", 1_000, 950), Err(ApprovalFailure::Replayed));
        // Another approval is added beside it.
        let both = claim(Some(&first), "bb", 2_000, 950).unwrap();
        assert_eq!(both, b"1300 aa\n2300 bb\n");
        // Still remembered past exp (skew), pruned after.
        assert_eq!(claim(Some(&both), "aa", 1_000, 1_300), Err(ApprovalFailure::Replayed));
        assert_eq!(claim(Some(&both), "cc", 3_000, 1_301).unwrap(), b"2300 bb\n3300 cc\n");
    }

    #[test]
    fn unreadable_or_full_record_fails_closed() {
        for bad in [&b"\xff"[..], b"nonsense\n", b"x aa\n"] {
            assert_eq!(claim(Some(bad), "aa", 1_000, 0), Err(ApprovalFailure::StoreUnavailable), "{bad:?}");
        }
        let mut full = Vec::new();
        for i in 0..MAX_USED {
            full.extend_from_slice(format!("5000 {i:032x}\n").as_bytes());
        }
        assert_eq!(claim(Some(&full), "zz", 1_000, 0), Err(ApprovalFailure::StoreUnavailable));
        // Once some expire there is room again.
        assert!(claim(Some(&full), "zz", 1_000, 5_001).is_ok());
    }
}
