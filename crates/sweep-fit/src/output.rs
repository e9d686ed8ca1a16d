//! laws.json: the fitted laws, their intervals, extrapolation checks and optimal configurations;
//! plus the terminal table and the atomic writer.

use crate::error::FitError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Version of the laws.json format written by this crate (2: counting conventions, per-law
/// errors, bootstrap success counts, the points left out).
pub const SCHEMA_VERSION: u32 = 2;

/// The whole laws.json document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LawsFile {
    /// Format version (2; version 1 files still read).
    pub schema_version: u32,
    /// One entry per configured law, in the order of the config, each fitted or with its error
    /// (the critical mixture ratio law: one entry per model size).
    pub laws: Vec<LawEntry>,
    /// Points of the sweep that are not in the fit (failed, still running, not run), and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<LeftOut>,
}

impl LawsFile {
    /// The laws that could not be fitted, with their errors.
    pub fn failed(&self) -> Vec<(&str, &str)> {
        self.laws.iter().filter_map(|l| l.error.as_deref().map(|e| (l.name.as_str(), e))).collect()
    }
}

/// A point of the sweep that the fit left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeftOut {
    /// Point id.
    pub point: String,
    /// Model label.
    pub label: String,
    /// `failed`, `running` or `pending`.
    pub state: String,
    /// Why (the failure's reason, or what the state means).
    pub reason: String,
}

/// A number, or NaN for null (serde_json writes a NaN as null: an optimum that does not exist,
/// a ratio of zeros).
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// A point estimate and its bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Estimate {
    /// Value from the fit to all points (null in the file when not a number).
    #[serde(deserialize_with = "nan_if_null")]
    pub estimate: f64,
    /// Bootstrap percentile interval `[low, high]` at `fit.bootstrap.level`; null without bootstrap.
    pub ci: Option<[f64; 2]>,
}

/// One fitted law.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LawEntry {
    /// Law name (`chinchilla`, `vocab`, a user law's name ...).
    pub name: String,
    /// `parametric` (a formula fitted by Huber + L-BFGS), `approach1` or `approach2` (Chinchilla).
    pub kind: String,
    /// The formula in readable form.
    pub formula: String,
    /// Why the law could not be fitted (null when it was); the other fields are then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The subset of rows this entry fitted, when a law is fitted per group (the critical
    /// mixture ratio law, per model size: `{ "N": 1e8 }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<BTreeMap<String, f64>>,
    /// The counting conventions (what N counts, how C is counted; null for a law without N or C).
    #[serde(default)]
    pub counting: Option<crate::counting::Counting>,
    /// Each variable (and the response) → the table column it was read from.
    pub variables: BTreeMap<String, String>,
    /// Fitted parameters by literature name.
    pub params: BTreeMap<String, Estimate>,
    /// Quantities computed from the parameters (exponents of the optimal frontier ...).
    pub derived: BTreeMap<String, Estimate>,
    /// How the fit went (null when the law could not be fitted).
    pub fit: Option<FitSummary>,
    /// Refit without the largest model (or highest compute) and the error predicting it.
    pub extrapolation: Option<Extrapolation>,
    /// Optimal configurations computed from the law.
    pub optimal: Vec<Optimal>,
    /// Where the data came from.
    pub data: DataProvenance,
    /// What the reader should know: rows left out for lacking a column, IsoFLOP profiles
    /// skipped, conventions assumed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Rows derived from the runs before the fit (the critical mixture ratio per model size and
    /// token budget; approach 2's minimum per IsoFLOP profile), column → value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub derived_points: Vec<BTreeMap<String, f64>>,
    /// The compute-optimal frontier across the data's budgets up to the largest asked for, with
    /// bootstrap bands (Chinchilla and its approaches 1 and 2; empty for other laws).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frontier: Vec<FrontierPoint>,
}

impl LawEntry {
    /// An entry for a law that could not be fitted.
    pub fn failed(name: &str, kind: &str, formula: String, error: String, source: &str) -> LawEntry {
        LawEntry {
            name: name.to_string(),
            kind: kind.to_string(),
            formula,
            error: Some(error),
            group: None,
            counting: None,
            variables: BTreeMap::new(),
            params: BTreeMap::new(),
            derived: BTreeMap::new(),
            fit: None,
            extrapolation: None,
            optimal: Vec::new(),
            data: DataProvenance { source: source.to_string(), n_rows: 0, columns: Vec::new() },
            notes: Vec::new(),
            derived_points: Vec::new(),
            frontier: Vec::new(),
        }
    }
}

/// Compute-optimal N and D at one budget, with intervals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontierPoint {
    /// The budget (FLOPs, in the law's compute convention).
    #[serde(rename = "C")]
    pub c: f64,
    /// Compute-optimal parameters.
    #[serde(rename = "N_opt")]
    pub n_opt: Estimate,
    /// Compute-optimal training tokens.
    #[serde(rename = "D_opt")]
    pub d_opt: Estimate,
}

/// How the fit went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitSummary {
    /// `huber_log` (Huber on log residuals), `huber_raw`, or `least_squares_loglog` (approaches 1, 2).
    pub objective: String,
    /// Objective at the optimum (summed, not averaged).
    #[serde(deserialize_with = "nan_if_null")]
    pub objective_value: f64,
    /// Points fitted.
    pub n_points: usize,
    /// Huber threshold (null for least squares).
    pub huber_delta: Option<f64>,
    /// Starts tried.
    pub starts: usize,
    /// Starts whose L-BFGS met its gradient or cost tolerance.
    pub starts_converged: usize,
    /// Starts stopped because the line search found no lower point.
    pub starts_stalled: usize,
    /// Starts stopped by the iteration limit.
    pub starts_max_iters: usize,
    /// Starts that failed (non-finite objective, outside bounds).
    pub starts_failed: usize,
    /// Starts ending within 1e-6 (relative) of the best objective.
    pub starts_at_best: usize,
    /// True when the best start stopped on a tolerance or a stalled line search (not the limit).
    pub converged: bool,
    /// Norm of the objective's gradient at the optimum, in the optimiser's coordinates (log A,
    /// log E ... for bounded parameters); null for least-squares frontiers.
    #[serde(default)]
    pub grad_norm: Option<f64>,
    /// L-BFGS iterations of the best start.
    pub iterations: u64,
    /// Coefficient of determination of the predictions, in the response's units.
    #[serde(deserialize_with = "nan_if_null")]
    pub r2: f64,
    /// Root-mean-square error of the predictions, in the response's units.
    #[serde(deserialize_with = "nan_if_null")]
    pub rmse: f64,
    /// Bootstrap settings and outcome (null when off).
    pub bootstrap: Option<BootstrapSummary>,
}

impl FitSummary {
    /// The record of a least-squares fit solved in one step (no starts to try, no iterations to
    /// converge): approaches 1 and 2, and CMR's eq. 8. `ssr` is the residual sum of squares over
    /// `n_points`.
    pub fn closed_form(
        objective: &str,
        ssr: f64,
        n_points: usize,
        r2: f64,
        bootstrap: Option<BootstrapSummary>,
    ) -> FitSummary {
        FitSummary {
            objective: objective.into(),
            objective_value: ssr,
            n_points,
            huber_delta: None,
            starts: 1,
            starts_converged: 1,
            starts_stalled: 0,
            starts_max_iters: 0,
            starts_failed: 0,
            starts_at_best: 1,
            converged: true,
            grad_norm: None,
            iterations: 1,
            r2,
            rmse: (ssr / n_points as f64).sqrt(),
            bootstrap,
        }
    }
}

/// Bootstrap settings and outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapSummary {
    /// Resamples drawn.
    pub resamples: usize,
    /// Seed of the resampling (ChaCha8, stream = resample index).
    pub seed: u64,
    /// Interval level (0.95 gives the 2.5th-97.5th percentiles).
    pub level: f64,
    /// Resamples whose refit failed (left out of the intervals).
    pub failed: usize,
    /// Resamples whose refit succeeded.
    #[serde(default)]
    pub succeeded: usize,
    /// What a resample draws: `points` (rows with replacement), `profiles` (whole IsoFLOP
    /// profiles), `runs` (whole learning curves), `parametric` (every run's losses perturbed by
    /// the fits' residual noise).
    #[serde(default)]
    pub unit: String,
    /// Why the intervals are withheld (null when they are given): fewer than
    /// `fit.bootstrap.min_success` of the resamples could be refitted.
    #[serde(default)]
    pub intervals_withheld: Option<String>,
}

/// Refit without the largest scale, and the error of its prediction for what was left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extrapolation {
    /// What was held out, e.g. `N = 1.6e10 (largest model)`.
    pub held_out: String,
    /// Points in the refit.
    pub n_train: usize,
    /// Points held out.
    pub n_held_out: usize,
    /// Parameters of the refit.
    pub params: BTreeMap<String, f64>,
    /// Mean of |predicted - observed| / |observed| over the held-out points.
    #[serde(deserialize_with = "nan_if_null")]
    pub mean_abs_rel_error: f64,
    /// Largest |predicted - observed| / |observed|.
    #[serde(deserialize_with = "nan_if_null")]
    pub max_abs_rel_error: f64,
    /// Each held-out point: inputs, observed and predicted response.
    pub points: Vec<HeldOutPoint>,
}

/// One held-out point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldOutPoint {
    /// Variable → value.
    pub inputs: BTreeMap<String, f64>,
    /// Observed response.
    #[serde(deserialize_with = "nan_if_null")]
    pub observed: f64,
    /// Response predicted by the refit.
    #[serde(deserialize_with = "nan_if_null")]
    pub predicted: f64,
    /// Bootstrap interval of the prediction (the refit bootstrapped like the full fit); null
    /// without bootstrap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_ci: Option<[f64; 2]>,
}

/// One optimal configuration (a question asked of the law, and its answer with intervals).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Optimal {
    /// What is optimised, e.g. `compute_optimal`, `dcpt_max_domain_under_general_tolerance`.
    pub kind: String,
    /// The question's givens (budget C, N, T ...).
    pub inputs: BTreeMap<String, f64>,
    /// The answer (N_opt, D_opt, loss ...) with intervals.
    pub values: BTreeMap<String, Estimate>,
}

/// Where the points came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataProvenance {
    /// Sweep directory, CSV path, or other description given with the table.
    pub source: String,
    /// Rows in the table.
    pub n_rows: usize,
    /// Columns read.
    pub columns: Vec<String>,
}

/// Writes laws.json atomically (sweep-io: a temporary file beside it, fsync, rename).
pub fn write_laws_json(path: &Path, laws: &LawsFile) -> Result<(), FitError> {
    let mut text = serde_json::to_string_pretty(laws)?;
    text.push('\n');
    sweep_io::atomic::write(path, text.as_bytes()).map_err(|source| FitError::Io { path: path.to_path_buf(), source })
}

/// Reads a laws.json written by [`write_laws_json`] (this version or version 1); refuses a
/// newer version.
pub fn read_laws_json(path: &Path) -> Result<LawsFile, FitError> {
    let text = std::fs::read_to_string(path).map_err(|source| FitError::Io { path: path.to_path_buf(), source })?;
    #[derive(Deserialize)]
    struct Version {
        schema_version: u32,
    }
    let v: Version = serde_json::from_str(&text)?;
    if v.schema_version > SCHEMA_VERSION {
        return Err(FitError::data(format!(
            "{}: schema_version {} is newer than this sweep reads ({SCHEMA_VERSION}); update sweep",
            path.display(),
            v.schema_version
        )));
    }
    Ok(serde_json::from_str(&text)?)
}

fn num(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.4e}")
    } else {
        format!("{v:.5}")
    }
}

fn est(e: &Estimate) -> String {
    match e.ci {
        Some([lo, hi]) => format!("{:>12}  [{}, {}]", num(e.estimate), num(lo), num(hi)),
        None => format!("{:>12}", num(e.estimate)),
    }
}

/// A readable table of every law for the terminal.
pub fn render_text(laws: &LawsFile) -> String {
    let mut out = String::new();
    for law in &laws.laws {
        let group = law
            .group
            .as_ref()
            .map(|g| {
                format!(" [{}]", g.iter().map(|(k, v)| format!("{k} = {}", num(*v))).collect::<Vec<_>>().join(", "))
            })
            .unwrap_or_default();
        out += &format!("== {}{group} ({}) ==\n   {}\n", law.name, law.kind, law.formula);
        if let Some(c) = &law.counting {
            let cols: Vec<String> = c.columns.iter().map(|(v, col)| format!("{v} <- {col}")).collect();
            out += &format!(
                "   counting: parameters {}, compute {} ({}{})\n",
                c.parameters,
                c.compute,
                cols.join(", "),
                if c.assumed { "; assumed: the table has no column for the convention" } else { "" }
            );
        }
        for note in &law.notes {
            out += &format!("   note: {note}\n");
        }
        let Some(f) = &law.fit else {
            out += &format!("   NOT FITTED: {}\n\n", law.error.as_deref().unwrap_or("no fit"));
            continue;
        };
        out += &format!(
            "   {} points, objective {} = {}, R^2 = {:.4}, RMSE = {}\n",
            f.n_points,
            f.objective,
            num(f.objective_value),
            f.r2,
            num(f.rmse)
        );
        if f.starts > 1 {
            out += &format!(
                "   starts: {} ({} converged, {} stalled, {} hit the iteration limit, {} failed, {} at the best optimum); best {}\n",
                f.starts,
                f.starts_converged,
                f.starts_stalled,
                f.starts_max_iters,
                f.starts_failed,
                f.starts_at_best,
                if f.converged { "converged" } else { "did NOT converge" }
            );
        }
        if let Some(g) = f.grad_norm {
            out += &format!("   final gradient norm {}\n", num(g));
        }
        if let Some(b) = &f.bootstrap {
            out += &format!(
                "   intervals: {:.0}% bootstrap percentiles, {} resamples of {} (seed {}, {} failed)\n",
                b.level * 100.0,
                b.resamples,
                b.unit,
                b.seed,
                b.failed
            );
            if let Some(why) = &b.intervals_withheld {
                out += &format!("   intervals WITHHELD: {why}\n");
            }
        }
        out += "   parameter       estimate  interval\n";
        for (name, e) in law.params.iter().chain(&law.derived) {
            out += &format!("   {name:<10} {}\n", est(e));
        }
        if let Some(x) = &law.extrapolation {
            out += &format!(
                "   extrapolation: without {}: mean |rel. error| {:.2}%, max {:.2}% over {} points\n",
                x.held_out,
                x.mean_abs_rel_error * 100.0,
                x.max_abs_rel_error * 100.0,
                x.n_held_out
            );
        }
        for o in &law.optimal {
            let inputs: Vec<String> = o.inputs.iter().map(|(k, v)| format!("{k}={}", num(*v))).collect();
            out += &format!("   optimal {} ({})\n", o.kind, inputs.join(", "));
            for (k, e) in &o.values {
                out += &format!("      {k:<16} {}\n", est(e));
            }
        }
        out += "\n";
    }
    if !laws.left_out.is_empty() {
        out += &format!("{} point(s) of the sweep are not in these fits:\n", laws.left_out.len());
        for p in &laws.left_out {
            out += &format!("   {} ({}): {}: {}\n", p.point, p.label, p.state, p.reason);
        }
    }
    out
}
