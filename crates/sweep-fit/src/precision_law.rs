//! Kumar et al. 2024, "Scaling Laws for Precision" (arXiv 2411.04330), for training in low
//! precision: the model behaves as if it had the effective parameter count
//! N_eff = N (1 - e^(-P_w/gamma_w)) (1 - e^(-P_a/gamma_a)) (1 - e^(-P_kv/gamma_kv)),
//! so L = E + A / N_eff^alpha + B / D^beta, with P_w, P_a, P_kv the bits weights, activations
//! and attention K/V are trained in (results-table columns `P_w`, `P_a`, `P_kv`).
//!
//! Its optimal-precision answer ([`optimal_precision`]): with every part in the same precision P
//! and the paper's cost model C = (6/16) N D P (6ND at 16 bits), the loss at the compute-optimal
//! N and D for a given P depends on P only through f(P)/P, f(P) = prod_x (1 - e^(-P/gamma_x)):
//! the best P maximises f(P)/P whatever the budget (the paper's "compute-optimal precision is
//! independent of compute"); N and D then follow Chinchilla's rule for the effective count.
//! With the model size held fixed ([`optimal_precision_fixed_n`]) D = 16 C / (6 N P), and the
//! best P grows with the budget.

use crate::error::FitError;
use crate::law::{FormulaLaw, Law, ParamSpec, Space, Transform};
use crate::optimal::minimise_1d;

/// The built-in law's name.
pub const NAME: &str = "kumar_precision";

/// Parameter order of the law: E, A, alpha, B, beta, gamma_w, gamma_a, gamma_kv.
pub const PARAMS: [&str; 8] = ["E", "A", "alpha", "B", "beta", "gamma_w", "gamma_a", "gamma_kv"];

/// The precisions P searched for the optimum, in bits.
const P_RANGE: (f64, f64) = (1.0, 32.0);

/// The law as a fit of `loss` on N, D, P_w, P_a, P_kv.
pub fn law() -> Result<Box<dyn Law>, FitError> {
    let pos = Transform::Lower(0.0);
    Ok(Box::new(
        FormulaLaw::new(
            NAME,
            "E + A / (N * (1 - exp(-P_w / gamma_w)) * (1 - exp(-P_a / gamma_a)) * (1 - exp(-P_kv / gamma_kv)))^alpha + B / D^beta",
            &["N", "D", "P_w", "P_a", "P_kv"],
            "loss",
            vec![
                ParamSpec::new("E", pos, &[0.5, 2.0]),
                ParamSpec::new("A", pos, &[10.0, 1000.0]),
                ParamSpec::new("alpha", pos, &[0.2, 0.5]),
                ParamSpec::new("B", pos, &[10.0, 1000.0]),
                ParamSpec::new("beta", pos, &[0.2, 0.5]),
                ParamSpec::new("gamma_w", pos, &[1.0, 4.0]),
                ParamSpec::new("gamma_a", pos, &[1.0, 4.0]),
                ParamSpec::new("gamma_kv", pos, &[1.0, 4.0]),
            ],
            Space::Log,
        )?
        .with_positive_variables(),
    ))
}

/// f(P) = prod_x (1 - e^(-P/gamma_x)), the fraction of N that counts at precision P everywhere.
/// theta in [`PARAMS`] order.
pub fn effective_fraction(theta: &[f64], p: f64) -> f64 {
    theta[5..8].iter().map(|g| 1.0 - (-p / g).exp()).product()
}

/// The loss at N, D and precision P everywhere.
pub fn loss(theta: &[f64], n: f64, d: f64, p: f64) -> f64 {
    let (e, a, alpha, b, beta) = (theta[0], theta[1], theta[2], theta[3], theta[4]);
    e + a / (n * effective_fraction(theta, p)).powf(alpha) + b / d.powf(beta)
}

/// The compute-optimal (N, D) at precision P under C = (6/16) N D P: Chinchilla's rule for
/// A' = A f(P)^-alpha at N D = 16 C / (6 P).
pub fn optimal_n_d(theta: &[f64], budget: f64, p: f64) -> (f64, f64) {
    let (a, alpha, b, beta) = (theta[1], theta[2], theta[3], theta[4]);
    let a_eff = a * effective_fraction(theta, p).powf(-alpha);
    let nd = 16.0 * budget / (6.0 * p);
    let g = (alpha * a_eff / (beta * b)).powf(1.0 / (alpha + beta));
    let n = g * nd.powf(beta / (alpha + beta));
    (n, nd / n)
}

/// The compute-optimal precision with N, D and P chosen jointly under C = (6/16) N D P:
/// returns (P_opt, N_opt, D_opt, loss). P_opt maximises f(P)/P and does not depend on C.
pub fn optimal_precision(theta: &[f64], budget: f64) -> (f64, f64, f64, f64) {
    let (p, _) = minimise_1d(|p| -(effective_fraction(theta, p) / p).ln(), P_RANGE.0, P_RANGE.1, 311);
    let (n, d) = optimal_n_d(theta, budget, p);
    (p, n, d, loss(theta, n, d, p))
}

/// The best precision for a model of fixed size N under C = (6/16) N D P (D = 16 C / (6 N P)):
/// returns (P_opt, D, loss).
pub fn optimal_precision_fixed_n(theta: &[f64], budget: f64, n: f64) -> (f64, f64, f64) {
    let d_of = |p: f64| 16.0 * budget / (6.0 * n * p);
    let (p, l) = minimise_1d(|p| loss(theta, n, d_of(p), p), P_RANGE.0, P_RANGE.1, 311);
    (p, d_of(p), l)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parameters of the shape Kumar et al. report (gamma_x of a few bits; alpha and beta near
    /// Chinchilla's): a test case, not the paper's fit.
    const THETA: [f64; 8] = [1.69, 406.4, 0.34, 410.7, 0.28, 2.5, 2.2, 1.5];

    #[test]
    fn the_formula_law_and_the_closed_forms_agree() {
        let law = law().unwrap();
        for (n, d, p) in [(1e8, 2e9, 8.0), (3e7, 1e9, 4.0), (1e9, 2e10, 16.0)] {
            let got = law.predict(&THETA, &[n, d, p, p, p]);
            assert!((got - loss(&THETA, n, d, p)).abs() < 1e-12 * got, "N {n} D {d} P {p}");
        }
        assert_eq!(law.variables(), ["N", "D", "P_w", "P_a", "P_kv"]);
    }

    #[test]
    fn optimal_precision_matches_a_brute_force_search() {
        // Brute force over a log grid of N (D from the budget) and a fine grid of P: the optimum
        // agrees with the closed form, for two budgets 100x apart (the same P: independent of C).
        for budget in [1e19, 1e21] {
            let (p_opt, n_opt, d_opt, l_opt) = optimal_precision(&THETA, budget);
            let mut best = (f64::INFINITY, 0.0, 0.0);
            for pi in 0..=3100 {
                let p = 1.0 + pi as f64 * 0.01;
                for ni in 0..=400 {
                    let n = 10f64.powf(6.0 + ni as f64 * 0.015);
                    let d = 16.0 * budget / (6.0 * n * p);
                    let l = loss(&THETA, n, d, p);
                    if l < best.0 {
                        best = (l, p, n);
                    }
                }
            }
            assert!((best.1 - p_opt).abs() <= 0.02, "C {budget:e}: brute force P {} vs {p_opt}", best.1);
            assert!((best.2 / n_opt).ln().abs() <= 0.02, "C {budget:e}: brute force N {:e} vs {n_opt:e}", best.2);
            assert!(l_opt <= best.0 + 1e-9 && best.0 - l_opt < 1e-6, "loss {l_opt} vs brute force {}", best.0);
            assert!((16.0 * budget / (6.0 * n_opt * p_opt) / d_opt - 1.0).abs() < 1e-9, "budget spent");
        }
        // Fixed N: brute force over P alone; a larger budget wants more bits.
        let n = 1e8;
        let (p_small, _, _) = optimal_precision_fixed_n(&THETA, 1e18, n);
        let (p_large, d_large, l_large) = optimal_precision_fixed_n(&THETA, 1e22, n);
        let brute = (0..=3100)
            .map(|i| 1.0 + i as f64 * 0.01)
            .map(|p| (loss(&THETA, n, 16.0 * 1e22 / (6.0 * n * p), p), p))
            .fold((f64::INFINITY, 0.0), |a, b| if b.0 < a.0 { b } else { a });
        assert!((brute.1 - p_large).abs() <= 0.02, "fixed N: brute force P {} vs {p_large}", brute.1);
        assert!((loss(&THETA, n, d_large, p_large) - l_large).abs() < 1e-12);
        assert!(p_large > p_small + 1.0, "fixed N: P {p_small} at 1e18, {p_large} at 1e22");
    }
}
