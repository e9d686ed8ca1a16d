//! Helpers shared by the integration tests: simulated data from a known law.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sweep_fit::laws::builtin_law;
use sweep_fit::{Space, Table};

/// Standard normal draws (Box-Muller).
pub struct Normal(pub ChaCha8Rng);

impl Normal {
    pub fn new(seed: u64) -> Normal {
        Normal(ChaCha8Rng::seed_from_u64(seed))
    }
    pub fn sample(&mut self) -> f64 {
        let u1: f64 = 1.0 - self.0.random::<f64>();
        let u2: f64 = self.0.random::<f64>();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Rows of a built-in law's variables, responses drawn from `truth` with noise `sigma`
/// (multiplicative log-normal for log-space laws, additive for raw ones).
pub fn simulate(law_name: &str, truth: &[f64], inputs: &[Vec<f64>], sigma: f64, seed: u64) -> Table {
    let law = builtin_law(law_name).unwrap();
    let mut noise = Normal::new(seed);
    let mut names: Vec<String> = law.variables();
    names.push(law.response());
    let rows: Vec<Vec<f64>> = inputs
        .iter()
        .map(|x| {
            let y = law.predict(truth, x);
            let y = match law.space() {
                Space::Log => y * (sigma * noise.sample()).exp(),
                Space::Raw => y + sigma * noise.sample(),
            };
            let mut row = x.clone();
            row.push(y);
            row
        })
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    Table::from_rows(&refs, &rows, format!("simulated {law_name}")).unwrap()
}

/// Cartesian product of value lists.
pub fn grid(axes: &[&[f64]]) -> Vec<Vec<f64>> {
    let mut out = vec![vec![]];
    for axis in axes {
        out =
            out.into_iter().flat_map(|p: Vec<f64>| axis.iter().map(move |v| [p.clone(), vec![*v]].concat())).collect();
    }
    out
}

/// Log-spaced values.
pub fn logspace(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| 10f64.powf(lo + (hi - lo) * i as f64 / (n - 1) as f64)).collect()
}

/// The repository root (two levels above this crate).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The shared data directory: `$SWEEP_SHARED_DATA` when set (a checkout elsewhere), else
/// `../shared/data` beside the repository.
pub fn shared_data() -> std::path::PathBuf {
    match std::env::var_os("SWEEP_SHARED_DATA") {
        Some(dir) => dir.into(),
        None => repo_root().join("../shared/data"),
    }
}

/// Relative difference.
pub fn rel(a: f64, b: f64) -> f64 {
    ((a - b) / b).abs()
}
