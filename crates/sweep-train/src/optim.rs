//! AdamW with decoupled weight decay on matrices only, and global gradient-norm clipping.

use crate::fused;
use candle_core::{Result, Tensor, Var};
use std::collections::BTreeMap;

/// AdamW hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// beta1.
    pub beta1: f64,
    /// beta2.
    pub beta2: f64,
    /// epsilon.
    pub eps: f64,
    /// Decoupled weight decay (matrices only; norms are not decayed).
    pub weight_decay: f64,
}

/// Optimiser state: first and second moments per parameter, and the step count.
pub struct AdamW {
    /// Hyperparameters.
    pub config: AdamWConfig,
    /// First moments by parameter name.
    pub m: BTreeMap<String, Tensor>,
    /// Second moments by parameter name.
    pub v: BTreeMap<String, Tensor>,
    /// Updates applied so far.
    pub t: u64,
    /// Update CPU and CUDA parameters in place with the fused kernels (true by default); false
    /// runs the composed tensor ops, the reference the fused update is tested against.
    pub fused: bool,
}

impl AdamW {
    /// Zero state for these parameters.
    pub fn new(config: AdamWConfig, params: &BTreeMap<String, Var>) -> Result<Self> {
        let mut m = BTreeMap::new();
        let mut v = BTreeMap::new();
        for (k, p) in params {
            m.insert(k.clone(), p.as_tensor().zeros_like()?);
            v.insert(k.clone(), p.as_tensor().zeros_like()?);
        }
        Ok(AdamW { config, m, v, t: 0, fused: true })
    }

    /// One update with learning rate `lr` and (already clipped) gradients by name.
    pub fn step(&mut self, params: &BTreeMap<String, Var>, grads: &BTreeMap<String, Tensor>, lr: f64) -> Result<()> {
        self.t += 1;
        let c = self.config;
        let bc1 = 1.0 - c.beta1.powi(self.t as i32);
        let bc2 = 1.0 - c.beta2.powi(self.t as i32);
        for (name, p) in params {
            let Some(g) = grads.get(name) else { continue };
            let decay = if p.rank() >= 2 { c.weight_decay } else { 0.0 };
            let (pt, mt, vt) = (p.as_tensor(), &self.m[name], &self.v[name]);
            let g = &g.contiguous()?;
            if self.fused && fused::adamw_supported(pt, mt, vt, g) {
                let s = fused::AdamWStep {
                    beta1: c.beta1,
                    beta2: c.beta2,
                    eps: c.eps,
                    bias_correction1: bc1,
                    bias_correction2: bc2,
                    lr,
                    weight_decay: decay,
                };
                fused::adamw_in_place(pt, mt, vt, g, s)?;
                continue;
            }
            let m = (self.m[name].affine(c.beta1, 0.0)? + g.affine(1.0 - c.beta1, 0.0)?)?;
            let v = (self.v[name].affine(c.beta2, 0.0)? + g.sqr()?.affine(1.0 - c.beta2, 0.0)?)?;
            let denom = (v.affine(1.0 / bc2, 0.0)?.sqrt()? + c.eps)?;
            let update = m.affine(1.0 / bc1, 0.0)?.div(&denom)?;
            let new = (p.as_tensor().affine(1.0 - lr * decay, 0.0)? - update.affine(lr, 0.0)?)?;
            p.set(&new)?;
            self.m.insert(name.clone(), m);
            self.v.insert(name.clone(), v);
        }
        Ok(())
    }
}

/// Global L2 norm of the gradients.
pub fn grad_norm(grads: &BTreeMap<String, Tensor>) -> Result<f64> {
    let mut total = 0f64;
    for g in grads.values() {
        total += if fused::use_fused(g) {
            fused::sum_of_squares(g)?
        } else {
            g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?
        };
    }
    Ok(total.sqrt())
}

/// Scales gradients so their global norm is at most `max_norm` (0 disables); returns the norm
/// before clipping.
pub fn clip_grads(grads: &mut BTreeMap<String, Tensor>, max_norm: f64) -> Result<f64> {
    let norm = grad_norm(grads)?;
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.values_mut() {
            *g = if fused::use_fused(g) { fused::scale(g, scale)? } else { g.affine(scale, 0.0)? };
        }
    }
    Ok(norm)
}
