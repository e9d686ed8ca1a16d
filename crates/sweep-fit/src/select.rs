//! Which rows of a results table the configured laws can use: a law needs a finite value in every
//! column it reads, and a point without one (an integer format has no exponent bits, a sweep
//! without a domain source has no domain loss) is left out of the fit with a warning.

use crate::config::FitConfig;
use crate::error::FitError;
use crate::table::Table;

/// The table columns the configured laws read (variables and responses, after `map`).
pub fn needed_columns(config: &FitConfig) -> Vec<String> {
    let mut cols = Vec::new();
    for law in &config.laws {
        let (vars, response) = match (&law.variables, &law.response) {
            (Some(v), Some(r)) => (v.clone(), r.clone()),
            _ => match crate::laws::builtin_law(&law.name) {
                Ok(l) => (l.variables(), l.response()),
                Err(_) => continue,
            },
        };
        for v in vars.into_iter().chain(std::iter::once(response)) {
            cols.push(law.map.get(&v).cloned().unwrap_or(v));
        }
    }
    cols
}

/// Drops rows that lack a value in one of the `needed` columns, warning how many and which
/// columns; a column the table does not have is left for the fit to report.
pub fn keep_complete_rows(table: Table, needed: &[String]) -> Result<Table, FitError> {
    let n = table.len();
    let keep: Vec<usize> =
        (0..n).filter(|&i| needed.iter().all(|c| table.columns.get(c).is_none_or(|col| col[i].is_finite()))).collect();
    if keep.len() == n {
        return Ok(table);
    }
    let missing: Vec<&String> =
        needed.iter().filter(|c| table.columns.get(*c).is_some_and(|col| col.iter().any(|x| !x.is_finite()))).collect();
    tracing::warn!("{} of {n} points lack {:?} and are left out of the fit", n - keep.len(), missing);
    Ok(table.select_rows(&keep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_without_a_needed_value_are_left_out() {
        let records =
            [[("N", 1.0), ("exp_bits", 4.0), ("loss", 3.0)], [("N", 2.0), ("exp_bits", f64::NAN), ("loss", 2.5)]];
        let table = Table::from_records(records, "test").unwrap();
        let config = FitConfig::from_toml_str(r#"laws = [{ name = "chinchilla" }]"#).unwrap();
        assert_eq!(needed_columns(&config), ["N", "D", "loss"]);
        // D is missing from the table: that is the fit's error to report, not a reason to drop rows.
        let all = keep_complete_rows(table, &needed_columns(&config)).unwrap();
        assert_eq!((all.len(), all.columns["loss"].as_slice()), (2, [3.0, 2.5].as_slice()));
        let table = all;
        let kept = keep_complete_rows(table, &["N".into(), "exp_bits".into()]).unwrap();
        assert_eq!(kept.columns["N"], [1.0]);
        assert_eq!(kept.provenance, "test");
    }
}
