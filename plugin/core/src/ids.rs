//! Decision ids: 128 random bits per request, written as UUID v4 text.
//!
//! A xoshiro256++ generator is seeded once per VM from the host's randomness (WASI `random_get`), so a request costs
//! a few arithmetic operations, not a host call. Ids must be unique, not secret: nothing is authorized by knowing one.

use std::cell::Cell;

/// Per-VM generator of decision ids. Single-threaded (one per Wasm VM), shared through an `Rc`.
#[derive(Debug)]
pub struct IdGen {
    state: Cell<[u64; 4]>,
}

impl IdGen {
    /// Seeds from the host's randomness.
    pub fn from_entropy() -> Result<IdGen, getrandom::Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)?;
        Ok(IdGen::from_seed(seed))
    }

    /// Deterministic generator (tests).
    pub fn from_seed(seed: [u8; 32]) -> IdGen {
        let mut s = [0u64; 4];
        for (word, chunk) in s.iter_mut().zip(seed.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *word = u64::from_le_bytes(b);
        }
        if s == [0; 4] {
            // The all-zero state is the one fixed point of xoshiro.
            s[0] = 0x9e37_79b9_7f4a_7c15;
        }
        IdGen { state: Cell::new(s) }
    }

    /// The next 64 random bits.
    pub fn next_u64(&self) -> u64 {
        let mut s = self.state.get();
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        self.state.set(s);
        result
    }

    /// The next decision id, e.g. `0f8e2c1a-5b7d-4c3e-9a1b-2c3d4e5f6a7b`.
    pub fn next_id(&self) -> String {
        let hi = self.next_u64().to_be_bytes();
        let lo = self.next_u64().to_be_bytes();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&hi);
        bytes[8..].copy_from_slice(&lo);
        format_uuid_v4(bytes)
    }
}

/// Formats 16 random bytes as UUID v4 text (version and variant bits set, lower-case hex).
pub fn format_uuid_v4(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_v4_text() {
        assert_eq!(format_uuid_v4([0xff; 16]), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert_eq!(format_uuid_v4([0; 16]), "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn ids_are_distinct_and_well_formed() {
        let gen = IdGen::from_seed([7; 32]);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = gen.next_id();
            assert_eq!(id.len(), 36);
            assert_eq!(&id[14..15], "4");
            assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
            assert!(seen.insert(id));
        }
        // The zero seed is not a fixed point.
        let zero = IdGen::from_seed([0; 32]);
        assert_ne!(zero.next_id(), zero.next_id());
    }

    #[test]
    fn entropy_seeds_differ() {
        let a = IdGen::from_entropy().unwrap();
        let b = IdGen::from_entropy().unwrap();
        assert_ne!(a.next_id(), b.next_id());
    }
}
