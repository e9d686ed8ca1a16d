//! The report's inputs read from a sweep directory: every point as a [`PointSummary`], the
//! results table of the finished points, and laws.json when the laws were fitted.

use crate::{PointSummary, ReportSummary};
use anyhow::Context;
use std::path::Path;
use sweep_fit::Table;
use sweep_store::results::{ResultRow, SweepResults};
use sweep_store::status::{State, SweepStatus};
use sweep_store::Store;

/// Every point of the sweep in plan order, with its learning curve and final loss so far.
pub fn point_summaries(store: &Store, status: &SweepStatus) -> anyhow::Result<Vec<PointSummary>> {
    let mut points = Vec::with_capacity(status.points.len());
    for ps in &status.points {
        let d = store.point(&ps.id);
        let p = d.read_point().with_context(|| format!("point {}", ps.id))?;
        // A null loss (NaN in the record) is no loss, as the report has always read it.
        let final_loss = d.read_result()?.map(|r| r.final_metrics.loss).filter(|l| !l.is_nan());
        let curve = d.read_metrics()?.iter().filter_map(|m| Some((m.tokens as f64, m.val_loss?.general?))).collect();
        let state = match ps.state {
            State::Done => "done",
            State::Failed => "failed",
            State::Running => "running",
            State::Pending => "pending",
        };
        points.push(PointSummary {
            id: ps.id.clone(),
            label: ps.label.clone(),
            n: p.counts.non_embedding_params as f64,
            n_total: p.counts.total_params as f64,
            d: p.tokens as f64,
            r: p.mixture_ratio,
            vocab: p.model.vocab_size as usize,
            precision: p.precision.name.clone(),
            state: state.into(),
            final_loss,
            curve,
        });
    }
    Ok(points)
}

/// The results table of the finished points (the one the laws are fitted to); None before any
/// point finished, or when the results cannot be read: the report then shows the curves so far.
pub fn results_table(store: &Store) -> Option<Table> {
    let results = SweepResults::read(store).ok().filter(|r| !r.rows.is_empty())?;
    Table::from_records(results.rows.iter().map(ResultRow::columns), results.provenance()).ok()
}

/// Reads the points, their curves, the results table and laws.json (if any) of a sweep and
/// writes the report into `out`.
pub fn write_sweep_report(store: &Store, out: &Path) -> anyhow::Result<ReportSummary> {
    let status = store.status()?;
    let points = point_summaries(store, &status)?;
    let table = results_table(store);
    let laws_path = store.dir.join("laws.json");
    let laws = if laws_path.exists() { Some(sweep_fit::read_laws_json(&laws_path)?) } else { None };
    Ok(crate::write_report(out, &format!("sweep {}", status.name), &points, table.as_ref(), laws.as_ref())?)
}
