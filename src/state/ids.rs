//! Identifiers held as keyed 128-bit hashes.
//!
//! Event ids (de-duplication) and user ids (distinct-user windows) are kept
//! as SipHash-1-3 128-bit digests under a random key: no allocation, cheap
//! hashing and comparison, and a fixed 16 bytes each. Without the key nobody
//! can construct colliding ids; an accidental collision among a billion ids
//! has a probability of about 10⁻²⁰.

use std::hash::Hasher;

use siphasher::sip128::{Hasher128, SipHasher13};

/// A 128-bit id digest; two `u64`s keep it 8-byte aligned, so a `(Ts, Id)`
/// pair takes 24 bytes, not the 32 of `(i64, u128)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Id(pub u64, pub u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdHasher {
    keys: (u64, u64),
}

impl IdHasher {
    pub fn random() -> Self {
        use rand::Rng;
        let mut rng = rand::rng();
        IdHasher { keys: (rng.random(), rng.random()) }
    }

    pub fn with_keys(k0: u64, k1: u64) -> Self {
        IdHasher { keys: (k0, k1) }
    }

    pub fn keys(&self) -> (u64, u64) {
        self.keys
    }

    pub fn id(&self, s: &str) -> Id {
        let mut h = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        h.write(s.as_bytes());
        let d = h.finish128();
        Id(d.h1, d.h2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_strings_distinct_ids_and_keys_matter() {
        let a = IdHasher::with_keys(1, 2);
        assert_eq!(a.id("u-1"), a.id("u-1"));
        assert_ne!(a.id("u-1"), a.id("u-2"));
        assert_ne!(a.id("u-1"), IdHasher::with_keys(3, 4).id("u-1"));
    }
}
