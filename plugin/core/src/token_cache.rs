//! The per-VM cache of verified tokens ([`TokenCache`]): a hit skips the signature check (steps 1 to 5 of
//! [`crate::identity`]'s verification), and an agent token's step 6 is reused only where it cannot come out
//! differently. Kept against one compiled bundle: a new bundle clears it.

use std::collections::{BTreeSet, HashMap};

use crate::compile::CompiledBundle;
use crate::facts::{Agent, Peer, PeerIdentity, PeerSeen, Task, TokenFailure};
use crate::identity::{check_agent, check_signed, check_txn, txn_failure, Signed};

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

/// An agent that passed step 6 at `at` over a connection whose peer had these properties (only those the check
/// read: a check that read none holds for any peer).
#[derive(Debug)]
struct Memo {
    at: i64,
    peer: PeerSeen,
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
        self.verify_with_peer(bundle, token, &Peer::given(peer), now)
    }

    /// [`crate::identity::verify_with_peer`] through the cache: the peer's properties are read only where a check needs them, also
    /// to reuse a memo (a memo made without reading the peer is reused without reading it).
    pub fn verify_with_peer(
        &mut self,
        bundle: &CompiledBundle,
        token: &str,
        peer: &Peer<'_>,
        now: i64,
    ) -> Result<Agent, TokenFailure> {
        self.sync(bundle);
        let issuers = &bundle.issuers;
        if let Some(entry) = self.lookup(token, now) {
            // The checks of step 6 only get easier to pass as time goes on (`nbf`, `iat` in the past, lifetime), and
            // the entry is gone at `exp`: an agent checked at or before `now` for a peer that agrees on what the
            // check read of it is still good.
            if let Some(memo) = entry.memo.as_ref().filter(|m| m.at <= now && peer.agrees(&m.peer)) {
                return Ok(memo.agent.clone());
            }
            let agent = check_agent(issuers, &entry.signed, peer, now)?;
            entry.memo = Some(Memo { at: now, peer: peer.seen(), agent: agent.clone() });
            return Ok(agent);
        }
        let signed = check_signed(issuers, token)?;
        let agent = check_agent(issuers, &signed, peer, now)?;
        let memo = Memo { at: now, peer: peer.seen(), agent: agent.clone() };
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
