//! The point's precision as linear-layer hooks: fake quantisation (straight-through) of weights
//! and activations, quantised input gradients (dX) and output gradients (dY, before both
//! backward products), quantised attention K/V and attention-product inputs (Q, K, V, P), and
//! the logits product's inputs; delayed scaling from amax histories where configured.
//!
//! bf16 and fp16 are autocast semantics on every device: the inputs and weights of each linear
//! layer are rounded to the 16-bit type (a differentiable cast) and the master weights stay f32.
//! On the CPU's per-op fused kernels (`ExecPath::CpuOps`; autocast hooks cannot run inside a
//! fused block) the products then run in f32 on the rounded values (the same numbers as a 16-bit
//! product with f32 accumulation, up to the rounding of the output; no 16-bit speed). The
//! composed path (`ExecPath::Composed`: CUDA, Metal, or chosen by hand) runs the linear layers'
//! and the attention's matrix products in the 16-bit type itself (cuBLAS accumulates in f32), with
//! softmax, norms and the loss in f32, as PyTorch's autocast does.

use crate::model::LinearHooks;
use crate::quant::{fake_quant, quant_grad, QuantCall, QuantTargets};
use candle_core::{DType, Result, Tensor};
use sweep_plan::config::{QuantTarget, Rounding};
use sweep_plan::point::ResolvedPrecision;
use sweep_plan::Point;

/// Fake quantisation per target; identity for targets that are not quantised.
pub struct PrecisionHooks {
    /// Quantiser per target.
    pub targets: QuantTargets,
    /// 16-bit autocast type for linear inputs and weights (bf16, fp16), if any.
    pub autocast: Option<DType>,
}

fn round_to(t: &Tensor, dtype: Option<DType>) -> Result<Tensor> {
    match dtype {
        Some(d) if t.dtype() != d => t.to_dtype(d)?.to_dtype(t.dtype()),
        _ => Ok(t.clone()),
    }
}

impl PrecisionHooks {
    /// Stochastic-rounding counters (saved in checkpoints for bit-exact resume).
    pub fn counters(&self) -> Vec<u64> {
        self.targets.counters()
    }
    /// Restores counters from a checkpoint.
    pub fn set_counters(&self, c: &[u64]) {
        self.targets.set_counters(c)
    }
    /// Delayed scaling's amax histories (saved in checkpoints for bit-exact resume).
    pub fn amax_histories(&self) -> Vec<Vec<Vec<f32>>> {
        self.targets.amax_histories()
    }
    /// Restores amax histories from a checkpoint.
    pub fn set_amax_histories(&self, h: &[Vec<Vec<f32>>]) {
        self.targets.set_amax_histories(h)
    }
    /// Training passes record amaxes for delayed scaling; evaluation passes (`false`) do not.
    pub fn set_training(&self, training: bool) {
        self.targets.set_recording(training)
    }
}

fn quantised(t: &Tensor, q: Option<&crate::quant::QuantConfig>) -> Result<Tensor> {
    match q {
        Some(q) => fake_quant(t, q),
        None => Ok(t.clone()),
    }
}

impl LinearHooks for PrecisionHooks {
    fn weight(&self, w: &Tensor) -> Result<Tensor> {
        match self.targets.get(QuantTarget::Weights) {
            Some(q) => fake_quant(w, q),
            None => round_to(w, self.autocast),
        }
    }
    fn input(&self, x: &Tensor) -> Result<Tensor> {
        let x = match self.targets.get(QuantTarget::Activations) {
            Some(q) => fake_quant(x, q)?,
            None => round_to(x, self.autocast)?,
        };
        // The gradient flowing back into the activation is quantised here.
        match self.targets.get(QuantTarget::Gradients) {
            Some(q) => quant_grad(&x, q),
            None => Ok(x),
        }
    }
    fn compute_dtype(&self) -> Option<DType> {
        self.autocast
    }
    fn block_quant(&self) -> Option<QuantTargets> {
        self.autocast.is_none().then(|| self.targets.clone())
    }
    fn kv(&self, t: &Tensor) -> Result<Tensor> {
        quantised(t, self.targets.get(QuantTarget::Kv))
    }
    fn output(&self, y: &Tensor) -> Result<Tensor> {
        match self.targets.get(QuantTarget::GradOutput) {
            Some(q) => quant_grad(y, q),
            None => Ok(y.clone()),
        }
    }
    fn attention_qk(&self, t: &Tensor) -> Result<Tensor> {
        quantised(t, self.targets.get(QuantTarget::Attention))
    }
    fn attention_v(&self, v: &Tensor) -> Result<Tensor> {
        match self.targets.get(QuantTarget::Attention) {
            // Along the tokens, the reduction dimension of P V.
            Some(q) => fake_quant(&v.transpose(2, 3)?.contiguous()?, q)?.transpose(2, 3)?.contiguous(),
            None => Ok(v.clone()),
        }
    }
    fn attention_probs(&self) -> Option<QuantCall> {
        self.targets.get(QuantTarget::Attention).map(|q| q.next_call())
    }
    fn logits_input(&self, x: &Tensor) -> Result<Tensor> {
        quantised(x, self.targets.get(QuantTarget::Logits))
    }
    fn logits_weight(&self, w: &Tensor) -> Result<Tensor> {
        quantised(w, self.targets.get(QuantTarget::Logits))
    }
    fn begin_pass(&self) {
        self.targets.begin_pass()
    }
}

fn build(precision: &ResolvedPrecision, seed: u64) -> anyhow::Result<PrecisionHooks> {
    let autocast = match precision.spec.format {
        sweep_plan::precision::NumberFormat::Bf16 => Some(DType::BF16),
        sweep_plan::precision::NumberFormat::F16 => Some(DType::F16),
        _ => None,
    };
    Ok(PrecisionHooks { targets: QuantTargets::from_resolved(precision, seed)?, autocast })
}

/// Hooks for the point's quantised targets (identity hooks for native formats).
pub fn hooks(point: &Point) -> anyhow::Result<PrecisionHooks> {
    build(&point.precision, point.seed)
}

/// Hooks for a precision name applied to weights and activations (for benchmarks).
pub fn hooks_for(name: &str, rounding: Rounding, seed: u64) -> anyhow::Result<PrecisionHooks> {
    hooks_with(name, &[], None, rounding, seed)
}

/// Hooks for a precision name applied to `targets` (weights and activations when empty), with
/// delayed scaling over `amax_history` passes for per-tensor targets (for benchmarks and tests).
pub fn hooks_with(
    name: &str,
    targets: &[QuantTarget],
    amax_history: Option<u32>,
    rounding: Rounding,
    seed: u64,
) -> anyhow::Result<PrecisionHooks> {
    let spec = sweep_plan::precision::PrecisionSpec::parse(name).map_err(anyhow::Error::msg)?;
    let chosen = if targets.is_empty() { &[QuantTarget::Weights, QuantTarget::Activations][..] } else { targets };
    let targets = if spec.format.is_simulated() { chosen.iter().map(|t| (*t, spec.clone())).collect() } else { vec![] };
    let (e, m) = spec.format.exp_man().map(|(e, m)| (Some(e), Some(m))).unwrap_or((None, None));
    let resolved = ResolvedPrecision {
        name: spec.name.clone(),
        bits: spec.format.bits(),
        block_size: spec.law_block_size(),
        amax_history,
        exp_bits: e,
        man_bits: m,
        spec,
        targets,
        rounding,
    };
    build(&resolved, seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn bf16_autocast_rounds_inputs_and_weights_and_passes_gradients() {
        let h = hooks_for("bf16", Rounding::Nearest, 0).unwrap();
        assert_eq!(h.autocast, Some(DType::BF16));
        let x = Var::new(&[1.0f32 + 1.0 / 512.0, 3.14172, -2.0e-3][..], &Device::Cpu).unwrap();
        let y = h.input(x.as_tensor()).unwrap();
        let got: Vec<f32> = y.to_vec1().unwrap();
        let want: Vec<f32> =
            [1.0f32 + 1.0 / 512.0, 3.14172, -2.0e-3].iter().map(|v| half::bf16::from_f32(*v).to_f32()).collect();
        assert_eq!(got, want);
        assert_ne!(got[0], 1.0 + 1.0 / 512.0, "1 + 2^-9 is not a bf16 value");
        // Straight through: d(sum y)/dx = 1.
        let g = y.sum_all().unwrap().backward().unwrap();
        let gx: Vec<f32> = g.get(x.as_tensor()).unwrap().to_vec1().unwrap();
        assert_eq!(gx, vec![1.0; 3]);
        assert!(hooks_for("fp32", Rounding::Nearest, 0).unwrap().autocast.is_none());
    }

    #[test]
    fn autocast_products_run_in_bf16_with_f32_master_weights() {
        use crate::model::{autocast_matmul, ExecPath, ModelConfig, NoHooks, Transformer};
        use sweep_plan::shape::Ffn;
        let dev = Device::Cpu;
        // The product itself is bf16: every output value is a bf16 number, returned as f32.
        let a = Tensor::new(&[[1.0f32 + 1.0 / 256.0, 3.14172], [2.5, -7.1]], &dev).unwrap();
        let b = Tensor::new(&[[0.3f32, 1.7], [-2.2, 0.01]], &dev).unwrap();
        let y = autocast_matmul(&a, &b, Some(DType::BF16)).unwrap();
        assert_eq!(y.dtype(), DType::F32);
        for v in y.flatten_all().unwrap().to_vec1::<f32>().unwrap() {
            assert_eq!(half::bf16::from_f32(v).to_f32(), v, "{v} is not a bf16 value");
        }
        // A composed model (the path CUDA takes) trains in autocast: same loss to bf16 accuracy,
        // f32 gradients for every parameter, which differ from the f32 run's.
        let cfg = ModelConfig {
            d_model: 16,
            n_layers: 2,
            n_heads: 2,
            d_ff: 24,
            context: 6,
            vocab_size: 13,
            ffn: Ffn::Swiglu,
            tied_embeddings: true,
            rope_theta: 10_000.0,
            norm_eps: 1e-5,
        };
        let m = Transformer::new(cfg, 5, &dev, ExecPath::Composed).unwrap();
        let x = Tensor::from_vec(vec![1u32, 4, 2, 9, 3, 0, 7, 7, 12, 5, 11, 6], (2, 6), &dev).unwrap();
        let t = Tensor::from_vec(vec![4u32, 2, 9, 3, 0, 7, 7, 12, 5, 11, 6, 1], (2, 6), &dev).unwrap();
        let h = hooks_for("bf16", Rounding::Nearest, 0).unwrap();
        let (l16, l32) = (m.loss(&x, &t, &h).unwrap(), m.loss(&x, &t, &NoHooks).unwrap());
        let (f16, f32_) = (l16.to_scalar::<f32>().unwrap(), l32.to_scalar::<f32>().unwrap());
        assert!((f16 - f32_).abs() < 0.01 * f32_, "bf16 loss {f16} vs f32 {f32_}");
        let (g16, g32) = (m.backward(&l16).unwrap(), m.backward(&l32).unwrap());
        let mut differ = 0;
        for (name, g) in &g16 {
            assert_eq!(g.dtype(), DType::F32, "{name}");
            let (a, b) = (
                g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                g32[name].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            let norm = b.iter().map(|v| v * v).sum::<f32>().sqrt();
            let diff = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt();
            assert!(diff <= 0.05 * norm + 1e-6, "{name}: bf16 gradient off by {diff} (norm {norm})");
            differ += usize::from(diff > 0.0);
        }
        assert!(differ > g16.len() / 2, "bf16 products left most gradients bit-identical to f32");
        // The same rounding of inputs and weights with f32 products gives a different loss: the
        // products themselves ran in bf16.
        struct F32Products(PrecisionHooks);
        impl LinearHooks for F32Products {
            fn weight(&self, w: &Tensor) -> Result<Tensor> {
                self.0.weight(w)
            }
            fn input(&self, x: &Tensor) -> Result<Tensor> {
                self.0.input(x)
            }
        }
        let rounded_only = m
            .loss(&x, &t, &F32Products(hooks_for("bf16", Rounding::Nearest, 0).unwrap()))
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_ne!(rounded_only, f16, "bf16 products and f32 products of the same rounded inputs agree exactly");
        assert!((rounded_only - f16).abs() < 0.01 * f16);
    }
}
