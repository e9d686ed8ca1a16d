//! Bootstrap bands for the report: the compute-optimal frontier (N_opt and D_opt across a range of
//! budgets, each with its percentile interval over the same resamples as the law's parameters) and
//! the interval of each extrapolation prediction (the held-out points predicted by refits of
//! resampled training points).

use crate::approaches::{linear_fit, Frontier};
use crate::bootstrap::{bootstrap_params, percentile_interval, resample_indices};
use crate::config::BootstrapConfig;
use crate::fit::{Dataset, FitOptions, MultiStartFit};
use crate::law::Law;
use crate::output::{Estimate, Extrapolation, FrontierPoint};

/// Compute-optimal (N, D) from parameters and a budget.
pub type OptimalFn<'a> = &'a dyn Fn(&[f64], f64) -> (f64, f64);

/// Budgets at which the frontier is tabulated: 25 log-spaced values from `lo` to `hi`.
pub fn frontier_budgets(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && hi >= lo) {
        return Vec::new();
    }
    let k = 24;
    (0..=k).map(|i| lo * (hi / lo).powf(i as f64 / k as f64)).collect()
}

/// Budgets from the data's smallest compute to the largest of the data's and those asked for in
/// `[fit.optimal] budgets`.
pub fn frontier_budgets_over(data: impl Iterator<Item = f64> + Clone, asked: &[f64]) -> Vec<f64> {
    frontier_budgets(data.clone().fold(f64::INFINITY, f64::min), data.chain(asked.iter().copied()).fold(0.0, f64::max))
}

/// N_opt and D_opt at each budget from `optimal(theta, C)`, with intervals from the resampled
/// parameters `boot` (failed resamples are None and left out) at `level`.
pub fn frontier_band(
    optimal: OptimalFn<'_>,
    theta: &[f64],
    boot: &[Option<Vec<f64>>],
    level: f64,
    budgets: &[f64],
) -> Vec<FrontierPoint> {
    budgets
        .iter()
        .map(|&c| {
            let (n, d) = optimal(theta, c);
            let samples: Vec<(f64, f64)> = boot.iter().flatten().map(|t| optimal(t, c)).collect();
            let ci = |pick: fn(&(f64, f64)) -> f64| {
                if boot.is_empty() {
                    return None;
                }
                percentile_interval(&samples.iter().map(pick).collect::<Vec<_>>(), level)
            };
            FrontierPoint {
                c,
                n_opt: Estimate { estimate: n, ci: ci(|s| s.0) },
                d_opt: Estimate { estimate: d, ci: ci(|s| s.1) },
            }
        })
        .collect()
}

/// Intervals of the refit's predictions for `held` inputs: the refit (`refit`, fitted to `train`)
/// is bootstrapped from its best distinct optima like the full fit. Empty without resamples.
pub fn held_out_intervals(
    law: &dyn Law,
    train: &Dataset,
    refit: &MultiStartFit,
    held: &[Vec<f64>],
    opts: &FitOptions,
    b: &BootstrapConfig,
) -> Vec<Option<[f64; 2]>> {
    if b.resamples == 0 {
        return Vec::new();
    }
    let starts: Vec<Vec<f64>> = refit.top.iter().take(b.starts).map(|r| r.theta.clone()).collect();
    let boot = bootstrap_params(law, train, &starts, opts, b.resamples, b.seed);
    held.iter()
        .map(|x| {
            let p: Vec<f64> = boot.iter().flatten().map(|t| law.predict(t, x)).collect();
            percentile_interval(&p, b.level)
        })
        .collect()
}

/// Gives each held-out point of a frontier's extrapolation check the interval of its predicted
/// N_opt: the power law refitted (least squares in log-log) to resamples of the frontier points
/// that were not held out.
pub fn frontier_held_out_intervals(f: &Frontier, x: &mut Extrapolation, b: &BootstrapConfig) {
    if b.resamples == 0 {
        return;
    }
    let cut = x.points.iter().filter_map(|p| p.inputs.get("C").copied()).fold(f64::INFINITY, f64::min);
    let train: Vec<(f64, f64)> = f.points.iter().filter(|p| p.0 < cut).map(|p| (p.0, p.1)).collect();
    let fits: Vec<(f64, f64)> = (0..b.resamples)
        .filter_map(|i| {
            let rows = resample_indices(train.len(), b.seed, i);
            let lc: Vec<f64> = rows.iter().map(|&r| train[r].0.ln()).collect();
            let ln: Vec<f64> = rows.iter().map(|&r| train[r].1.ln()).collect();
            let distinct = lc.iter().any(|&v| (v - lc[0]).abs() > 1e-12);
            let (c0, c1, _, _) = linear_fit(&lc, &ln);
            (distinct && c0.is_finite() && c1.is_finite()).then_some((c0, c1))
        })
        .collect();
    for p in &mut x.points {
        let Some(&c) = p.inputs.get("C") else { continue };
        let preds: Vec<f64> = fits.iter().map(|(c0, c1)| (c0 + c1 * c.ln()).exp()).collect();
        p.predicted_ci = percentile_interval(&preds, b.level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_span_the_range_in_log_steps() {
        let b = frontier_budgets(1e18, 1e22);
        assert_eq!(b.len(), 25);
        assert!((b[0] - 1e18).abs() < 1e3 && (b[24] / 1e22 - 1.0).abs() < 1e-12);
        assert!((b[6] / 1e19 - 1.0).abs() < 1e-12, "a quarter of the way in log is 1e19");
        assert!(frontier_budgets(0.0, 1.0).is_empty());
    }

    #[test]
    fn the_band_holds_the_estimate_and_the_resamples_percentiles() {
        // N_opt = k C^a with k drawn from the resamples: the band is k's percentiles times C^a.
        let opt = |t: &[f64], c: f64| (t[0] * c.powf(0.5), c / (6.0 * t[0] * c.powf(0.5)));
        let boot: Vec<Option<Vec<f64>>> = (0..=100).map(|i| Some(vec![1.0 + i as f64 / 100.0])).chain([None]).collect();
        let band = frontier_band(&opt, &[1.5], &boot, 0.9, &[1e20]);
        let p = &band[0];
        assert_eq!(p.n_opt.estimate, 1.5e10);
        let [lo, hi] = p.n_opt.ci.unwrap();
        assert!((lo / 1.05e10 - 1.0).abs() < 1e-12 && (hi / 1.95e10 - 1.0).abs() < 1e-12, "{lo} {hi}");
        // D_opt falls as N_opt rises: its low end comes from the largest k.
        let [dlo, dhi] = p.d_opt.ci.unwrap();
        assert!((dlo - 1e20 / (6.0 * 1.95e10)).abs() / dlo < 1e-12 && dhi > dlo);
        assert!(frontier_band(&opt, &[1.5], &[], 0.9, &[1e20])[0].n_opt.ci.is_none());
    }
}
