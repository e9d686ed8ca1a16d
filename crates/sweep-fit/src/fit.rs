//! Robust multi-start fitting: summed Huber loss, L-BFGS (argmin) from every start of a grid,
//! in parallel with rayon, keeping the best optimum.

use crate::error::FitError;
use crate::law::{Law, Space};
use crate::table::Table;
use argmin::core::{CostFunction, Executor, Gradient, State, TerminationReason, TerminationStatus};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use rayon::prelude::*;
use std::cell::RefCell;

/// Settings of one multi-start fit.
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// Huber threshold on residuals (1e-3 as in Chinchilla).
    pub huber_delta: f64,
    /// Maximum L-BFGS iterations per start.
    pub max_iters: u64,
    /// L-BFGS memory (number of correction pairs).
    pub lbfgs_memory: usize,
    /// Stop when the gradient norm falls below this.
    pub tol_grad: f64,
    /// Stop when the objective changes by less than this between iterations.
    pub tol_cost: f64,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions { huber_delta: 1e-3, max_iters: 1000, lbfgs_memory: 10, tol_grad: 1e-9, tol_cost: 1e-13 }
    }
}

/// The points a law is fitted to: prepared features and responses in the law's residual space.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Prepared features, `stride` values per point.
    pub features: Vec<f64>,
    /// Values per point in `features`.
    pub stride: usize,
    /// Raw inputs, one row per point, in the law's variable order.
    pub inputs: Vec<Vec<f64>>,
    /// Observed response in the residual space (log of the loss for log-space laws).
    pub target: Vec<f64>,
    /// Observed response in its own units.
    pub observed: Vec<f64>,
}

impl Dataset {
    /// Extracts the law's variables and response from `table`; `columns` maps each variable
    /// (and the response) to a table column. Errors name the row and what is wrong.
    pub fn from_table(law: &dyn Law, table: &Table, columns: &dyn Fn(&str) -> String) -> Result<Dataset, FitError> {
        let vars = law.variables();
        let cols: Vec<&[f64]> = vars.iter().map(|v| table.column(&columns(v))).collect::<Result<_, _>>()?;
        let response_col = columns(&law.response());
        let y = table.column(&response_col)?;
        let mut inputs = Vec::with_capacity(y.len());
        let mut features = Vec::new();
        let mut target = Vec::with_capacity(y.len());
        for (i, &yi) in y.iter().enumerate() {
            let x: Vec<f64> = cols.iter().map(|c| c[i]).collect();
            law.check_inputs(&x).map_err(|m| FitError::data(format!("law {}: row {}: {m}", law.name(), i + 1)))?;
            let t = match law.space() {
                Space::Log if !(yi.is_finite() && yi > 0.0) => {
                    return Err(FitError::data(format!(
                        "law {}: row {}: {response_col} = {yi}; losses must be positive and finite for a log-space fit (drop the row or fix the run)",
                        law.name(),
                        i + 1
                    )))
                }
                Space::Raw if !yi.is_finite() => {
                    return Err(FitError::data(format!(
                        "law {}: row {}: {response_col} = {yi} is not finite (drop the row or fix the run)",
                        law.name(),
                        i + 1
                    )))
                }
                Space::Log => yi.ln(),
                Space::Raw => yi,
            };
            features.extend(law.prepare(&x));
            inputs.push(x);
            target.push(t);
        }
        let stride = if inputs.is_empty() { 0 } else { features.len() / inputs.len() };
        let n_params = law.params().len();
        if inputs.len() < n_params {
            return Err(FitError::data(format!(
                "law {}: {} points but {} parameters ({}); add runs or fit a law with fewer parameters",
                law.name(),
                inputs.len(),
                n_params,
                law.params().iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(Dataset { features, stride, inputs, target, observed: y.to_vec() })
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.target.len()
    }

    /// True when there are no points.
    pub fn is_empty(&self) -> bool {
        self.target.is_empty()
    }

    /// The points at `rows` (repeats allowed).
    pub fn select(&self, rows: &[usize]) -> Dataset {
        let s = self.stride;
        Dataset {
            features: rows.iter().flat_map(|&i| self.features[i * s..(i + 1) * s].iter().copied()).collect(),
            stride: s,
            inputs: rows.iter().map(|&i| self.inputs[i].clone()).collect(),
            target: rows.iter().map(|&i| self.target[i]).collect(),
            observed: rows.iter().map(|&i| self.observed[i]).collect(),
        }
    }
}

/// Huber loss: r^2/2 inside [-delta, delta], delta (|r| - delta/2) outside.
#[inline]
pub fn huber(delta: f64, r: f64) -> f64 {
    let a = r.abs();
    if a <= delta {
        0.5 * r * r
    } else {
        delta * (a - 0.5 * delta)
    }
}

#[inline]
fn huber_slope(delta: f64, r: f64) -> f64 {
    r.clamp(-delta, delta)
}

/// Summed Huber objective of `law` on `data` at parameter values `theta`, with its gradient.
pub fn objective(law: &dyn Law, data: &Dataset, theta: &[f64], delta: f64, grad: &mut [f64]) -> f64 {
    let k = theta.len();
    let mut g = vec![0.0; k];
    grad[..k].fill(0.0);
    let mut total = 0.0;
    for (i, &t) in data.target.iter().enumerate() {
        let x = &data.features[i * data.stride..(i + 1) * data.stride];
        let y = law.eval_grad(theta, x, &mut g);
        let r = y - t;
        total += huber(delta, r);
        let w = huber_slope(delta, r);
        for j in 0..k {
            grad[j] += w * g[j];
        }
    }
    total
}

/// The objective in unconstrained coordinates, with a one-point cache so that argmin's separate
/// cost and gradient calls at the same point cost one pass over the data.
struct Problem<'a> {
    law: &'a dyn Law,
    data: &'a Dataset,
    delta: f64,
    cache: RefCell<Option<CachedEval>>,
}

/// The last evaluation: parameters, objective, gradient.
type CachedEval = (Vec<f64>, f64, Vec<f64>);

impl Problem<'_> {
    fn evaluate(&self, u: &[f64]) -> (f64, Vec<f64>) {
        if let Some((cu, c, g)) = self.cache.borrow().as_ref() {
            if cu.as_slice() == u {
                return (*c, g.clone());
            }
        }
        let specs = self.law.params();
        let theta: Vec<f64> = specs.iter().zip(u).map(|(p, &ui)| p.transform.value(ui)).collect();
        let mut g = vec![0.0; u.len()];
        let mut cost = objective(self.law, self.data, &theta, self.delta, &mut g);
        for ((gj, p), &uj) in g.iter_mut().zip(specs).zip(u) {
            *gj *= p.transform.derivative(uj);
        }
        if !cost.is_finite() || g.iter().any(|v| !v.is_finite()) {
            cost = f64::INFINITY;
        }
        *self.cache.borrow_mut() = Some((u.to_vec(), cost, g.clone()));
        (cost, g)
    }
}

impl CostFunction for Problem<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, u: &Self::Param) -> Result<f64, argmin::core::Error> {
        Ok(self.evaluate(u).0)
    }
}

impl Gradient for Problem<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, u: &Self::Param) -> Result<Vec<f64>, argmin::core::Error> {
        Ok(self.evaluate(u).1)
    }
}

/// The outcome of L-BFGS from one start.
#[derive(Debug, Clone, PartialEq)]
pub struct StartResult {
    /// Parameter values at the optimum found.
    pub theta: Vec<f64>,
    /// Summed Huber objective there.
    pub objective: f64,
    /// L-BFGS iterations used.
    pub iterations: u64,
    /// True when L-BFGS stopped on its gradient or cost tolerance.
    pub converged: bool,
    /// True when L-BFGS stopped because its line search found no lower point (typical at the
    /// optimum of the piecewise-quadratic Huber objective); false on tolerance or iteration limit.
    pub stalled: bool,
    /// Norm of the objective's gradient at the optimum, in the optimiser's coordinates.
    pub grad_norm: f64,
}

/// Runs L-BFGS from one start (given in parameter units). None when the start is outside the
/// bounds or the objective is not finite there.
pub fn fit_from(law: &dyn Law, data: &Dataset, start: &[f64], opts: &FitOptions) -> Option<StartResult> {
    let specs = law.params();
    let u0: Vec<f64> = specs.iter().zip(start).map(|(p, &v)| p.transform.inverse(v)).collect::<Option<_>>()?;
    let problem = Problem { law, data, delta: opts.huber_delta, cache: RefCell::new(None) };
    if !problem.evaluate(&u0).0.is_finite() {
        return None;
    }
    let at_end = Problem { law, data, delta: opts.huber_delta, cache: RefCell::new(None) };
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), opts.lbfgs_memory)
        .with_tolerance_grad(opts.tol_grad)
        .ok()?
        .with_tolerance_cost(opts.tol_cost)
        .ok()?;
    let result = Executor::new(problem, solver).configure(|s| s.param(u0.clone()).max_iters(opts.max_iters)).run();
    let (u, cost, iterations, converged, stalled) = match result {
        Ok(r) => {
            let state = r.state();
            let status = state.get_termination_status();
            let converged = matches!(status, TerminationStatus::Terminated(TerminationReason::SolverConverged));
            let stalled = matches!(status, TerminationStatus::Terminated(TerminationReason::SolverExit(_)));
            (state.get_best_param()?.clone(), state.get_best_cost(), state.get_iter(), converged, stalled)
        }
        // A failed line search leaves no state behind; the start counts as failed.
        Err(_) => return None,
    };
    if !cost.is_finite() {
        return None;
    }
    let theta: Vec<f64> = specs.iter().zip(&u).map(|(p, &ui)| p.transform.value(ui)).collect();
    let grad_norm = at_end.evaluate(&u).1.iter().map(|g| g * g).sum::<f64>().sqrt();
    theta.iter().all(|v| v.is_finite()).then_some(StartResult {
        theta,
        objective: cost,
        iterations,
        converged,
        stalled,
        grad_norm,
    })
}

/// The best of many starts, with counts that say how well the optimiser behaved.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiStartFit {
    /// The start that reached the lowest objective.
    pub best: StartResult,
    /// Number of starts tried.
    pub starts: usize,
    /// Starts whose L-BFGS stopped on its tolerances.
    pub starts_converged: usize,
    /// Starts whose L-BFGS stopped because the line search found no lower point.
    pub starts_stalled: usize,
    /// Starts stopped by the iteration limit.
    pub starts_max_iters: usize,
    /// Starts that failed (outside bounds, non-finite objective, line search error).
    pub starts_failed: usize,
    /// Starts that ended within 1e-6 (relative) of the best objective.
    pub starts_at_best: usize,
    /// Up to five distinct optima, best first (reused as starts by the bootstrap).
    pub top: Vec<StartResult>,
}

/// Fits `law` to `data` from every start in parallel and keeps the best optimum.
pub fn fit_multistart(
    law: &dyn Law,
    data: &Dataset,
    starts: &[Vec<f64>],
    opts: &FitOptions,
) -> Result<MultiStartFit, FitError> {
    let results: Vec<Option<StartResult>> = starts.par_iter().map(|s| fit_from(law, data, s, opts)).collect();
    summarise(law, starts.len(), results)
}

/// Same as [`fit_multistart`] on one thread (used inside the parallel bootstrap).
pub fn fit_multistart_serial(
    law: &dyn Law,
    data: &Dataset,
    starts: &[Vec<f64>],
    opts: &FitOptions,
) -> Result<MultiStartFit, FitError> {
    let results: Vec<Option<StartResult>> = starts.iter().map(|s| fit_from(law, data, s, opts)).collect();
    summarise(law, starts.len(), results)
}

fn summarise(law: &dyn Law, n_starts: usize, results: Vec<Option<StartResult>>) -> Result<MultiStartFit, FitError> {
    let starts_failed = results.iter().filter(|r| r.is_none()).count();
    let mut ok: Vec<StartResult> = results.into_iter().flatten().collect();
    if ok.is_empty() {
        return Err(FitError::NoFit {
            law: law.name().to_string(),
            message: format!(
                "none of the {n_starts} starts gave a finite fit; check the data's units or give a start grid closer to the data"
            ),
        });
    }
    ok.sort_by(|a, b| a.objective.total_cmp(&b.objective));
    let best_obj = ok[0].objective;
    let tol = 1e-6 * best_obj.abs().max(1e-12);
    let starts_at_best = ok.iter().filter(|r| r.objective - best_obj <= tol).count();
    let starts_converged = ok.iter().filter(|r| r.converged).count();
    let starts_stalled = ok.iter().filter(|r| r.stalled).count();
    let starts_max_iters = ok.len() - starts_converged - starts_stalled;
    let mut top: Vec<StartResult> = Vec::new();
    for r in &ok {
        let distinct = top
            .iter()
            .all(|t| t.theta.iter().zip(&r.theta).any(|(a, b)| (a - b).abs() > 1e-3 * a.abs().max(b.abs()).max(1e-9)));
        if distinct {
            top.push(r.clone());
            if top.len() == 5 {
                break;
            }
        }
    }
    Ok(MultiStartFit {
        best: ok[0].clone(),
        starts: n_starts,
        starts_converged,
        starts_stalled,
        starts_max_iters,
        starts_failed,
        starts_at_best,
        top,
    })
}

/// Coefficient of determination of predictions against observations (in response units).
pub fn r_squared(observed: &[f64], predicted: &[f64]) -> f64 {
    let mean = observed.iter().sum::<f64>() / observed.len() as f64;
    let ss_tot: f64 = observed.iter().map(|y| (y - mean).powi(2)).sum();
    let ss_res: f64 = observed.iter().zip(predicted).map(|(y, p)| (y - p).powi(2)).sum();
    1.0 - ss_res / ss_tot
}
