//! The report of a sweep: SVG plots and an index.html that answers what the sweep was run for.
//!
//! The page opens with each law's optimal configurations as tables with units and intervals, then
//! the plots a reader of the scaling-law papers expects, each drawn as soon as its data exists:
//! the compute-optimal frontier of Chinchilla's approaches with bootstrap bands, IsoFLOP profiles,
//! the extrapolation check, residuals, the per-study plots (mixture ratio, vocabulary size,
//! precision), learning curves (a panel per model size) and final loss against compute; then the
//! laws' details and every point. Everything is local (inline style, SVG images by relative
//! path), so the page works from a file:// URL with no network.
//!
//! [`inputs`] reads a sweep directory into [`ReportInputs`] ([`inputs::write_sweep_report`] does
//! both; [`inputs::SweepReader`] does it incrementally for [`live`]); [`write_report`] draws
//! from inputs given by any caller. laws.json is read leniently ([`view`]). Every file is written
//! to a temporary name and renamed into place (not synced: the report is a rebuildable view).

pub mod chart;
pub mod html;
pub mod inputs;
pub mod live;
pub mod plots;
pub mod units;
pub mod view;

pub use inputs::write_sweep_report;
pub use units::si;
pub use view::LawsView;

use plots::Figure;
use std::path::{Path, PathBuf};
use sweep_fit::Table;

/// Errors of report generation.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Writing a file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Drawing a plot failed.
    #[error("drawing {what}: {msg}")]
    Plot {
        /// The plot.
        what: String,
        /// The cause.
        msg: String,
    },
}

/// One point of the sweep, as the report shows it.
#[derive(Debug, Clone)]
pub struct PointSummary {
    /// Point id.
    pub id: String,
    /// Model label from the grid ("tiny", "1e6", ...).
    pub label: String,
    /// Non-embedding parameters.
    pub n: f64,
    /// Training tokens.
    pub d: f64,
    /// Domain mixture ratio.
    pub r: f64,
    /// Vocabulary size.
    pub vocab: usize,
    /// Precision name.
    pub precision: String,
    /// done, failed, running or pending.
    pub state: String,
    /// Final validation loss (finished points).
    pub final_loss: Option<f64>,
    /// (tokens, validation loss) at each evaluation.
    pub curve: Vec<(f64, f64)>,
}

/// What [`write_report`] wrote.
#[derive(Debug, Clone)]
pub struct ReportSummary {
    /// The report directory.
    pub dir: PathBuf,
    /// Files written (plots and index.html), in order.
    pub files: Vec<PathBuf>,
    /// Laws that got no plot, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// Everything the report shows.
#[derive(Debug, Clone, Default)]
pub struct ReportInputs {
    /// Page title.
    pub title: String,
    /// Every point in plan order.
    pub points: Vec<PointSummary>,
    /// The results table of the finished points (the one the laws are fitted to).
    pub table: Option<Table>,
    /// laws.json, when the laws were fitted.
    pub laws: Option<LawsView>,
    /// Why laws.json could not be read, when it exists but cannot.
    pub laws_problem: Option<String>,
}

/// How the page behaves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportOptions {
    /// Reload the page every this many seconds (while `sweep run` runs); None for a finished
    /// report.
    pub reload_seconds: Option<u32>,
}

/// Writes the plots and index.html into `dir` (created if needed).
pub fn write_report(dir: &Path, inputs: &ReportInputs, options: &ReportOptions) -> Result<ReportSummary, ReportError> {
    std::fs::create_dir_all(dir).map_err(|e| ReportError::Io { path: dir.to_path_buf(), source: e })?;
    let (figures, not_drawn, skipped) = figures(inputs);
    let mut files = Vec::new();
    for f in &figures {
        files.push(write_atomic(dir, &f.file, &f.svg)?);
    }
    let html = html::index_html(inputs, options, &figures, &not_drawn, &skipped);
    files.push(write_atomic(dir, "index.html", &html)?);
    Ok(ReportSummary { dir: dir.to_path_buf(), files, skipped })
}

/// What [`figures`] found: the figures in page order, the plots that could not be drawn (what,
/// why) and the laws without a predicted-against-observed plot (law, why).
pub type Figures = (Vec<Figure>, Vec<(String, String)>, Vec<(String, String)>);

/// Every figure the inputs allow.
pub fn figures(inputs: &ReportInputs) -> Figures {
    let (table, laws) = (inputs.table.as_ref(), inputs.laws.as_ref());
    let mut drawn: Vec<(&str, plots::Drawn)> = Vec::new();
    let mut skipped = Vec::new();
    if let Some(laws) = laws {
        drawn.extend(plots::frontier::frontier(table, laws).map(|d| ("the compute-optimal frontier", d)));
    }
    if let Some(t) = table {
        drawn.extend(plots::frontier::isoflop(t, laws).map(|d| ("the IsoFLOP profiles", d)));
    }
    if let Some(laws) = laws {
        drawn.extend(plots::checks::extrapolation(laws).map(|d| ("the extrapolation check", d)));
        if let Some(t) = table {
            drawn.extend(plots::checks::residuals(t, laws).into_iter().map(|d| ("residuals", d)));
        }
    }
    if let Some(t) = table {
        drawn.extend(plots::studies::mixture(t, laws).map(|d| ("loss against mixture ratio", d)));
        drawn.extend(plots::studies::vocab(t, laws).map(|d| ("loss against vocabulary size", d)));
        drawn.extend(plots::studies::precision(t, laws).into_iter().map(|d| ("loss against precision", d)));
    }
    drawn.extend(plots::curves::learning_curves(&inputs.points).map(|d| ("the learning curves", d)));
    if let Some(t) = table {
        drawn.extend(plots::curves::final_loss(t, laws).map(|d| ("final loss against compute", d)));
    }
    if let (Some(t), Some(laws)) = (table, laws) {
        for (law, d) in plots::checks::parity(t, laws) {
            match d {
                Ok(f) => drawn.push(("predicted against observed", Ok(f))),
                Err(why) => skipped.push((law, why)),
            }
        }
    }
    let mut figures = Vec::new();
    let mut not_drawn = Vec::new();
    for (what, d) in drawn {
        match d {
            Ok(f) => figures.push(f),
            Err(why) => not_drawn.push((what.to_string(), why)),
        }
    }
    (figures, not_drawn, skipped)
}

/// Writes `contents` to dir/name whole: a temporary file beside it (sweep-io) renamed into place,
/// so a browser or a reader never sees a part. Not synced to disk: the report is a view that
/// `sweep report` rebuilds from the directory at any time, and a live rewrite must not make a
/// sweep of thousands of short points wait on the disk.
fn write_atomic(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, ReportError> {
    let path = dir.join(name);
    sweep_io::atomic::write_unsynced(&path, contents.as_bytes())
        .map_err(|source| ReportError::Io { path: path.clone(), source })?;
    Ok(path)
}
