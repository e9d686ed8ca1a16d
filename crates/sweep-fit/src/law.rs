//! What a law is: variables, parameters named as in the literature, evaluation with gradient,
//! a start grid. Built-in laws live in [`crate::laws`]; user laws are [`FormulaLaw`]s.

use crate::error::FitError;
use crate::expr::{Formula, Scratch};
use std::cell::RefCell;

/// Where residuals are taken: on log losses (Chinchilla-style) or on raw values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Space {
    /// Residual `log(predicted) - log(observed)`; observations must be positive.
    Log,
    /// Residual `predicted - observed`.
    Raw,
}

/// How the optimiser's unconstrained coordinate `u` maps to a parameter's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transform {
    /// No bounds: value = u.
    Free,
    /// value = lo + exp(u), so value > lo (`lo = 0` gives the log-parametrisation A = exp(a)).
    Lower(f64),
    /// value = hi - exp(u), so value < hi.
    Upper(f64),
    /// value = lo + (hi - lo) / (1 + exp(-u)), so lo < value < hi.
    Interval(f64, f64),
}

impl Transform {
    /// The transform that keeps a parameter inside `[lo, hi]` (infinite ends mean unbounded).
    pub fn from_bounds(lo: f64, hi: f64) -> Transform {
        match (lo.is_finite(), hi.is_finite()) {
            (false, false) => Transform::Free,
            (true, false) => Transform::Lower(lo),
            (false, true) => Transform::Upper(hi),
            (true, true) => Transform::Interval(lo, hi),
        }
    }
    /// Parameter value for unconstrained `u`.
    pub fn value(&self, u: f64) -> f64 {
        match *self {
            Transform::Free => u,
            Transform::Lower(lo) => lo + u.exp(),
            Transform::Upper(hi) => hi - u.exp(),
            Transform::Interval(lo, hi) => lo + (hi - lo) / (1.0 + (-u).exp()),
        }
    }
    /// d value / d u.
    pub fn derivative(&self, u: f64) -> f64 {
        match *self {
            Transform::Free => 1.0,
            Transform::Lower(_) => u.exp(),
            Transform::Upper(_) => -u.exp(),
            Transform::Interval(lo, hi) => {
                let s = 1.0 / (1.0 + (-u).exp());
                (hi - lo) * s * (1.0 - s)
            }
        }
    }
    /// Unconstrained `u` for a parameter value, or None when the value is outside the bounds.
    pub fn inverse(&self, value: f64) -> Option<f64> {
        let u = match *self {
            Transform::Free => value,
            Transform::Lower(lo) => (value - lo).ln(),
            Transform::Upper(hi) => (hi - value).ln(),
            Transform::Interval(lo, hi) => {
                let s = (value - lo) / (hi - lo);
                (s / (1.0 - s)).ln()
            }
        };
        u.is_finite().then_some(u)
    }
    /// The bounds as `[low, high]` (infinite where unbounded).
    pub fn bounds(&self) -> [f64; 2] {
        match *self {
            Transform::Free => [f64::NEG_INFINITY, f64::INFINITY],
            Transform::Lower(lo) => [lo, f64::INFINITY],
            Transform::Upper(hi) => [f64::NEG_INFINITY, hi],
            Transform::Interval(lo, hi) => [lo, hi],
        }
    }
}

/// One parameter of a law: its literature name, its bounds, and its start values.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// Name as in the literature (E, A, B, alpha, beta ...).
    pub name: String,
    /// Bounds, expressed as a reparametrisation.
    pub transform: Transform,
    /// Start values (in the parameter's own units); the start grid is their Cartesian product.
    pub grid: Vec<f64>,
}

impl ParamSpec {
    /// A parameter with the given transform and start values.
    pub fn new(name: &str, transform: Transform, grid: &[f64]) -> ParamSpec {
        ParamSpec { name: name.to_string(), transform, grid: grid.to_vec() }
    }
}

/// A scaling law that can be fitted: the fitter needs nothing else.
pub trait Law: Send + Sync {
    /// Short name used in configs and laws.json (e.g. `chinchilla`).
    fn name(&self) -> &str;
    /// The formula in readable form.
    fn formula(&self) -> String;
    /// Input variables, in the order `eval_grad` receives them.
    fn variables(&self) -> Vec<String>;
    /// The default column holding the observed response (e.g. `loss`).
    fn response(&self) -> String;
    /// Parameters in order, with bounds and start values.
    fn params(&self) -> &[ParamSpec];
    /// Where residuals are taken.
    fn space(&self) -> Space;
    /// Per-point features computed once from the raw variables (default: the variables).
    fn prepare(&self, x: &[f64]) -> Vec<f64> {
        x.to_vec()
    }
    /// Model output in the residual space (log of the prediction for [`Space::Log`]) at
    /// parameter values `theta` and prepared features `x`, with its gradient in `theta`.
    fn eval_grad(&self, theta: &[f64], x: &[f64], grad: &mut [f64]) -> f64;
    /// Checks the raw inputs of one point (e.g. that N > 0); returns what is wrong.
    fn check_inputs(&self, x: &[f64]) -> Result<(), String> {
        for (name, v) in self.variables().iter().zip(x) {
            if !v.is_finite() {
                return Err(format!("{name} = {v} is not finite"));
            }
        }
        Ok(())
    }
    /// Predicted response (in the response's own units) at raw inputs `x`.
    fn predict(&self, theta: &[f64], x: &[f64]) -> f64 {
        let mut g = vec![0.0; theta.len()];
        let y = self.eval_grad(theta, &self.prepare(x), &mut g);
        match self.space() {
            Space::Log => y.exp(),
            Space::Raw => y,
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// A law given as a formula string (built-in or written by a user in TOML).
#[derive(Debug, Clone)]
pub struct FormulaLaw {
    name: String,
    formula: Formula,
    variables: Vec<String>,
    response: String,
    params: Vec<ParamSpec>,
    space: Space,
    positive_variables: bool,
}

impl FormulaLaw {
    /// Parses the formula; every name in it must be a variable or a parameter.
    pub fn new(
        name: &str,
        formula: &str,
        variables: &[&str],
        response: &str,
        params: Vec<ParamSpec>,
        space: Space,
    ) -> Result<FormulaLaw, FitError> {
        let variables: Vec<String> = variables.iter().map(|s| s.to_string()).collect();
        let names: Vec<String> = params.iter().map(|p| p.name.clone()).collect();
        let parsed = Formula::parse(formula, &variables, &names)?;
        Ok(FormulaLaw {
            name: name.to_string(),
            formula: parsed,
            variables,
            response: response.to_string(),
            params,
            space,
            positive_variables: false,
        })
    }
    /// Requires every variable to be positive (for laws with powers of N, D ...).
    pub fn with_positive_variables(mut self) -> FormulaLaw {
        self.positive_variables = true;
        self
    }
}

impl Law for FormulaLaw {
    fn name(&self) -> &str {
        &self.name
    }
    fn formula(&self) -> String {
        format!("{} = {}", self.response, self.formula.source())
    }
    fn variables(&self) -> Vec<String> {
        self.variables.clone()
    }
    fn response(&self) -> String {
        self.response.clone()
    }
    fn params(&self) -> &[ParamSpec] {
        &self.params
    }
    fn space(&self) -> Space {
        self.space
    }
    fn eval_grad(&self, theta: &[f64], x: &[f64], grad: &mut [f64]) -> f64 {
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let y = self.formula.eval_grad(theta, x, &mut s, grad);
            match self.space {
                Space::Raw => y,
                Space::Log => {
                    for g in grad.iter_mut() {
                        *g /= y;
                    }
                    y.ln()
                }
            }
        })
    }
    fn check_inputs(&self, x: &[f64]) -> Result<(), String> {
        for (name, v) in self.variables.iter().zip(x) {
            if !v.is_finite() || (self.positive_variables && *v <= 0.0) {
                let need = if self.positive_variables { "positive and finite" } else { "finite" };
                return Err(format!("{name} = {v} must be {need}"));
            }
        }
        Ok(())
    }
}

/// All combinations of the parameters' start values (the start grid), in parameter order.
pub fn start_grid(params: &[ParamSpec]) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = vec![Vec::new()];
    for p in params {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                p.grid.iter().map(move |&v| {
                    let mut s = prefix.clone();
                    s.push(v);
                    s
                })
            })
            .collect();
    }
    out
}
