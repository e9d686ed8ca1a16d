//! The critical mixture ratio (Gu et al. 2024, "CMR Scaling Law", arXiv 2407.17467).
//!
//! Continual pre-training mixes a domain corpus (a share R of the tokens) into general data. A
//! ratio is feasible (the paper's definitions 1-2) when, after T tokens, the general loss has
//! risen by at most eps over its value before (L_gen(R, T) <= L_gen + eps, eps = 0.05 nats, an
//! absolute tolerance) while the domain loss fell (L_dom(R, T) < L_dom). The critical mixture
//! ratio is the largest feasible R (definition 3). The paper predicts the losses at other ratios
//! with L(R) = alpha R^s + beta, fitted to the measured non-zero ratios (section 5.1), and finds
//! the CMR of one model size growing with the token budget as R_CMR = alpha4 T^s4 + beta3
//! (eq. 8, T in units of 0.2B tokens: T = 100 is 20B).
//!
//! From a mixture sweep's results table (columns N, D, r, loss_general, loss_domain) this module
//! derives the CMR per model size and token budget: the baseline is the run at r = 0 of the same
//! (N, D), or the columns `loss_general_base` / `loss_domain_base` where a staged sweep records
//! the base model's losses before continual pre-training. Then eq. 8 is fitted per model size.

use crate::table::Table;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Tokens per unit of the paper's T (0.2B tokens; T = 100 is 20B).
pub const T_UNIT: f64 = 2e8;

/// `y = alpha x^s + beta` fitted by least squares: `[alpha, s, beta]` and the residual sum of
/// squares. For fixed s the model is linear in alpha and beta, so s is found by a scan over
/// [-4, 4] and golden-section refinement (variable projection). None with fewer than 3 distinct
/// positive x.
pub fn fit_power_offset(x: &[f64], y: &[f64]) -> Option<([f64; 3], f64)> {
    let mut distinct: Vec<f64> = x.iter().copied().filter(|v| *v > 0.0).collect();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    if distinct.len() < 3 || x.len() != y.len() {
        return None;
    }
    let ssr_at = |s: f64| -> (f64, f64, f64) {
        let z: Vec<f64> = x.iter().map(|v| v.powf(s)).collect();
        let n = z.len() as f64;
        let (mz, my) = (z.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
        let szz: f64 = z.iter().map(|a| (a - mz).powi(2)).sum();
        let szy: f64 = z.iter().zip(y).map(|(a, b)| (a - mz) * (b - my)).sum();
        if szz <= 0.0 || !szz.is_finite() {
            return (f64::INFINITY, 0.0, my);
        }
        let alpha = szy / szz;
        let beta = my - alpha * mz;
        let ssr = z.iter().zip(y).map(|(a, b)| (b - beta - alpha * a).powi(2)).sum();
        (ssr, alpha, beta)
    };
    let (s, _) =
        crate::optimal::minimise_1d(|s| if s.abs() < 1e-9 { f64::INFINITY } else { ssr_at(s).0 }, -4.0, 4.0, 1601);
    let (ssr, alpha, beta) = ssr_at(s);
    ssr.is_finite().then_some(([alpha, s, beta], ssr))
}

/// The critical mixture ratio of one model size and token budget.
#[derive(Debug, Clone, PartialEq)]
pub struct CriticalRatio {
    /// Model size (the law's N column).
    pub n: f64,
    /// Training tokens.
    pub d: f64,
    /// The largest feasible domain share in [0, 1] (0: none is).
    pub r_crit: f64,
    /// General loss before continual pre-training (or at r = 0).
    pub base_general: f64,
    /// Domain loss before continual pre-training (or at r = 0).
    pub base_domain: f64,
    /// Non-zero ratios measured.
    pub ratios: usize,
    /// True when the losses were interpolated by the paper's power law (3 or more non-zero
    /// ratios), false when linearly between the measured ratios (2 of them).
    pub power_law: bool,
    /// Residual sum of squares and degrees of freedom of the general-loss power law (for the
    /// noise estimate of the bootstrap).
    pub general_ssr: (f64, usize),
}

/// Runs of one (N, D): ratios and their general and domain losses, and the baselines.
#[derive(Debug, Clone, PartialEq)]
pub struct MixtureGroup {
    /// Model size.
    pub n: f64,
    /// Tokens.
    pub d: f64,
    /// Non-zero ratios, ascending.
    pub r: Vec<f64>,
    /// General loss at each ratio.
    pub general: Vec<f64>,
    /// Domain loss at each ratio (NaN where not measured).
    pub domain: Vec<f64>,
    /// Baseline general loss.
    pub base_general: f64,
    /// Baseline domain loss (NaN when unknown: the domain condition is then not checked).
    pub base_domain: f64,
}

/// Piecewise-linear interpolation through (x, y) sorted by x, extended flat beyond the ends.
fn interpolate(x: &[f64], y: &[f64], at: f64) -> f64 {
    if at <= x[0] {
        return y[0];
    }
    for k in 1..x.len() {
        if at <= x[k] {
            let w = (at - x[k - 1]) / (x[k] - x[k - 1]);
            return y[k - 1] + w * (y[k] - y[k - 1]);
        }
    }
    y[y.len() - 1]
}

impl MixtureGroup {
    /// The group's critical ratio with tolerance `epsilon` (absolute, nats): the largest R in
    /// (0, 1] whose predicted general loss stays within base + epsilon and whose predicted domain
    /// loss is below the domain baseline; resolution 1e-4, then bisection on the boundary.
    pub fn critical_ratio(&self, epsilon: f64) -> Result<CriticalRatio, String> {
        if self.r.len() < 2 {
            return Err(format!(
                "N = {:.4e}, D = {:.4e}: {} non-zero mixture ratio(s); the critical ratio needs at least 2 (the paper's power law in R needs 3)",
                self.n,
                self.d,
                self.r.len()
            ));
        }
        let general_fit = fit_power_offset(&self.r, &self.general);
        let domain_points: Vec<(f64, f64)> =
            self.r.iter().zip(&self.domain).filter(|(_, d)| d.is_finite()).map(|(r, d)| (*r, *d)).collect();
        let (dr, dl): (Vec<f64>, Vec<f64>) = domain_points.iter().copied().unzip();
        let domain_fit = fit_power_offset(&dr, &dl);
        let general = |r: f64| match general_fit {
            Some(([a, s, b], _)) => a * r.powf(s) + b,
            None => interpolate(&self.r, &self.general, r),
        };
        let domain = |r: f64| match (&domain_fit, dr.len()) {
            (Some(([a, s, b], _)), _) => a * r.powf(*s) + b,
            (None, k) if k >= 2 => interpolate(&dr, &dl, r),
            _ => f64::NEG_INFINITY,
        };
        let check_domain = self.base_domain.is_finite() && dr.len() >= 2;
        let feasible =
            |r: f64| general(r) <= self.base_general + epsilon && (!check_domain || domain(r) < self.base_domain);
        let steps = 10_000;
        let mut best: Option<f64> = None;
        for i in (1..=steps).rev() {
            let r = i as f64 / steps as f64;
            if feasible(r) {
                best = Some(r);
                break;
            }
        }
        let r_crit = match best {
            None => 0.0,
            Some(r) if r >= 1.0 => 1.0,
            Some(r) => {
                let (mut lo, mut hi) = (r, r + 1.0 / steps as f64);
                for _ in 0..50 {
                    let m = 0.5 * (lo + hi);
                    if feasible(m) {
                        lo = m;
                    } else {
                        hi = m;
                    }
                }
                lo
            }
        };
        Ok(CriticalRatio {
            n: self.n,
            d: self.d,
            r_crit,
            base_general: self.base_general,
            base_domain: self.base_domain,
            ratios: self.r.len(),
            power_law: general_fit.is_some(),
            general_ssr: general_fit.map_or((0.0, 0), |(_, ssr)| (ssr, self.r.len() - 3)),
        })
    }
}

/// Groups a mixture sweep's rows by (N, D): columns `n_col`, D, r, loss_general, loss_domain,
/// and optionally loss_general_base / loss_domain_base. Groups without a baseline are skipped
/// (returned as notes).
pub fn mixture_groups(table: &Table, n_col: &str) -> Result<(Vec<MixtureGroup>, Vec<String>), crate::FitError> {
    let n = table.column(n_col)?;
    let d = table.column("D")?;
    let r = table.column("r")?;
    let lg = table.column("loss_general")?;
    let ld = table.columns.get("loss_domain").cloned().unwrap_or_else(|| vec![f64::NAN; n.len()]);
    let base_g = table.columns.get("loss_general_base");
    let base_d = table.columns.get("loss_domain_base");
    let key = |v: f64| (v * 1e6).round() as i128;
    let mut groups: BTreeMap<(i128, i128), Vec<usize>> = BTreeMap::new();
    for i in 0..n.len() {
        if n[i].is_finite() && d[i].is_finite() && r[i].is_finite() && lg[i].is_finite() {
            groups.entry((key(n[i].ln()), key(d[i].ln()))).or_default().push(i);
        }
    }
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for rows in groups.values() {
        let (gn, gd) = (n[rows[0]], d[rows[0]]);
        let first_finite =
            |col: Option<&Vec<f64>>| col.and_then(|c| rows.iter().map(|&i| c[i]).find(|v| v.is_finite()));
        let zero = rows.iter().copied().find(|&i| r[i] == 0.0);
        let base_general = first_finite(base_g).or(zero.map(|i| lg[i]));
        let base_domain = first_finite(base_d).or(zero.map(|i| ld[i])).unwrap_or(f64::NAN);
        let Some(base_general) = base_general else {
            notes.push(format!(
                "N = {gn:.4e}, D = {gd:.4e}: no baseline (no run at r = 0 and no loss_general_base column); left out"
            ));
            continue;
        };
        let mut pts: Vec<(f64, f64, f64)> =
            rows.iter().filter(|&&i| r[i] > 0.0).map(|&i| (r[i], lg[i], ld[i])).collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        out.push(MixtureGroup {
            n: gn,
            d: gd,
            r: pts.iter().map(|p| p.0).collect(),
            general: pts.iter().map(|p| p.1).collect(),
            domain: pts.iter().map(|p| p.2).collect(),
            base_general,
            base_domain,
        });
    }
    Ok((out, notes))
}

/// Eq. 8 fitted to one model size's critical ratios: R_CMR = alpha4 (D / 0.2B)^s4 + beta3.
/// Returns `[alpha4, s4, beta3]` and the residual sum of squares; None with fewer than 3 token
/// budgets.
pub fn fit_cmr_law(points: &[(f64, f64)]) -> Option<([f64; 3], f64)> {
    let t: Vec<f64> = points.iter().map(|p| p.0 / T_UNIT).collect();
    let r: Vec<f64> = points.iter().map(|p| p.1).collect();
    fit_power_offset(&t, &r)
}

/// Eq. 8's prediction at D tokens.
pub fn predict_cmr(theta: &[f64], tokens: f64) -> f64 {
    theta[0] * (tokens / T_UNIT).powf(theta[1]) + theta[2]
}

/// Parametric bootstrap of eq. 8 for one model size: every run's general loss (and the
/// baseline) is perturbed by normal noise of standard deviation `sigma_general` (the pooled
/// residual noise of the loss-vs-ratio fits), the domain losses by `sigma_domain`; the critical
/// ratios are derived again and eq. 8 refitted. Entry i is resample i's parameters, or None when
/// its refit failed.
pub fn bootstrap_cmr(
    groups: &[MixtureGroup],
    epsilon: f64,
    sigma_general: f64,
    sigma_domain: f64,
    resamples: usize,
    seed: u64,
) -> Vec<Option<Vec<f64>>> {
    use rayon::prelude::*;
    (0..resamples)
        .into_par_iter()
        .map(|i| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(i as u64);
            let mut normal = move || {
                let u1: f64 = 1.0 - rng.random::<f64>();
                let u2: f64 = rng.random::<f64>();
                (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
            };
            let mut points = Vec::with_capacity(groups.len());
            for g in groups {
                let mut h = g.clone();
                for v in h.general.iter_mut() {
                    *v += sigma_general * normal();
                }
                for v in h.domain.iter_mut() {
                    *v += sigma_domain * normal();
                }
                h.base_general += sigma_general * normal();
                h.base_domain += sigma_domain * normal();
                points.push((h.d, h.critical_ratio(epsilon).ok()?.r_crit));
            }
            fit_cmr_law(&points).map(|(theta, _)| theta.to_vec())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_offset_fit_recovers_a_known_curve() {
        let x = [0.125, 0.25, 1.0 / 3.0, 0.5, 0.75, 1.0];
        let y: Vec<f64> = x.iter().map(|r: &f64| 0.3 * r.powf(1.7) + 2.1).collect();
        let ([a, s, b], ssr) = fit_power_offset(&x, &y).unwrap();
        assert!((a - 0.3).abs() < 1e-6 && (s - 1.7).abs() < 1e-6 && (b - 2.1).abs() < 1e-6, "{a} {s} {b}");
        assert!(ssr < 1e-20);
    }

    #[test]
    fn critical_ratio_is_where_the_general_loss_crosses_the_tolerance() {
        // General loss 2 + 0.2 R^2 over a baseline of 2.0: feasible while 0.2 R^2 <= 0.05, i.e.
        // R <= 0.5 exactly; the domain loss falls everywhere.
        let r = vec![0.125, 0.25, 0.5, 0.75, 1.0];
        let g = MixtureGroup {
            n: 1e8,
            d: 1e9,
            general: r.iter().map(|x: &f64| 2.0 + 0.2 * x * x).collect(),
            domain: r.iter().map(|x: &f64| 3.0 - 0.5 * x.sqrt()).collect(),
            r,
            base_general: 2.0,
            base_domain: 3.0,
        };
        let c = g.critical_ratio(0.05).unwrap();
        assert!((c.r_crit - 0.5).abs() < 1e-6, "{c:?}");
        assert!(c.power_law);
        // A domain loss that never falls below its baseline makes no ratio feasible.
        let mut flat = g.clone();
        flat.domain = vec![3.1; 5];
        assert_eq!(flat.critical_ratio(0.05).unwrap().r_crit, 0.0);
    }
}
