//! A small pseudo-random number generator and stable hashes implemented here, so that generated
//! text, splits and batches are identical on every machine and with every version of every library.

/// SplitMix64: a 64-bit generator with a fixed, documented output stream (Steele, Lea, Flood 2014).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }

    /// A uniform integer in `0..bound` without modulo bias (rejection sampling); `bound > 0`.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "SplitMix64::below needs a positive bound");
        // Reject the top partial block of the 2^64 range so every residue is equally likely.
        let zone = u64::MAX - (u64::MAX % bound + 1) % bound;
        loop {
            let x = self.next_u64();
            if x <= zone {
                return x % bound;
            }
        }
    }

    /// A uniform float in `[0, 1)` with 53 random bits.
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// The SplitMix64 finaliser: a bijective 64-bit mixing function.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stable 64-bit hash of a list of integers (order-sensitive).
pub fn hash_words(words: &[u64]) -> u64 {
    let mut h = 0x243F_6A88_85A3_08D3u64;
    for &w in words {
        h = mix64(h ^ mix64(w.wrapping_add(0x9E37_79B9_7F4A_7C15)));
    }
    h
}

/// A stable 64-bit hash of bytes keyed by `key`: not cryptographic, identical on every platform.
pub fn hash_bytes(key: u64, bytes: &[u8]) -> u64 {
    let mut h = mix64(key ^ 0x1357_9BDF_2468_ACE0) ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunk of 8 bytes"));
        h = mix64(h ^ word).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    let mut tail = [0u8; 8];
    let rest = chunks.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    mix64(h ^ u64::from_le_bytes(tail) ^ ((rest.len() as u64) << 56))
}

/// A keyed pseudo-random permutation of `0..size`, evaluated at one point in O(1) memory.
///
/// A balanced Feistel network on the smallest even number of bits covering `size`, with cycle
/// walking to stay inside the domain; used to shuffle training windows per epoch without storing
/// (or replaying) the shuffle.
#[derive(Debug, Clone)]
pub struct IndexPermutation {
    size: u64,
    half_bits: u32,
    keys: [u64; 4],
}

impl IndexPermutation {
    /// The permutation of `0..size` selected by `key`; `size > 0`.
    pub fn new(size: u64, key: u64) -> Self {
        assert!(size > 0, "IndexPermutation needs a non-empty domain");
        let bits = 64 - (size - 1).leading_zeros();
        let half_bits = bits.div_ceil(2).max(1);
        let mut rng = SplitMix64::new(key);
        let keys = [rng.next_u64(), rng.next_u64(), rng.next_u64(), rng.next_u64()];
        Self { size, half_bits, keys }
    }

    /// The image of `index` (which must be below the domain size).
    pub fn apply(&self, index: u64) -> u64 {
        assert!(index < self.size, "index {index} outside permutation of {}", self.size);
        let mut x = index;
        loop {
            x = self.feistel(x);
            if x < self.size {
                return x;
            }
        }
    }

    fn feistel(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let mut left = x >> self.half_bits;
        let mut right = x & mask;
        for &k in &self.keys {
            let next = left ^ (mix64(right ^ k) & mask);
            left = right;
            right = next;
        }
        (left << self.half_bits) | right
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_reference_stream() {
        // First outputs of SplitMix64 seeded with 0, from the reference C implementation.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn below_is_uniform_enough() {
        let mut rng = SplitMix64::new(7);
        let mut counts = [0u32; 6];
        for _ in 0..60_000 {
            counts[rng.below(6) as usize] += 1;
        }
        // Each count is Binomial(60000, 1/6): mean 10000, sd about 91; allow 5 sd.
        for c in counts {
            assert!((c as i64 - 10_000).abs() < 456, "counts {counts:?}");
        }
    }

    #[test]
    fn permutation_is_a_bijection() {
        for size in [1u64, 2, 3, 7, 64, 1000, 4097] {
            let p = IndexPermutation::new(size, 99);
            let mut seen = vec![false; size as usize];
            for i in 0..size {
                let j = p.apply(i) as usize;
                assert!(!seen[j], "size {size}: {j} hit twice");
                seen[j] = true;
            }
        }
        let a = IndexPermutation::new(1000, 1);
        let b = IndexPermutation::new(1000, 2);
        assert!((0..1000).any(|i| a.apply(i) != b.apply(i)));
    }

    #[test]
    fn hash_bytes_depends_on_key_and_every_byte() {
        let base = hash_bytes(1, b"hello world!");
        assert_ne!(base, hash_bytes(2, b"hello world!"));
        assert_ne!(base, hash_bytes(1, b"hello world?"));
        assert_ne!(base, hash_bytes(1, b"hello world"));
        assert_eq!(base, hash_bytes(1, b"hello world!"));
    }
}
