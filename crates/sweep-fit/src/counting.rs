//! Counting conventions: which parameters a law's N counts and how its training compute C is
//! counted. Papers differ (Kaplan et al. count non-embedding parameters and 6ND over them;
//! Hoffmann et al. all parameters; Tao et al. split N_nv and N_v), and with small models and
//! large vocabularies the choice moves the fitted exponents (Porian et al. 2024). Each built-in
//! law defaults to its paper's convention; `[[fit.laws]] counting = { parameters, compute }`
//! chooses another. The convention picks the results-table column each of the law's `N` and `C`
//! reads, and the FLOPs per token the compute-optimal questions hold fixed.

use crate::table::Table;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which parameters N counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parameters {
    /// All parameters, embeddings included (Hoffmann et al. 2022): column `N_total`.
    All,
    /// Parameters outside the embedding and output matrices (Kaplan et al. 2020): column `N`.
    NonEmbedding,
    /// The embedding (and untied output) parameters: column `N_emb`.
    Embedding,
}

/// How training compute C is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compute {
    /// 6 N D over all parameters: column `C_total`.
    #[serde(rename = "6ND_all")]
    SixNdAll,
    /// 6 N D over non-embedding parameters: column `C`.
    #[serde(rename = "6ND_non_embedding")]
    SixNdNonEmbedding,
    /// Chinchilla's appendix F count (embeddings, attention logits, the output head; backward
    /// twice the forward): column `C_chinchilla`.
    #[serde(rename = "appendix_f")]
    AppendixF,
}

impl Parameters {
    /// The results-table column of this count.
    pub fn column(self) -> &'static str {
        match self {
            Parameters::All => "N_total",
            Parameters::NonEmbedding => "N",
            Parameters::Embedding => "N_emb",
        }
    }
    /// The name used in configs and laws.json.
    pub fn name(self) -> &'static str {
        match self {
            Parameters::All => "all",
            Parameters::NonEmbedding => "non_embedding",
            Parameters::Embedding => "embedding",
        }
    }
}

impl Compute {
    /// The results-table column of this count.
    pub fn column(self) -> &'static str {
        match self {
            Compute::SixNdAll => "C_total",
            Compute::SixNdNonEmbedding => "C",
            Compute::AppendixF => "C_chinchilla",
        }
    }
    /// The name used in configs and laws.json.
    pub fn name(self) -> &'static str {
        match self {
            Compute::SixNdAll => "6ND_all",
            Compute::SixNdNonEmbedding => "6ND_non_embedding",
            Compute::AppendixF => "appendix_f",
        }
    }
    /// True when C = 6 N D holds exactly for N counted as `parameters`.
    pub fn is_six_nd_of(self, parameters: Parameters) -> bool {
        matches!(
            (self, parameters),
            (Compute::SixNdAll, Parameters::All) | (Compute::SixNdNonEmbedding, Parameters::NonEmbedding)
        )
    }
}

/// `counting = { parameters = "...", compute = "..." }` of a `[[fit.laws]]` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountingConfig {
    /// Which parameters N counts; the law's paper's convention when absent.
    pub parameters: Option<Parameters>,
    /// How C is counted; the law's paper's convention when absent.
    pub compute: Option<Compute>,
}

/// A law's conventions, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Convention {
    /// Which parameters N counts.
    pub parameters: Parameters,
    /// How C is counted.
    pub compute: Compute,
}

/// The convention of a built-in law's paper (or, for a user law, the table's plain `N` and `C`):
/// Chinchilla (approaches 1-3), D-CPT, CMR and data-constrained laws count all parameters and
/// 6ND over them; Kaplan, fp_quant, quant_degradation and user laws non-embedding parameters.
/// The vocabulary law has its own split (N_nv, N_v; C = 6 (N_nv + N_v) D) and no choice.
pub fn paper_convention(law: &str) -> Convention {
    let all = Convention { parameters: Parameters::All, compute: Compute::SixNdAll };
    let non_embedding = Convention { parameters: Parameters::NonEmbedding, compute: Compute::SixNdNonEmbedding };
    match law {
        "chinchilla"
        | "chinchilla_approach1"
        | "chinchilla_approach2"
        | "dcpt_general"
        | "dcpt_domain"
        | "cmr"
        | "data_constrained" => all,
        "vocab" => Convention { parameters: Parameters::NonEmbedding, compute: Compute::SixNdAll },
        _ => non_embedding,
    }
}

/// The convention of a config entry: its paper's, overridden by `counting`.
pub fn convention(law: &str, config: Option<&CountingConfig>) -> Convention {
    let mut c = paper_convention(law);
    if let Some(cfg) = config {
        if let Some(p) = cfg.parameters {
            c.parameters = p;
        }
        if let Some(x) = cfg.compute {
            c.compute = x;
        }
    }
    c
}

/// The column a law variable reads under a convention: `N` by the parameter count, `C` by the
/// compute count, anything else under its own name.
pub fn convention_column(variable: &str, convention: Convention) -> String {
    match variable {
        "N" => convention.parameters.column().to_string(),
        "C" => convention.compute.column().to_string(),
        other => other.to_string(),
    }
}

/// Training FLOPs per token as a function of the law's N, `k N^p`: what the compute-optimal
/// questions hold fixed while trading N against D under a budget C.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlopsPerToken {
    /// Coefficient k.
    pub k: f64,
    /// Exponent p.
    pub p: f64,
    /// False when exact (C = 6ND over the law's own N: k = 6, p = 1); true when fitted by least
    /// squares of ln(C/D) on ln N over the table's rows (the sweep's shape family).
    pub fitted: bool,
}

impl FlopsPerToken {
    /// C = 6 N D exactly.
    pub const SIX_N: FlopsPerToken = FlopsPerToken { k: 6.0, p: 1.0, fitted: false };

    /// FLOPs per token at N.
    pub fn at(&self, n: f64) -> f64 {
        self.k * n.powf(self.p)
    }

    /// Tokens D that budget C buys at size N.
    pub fn tokens(&self, budget: f64, n: f64) -> f64 {
        budget / self.at(n)
    }

    /// The relation for a convention: exact when C is 6ND over the law's N, else fitted to the
    /// table's rows (columns of N, D and C under the convention). None when it cannot be fitted
    /// (fewer than two distinct N).
    pub fn for_convention(convention: Convention, table: &Table) -> Option<FlopsPerToken> {
        if convention.compute.is_six_nd_of(convention.parameters) {
            return Some(FlopsPerToken::SIX_N);
        }
        let n = table.column(convention.parameters.column()).ok()?;
        let d = table.column("D").ok()?;
        let c = table.column(convention.compute.column()).ok()?;
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..n.len() {
            if n[i] > 0.0 && d[i] > 0.0 && c[i] > 0.0 && (n[i] * d[i] * c[i]).is_finite() {
                x.push(n[i].ln());
                y.push((c[i] / d[i]).ln());
            }
        }
        let mut distinct = x.clone();
        distinct.sort_by(f64::total_cmp);
        distinct.dedup();
        if distinct.len() < 2 {
            return None;
        }
        let (c0, c1, _, _) = crate::approaches::linear_fit(&x, &y);
        Some(FlopsPerToken { k: c0.exp(), p: c1, fitted: true })
    }
}

/// A law's conventions as laws.json records them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counting {
    /// `all`, `non_embedding` or `embedding` (what N counts); for the vocabulary law
    /// `non_embedding` is N_nv, with N_v the vocabulary parameters V d beside it.
    pub parameters: String,
    /// `6ND_all`, `6ND_non_embedding` or `appendix_f` (how C is counted; the budgets of
    /// `[fit.optimal]` are in this count).
    pub compute: String,
    /// Each of the law's variables that the convention places → the column read.
    pub columns: BTreeMap<String, String>,
    /// True when the table had no column for the convention (a CSV) and the law read the column
    /// named after its variable instead: the convention is then the table's own claim.
    #[serde(default)]
    pub assumed: bool,
    /// FLOPs per token against N held fixed by the compute-optimal questions (null when the law
    /// asks none).
    pub flops_per_token: Option<FlopsPerToken>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn papers_conventions_and_their_columns() {
        let c = paper_convention("chinchilla");
        assert_eq!((convention_column("N", c), convention_column("C", c)), ("N_total".into(), "C_total".into()));
        let k = paper_convention("kaplan");
        assert_eq!((convention_column("N", k), convention_column("C", k)), ("N".into(), "C".into()));
        let over = convention(
            "chinchilla",
            Some(&CountingConfig { parameters: Some(Parameters::NonEmbedding), compute: Some(Compute::AppendixF) }),
        );
        assert_eq!(convention_column("C", over), "C_chinchilla");
        assert_eq!(convention_column("D", over), "D");
    }

    #[test]
    fn flops_per_token_is_exact_or_fitted_from_the_rows() {
        let c = paper_convention("chinchilla");
        let t = Table::default();
        assert_eq!(FlopsPerToken::for_convention(c, &t), Some(FlopsPerToken::SIX_N));
        // Rows with C = 3 N^1.1 D: the fit recovers k and p.
        let rows: Vec<Vec<f64>> =
            [1e5, 1e6, 1e7].iter().map(|&n: &f64| vec![n, 1e9, 3.0 * n.powf(1.1) * 1e9]).collect();
        let t = Table::from_rows(&["N", "D", "C_chinchilla"], &rows, "t").unwrap();
        let f = FlopsPerToken::for_convention(
            Convention { parameters: Parameters::NonEmbedding, compute: Compute::AppendixF },
            &t,
        )
        .unwrap();
        assert!((f.k - 3.0).abs() < 1e-9 && (f.p - 1.1).abs() < 1e-12 && f.fitted, "{f:?}");
    }
}
