//! Optimal configurations computed from fitted laws: compute-optimal N and D, the D-CPT usages,
//! the critical mixture ratio, the optimal vocabulary, the best exponent/mantissa split and the
//! critical data size. Each function takes parameter values, so the bootstrap can rerun it.

use crate::counting::FlopsPerToken;
use crate::law::Law;

/// Chinchilla's G = (alpha A / (beta B))^(1/(alpha+beta)); theta = [E, A, B, alpha, beta].
pub fn chinchilla_g(theta: &[f64]) -> f64 {
    let (a, b, alpha, beta) = (theta[1], theta[2], theta[3], theta[4]);
    (alpha * a / (beta * b)).powf(1.0 / (alpha + beta))
}

/// Compute-optimal (N, D) under C = 6ND for Chinchilla parameters (Hoffmann et al. eq. 4).
pub fn chinchilla_optimal(theta: &[f64], budget: f64) -> (f64, f64) {
    let (alpha, beta) = (theta[3], theta[4]);
    let g = chinchilla_g(theta);
    let n = g * (budget / 6.0).powf(beta / (alpha + beta));
    let d = (budget / 6.0).powf(alpha / (alpha + beta)) / g;
    (n, d)
}

/// Minimises `f` over `[lo, hi]`: a scan of `n` points, then golden-section search around the
/// best. Returns (argmin, min).
pub fn minimise_1d(f: impl Fn(f64) -> f64, lo: f64, hi: f64, n: usize) -> (f64, f64) {
    let step = (hi - lo) / (n - 1) as f64;
    let (mut best_i, mut best) = (0, f64::INFINITY);
    for i in 0..n {
        let v = f(lo + step * i as f64);
        if v < best {
            best = v;
            best_i = i;
        }
    }
    let (mut a, mut b) = (lo + step * best_i.saturating_sub(1) as f64, (lo + step * (best_i + 1) as f64).min(hi));
    let phi = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..80 {
        let c = b - phi * (b - a);
        let d = a + phi * (b - a);
        if f(c) < f(d) {
            b = d;
        } else {
            a = c;
        }
    }
    let x = 0.5 * (a + b);
    let fx = f(x);
    if fx <= best {
        (x, fx)
    } else {
        (lo + step * best_i as f64, best)
    }
}

/// Minimises a law's prediction over log N with D = C / (6N); `x_of(N, D)` builds the inputs.
pub fn compute_optimal(
    law: &dyn Law,
    theta: &[f64],
    budget: f64,
    x_of: &dyn Fn(f64, f64) -> Vec<f64>,
) -> (f64, f64, f64) {
    compute_optimal_with(law, theta, budget, &FlopsPerToken::SIX_N, x_of)
}

/// Minimises a law's prediction over log N with D = C / flops_per_token(N) (the law's counting
/// convention); `x_of(N, D)` builds the inputs. Returns (N, D, loss).
pub fn compute_optimal_with(
    law: &dyn Law,
    theta: &[f64],
    budget: f64,
    flops: &FlopsPerToken,
    x_of: &dyn Fn(f64, f64) -> Vec<f64>,
) -> (f64, f64, f64) {
    // N from 10 parameters up to the size that leaves 10 tokens.
    let n_max = (budget / (10.0 * flops.k)).powf(1.0 / flops.p);
    let (ln_n, loss) = minimise_1d(
        |ln_n| {
            let n = ln_n.exp();
            let y = law.predict(theta, &x_of(n, flops.tokens(budget, n)));
            if y.is_finite() {
                y
            } else {
                f64::INFINITY
            }
        },
        10f64.ln(),
        n_max.ln().max(10f64.ln() + 1.0),
        400,
    );
    let n = ln_n.exp();
    (n, flops.tokens(budget, n), loss)
}

/// D-CPT usage 1: the mixture ratio r in [0, 1] that minimises the domain loss while the general
/// loss stays within (1 + T) of its value at r = 0. Returns (r, domain loss, general loss), or
/// None when no ratio is feasible. Resolution 1e-3 in r, then bisection on the constraint.
pub fn dcpt_best_ratio(
    general: &dyn Law,
    g_theta: &[f64],
    domain: &dyn Law,
    d_theta: &[f64],
    n: f64,
    d_of_r: &dyn Fn(f64) -> f64,
    tolerance: f64,
) -> Option<(f64, f64, f64)> {
    let lg = |r: f64| general.predict(g_theta, &[n, d_of_r(r), r]);
    let ld = |r: f64| domain.predict(d_theta, &[n, d_of_r(r), r]);
    let feasible = |r: f64| lg(r) <= (1.0 + tolerance) * general.predict(g_theta, &[n, d_of_r(r), 0.0]);
    let steps = 1000;
    let mut best: Option<(f64, f64)> = None;
    for i in 1..=steps {
        let r = i as f64 / steps as f64;
        if feasible(r) {
            let v = ld(r);
            if v.is_finite() && best.is_none_or(|(_, b)| v < b) {
                best = Some((r, v));
            }
        }
    }
    let (mut r, _) = best?;
    // Refine at the boundary of the feasible set when the best ratio sits on it.
    let next = (r + 1.0 / steps as f64).min(1.0);
    if next > r && !feasible(next) && ld(next) < ld(r) {
        r = last_feasible(r, next, &feasible);
    }
    Some((r, ld(r), lg(r)))
}

/// Critical mixture ratio: the largest r in [0, 1] whose general loss stays within (1 + T) of
/// the general loss at r = 0 (same N and D). Resolution 1e-3, then bisection.
pub fn critical_mixture_ratio(general: &dyn Law, g_theta: &[f64], n: f64, d: f64, tolerance: f64) -> f64 {
    let base = general.predict(g_theta, &[n, d, 0.0]);
    let feasible = |r: f64| general.predict(g_theta, &[n, d, r]) <= (1.0 + tolerance) * base;
    let steps = 1000;
    let mut last = 0.0;
    for i in 1..=steps {
        let r = i as f64 / steps as f64;
        if feasible(r) {
            last = r;
        } else {
            break;
        }
    }
    if last < 1.0 {
        last = last_feasible(last, (last + 1.0 / steps as f64).min(1.0), &feasible);
    }
    last
}

/// Bisection between a feasible `a` and an infeasible `b`: the last feasible point (50 halvings).
fn last_feasible(mut a: f64, mut b: f64, feasible: &dyn Fn(f64) -> bool) -> f64 {
    for _ in 0..50 {
        let m = 0.5 * (a + b);
        if feasible(m) {
            a = m;
        } else {
            b = m;
        }
    }
    a
}

/// Optimal vocabulary for the vocabulary law (inputs N_nv, N_v, D): minimises the predicted
/// loss over V in [256, 2^20] (a byte-level vocabulary holds at least the 256 bytes) with
/// N_v = V d and D = C / (6 (N_nv + N_v)). Returns (V, D, loss).
pub fn vocab_optimal(law: &dyn Law, theta: &[f64], n_nv: f64, embed_dim: f64, budget: f64) -> (f64, f64, f64) {
    let tokens = |v: f64| budget / (6.0 * (n_nv + v * embed_dim));
    let (ln_v, loss) = minimise_1d(
        |ln_v| {
            let v = ln_v.exp();
            law.predict(theta, &[n_nv, v * embed_dim, tokens(v)])
        },
        256f64.ln(),
        ((1u64 << 20) as f64).ln(),
        400,
    );
    let v = ln_v.exp();
    (v, tokens(v), loss)
}

/// Continuous optimal mantissa bits for P total bits (Sun et al. 2025): M = nu P / (delta + nu) - 0.5.
pub fn optimal_mantissa_continuous(delta: f64, nu: f64, bits: f64) -> f64 {
    nu * bits / (delta + nu) - 0.5
}

/// Best whole-number split of P bits into 1 sign, E >= 1 exponent and M >= 0 mantissa bits:
/// the one maximising (E + 0.5)^delta (M + 0.5)^nu. Returns (E, M).
pub fn optimal_split(delta: f64, nu: f64, bits: u32) -> (u32, u32) {
    (0..=bits.saturating_sub(2))
        .map(|m| (bits - 1 - m, m))
        .filter(|(e, _)| *e >= 1)
        .max_by(|a, b| {
            let score = |(e, m): (u32, u32)| delta * (e as f64 + 0.5).ln() + nu * (m as f64 + 0.5).ln();
            score(*a).total_cmp(&score(*b))
        })
        .unwrap_or((bits.saturating_sub(1), 0))
}

/// Critical data size of the fp_quant law beyond which more data raises the loss:
/// [d gamma N^alpha (E+0.5)^delta (M+0.5)^nu / log2 B]^(1/(2 beta)).
/// theta = [n, alpha, d, beta, eps, gamma, delta, nu].
pub fn critical_data_size(theta: &[f64], n: f64, exp_bits: f64, man_bits: f64, block_size: f64) -> f64 {
    let (alpha, d, beta, gamma, delta, nu) = (theta[1], theta[2], theta[3], theta[5], theta[6], theta[7]);
    let inner =
        d * gamma * n.powf(alpha) * (exp_bits + 0.5).powf(delta) * (man_bits + 0.5).powf(nu) / block_size.log2();
    inner.powf(1.0 / (2.0 * beta))
}
