//! The decoder-only transformer, in reading order: config, norm, attention, MLP, block, model.
//! Llama layout (RMSNorm, RoPE, no biases, SwiGLU or GELU MLP), with weights named as Hugging
//! Face names Llama's, so model.safetensors loads in other tools unchanged.
//!
//! On the CPU the element-wise parts run as fused kernels with their own backward pass
//! (`crate::fused`); on other devices, or with `fused` set to false, the model runs the composed
//! candle ops below, which are the reference the fused kernels are tested against. Every op
//! has a backward pass (candle_nn's fused norms, softmax_last_dim and rope do not; see
//! ../../shared/reference/candle.md), which `tests/gradients.rs` checks.

use crate::{fused, rng};
use candle_core::{DType, Device, Result, Tensor, Var, D};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use sweep_plan::shape::{Ffn, ModelShape};

/// Architecture hyperparameters of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Residual width.
    pub d_model: usize,
    /// Blocks.
    pub n_layers: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Context length (RoPE table size).
    pub context: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Feed-forward kind.
    pub ffn: Ffn,
    /// Output projection shares the embedding.
    pub tied_embeddings: bool,
    /// RoPE base.
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub norm_eps: f64,
}

impl ModelConfig {
    /// The config of a planned shape.
    pub fn from_shape(s: &ModelShape) -> Self {
        ModelConfig {
            d_model: s.d_model as usize,
            n_layers: s.n_layers as usize,
            n_heads: s.n_heads as usize,
            d_ff: s.d_ff as usize,
            context: s.context as usize,
            vocab_size: s.vocab_size as usize,
            ffn: s.ffn,
            tied_embeddings: s.tied_embeddings,
            rope_theta: 10_000.0,
            norm_eps: 1e-5,
        }
    }
    /// Head size.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }
}

/// Hooks applied around every linear layer (fake quantisation); identity by default.
pub trait LinearHooks: Send + Sync {
    /// Applied to each weight matrix before use.
    fn weight(&self, w: &Tensor) -> Result<Tensor> {
        Ok(w.clone())
    }
    /// Applied to each linear layer's input.
    fn input(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.clone())
    }
    /// Applied to each linear layer's output (its backward sees the output's gradient).
    fn output(&self, y: &Tensor) -> Result<Tensor> {
        Ok(y.clone())
    }
    /// Applied to attention keys and values.
    fn kv(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }
    /// The fake quantisation these hooks apply, when it can run inside the fused transformer
    /// block (the same function and random streams as the hooks between per-op kernels); empty
    /// targets for full precision; None when the hooks must sit between per-op kernels.
    fn block_quant(&self) -> Option<crate::quant::QuantTargets> {
        None
    }
    /// The 16-bit type the composed path (CUDA, Metal) runs matrix products in, with f32
    /// master weights and f32 element-wise ops (autocast); None for f32 products.
    fn compute_dtype(&self) -> Option<DType> {
        None
    }
}

/// a b in `dtype` when given (the 16-bit product of autocast: inputs cast, f32 accumulation in
/// the BLAS, the product rounded to `dtype`), returned in a's dtype; plain a b otherwise.
/// Differentiable: the casts pass gradients through.
pub fn autocast_matmul(a: &Tensor, b: &Tensor, dtype: Option<DType>) -> Result<Tensor> {
    match dtype {
        Some(d) if d != a.dtype() => a.to_dtype(d)?.matmul(&b.to_dtype(d)?)?.to_dtype(a.dtype()),
        _ => a.matmul(b),
    }
}

/// No hooks: full precision.
pub struct NoHooks;
impl LinearHooks for NoHooks {
    fn block_quant(&self) -> Option<crate::quant::QuantTargets> {
        Some(Default::default())
    }
}

/// y = x W^T over the last dimension, with hooks (the fused kernel when `fast`).
fn linear(x: &Tensor, w: &Tensor, hooks: &dyn LinearHooks, fast: bool) -> Result<Tensor> {
    let x = hooks.input(x)?;
    let w = hooks.weight(w)?;
    if fast {
        return hooks.output(&fused::linear(&x, &w)?);
    }
    let (out, inp) = w.dims2()?;
    let dims = x.dims().to_vec();
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let y = autocast_matmul(&x.reshape((rows, inp))?, &w.t()?, hooks.compute_dtype())?;
    let mut out_dims = dims;
    *out_dims.last_mut().expect("rank >= 1") = out;
    hooks.output(&y.reshape(out_dims)?)
}

/// RMSNorm: x / sqrt(mean(x^2) + eps) * weight (composed reference).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(weight)
}

/// Rotary embedding (rotate-half form, as Hugging Face Llama): x is [B, H, T, hd] (composed reference).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let hd = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
    let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
    let a = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
    let b = (x2.broadcast_mul(cos)? + x1.broadcast_mul(sin)?)?;
    Tensor::cat(&[&a, &b], D::Minus1)
}

/// Causal softmax(scale * scores + mask) over the last dimension, mask [T, T] with -inf above
/// the diagonal (composed reference).
pub fn causal_softmax(scores: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    candle_nn::ops::softmax(&(scores * scale)?.broadcast_add(mask)?, D::Minus1)
}

/// silu(gate) * up (composed reference).
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.silu()? * up
}

/// Mean cross-entropy of logits [N, V] against targets (composed reference).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    candle_nn::loss::cross_entropy(logits, &targets.flatten_all()?)
}

/// The model's parameters, named as Hugging Face Llama names them.
pub struct Transformer {
    /// Hyperparameters.
    pub config: ModelConfig,
    /// Parameters by name, in a fixed order.
    pub params: BTreeMap<String, Var>,
    /// Use the fused CPU kernels where the parameters are on the CPU (true by default); false
    /// runs the composed reference ops everywhere.
    pub fused: bool,
    /// Weight gradients of fused blocks, merged into candle's by [`Transformer::backward`].
    side_grads: fused::block::SideGrads,
    /// The fused cross-entropy's logits buffer, reused from step to step.
    scratch: fused::Scratch,
    cos: Tensor,
    sin: Tensor,
    mask: Tensor,
}

/// A block's parameters in the fused block's order (names after `model.layers.{i}.`); GELU
/// blocks have no gate.
const BLOCK_PARAMS: [&str; 9] = [
    "input_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
];

fn layer_name(i: usize, rest: &str) -> String {
    format!("model.layers.{i}.{rest}")
}

impl Transformer {
    /// Parameter names and shapes, in a fixed order.
    pub fn param_shapes(c: &ModelConfig) -> Vec<(String, Vec<usize>)> {
        let (d, f, v) = (c.d_model, c.d_ff, c.vocab_size);
        let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, d])];
        for i in 0..c.n_layers {
            out.push((layer_name(i, "input_layernorm.weight"), vec![d]));
            for p in ["q_proj", "k_proj", "v_proj", "o_proj"] {
                out.push((layer_name(i, &format!("self_attn.{p}.weight")), vec![d, d]));
            }
            out.push((layer_name(i, "post_attention_layernorm.weight"), vec![d]));
            match c.ffn {
                Ffn::Swiglu => {
                    out.push((layer_name(i, "mlp.gate_proj.weight"), vec![f, d]));
                    out.push((layer_name(i, "mlp.up_proj.weight"), vec![f, d]));
                }
                Ffn::Gelu => out.push((layer_name(i, "mlp.up_proj.weight"), vec![f, d])),
            }
            out.push((layer_name(i, "mlp.down_proj.weight"), vec![d, f]));
        }
        out.push(("model.norm.weight".into(), vec![d]));
        if !c.tied_embeddings {
            out.push(("lm_head.weight".into(), vec![v, d]));
        }
        out
    }

    /// A freshly initialised model: N(0, 0.02) matrices, output projections scaled by
    /// 1/sqrt(2 n_layers), unit norms. The same numbers on every machine for a seed.
    pub fn new(config: ModelConfig, seed: u64, device: &Device) -> Result<Self> {
        let mut params = BTreeMap::new();
        let residual_scale = 1.0 / (2.0 * config.n_layers as f64).sqrt();
        for (name, shape) in Self::param_shapes(&config) {
            let n: usize = shape.iter().product();
            let t = if shape.len() == 1 {
                Tensor::ones(shape, DType::F32, device)?
            } else {
                let std = if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") {
                    0.02 * residual_scale
                } else {
                    0.02
                };
                let stream = rng::stream_of(&name);
                let data: Vec<f32> = (0..n as u64).map(|i| (std * rng::normal(seed, stream, i)) as f32).collect();
                Tensor::from_vec(data, shape, device)?
            };
            params.insert(name, Var::from_tensor(&t)?);
        }
        Self::with_params(config, params, device)
    }

    /// A model over given parameters (e.g. loaded from a checkpoint).
    pub fn with_params(config: ModelConfig, params: BTreeMap<String, Var>, device: &Device) -> Result<Self> {
        for (name, shape) in Self::param_shapes(&config) {
            let p = params.get(&name).ok_or_else(|| candle_core::Error::Msg(format!("missing parameter {name}")))?;
            if p.dims() != shape.as_slice() {
                return Err(candle_core::Error::Msg(format!(
                    "parameter {name} has shape {:?}, expected {shape:?}",
                    p.dims()
                )));
            }
        }
        let (t, hd) = (config.context, config.head_dim());
        let inv: Vec<f32> =
            (0..hd / 2).map(|i| (1.0 / config.rope_theta.powf(2.0 * i as f64 / hd as f64)) as f32).collect();
        let freqs: Vec<f32> = (0..t).flat_map(|p| inv.iter().map(move |f| p as f32 * f)).collect();
        let freqs = Tensor::from_vec(freqs, (t, hd / 2), device)?;
        let mask: Vec<f32> =
            (0..t).flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
        // Tables in the parameters' dtype (f32 for training, f64 for gradient checks).
        let dtype = params["model.embed_tokens.weight"].dtype();
        Ok(Transformer {
            cos: freqs.cos()?.to_dtype(dtype)?,
            sin: freqs.sin()?.to_dtype(dtype)?,
            mask: Tensor::from_vec(mask, (t, t), device)?.to_dtype(dtype)?,
            config,
            params,
            fused: true,
            side_grads: Default::default(),
            scratch: Default::default(),
        })
    }

    fn p(&self, name: &str) -> &Tensor {
        self.params.get(name).unwrap_or_else(|| panic!("parameter {name} exists by construction")).as_tensor()
    }

    /// Whether this forward pass runs the fused kernels (CPU, f32/f64, and `fused` set).
    fn fused_for(&self, t: &Tensor) -> bool {
        self.fused && fused::use_fused(t)
    }

    /// The final normalised hidden states [B*T, d] for token ids [B, T].
    fn hidden(&self, tokens: &Tensor, hooks: &dyn LinearHooks) -> Result<Tensor> {
        let c = &self.config;
        let (b, t) = tokens.dims2()?;
        let (h, hd) = (c.n_heads, c.head_dim());
        let embed = self.p("model.embed_tokens.weight");
        let fast = self.fused_for(embed);
        let norm =
            |x: &Tensor, w: &Tensor| if fast { fused::rms_norm(x, w, c.norm_eps) } else { rms_norm(x, w, c.norm_eps) };
        let mut x = embed.index_select(&tokens.flatten_all()?, 0)?.reshape((b, t, c.d_model))?;
        let cos = self.cos.narrow(0, 0, t)?;
        let sin = self.sin.narrow(0, 0, t)?;
        let mask = self.mask.narrow(0, 0, t)?.narrow(1, 0, t)?;
        let scale = 1.0 / (hd as f64).sqrt();
        // Whole fused blocks for full precision and for fake-quantised precisions; the hooks
        // between per-op kernels otherwise (16-bit autocast, or hooks that are not quantisation).
        let block_quant = hooks.block_quant();
        let whole_blocks = fast && block_quant.is_some();
        let block_quant = block_quant.unwrap_or_default();
        for i in 0..c.n_layers {
            let n = |rest: &str| layer_name(i, rest);
            if whole_blocks {
                let swiglu = c.ffn == Ffn::Swiglu;
                let names = BLOCK_PARAMS.iter().filter(|r| swiglu || !r.starts_with("mlp.gate"));
                let weights = names.map(|r| (n(r), self.p(&n(r)).clone())).collect();
                let params = fused::block::BlockParams { weights, swiglu };
                x = fused::block::transformer_block(
                    &x,
                    params,
                    &cos,
                    &sin,
                    h,
                    c.d_ff,
                    c.norm_eps,
                    &block_quant,
                    &self.side_grads,
                )?;
                continue;
            }
            // Attention.
            let hn = norm(&x, self.p(&n("input_layernorm.weight")))?;
            let heads = |w: &str, rotate: bool| -> Result<Tensor> {
                let y = linear(&hn, self.p(&n(w)), hooks, fast)?;
                if fast {
                    fused::split_heads(&y, &cos, &sin, h, rotate)
                } else {
                    let y = y.reshape((b, t, h, hd))?.transpose(1, 2)?.contiguous()?;
                    if rotate {
                        rope(&y, &cos, &sin)
                    } else {
                        Ok(y)
                    }
                }
            };
            let q = heads("self_attn.q_proj.weight", true)?;
            let k = hooks.kv(&heads("self_attn.k_proj.weight", true)?)?;
            let v = hooks.kv(&heads("self_attn.v_proj.weight", false)?)?;
            let y = if fast {
                fused::causal_attention(&q, &k, &v, scale)?
            } else {
                // Products in the autocast type, softmax in f32 (as PyTorch's autocast does).
                let cd = hooks.compute_dtype();
                let scores = autocast_matmul(&q, &k.t()?, cd)?;
                let att = if fused::cuda::available(&scores) {
                    fused::cuda::causal_softmax(&scores, scale)?
                } else {
                    causal_softmax(&scores, &mask, scale)?
                };
                autocast_matmul(&att, &v, cd)?.transpose(1, 2)?.reshape((b, t, c.d_model))?
            };
            x = (x + linear(&y, self.p(&n("self_attn.o_proj.weight")), hooks, fast)?)?;
            // MLP.
            let hn = norm(&x, self.p(&n("post_attention_layernorm.weight")))?;
            let inner = match c.ffn {
                Ffn::Swiglu => {
                    let gate = linear(&hn, self.p(&n("mlp.gate_proj.weight")), hooks, fast)?;
                    let up = linear(&hn, self.p(&n("mlp.up_proj.weight")), hooks, fast)?;
                    if fast {
                        fused::swiglu(&gate, &up)?
                    } else {
                        swiglu(&gate, &up)?
                    }
                }
                Ffn::Gelu => {
                    let up = linear(&hn, self.p(&n("mlp.up_proj.weight")), hooks, fast)?;
                    if fast {
                        fused::gelu(&up)?
                    } else {
                        up.gelu()?
                    }
                }
            };
            x = (x + linear(&inner, self.p(&n("mlp.down_proj.weight")), hooks, fast)?)?;
        }
        norm(&x, self.p("model.norm.weight"))?.reshape((b * t, c.d_model))
    }

    /// The output projection: the embedding when tied, else lm_head.
    fn head(&self) -> &Tensor {
        if self.config.tied_embeddings {
            self.p("model.embed_tokens.weight")
        } else {
            self.p("lm_head.weight")
        }
    }

    /// Logits [B*T, V] for token ids [B, T].
    pub fn forward(&self, tokens: &Tensor, hooks: &dyn LinearHooks) -> Result<Tensor> {
        // The logits layer is not quantised (as in the quantised-training literature).
        self.hidden(tokens, hooks)?.matmul(&self.head().t()?)
    }

    /// Mean cross-entropy (nats per token) of next-token prediction.
    pub fn loss(&self, inputs: &Tensor, targets: &Tensor, hooks: &dyn LinearHooks) -> Result<Tensor> {
        let x = self.hidden(inputs, hooks)?;
        if self.fused_for(&x) {
            fused::head_cross_entropy(&x, self.head(), targets, &self.scratch)
        } else {
            let logits = x.matmul(&self.head().t()?)?;
            if fused::cuda::available(&logits) {
                fused::cuda::cross_entropy(&logits, targets)
            } else {
                cross_entropy(&logits, targets)
            }
        }
    }

    /// Gradients of `loss` for every parameter, by name: candle's backward pass plus the weight
    /// gradients of fused blocks. Errors if a parameter received none.
    pub fn backward(&self, loss: &Tensor) -> Result<BTreeMap<String, Tensor>> {
        self.side_grads.lock().expect("side grads lock").clear();
        let store = loss.backward()?;
        let mut side = std::mem::take(&mut *self.side_grads.lock().expect("side grads lock"));
        let mut out = BTreeMap::new();
        for (name, p) in &self.params {
            let g = match (store.get(p.as_tensor()), side.remove(name)) {
                (Some(a), Some(b)) => (a + b)?,
                (Some(a), None) => a.clone(),
                (None, Some(b)) => b,
                (None, None) => return Err(candle_core::Error::Msg(format!("parameter {name} received no gradient"))),
            };
            out.insert(name.clone(), g);
        }
        Ok(out)
    }

    /// Parameters as plain tensors by name (for saving).
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        self.params.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect()
    }
}
