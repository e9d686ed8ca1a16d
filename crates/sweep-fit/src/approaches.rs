//! Chinchilla approaches 1 (lower envelope of training curves) and 2 (parabolas on IsoFLOP
//! profiles): both end in power laws N_opt = k_N C^a and D_opt = k_D C^b.

use crate::error::FitError;

/// A power-law frontier fitted by least squares in log-log space.
#[derive(Debug, Clone, PartialEq)]
pub struct Frontier {
    /// Exponent of N_opt in C.
    pub a: f64,
    /// Exponent of D_opt in C.
    pub b: f64,
    /// N_opt = k_N C^a.
    pub k_n: f64,
    /// D_opt = k_D C^b.
    pub k_d: f64,
    /// The (C, N_opt) points the power law went through.
    pub points: Vec<(f64, f64)>,
    /// Residual sum of squares of ln N_opt.
    pub ssr: f64,
    /// R^2 of ln N_opt against ln C.
    pub r2: f64,
}

impl Frontier {
    /// Compute-optimal (N, D) at budget C.
    pub fn optimal(&self, budget: f64) -> (f64, f64) {
        (self.k_n * budget.powf(self.a), self.k_d * budget.powf(self.b))
    }
}

/// Ordinary least squares y = c0 + c1 x; returns (c0, c1, ssr, r2).
pub fn linear_fit(x: &[f64], y: &[f64]) -> (f64, f64, f64, f64) {
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let c1 = sxy / sxx;
    let c0 = my - c1 * mx;
    let ssr: f64 = x.iter().zip(y).map(|(a, b)| (b - c0 - c1 * a).powi(2)).sum();
    let sst: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    (c0, c1, ssr, 1.0 - ssr / sst)
}

fn frontier_from(points: Vec<(f64, f64)>) -> Result<Frontier, FitError> {
    let distinct_c = {
        let mut c: Vec<f64> = points.iter().map(|p| p.0).collect();
        c.sort_by(f64::total_cmp);
        c.dedup();
        c.len()
    };
    if distinct_c < 2 {
        return Err(FitError::data("the optimal frontier has fewer than 2 budgets; add runs at more compute budgets"));
    }
    let lc: Vec<f64> = points.iter().map(|p| p.0.ln()).collect();
    let ln: Vec<f64> = points.iter().map(|p| p.1.ln()).collect();
    let ld: Vec<f64> = points.iter().map(|(c, n)| (c / (6.0 * n)).ln()).collect();
    let (cn, a, ssr, r2) = linear_fit(&lc, &ln);
    let (cd, b, _, _) = linear_fit(&lc, &ld);
    Ok(Frontier { a, b, k_n: cn.exp(), k_d: cd.exp(), points, ssr, r2 })
}

/// Approach 2: rows (N, C, loss); rows sharing a budget C (relative difference below 1e-6)
/// form an IsoFLOP profile; a parabola in ln N per profile (at least 3 distinct N, opening
/// upwards, minimum inside the profile's range) gives N_opt(C).
pub fn approach2(n: &[f64], c: &[f64], loss: &[f64]) -> Result<Frontier, FitError> {
    let mut order: Vec<usize> = (0..n.len()).collect();
    order.sort_by(|&i, &j| c[i].total_cmp(&c[j]));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in order {
        match groups.last_mut() {
            Some(g) if (c[g[0]] - c[i]).abs() <= 1e-6 * c[i].abs() => g.push(i),
            _ => groups.push(vec![i]),
        }
    }
    let mut points = Vec::new();
    for g in &groups {
        let mut xs: Vec<f64> = g.iter().map(|&i| n[i].ln()).collect();
        let ys: Vec<f64> = g.iter().map(|&i| loss[i]).collect();
        let mut distinct = xs.clone();
        distinct.sort_by(f64::total_cmp);
        distinct.dedup();
        if distinct.len() < 3 {
            continue;
        }
        if let Some(x_min) = parabola_minimum(&xs, &ys) {
            if x_min >= distinct[0] && x_min <= distinct[distinct.len() - 1] {
                points.push((c[g[0]], x_min.exp()));
            }
        }
        xs.clear();
    }
    frontier_from(points)
}

/// Minimum of the least-squares parabola through (x, y), or None if it opens downwards.
pub fn parabola_minimum(x: &[f64], y: &[f64]) -> Option<f64> {
    // Centre x for conditioning, then solve the 3x3 normal equations.
    let mx = x.iter().sum::<f64>() / x.len() as f64;
    let mut s = [0.0; 5];
    let mut t = [0.0; 3];
    for (&xi, &yi) in x.iter().zip(y) {
        let u = xi - mx;
        let mut p = 1.0;
        for k in 0..5 {
            s[k] += p;
            if k < 3 {
                t[k] += p * yi;
            }
            p *= u;
        }
    }
    let m = [[s[0], s[1], s[2]], [s[1], s[2], s[3]], [s[2], s[3], s[4]]];
    let coef = solve3(m, t)?;
    (coef[2] > 0.0).then(|| mx - coef[1] / (2.0 * coef[2]))
}

fn solve3(mut m: [[f64; 3]; 3], mut b: [f64; 3]) -> Option<[f64; 3]> {
    for col in 0..3 {
        let piv = (col..3).max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))?;
        if m[piv][col].abs() < 1e-300 {
            return None;
        }
        m.swap(col, piv);
        b.swap(col, piv);
        for r in col + 1..3 {
            let f = m[r][col] / m[col][col];
            let pivot_row = m[col];
            for (k, v) in m[r].iter_mut().enumerate().skip(col) {
                *v -= f * pivot_row[k];
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = [0.0; 3];
    for r in (0..3).rev() {
        let s: f64 = (r + 1..3).map(|k| m[r][k] * x[k]).sum();
        x[r] = (b[r] - s) / m[r][r];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Approach 1: learning curves (run, N, C, loss), one row per logged evaluation. At 100
/// log-spaced budgets across the curves' range, each run's loss is interpolated linearly in
/// ln C; the run with the lowest loss gives N_opt(C) (the lower envelope).
pub fn approach1(run: &[f64], n: &[f64], c: &[f64], loss: &[f64]) -> Result<Frontier, FitError> {
    let mut runs: std::collections::BTreeMap<u64, Vec<usize>> = Default::default();
    for (i, r) in run.iter().enumerate() {
        runs.entry(r.to_bits()).or_default().push(i);
    }
    let curves: Vec<(f64, Vec<(f64, f64)>)> = runs
        .values()
        .map(|rows| {
            let mut pts: Vec<(f64, f64)> = rows.iter().map(|&i| (c[i].ln(), loss[i])).collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            (n[rows[0]], pts)
        })
        .collect();
    if curves.len() < 2 {
        return Err(FitError::data("approach 1 needs learning curves of at least 2 runs"));
    }
    let lo = curves.iter().map(|c| c.1[0].0).fold(f64::INFINITY, f64::min);
    let hi = curves.iter().map(|c| c.1[c.1.len() - 1].0).fold(f64::NEG_INFINITY, f64::max);
    let mut points = Vec::new();
    for k in 0..100 {
        let x = lo + (hi - lo) * k as f64 / 99.0;
        let mut best: Option<(f64, f64)> = None;
        for (n_run, pts) in &curves {
            if pts.len() < 2 || x < pts[0].0 || x > pts[pts.len() - 1].0 {
                continue;
            }
            let j = pts.partition_point(|p| p.0 < x).clamp(1, pts.len() - 1);
            let (x0, y0) = pts[j - 1];
            let (x1, y1) = pts[j];
            let y = if x1 > x0 { y0 + (y1 - y0) * (x - x0) / (x1 - x0) } else { y0 };
            if best.is_none_or(|(b, _)| y < b) {
                best = Some((y, *n_run));
            }
        }
        if let Some((_, n_best)) = best {
            points.push((x.exp(), n_best));
        }
    }
    let mut distinct: Vec<f64> = points.iter().map(|p| p.1).collect();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    if distinct.len() < 2 {
        return Err(FitError::data("the lower envelope of the curves is one run only; add runs of other sizes"));
    }
    frontier_from(points)
}

/// Extrapolation check of a frontier: refit the power law without the points at the highest
/// budgets (the largest one for approach 2's IsoFLOP minima; the top tenth of the budgets when
/// there are many, as approach 1's envelope has) and compare its N_opt prediction there with the
/// N_opt the held-out points found. None when fewer than 2 budgets would remain.
pub fn frontier_extrapolation(f: &Frontier) -> Option<crate::output::Extrapolation> {
    let mut budgets: Vec<f64> = f.points.iter().map(|p| p.0).collect();
    budgets.sort_by(f64::total_cmp);
    budgets.dedup();
    let k = (budgets.len() / 10).max(1);
    if budgets.len() < k + 2 {
        return None;
    }
    let cut = budgets[budgets.len() - k];
    type Points = Vec<(f64, f64)>;
    let (held, train): (Points, Points) = f.points.iter().partition(|p| p.0 >= cut);
    let refit = frontier_from(train.clone()).ok()?;
    let points: Vec<crate::output::HeldOutPoint> = held
        .iter()
        .map(|&(c, n)| crate::output::HeldOutPoint {
            inputs: [("C".to_string(), c)].into_iter().collect(),
            observed: n,
            predicted: refit.optimal(c).0,
            predicted_ci: None,
        })
        .collect();
    let rel: Vec<f64> = points.iter().map(|p| ((p.predicted - p.observed) / p.observed).abs()).collect();
    Some(crate::output::Extrapolation {
        held_out: format!("C >= {cut:.4e} (highest compute; N_opt predicted by the refit frontier)"),
        n_train: train.len(),
        n_held_out: held.len(),
        params: [("a", refit.a), ("b", refit.b), ("k_N", refit.k_n), ("k_D", refit.k_d)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        mean_abs_rel_error: rel.iter().sum::<f64>() / rel.len() as f64,
        max_abs_rel_error: rel.iter().copied().fold(0.0, f64::max),
        points,
    })
}
