//! `sweep report DIR`: plots and index.html of a sweep directory (also written after every fit).

use crate::cmd_fit::results_tables;
use anyhow::Context;
use clap::Args;
use std::path::{Path, PathBuf};
use sweep_report::{PointSummary, ReportSummary};
use sweep_store::status::State;
use sweep_store::Store;

#[derive(Args)]
pub struct ReportArgs {
    /// Sweep directory.
    pub dir: PathBuf,
    /// Where the report goes (default: DIR/report).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(a: ReportArgs) -> anyhow::Result<u8> {
    let store = Store::open(&a.dir)?;
    let out = a.out.clone().unwrap_or_else(|| a.dir.join("report"));
    let s = write_sweep_report(&store, &out)?;
    for (law, why) in &s.skipped {
        eprintln!("{law}: no plot ({why})");
    }
    println!("wrote {} files to {} (open {})", s.files.len(), s.dir.display(), s.dir.join("index.html").display());
    Ok(0)
}

/// Reads the points, their curves, the results table and laws.json (if any) of a sweep and
/// writes the report into `out`.
pub fn write_sweep_report(store: &Store, out: &Path) -> anyhow::Result<ReportSummary> {
    let status = store.status()?;
    let mut points = Vec::with_capacity(status.points.len());
    for ps in &status.points {
        let d = store.point(&ps.id);
        let p = d.read_point().with_context(|| format!("point {}", ps.id))?;
        let final_loss = d.read_result()?.and_then(|r| r["final"]["loss"].as_f64());
        let curve = d
            .read_metrics()?
            .iter()
            .filter_map(|m| Some((m["tokens"].as_f64()?, m["val_loss"]["general"].as_f64()?)))
            .collect();
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
            d: p.tokens as f64,
            r: p.mixture_ratio,
            vocab: p.model.vocab_size as usize,
            precision: p.precision.name.clone(),
            state: state.into(),
            final_loss,
            curve,
        });
    }
    // No finished point yet is not an error for the report: it shows the curves so far.
    let table = results_tables(store).ok().map(|(t, _)| t);
    let laws_path = store.dir.join("laws.json");
    let laws = if laws_path.exists() { Some(sweep_fit::read_laws_json(&laws_path)?) } else { None };
    Ok(sweep_report::write_report(out, &format!("sweep {}", status.name), &points, table.as_ref(), laws.as_ref())?)
}
