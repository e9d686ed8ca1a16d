//! Bootstrap: refit on resampled points, then percentile intervals of anything computed from
//! the parameters.

use crate::fit::{fit_multistart_serial, Dataset, FitOptions};
use crate::law::Law;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Indices of resample `index`: `n` draws with replacement from `0..n`, reproducible from
/// `(seed, index)` alone (ChaCha8 seeded with `seed`, stream `index`).
pub fn resample_indices(n: usize, seed: u64, index: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index as u64);
    (0..n).map(|_| rng.random_range(0..n)).collect()
}

/// Refits `law` on `resamples` resamples of `data` (in parallel), each from `starts`.
/// Entry `i` is resample `i`'s parameters, or None when its refit failed.
pub fn bootstrap_params(
    law: &dyn Law,
    data: &Dataset,
    starts: &[Vec<f64>],
    opts: &FitOptions,
    resamples: usize,
    seed: u64,
) -> Vec<Option<Vec<f64>>> {
    (0..resamples)
        .into_par_iter()
        .map(|i| {
            let sample = data.select(&resample_indices(data.len(), seed, i));
            fit_multistart_serial(law, &sample, starts, opts).ok().map(|m| m.best.theta)
        })
        .collect()
}

/// The `q`-quantile (0..=1) of `values` with linear interpolation (numpy's default); NaN if empty.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Central percentile interval at `level` (e.g. 0.95 → 2.5th and 97.5th percentiles).
pub fn percentile_interval(values: &[f64], level: f64) -> Option<[f64; 2]> {
    let tail = (1.0 - level) / 2.0;
    let lo = quantile(values, tail);
    let hi = quantile(values, 1.0 - tail);
    (lo.is_finite() && hi.is_finite()).then_some([lo, hi])
}
