//! Chinchilla approaches 1 (lower envelope of training curves) and 2 (parabolas on IsoFLOP
//! profiles): both end in power laws N_opt = k_N C^a and D_opt = k_D C^b. Approach 2 groups the
//! runs by the budget each was placed on (the results table's `C_budget`), not by a C recomputed
//! from tokens rounded to whole steps, which differs between the sizes of one budget.

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
    /// The (C, N_opt, D_opt) points the power laws went through.
    pub points: Vec<(f64, f64, f64)>,
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

/// Power laws N_opt = k_N C^a and D_opt = k_D C^b through (C, N_opt, D_opt) points.
pub fn frontier_from(points: Vec<(f64, f64, f64)>) -> Result<Frontier, FitError> {
    let distinct_c = {
        let mut c: Vec<f64> = points.iter().map(|p| p.0).collect();
        c.sort_by(f64::total_cmp);
        c.dedup();
        c.len()
    };
    if distinct_c < 2 {
        return Err(FitError::data(format!(
            "the optimal frontier has {distinct_c} budget(s), fewer than 2; add runs at more compute budgets"
        )));
    }
    let lc: Vec<f64> = points.iter().map(|p| p.0.ln()).collect();
    let ln: Vec<f64> = points.iter().map(|p| p.1.ln()).collect();
    let ld: Vec<f64> = points.iter().map(|p| p.2.ln()).collect();
    let (cn, a, ssr, r2) = linear_fit(&lc, &ln);
    let (cd, b, _, _) = linear_fit(&lc, &ld);
    Ok(Frontier { a, b, k_n: cn.exp(), k_d: cd.exp(), points, ssr, r2 })
}

/// The minimum of one IsoFLOP profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileMinimum {
    /// The budget the profile's points were placed on (its grouping value).
    pub budget: f64,
    /// Compute at the minimum in the law's count: ln C fitted as a parabola in ln N over the
    /// profile, at ln N_opt (equal to the budget when C is the count the budgets were placed in,
    /// up to the rounding of tokens to whole steps).
    pub c: f64,
    /// N at the minimum of the parabola of loss in ln N.
    pub n_opt: f64,
    /// D at that N: ln D fitted as a parabola in ln N over the profile, at ln N_opt.
    pub d_opt: f64,
    /// The parabola's loss at its minimum.
    pub loss: f64,
    /// Runs on the profile.
    pub runs: usize,
}

/// Approach 2's profiles: rows with the same `budget` (relative difference below 1e-6) form one
/// IsoFLOP profile; rows whose budget is not finite belong to none. Sorted by budget.
pub fn isoflop_profiles(budget: &[f64]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..budget.len()).filter(|&i| budget[i].is_finite()).collect();
    order.sort_by(|&i, &j| budget[i].total_cmp(&budget[j]));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in order {
        match groups.last_mut() {
            Some(g) if (budget[g[0]] - budget[i]).abs() <= 1e-6 * budget[i].abs() => g.push(i),
            _ => groups.push(vec![i]),
        }
    }
    groups
}

/// The minimum of one IsoFLOP profile (rows `rows` of columns N, D, C, loss, all positive): a
/// least-squares parabola of the loss in ln N, which needs at least 3 distinct N, must open
/// upwards and have its minimum inside the profile's range of N. Err says why not.
pub fn profile_minimum(
    budget: f64,
    rows: &[usize],
    n: &[f64],
    d: &[f64],
    c: &[f64],
    loss: &[f64],
) -> Result<ProfileMinimum, String> {
    let x: Vec<f64> = rows.iter().map(|&i| n[i].ln()).collect();
    let y: Vec<f64> = rows.iter().map(|&i| loss[i]).collect();
    let mut distinct = x.clone();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    if distinct.len() < 3 {
        return Err(format!(
            "profile C = {budget:.4e}: {} distinct model size(s), a parabola needs 3; place more sizes on it",
            distinct.len()
        ));
    }
    let [q0, q1, q2] = poly2_fit(&x, &y).ok_or_else(|| format!("profile C = {budget:.4e}: the parabola fit failed"))?;
    if q2 <= 0.0 {
        return Err(format!(
            "profile C = {budget:.4e}: the loss is not convex in ln N (the parabola opens downwards); the sizes may be too far from the optimum or too noisy"
        ));
    }
    let mx = x.iter().sum::<f64>() / x.len() as f64;
    let u_min = -q1 / (2.0 * q2);
    let x_min = mx + u_min;
    let (lo, hi) = (distinct[0], distinct[distinct.len() - 1]);
    if x_min < lo || x_min > hi {
        return Err(format!(
            "profile C = {budget:.4e}: the minimum (N = {:.4e}) lies outside its sizes ({:.4e} to {:.4e}); add {} models to this budget",
            x_min.exp(),
            lo.exp(),
            hi.exp(),
            if x_min < lo { "smaller" } else { "larger" }
        ));
    }
    let at_min = |col: &[f64]| -> Option<f64> {
        let ly: Vec<f64> = rows.iter().map(|&i| col[i].ln()).collect();
        let [a0, a1, a2] = poly2_fit(&x, &ly)?;
        Some((a0 + a1 * u_min + a2 * u_min * u_min).exp())
    };
    let (c_opt, d_opt) = match (at_min(c), at_min(d)) {
        (Some(c), Some(d)) => (c, d),
        _ => return Err(format!("profile C = {budget:.4e}: C or D could not be interpolated at the minimum")),
    };
    Ok(ProfileMinimum {
        budget,
        c: c_opt,
        n_opt: x_min.exp(),
        d_opt,
        loss: q0 + q1 * u_min + q2 * u_min * u_min,
        runs: rows.len(),
    })
}

/// The minima of every IsoFLOP profile of columns (budget, N, D, C, loss), and why each profile
/// without one was skipped.
pub fn profile_minima(
    budget: &[f64],
    n: &[f64],
    d: &[f64],
    c: &[f64],
    loss: &[f64],
) -> (Vec<ProfileMinimum>, Vec<String>) {
    let mut minima = Vec::new();
    let mut skipped = Vec::new();
    for rows in isoflop_profiles(budget) {
        match profile_minimum(budget[rows[0]], &rows, n, d, c, loss) {
            Ok(m) => minima.push(m),
            Err(why) => skipped.push(why),
        }
    }
    (minima, skipped)
}

/// Approach 2: the frontier through the minima of IsoFLOP profiles.
pub fn approach2(minima: &[ProfileMinimum]) -> Result<Frontier, FitError> {
    frontier_from(minima.iter().map(|m| (m.c, m.n_opt, m.d_opt)).collect())
}

/// The least-squares parabola y = q0 + q1 u + q2 u^2 in u = x - centre, centre = mean(x), with
/// its centre (what approach 2 fits to each IsoFLOP profile; the report draws the same); None
/// when singular.
pub fn parabola(x: &[f64], y: &[f64]) -> Option<(f64, [f64; 3])> {
    let mx = x.iter().sum::<f64>() / x.len() as f64;
    poly2_fit(x, y).map(|q| (mx, q))
}

/// Least-squares parabola y = q0 + q1 u + q2 u^2 in u = x - mean(x); None when singular.
fn poly2_fit(x: &[f64], y: &[f64]) -> Option<[f64; 3]> {
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
    solve3(m, t)
}

/// Minimum of the least-squares parabola through (x, y), or None if it opens downwards.
pub fn parabola_minimum(x: &[f64], y: &[f64]) -> Option<f64> {
    let mx = x.iter().sum::<f64>() / x.len() as f64;
    let coef = poly2_fit(x, y)?;
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

/// Approach 1: learning curves (run, N, C, D, loss), one row per logged evaluation. At 100
/// log-spaced budgets across the curves' range, each run's loss (and tokens) is interpolated
/// linearly in ln C; the run with the lowest loss gives N_opt(C) and D_opt(C) (the lower
/// envelope), unless it is the smallest or largest model whose curve reaches that budget (the
/// optimum may then lie beyond the sizes trained, and the budget gives no point).
pub fn approach1(run: &[f64], n: &[f64], c: &[f64], d: &[f64], loss: &[f64]) -> Result<Frontier, FitError> {
    let mut runs: std::collections::BTreeMap<u64, Vec<usize>> = Default::default();
    for (i, r) in run.iter().enumerate() {
        runs.entry(r.to_bits()).or_default().push(i);
    }
    type Curve = (f64, Vec<(f64, f64, f64)>);
    let curves: Vec<Curve> = runs
        .values()
        .map(|rows| {
            let mut pts: Vec<(f64, f64, f64)> = rows.iter().map(|&i| (c[i].ln(), loss[i], d[i].ln())).collect();
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
        let mut best: Option<(f64, f64, f64)> = None;
        let (mut n_lo, mut n_hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for (n_run, pts) in &curves {
            if pts.len() < 2 || x < pts[0].0 || x > pts[pts.len() - 1].0 {
                continue;
            }
            n_lo = n_lo.min(*n_run);
            n_hi = n_hi.max(*n_run);
            let j = pts.partition_point(|p| p.0 < x).clamp(1, pts.len() - 1);
            let (x0, y0, d0) = pts[j - 1];
            let (x1, y1, d1) = pts[j];
            let w = if x1 > x0 { (x - x0) / (x1 - x0) } else { 0.0 };
            let y = y0 + (y1 - y0) * w;
            if best.is_none_or(|(b, _, _)| y < b) {
                best = Some((y, *n_run, (d0 + (d1 - d0) * w).exp()));
            }
        }
        // A lowest curve of the smallest or largest model that reaches this budget says only that
        // the optimum is at or beyond the sizes trained: no frontier point.
        if let Some((_, n_best, d_best)) = best {
            if n_best > n_lo && n_best < n_hi {
                points.push((x.exp(), n_best, d_best));
            }
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
    type Points = Vec<(f64, f64, f64)>;
    let (held, train): (Points, Points) = f.points.iter().partition(|p| p.0 >= cut);
    let refit = frontier_from(train.clone()).ok()?;
    let points: Vec<crate::output::HeldOutPoint> = held
        .iter()
        .map(|&(c, n, _)| crate::output::HeldOutPoint {
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
