//! Counter-based random numbers: the value for (seed, stream, index) never depends on what was
//! drawn before, so a resumed run draws exactly what an uninterrupted one would.

/// One SplitMix64 step: the golden-ratio increment, then the finaliser sweep-data also uses.
pub fn mix64(z: u64) -> u64 {
    sweep_data::rng::mix64(z.wrapping_add(0x9E37_79B9_7F4A_7C15))
}

/// A uniform number in (0, 1) for the given coordinates.
pub fn uniform(seed: u64, stream: u64, index: u64) -> f64 {
    let h = mix64(mix64(mix64(seed) ^ stream) ^ index);
    ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// A standard normal number for the given coordinates (Box-Muller).
pub fn normal(seed: u64, stream: u64, index: u64) -> f64 {
    let u1 = uniform(seed, stream, 2 * index);
    let u2 = uniform(seed, stream, 2 * index + 1);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A 64-bit stream id from a string (e.g. a point id).
pub fn stream_of(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normals_have_unit_moments() {
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|i| normal(7, 3, i)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        // Standard errors: 1/sqrt(n) = 0.0022 for the mean, sqrt(2/n) = 0.0032 for the variance.
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.015, "variance {var}");
        assert_eq!(normal(7, 3, 5), normal(7, 3, 5));
        assert_ne!(normal(7, 3, 5), normal(8, 3, 5));
    }
}
