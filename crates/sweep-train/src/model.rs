//! The decoder-only transformer, in reading order: config, hooks, execution path, weight source,
//! then RmsNorm, Linear, Attention, Mlp, Block and Transformer. Llama layout (RMSNorm, RoPE, no
//! biases, SwiGLU or GELU MLP); each module holds its weights under their Hugging Face Llama
//! names (`model.layers.3.self_attn.q_proj.weight`), so model.safetensors loads in other tools
//! unchanged.
//!
//! How a pass runs is the model's [`ExecPath`], chosen once per run by [`ExecPath::choose`]:
//! whole fused blocks or per-op fused kernels on the CPU (`crate::fused`), or candle's composed
//! ops below, which run on every device and are the reference the fused paths are tested against.
//! The composed ops are plain tensor ops because candle_nn 0.11's fused RMSNorm,
//! softmax_last_dim and rotary embedding have no backward pass (they cut the gradient without an
//! error); every op here has one, which `tests/gradients.rs` checks against finite differences.

use crate::quant::{fake_quant_call, QuantCall, QuantTargets};
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

/// Hooks applied around every linear layer (fake quantisation, autocast); identity by default.
pub trait LinearHooks: Send + Sync {
    /// Applied to each weight matrix before use.
    fn weight(&self, w: &Tensor) -> Result<Tensor> {
        Ok(w.clone())
    }
    /// Applied to each linear layer's input.
    fn input(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.clone())
    }
    /// Applied to attention keys and values.
    fn kv(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }
    /// Applied to each linear layer's output (identity forward; e.g. quantises dY in the backward).
    fn output(&self, y: &Tensor) -> Result<Tensor> {
        Ok(y.clone())
    }
    /// Applied to the queries and keys [B, H, T, hd] that enter Q K^T (after [`LinearHooks::kv`]).
    fn attention_qk(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }
    /// Applied to the values [B, H, T, hd] that enter P V (after [`LinearHooks::kv`]).
    fn attention_v(&self, v: &Tensor) -> Result<Tensor> {
        Ok(v.clone())
    }
    /// The fake quantisation of the attention probabilities before P V (rows along the keys),
    /// drawn when the attention runs; None keeps them in the compute dtype.
    fn attention_probs(&self) -> Option<QuantCall> {
        None
    }
    /// Applied to the final hidden states that enter the logits product.
    fn logits_input(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.clone())
    }
    /// Applied to the output projection of the logits product.
    fn logits_weight(&self, w: &Tensor) -> Result<Tensor> {
        Ok(w.clone())
    }
    /// Called at the start of every forward pass (delayed scaling counts its sites per pass).
    fn begin_pass(&self) {}
    /// The fake quantisation these hooks apply, when it can run inside the fused transformer
    /// block (the same function and random streams as the hooks between per-op kernels); empty
    /// targets for full precision; None when the hooks must sit between per-op kernels, so
    /// [`ExecPath::choose`] does not pick whole blocks.
    fn block_quant(&self) -> Option<QuantTargets> {
        None
    }
    /// The 16-bit type the composed path (CUDA, Metal) runs matrix products in, with f32
    /// master weights and f32 element-wise ops (autocast); None for f32 products.
    fn compute_dtype(&self) -> Option<DType> {
        None
    }
}

/// No hooks: full precision.
pub struct NoHooks;
impl LinearHooks for NoHooks {
    fn block_quant(&self) -> Option<QuantTargets> {
        Some(Default::default())
    }
}

/// How the model's forward and backward passes run: chosen once per run by [`ExecPath::choose`]
/// and held by the model ([`Transformer::path`]; tests switch it with [`Transformer::set_path`]
/// to compare paths on the same weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecPath {
    /// candle's composed ops, on any device and dtype: the reference every fused path is tested
    /// against. On CUDA the row kernels of `crate::fused::cuda` replace the composed causal
    /// softmax and cross-entropy (`SWEEP_CUDA_KERNELS=0` turns them off).
    Composed,
    /// The fused CPU kernels of `crate::fused`, one op at a time (f32/f64 on the CPU), with the
    /// hooks between them: for hooks that cannot run inside a whole block (16-bit autocast).
    CpuOps,
    /// Each transformer block as one fused CPU op with a hand-written backward (f32/f64 on the
    /// CPU), the hooks' fake quantisation inside it: full precision and fake-quantised formats.
    CpuBlocks,
    /// Each transformer block as one CUDA op (`crate::fused::cuda_block`: cuBLAS products, fused
    /// norm/RoPE/MLP kernels, flash attention), plus the CUDA embedding, final norm and loss head:
    /// f32 master weights on CUDA in f32, bf16 autocast or a fake-quantised format. Not yet
    /// measured on a GPU, so opt-in: chosen only when `SWEEP_CUDA_BLOCKS=1`
    /// ([`crate::fused::cuda_block::enabled`]).
    CudaBlocks,
}

impl ExecPath {
    /// The fastest path for parameters of `dtype` on `device` under `hooks`: whole fused blocks
    /// on the CPU when the hooks' precision runs inside them, per-op fused kernels on the CPU
    /// otherwise, candle's composed ops on other devices and dtypes.
    pub fn choose(device: &Device, dtype: DType, hooks: &dyn LinearHooks) -> ExecPath {
        let cuda_block_precision = cuda_block_precision(hooks).is_ok();
        if ExecPath::CudaBlocks.supports(device, dtype) && fused::cuda_block::enabled() && cuda_block_precision {
            ExecPath::CudaBlocks
        } else if !fused::supports(device, dtype) {
            ExecPath::Composed
        } else if hooks.block_quant().is_some() {
            ExecPath::CpuBlocks
        } else {
            ExecPath::CpuOps
        }
    }

    /// Whether this path can run parameters of `dtype` on `device`.
    pub fn supports(self, device: &Device, dtype: DType) -> bool {
        match self {
            ExecPath::Composed => true,
            ExecPath::CpuOps | ExecPath::CpuBlocks => fused::supports(device, dtype),
            ExecPath::CudaBlocks => cfg!(feature = "cuda") && device.is_cuda() && dtype == DType::F32,
        }
    }

    /// The single-op kernels this path runs outside whole blocks (norms, linear layers, loss).
    fn ops(self) -> Ops {
        match self {
            ExecPath::Composed | ExecPath::CudaBlocks => Ops::Composed,
            ExecPath::CpuOps | ExecPath::CpuBlocks => Ops::FusedCpu,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Weights by name

/// One weight tensor and its Hugging Face name.
#[derive(Debug, Clone)]
pub struct Param {
    /// Full name, e.g. `model.layers.3.self_attn.q_proj.weight`.
    pub name: String,
    /// The trainable tensor.
    pub var: Var,
}

impl Param {
    fn t(&self) -> &Tensor {
        self.var.as_tensor()
    }
}

/// How a fresh weight is initialised (not used when weights are loaded).
#[derive(Debug, Clone, Copy)]
pub enum Init {
    /// All ones (norm weights).
    Ones,
    /// N(0, std^2) from the counter-based generator, with the weight's name as its stream.
    Normal(f64),
}

/// GPT-2's standard deviation of fresh matrices.
const INIT_STD: f64 = 0.02;

/// Where a model's weights come from: fresh initialisation or named tensors (a checkpoint),
/// addressed by name under a prefix, in the manner of candle's `VarBuilder`
/// (`vb.pp("self_attn").get(..)`).
#[derive(Clone)]
pub struct Weights<'a> {
    source: Source<'a>,
    prefix: String,
}

#[derive(Clone, Copy)]
enum Source<'a> {
    Init { seed: u64, device: &'a Device },
    Tensors(&'a BTreeMap<String, Tensor>),
}

impl<'a> Weights<'a> {
    /// Fresh weights: the same numbers on every machine for a seed (f32).
    pub fn init(seed: u64, device: &'a Device) -> Self {
        Weights { source: Source::Init { seed, device }, prefix: String::new() }
    }

    /// Weights from named tensors (extra names are ignored), each copied into a new variable.
    pub fn from_tensors(tensors: &'a BTreeMap<String, Tensor>) -> Self {
        Weights { source: Source::Tensors(tensors), prefix: String::new() }
    }

    /// The same source with `part` appended to the name prefix.
    pub fn pp(&self, part: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() { part.to_string() } else { format!("{}.{part}", self.prefix) };
        Weights { source: self.source, prefix }
    }

    /// The weight `name` (under the prefix) of `shape`.
    pub fn get(&self, name: &str, shape: &[usize], init: Init) -> Result<Param> {
        let name = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) };
        let t = match self.source {
            Source::Init { seed, device } => match init {
                Init::Ones => Tensor::ones(shape, DType::F32, device)?,
                Init::Normal(std) => {
                    let stream = rng::stream_of(&name);
                    let n: usize = shape.iter().product();
                    let data: Vec<f32> = (0..n as u64).map(|i| (std * rng::normal(seed, stream, i)) as f32).collect();
                    Tensor::from_vec(data, shape, device)?
                }
            },
            Source::Tensors(map) => {
                let t = map.get(&name).ok_or_else(|| candle_core::Error::Msg(format!("missing parameter {name}")))?;
                if t.dims() != shape {
                    return Err(candle_core::Error::Msg(format!(
                        "parameter {name} has shape {:?}, expected {shape:?}",
                        t.dims()
                    )));
                }
                t.clone()
            }
        };
        // Detached, so a variable of another model is copied rather than shared.
        Ok(Param { var: Var::from_tensor(&t.detach())?, name })
    }
}

// ---------------------------------------------------------------------------------------------
// Single-op kernels

/// The single-op kernels a path runs: the fused CPU kernels or candle's composed ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ops {
    FusedCpu,
    Composed,
}

/// What one forward pass shares across modules: the kernels, the hooks, and the RoPE tables and
/// causal mask cut to the sequence length.
struct Pass<'a> {
    ops: Ops,
    hooks: &'a dyn LinearHooks,
    cos: Tensor,
    sin: Tensor,
    mask: Tensor,
}

impl Ops {
    fn rms_norm(self, x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
        match self {
            Ops::FusedCpu => fused::rms_norm(x, w, eps),
            Ops::Composed => rms_norm(x, w, eps),
        }
    }

    /// y = x W^T over the last dimension (in the hooks' compute dtype when composed).
    fn linear(self, x: &Tensor, w: &Tensor, hooks: &dyn LinearHooks) -> Result<Tensor> {
        match self {
            Ops::FusedCpu => fused::linear(x, w),
            Ops::Composed => {
                let (out, inp) = w.dims2()?;
                let dims = x.dims().to_vec();
                let rows: usize = dims[..dims.len() - 1].iter().product();
                let y = autocast_matmul(&x.reshape((rows, inp))?, &w.t()?, hooks.compute_dtype())?;
                let mut out_dims = dims;
                *out_dims.last_mut().expect("rank >= 1") = out;
                y.reshape(out_dims)
            }
        }
    }

    /// [B, T, H*hd] -> [B, H, T, hd], rotated by RoPE when `rotate`.
    fn split_heads(self, y: &Tensor, cos: &Tensor, sin: &Tensor, heads: usize, rotate: bool) -> Result<Tensor> {
        match self {
            Ops::FusedCpu => fused::split_heads(y, cos, sin, heads, rotate),
            Ops::Composed => {
                let (b, t, d) = y.dims3()?;
                let y = y.reshape((b, t, heads, d / heads))?.transpose(1, 2)?.contiguous()?;
                if rotate {
                    rope(&y, cos, sin)
                } else {
                    Ok(y)
                }
            }
        }
    }

    /// softmax(scale Q K^T, causal) V, heads merged: [B, H, T, hd] -> [B, T, H*hd].
    fn attention(self, q: &Tensor, k: &Tensor, v: &Tensor, pass: &Pass, scale: f64) -> Result<Tensor> {
        match self {
            Ops::FusedCpu => fused::causal_attention(q, k, v, scale, pass.hooks.attention_probs()),
            Ops::Composed => {
                // Products in the autocast type, softmax in f32 (as PyTorch's autocast does).
                let (b, h, t, hd) = q.dims4()?;
                let cd = pass.hooks.compute_dtype();
                let scores = autocast_matmul(q, &k.t()?, cd)?;
                let att = if fused::cuda::available(&scores) {
                    fused::cuda::causal_softmax(&scores, scale)?
                } else {
                    causal_softmax(&scores, &pass.mask, scale)?
                };
                let att = match pass.hooks.attention_probs() {
                    Some(call) => fake_quant_call(&att, call)?,
                    None => att,
                };
                autocast_matmul(&att, v, cd)?.transpose(1, 2)?.reshape((b, t, h * hd))
            }
        }
    }

    fn swiglu(self, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        match self {
            Ops::FusedCpu => fused::swiglu(gate, up),
            Ops::Composed => swiglu(gate, up),
        }
    }

    fn gelu(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Ops::FusedCpu => fused::gelu(x),
            Ops::Composed => x.gelu(),
        }
    }

    /// Mean cross-entropy of the logits x W^T against targets.
    fn head_loss(self, x: &Tensor, w: &Tensor, targets: &Tensor, scratch: &fused::Scratch) -> Result<Tensor> {
        match self {
            Ops::FusedCpu => fused::head_cross_entropy(x, w, targets, scratch),
            Ops::Composed => {
                let logits = x.matmul(&w.t()?)?;
                if fused::cuda::available(&logits) {
                    fused::cuda::cross_entropy(&logits, targets)
                } else {
                    cross_entropy(&logits, targets)
                }
            }
        }
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

// ---------------------------------------------------------------------------------------------
// Modules

/// RMSNorm with a learned scale.
pub struct RmsNorm {
    /// Scale, one per feature, initialised to ones.
    pub weight: Param,
    /// Added to the mean square.
    pub eps: f64,
}

impl RmsNorm {
    /// `weight` of size `d` from `vb`.
    pub fn load(vb: &Weights, d: usize, eps: f64) -> Result<Self> {
        Ok(RmsNorm { weight: vb.get("weight", &[d], Init::Ones)?, eps })
    }

    fn forward(&self, x: &Tensor, ops: Ops) -> Result<Tensor> {
        ops.rms_norm(x, self.weight.t(), self.eps)
    }
}

/// A linear layer without bias, y = x W^T, with the hooks on its input and weight.
pub struct Linear {
    /// W [out, in].
    pub weight: Param,
}

impl Linear {
    /// `weight` [out, in] from `vb`.
    pub fn load(vb: &Weights, inp: usize, out: usize, std: f64) -> Result<Self> {
        Ok(Linear { weight: vb.get("weight", &[out, inp], Init::Normal(std))? })
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.t().dims()[0]
    }

    fn forward(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        // Hooks in this order: the stochastic-rounding counters are drawn in it.
        let x = pass.hooks.input(x)?;
        let w = pass.hooks.weight(self.weight.t())?;
        pass.hooks.output(&pass.ops.linear(&x, &w, pass.hooks)?)
    }
}

/// Causal multi-head self-attention with RoPE on queries and keys.
pub struct Attention {
    /// Queries [d, d].
    pub q_proj: Linear,
    /// Keys [d, d].
    pub k_proj: Linear,
    /// Values [d, d].
    pub v_proj: Linear,
    /// Output projection into the residual stream [d, d].
    pub o_proj: Linear,
    /// Heads.
    pub n_heads: usize,
}

impl Attention {
    /// The projections from `vb` (`self_attn` of a block).
    pub fn load(vb: &Weights, c: &ModelConfig) -> Result<Self> {
        let d = c.d_model;
        Ok(Attention {
            q_proj: Linear::load(&vb.pp("q_proj"), d, d, INIT_STD)?,
            k_proj: Linear::load(&vb.pp("k_proj"), d, d, INIT_STD)?,
            v_proj: Linear::load(&vb.pp("v_proj"), d, d, INIT_STD)?,
            o_proj: Linear::load(&vb.pp("o_proj"), d, d, residual_std(c))?,
            n_heads: c.n_heads,
        })
    }

    fn forward(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        let heads = |proj: &Linear, rotate: bool| {
            pass.ops.split_heads(&proj.forward(x, pass)?, &pass.cos, &pass.sin, self.n_heads, rotate)
        };
        let q = heads(&self.q_proj, true)?;
        let k = pass.hooks.kv(&heads(&self.k_proj, true)?)?;
        let v = pass.hooks.kv(&heads(&self.v_proj, false)?)?;
        let (q, k, v) = (pass.hooks.attention_qk(&q)?, pass.hooks.attention_qk(&k)?, pass.hooks.attention_v(&v)?);
        let scale = 1.0 / (q.dim(D::Minus1)? as f64).sqrt();
        self.o_proj.forward(&pass.ops.attention(&q, &k, &v, pass, scale)?, pass)
    }
}

/// The feed-forward network: down(silu(gate(x)) * up(x)) for SwiGLU, down(gelu(up(x))) for GELU.
pub struct Mlp {
    /// Gate [d_ff, d] (SwiGLU only).
    pub gate_proj: Option<Linear>,
    /// Up projection [d_ff, d].
    pub up_proj: Linear,
    /// Down projection into the residual stream [d, d_ff].
    pub down_proj: Linear,
}

impl Mlp {
    /// The projections from `vb` (`mlp` of a block).
    pub fn load(vb: &Weights, c: &ModelConfig) -> Result<Self> {
        let (d, f) = (c.d_model, c.d_ff);
        let gate_proj = match c.ffn {
            Ffn::Swiglu => Some(Linear::load(&vb.pp("gate_proj"), d, f, INIT_STD)?),
            Ffn::Gelu => None,
        };
        Ok(Mlp {
            gate_proj,
            up_proj: Linear::load(&vb.pp("up_proj"), d, f, INIT_STD)?,
            down_proj: Linear::load(&vb.pp("down_proj"), f, d, residual_std(c))?,
        })
    }

    fn forward(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        let inner = match &self.gate_proj {
            Some(gate_proj) => {
                let gate = gate_proj.forward(x, pass)?;
                pass.ops.swiglu(&gate, &self.up_proj.forward(x, pass)?)?
            }
            None => pass.ops.gelu(&self.up_proj.forward(x, pass)?)?,
        };
        self.down_proj.forward(&inner, pass)
    }
}

/// Initial standard deviation of the projections into the residual stream (o_proj, down_proj):
/// GPT-2's 0.02 scaled by 1/sqrt(2 n_layers), so the residual's variance does not grow with depth.
fn residual_std(c: &ModelConfig) -> f64 {
    INIT_STD * (1.0 / (2.0 * c.n_layers as f64).sqrt())
}

/// One pre-norm transformer block: x + attn(norm(x)), then + mlp(norm(.)).
pub struct Block {
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Attention.
    pub self_attn: Attention,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
    /// MLP.
    pub mlp: Mlp,
}

impl Block {
    /// The block's weights from `vb` (`model.layers.{i}`).
    pub fn load(vb: &Weights, c: &ModelConfig) -> Result<Self> {
        Ok(Block {
            input_layernorm: RmsNorm::load(&vb.pp("input_layernorm"), c.d_model, c.norm_eps)?,
            self_attn: Attention::load(&vb.pp("self_attn"), c)?,
            post_attention_layernorm: RmsNorm::load(&vb.pp("post_attention_layernorm"), c.d_model, c.norm_eps)?,
            mlp: Mlp::load(&vb.pp("mlp"), c)?,
        })
    }

    /// The weights in the fused block's order: attention norm, q, k, v, o, MLP norm, gate (SwiGLU only), up, down.
    pub fn params(&self) -> Vec<&Param> {
        let (a, m) = (&self.self_attn, &self.mlp);
        let mut out = vec![&self.input_layernorm.weight, &a.q_proj.weight, &a.k_proj.weight, &a.v_proj.weight];
        out.extend([&a.o_proj.weight, &self.post_attention_layernorm.weight]);
        out.extend(m.gate_proj.as_ref().map(|g| &g.weight));
        out.extend([&m.up_proj.weight, &m.down_proj.weight]);
        out
    }

    /// The block op by op (fused CPU kernels or composed ops).
    fn forward(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        let x = (x + self.self_attn.forward(&self.input_layernorm.forward(x, pass.ops)?, pass)?)?;
        &x + self.mlp.forward(&self.post_attention_layernorm.forward(&x, pass.ops)?, pass)?
    }

    /// The block's weights by name, as the fused block ops (CPU and CUDA) take them.
    fn fused_params(&self) -> fused::block::BlockParams {
        let weights = self.params().into_iter().map(|p| (p.name.clone(), p.t().clone())).collect();
        fused::block::BlockParams { weights, swiglu: self.mlp.gate_proj.is_some() }
    }

    /// The block as one fused CPU op; its weight gradients land in `side`.
    fn forward_cpu_fused(
        &self,
        x: &Tensor,
        pass: &Pass,
        quant: &QuantTargets,
        side: &fused::block::SideGrads,
    ) -> Result<Tensor> {
        fused::block::transformer_block(
            x,
            self.fused_params(),
            &pass.cos,
            &pass.sin,
            self.self_attn.n_heads,
            self.mlp.up_proj.out_features(),
            self.input_layernorm.eps,
            quant,
            side,
        )
    }

    /// The block as one CUDA op (f32 or bf16 autocast `compute`); its weight gradients land in
    /// `side`, its activations stay in `buffers` from step to step.
    fn forward_cuda_fused(
        &self,
        x: &Tensor,
        pass: &Pass,
        quant: &QuantTargets,
        side: &fused::block::SideGrads,
        compute: DType,
        buffers: &fused::cuda_block::Buffers,
    ) -> Result<Tensor> {
        fused::cuda_block::transformer_block(
            x,
            self.fused_params(),
            &pass.cos,
            &pass.sin,
            self.self_attn.n_heads,
            self.mlp.up_proj.out_features(),
            self.input_layernorm.eps,
            quant,
            side,
            compute,
            buffers,
        )
    }
}

/// The model: token embedding, blocks, final norm, and the output projection (the embedding
/// when tied, else `lm_head`).
pub struct Transformer {
    /// Hyperparameters.
    pub config: ModelConfig,
    /// Token embedding [V, d].
    pub embed_tokens: Param,
    /// The blocks.
    pub layers: Vec<Block>,
    /// Final norm.
    pub norm: RmsNorm,
    /// Output projection [V, d], absent when tied to the embedding.
    pub lm_head: Option<Param>,
    path: ExecPath,
    /// Weight gradients of fused blocks, merged into candle's by [`Transformer::backward`].
    side_grads: fused::block::SideGrads,
    /// The fused cross-entropy's logits buffer, reused from step to step.
    scratch: fused::Scratch,
    /// Device buffers of the CUDA block path (activations, logits), reused from step to step.
    cuda_buffers: fused::cuda_block::Buffers,
    /// RoPE tables [context, head_dim/2] and the causal mask [context, context], in the
    /// parameters' dtype (f32 for training, f64 for gradient checks).
    cos: Tensor,
    sin: Tensor,
    mask: Tensor,
}

impl Transformer {
    /// A freshly initialised model: N(0, 0.02) matrices, output projections scaled by
    /// 1/sqrt(2 n_layers), unit norms. The same numbers on every machine for a seed.
    pub fn new(config: ModelConfig, seed: u64, device: &Device, path: ExecPath) -> Result<Self> {
        Self::load(&Weights::init(seed, device), config, path)
    }

    /// A model over named tensors (a checkpoint, an export), shapes checked.
    pub fn from_tensors(config: ModelConfig, tensors: &BTreeMap<String, Tensor>, path: ExecPath) -> Result<Self> {
        Self::load(&Weights::from_tensors(tensors), config, path)
    }

    /// The model's weights from `vb`, run on `path`.
    pub fn load(vb: &Weights, config: ModelConfig, path: ExecPath) -> Result<Self> {
        let c = &config;
        let embed_tokens = vb.get("model.embed_tokens.weight", &[c.vocab_size, c.d_model], Init::Normal(INIT_STD))?;
        let layers = (0..c.n_layers).map(|i| Block::load(&vb.pp("model.layers").pp(i), c)).collect::<Result<_>>()?;
        let norm = RmsNorm::load(&vb.pp("model.norm"), c.d_model, c.norm_eps)?;
        let lm_head = if c.tied_embeddings {
            None
        } else {
            Some(vb.get("lm_head.weight", &[c.vocab_size, c.d_model], Init::Normal(INIT_STD))?)
        };
        let (t, hd) = (c.context, c.head_dim());
        let inv: Vec<f32> = (0..hd / 2).map(|i| (1.0 / c.rope_theta.powf(2.0 * i as f64 / hd as f64)) as f32).collect();
        let freqs: Vec<f32> = (0..t).flat_map(|p| inv.iter().map(move |f| p as f32 * f)).collect();
        let (device, dtype) = (embed_tokens.t().device().clone(), embed_tokens.t().dtype());
        let freqs = Tensor::from_vec(freqs, (t, hd / 2), &device)?;
        let mask: Vec<f32> =
            (0..t).flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
        let mut model = Transformer {
            cos: freqs.cos()?.to_dtype(dtype)?,
            sin: freqs.sin()?.to_dtype(dtype)?,
            mask: Tensor::from_vec(mask, (t, t), &device)?.to_dtype(dtype)?,
            config,
            embed_tokens,
            layers,
            norm,
            lm_head,
            path: ExecPath::Composed,
            side_grads: Default::default(),
            scratch: Default::default(),
            cuda_buffers: Default::default(),
        };
        model.set_path(path)?;
        Ok(model)
    }

    /// How passes run.
    pub fn path(&self) -> ExecPath {
        self.path
    }

    /// Runs later passes on `path` (e.g. the composed reference, to compare with a fused path on
    /// the same weights); errors when the path cannot run this model's parameters.
    pub fn set_path(&mut self, path: ExecPath) -> Result<()> {
        let p = self.embed_tokens.t();
        if !path.supports(p.device(), p.dtype()) {
            return Err(candle_core::Error::Msg(format!(
                "execution path {path:?} cannot run {:?} parameters on {:?}; ExecPath::choose picks one that can",
                p.dtype(),
                p.device()
            )));
        }
        self.path = path;
        Ok(())
    }

    /// Every weight, in the model's order (embedding, blocks, final norm, lm_head).
    fn each_param(&self) -> impl Iterator<Item = &Param> {
        std::iter::once(&self.embed_tokens)
            .chain(self.layers.iter().flat_map(Block::params))
            .chain(std::iter::once(&self.norm.weight))
            .chain(&self.lm_head)
    }

    /// Parameters by name, in name order (the order of checkpoints, the optimiser and the
    /// gradient norm's sum).
    pub fn params(&self) -> BTreeMap<String, Var> {
        self.each_param().map(|p| (p.name.clone(), p.var.clone())).collect()
    }

    /// Parameters as plain tensors by name (for saving).
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        self.each_param().map(|p| (p.name.clone(), p.t().clone())).collect()
    }

    /// The output projection: the embedding when tied, else lm_head.
    fn head(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens).t()
    }

    /// The final normalised hidden states [B*T, d] for token ids [B, T].
    fn hidden(&self, tokens: &Tensor, hooks: &dyn LinearHooks) -> Result<Tensor> {
        let d = self.config.d_model;
        let (b, t) = tokens.dims2()?;
        hooks.begin_pass();
        let pass = Pass {
            ops: self.path.ops(),
            hooks,
            cos: self.cos.narrow(0, 0, t)?,
            sin: self.sin.narrow(0, 0, t)?,
            mask: self.mask.narrow(0, 0, t)?.narrow(1, 0, t)?,
        };
        let embed = || self.embed_tokens.t().index_select(&tokens.flatten_all()?, 0)?.reshape((b, t, d));
        let x = match self.path {
            ExecPath::Composed | ExecPath::CpuOps => {
                let mut x = embed()?;
                for layer in &self.layers {
                    x = layer.forward(&x, &pass)?;
                }
                x
            }
            ExecPath::CpuBlocks => {
                let quant = hooks.block_quant().ok_or_else(|| {
                    candle_core::Error::Msg(
                        "these hooks cannot run inside fused blocks; choose the path with ExecPath::choose".into(),
                    )
                })?;
                let mut x = embed()?;
                for layer in &self.layers {
                    x = layer.forward_cpu_fused(&x, &pass, &quant, &self.side_grads)?;
                }
                x
            }
            ExecPath::CudaBlocks => {
                let (quant, compute) = cuda_block_precision(hooks)?;
                let mut x = fused::cuda_block::embedding(tokens, self.embed_tokens.t())?;
                for layer in &self.layers {
                    x = layer.forward_cuda_fused(&x, &pass, &quant, &self.side_grads, compute, &self.cuda_buffers)?;
                }
                return fused::cuda_block::rms_norm(&x.reshape((b * t, d))?, self.norm.weight.t(), self.norm.eps);
            }
        };
        self.norm.forward(&x, pass.ops)?.reshape((b * t, d))
    }

    /// The logits product's inputs: final hidden states [B*T, d] and the output projection, with
    /// the hooks applied (quantised only when the precision's targets include the logits).
    fn head_inputs(&self, tokens: &Tensor, hooks: &dyn LinearHooks) -> Result<(Tensor, Tensor)> {
        let x = hooks.logits_input(&self.hidden(tokens, hooks)?)?;
        Ok((x, hooks.logits_weight(self.head())?))
    }

    /// Logits [B*T, V] for token ids [B, T].
    pub fn forward(&self, tokens: &Tensor, hooks: &dyn LinearHooks) -> Result<Tensor> {
        let (x, w) = self.head_inputs(tokens, hooks)?;
        x.matmul(&w.t()?)
    }

    /// Mean cross-entropy (nats per token) of next-token prediction.
    pub fn loss(&self, inputs: &Tensor, targets: &Tensor, hooks: &dyn LinearHooks) -> Result<Tensor> {
        if self.path == ExecPath::CudaBlocks {
            let (_, compute) = cuda_block_precision(hooks)?;
            let h = self.hidden(inputs, hooks)?;
            return fused::cuda_block::head_cross_entropy(&h, self.head(), targets, compute, &self.cuda_buffers);
        }
        let (x, w) = self.head_inputs(inputs, hooks)?;
        self.path.ops().head_loss(&x, &w, targets, &self.scratch)
    }

    /// Gradients of `loss` for every parameter, by name: candle's backward pass plus the weight
    /// gradients of fused blocks. Errors if a parameter received none.
    pub fn backward(&self, loss: &Tensor) -> Result<BTreeMap<String, Tensor>> {
        self.side_grads.lock().expect("side grads lock").clear();
        let store = loss.backward()?;
        let mut side = std::mem::take(&mut *self.side_grads.lock().expect("side grads lock"));
        let mut out = BTreeMap::new();
        for (name, p) in self.params() {
            let g = match (store.get(p.as_tensor()), side.remove(&name)) {
                (Some(a), Some(b)) => (a + b)?,
                (Some(a), None) => a.clone(),
                (None, Some(b)) => b,
                (None, None) => return Err(candle_core::Error::Msg(format!("parameter {name} received no gradient"))),
            };
            out.insert(name, g);
        }
        Ok(out)
    }
}

/// The fake quantisation and product dtype the CUDA block path runs `hooks` with: a format's
/// quantisation in f32 products, or bf16 autocast without quantisation.
fn cuda_block_precision(hooks: &dyn LinearHooks) -> Result<(QuantTargets, DType)> {
    match (hooks.block_quant(), hooks.compute_dtype()) {
        (Some(quant), None) if cuda_block_runs(&quant) => Ok((quant, DType::F32)),
        (None, Some(DType::BF16)) => Ok((QuantTargets::default(), DType::BF16)),
        _ => Err(candle_core::Error::Msg(
            "these hooks cannot run on the CUDA block path; choose the path with ExecPath::choose".into(),
        )),
    }
}

/// Whether the CUDA block runs these quantisation targets: weights, linear inputs, their
/// gradients and K/V, just-in-time scaled (the dY, attention-product and logits targets and
/// delayed scaling run on the CPU block and the composed path only).
fn cuda_block_runs(quant: &QuantTargets) -> bool {
    let extra = quant.grad_output.is_some() || quant.attention.is_some() || quant.logits.is_some();
    let delayed =
        [&quant.weights, &quant.activations, &quant.gradients, &quant.kv].into_iter().flatten().any(|q| q.is_delayed());
    !extra && !delayed
}
