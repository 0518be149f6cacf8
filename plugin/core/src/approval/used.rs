//! Single use of step-up approvals: the process-wide record of used approvals, as pure encode / claim functions.
//!
//! Used approvals live in one shared-data entry ([`USED_KEY`]) that every worker VM updates by compare-and-swap (the
//! gate hands the claim to the host as a step, [`crate::gate::Claim`]), so an approval lets exactly one call through
//! per Envoy process, whichever worker handles the retry. Entries are kept until the approval has expired (plus the
//! largest clock skew an approver may allow) and pruned on every write.

use crate::approval::{ApprovalFailure, VerifiedApproval};

/// Shared-data key of the used-approval record (per Envoy `vm_id`, like every shared-data key).
pub const USED_KEY: &str = "warden.approvals.used";

/// Most approvals remembered at once; a claim beyond it is refused (`approval_store_unavailable`) rather than
/// forgetting an unexpired one.
pub const MAX_USED: usize = 20_000;

/// How long past `exp` a used approval is remembered: the largest clock skew an approver may allow.
const RETAIN_AFTER_EXPIRY_SECONDS: i64 = 300;

/// The shared-record key of an approval: 128 bits of SHA-256 over approver id and `jti` (fixed size, whatever the
/// `jti` holds).
pub fn used_id(approval: &VerifiedApproval) -> String {
    // Length-prefixed, so no (approver, jti) pair can spell another.
    let mut key = format!("{}:", approval.approver.len()).into_bytes();
    key.extend_from_slice(approval.approver.as_bytes());
    key.extend_from_slice(approval.id.as_bytes());
    let mut hex = crate::approval::body_digest(&key);
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
