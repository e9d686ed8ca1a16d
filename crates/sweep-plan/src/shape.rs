//! Model shapes: named sizes, shapes derived from a target non-embedding parameter count, and
//! exact parameter and FLOP counts.

use serde::{Deserialize, Serialize};

/// The feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ffn {
    /// SwiGLU: three d_model x d_ff matrices.
    Swiglu,
    /// GELU: two d_model x d_ff matrices.
    Gelu,
}

/// The architecture of one decoder-only transformer (RMSNorm, RoPE, no biases).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelShape {
    /// Residual stream width.
    pub d_model: u64,
    /// Number of transformer blocks.
    pub n_layers: u64,
    /// Number of attention heads (d_model / n_heads is the head size).
    pub n_heads: u64,
    /// Hidden width of the feed-forward block.
    pub d_ff: u64,
    /// Context length in tokens.
    pub context: u64,
    /// Vocabulary size.
    pub vocab_size: u64,
    /// Feed-forward kind.
    pub ffn: Ffn,
    /// Whether the output projection shares the token embedding matrix.
    pub tied_embeddings: bool,
}

/// Parameter and FLOP counts of a shape; recorded with every point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Parameters outside the embedding and unembedding matrices (Kaplan's N).
    pub non_embedding_params: u64,
    /// Token embedding (and untied unembedding) parameters.
    pub embedding_params: u64,
    /// All trainable parameters.
    pub total_params: u64,
    /// Training FLOPs per token by the 6N rule, N = non-embedding parameters.
    pub flops_per_token_6n: f64,
    /// Training FLOPs per token by Chinchilla's appendix F count (embeddings, attention logits
    /// and the final logits included; backward = 2x forward).
    pub flops_per_token_chinchilla: f64,
}

impl ModelShape {
    /// Feed-forward matrices (3 for SwiGLU, 2 for GELU).
    fn ffn_mats(&self) -> u64 {
        match self.ffn {
            Ffn::Swiglu => 3,
            Ffn::Gelu => 2,
        }
    }

    /// Exact parameter and FLOP counts.
    pub fn counts(&self) -> Counts {
        let (d, l, f, v, t) = (self.d_model, self.n_layers, self.d_ff, self.vocab_size, self.context);
        let per_layer = 4 * d * d + self.ffn_mats() * d * f + 2 * d;
        let non_embedding = l * per_layer + d;
        let embedding = if self.tied_embeddings { v * d } else { 2 * v * d };
        let (df, lf, ff, vf, tf) = (d as f64, l as f64, f as f64, v as f64, t as f64);
        // Chinchilla appendix F, forward FLOPs per token.
        let embed = 2.0 * vf * df;
        let attn = 2.0 * 3.0 * df * df // q, k, v projections
            + 2.0 * tf * df // QK^T logits
            + 3.0 * self.n_heads as f64 * tf // softmax
            + 2.0 * tf * df // softmax @ V
            + 2.0 * df * df; // output projection
        let dense = 2.0 * self.ffn_mats() as f64 * df * ff;
        let logits = 2.0 * df * vf;
        let forward = embed + lf * (attn + dense) + logits;
        Counts {
            non_embedding_params: non_embedding,
            embedding_params: embedding,
            total_params: non_embedding + embedding,
            flops_per_token_6n: 6.0 * non_embedding as f64,
            flops_per_token_chinchilla: 3.0 * forward,
        }
    }
}

/// A shape without context and vocabulary, as named sizes and derivations give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreShape {
    /// Residual stream width.
    pub d_model: u64,
    /// Number of blocks.
    pub n_layers: u64,
    /// Number of heads.
    pub n_heads: u64,
    /// Feed-forward width; derived from d_model when absent.
    #[serde(default)]
    pub d_ff: Option<u64>,
}

/// The built-in size ladder, smallest first: (name, d_model, n_layers, n_heads).
pub const NAMED_SIZES: &[(&str, u64, u64, u64)] = &[
    ("micro", 32, 1, 2),
    ("tiny", 64, 2, 2),
    ("mini", 128, 3, 4),
    ("small", 256, 4, 4),
    ("medium", 384, 6, 6),
    ("base", 512, 8, 8),
    ("large", 768, 12, 12),
    ("xl", 1024, 16, 16),
];

/// Rule for turning a target non-embedding parameter count into a shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShapeRule {
    /// Target d_model / n_layers.
    pub aspect_ratio: f64,
    /// Head size; d_model is a multiple of it.
    pub head_dim: u64,
    /// Feed-forward kind (sets the default d_ff).
    pub ffn: Ffn,
    /// d_ff = ffn_multiplier * d_model rounded up to a multiple of `ffn_multiple_of`.
    pub ffn_multiplier: f64,
    /// Rounding of d_ff.
    pub ffn_multiple_of: u64,
}

impl ShapeRule {
    /// The default d_ff for a width.
    pub fn d_ff(&self, d_model: u64) -> u64 {
        let raw = (self.ffn_multiplier * d_model as f64).ceil() as u64;
        raw.div_ceil(self.ffn_multiple_of) * self.ffn_multiple_of
    }

    fn non_embedding(&self, d: u64, l: u64) -> u64 {
        let mats = match self.ffn {
            Ffn::Swiglu => 3,
            Ffn::Gelu => 2,
        };
        l * (4 * d * d + mats * d * self.d_ff(d) + 2 * d) + d
    }

    /// The shape whose non-embedding count is nearest the target (in log space), with a small
    /// penalty for straying from the aspect ratio. Deterministic.
    pub fn derive(&self, target: f64) -> CoreShape {
        let mut best: Option<(f64, CoreShape)> = None;
        for k in 1..=256u64 {
            let d = k * self.head_dim;
            let l_ideal = (target / self.non_embedding(d, 1) as f64).max(1.0);
            for l in [l_ideal.floor() as u64, l_ideal.ceil() as u64] {
                let l = l.clamp(1, 512);
                let n = self.non_embedding(d, l) as f64;
                let cost = (n / target).ln().abs() + 0.25 * ((d as f64 / l as f64) / self.aspect_ratio).ln().abs();
                if best.as_ref().is_none_or(|(c, _)| cost < *c - 1e-12) {
                    best = Some((cost, CoreShape { d_model: d, n_layers: l, n_heads: k, d_ff: Some(self.d_ff(d)) }));
                }
            }
        }
        best.expect("the search space is never empty").1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> ShapeRule {
        ShapeRule { aspect_ratio: 32.0, head_dim: 32, ffn: Ffn::Swiglu, ffn_multiplier: 8.0 / 3.0, ffn_multiple_of: 32 }
    }

    #[test]
    fn counts_by_hand() {
        // d 4, 1 layer, d_ff 8, SwiGLU, tied, V 10, ctx 2.
        let s = ModelShape {
            d_model: 4,
            n_layers: 1,
            n_heads: 2,
            d_ff: 8,
            context: 2,
            vocab_size: 10,
            ffn: Ffn::Swiglu,
            tied_embeddings: true,
        };
        let c = s.counts();
        assert_eq!(c.non_embedding_params, 4 * 16 + 3 * 32 + 8 + 4);
        assert_eq!(c.embedding_params, 40);
        assert_eq!(c.total_params, 172 + 40);
        // forward: embed 80 + attn (96 + 16 + 12 + 16 + 32) + dense 192 + logits 80 = 524
        assert_eq!(c.flops_per_token_chinchilla, 3.0 * 524.0);
        let untied = ModelShape { tied_embeddings: false, ..s };
        assert_eq!(untied.counts().embedding_params, 80);
    }

    #[test]
    fn gpt2_small_like_count() {
        // 12 layers, d 768, GELU d_ff 3072: 12 * (4 d^2 + 8 d^2) = 84.9M non-embedding (+ norms).
        let s = ModelShape {
            d_model: 768,
            n_layers: 12,
            n_heads: 12,
            d_ff: 3072,
            context: 1024,
            vocab_size: 50257,
            ffn: Ffn::Gelu,
            tied_embeddings: true,
        };
        let c = s.counts();
        assert_eq!(c.non_embedding_params, 12 * (12 * 768 * 768 + 2 * 768) + 768);
        assert_eq!(c.embedding_params, 50257 * 768);
    }

    #[test]
    fn derived_shapes_hit_targets() {
        let r = rule();
        for target in [1e5, 3e5, 1e6, 3e6, 1e7, 1e8] {
            let s = r.derive(target);
            let n = r.non_embedding(s.d_model, s.n_layers) as f64;
            assert!((n / target).ln().abs() < 0.35, "target {target}: got {n} from {s:?}");
            assert_eq!(s.d_model % r.head_dim, 0);
        }
        // A larger target never gives a smaller model.
        let mut last = 0;
        for target in [1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7] {
            let s = r.derive(target);
            let n = r.non_embedding(s.d_model, s.n_layers);
            assert!(n >= last);
            last = n;
        }
    }
}
