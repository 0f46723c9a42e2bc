//! The hasher of pglock's backend-local maps (the registry, the name memo): a multiply-rotate
//! over 8-byte words, in the style of rustc's FxHash.
//!
//! std's SipHash resists keys chosen to collide, at a price the lock fast path measurably pays.
//! These maps hold one session's own locks and names; the name memo is capped at 1,024 entries,
//! so even names chosen to collide cost a bounded scan, in that session only.

use std::hash::Hasher;

#[derive(Default)]
pub struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        // The length first, so that zero padding of the last word cannot make two inputs equal.
        self.add(bytes.len() as u64);
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.add(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    fn write_i64(&mut self, value: i64) {
        self.add(value as u64);
    }

    fn write_isize(&mut self, value: isize) {
        self.add(value as u64);
    }

    fn finish(&self) -> u64 {
        // A multiply carries entropy upwards only, so the low bits of the last product depend
        // on the low bits of the last word alone, and hashbrown picks buckets by the low bits:
        // names of one length that differ only in their last bytes would share a bucket. A
        // finalizer (SplitMix64's: two multiplies, a few ns) makes every bit of the input
        // reach every bit of the hash.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::FastHasher;
    use std::hash::{Hash, Hasher};

    fn hash_of(value: impl Hash) -> u64 {
        let mut hasher = FastHasher::default();
        value.hash(&mut hasher);
        hasher.finish()
    }

    #[test]
    fn the_low_bits_spread_names_that_differ_only_at_their_end() {
        // hashbrown chooses buckets by the low bits: 100 names of one length, one word each,
        // must not crowd into a few of 128 buckets (as they did before finish() folded).
        let mut buckets = std::collections::HashSet::new();
        for i in 0..100 {
            let mut hasher = FastHasher::default();
            hasher.write(format!("job-{i:02}").as_bytes());
            buckets.insert(hasher.finish() & 127);
        }
        assert!(buckets.len() > 50, "only {} buckets used", buckets.len());
    }

    #[test]
    fn names_that_differ_anywhere_hash_apart() {
        assert_ne!(hash_of("job-1"), hash_of("job-2"));
        assert_ne!(hash_of("abcdefgh1"), hash_of("abcdefgh2"));
        assert_ne!(hash_of("a"), hash_of("a\0"));
        assert_ne!(hash_of(1i64), hash_of(2i64));
    }
}
