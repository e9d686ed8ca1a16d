//! Fitting every law of a config to a results table, with intervals, extrapolation checks and
//! optimal configurations: the pieces assembled into a [`LawsFile`].

use crate::approaches::{self, Frontier};
use crate::bootstrap::{bootstrap_params, percentile_interval, resample_indices};
use crate::config::{BootstrapConfig, FitConfig, LawConfig};
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
        "chinchilla_approach1" if cfg.formula.is_none() => Ok((s(&["run", "N", "C"]), "loss".into())),
        "chinchilla_approach2" if cfg.formula.is_none() => Ok((s(&["N", "C"]), "loss".into())),
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
            let ci = if boot.is_empty() {
                None
            } else {
                let col: Vec<f64> = samples.iter().map(|s| s[j]).collect();
                percentile_interval(&col, level)
            };
            (name.clone(), Estimate { estimate: main[j], ci })
        })
        .collect()
}

type Question = (String, BTreeMap<String, f64>, Vec<String>, Box<dyn Fn(&[f64]) -> Vec<f64> + Send + Sync>);

fn inputs(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Questions answerable from one law's parameters.
fn single_law_questions(law_name: &str, law: &std::sync::Arc<dyn Law>, config: &FitConfig) -> Vec<Question> {
    let o = &config.optimal;
    let mut q: Vec<Question> = Vec::new();
    match law_name {
        "chinchilla" => {
            for &c in &o.budgets {
                let law = law.clone();
                q.push((
                    "compute_optimal".into(),
                    inputs(&[("C", c)]),
                    names(&["N_opt", "D_opt", "loss", "tokens_per_param"]),
                    Box::new(move |t: &[f64]| {
                        let (n, d) = optimal::chinchilla_optimal(t, c);
                        vec![n, d, law.predict(t, &[n, d]), d / n]
                    }),
                ));
            }
        }
        "dcpt_domain" => {
            for &r in &o.dcpt_ratios {
                for &c in &o.budgets {
                    let law = law.clone();
                    q.push((
                        "dcpt_fixed_ratio_compute_optimal".into(),
                        inputs(&[("C", c), ("r", r)]),
                        names(&["N_opt", "D_opt", "loss_domain"]),
                        Box::new(move |t: &[f64]| {
                            let (n, d, l) = optimal::compute_optimal(law.as_ref(), t, c, &|n, d| vec![n, d, r]);
                            vec![n, d, l]
                        }),
                    ));
                }
            }
        }
        "vocab" => {
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
        "fp_quant" => {
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
        _ => {}
    }
    q
}

/// Computes derived quantities from a law's parameters.
type DerivedFn = Box<dyn Fn(&[f64]) -> Vec<f64> + Send + Sync>;

/// Quantities derived from one law's parameters.
fn derived_quantities(law_name: &str) -> (Vec<String>, DerivedFn) {
    match law_name {
        "chinchilla" => (
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

fn column_map(cfg: &LawConfig) -> impl Fn(&str) -> String + '_ {
    move |v: &str| cfg.map.get(v).cloned().unwrap_or_else(|| v.to_string())
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

fn fit_parametric(table: &Table, cfg: &LawConfig, config: &FitConfig) -> Result<(LawEntry, Fitted), FitError> {
    let law: std::sync::Arc<dyn Law> = build_law(cfg)?.into();
    let colmap = column_map(cfg);
    let data = Dataset::from_table(law.as_ref(), table, &colmap)?;
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
    let param_names: Vec<String> = law.params().iter().map(|p| p.name.clone()).collect();
    let params = estimates(&param_names, &|t: &[f64]| t.to_vec(), &theta, &boot, b.level);
    let (dnames, dfun) = derived_quantities(law.name());
    let derived = estimates(&dnames, &*dfun, &theta, &boot, b.level);
    let optimal = single_law_questions(law.name(), &law, config)
        .into_iter()
        .map(|(kind, inputs, names, f)| Optimal {
            kind,
            inputs,
            values: estimates(&names, &*f, &theta, &boot, b.level),
        })
        .collect();
    let extrapolation =
        if config.extrapolation { extrapolation(law.as_ref(), &data, &opts, &config.bootstrap) } else { None };
    let frontier = if law.name() == "chinchilla" {
        let c = data.inputs.iter().map(|x| 6.0 * x[0] * x[1]);
        let budgets = crate::bands::frontier_budgets(
            c.clone().fold(f64::INFINITY, f64::min),
            c.chain(config.optimal.budgets.iter().copied()).fold(0.0, f64::max),
        );
        crate::bands::frontier_band(&optimal::chinchilla_optimal, &theta, &boot, b.level, &budgets)
    } else {
        Vec::new()
    };
    let mut variables: BTreeMap<String, String> = law.variables().iter().map(|v| (v.clone(), colmap(v))).collect();
    variables.insert(law.response(), colmap(&law.response()));
    let entry = LawEntry {
        name: law.name().to_string(),
        kind: "parametric".into(),
        formula: law.formula(),
        data: DataProvenance {
            source: table.provenance.clone(),
            n_rows: data.len(),
            columns: variables.values().cloned().collect(),
        },
        variables,
        params,
        derived,
        fit: FitSummary {
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
            iterations: multi.best.iterations,
            r2: r_squared(&data.observed, &predicted),
            rmse,
            bootstrap: (b.resamples > 0).then(|| BootstrapSummary {
                resamples: b.resamples,
                seed: b.seed,
                level: b.level,
                failed: boot.iter().filter(|t| t.is_none()).count(),
            }),
        },
        extrapolation,
        optimal,
        frontier,
    };
    let n_rows = data.len();
    Ok((entry, Fitted { law, theta, boot, n_rows }))
}

fn frontier_entry(
    name: &str,
    cfg: &LawConfig,
    config: &FitConfig,
    table: &Table,
    n_rows: usize,
    fit: &(dyn Fn(&[usize]) -> Result<Frontier, FitError> + Sync),
    resample_unit: usize,
) -> Result<LawEntry, FitError> {
    let all: Vec<usize> = (0..resample_unit).collect();
    let frontier = fit(&all)?;
    let b = &config.bootstrap;
    let boot: Vec<Option<Vec<f64>>> = (0..b.resamples)
        .into_par_iter()
        .map(|i| fit(&resample_indices(resample_unit, b.seed, i)).ok().map(|f| vec![f.a, f.b, f.k_n, f.k_d]))
        .collect();
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
    let colmap = column_map(cfg);
    let (vars, response) = law_columns(cfg)?;
    let mut variables: BTreeMap<String, String> = vars.iter().map(|v| (v.clone(), colmap(v))).collect();
    variables.insert(response.clone(), colmap(&response));
    Ok(LawEntry {
        name: name.to_string(),
        kind: if name.ends_with('1') { "approach1".into() } else { "approach2".into() },
        formula: "N_opt = k_N * C^a, D_opt = k_D * C^b".into(),
        data: DataProvenance {
            source: table.provenance.clone(),
            n_rows,
            columns: variables.values().cloned().collect(),
        },
        variables,
        params,
        derived: BTreeMap::new(),
        fit: FitSummary {
            objective: "least_squares_loglog".into(),
            objective_value: frontier.ssr,
            n_points: frontier.points.len(),
            huber_delta: None,
            starts: 1,
            starts_converged: 1,
            starts_stalled: 0,
            starts_max_iters: 0,
            starts_failed: 0,
            starts_at_best: 1,
            converged: true,
            iterations: 1,
            r2: frontier.r2,
            rmse: (frontier.ssr / frontier.points.len() as f64).sqrt(),
            bootstrap: (b.resamples > 0).then(|| BootstrapSummary {
                resamples: b.resamples,
                seed: b.seed,
                level: b.level,
                failed: boot.iter().filter(|t| t.is_none()).count(),
            }),
        },
        extrapolation: if config.extrapolation {
            crate::approaches::frontier_extrapolation(&frontier).map(|mut x| {
                crate::bands::frontier_held_out_intervals(&frontier, &mut x, b);
                x
            })
        } else {
            None
        },
        optimal,
        frontier: {
            let c = frontier.points.iter().map(|p| p.0);
            let budgets = crate::bands::frontier_budgets(
                c.clone().fold(f64::INFINITY, f64::min),
                c.chain(config.optimal.budgets.iter().copied()).fold(0.0, f64::max),
            );
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

/// Fits every law of `config` to `table` (and approach 1 to `curves`), with intervals,
/// extrapolation checks and optimal configurations. Nothing is written.
pub fn fit_all(table: &Table, curves: Option<&Table>, config: &FitConfig) -> Result<LawsFile, FitError> {
    config.validate()?;
    let mut entries = Vec::new();
    let mut fitted: BTreeMap<String, (usize, Fitted)> = BTreeMap::new();
    for cfg in &config.laws {
        let colmap = column_map(cfg);
        match (cfg.name.as_str(), cfg.formula.is_some()) {
            ("chinchilla_approach2", false) => {
                let n = positive_column(table, &cfg.name, "N", &colmap("N"))?;
                let c = positive_column(table, &cfg.name, "C", &colmap("C"))?;
                let loss = positive_column(table, &cfg.name, "loss", &colmap("loss"))?;
                let f = |rows: &[usize]| {
                    let pick = |v: &[f64]| rows.iter().map(|&i| v[i]).collect::<Vec<_>>();
                    approaches::approach2(&pick(&n), &pick(&c), &pick(&loss))
                };
                entries.push(frontier_entry(&cfg.name, cfg, config, table, n.len(), &f, n.len())?);
            }
            ("chinchilla_approach1", false) => {
                let curves = curves.ok_or_else(|| {
                    FitError::data("chinchilla_approach1 needs learning curves (columns run, N, C or D, loss; one row per evaluation); none were given")
                })?;
                let run = curves.column(&colmap("run"))?.to_vec();
                let n = positive_column(curves, &cfg.name, "N", &colmap("N"))?;
                let c = positive_column(curves, &cfg.name, "C", &colmap("C"))?;
                let loss = positive_column(curves, &cfg.name, "loss", &colmap("loss"))?;
                let mut run_ids: Vec<u64> = run.iter().map(|r| r.to_bits()).collect();
                run_ids.sort();
                run_ids.dedup();
                let f = |runs: &[usize]| {
                    // Resampling unit is the run: duplicated runs get distinct ids.
                    let (mut rr, mut nn, mut cc, mut ll) = (vec![], vec![], vec![], vec![]);
                    for (k, &ri) in runs.iter().enumerate() {
                        for i in (0..run.len()).filter(|&i| run[i].to_bits() == run_ids[ri]) {
                            rr.push(k as f64);
                            nn.push(n[i]);
                            cc.push(c[i]);
                            ll.push(loss[i]);
                        }
                    }
                    approaches::approach1(&rr, &nn, &cc, &ll)
                };
                entries.push(frontier_entry(&cfg.name, cfg, config, curves, n.len(), &f, run_ids.len())?);
            }
            _ => {
                let (entry, f) = fit_parametric(table, cfg, config)?;
                fitted.insert(entry.name.clone(), (entries.len(), f));
                entries.push(entry);
            }
        }
    }
    if let (Some((_, g)), Some((di, d))) = (fitted.get("dcpt_general"), fitted.get("dcpt_domain")) {
        let extra = dcpt_joint_questions(g, d, config);
        entries[*di].optimal.extend(extra);
    }
    Ok(LawsFile { schema_version: SCHEMA_VERSION, laws: entries })
}

/// D-CPT questions that need both the general and the domain law (usages 1 and 2, and the
/// critical mixture ratio); intervals pair the two laws' resamples (same rows, same seed).
fn dcpt_joint_questions(g: &Fitted, d: &Fitted, config: &FitConfig) -> Vec<Optimal> {
    let o = &config.optimal;
    let t_tol = o.dcpt_tolerance;
    let level = config.bootstrap.level;
    let paired = g.n_rows == d.n_rows;
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

/// Fits one law to a CSV (`--csv FILE --law NAME --map VAR=COLUMN`), writes `out` atomically
/// and returns what was written. Nothing is written when anything fails.
pub fn fit_csv(csv_path: &Path, config: &FitConfig, out: &Path) -> Result<LawsFile, FitError> {
    let maps: Vec<(String, String)> =
        config.laws.iter().flat_map(|l| l.map.iter().map(|(k, v)| (k.clone(), v.clone()))).collect();
    let table = Table::from_csv(csv_path, &maps)?;
    let laws = fit_all(&table, None, config)?;
    write_laws_json(out, &laws)?;
    Ok(laws)
}
