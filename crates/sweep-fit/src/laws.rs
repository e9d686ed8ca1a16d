//! The built-in laws, with the literature's parameter names and start grids.

use crate::error::FitError;
use crate::law::{FormulaLaw, Law, ParamSpec, Space, Transform};

/// Names of the built-in laws: parametric ones, plus the two Chinchilla approaches and the
/// critical mixture ratio, which are fitted apart (see [`FITTED_APART`]).
pub const BUILTIN_LAWS: &[&str] = &[
    "chinchilla",
    "chinchilla_approach1",
    "chinchilla_approach2",
    "kaplan",
    "dcpt_general",
    "dcpt_domain",
    "cmr",
    "vocab",
    "data_constrained",
    "fp_quant",
    "quant_degradation",
    "kumar_precision",
];

/// Built-in laws that are not one formula fitted by Huber + L-BFGS: Chinchilla's approaches 1
/// and 2 (frontiers) and the critical mixture ratio (derived from runs, then fitted per size).
pub const FITTED_APART: &[&str] = &["chinchilla_approach1", "chinchilla_approach2", "cmr"];

/// Chinchilla approach 3 (Hoffmann et al. 2022): L = E + A/N^alpha + B/D^beta, fitted with the
/// log-sum-exp parametrisation (E = exp(e), A = exp(a), B = exp(b)) on log residuals.
#[derive(Debug, Clone)]
pub struct Chinchilla {
    params: Vec<ParamSpec>,
}

impl Default for Chinchilla {
    fn default() -> Self {
        let exp_grid = |v: &[f64]| v.iter().map(|x| x.exp()).collect::<Vec<_>>();
        let pos = Transform::Lower(0.0);
        Chinchilla {
            params: vec![
                ParamSpec::new("E", pos, &exp_grid(&[-1.0, -0.5, 0.0, 0.5, 1.0])),
                ParamSpec::new("A", pos, &exp_grid(&[0.0, 5.0, 10.0, 15.0, 20.0, 25.0])),
                ParamSpec::new("B", pos, &exp_grid(&[0.0, 5.0, 10.0, 15.0, 20.0, 25.0])),
                ParamSpec::new("alpha", Transform::Free, &[0.0, 0.5, 1.0, 1.5, 2.0]),
                ParamSpec::new("beta", Transform::Free, &[0.0, 0.5, 1.0, 1.5, 2.0]),
            ],
        }
    }
}

impl Law for Chinchilla {
    fn name(&self) -> &str {
        "chinchilla"
    }
    fn formula(&self) -> String {
        "loss = E + A / N^alpha + B / D^beta".into()
    }
    fn variables(&self) -> Vec<String> {
        vec!["N".into(), "D".into()]
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
    fn prepare(&self, x: &[f64]) -> Vec<f64> {
        vec![x[0].ln(), x[1].ln()]
    }
    #[inline]
    fn eval_grad(&self, theta: &[f64], x: &[f64], grad: &mut [f64]) -> f64 {
        let (e, a, b, alpha, beta) = (theta[0], theta[1], theta[2], theta[3], theta[4]);
        let p = (-alpha * x[0]).exp();
        let q = (-beta * x[1]).exp();
        let (ap, bq) = (a * p, b * q);
        let s = e + ap + bq;
        let inv = 1.0 / s;
        grad[0] = inv;
        grad[1] = p * inv;
        grad[2] = q * inv;
        grad[3] = -ap * x[0] * inv;
        grad[4] = -bq * x[1] * inv;
        s.ln()
    }
    fn check_inputs(&self, x: &[f64]) -> Result<(), String> {
        positive(&["N", "D"], x)
    }
}

fn positive(names: &[&str], x: &[f64]) -> Result<(), String> {
    for (n, v) in names.iter().zip(x) {
        if !(v.is_finite() && *v > 0.0) {
            return Err(format!("{n} = {v} must be positive and finite"));
        }
    }
    Ok(())
}

fn pos() -> Transform {
    Transform::Lower(0.0)
}

/// Builds a built-in parametric law by name (not the two Chinchilla approaches, which are not
/// parametric fits of one formula).
pub fn builtin_law(name: &str) -> Result<Box<dyn Law>, FitError> {
    let law: Box<dyn Law> = match name {
        "chinchilla" => Box::new(Chinchilla::default()),
        // Kaplan et al. 2020, eq. 1.5.
        "kaplan" => Box::new(
            FormulaLaw::new(
                "kaplan",
                "((N_c / N)^(alpha_N / alpha_D) + D_c / D)^alpha_D",
                &["N", "D"],
                "loss",
                vec![
                    ParamSpec::new("N_c", pos(), &[1e10, 1e13, 1e16]),
                    ParamSpec::new("D_c", pos(), &[1e10, 1e13, 1e16]),
                    ParamSpec::new("alpha_N", pos(), &[0.03, 0.1, 0.3]),
                    ParamSpec::new("alpha_D", pos(), &[0.03, 0.1, 0.3]),
                ],
                Space::Log,
            )?
            .with_positive_variables(),
        ),
        "dcpt_domain" | "dcpt_general" => {
            // Que et al. 2024 (arXiv 2406.01375), Figure 1: the general-corpus loss L_g is a law in
            // r_g, the general corpus's share of the training data, and the domain loss L_d in
            // r_d, the domain's share. Our r is the domain share, so the general law uses 1 - r.
            let (share, response) = if name == "dcpt_domain" { ("r", "loss_domain") } else { ("(1 - r)", "loss_general") };
            let formula = format!("E + A / N^alpha + B * {share}^eta / D^beta + C / ({share} + epsilon)^gamma");
            Box::new(FormulaLaw::new(
                name,
                &formula,
                &["N", "D", "r"],
                response,
                vec![
                    ParamSpec::new("E", pos(), &[0.5, 2.0]),
                    ParamSpec::new("A", pos(), &[10.0, 1000.0]),
                    ParamSpec::new("alpha", pos(), &[0.2, 0.5]),
                    ParamSpec::new("B", pos(), &[10.0, 1000.0]),
                    ParamSpec::new("eta", Transform::Free, &[0.1, 0.5]),
                    ParamSpec::new("beta", pos(), &[0.2, 0.5]),
                    ParamSpec::new("C", pos(), &[0.1, 1.0]),
                    ParamSpec::new("epsilon", pos(), &[0.01, 0.1]),
                    ParamSpec::new("gamma", pos(), &[0.1, 0.5]),
                ],
                Space::Log,
            )?)
        }
        "data_constrained" => Box::new(crate::data_constrained::DataConstrained::default()),
        "cmr" | "chinchilla_approach1" | "chinchilla_approach2" => {
            return Err(FitError::config(
                "law",
                format!("{name} is not a single formula: it is fitted apart (see crate::run)"),
            ))
        }
        // Tao et al. 2024: unigram-normalised loss (column loss_u), alpha1 = beta imposed, units
        // N/1e6 and D/1e9.
        "vocab" => Box::new(
            FormulaLaw::new(
                "vocab",
                "-E + A1 / (N_nv / 1e6)^beta + A2 / (N_v / 1e6)^alpha2 + B / (D / 1e9)^beta",
                &["N_nv", "N_v", "D"],
                "loss_u",
                vec![
                    ParamSpec::new("E", pos(), &[1.0, 2f64.exp()]),
                    ParamSpec::new("A1", pos(), &[1.0, 2.5f64.exp(), 5f64.exp()]),
                    ParamSpec::new("A2", pos(), &[1.0, 2.5f64.exp(), 5f64.exp()]),
                    ParamSpec::new("B", pos(), &[1.0, 2.5f64.exp(), 5f64.exp()]),
                    ParamSpec::new("alpha2", Transform::Free, &[0.0, 0.5, 1.0]),
                    ParamSpec::new("beta", Transform::Free, &[0.0, 0.5, 1.0]),
                ],
                Space::Raw,
            )?
            .with_positive_variables(),
        ),
        // Sun et al. 2025: floating-point quantised training.
        "fp_quant" => Box::new(FormulaLaw::new(
            "fp_quant",
            "n / N^alpha + d / D^beta + eps + D^beta / N^alpha * log2(block_size) / (gamma * (exp_bits + 0.5)^delta * (man_bits + 0.5)^nu)",
            &["N", "D", "exp_bits", "man_bits", "block_size"],
            "loss",
            vec![
                ParamSpec::new("n", pos(), &[10.0, 100.0]),
                ParamSpec::new("alpha", pos(), &[0.2, 0.4]),
                ParamSpec::new("d", pos(), &[1e3, 1e5]),
                ParamSpec::new("beta", pos(), &[0.3, 0.6]),
                ParamSpec::new("eps", pos(), &[1.0, 2.0]),
                ParamSpec::new("gamma", pos(), &[1e3, 1e5]),
                ParamSpec::new("delta", pos(), &[1.0, 3.0]),
                ParamSpec::new("nu", pos(), &[1.0, 3.0]),
            ],
            Space::Log,
        )?),
        // Ouyang et al. 2024: quantisation-induced degradation of a trained model.
        "quant_degradation" => Box::new(
            FormulaLaw::new(
                "quant_degradation",
                "k * D^beta / (N^alpha * bits^gamma)",
                &["N", "D", "bits"],
                "delta_loss",
                vec![
                    ParamSpec::new("k", pos(), &[1e-3, 1.0, 1e3]),
                    ParamSpec::new("alpha", Transform::Free, &[0.1, 0.5]),
                    ParamSpec::new("beta", Transform::Free, &[0.1, 0.5]),
                    ParamSpec::new("gamma", Transform::Free, &[1.0, 5.0]),
                ],
                Space::Log,
            )?
            .with_positive_variables(),
        ),
        // Kumar et al. 2024: effective parameters under training precision.
        crate::precision_law::NAME => crate::precision_law::law()?,
        other => return Err(FitError::config("law", unknown_law(other))),
    };
    Ok(law)
}

/// `unknown law "x"` with the nearest built-in law, or the list of them when none is near.
pub fn unknown_law(name: &str) -> String {
    match sweep_io::config::nearest(name, BUILTIN_LAWS.iter().copied()) {
        Some(law) => format!("unknown law {name:?} (did you mean {law:?}?)"),
        None => format!("unknown law {name:?}; the built-in laws are {}", BUILTIN_LAWS.join(", ")),
    }
}
