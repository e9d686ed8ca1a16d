//! The report's inputs read from a sweep directory: every point as a [`PointSummary`], the
//! results table of the finished points, and laws.json when the laws were fitted.
//!
//! [`SweepReader`] reads incrementally: a finished (done or failed) point never changes during a
//! run, so it is read once and kept; each later read looks only at the points not yet finished
//! (a few file-existence checks each, plus the learning curve of a running point). The live
//! report ([`crate::live`]) rereads after every finished point at that cost; a fresh reader gives
//! the same inputs, so the report stays a function of the directory.

use crate::view::LawsView;
use crate::{PointSummary, ReportInputs, ReportOptions, ReportSummary};
use anyhow::Context;
use std::collections::HashMap;
use std::path::Path;
use sweep_fit::Table;
use sweep_store::results::ResultRow;
use sweep_store::{lease, PointDir, Store};

/// A finished point as read once: its summary and its results-table row (done points only).
#[derive(Debug, Clone)]
struct Finished {
    summary: PointSummary,
    row: Option<ResultRow>,
}

/// Reads a sweep directory into [`ReportInputs`], keeping what cannot change.
#[derive(Debug)]
pub struct SweepReader {
    store: Store,
    name: String,
    ids: Vec<String>,
    /// Each point's summary without state, loss or curve (from point.json, read once).
    base: HashMap<String, PointSummary>,
    finished: HashMap<String, Finished>,
}

fn curve(d: &PointDir) -> std::io::Result<Vec<(f64, f64)>> {
    Ok(d.read_metrics()?.iter().filter_map(|m| Some((m.tokens as f64, m.val_loss?.general?))).collect())
}

impl SweepReader {
    /// A reader of `store`'s points (the manifest's list, read now).
    pub fn new(store: &Store) -> anyhow::Result<SweepReader> {
        let manifest = store.manifest()?;
        Ok(SweepReader {
            store: store.clone(),
            name: manifest.name.clone(),
            ids: store.point_ids()?,
            base: HashMap::new(),
            finished: HashMap::new(),
        })
    }

    fn base(&mut self, id: &str) -> anyhow::Result<PointSummary> {
        if let Some(b) = self.base.get(id) {
            return Ok(b.clone());
        }
        let p = self.store.point(id).read_point().with_context(|| format!("point {id}"))?;
        let b = PointSummary {
            id: id.to_string(),
            label: p.label.clone(),
            n: p.counts.non_embedding_params as f64,
            d: p.tokens as f64,
            r: p.mixture_ratio,
            vocab: p.model.vocab_size as usize,
            precision: p.precision.name.clone(),
            state: "pending".into(),
            final_loss: None,
            curve: Vec::new(),
        };
        self.base.insert(id.to_string(), b.clone());
        Ok(b)
    }

    /// The report's inputs now.
    pub fn read(&mut self) -> anyhow::Result<ReportInputs> {
        let mut points = Vec::with_capacity(self.ids.len());
        for id in self.ids.clone() {
            if let Some(f) = self.finished.get(&id) {
                points.push(f.summary.clone());
                continue;
            }
            let mut s = self.base(&id)?;
            let d = self.store.point(&id);
            if d.is_done() {
                let Some(result) = d.read_result()? else { continue };
                let point = d.read_point()?;
                // A null loss (NaN in the record) is no loss, as the report has always read it.
                s.final_loss = Some(result.final_metrics.loss).filter(|l| !l.is_nan());
                s.state = "done".into();
                s.curve = curve(&d)?;
                let row = ResultRow::new(&point, &result.final_metrics);
                self.finished.insert(id.clone(), Finished { summary: s.clone(), row: Some(row) });
            } else if d.is_failed() {
                s.state = "failed".into();
                s.curve = curve(&d)?;
                self.finished.insert(id.clone(), Finished { summary: s.clone(), row: None });
            } else {
                let running = lease::read(&d.lease_file()).ok().flatten().is_some();
                s.state = if running { "running" } else { "pending" }.into();
                s.curve = curve(&d).unwrap_or_default();
            }
            points.push(s);
        }
        let rows: Vec<&ResultRow> =
            self.ids.iter().filter_map(|id| self.finished.get(id).and_then(|f| f.row.as_ref())).collect();
        let table = if rows.is_empty() {
            None
        } else {
            let provenance = format!("sweep directory {} ({} finished points)", self.store.dir.display(), rows.len());
            Table::from_records(rows.iter().map(|r| r.columns()), provenance).ok()
        };
        let (laws, laws_problem) = match LawsView::read(&self.store.dir.join("laws.json")) {
            Ok(l) => (l, None),
            Err(e) => (None, Some(e)),
        };
        Ok(ReportInputs { title: format!("sweep {}", self.name), points, table, laws, laws_problem })
    }
}

/// Every point of the sweep in plan order, with its learning curve and final loss so far.
pub fn point_summaries(store: &Store) -> anyhow::Result<Vec<PointSummary>> {
    Ok(SweepReader::new(store)?.read()?.points)
}

/// Reads the points, their curves, the results table and laws.json (if any) of a sweep and
/// writes the (finished, not reloading) report into `out`.
pub fn write_sweep_report(store: &Store, out: &Path) -> anyhow::Result<ReportSummary> {
    let inputs = SweepReader::new(store)?.read()?;
    Ok(crate::write_report(out, &inputs, &ReportOptions::default())?)
}
