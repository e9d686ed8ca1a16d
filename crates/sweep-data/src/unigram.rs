//! The unigram model of a point's training tokens, for the unigram-normalised loss of Tao et al.
//! 2024 (arXiv 2407.13623): L_u = -mean log( p(w_i | context) / p_unigram(w_i) ), the model's
//! cross-entropy minus the unigram model's on the same tokens. Unlike the cross-entropy per
//! token it is comparable across vocabularies.
//!
//! The unigram probabilities are the token frequencies of the training tokens a point may read
//! (its sources' readable prefixes, mixed at its ratio), with add-one smoothing over the
//! vocabulary so that a validation token never seen in training has a finite loss.

use crate::sampler::MixtureSampler;
use crate::shard::TokenShard;
use crate::source::SourceKind;

/// Log-probabilities of every id under a unigram model.
#[derive(Debug, Clone, PartialEq)]
pub struct Unigram {
    log_probs: Vec<f64>,
}

/// Occurrences of each id among the first `limit` tokens of `shard` (ids at or above
/// `vocab_size` are not counted).
pub fn token_counts(shard: &TokenShard, limit: usize, vocab_size: usize) -> Vec<u64> {
    let mut counts = vec![0u64; vocab_size];
    let end = limit.min(shard.len());
    let mut buf = Vec::with_capacity(1 << 16);
    let mut start = 0;
    while start < end {
        let n = (end - start).min(1 << 16);
        buf.clear();
        shard.extend_from(start, n, &mut buf);
        for &id in &buf {
            if let Some(c) = counts.get_mut(id as usize) {
                *c += 1;
            }
        }
        start += n;
    }
    counts
}

impl Unigram {
    /// A unigram model from counts, add-one smoothed: p(w) = (c_w + 1) / (n + V).
    pub fn from_counts(counts: &[u64]) -> Unigram {
        Unigram::mixture(&[(1.0, counts)])
    }

    /// A mixture of add-one-smoothed unigram models, `(weight, counts)` each (weights sum to 1):
    /// the unigram model of a training stream that takes each source with its weight.
    pub fn mixture(parts: &[(f64, &[u64])]) -> Unigram {
        let vocab = parts.iter().map(|(_, c)| c.len()).max().unwrap_or(0);
        let mut probs = vec![0.0f64; vocab];
        for (weight, counts) in parts {
            if *weight <= 0.0 {
                continue;
            }
            let total: u64 = counts.iter().sum();
            let denom = (total + vocab as u64) as f64;
            for (w, p) in probs.iter_mut().enumerate() {
                *p += weight * (counts.get(w).copied().unwrap_or(0) + 1) as f64 / denom;
            }
        }
        Unigram { log_probs: probs.iter().map(|p| p.ln()).collect() }
    }

    /// The unigram model of what `sampler` reads: each source's readable training tokens,
    /// weighted by its share of rows.
    pub fn of_sampler(
        sampler: &MixtureSampler,
        general: Option<&TokenShard>,
        domain: Option<&TokenShard>,
        vocab_size: usize,
    ) -> Unigram {
        let r = sampler.mixture_ratio();
        let counts = |kind: SourceKind, shard: Option<&TokenShard>| -> Option<Vec<u64>> {
            let limit = sampler.readable_tokens(kind)?;
            Some(token_counts(shard?, limit as usize, vocab_size))
        };
        let g = counts(SourceKind::General, general);
        let d = counts(SourceKind::Domain, domain);
        let mut parts: Vec<(f64, &[u64])> = Vec::new();
        if let Some(g) = &g {
            parts.push((1.0 - r, g));
        }
        if let Some(d) = &d {
            parts.push((r, d));
        }
        let total: f64 = parts.iter().map(|p| p.0).sum();
        for p in &mut parts {
            p.0 /= total;
        }
        Unigram::mixture(&parts)
    }

    /// Natural-log probability of `id`.
    pub fn log_prob(&self, id: u32) -> f64 {
        self.log_probs.get(id as usize).copied().unwrap_or(f64::NEG_INFINITY)
    }

    /// Mean negative log-probability of `targets` (nats per token).
    pub fn cross_entropy(&self, targets: &[u32]) -> f64 {
        -targets.iter().map(|&t| self.log_prob(t)).sum::<f64>() / targets.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::{ShardWriter, TokenWidth};

    fn shard(dir: &std::path::Path, name: &str, ids: &[u32]) -> TokenShard {
        let path = dir.join(name);
        let mut w = ShardWriter::create(&path, TokenWidth::U16).unwrap();
        w.write(ids).unwrap();
        w.finish().unwrap();
        TokenShard::open(&path, TokenWidth::U16).unwrap()
    }

    #[test]
    fn the_sampler_s_unigram_model_counts_exactly_what_it_reads() {
        // General tokens cycle 0..10, domain tokens are all 7; r = 0.25 and 81 unique tokens give
        // the general source 61 (6 windows of 10, plus the last target) and the domain 20 (one
        // window: its first 11 tokens).
        let dir = tempfile::tempdir().unwrap();
        let general: Vec<u32> = (0..5000).map(|i| (i % 10) as u32).collect();
        let domain = vec![7u32; 3000];
        let (g, d) = (shard(dir.path(), "g", &general), shard(dir.path(), "d", &domain));
        let mut sampler = MixtureSampler::new(Some(g.clone()), Some(d.clone()), 0.25, 4, 10, 0).unwrap();
        sampler.limit_unique_tokens(81).unwrap();
        let u = Unigram::of_sampler(&sampler, Some(&g), Some(&d), 12);
        // Brute force over the readable prefixes, add-one smoothing over 12 ids, mixed 3:1.
        let count = |ids: &[u32], w: u32| ids.iter().filter(|&&x| x == w).count() as f64;
        let (gp, dp) = (&general[..61], &domain[..11]);
        for w in 0..12u32 {
            let want = 0.75 * (count(gp, w) + 1.0) / (61.0 + 12.0) + 0.25 * (count(dp, w) + 1.0) / (11.0 + 12.0);
            assert!((u.log_prob(w) - want.ln()).abs() < 1e-12, "id {w}");
        }
    }

    #[test]
    fn smoothed_probabilities_by_hand() {
        // Counts 3, 1, 0 over V = 3: p = 4/7, 2/7, 1/7.
        let u = Unigram::from_counts(&[3, 1, 0]);
        for (id, p) in [(0u32, 4.0 / 7.0), (1, 2.0 / 7.0), (2, 1.0 / 7.0)] {
            assert!((u.log_prob(id) - f64::ln(p)).abs() < 1e-12);
        }
        // Cross-entropy of targets [0, 0, 2]: -(2 ln 4/7 + ln 1/7) / 3.
        let want = -(2.0 * f64::ln(4.0 / 7.0) + f64::ln(1.0 / 7.0)) / 3.0;
        assert!((u.cross_entropy(&[0, 0, 2]) - want).abs() < 1e-12);
        // A mixture weights each source's smoothed distribution.
        let m = Unigram::mixture(&[(0.25, &[3, 1, 0][..]), (0.75, &[0, 0, 5][..])]);
        let p2 = 0.25 / 7.0 + 0.75 * 6.0 / 8.0;
        assert!((m.log_prob(2) - f64::ln(p2)).abs() < 1e-12);
    }
}
