//! A `HashMap` for the host's own short keys (queue names, receipts, names
//! handed to Lua), hashed eight bytes at a time instead of with SipHash.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Multiplier of the word step (FxHash's, as rustc uses).
const K: u64 = 0x517c_c1b7_2722_0a95;

/// A word-at-a-time hash (FxHash's step) with a final mix. The maps using
/// it are keyed by short names and counters the host makes, for which
/// SipHash's flooding resistance buys nothing and costs a visible share of
/// every message; FNV-1a, used before, paid a multiplication per byte.
///
/// The final mix (a folded multiplication, as foldhash's) brings the high
/// bits down: the table takes its bucket from the low bits, which after a
/// multiplication depend only on the low bits of the last word, so numbers
/// differing in their high bits only would otherwise share a bucket (a
/// `str` ends with a byte 0xff, whose round mixes some high bits down).
#[derive(Default)]
pub struct Fast(u64);

impl Fast {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for Fast {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.add(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        // The last 1 to 7 bytes, read as two overlapping pieces that
        // cover them all (no copy through a buffer), with their count, so
        // "a" and "a\0" differ.
        let rest = words.remainder();
        let n = rest.len();
        let last = if n >= 4 {
            let low = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
            let high = u32::from_le_bytes(rest[n - 4..].try_into().expect("4 bytes"));
            u64::from(low) | (u64::from(high) << 32)
        } else if n > 0 {
            u64::from(rest[0]) | (u64::from(rest[n / 2]) << 8) | (u64::from(rest[n - 1]) << 16)
        } else {
            return;
        };
        self.add(last ^ ((n as u64) << 59));
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // A folded multiplication: the high half of the 128-bit product
        // depends on every bit of `h`.
        let wide = u128::from(self.0) * u128::from(K);
        (wide as u64) ^ ((wide >> 64) as u64)
    }
}

/// A `HashMap` with [`Fast`] hashing.
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fast>>;

/// A `HashSet` hashed with [`Fast`].
pub type FastSet<K> = std::collections::HashSet<K, BuildHasherDefault<Fast>>;

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::*;

    fn hash<T: std::hash::Hash + ?Sized>(t: &T) -> u64 {
        BuildHasherDefault::<Fast>::default().hash_one(t)
    }

    #[test]
    fn keys_that_differ_in_one_byte_spread_over_buckets() {
        // The low bits (the bucket of a small table) must differ between
        // keys differing in one byte, wherever it is. 16 random values fill
        // about 10 of 16 buckets; a pathological hash fills 1.
        for len in 1..=16 {
            for at in 0..len {
                let buckets: HashSet<u64> = (b'a'..=b'p')
                    .map(|b| {
                        let mut name = vec![b'x'; len];
                        name[at] = b;
                        hash(std::str::from_utf8(&name).unwrap()) & 15
                    })
                    .collect();
                assert!(
                    buckets.len() >= 5,
                    "length {len}, byte {at}: {} buckets of 16",
                    buckets.len()
                );
            }
        }
        // Numbers differing in their top byte only: without the final mix
        // the low bits of the product are all zero.
        let top: HashSet<u64> = (0..16u64).map(|n| hash(&(n << 56)) & 15).collect();
        assert!(top.len() >= 5, "{} buckets of 16", top.len());
        let receipts: HashSet<u64> = (0..64u64).map(|n| hash(&n) & 63).collect();
        assert!(receipts.len() >= 32, "{} buckets of 64", receipts.len());
    }

    #[test]
    fn a_zero_byte_at_the_end_changes_the_hash() {
        assert_ne!(hash(&[1u8][..]), hash(&[1u8, 0][..]));
        assert_ne!(hash("ab"), hash("ab\0"));
    }
}
