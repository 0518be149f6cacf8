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
    let mut w = [0u8; 8];
    let n = bytes.len().min(8);
    w[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(w)
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
