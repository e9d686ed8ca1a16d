//! The data-constrained scaling law of Muennighoff et al. 2023 (arXiv 2305.16264; code:
//! huggingface/datablations): repeated tokens and parameters beyond what the unique data can
//! use are worth less and less.
//!
//! With U_D unique tokens read D / U_D times (R_D = D/U_D - 1 repetitions),
//! D' = U_D + U_D R_D* (1 - exp(-R_D / R_D*)); with U_N = min(N, N_opt(U_D)) and
//! R_N = N/U_N - 1, N' = U_N + U_N R_N* (1 - exp(-R_N / R_N*)), where N_opt(U_D) =
//! G (G U_D)^(beta/alpha), G = (alpha A / (beta B))^(1/(alpha+beta)), is the Chinchilla-optimal
//! size for U_D tokens; and L = E + A / N'^alpha + B / D'^beta. Fitted on log residuals like
//! Chinchilla, with the gradient in closed form (through N_opt's dependence on A, B, alpha, beta).

use crate::counting::FlopsPerToken;
use crate::law::{Law, ParamSpec, Space, Transform};
use crate::optimal::compute_optimal_with;

/// The built-in `data_constrained` law. Variables N, D, U (unique tokens); parameters E, A, B,
/// alpha, beta, R_D_star, R_N_star.
#[derive(Debug, Clone)]
pub struct DataConstrained {
    params: Vec<ParamSpec>,
}

impl Default for DataConstrained {
    fn default() -> Self {
        let pos = Transform::Lower(0.0);
        let exp_grid = |v: &[f64]| v.iter().map(|x| x.exp()).collect::<Vec<_>>();
        DataConstrained {
            params: vec![
                ParamSpec::new("E", pos, &[0.5, 2.0]),
                ParamSpec::new("A", pos, &exp_grid(&[2.0, 6.0, 10.0])),
                ParamSpec::new("B", pos, &exp_grid(&[2.0, 6.0, 10.0])),
                ParamSpec::new("alpha", pos, &[0.2, 0.5]),
                ParamSpec::new("beta", pos, &[0.2, 0.5]),
                ParamSpec::new("R_D_star", pos, &[5.0, 20.0]),
                ParamSpec::new("R_N_star", pos, &[2.0, 10.0]),
            ],
        }
    }
}

/// Effective parameters and data, with what the gradient needs.
struct Effective {
    n_eff: f64,
    d_eff: f64,
    /// dD'/dR_D*.
    dd_drd: f64,
    /// dN'/d(E, A, B, alpha, beta, R_D*, R_N*): only A, B, alpha, beta and R_N* are non-zero.
    dn: [f64; 7],
}

fn effective(theta: &[f64], n: f64, d: f64, unique: f64) -> Effective {
    let (a, b, alpha, beta, rd, rn) = (theta[1], theta[2], theta[3], theta[4], theta[5], theta[6]);
    let u_d = unique.min(d);
    let r_d = (d / u_d - 1.0).max(0.0);
    let xd = r_d / rd;
    let ed = (-xd).exp();
    let d_eff = u_d * (1.0 + rd * (1.0 - ed));
    let dd_drd = u_d * ((1.0 - ed) - xd * ed);
    // ln N_opt(U_D) = ln(alpha A / (beta B)) / alpha + (beta / alpha) ln U_D.
    let k = (alpha * a / (beta * b)).ln();
    let ln_u = u_d.ln();
    let ln_n_opt = k / alpha + beta / alpha * ln_u;
    let n_opt = ln_n_opt.exp();
    let mut dn = [0.0; 7];
    if n <= n_opt {
        return Effective { n_eff: n, d_eff, dd_drd, dn };
    }
    let r_n = n / n_opt - 1.0;
    let y = r_n / rn;
    let en = (-y).exp();
    let n_eff = n_opt * (1.0 + rn * (1.0 - en));
    let dn_dnopt = 1.0 + rn * (1.0 - en) - en * n / n_opt;
    // d ln N_opt / d(A, B, alpha, beta).
    let dl =
        [1.0 / (alpha * a), -1.0 / (alpha * b), (1.0 - k - beta * ln_u) / (alpha * alpha), (ln_u - 1.0 / beta) / alpha];
    for (j, g) in dl.iter().enumerate() {
        dn[1 + j] = dn_dnopt * n_opt * g;
    }
    dn[6] = n_opt * ((1.0 - en) - y * en);
    Effective { n_eff, d_eff, dd_drd, dn }
}

impl Law for DataConstrained {
    fn name(&self) -> &str {
        "data_constrained"
    }
    fn formula(&self) -> String {
        "loss = E + A / N'^alpha + B / D'^beta; D' = U_D (1 + R_D_star (1 - exp(-R_D / R_D_star))), R_D = D/U_D - 1; N' = U_N (1 + R_N_star (1 - exp(-R_N / R_N_star))), U_N = min(N, N_opt(U_D)), R_N = N/U_N - 1".into()
    }
    fn variables(&self) -> Vec<String> {
        vec!["N".into(), "D".into(), "U".into()]
    }
    fn response(&self) -> String {
        "loss".into()
    }
    fn params(&self) -> &[ParamSpec] {
        &self.params
    }
    fn space(&self) -> Space {
        Space::Log
    }
    fn eval_grad(&self, theta: &[f64], x: &[f64], grad: &mut [f64]) -> f64 {
        let (e, a, b, alpha, beta) = (theta[0], theta[1], theta[2], theta[3], theta[4]);
        let eff = effective(theta, x[0], x[1], x[2]);
        let n_term = eff.n_eff.powf(-alpha);
        let d_term = eff.d_eff.powf(-beta);
        let loss = e + a * n_term + b * d_term;
        // dL/dN' and dL/dD'.
        let dl_dn = -alpha * a * n_term / eff.n_eff;
        let dl_dd = -beta * b * d_term / eff.d_eff;
        grad[0] = 1.0;
        grad[1] = n_term;
        grad[2] = d_term;
        grad[3] = -a * n_term * eff.n_eff.ln();
        grad[4] = -b * d_term * eff.d_eff.ln();
        grad[5] = dl_dd * eff.dd_drd;
        grad[6] = 0.0;
        for (j, g) in grad.iter_mut().enumerate().take(7) {
            *g += dl_dn * eff.dn[j];
        }
        for g in grad.iter_mut().take(7) {
            *g /= loss;
        }
        loss.ln()
    }
    fn check_inputs(&self, x: &[f64]) -> Result<(), String> {
        for (name, v) in ["N", "D", "U"].iter().zip(x) {
            if !(v.is_finite() && *v > 0.0) {
                return Err(format!("{name} = {v} must be positive and finite"));
            }
        }
        Ok(())
    }
}

/// The data-constrained compute-optimal allocation: the N (and D = C / flops(N)) minimising the
/// predicted loss under budget C when only `unique` distinct tokens exist. Returns
/// (N, D, epochs D / U, loss).
pub fn optimal_allocation(theta: &[f64], budget: f64, unique: f64, flops: &FlopsPerToken) -> (f64, f64, f64, f64) {
    let law = DataConstrained::default();
    let (n, d, loss) = compute_optimal_with(&law, theta, budget, flops, &|n, d| vec![n, d, unique]);
    (n, d, d / unique, loss)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Muennighoff et al.'s fitted values (huggingface/datablations README, "Parametric Fit"):
    /// a, b, e = ln A, ln B, ln E; alpha; beta; R_D*; R_N*.
    fn published() -> [f64; 7] {
        let (a, b, e, alpha, beta, rd, rn) =
            (6.255414, 7.3049974, 0.6254804, 0.3526596, 0.3526596, 15.387756, 5.309743);
        [f64::exp(e), f64::exp(a), f64::exp(b), alpha, beta, rd, rn]
    }

    #[test]
    fn gradient_matches_finite_differences_on_both_sides_of_n_opt() {
        let law = DataConstrained::default();
        let theta = published();
        // U = 25e9 gives N_opt about 5.6e9: one point below it, two above, one without repetition.
        for x in [[1e9, 1e11, 25e9], [8.67e9, 178e9, 25e9], [3e10, 5e11, 1e10], [1e8, 1e9, 2e9]] {
            let mut g = [0.0; 7];
            let y = law.eval_grad(&theta, &x, &mut g);
            for j in 0..7 {
                let h = 1e-6 * theta[j].abs();
                let (mut up, mut down) = (theta, theta);
                up[j] += h;
                down[j] -= h;
                let mut scratch = [0.0; 7];
                let fd = (law.eval_grad(&up, &x, &mut scratch) - law.eval_grad(&down, &x, &mut scratch)) / (2.0 * h);
                let tol = 1e-6 * fd.abs().max(1e-9) + 1e-12;
                assert!((g[j] - fd).abs() < tol.max(1e-7 * y.abs()), "x {x:?} param {j}: {} vs {fd}", g[j]);
            }
        }
    }

    #[test]
    fn published_losses_of_figure_one_are_reproduced() {
        // The datablations README: scaling_law(6.34e9, 242e9, 25e9) = 2.2256440889984477 and
        // scaling_law(8.67e9, 178e9, 25e9) = 2.2269634075087867. To 1e-12 relative.
        let law = DataConstrained::default();
        let theta = published();
        for (x, want) in [([6.34e9, 242e9, 25e9], 2.2256440889984477), ([8.67e9, 178e9, 25e9], 2.2269634075087867)] {
            let got = law.predict(&theta, &x);
            assert!(((got - want) / want).abs() < 1e-12, "{x:?}: {got} vs {want}");
        }
    }

    #[test]
    fn optimal_allocation_matches_the_published_grid_search_and_a_brute_force() {
        // The README's grid search from (8.67e9 parameters, 178e9 tokens, 25e9 unique) at the same
        // compute C = 6 N D gives 227B tokens, 9.1 epochs, 6.8B parameters (rounded; its grid
        // steps N by about 0.4%). Within 1.5% each.
        let theta = published();
        let c = 6.0 * 8.67e9 * 178e9;
        let (n, d, epochs, loss) = optimal_allocation(&theta, c, 25e9, &FlopsPerToken::SIX_N);
        for (got, want) in [(n, 6.8e9), (d, 227e9), (epochs, 9.1)] {
            assert!(((got - want) / want).abs() < 0.015, "got {got:.4e}, published {want:.4e}");
        }
        // A brute-force scan of 20001 sizes (log-spaced from N/3 to 3N) finds no lower loss.
        let law = DataConstrained::default();
        let best = (0..=20000)
            .map(|i| 8.67e9 * f64::powf(9.0, i as f64 / 20000.0) / 3.0)
            .map(|m| law.predict(&theta, &[m, c / (6.0 * m), 25e9]))
            .fold(f64::INFINITY, f64::min);
        assert!(loss <= best + 1e-12, "optimiser {loss} vs brute force {best}");
    }
}
