//! Fitting every law of a config to a results table, with intervals, extrapolation checks and
//! optimal configurations: the pieces assembled into a [`LawsFile`]. Each law reads the columns
//! its counting convention names ([`crate::counting`]); a law that cannot be fitted becomes an
//! entry with its error, and the others are fitted regardless.

use crate::approaches::{self, Frontier};
use crate::bootstrap::{bootstrap_params, percentile_interval, resample_indices};
use crate::cmr;
use crate::config::{BootstrapConfig, FitConfig, LawConfig};
use crate::counting::{self, Convention, Counting, FlopsPerToken};
use crate::error::FitError;
use crate::fit::{fit_multistart, r_squared, Dataset, FitOptions};
use crate::law::{start_grid, FormulaLaw, Law, ParamSpec, Space, Transform};
use crate::laws::{builtin_law, BUILTIN_LAWS};
use crate::optimal;
use crate::output::*;
use crate::table::Table;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Builds the law a config entry names: a built-in, or a user formula law.
pub fn build_law(cfg: &LawConfig) -> Result<Box<dyn Law>, FitError> {
    let Some(formula) = &cfg.formula else {
        return builtin_law(&cfg.name).map_err(|e| match e {
            FitError::Config { message, .. } => FitError::config("name", message),
            other => other,
        });
    };
    if BUILTIN_LAWS.contains(&cfg.name.as_str()) {
        return Err(FitError::config(
            "name",
            format!("{:?} is a built-in law; give the formula law another name", cfg.name),
        ));
    }
    let vars = cfg
        .variables
        .as_ref()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| FitError::config("variables", "a formula law needs `variables = [\"N\", ...]`"))?;
    let params = cfg.params.as_ref().filter(|p| !p.is_empty()).ok_or_else(|| {
        FitError::config(
            "params",
            "a formula law needs parameters, e.g. params.E = { bounds = [0, inf], grid = [1, 2] }",
        )
    })?;
    let mut specs = Vec::new();
    for (name, p) in params {
        let [lo, hi] = p.bounds.unwrap_or([f64::NEG_INFINITY, f64::INFINITY]);
        if lo.is_nan() || hi.is_nan() || lo >= hi {
            return Err(FitError::config(
                format!("params.{name}.bounds"),
                format!("[{lo}, {hi}] is empty; give [low, high] with low < high"),
            ));
        }
        if p.grid.is_empty() {
            return Err(FitError::config(format!("params.{name}.grid"), "give at least one start value"));
        }
        for v in &p.grid {
            if !(v.is_finite() && *v > lo && *v < hi) {
                return Err(FitError::config(
                    format!("params.{name}.grid"),
                    format!("start value {v} is not strictly inside the bounds [{lo}, {hi}]"),
                ));
            }
        }
        specs.push(ParamSpec::new(name, Transform::from_bounds(lo, hi), &p.grid));
    }
    let var_refs: Vec<&str> = vars.iter().map(String::as_str).collect();
    let law = FormulaLaw::new(
        &cfg.name,
        formula,
        &var_refs,
        cfg.response.as_deref().unwrap_or("loss"),
        specs,
        cfg.residuals.unwrap_or(Space::Log),
    )?;
    Ok(Box::new(law))
}

/// The variables and response a config entry reads (before mapping to columns).
pub fn law_columns(cfg: &LawConfig) -> Result<(Vec<String>, String), FitError> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    match cfg.name.as_str() {
        "chinchilla_approach1" if cfg.formula.is_none() => Ok((s(&["run", "N", "C", "D"]), "loss".into())),
        "chinchilla_approach2" if cfg.formula.is_none() => Ok((s(&["N", "D", "C", "C_budget"]), "loss".into())),
        "cmr" if cfg.formula.is_none() => Ok((
            s(&["N", "D", "r", "loss_general", "loss_domain", "loss_general_base", "loss_domain_base"]),
            "r_crit".into(),
        )),
        _ => {
            let law = build_law(cfg).map_err(|e| match e {
                FitError::Config { path, message } => FitError::config(format!("fit.laws.{path}"), message),
                other => other,
            })?;
            Ok((law.variables(), law.response()))
        }
    }
}

/// A fitted parametric law kept for questions that need two laws (D-CPT).
struct Fitted {
    law: std::sync::Arc<dyn Law>,
    theta: Vec<f64>,
    boot: Vec<Option<Vec<f64>>>,
    n_rows: usize,
}

fn estimates(
    names: &[String],
    f: &(dyn Fn(&[f64]) -> Vec<f64> + Sync),
    theta: &[f64],
    boot: &[Option<Vec<f64>>],
    level: f64,
) -> BTreeMap<String, Estimate> {
    let main = f(theta);
    let samples: Vec<Vec<f64>> = boot.par_iter().flatten().map(|t| f(t)).collect();
    names
        .iter()
        .enumerate()
        .map(|(j, name)| {
            let ci = if samples.is_empty() {
                None
            } else {
                let col: Vec<f64> = samples.iter().map(|s| s[j]).collect();
                percentile_interval(&col, level)
            };
            (name.clone(), Estimate { estimate: main[j], ci })
        })
        .collect()
}

/// The bootstrap's outcome: the resamples to take intervals from (none when withheld) and the
/// summary laws.json records.
fn bootstrap_outcome(
    boot: Vec<Option<Vec<f64>>>,
    b: &crate::config::BootstrapConfig,
    unit: &str,
) -> (Vec<Option<Vec<f64>>>, Option<BootstrapSummary>) {
    if b.resamples == 0 {
        return (Vec::new(), None);
    }
    let succeeded = boot.iter().filter(|t| t.is_some()).count();
    let failed = boot.len() - succeeded;
    let needed = (b.min_success * b.resamples as f64).ceil() as usize;
    let withheld = (succeeded < needed).then(|| {
        format!(
            "only {succeeded} of {} resamples could be refitted ({failed} failed), fewer than fit.bootstrap.min_success = {} of them; the intervals would describe the resamples that happen to fit, not the data",
            b.resamples, b.min_success
        )
    });
    let summary = BootstrapSummary {
        resamples: b.resamples,
        seed: b.seed,
        level: b.level,
        failed,
        succeeded,
        unit: unit.to_string(),
        intervals_withheld: withheld.clone(),
    };
    (if withheld.is_some() { Vec::new() } else { boot }, Some(summary))
}

type Question = (String, BTreeMap<String, f64>, Vec<String>, Box<dyn Fn(&[f64]) -> Vec<f64> + Send + Sync>);

fn inputs(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Questions answerable from one law's parameters; `flops` is the law's FLOPs per token
/// against N (None when it could not be determined: compute-optimal questions are skipped).
fn single_law_questions(
    law_name: &str,
    law: &std::sync::Arc<dyn Law>,
    config: &FitConfig,
    flops: Option<FlopsPerToken>,
) -> Vec<Question> {
    let o = &config.optimal;
    let mut q: Vec<Question> = Vec::new();
    match (law_name, flops) {
        ("chinchilla", Some(flops)) => {
            for &c in &o.budgets {
                let law = law.clone();
                q.push((
                    "compute_optimal".into(),
                    inputs(&[("C", c)]),
                    names(&["N_opt", "D_opt", "loss", "tokens_per_param"]),
                    Box::new(move |t: &[f64]| {
                        let (n, d) = if flops == FlopsPerToken::SIX_N {
                            optimal::chinchilla_optimal(t, c)
                        } else {
                            let (n, d, _) =
                                optimal::compute_optimal_with(law.as_ref(), t, c, &flops, &|n, d| vec![n, d]);
                            (n, d)
                        };
                        vec![n, d, law.predict(t, &[n, d]), d / n]
                    }),
                ));
            }
        }
        ("dcpt_domain", Some(flops)) => {
            for &r in &o.dcpt_ratios {
                for &c in &o.budgets {
                    let law = law.clone();
                    q.push((
                        "dcpt_fixed_ratio_compute_optimal".into(),
                        inputs(&[("C", c), ("r", r)]),
                        names(&["N_opt", "D_opt", "loss_domain"]),
                        Box::new(move |t: &[f64]| {
                            let (n, d, l) =
                                optimal::compute_optimal_with(law.as_ref(), t, c, &flops, &|n, d| vec![n, d, r]);
                            vec![n, d, l]
                        }),
                    ));
                }
            }
        }
        ("data_constrained", Some(flops)) => {
            for dq in &o.data_constrained {
                let (c, u) = (dq.budget, dq.unique_tokens);
                let law = law.clone();
                q.push((
                    "data_constrained_optimal".into(),
                    inputs(&[("C", c), ("U", u)]),
                    names(&["N_opt", "D_opt", "epochs", "loss", "N_opt_unconstrained", "D_opt_unconstrained"]),
                    Box::new(move |t: &[f64]| {
                        let (n, d, epochs, loss) = crate::data_constrained::optimal_allocation(t, c, u, &flops);
                        // The allocation if every token could be new (U = D): Chinchilla's.
                        let (nu, du, _) =
                            optimal::compute_optimal_with(law.as_ref(), t, c, &flops, &|n, d| vec![n, d, d]);
                        vec![n, d, epochs, loss, nu, du]
                    }),
                ));
            }
        }
        ("vocab", _) => {
            for v in &o.vocab {
                let (law, v) = (law.clone(), *v);
                q.push((
                    "vocab_optimal".into(),
                    inputs(&[("N_nv", v.N_nv), ("embed_dim", v.embed_dim), ("C", v.budget)]),
                    names(&["V_opt", "N_v_opt", "D", "loss"]),
                    Box::new(move |t: &[f64]| {
                        let (vo, d, l) = optimal::vocab_optimal(law.as_ref(), t, v.N_nv, v.embed_dim, v.budget);
                        vec![vo, vo * v.embed_dim, d, l]
                    }),
                ));
            }
        }
        ("fp_quant", _) => {
            for p in &o.precision {
                let p = *p;
                q.push((
                    "precision_split".into(),
                    inputs(&[("bits", p.bits), ("N", p.N), ("block_size", p.block_size)]),
                    names(&["man_bits_continuous", "exp_bits", "man_bits", "D_crit"]),
                    Box::new(move |t: &[f64]| {
                        let (delta, nu) = (t[6], t[7]);
                        let (e, m) = optimal::optimal_split(delta, nu, p.bits as u32);
                        vec![
                            optimal::optimal_mantissa_continuous(delta, nu, p.bits),
                            e as f64,
                            m as f64,
                            optimal::critical_data_size(t, p.N, e as f64, m as f64, p.block_size),
                        ]
                    }),
                ));
            }
        }
        (crate::precision_law::NAME, _) => {
            for p in &o.training_precision {
                let (c, fixed_n) = (p.C, p.N);
                match fixed_n {
                    None => q.push((
                        "training_precision".into(),
                        inputs(&[("C", c)]),
                        names(&["P_opt", "N_opt", "D_opt", "loss"]),
                        Box::new(move |t: &[f64]| {
                            let (p, n, d, l) = crate::precision_law::optimal_precision(t, c);
                            vec![p, n, d, l]
                        }),
                    )),
                    Some(n) => q.push((
                        "training_precision_fixed_N".into(),
                        inputs(&[("C", c), ("N", n)]),
                        names(&["P_opt", "D", "loss"]),
                        Box::new(move |t: &[f64]| {
                            let (p, d, l) = crate::precision_law::optimal_precision_fixed_n(t, c, n);
                            vec![p, d, l]
                        }),
                    )),
                }
            }
        }
        _ => {}
    }
    q
}

/// Computes derived quantities from a law's parameters.
type DerivedFn = Box<dyn Fn(&[f64]) -> Vec<f64> + Send + Sync>;

/// Quantities derived from one law's parameters.
fn derived_quantities(law_name: &str) -> (Vec<String>, DerivedFn) {
    match law_name {
        "chinchilla" | "data_constrained" => (
            names(&["a", "b", "G"]),
            Box::new(|t: &[f64]| {
                let (alpha, beta) = (t[3], t[4]);
                vec![beta / (alpha + beta), alpha / (alpha + beta), optimal::chinchilla_g(t)]
            }),
        ),
        "vocab" => (names(&["alpha1"]), Box::new(|t: &[f64]| vec![t[5]])),
        "fp_quant" => (names(&["mantissa_share"]), Box::new(|t: &[f64]| vec![t[7] / (t[6] + t[7])])),
        _ => (Vec::new(), Box::new(|_: &[f64]| Vec::new())),
    }
}

/// How one law reads the table: variable → column, with its counting conventions.
struct Columns {
    map: BTreeMap<String, String>,
    counting: Option<Counting>,
    convention: Convention,
    notes: Vec<String>,
}

impl Columns {
    fn of(&self, variable: &str) -> String {
        self.map.get(variable).cloned().unwrap_or_else(|| variable.to_string())
    }
}

/// The columns a law reads from `table`: `map` first, then its counting convention for N and C;
/// a table without the convention's column (a CSV) gives the column named after the variable,
/// and the convention is recorded as assumed.
fn resolve_columns(cfg: &LawConfig, variables: &[String], table: &Table) -> Columns {
    let law = if cfg.formula.is_some() { "" } else { cfg.name.as_str() };
    let convention = counting::convention(law, cfg.counting.as_ref());
    let mut map = BTreeMap::new();
    let mut placed = BTreeMap::new();
    let mut assumed = false;
    for v in variables {
        if let Some(col) = cfg.map.get(v) {
            map.insert(v.clone(), col.clone());
            if v == "N" || v == "C" {
                placed.insert(v.clone(), col.clone());
            }
            continue;
        }
        let col = counting::convention_column(v, convention);
        let col = if col != *v && !table.columns.contains_key(&col) && table.columns.contains_key(v) {
            assumed = true;
            v.clone()
        } else {
            col
        };
        if v == "N" || v == "C" {
            placed.insert(v.clone(), col.clone());
        }
        map.insert(v.clone(), col);
    }
    let mut notes = Vec::new();
    let vocab = law == "vocab";
    if vocab {
        for v in ["N_nv", "N_v"] {
            placed.insert(v.to_string(), map.get(v).cloned().unwrap_or_else(|| v.to_string()));
        }
    }
    if assumed {
        notes.push(format!(
            "the table has no {} column: the law read its variable's own column and takes it to be counted as `{}` / `{}`",
            placed.values().filter(|c| !table.columns.contains_key(*c)).cloned().collect::<Vec<_>>().join(", "),
            convention.parameters.name(),
            convention.compute.name()
        ));
    }
    let counting = (!placed.is_empty()).then(|| Counting {
        parameters: convention.parameters.name().to_string(),
        compute: convention.compute.name().to_string(),
        columns: placed,
        assumed,
        flops_per_token: None,
    });
    Columns { map, counting, convention, notes }
}

fn fit_options(cfg: &LawConfig, config: &FitConfig) -> FitOptions {
    FitOptions {
        huber_delta: cfg.huber_delta.unwrap_or(config.huber_delta),
        max_iters: config.max_iters,
        ..FitOptions::default()
    }
}

/// Refit without the largest model (the largest value of N, N_nv or C among the law's
/// variables) and compare predictions with the held-out observations.
fn extrapolation(law: &dyn Law, data: &Dataset, opts: &FitOptions, b: &BootstrapConfig) -> Option<Extrapolation> {
    let vars = law.variables();
    let (k, var) = ["N", "N_nv", "C"].iter().find_map(|v| vars.iter().position(|x| x == v).map(|k| (k, *v)))?;
    let max = data.inputs.iter().map(|x| x[k]).fold(f64::NEG_INFINITY, f64::max);
    let is_held = |x: &Vec<f64>| x[k] >= max * (1.0 - 1e-9);
    let train: Vec<usize> = (0..data.len()).filter(|&i| !is_held(&data.inputs[i])).collect();
    let held: Vec<usize> = (0..data.len()).filter(|&i| is_held(&data.inputs[i])).collect();
    if train.len() <= law.params().len() || held.is_empty() {
        return None;
    }
    let train_data = data.select(&train);
    let refit = fit_multistart(law, &train_data, &start_grid(law.params()), opts).ok()?;
    let held_inputs: Vec<Vec<f64>> = held.iter().map(|&i| data.inputs[i].clone()).collect();
    let bands = crate::bands::held_out_intervals(law, &train_data, &refit, &held_inputs, opts, b);
    let points: Vec<HeldOutPoint> = held
        .iter()
        .enumerate()
        .map(|(j, &i)| HeldOutPoint {
            inputs: vars.iter().cloned().zip(data.inputs[i].iter().copied()).collect(),
            observed: data.observed[i],
            predicted: law.predict(&refit.best.theta, &data.inputs[i]),
            predicted_ci: bands.get(j).copied().flatten(),
        })
        .collect();
    let rel: Vec<f64> = points.iter().map(|p| ((p.predicted - p.observed) / p.observed).abs()).collect();
    Some(Extrapolation {
        held_out: format!("{var} = {max:.4e} (largest {})", if var == "C" { "compute" } else { "model" }),
        n_train: train.len(),
        n_held_out: held.len(),
        params: law.params().iter().map(|p| p.name.clone()).zip(refit.best.theta.iter().copied()).collect(),
        mean_abs_rel_error: rel.iter().sum::<f64>() / rel.len() as f64,
        max_abs_rel_error: rel.iter().copied().fold(0.0, f64::max),
        points,
    })
}

/// The rows of `table` with a finite value in each of `columns` (that it has), and a note on
/// what was left out; an error when no row is left. With `drop` false, the table is returned
/// whole (bad values are then the fit's errors, with their rows).
fn complete_rows(table: &Table, columns: &[String], drop: bool) -> Result<(Table, Option<String>), FitError> {
    let n = table.len();
    if !drop {
        return Ok((table.clone(), None));
    }
    let present: Vec<&String> = columns.iter().filter(|c| table.columns.contains_key(*c)).collect();
    let keep: Vec<usize> = (0..n).filter(|&i| present.iter().all(|c| table.columns[*c][i].is_finite())).collect();
    if keep.len() == n {
        return Ok((table.clone(), None));
    }
    let lacking: Vec<&str> =
        present.iter().filter(|c| table.columns[**c].iter().any(|x| !x.is_finite())).map(|c| c.as_str()).collect();
    if keep.is_empty() {
        return Err(FitError::data(format!(
            "none of the {n} rows has a value in every column this law reads ({}); lacking: {} (the simulate trainer reports no loss_u or loss_bpb, a run without a domain source no loss_domain)",
            columns.join(", "),
            lacking.join(", ")
        )));
    }
    let note =
        format!("{} of {n} rows have no value in {} and are left out of this law", n - keep.len(), lacking.join(", "));
    tracing::warn!("{note}");
    Ok((table.select_rows(&keep), Some(note)))
}

fn fit_parametric(
    table: &Table,
    cfg: &LawConfig,
    config: &FitConfig,
    drop_incomplete: bool,
) -> Result<(LawEntry, Fitted), FitError> {
    let law: std::sync::Arc<dyn Law> = build_law(cfg)?.into();
    let mut vars = law.variables();
    vars.push(law.response());
    let cols = resolve_columns(cfg, &vars, table);
    let needed: Vec<String> = vars.iter().map(|v| cols.of(v)).collect();
    let (table, dropped) = complete_rows(table, &needed, drop_incomplete)?;
    let colmap = |v: &str| cols.of(v);
    let data = Dataset::from_table(law.as_ref(), &table, &colmap)?;
    let opts = fit_options(cfg, config);
    let starts = start_grid(law.params());
    let multi = fit_multistart(law.as_ref(), &data, &starts, &opts)?;
    let theta = multi.best.theta.clone();
    let predicted: Vec<f64> = data.inputs.iter().map(|x| law.predict(&theta, x)).collect();
    let rmse =
        (data.observed.iter().zip(&predicted).map(|(o, p)| (o - p).powi(2)).sum::<f64>() / data.len() as f64).sqrt();
    let b = &config.bootstrap;
    let boot = if b.resamples > 0 {
        let boot_starts: Vec<Vec<f64>> = multi.top.iter().take(b.starts).map(|r| r.theta.clone()).collect();
        bootstrap_params(law.as_ref(), &data, &boot_starts, &opts, b.resamples, b.seed)
    } else {
        Vec::new()
    };
    let (boot, boot_summary) = bootstrap_outcome(boot, b, "points");
    let mut notes = cols.notes.clone();
    notes.extend(dropped);
    // FLOPs per token against N for the compute-optimal questions: exact, or fitted over the
    // sweep's shapes (a table in another convention that claims its own columns: exact).
    let mut counting = cols.counting.clone();
    let flops = match &counting {
        Some(c) if c.assumed => Some(FlopsPerToken::SIX_N),
        Some(_) => {
            let f = FlopsPerToken::for_convention(cols.convention, &table);
            if f.is_none() && !config.optimal.budgets.is_empty() {
                notes.push("the FLOPs per token could not be related to N (fewer than 2 model sizes with N, D and C); compute-optimal questions skipped".into());
            }
            f
        }
        None => None,
    };
    if let Some(c) = &mut counting {
        c.flops_per_token = flops;
    }
    let param_names: Vec<String> = law.params().iter().map(|p| p.name.clone()).collect();
    let params = estimates(&param_names, &|t: &[f64]| t.to_vec(), &theta, &boot, b.level);
    let (dnames, dfun) = derived_quantities(law.name());
    let derived = estimates(&dnames, &*dfun, &theta, &boot, b.level);
    let optimal = single_law_questions(law.name(), &law, config, flops)
        .into_iter()
        .map(|(kind, inputs, names, f)| Optimal {
            kind,
            inputs,
            values: estimates(&names, &*f, &theta, &boot, b.level),
        })
        .collect();
    let extrapolation =
        if config.extrapolation { extrapolation(law.as_ref(), &data, &opts, &config.bootstrap) } else { None };
    // Chinchilla's compute-optimal frontier with its bootstrap band, in the law's own counts.
    let frontier = match (law.name(), flops) {
        ("chinchilla", Some(flops)) => {
            let c = data.inputs.iter().map(|x| flops.at(x[0]) * x[1]);
            let budgets = crate::bands::frontier_budgets_over(c, &config.optimal.budgets);
            let opt = |t: &[f64], c: f64| {
                if flops == FlopsPerToken::SIX_N {
                    optimal::chinchilla_optimal(t, c)
                } else {
                    let (n, d, _) = optimal::compute_optimal_with(law.as_ref(), t, c, &flops, &|n, d| vec![n, d]);
                    (n, d)
                }
            };
            crate::bands::frontier_band(&opt, &theta, &boot, b.level, &budgets)
        }
        _ => Vec::new(),
    };
    let variables: BTreeMap<String, String> = vars.iter().map(|v| (v.clone(), cols.of(v))).collect();
    let entry = LawEntry {
        name: law.name().to_string(),
        kind: "parametric".into(),
        formula: law.formula(),
        error: None,
        group: None,
        counting,
        data: DataProvenance {
            source: table.provenance.clone(),
            n_rows: data.len(),
            columns: variables.values().cloned().collect(),
        },
        variables,
        params,
        derived,
        fit: Some(FitSummary {
            objective: match law.space() {
                Space::Log => "huber_log".into(),
                Space::Raw => "huber_raw".into(),
            },
            objective_value: multi.best.objective,
            n_points: data.len(),
            huber_delta: Some(opts.huber_delta),
            starts: multi.starts,
            starts_converged: multi.starts_converged,
            starts_stalled: multi.starts_stalled,
            starts_max_iters: multi.starts_max_iters,
            starts_failed: multi.starts_failed,
            starts_at_best: multi.starts_at_best,
            converged: multi.best.converged || multi.best.stalled,
            grad_norm: Some(multi.best.grad_norm),
            iterations: multi.best.iterations,
            r2: r_squared(&data.observed, &predicted),
            rmse,
            bootstrap: boot_summary,
        }),
        extrapolation,
        optimal,
        notes,
        derived_points: Vec::new(),
        frontier,
    };
    let n_rows = data.len();
    Ok((entry, Fitted { law, theta, boot, n_rows }))
}

/// What a frontier fit needs besides its data: how its rows are resampled and what to record.
struct FrontierSpec<'a> {
    name: &'a str,
    kind: &'a str,
    cols: Columns,
    source: String,
    n_rows: usize,
    /// Resampling units (IsoFLOP profiles, or runs).
    units: usize,
    unit_name: &'a str,
    notes: Vec<String>,
    derived_points: Vec<BTreeMap<String, f64>>,
}

fn frontier_entry(
    spec: FrontierSpec,
    config: &FitConfig,
    fit: &(dyn Fn(&[usize]) -> Result<Frontier, FitError> + Sync),
) -> Result<LawEntry, FitError> {
    let all: Vec<usize> = (0..spec.units).collect();
    let frontier = fit(&all)?;
    let b = &config.bootstrap;
    let boot: Vec<Option<Vec<f64>>> = (0..b.resamples)
        .into_par_iter()
        .map(|i| fit(&resample_indices(spec.units, b.seed, i)).ok().map(|f| vec![f.a, f.b, f.k_n, f.k_d]))
        .collect();
    let (boot, boot_summary) = bootstrap_outcome(boot, b, spec.unit_name);
    let theta = vec![frontier.a, frontier.b, frontier.k_n, frontier.k_d];
    let params = estimates(&names(&["a", "b", "k_N", "k_D"]), &|t: &[f64]| t.to_vec(), &theta, &boot, b.level);
    let optimal = config
        .optimal
        .budgets
        .iter()
        .map(|&c| {
            let f = move |t: &[f64]| vec![t[2] * c.powf(t[0]), t[3] * c.powf(t[1])];
            Optimal {
                kind: "compute_optimal".into(),
                inputs: inputs(&[("C", c)]),
                values: estimates(&names(&["N_opt", "D_opt"]), &f, &theta, &boot, b.level),
            }
        })
        .collect();
    let variables: BTreeMap<String, String> = spec.cols.map.clone();
    let mut notes = spec.cols.notes.clone();
    notes.extend(spec.notes);
    Ok(LawEntry {
        name: spec.name.to_string(),
        kind: spec.kind.to_string(),
        formula: "N_opt = k_N * C^a, D_opt = k_D * C^b".into(),
        error: None,
        group: None,
        counting: spec.cols.counting.clone(),
        data: DataProvenance {
            source: spec.source,
            n_rows: spec.n_rows,
            columns: variables.values().cloned().collect(),
        },
        variables,
        params,
        derived: BTreeMap::new(),
        fit: Some(FitSummary::closed_form(
            "least_squares_loglog",
            frontier.ssr,
            frontier.points.len(),
            frontier.r2,
            boot_summary,
        )),
        extrapolation: if config.extrapolation {
            crate::approaches::frontier_extrapolation(&frontier).map(|mut x| {
                crate::bands::frontier_held_out_intervals(&frontier, &mut x, b);
                x
            })
        } else {
            None
        },
        optimal,
        notes,
        derived_points: spec.derived_points,
        frontier: {
            let c = frontier.points.iter().map(|p| p.0);
            let budgets = crate::bands::frontier_budgets_over(c, &config.optimal.budgets);
            let opt = |t: &[f64], c: f64| (t[2] * c.powf(t[0]), t[3] * c.powf(t[1]));
            crate::bands::frontier_band(&opt, &theta, &boot, b.level, &budgets)
        },
    })
}

/// A column, or C computed as 6ND when the table has N and D but no C.
fn column_or_compute(table: &Table, name: &str) -> Result<Vec<f64>, FitError> {
    if let Ok(c) = table.column(name) {
        return Ok(c.to_vec());
    }
    if name == "C" {
        if let (Ok(n), Ok(d)) = (table.column("N"), table.column("D")) {
            return Ok(n.iter().zip(d).map(|(n, d)| 6.0 * n * d).collect());
        }
    }
    table.column(name).map(<[f64]>::to_vec)
}

fn positive_column(table: &Table, law: &str, var: &str, column: &str) -> Result<Vec<f64>, FitError> {
    let v = column_or_compute(table, column)?;
    if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !(x.is_finite() && **x > 0.0)) {
        return Err(FitError::data(format!(
            "law {law}: row {}: {var} ({column}) = {x} must be positive and finite",
            i + 1
        )));
    }
    Ok(v)
}

/// Chinchilla's approach 2 on the table's IsoFLOP profiles: the runs grouped by the budget
/// they were placed on (column `C_budget`, or equal C where the table has none), a parabola per
/// profile, the frontier through the minima; the bootstrap resamples whole profiles.
fn fit_approach2(table: &Table, cfg: &LawConfig, config: &FitConfig, drop: bool) -> Result<LawEntry, FitError> {
    let (vars, response) = law_columns(cfg)?;
    let mut all_vars = vars.clone();
    all_vars.push(response.clone());
    let mut cols = resolve_columns(cfg, &all_vars, table);
    let needed: Vec<String> = ["N", "D", "C", "loss"].iter().map(|v| cols.of(v)).collect();
    let (table, dropped) = complete_rows(table, &needed, drop)?;
    let name = cfg.name.as_str();
    let n = positive_column(&table, name, "N", &cols.of("N"))?;
    let c = positive_column(&table, name, "C", &cols.of("C"))?;
    let d = match table.column(&cols.of("D")) {
        Ok(_) => positive_column(&table, name, "D", &cols.of("D"))?,
        // A table without D (C and N only): D = C / 6N.
        Err(_) => n.iter().zip(&c).map(|(n, c)| c / (6.0 * n)).collect(),
    };
    let loss = positive_column(&table, name, "loss", &cols.of("loss"))?;
    let mut notes: Vec<String> = dropped.into_iter().collect();
    let budget_col = cols.of("C_budget");
    let budget: Vec<f64> = match table.column(&budget_col) {
        Ok(b) if b.iter().any(|x| x.is_finite()) => {
            let off = b.iter().filter(|x| !x.is_finite()).count();
            if off > 0 {
                notes.push(format!(
                    "{off} rows were not placed on an IsoFLOP budget ({budget_col} is empty) and are left out"
                ));
            }
            b.to_vec()
        }
        found => {
            cols.map.insert("C_budget".into(), cols.of("C"));
            notes.push(format!(
                "{}: rows with equal {} (to 1e-6) form a profile; give each run the budget it was placed on ([[grid.isoflop]] records it) if tokens were rounded to whole steps",
                if found.is_ok() {
                    format!("no point was placed on an IsoFLOP budget ({budget_col} is empty)")
                } else {
                    format!("no {budget_col} column")
                },
                cols.of("C")
            ));
            c.clone()
        }
    };
    let (minima, skipped) = approaches::profile_minima(&budget, &n, &d, &c, &loss);
    notes.extend(skipped.into_iter().map(|why| format!("{why}; profile skipped")));
    let derived_points = minima
        .iter()
        .map(|m| {
            [
                ("C_budget", m.budget),
                ("C", m.c),
                ("N_opt", m.n_opt),
                ("D_opt", m.d_opt),
                ("loss", m.loss),
                ("runs", m.runs as f64),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect()
        })
        .collect();
    let profiles = minima.len();
    let fit = |units: &[usize]| {
        let pick: Vec<approaches::ProfileMinimum> = units.iter().map(|&i| minima[i].clone()).collect();
        approaches::approach2(&pick)
    };
    frontier_entry(
        FrontierSpec {
            name,
            kind: "approach2",
            cols,
            source: table.provenance.clone(),
            n_rows: n.len(),
            units: profiles,
            unit_name: "profiles",
            notes,
            derived_points,
        },
        config,
        &fit,
    )
    .map_err(|e| match e {
        FitError::Data(m) => FitError::Data(format!("{m} ({profiles} usable IsoFLOP profile(s))")),
        other => other,
    })
}

fn fit_approach1(curves: Option<&Table>, cfg: &LawConfig, config: &FitConfig) -> Result<LawEntry, FitError> {
    let curves = curves.ok_or_else(|| {
        FitError::data("chinchilla_approach1 needs learning curves (columns run, N, C or D, loss; one row per evaluation); none were given")
    })?;
    let (vars, response) = law_columns(cfg)?;
    let mut all_vars = vars.clone();
    all_vars.push(response);
    let cols = resolve_columns(cfg, &all_vars, curves);
    let name = cfg.name.as_str();
    let run = curves.column(&cols.of("run"))?.to_vec();
    let n = positive_column(curves, name, "N", &cols.of("N"))?;
    let c = positive_column(curves, name, "C", &cols.of("C"))?;
    let d = match curves.column(&cols.of("D")) {
        Ok(_) => positive_column(curves, name, "D", &cols.of("D"))?,
        Err(_) => n.iter().zip(&c).map(|(n, c)| c / (6.0 * n)).collect(),
    };
    let loss = positive_column(curves, name, "loss", &cols.of("loss"))?;
    let mut run_ids: Vec<u64> = run.iter().map(|r| r.to_bits()).collect();
    run_ids.sort();
    run_ids.dedup();
    let fit = |runs: &[usize]| {
        // Resampling unit is the run: duplicated runs get distinct ids.
        let (mut rr, mut nn, mut cc, mut dd, mut ll) = (vec![], vec![], vec![], vec![], vec![]);
        for (k, &ri) in runs.iter().enumerate() {
            for i in (0..run.len()).filter(|&i| run[i].to_bits() == run_ids[ri]) {
                rr.push(k as f64);
                nn.push(n[i]);
                cc.push(c[i]);
                dd.push(d[i]);
                ll.push(loss[i]);
            }
        }
        approaches::approach1(&rr, &nn, &cc, &dd, &ll)
    };
    frontier_entry(
        FrontierSpec {
            name,
            kind: "approach1",
            cols,
            source: curves.provenance.clone(),
            n_rows: n.len(),
            units: run_ids.len(),
            unit_name: "runs",
            notes: Vec::new(),
            derived_points: Vec::new(),
        },
        config,
        &fit,
    )
}

/// The critical mixture ratio law (Gu et al. 2024): critical ratios derived per model size and
/// token budget from the mixture runs (or read from an `r_crit` column), then eq. 8 fitted per
/// model size, with intervals from a parametric bootstrap.
fn fit_cmr(table: &Table, cfg: &LawConfig, config: &FitConfig, drop: bool) -> Result<Vec<LawEntry>, FitError> {
    let (vars, response) = law_columns(cfg)?;
    let mut all_vars = vars.clone();
    all_vars.push(response.clone());
    let cols = resolve_columns(cfg, &all_vars, table);
    let eps = config.optimal.cmr_epsilon;
    let n_col = cols.of("N");
    let given = table.columns.contains_key(&cols.of("r_crit"));
    let needed: Vec<String> = if given {
        ["N", "D", "r_crit"].iter().map(|v| cols.of(v)).collect()
    } else {
        ["N", "D", "r", "loss_general"].iter().map(|v| cols.of(v)).collect()
    };
    let (table, dropped) = complete_rows(table, &needed, drop)?;
    let mut notes: Vec<String> = cols.notes.iter().cloned().chain(dropped).collect();
    // (N, D, r_crit) points, with the groups they came from.
    let mut points: Vec<(f64, f64, f64)> = Vec::new();
    let mut groups: Vec<cmr::MixtureGroup> = Vec::new();
    let mut derived: Vec<cmr::CriticalRatio> = Vec::new();
    if given {
        let (n, d, r) = (table.column(&n_col)?, table.column(&cols.of("D"))?, table.column(&cols.of("r_crit"))?);
        points = (0..n.len()).map(|i| (n[i], d[i], r[i])).collect();
        notes.push(format!("critical ratios read from column {}", cols.of("r_crit")));
    } else {
        let mut renamed = table.clone();
        for v in ["D", "r", "loss_general", "loss_domain", "loss_general_base", "loss_domain_base"] {
            let col = cols.of(v);
            if col != v {
                if let Some(x) = table.columns.get(&col) {
                    renamed.columns.insert(v.to_string(), x.clone());
                }
            }
        }
        let (gs, skipped) = cmr::mixture_groups(&renamed, &n_col)?;
        notes.extend(skipped);
        for g in gs {
            match g.critical_ratio(eps) {
                Ok(c) => {
                    points.push((c.n, c.d, c.r_crit));
                    derived.push(c);
                    groups.push(g);
                }
                Err(why) => notes.push(format!("{why}; left out")),
            }
        }
    }
    if points.is_empty() {
        return Err(FitError::data(format!(
            "no critical mixture ratio could be derived: the law needs runs at several mixture ratios r (and r = 0, or loss_general_base) per model size and token budget{}",
            if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) }
        )));
    }
    let key = |v: f64| (v.ln() * 1e6).round() as i64;
    let mut sizes: Vec<f64> = points.iter().map(|p| p.0).collect();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup_by(|a, b| key(*a) == key(*b));
    let b = &config.bootstrap;
    let mut entries = Vec::new();
    for &size in &sizes {
        let mine: Vec<usize> = (0..points.len()).filter(|&i| key(points[i].0) == key(size)).collect();
        let pts: Vec<(f64, f64)> = mine.iter().map(|&i| (points[i].1, points[i].2)).collect();
        let group = Some([("N".to_string(), size)].into_iter().collect::<BTreeMap<_, _>>());
        let formula =
            "r_crit = alpha4 * (D / 2e8)^s4 + beta3 (Gu et al. 2024 eq. 8, per model size; D / 2e8 is the paper's T)"
                .to_string();
        let Some((theta, ssr)) = cmr::fit_cmr_law(&pts) else {
            let mut e = LawEntry::failed(
                &cfg.name,
                "cmr",
                formula,
                format!(
                    "N = {size:.4e}: {} token budget(s) with a critical ratio; eq. 8 has 3 parameters and needs at least 3 budgets",
                    pts.len()
                ),
                &table.provenance,
            );
            e.group = group;
            entries.push(e);
            continue;
        };
        // Parametric bootstrap: the runs' losses perturbed by the pooled residual noise of the
        // loss-vs-ratio fits of this size.
        let my_groups: Vec<cmr::MixtureGroup> = groups.iter().filter(|g| key(g.n) == key(size)).cloned().collect();
        let (ssr_g, dof): (f64, usize) = derived
            .iter()
            .filter(|c| key(c.n) == key(size))
            .fold((0.0, 0), |(s, k), c| (s + c.general_ssr.0, k + c.general_ssr.1));
        let mut size_notes = Vec::new();
        let (boot, unit) = if b.resamples == 0 {
            (Vec::new(), "parametric")
        } else if given {
            let fit = |rows: &[usize]| {
                let sample: Vec<(f64, f64)> = rows.iter().map(|&i| pts[i]).collect();
                cmr::fit_cmr_law(&sample).map(|(t, _)| t.to_vec())
            };
            ((0..b.resamples).map(|i| fit(&resample_indices(pts.len(), b.seed, i))).collect(), "points")
        } else if dof == 0 {
            size_notes.push("no residual degrees of freedom to estimate the loss noise (3 non-zero ratios per token budget fit the power law exactly): measure 4 or more ratios for intervals".to_string());
            (vec![None; b.resamples], "parametric")
        } else {
            let sigma = (ssr_g / dof as f64).sqrt();
            size_notes.push(format!(
                "bootstrap: every run's general and domain loss perturbed by normal noise of sd {sigma:.3e} nats (pooled residuals of the loss-vs-ratio fits, {dof} degrees of freedom)"
            ));
            (cmr::bootstrap_cmr(&my_groups, eps, sigma, sigma, b.resamples, b.seed), "parametric")
        };
        let (boot, boot_summary) = bootstrap_outcome(boot, b, unit);
        let params = estimates(&names(&["alpha4", "s4", "beta3"]), &|t: &[f64]| t.to_vec(), &theta, &boot, b.level);
        let optimal = config
            .optimal
            .cmr_tokens
            .iter()
            .map(|&t| Optimal {
                kind: "critical_mixture_ratio".into(),
                inputs: inputs(&[("N", size), ("D", t), ("epsilon", eps)]),
                values: estimates(
                    &names(&["r_crit"]),
                    &|th: &[f64]| vec![cmr::predict_cmr(th, t)],
                    &theta,
                    &boot,
                    b.level,
                ),
            })
            .collect();
        let observed: Vec<f64> = pts.iter().map(|p| p.1).collect();
        let predicted: Vec<f64> = pts.iter().map(|p| cmr::predict_cmr(&theta, p.0)).collect();
        let derived_points = derived
            .iter()
            .filter(|c| key(c.n) == key(size))
            .map(|c| {
                [
                    ("N", c.n),
                    ("D", c.d),
                    ("r_crit", c.r_crit),
                    ("loss_general_base", c.base_general),
                    ("loss_domain_base", c.base_domain),
                    ("ratios", c.ratios as f64),
                    ("power_law_in_r", if c.power_law { 1.0 } else { 0.0 }),
                ]
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect()
            })
            .collect();
        let mut entry_notes = notes.clone();
        entry_notes.extend(size_notes);
        entries.push(LawEntry {
            name: cfg.name.clone(),
            kind: "cmr".into(),
            formula,
            error: None,
            group,
            counting: cols.counting.clone(),
            variables: all_vars.iter().map(|v| (v.clone(), cols.of(v))).collect(),
            params,
            derived: BTreeMap::new(),
            fit: Some(FitSummary::closed_form(
                "least_squares",
                ssr,
                pts.len(),
                r_squared(&observed, &predicted),
                boot_summary,
            )),
            extrapolation: None,
            optimal,
            data: DataProvenance { source: table.provenance.clone(), n_rows: table.len(), columns: needed.clone() },
            notes: entry_notes,
            derived_points,
            frontier: Vec::new(),
        });
    }
    Ok(entries)
}

/// Fits every law of `config` to `table` (and approach 1 to `curves`), with intervals,
/// extrapolation checks and optimal configurations. Nothing is written. A law that cannot be
/// fitted is an entry with its error, never a reason to drop the others; only an invalid config
/// is an error. A row with a missing or bad value in a column a law reads is an error for that
/// law (see [`fit_all_complete_rows`] to leave such rows out instead).
pub fn fit_all(table: &Table, curves: Option<&Table>, config: &FitConfig) -> Result<LawsFile, FitError> {
    fit_laws(table, curves, config, false)
}

/// Like [`fit_all`], but each law leaves out the rows without a value in a column it reads
/// (noted in its entry): for a sweep's results table, where a point may lack what one law needs
/// (exponent bits of an integer format, a domain loss without a domain source).
pub fn fit_all_complete_rows(table: &Table, curves: Option<&Table>, config: &FitConfig) -> Result<LawsFile, FitError> {
    fit_laws(table, curves, config, true)
}

/// A config entry's kind (`parametric`, `approach1`, `approach2`, `cmr`) and formula.
fn kind_and_formula(cfg: &LawConfig) -> (&'static str, String) {
    let frontier = "N_opt = k_N * C^a, D_opt = k_D * C^b".to_string();
    match (cfg.name.as_str(), cfg.formula.is_some()) {
        ("chinchilla_approach1", false) => ("approach1", frontier),
        ("chinchilla_approach2", false) => ("approach2", frontier),
        ("cmr", false) => ("cmr", "r_crit = alpha4 * (D / 2e8)^s4 + beta3".to_string()),
        _ => ("parametric", build_law(cfg).map(|l| l.formula()).unwrap_or_default()),
    }
}

/// A laws file in which every law of `config` failed for the same reason (a sweep with no
/// finished point).
pub fn all_failed(config: &FitConfig, why: &str, source: &str) -> Result<LawsFile, FitError> {
    config.validate()?;
    let laws = config
        .laws
        .iter()
        .map(|cfg| {
            let (kind, formula) = kind_and_formula(cfg);
            LawEntry::failed(&cfg.name, kind, formula, why.to_string(), source)
        })
        .collect();
    Ok(LawsFile { schema_version: SCHEMA_VERSION, laws, left_out: Vec::new() })
}

fn fit_laws(table: &Table, curves: Option<&Table>, config: &FitConfig, drop: bool) -> Result<LawsFile, FitError> {
    config.validate()?;
    let mut entries = Vec::new();
    let mut fitted: BTreeMap<String, (usize, Fitted)> = BTreeMap::new();
    for cfg in &config.laws {
        let (kind, formula) = kind_and_formula(cfg);
        let result: Result<Vec<LawEntry>, FitError> = match (cfg.name.as_str(), cfg.formula.is_some()) {
            ("chinchilla_approach2", false) => fit_approach2(table, cfg, config, drop).map(|e| vec![e]),
            ("chinchilla_approach1", false) => fit_approach1(curves, cfg, config).map(|e| vec![e]),
            ("cmr", false) => fit_cmr(table, cfg, config, drop),
            _ => fit_parametric(table, cfg, config, drop).map(|(entry, f)| {
                fitted.insert(entry.name.clone(), (entries.len(), f));
                vec![entry]
            }),
        };
        match result {
            Ok(e) => entries.extend(e),
            Err(e) => {
                tracing::warn!("law {}: {e}", cfg.name);
                entries.push(LawEntry::failed(&cfg.name, kind, formula, e.to_string(), &table.provenance));
            }
        }
    }
    if let (Some((_, g)), Some((di, d))) = (fitted.get("dcpt_general"), fitted.get("dcpt_domain")) {
        let extra = dcpt_joint_questions(g, d, config);
        entries[*di].optimal.extend(extra);
    }
    Ok(LawsFile { schema_version: SCHEMA_VERSION, laws: entries, left_out: Vec::new() })
}

/// D-CPT questions that need both the general and the domain law (usages 1 and 2, and the
/// critical mixture ratio); intervals pair the two laws' resamples (same rows, same seed).
fn dcpt_joint_questions(g: &Fitted, d: &Fitted, config: &FitConfig) -> Vec<Optimal> {
    let o = &config.optimal;
    let t_tol = o.dcpt_tolerance;
    let level = config.bootstrap.level;
    let paired = g.n_rows == d.n_rows && !g.boot.is_empty() && !d.boot.is_empty();
    let pairs: Vec<Option<Vec<f64>>> = if paired {
        g.boot
            .iter()
            .zip(&d.boot)
            .map(|(a, b)| match (a, b) {
                (Some(a), Some(b)) => Some(a.iter().chain(b).copied().collect()),
                _ => None,
            })
            .collect()
    } else {
        Vec::new()
    };
    let kg = g.theta.len();
    let theta: Vec<f64> = g.theta.iter().chain(&d.theta).copied().collect();
    let (gl, dl) = (g.law.as_ref(), d.law.as_ref());
    let mut out = Vec::new();
    for q in &o.dcpt {
        let f = |t: &[f64]| {
            let (tg, td) = t.split_at(kg);
            let best = optimal::dcpt_best_ratio(gl, tg, dl, td, q.N, &|_| q.D, t_tol);
            let (r, ld, lg) = best.unwrap_or((f64::NAN, f64::NAN, f64::NAN));
            vec![r, ld, lg, optimal::critical_mixture_ratio(gl, tg, q.N, q.D, t_tol)]
        };
        out.push(Optimal {
            kind: "dcpt_best_ratio_under_general_tolerance".into(),
            inputs: inputs(&[("N", q.N), ("D", q.D), ("T", t_tol)]),
            values: estimates(
                &names(&["r_opt", "loss_domain", "loss_general", "r_critical"]),
                &f,
                &theta,
                &pairs,
                level,
            ),
        });
    }
    for q in &o.dcpt_domain_tokens {
        let f = |t: &[f64]| {
            let (tg, td) = t.split_at(kg);
            let best = optimal::dcpt_best_ratio(gl, tg, dl, td, q.N, &|r| q.D_domain / r.max(1e-12), t_tol);
            let (r, ld, lg) = best.unwrap_or((f64::NAN, f64::NAN, f64::NAN));
            vec![r, q.D_domain / r, ld, lg]
        };
        out.push(Optimal {
            kind: "dcpt_fixed_domain_tokens".into(),
            inputs: inputs(&[("N", q.N), ("D_domain", q.D_domain), ("T", t_tol)]),
            values: estimates(&names(&["r_opt", "D_total", "loss_domain", "loss_general"]), &f, &theta, &pairs, level),
        });
    }
    out
}

/// Fits the laws of `config` to a CSV (`--csv FILE --law NAME --map VAR=COLUMN`) and writes
/// `out` atomically, also when a law could not be fitted (its entry holds the error); returns
/// what was written. Nothing is written when the CSV cannot be read or the config is invalid.
pub fn fit_csv(csv_path: &Path, config: &FitConfig, out: &Path) -> Result<LawsFile, FitError> {
    let maps: Vec<(String, String)> =
        config.laws.iter().flat_map(|l| l.map.iter().map(|(k, v)| (k.clone(), v.clone()))).collect();
    let table = Table::from_csv(csv_path, &maps)?;
    let laws = fit_all(&table, None, config)?;
    write_laws_json(out, &laws)?;
    Ok(laws)
}
