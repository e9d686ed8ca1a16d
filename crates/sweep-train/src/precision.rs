//! The point's precision as linear-layer hooks: fake quantisation (straight-through) of weights
//! and activations, quantised activation gradients, and quantised attention K/V.
//!
//! bf16 and fp16 are autocast semantics on every device: the inputs and weights of each linear
//! layer are rounded to the 16-bit type (a differentiable cast), the product accumulates in f32,
//! and the master weights stay f32. The arithmetic itself runs in f32, so this is exact in
//! numerics but gains no 16-bit speed.

use crate::model::LinearHooks;
use crate::quant::{fake_quant, quant_grad, QuantTargets};
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
    pub fn counters(&self) -> [u64; 4] {
        self.targets.counters()
    }
    /// Restores counters from a checkpoint.
    pub fn set_counters(&self, c: [u64; 4]) {
        self.targets.set_counters(c)
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
    fn is_identity(&self) -> bool {
        let t = &self.targets;
        self.autocast.is_none() && t.weights.is_none() && t.activations.is_none() && t.gradients.is_none() && t.kv.is_none()
    }
    fn kv(&self, t: &Tensor) -> Result<Tensor> {
        match self.targets.get(QuantTarget::Kv) {
            Some(q) => fake_quant(t, q),
            None => Ok(t.clone()),
        }
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
    let spec = sweep_plan::precision::PrecisionSpec::parse(name).map_err(anyhow::Error::msg)?;
    let targets = if spec.format.is_simulated() { vec![(QuantTarget::Weights, spec.clone()), (QuantTarget::Activations, spec.clone())] } else { vec![] };
    let (e, m) = spec.format.exp_man().map(|(e, m)| (Some(e), Some(m))).unwrap_or((None, None));
    let resolved = ResolvedPrecision { name: spec.name.clone(), bits: spec.format.bits(), block_size: spec.law_block_size(), exp_bits: e, man_bits: m, spec, targets, rounding };
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
        let x = Var::new(&[1.0f32 + 1.0 / 512.0, 3.14159, -2.0e-3][..], &Device::Cpu).unwrap();
        let y = h.input(x.as_tensor()).unwrap();
        let got: Vec<f32> = y.to_vec1().unwrap();
        let want: Vec<f32> = [1.0f32 + 1.0 / 512.0, 3.14159, -2.0e-3].iter().map(|v| half::bf16::from_f32(*v).to_f32()).collect();
        assert_eq!(got, want);
        assert_ne!(got[0], 1.0 + 1.0 / 512.0, "1 + 2^-9 is not a bf16 value");
        // Straight through: d(sum y)/dx = 1.
        let g = y.sum_all().unwrap().backward().unwrap();
        let gx: Vec<f32> = g.get(x.as_tensor()).unwrap().to_vec1().unwrap();
        assert_eq!(gx, vec![1.0; 3]);
        assert!(hooks_for("fp32", Rounding::Nearest, 0).unwrap().autocast.is_none());
    }
}
