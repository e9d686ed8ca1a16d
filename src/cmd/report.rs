//! `sweep report DIR`: plots and index.html of a sweep directory (also written after every fit).

use clap::Args;
use std::path::PathBuf;
use sweep_report::write_sweep_report;
use sweep_store::Store;

/// Arguments of `sweep report`.
#[derive(Args)]
pub struct ReportArgs {
    /// Sweep directory.
    pub dir: PathBuf,
    /// Where the report goes (default: DIR/report).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs `sweep report`.
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

/// Writes DIR/report. The report is a view of the directory: a problem drawing it is a warning,
/// never a failed sweep.
pub fn write_report(store: &Store) {
    match write_sweep_report(store, &store.dir.join("report")) {
        Ok(r) => tracing::info!("report: {}", r.dir.join("index.html").display()),
        Err(e) => {
            tracing::warn!("writing the report failed: {e:#}; run `sweep report {}` to retry", store.dir.display())
        }
    }
}
