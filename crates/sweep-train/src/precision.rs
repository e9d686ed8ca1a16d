//! The point's precision as linear-layer hooks: fake quantisation (straight-through) of weights
//! and activations, quantised activation gradients, and quantised attention K/V.

use crate::model::LinearHooks;
use crate::quant::{fake_quant, quant_grad, QuantTargets};
use candle_core::{Result, Tensor};
use sweep_plan::config::{QuantTarget, Rounding};
use sweep_plan::point::ResolvedPrecision;
use sweep_plan::Point;

/// Fake quantisation per target; identity for targets that are not quantised.
pub struct PrecisionHooks {
    /// Quantiser per target.
    pub targets: QuantTargets,
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
            None => Ok(w.clone()),
        }
    }
    fn input(&self, x: &Tensor) -> Result<Tensor> {
        let x = match self.targets.get(QuantTarget::Activations) {
            Some(q) => fake_quant(x, q)?,
            None => x.clone(),
        };
        // The gradient flowing back into the activation is quantised here.
        match self.targets.get(QuantTarget::Gradients) {
            Some(q) => quant_grad(&x, q),
            None => Ok(x),
        }
    }
    fn kv(&self, t: &Tensor) -> Result<Tensor> {
        match self.targets.get(QuantTarget::Kv) {
            Some(q) => fake_quant(t, q),
            None => Ok(t.clone()),
        }
    }
}

fn build(precision: &ResolvedPrecision, seed: u64) -> anyhow::Result<PrecisionHooks> {
    Ok(PrecisionHooks { targets: QuantTargets::from_resolved(precision, seed)? })
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
