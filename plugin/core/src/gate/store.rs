//! Effects on the host's shared data, as steps: a [`Claim`] is what the gate needs written atomically across the
//! worker VMs of one proxy (single use of a step-up approval; the counters of rate limits and budgets), the
//! pure function that computes the new record from the current one, and [`run_claim`], the compare-and-swap loop
//! that carries it out against any [`SharedStore`]: the filter's is proxy-wasm shared data, the CLI's a
//! [`MemoryStore`] with Envoy's CAS semantics.

use std::collections::HashMap;

use crate::approval::used::{self, USED_KEY};
use crate::limits::{self, Charge, LIMITS_KEY};

/// How many times a claim is retried when another VM wrote the record in between.
pub const CLAIM_ATTEMPTS: usize = 16;

/// What to claim in shared data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Record an approval as used (single use): `id` from [`used::used_id`], kept until `expires_at` plus skew.
    UsedApproval { id: String, expires_at: i64, now: i64 },
    /// Count an allowed call against its limits ([`limits::claim`]): every charge is taken, or none.
    Limits { charges: Vec<Charge>, now: i64 },
}

/// Why a claim was refused by the record itself (not by the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimRefused {
    /// The approval was used before.
    Replayed,
    /// The record is full or unreadable (fail closed).
    Unavailable,
    /// Charge number `charge` of a [`Claim::Limits`] would go over its limit; `used` is its counter before the call.
    Limited { charge: usize, used: u64 },
}

/// How a claim ended; what the gate is called back with ([`crate::gate::Flow::on_claimed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    Claimed,
    Refused(ClaimRefused),
    /// The store failed or stayed contended for [`CLAIM_ATTEMPTS`] tries.
    StoreFailed,
}

impl Claim {
    /// The shared-data key of the record.
    pub fn key(&self) -> &'static str {
        match self {
            Claim::UsedApproval { .. } => USED_KEY,
            Claim::Limits { .. } => LIMITS_KEY,
        }
    }

    /// The record after the claim, from the record as read (`None`: missing), or why the claim is refused.
    pub fn next_record(&self, current: Option<&[u8]>) -> Result<Vec<u8>, ClaimRefused> {
        match self {
            Claim::UsedApproval { id, expires_at, now } => used::claim(current, id, *expires_at, *now).map_err(|f| {
                if f == crate::approval::ApprovalFailure::Replayed {
                    ClaimRefused::Replayed
                } else {
                    ClaimRefused::Unavailable
                }
            }),
            Claim::Limits { charges, now } => limits::claim(current, charges, *now).map_err(|r| match r {
                limits::Refused::Exceeded { charge, used } => ClaimRefused::Limited { charge, used },
                limits::Refused::Unavailable => ClaimRefused::Unavailable,
            }),
        }
    }
}

/// A failed write of shared data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The record changed since it was read.
    CasMismatch,
    /// Anything else.
    Failed,
}

/// Shared data as proxy-wasm has it: values with a compare-and-swap number.
pub trait SharedStore {
    /// The value and its CAS, `None` when missing.
    fn get(&mut self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Writes `value` if the record's CAS is still `cas`.
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;
}

/// Carries out a claim: read, compute, compare-and-swap, retried on contention. A missing record is written with a
/// CAS value Envoy never hands out for it.
pub fn run_claim(store: &mut impl SharedStore, claim: &Claim) -> ClaimOutcome {
    let key = claim.key();
    for _ in 0..CLAIM_ATTEMPTS {
        let current = store.get(key);
        let next = match claim.next_record(current.as_ref().map(|(v, _)| v.as_slice())) {
            Ok(next) => next,
            Err(refused) => return ClaimOutcome::Refused(refused),
        };
        // Envoy inserts a missing key whatever the CAS; an existing one needs the CAS it was read with.
        let cas = current.map_or(u32::MAX, |(_, cas)| cas);
        match store.set(key, &next, cas) {
            Ok(()) => return ClaimOutcome::Claimed,
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Failed) => return ClaimOutcome::StoreFailed,
        }
    }
    ClaimOutcome::StoreFailed
}

/// Shared data in memory, with Envoy's semantics (CAS starts at 1 and grows on every write; a missing key is
/// inserted whatever the CAS; a stale CAS is a mismatch): what `warden eval` and `warden test` claim against.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    entries: HashMap<String, (Vec<u8>, u32)>,
}

impl SharedStore for MemoryStore {
    fn get(&mut self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.entries.get(key).cloned()
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        match self.entries.get_mut(key) {
            None => {
                self.entries.insert(key.to_string(), (value.to_vec(), 1));
                Ok(())
            }
            Some((_, current)) if cas != 0 && cas != *current => Err(StoreError::CasMismatch),
            Some(entry) => {
                *entry = (value.to_vec(), entry.1.wrapping_add(1));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_succeeds_once() {
        let mut store = MemoryStore::default();
        let claim = Claim::UsedApproval { id: "aa".into(), expires_at: 1_000, now: 900 };
        assert_eq!(run_claim(&mut store, &claim), ClaimOutcome::Claimed);
        assert_eq!(run_claim(&mut store, &claim), ClaimOutcome::Refused(ClaimRefused::Replayed));
        let other = Claim::UsedApproval { id: "bb".into(), expires_at: 1_000, now: 900 };
        assert_eq!(run_claim(&mut store, &other), ClaimOutcome::Claimed);
        assert_eq!(store.get(USED_KEY), Some((b"1300 aa\n1300 bb\n".to_vec(), 2)));
    }

    /// A store whose record changes under every write: the claim gives up (fail closed), never loops forever.
    #[test]
    fn contention_and_failures_fail_closed() {
        struct Busy(u32);
        impl SharedStore for Busy {
            fn get(&mut self, _: &str) -> Option<(Vec<u8>, u32)> {
                self.0 += 1;
                Some((Vec::new(), self.0))
            }
            fn set(&mut self, _: &str, _: &[u8], _: u32) -> Result<(), StoreError> {
                Err(StoreError::CasMismatch)
            }
        }
        let claim = Claim::UsedApproval { id: "aa".into(), expires_at: 1_000, now: 900 };
        let mut busy = Busy(0);
        assert_eq!(run_claim(&mut busy, &claim), ClaimOutcome::StoreFailed);
        assert_eq!(busy.0 as usize, CLAIM_ATTEMPTS);
        let mut unreadable = MemoryStore::default();
        unreadable.set(USED_KEY, b"\xff", 0).unwrap();
        assert_eq!(run_claim(&mut unreadable, &claim), ClaimOutcome::Refused(ClaimRefused::Unavailable));
    }

    /// A limit's counter in the store: counted up to the maximum, then refused with the counter as it was.
    #[test]
    fn limit_claims_count_in_their_own_record() {
        let mut store = MemoryStore::default();
        let charge = Charge { limit: 0, tool: 0, entry: "aa".into(), amount: 1, max: 2, window_end: 60 };
        let claim = Claim::Limits { charges: vec![charge], now: 10 };
        assert_eq!(claim.key(), LIMITS_KEY);
        assert_eq!(run_claim(&mut store, &claim), ClaimOutcome::Claimed);
        assert_eq!(run_claim(&mut store, &claim), ClaimOutcome::Claimed);
        assert_eq!(run_claim(&mut store, &claim), ClaimOutcome::Refused(ClaimRefused::Limited { charge: 0, used: 2 }));
        assert_eq!(store.get(LIMITS_KEY), Some((b"60 2 aa\n".to_vec(), 2)));
        assert_eq!(store.get(USED_KEY), None);
    }
}
