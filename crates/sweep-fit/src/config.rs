//! The `[fit]` section of a sweep's TOML: which laws, how to read them from the table, fitting
//! and bootstrap settings, and the questions asked of the fitted laws. Read with serde through
//! `sweep_io::config`, so its errors read like those of every other section.

use crate::counting::CountingConfig;
use crate::error::FitError;
use crate::law::Space;
use crate::laws::{unknown_law, BUILTIN_LAWS};
use serde::Deserialize;
use std::collections::BTreeMap;
use sweep_io::config::{KeyError, Section};

/// The `[fit]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitConfig {
    /// Laws to fit, in order.
    pub laws: Vec<LawConfig>,
    /// Huber threshold for every law (1e-3 by default).
    #[serde(default = "default_huber_delta")]
    pub huber_delta: f64,
    /// L-BFGS iteration limit per start.
    #[serde(default = "default_max_iters")]
    pub max_iters: u64,
    /// Bootstrap settings (`resamples = 0` turns intervals off).
    #[serde(default)]
    pub bootstrap: BootstrapConfig,
    /// Refit without the largest model (or highest compute) and report the prediction error.
    #[serde(default = "yes")]
    pub extrapolation: bool,
    /// Questions asked of the fitted laws.
    #[serde(default)]
    pub optimal: OptimalConfig,
}

/// One law to fit: a built-in by name, or a user formula.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LawConfig {
    /// Built-in law name, or the name of a user law when `formula` is given.
    pub name: String,
    /// Variable (or response) → table column, for columns named differently.
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    /// Huber threshold for this law only.
    pub huber_delta: Option<f64>,
    /// User law: the formula of the response in the variables and parameters.
    pub formula: Option<String>,
    /// User law: variable names (columns of the table unless mapped).
    pub variables: Option<Vec<String>>,
    /// User law: the response column (default `loss`).
    pub response: Option<String>,
    /// User law: `log` (Huber on log residuals, default) or `raw`.
    pub residuals: Option<Space>,
    /// User law: parameters with bounds and start values.
    pub params: Option<BTreeMap<String, ParamConfig>>,
    /// Counting conventions: what N counts and how C is counted (the law's paper's when absent).
    pub counting: Option<CountingConfig>,
}

/// A user law's parameter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamConfig {
    /// `[low, high]`; use `inf`/`-inf` for an open end. Absent means unbounded.
    pub bounds: Option<[f64; 2]>,
    /// Start values; the start grid is the product over parameters.
    pub grid: Vec<f64>,
}

/// Bootstrap settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapConfig {
    /// Number of resamples (0 turns intervals off).
    #[serde(default = "default_resamples")]
    pub resamples: usize,
    /// Seed of the resampling.
    #[serde(default)]
    pub seed: u64,
    /// Interval level, e.g. 0.95 for 2.5th-97.5th percentiles.
    #[serde(default = "default_level")]
    pub level: f64,
    /// How many of the full fit's distinct optima each resample starts from.
    #[serde(default = "default_bootstrap_starts")]
    pub starts: usize,
    /// Intervals are withheld (with the reason) when fewer than this fraction of the resamples
    /// can be refitted.
    #[serde(default = "default_min_success")]
    pub min_success: f64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig {
            resamples: default_resamples(),
            seed: 0,
            level: default_level(),
            starts: default_bootstrap_starts(),
            min_success: default_min_success(),
        }
    }
}

/// Questions asked of the fitted laws.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimalConfig {
    /// Training FLOP budgets for compute-optimal N and D (chinchilla, approaches 1 and 2, D-CPT
    /// at fixed ratio), in each law's compute count (6ND over all parameters for Chinchilla).
    #[serde(default)]
    pub budgets: Vec<f64>,
    /// D-CPT: the general loss may rise by at most this fraction over its value at r = 0.
    #[serde(default = "default_tolerance")]
    pub dcpt_tolerance: f64,
    /// D-CPT usage 1 and the critical mixture ratio: model sizes and token counts.
    #[serde(default)]
    pub dcpt: Vec<ModelTokens>,
    /// D-CPT usage 2: model size and fixed domain tokens (D = D_domain / r).
    #[serde(default)]
    pub dcpt_domain_tokens: Vec<ModelDomainTokens>,
    /// D-CPT usage 3: mixture ratios held fixed while N and D share each budget.
    #[serde(default)]
    pub dcpt_ratios: Vec<f64>,
    /// Vocabulary law: non-vocabulary parameters, embedding width and FLOP budget.
    #[serde(default)]
    pub vocab: Vec<VocabQuery>,
    /// fp_quant: total bits, model size, block size for the best exponent/mantissa split and
    /// the critical data size.
    #[serde(default)]
    pub precision: Vec<PrecisionQuery>,
    /// kumar_precision: training budgets (and optionally a fixed model size) for the
    /// compute-optimal training precision.
    #[serde(default)]
    pub training_precision: Vec<TrainingPrecisionQuery>,
    /// Critical mixture ratio: the tolerance eps on the general loss's rise (absolute, nats;
    /// 0.05 as Gu et al.).
    #[serde(default = "default_tolerance")]
    pub cmr_epsilon: f64,
    /// Critical mixture ratio: token budgets at which to predict each model size's CMR.
    #[serde(default)]
    pub cmr_tokens: Vec<f64>,
    /// Data-constrained law: compute budgets with a fixed number of unique tokens, for the
    /// optimal allocation (N, D, epochs).
    #[serde(default)]
    pub data_constrained: Vec<DataConstrainedQuery>,
}

/// A compute budget with a limited amount of unique data.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConstrainedQuery {
    /// Training FLOPs (in the law's compute count).
    pub budget: f64,
    /// Distinct tokens available.
    pub unique_tokens: f64,
}

impl Default for OptimalConfig {
    fn default() -> Self {
        OptimalConfig {
            budgets: Vec::new(),
            dcpt_tolerance: default_tolerance(),
            dcpt: Vec::new(),
            dcpt_domain_tokens: Vec::new(),
            dcpt_ratios: Vec::new(),
            vocab: Vec::new(),
            precision: Vec::new(),
            training_precision: Vec::new(),
            cmr_epsilon: default_tolerance(),
            cmr_tokens: Vec::new(),
            data_constrained: Vec::new(),
        }
    }
}

/// A model size and token count.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
pub struct ModelTokens {
    /// Model size, counted as the law counts N (all parameters for D-CPT unless `counting` says
    /// otherwise).
    pub N: f64,
    /// Training tokens.
    pub D: f64,
}

/// A model size and a fixed amount of domain tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
pub struct ModelDomainTokens {
    /// Model size, counted as the law counts N.
    pub N: f64,
    /// Domain tokens available.
    pub D_domain: f64,
}

/// Optimal vocabulary question.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
pub struct VocabQuery {
    /// Non-vocabulary parameters.
    pub N_nv: f64,
    /// Embedding width d (vocabulary parameters N_v = V d).
    pub embed_dim: f64,
    /// Training FLOPs, C = 6 (N_nv + N_v) D.
    pub budget: f64,
}

/// Precision question.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
pub struct PrecisionQuery {
    /// Total bits P = 1 (sign) + exponent + mantissa.
    pub bits: f64,
    /// Model size for the critical data size.
    pub N: f64,
    /// Block size of the scaling factor (2^13.16 for channel-wise).
    pub block_size: f64,
}

/// Training-precision question (Kumar et al. 2024): the best precision P under the cost
/// C = (6/16) N D P, with N and D chosen too, or with N fixed.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
pub struct TrainingPrecisionQuery {
    /// Training budget in FLOPs at 16 bits (C = 6ND at P = 16).
    pub C: f64,
    /// A fixed model size (non-embedding parameters); absent: N is optimised too.
    #[serde(default)]
    pub N: Option<f64>,
}

fn default_huber_delta() -> f64 {
    1e-3
}
fn default_max_iters() -> u64 {
    1000
}
fn yes() -> bool {
    true
}
fn default_resamples() -> usize {
    200
}
fn default_level() -> f64 {
    0.95
}
fn default_bootstrap_starts() -> usize {
    3
}
fn default_min_success() -> f64 {
    0.95
}
fn default_tolerance() -> f64 {
    0.05
}

impl Section for FitConfig {
    const KEY: &'static str = "fit";

    fn check(&self) -> Result<(), KeyError> {
        self.validate().map_err(|e| match e {
            FitError::Config { path, message } => KeyError::new(path, message),
            other => KeyError::new("fit", other.to_string()),
        })
    }
}

impl FitConfig {
    /// Reads the `[fit]` section (the table under `fit`, or a whole document with a `fit` key).
    /// Errors name the key path, e.g. `fit.laws[1].name: unknown law "chinchila" (did you mean "chinchilla"?)`.
    pub fn from_toml(value: toml::Value) -> Result<FitConfig, FitError> {
        let value = match value {
            toml::Value::Table(mut t) if t.contains_key("fit") && !t.contains_key("laws") => {
                t.remove("fit").expect("checked")
            }
            v => v,
        };
        sweep_io::config::read_section(value).map_err(|e: KeyError| FitError::config(e.key, e.message))
    }

    /// Parses `[fit]` TOML text.
    pub fn from_toml_str(text: &str) -> Result<FitConfig, FitError> {
        let value: toml::Value = toml::from_str(text).map_err(|e| FitError::config("fit", e.to_string()))?;
        FitConfig::from_toml(value)
    }

    /// The configuration of `sweep fit --csv FILE --law NAME --map VAR=COLUMN ...`.
    pub fn for_law(name: &str, maps: &[(String, String)]) -> Result<FitConfig, FitError> {
        let config = FitConfig {
            laws: vec![LawConfig {
                name: name.to_string(),
                map: maps.iter().cloned().collect(),
                huber_delta: None,
                formula: None,
                variables: None,
                response: None,
                residuals: None,
                params: None,
                counting: None,
            }],
            huber_delta: default_huber_delta(),
            max_iters: default_max_iters(),
            bootstrap: BootstrapConfig::default(),
            extrapolation: true,
            optimal: OptimalConfig::default(),
        };
        config.validate().map_err(|e| match e {
            FitError::Config { message, .. } => FitError::config("--law", message),
            other => other,
        })?;
        Ok(config)
    }

    /// Checks names, ranges and user formulas; called by the constructors.
    pub fn validate(&self) -> Result<(), FitError> {
        if self.laws.is_empty() {
            return Err(FitError::config("fit.laws", "no laws to fit; add e.g. [[fit.laws]] name = \"chinchilla\""));
        }
        check_positive("fit.huber_delta", self.huber_delta)?;
        if self.max_iters == 0 {
            return Err(FitError::config("fit.max_iters", "must be at least 1"));
        }
        if !(self.bootstrap.level > 0.0 && self.bootstrap.level < 1.0) {
            return Err(FitError::config(
                "fit.bootstrap.level",
                format!("{} is outside (0, 1); use e.g. 0.95", self.bootstrap.level),
            ));
        }
        if self.bootstrap.starts == 0 {
            return Err(FitError::config("fit.bootstrap.starts", "must be at least 1"));
        }
        if !(self.bootstrap.min_success > 0.0 && self.bootstrap.min_success <= 1.0) {
            return Err(FitError::config(
                "fit.bootstrap.min_success",
                format!("{} is outside (0, 1]; use e.g. 0.95", self.bootstrap.min_success),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, law) in self.laws.iter().enumerate() {
            let path = format!("fit.laws[{i}]");
            if !seen.insert(law.name.clone()) {
                return Err(FitError::config(
                    format!("{path}.name"),
                    format!("law {:?} is listed twice; list each law once", law.name),
                ));
            }
            if let Some(d) = law.huber_delta {
                check_positive(&format!("{path}.huber_delta"), d)?;
            }
            if law.counting.is_some() && law.name == "vocab" && law.formula.is_none() {
                return Err(FitError::config(
                    format!("{path}.counting"),
                    "the vocabulary law's counting is part of its form (N_nv, N_v = V d, C = 6 (N_nv + N_v) D); remove `counting`, or write a formula law",
                ));
            }
            if law.formula.is_some() {
                crate::run::build_law(law).map_err(|e| match e {
                    FitError::Config { path: p, message } => FitError::config(format!("{path}.{p}"), message),
                    FitError::Formula { formula, message } => {
                        FitError::config(format!("{path}.formula"), format!("`{formula}`: {message}"))
                    }
                    other => other,
                })?;
            } else {
                for key in ["variables", "response", "residuals", "params"] {
                    let given = match key {
                        "variables" => law.variables.is_some(),
                        "response" => law.response.is_some(),
                        "residuals" => law.residuals.is_some(),
                        _ => law.params.is_some(),
                    };
                    if given {
                        return Err(FitError::config(
                            format!("{path}.{key}"),
                            "only a formula law takes this key; add `formula = \"...\"` or remove it",
                        ));
                    }
                }
                if !BUILTIN_LAWS.contains(&law.name.as_str()) {
                    return Err(FitError::config(
                        format!("{path}.name"),
                        format!("{}; or give `formula` for a law of your own", unknown_law(&law.name)),
                    ));
                }
            }
            let (vars, response) = crate::run::law_columns(law)?;
            for key in law.map.keys() {
                if !vars.contains(key) && *key != response {
                    return Err(FitError::config(
                        format!("{path}.map.{key}"),
                        format!(
                            "law {} has no variable {key}; its variables are {} and its response is {response}",
                            law.name,
                            vars.join(", ")
                        ),
                    ));
                }
            }
        }
        let o = &self.optimal;
        for (i, b) in o.budgets.iter().enumerate() {
            check_positive(&format!("fit.optimal.budgets[{i}]"), *b)?;
        }
        check_positive("fit.optimal.dcpt_tolerance", o.dcpt_tolerance)?;
        for (i, r) in o.dcpt_ratios.iter().enumerate() {
            if !(*r > 0.0 && *r <= 1.0) {
                return Err(FitError::config(
                    format!("fit.optimal.dcpt_ratios[{i}]"),
                    format!("{r} is outside (0, 1]"),
                ));
            }
        }
        for (i, q) in o.dcpt.iter().enumerate() {
            check_positive(&format!("fit.optimal.dcpt[{i}].N"), q.N)?;
            check_positive(&format!("fit.optimal.dcpt[{i}].D"), q.D)?;
        }
        for (i, q) in o.dcpt_domain_tokens.iter().enumerate() {
            check_positive(&format!("fit.optimal.dcpt_domain_tokens[{i}].N"), q.N)?;
            check_positive(&format!("fit.optimal.dcpt_domain_tokens[{i}].D_domain"), q.D_domain)?;
        }
        for (i, q) in o.vocab.iter().enumerate() {
            check_positive(&format!("fit.optimal.vocab[{i}].N_nv"), q.N_nv)?;
            check_positive(&format!("fit.optimal.vocab[{i}].embed_dim"), q.embed_dim)?;
            check_positive(&format!("fit.optimal.vocab[{i}].budget"), q.budget)?;
        }
        for (i, q) in o.training_precision.iter().enumerate() {
            check_positive(&format!("fit.optimal.training_precision[{i}].C"), q.C)?;
            if let Some(n) = q.N {
                check_positive(&format!("fit.optimal.training_precision[{i}].N"), n)?;
            }
        }
        if !(o.cmr_epsilon.is_finite() && o.cmr_epsilon >= 0.0) {
            return Err(FitError::config("fit.optimal.cmr_epsilon", format!("{} must be >= 0", o.cmr_epsilon)));
        }
        for (i, t) in o.cmr_tokens.iter().enumerate() {
            check_positive(&format!("fit.optimal.cmr_tokens[{i}]"), *t)?;
        }
        for (i, q) in o.data_constrained.iter().enumerate() {
            check_positive(&format!("fit.optimal.data_constrained[{i}].budget"), q.budget)?;
            check_positive(&format!("fit.optimal.data_constrained[{i}].unique_tokens"), q.unique_tokens)?;
        }
        for (i, q) in o.precision.iter().enumerate() {
            if !(q.bits >= 3.0 && q.bits.fract() == 0.0) {
                return Err(FitError::config(
                    format!("fit.optimal.precision[{i}].bits"),
                    format!("{} must be a whole number of bits, at least 3 (sign, exponent, mantissa)", q.bits),
                ));
            }
            check_positive(&format!("fit.optimal.precision[{i}].N"), q.N)?;
            if !(q.block_size > 1.0 && q.block_size.is_finite()) {
                return Err(FitError::config(
                    format!("fit.optimal.precision[{i}].block_size"),
                    format!("{} must be above 1", q.block_size),
                ));
            }
        }
        Ok(())
    }
}

fn check_positive(path: &str, v: f64) -> Result<(), FitError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(FitError::config(path, format!("{v} must be positive and finite")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        FitConfig::from_toml_str(text).unwrap_err().to_string()
    }

    #[test]
    fn misspelt_keys_get_the_nearest_key() {
        let law = "[[laws]]\nname = \"chinchilla\"\n";
        for (text, key, fix) in [
            (format!("{law}huber_delt = 1e-3"), "fit.laws[0].huber_delt", "huber_delta"),
            (format!("max_iter = 10\n{law}"), "fit.max_iter", "max_iters"),
            (format!("{law}[bootstrap]\nresample = 10"), "fit.bootstrap.resample", "resamples"),
            (format!("{law}[optimal]\nbudget = [1e20]"), "fit.optimal.budget", "budgets"),
            (format!("{law}[[optimal.dcpt]]\nN = 1e8\nd = 1e9"), "fit.optimal.dcpt[0].d", "D"),
            (format!("extrapolaton = false\n{law}"), "fit.extrapolaton", "extrapolation"),
            (
                "[[laws]]\nname = \"u\"\nformula = \"E\"\nvariables = [\"N\"]\nparams = { E = { grdi = [1] } }".into(),
                "fit.laws[0].params.E.grdi",
                "grid",
            ),
        ] {
            let e = error(&text);
            assert!(e.starts_with(&format!("{key}: unknown key (allowed here: ")), "{text}: {e}");
            assert!(e.contains(&format!("did you mean \"{fix}\"")), "{text}: {e}");
        }
        let e = error("[[laws]]\nname = \"chinchilla\"\nresiduals = \"lgo\"");
        assert!(e.starts_with("fit.laws[0].residuals: unknown value \"lgo\" (did you mean \"log\"?)"), "{e}");
    }

    #[test]
    fn unknown_laws_get_the_nearest_law_or_the_list() {
        let e = error("[[laws]]\nname = \"kaplna\"");
        assert!(e.starts_with("fit.laws[0].name: unknown law \"kaplna\" (did you mean \"kaplan\"?)"), "{e}");
        let e = error("[[laws]]\nname = \"zipf\"");
        assert!(e.contains("the built-in laws are chinchilla, "), "{e}");
    }
}
