//! The report's plots. Each function looks at what the results table and laws.json hold and
//! returns the figures it can draw from them (none when its data is absent), so a plot appears
//! as soon as its data does, and a new law with the fields a plot reads appears without code.
//!
//! - [`curves`]: learning curves (one panel per model size), final loss against compute.
//! - [`frontier`]: the compute-optimal frontier of Chinchilla's approaches, IsoFLOP profiles.
//! - [`checks`]: the extrapolation check, residuals, predicted against observed.
//! - [`studies`]: loss against mixture ratio, vocabulary size, bits and exponent/mantissa split.

pub mod checks;
pub mod curves;
pub mod frontier;
pub mod studies;

use crate::view::LawView;
use sweep_fit::{Law, Table};

/// One drawn figure.
#[derive(Debug, Clone)]
pub struct Figure {
    /// File name in the report directory.
    pub file: String,
    /// What it shows (the page's caption and the image's alt text).
    pub caption: String,
    /// The SVG text.
    pub svg: String,
    /// Natural size in pixels.
    pub size: (u32, u32),
}

impl Figure {
    /// A figure of `size` pixels.
    pub fn new(file: impl Into<String>, caption: impl Into<String>, svg: String, size: (u32, u32)) -> Figure {
        Figure { file: file.into(), caption: caption.into(), svg, size }
    }
}

/// A figure, or why it was not drawn (shown on the page).
pub type Drawn = Result<Figure, String>;

/// A column of the table, when present.
pub fn col<'a>(table: &'a Table, name: &str) -> Option<&'a [f64]> {
    table.columns.get(name).map(Vec::as_slice)
}

/// A fitted built-in law that can predict: its parameters from laws.json and, per variable,
/// the table column it was fitted to.
pub struct Model {
    /// The law.
    pub law: Box<dyn Law>,
    /// Parameters in the law's order.
    pub theta: Vec<f64>,
    /// The law's variables.
    pub vars: Vec<String>,
    /// The column of each variable.
    pub columns: Vec<String>,
    /// The response's column.
    pub response: String,
}

impl Model {
    /// The model of a fitted built-in parametric law; Err(reason) otherwise.
    pub fn of(entry: &LawView) -> Result<Model, String> {
        if !entry.fitted() {
            return Err("not fitted".into());
        }
        if entry.kind != "parametric" && !entry.kind.is_empty() {
            return Err(format!("{} fits are not a formula with a prediction per point", entry.kind));
        }
        let law = sweep_fit::laws::builtin_law(&entry.name)
            .map_err(|_| "not a built-in law (user formulas are listed, not plotted)".to_string())?;
        let names: Vec<String> = law.params().iter().map(|p| p.name.clone()).collect();
        let theta = entry.theta(&names).ok_or("laws.json lacks one of the law's parameters")?;
        let vars = law.variables();
        let columns = vars.iter().map(|v| entry.column(v).to_string()).collect();
        let response = entry.column(&law.response()).to_string();
        Ok(Model { law, theta, vars, columns, response })
    }

    /// The prediction at inputs given by variable name (`value(var)`); NaN when one is missing
    /// or the law rejects them.
    pub fn predict_with(&self, value: impl Fn(&str) -> Option<f64>) -> f64 {
        let x: Option<Vec<f64>> = self.vars.iter().map(|v| value(v)).collect();
        match x {
            Some(x) if self.law.check_inputs(&x).is_ok() => self.law.predict(&self.theta, &x),
            _ => f64::NAN,
        }
    }

    /// (row, inputs, observed, predicted) for every row of `table` with all of the law's columns.
    pub fn rows(&self, table: &Table) -> Vec<(usize, Vec<f64>, f64, f64)> {
        let cols: Option<Vec<&[f64]>> = self.columns.iter().map(|c| col(table, c)).collect();
        let (Some(cols), Some(obs)) = (cols, col(table, &self.response)) else { return Vec::new() };
        (0..table.len())
            .filter_map(|i| {
                let x: Vec<f64> = cols.iter().map(|c| c[i]).collect();
                if !obs[i].is_finite() || x.iter().any(|v| !v.is_finite()) || self.law.check_inputs(&x).is_err() {
                    return None;
                }
                let p = self.law.predict(&self.theta, &x);
                p.is_finite().then_some((i, x, obs[i], p))
            })
            .collect()
    }
}

/// A file name from a law name.
pub fn file_safe(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// Groups rows by a budget: the `C_budget` column (the IsoFLOP budget each point was placed on)
/// when the table has it, else `compute` clustered within 10% of the group's smallest (token counts are rounded to whole
/// steps, so the points of one budget differ slightly), provided the groups look like a design of
/// separate budgets; else none. Returns (budget, rows) in budget order, and whether the budgets
/// are exact.
pub fn budget_groups(table: &Table, compute: &str, rows: &[usize]) -> (Vec<(f64, Vec<usize>)>, bool) {
    if let Some(b) = col(table, "C_budget").filter(|b| rows.iter().any(|&i| b[i].is_finite())) {
        let mut groups: Vec<(f64, Vec<usize>)> = Vec::new();
        for &i in rows.iter().filter(|&&i| b[i].is_finite()) {
            match groups.iter_mut().find(|g| g.0 == b[i]) {
                Some(g) => g.1.push(i),
                None => groups.push((b[i], vec![i])),
            }
        }
        groups.sort_by(|a, b| a.0.total_cmp(&b.0));
        return (groups, true);
    }
    let Some(c) = col(table, compute) else { return (Vec::new(), false) };
    let mut order: Vec<usize> = rows.iter().copied().filter(|&i| c[i].is_finite() && c[i] > 0.0).collect();
    order.sort_by(|&i, &j| c[i].total_cmp(&c[j]));
    let mut groups: Vec<(f64, Vec<usize>)> = Vec::new();
    for i in order {
        match groups.last_mut() {
            Some(g) if c[i] <= c[g.1[0]] * 1.1 => g.1.push(i),
            _ => groups.push((c[i], vec![i])),
        }
    }
    // Each group's budget: the geometric mean of its members' compute.
    for g in &mut groups {
        g.0 = (g.1.iter().map(|&i| c[i].ln()).sum::<f64>() / g.1.len() as f64).exp();
    }
    // Only a design of separate budgets groups this way: the groups of several points must hold
    // most rows and lie at least 1.5x apart (a dense grid of N and D also has points within 10%
    // of each other's compute, but in a continuum).
    let multi: Vec<f64> = groups.iter().filter(|g| g.1.len() >= 2).map(|g| g.0).collect();
    let covered: usize = groups.iter().filter(|g| g.1.len() >= 2).map(|g| g.1.len()).sum();
    if 2 * covered < rows.len() || multi.windows(2).any(|w| w[1] < 1.5 * w[0]) {
        return (Vec::new(), false);
    }
    (groups, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_group_by_the_recorded_budget_or_by_compute_within_ten_percent() {
        let t = Table::from_rows(
            &["C", "N"],
            &[vec![1.00e18, 1.0], vec![1.03e18, 2.0], vec![0.98e18, 3.0], vec![4e18, 1.0], vec![4.1e18, 2.0]],
            "t",
        )
        .unwrap();
        let (g, exact) = budget_groups(&t, "C", &[0, 1, 2, 3, 4]);
        assert!(!exact);
        // A continuum of compute values is no design of budgets.
        let dense =
            Table::from_rows(&["C"], &(0..40).map(|i| vec![1e18 * 1.04f64.powi(i)]).collect::<Vec<_>>(), "t").unwrap();
        assert!(budget_groups(&dense, "C", &(0..40).collect::<Vec<_>>()).0.is_empty());
        assert_eq!(g.iter().map(|g| g.1.len()).collect::<Vec<_>>(), [3, 2]);
        assert!((g[0].0 / 1e18 - 1.0).abs() < 0.02);
        let mut t2 = t.clone();
        t2.columns.insert("C_budget".into(), vec![1e18, 1e18, 2e18, f64::NAN, 2e18]);
        let (g, exact) = budget_groups(&t2, "C", &[0, 1, 2, 3, 4]);
        assert!(exact);
        assert_eq!(g, vec![(1e18, vec![0, 1]), (2e18, vec![2, 4])]);
    }
}
