//! A `HashMap` for the host's own short keys (queue names, receipts, names
//! handed to Lua), hashed with FNV-1a instead of SipHash.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// FNV-1a. The maps using it are keyed by short names and counters the host
/// makes, for which SipHash's flooding resistance buys nothing and costs a
/// visible share of every message.
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `HashMap` with [`Fnv`] hashing.
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;
