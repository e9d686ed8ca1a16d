//! A results table: named numeric columns plus where they came from.

use crate::error::FitError;
use std::collections::BTreeMap;
use std::path::Path;

/// Named numeric columns of equal length, one row per finished run (or per logged evaluation).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Column name → values, all of the same length.
    pub columns: BTreeMap<String, Vec<f64>>,
    /// Where the rows came from (a sweep directory, a CSV path ...), copied into laws.json.
    pub provenance: String,
    /// Columns of a CSV that are not numbers throughout, with the first bad cell (`row 4
    /// (line 5): "abc"`): asking for one names that cell.
    pub non_numeric: BTreeMap<String, String>,
}

impl Table {
    /// Builds a table from columns, checking that they all have the same length.
    pub fn from_columns(columns: BTreeMap<String, Vec<f64>>, provenance: impl Into<String>) -> Result<Table, FitError> {
        let mut lengths = columns.iter().map(|(k, v)| (k, v.len()));
        if let Some((first_name, first_len)) = lengths.next() {
            for (name, len) in lengths {
                if len != first_len {
                    return Err(FitError::data(format!(
                        "column {name} has {len} rows but column {first_name} has {first_len}; give every column the same number of rows"
                    )));
                }
            }
        }
        Ok(Table { columns, provenance: provenance.into(), non_numeric: BTreeMap::new() })
    }

    /// Builds a table from rows of values in the order of `names`.
    pub fn from_rows(names: &[&str], rows: &[Vec<f64>], provenance: impl Into<String>) -> Result<Table, FitError> {
        let mut columns: BTreeMap<String, Vec<f64>> =
            names.iter().map(|n| (n.to_string(), Vec::with_capacity(rows.len()))).collect();
        if columns.len() != names.len() {
            return Err(FitError::data("a column name is given twice; name each column once"));
        }
        for (i, row) in rows.iter().enumerate() {
            if row.len() != names.len() {
                return Err(FitError::data(format!(
                    "row {i} has {} values but {} columns are named ({})",
                    row.len(),
                    names.len(),
                    names.join(", ")
                )));
            }
            for (name, v) in names.iter().zip(row) {
                columns.get_mut(*name).expect("inserted above").push(*v);
            }
        }
        Ok(Table { columns, provenance: provenance.into(), non_numeric: BTreeMap::new() })
    }

    /// Builds a table from records that each give their columns by name (one row per record,
    /// e.g. `sweep_store::results::ResultRow::columns`). Every record must name the same columns.
    pub fn from_records<'a, R>(
        records: impl IntoIterator<Item = R>,
        provenance: impl Into<String>,
    ) -> Result<Table, FitError>
    where
        R: IntoIterator<Item = (&'a str, f64)>,
    {
        let mut columns: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for record in records {
            for (name, v) in record {
                columns.entry(name.to_string()).or_default().push(v);
            }
        }
        Table::from_columns(columns, provenance)
    }

    /// Reads a CSV with a header row. `maps` are `(variable, column)` pairs: the column is also
    /// made available under the variable's name (e.g. `("N", "params")`). Columns whose cells
    /// are not all numbers are left out; asking for one later names the first bad cell by its
    /// row, line and column. An empty cell is a missing value (NaN).
    pub fn from_csv(path: &Path, maps: &[(String, String)]) -> Result<Table, FitError> {
        let csv_err = |message: String| FitError::Csv { path: path.to_path_buf(), message };
        let mut reader =
            csv::ReaderBuilder::new().trim(csv::Trim::All).from_path(path).map_err(|e| match e.kind() {
                csv::ErrorKind::Io(_) => {
                    FitError::Io { path: path.to_path_buf(), source: std::io::Error::other(e.to_string()) }
                }
                _ => csv_err(e.to_string()),
            })?;
        let headers: Vec<String> = reader
            .headers()
            .map_err(|e| csv_err(format!("cannot read the header row: {e}")))?
            .iter()
            .map(str::to_string)
            .collect();
        let mut values: Vec<Vec<f64>> = vec![Vec::new(); headers.len()];
        let mut bad: Vec<Option<String>> = vec![None; headers.len()];
        for (row, record) in reader.records().enumerate() {
            let record = record.map_err(|e| csv_err(format!("row {}: {e}", row + 2)))?;
            if record.len() != headers.len() {
                return Err(csv_err(format!(
                    "line {} has {} fields but the header has {}",
                    row + 2,
                    record.len(),
                    headers.len()
                )));
            }
            for (j, cell) in record.iter().enumerate() {
                match cell.parse::<f64>() {
                    Ok(v) => values[j].push(v),
                    Err(_) if cell.is_empty() => values[j].push(f64::NAN),
                    Err(_) => {
                        if bad[j].is_none() {
                            bad[j] = Some(format!("row {} (line {}) holds {cell:?}", row + 1, row + 2));
                        }
                        values[j].push(f64::NAN);
                    }
                }
            }
        }
        let mut columns = BTreeMap::new();
        let mut non_numeric = BTreeMap::new();
        for ((name, col), bad) in headers.iter().zip(values).zip(bad) {
            match bad {
                None => {
                    columns.insert(name.clone(), col);
                }
                Some(where_) => {
                    non_numeric.insert(name.clone(), where_);
                }
            }
        }
        for (var, column) in maps {
            if let Some(where_) = non_numeric.get(column) {
                return Err(csv_err(format!(
                    "column {column} (mapped to {var}) is not a number in every row: {where_}; fix that cell or leave it empty"
                )));
            }
            let Some(col) = columns.get(column).cloned() else {
                return Err(csv_err(format!(
                    "--map {var}={column}: no column {column}; the columns are {}",
                    headers.join(", ")
                )));
            };
            columns.insert(var.clone(), col);
        }
        Ok(Table { columns, provenance: format!("csv:{}", path.display()), non_numeric })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.columns.values().next().map_or(0, Vec::len)
    }

    /// True when the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The column `name`, or an error listing the columns there are.
    pub fn column(&self, name: &str) -> Result<&[f64], FitError> {
        if let Some(where_) = self.non_numeric.get(name) {
            return Err(FitError::data(format!(
                "column {name} of {} is not a number in every row: {where_}; fix that cell or leave it empty",
                if self.provenance.is_empty() { "the table" } else { &self.provenance }
            )));
        }
        self.columns.get(name).map(Vec::as_slice).ok_or_else(|| {
            FitError::data(format!(
                "no column {name} in {}; the columns are {}; map one with --map {name}=COLUMN or [fit.laws.map]",
                if self.provenance.is_empty() { "the table" } else { &self.provenance },
                self.columns.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// A table of the rows at `rows` (repeats allowed), same columns.
    pub fn select_rows(&self, rows: &[usize]) -> Table {
        let columns = self.columns.iter().map(|(k, v)| (k.clone(), rows.iter().map(|&i| v[i]).collect())).collect();
        Table { columns, provenance: self.provenance.clone(), non_numeric: self.non_numeric.clone() }
    }

    /// Adds or replaces a column (its length must match the table's).
    pub fn insert(&mut self, name: impl Into<String>, values: Vec<f64>) -> Result<(), FitError> {
        let name = name.into();
        if !self.columns.is_empty() && values.len() != self.len() {
            return Err(FitError::data(format!(
                "column {name} has {} rows but the table has {}",
                values.len(),
                self.len()
            )));
        }
        self.columns.insert(name, values);
        Ok(())
    }
}
