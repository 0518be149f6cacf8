//! A small, fast, deterministic hasher for the compiled bundle's lookup tables.
//!
//! The keys of every table are written by the bundle's authors (tool ids, agent ids, hosts), so there is no
//! attacker who could insert colliding keys; requests only look keys up. A keyed SipHash would cost several times
//! more per lookup, and `RandomState` needs an entropy source that not every proxy-wasm host offers. This is the
//! multiply-rotate hash rustc uses internally (FxHash), in two lanes of eight bytes each; it uses only 64-bit
//! multiplies, which wasm has natively.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// FxHash-style state with two lanes: strings are consumed sixteen bytes per step, eight into each lane, so the
/// two multiply chains run in parallel and a 50-byte agent id costs four dependent multiplies, not seven.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher {
    a: u64,
    b: u64,
}

#[inline]
fn mix(state: u64, word: u64) -> u64 {
    (state.rotate_left(5) ^ word).wrapping_mul(SEED)
}

#[inline]
fn word(bytes: &[u8]) -> u64 {
    // A full word is one load; a variable-length `copy_from_slice` would be a `memcpy` call in wasm.
    if let Ok(full) = <[u8; 8]>::try_from(bytes) {
        return u64::from_le_bytes(full);
    }
    let mut w = [0u8; 8];
    for (d, s) in w.iter_mut().zip(bytes) {
        *d = *s;
    }
    u64::from_le_bytes(w)
}

/// Whether two byte strings are equal, eight bytes per step (wasm's `memcmp` goes byte by byte).
#[inline]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut x, mut y) = (a.chunks_exact(8), b.chunks_exact(8));
    for (p, q) in (&mut x).zip(&mut y) {
        if word(p) != word(q) {
            return false;
        }
    }
    x.remainder().iter().zip(y.remainder()).all(|(p, q)| p == q)
}

/// The 64-bit hash of `bytes` with this hasher.
#[inline]
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(bytes);
    h.finish()
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(16);
        for chunk in &mut chunks {
            let (x, y) = chunk.split_at(8);
            self.a = mix(self.a, word(x));
            self.b = mix(self.b, word(y));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let tag = (rest.len() as u64) << 59;
            if rest.len() > 8 {
                let (x, y) = rest.split_at(8);
                self.a = mix(self.a, word(x));
                self.b = mix(self.b, word(y) ^ tag);
            } else {
                self.a = mix(self.a, word(rest) ^ tag);
            }
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.a = mix(self.a, u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.a = mix(self.a, u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.a = mix(self.a, i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.a = mix(self.a, i as u64);
    }

    /// Combines the lanes; the rotation brings the well-mixed high bits down to where the table takes its index.
    #[inline]
    fn finish(&self) -> u64 {
        mix(self.a, self.b).rotate_left(26)
    }
}

pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;
pub(crate) type FxHashMap<K, V> = HashMap<K, V, FxBuild>;
pub(crate) type FxHashSet<K> = HashSet<K, FxBuild>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_is_equality() {
        let text: Vec<u8> = (0u8..=40).collect();
        for n in 0..text.len() {
            let a = &text[..n];
            assert!(same_bytes(a, a));
            for i in 0..n {
                let mut b = a.to_vec();
                b[i] ^= 1;
                assert!(!same_bytes(a, &b), "differs at {i} of {n}");
            }
            assert!(!same_bytes(a, &text[..n + 1]));
        }
    }

    #[test]
    fn words_pad_with_zeros() {
        assert_eq!(word(b"abcdefgh"), u64::from_le_bytes(*b"abcdefgh"));
        assert_eq!(word(b"abc"), u64::from_le_bytes(*b"abc\0\0\0\0\0"));
        assert_ne!(hash_bytes(b"token-a"), hash_bytes(b"token-b"));
    }
}
