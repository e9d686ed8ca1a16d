//! One point's directory: point.json, lease, ckpt/, metrics.jsonl, result.json, failed.json.

use crate::fsio;
use crate::records::{to_sorted_json, MetricsRecord, PointResult};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, BufRead, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use sweep_plan::Point;

/// Checkpoints kept per point (besides those its children branch from).
pub const KEEP_CHECKPOINTS: usize = 2;

/// Paths and operations of one point's directory.
#[derive(Debug, Clone)]
pub struct PointDir {
    /// The point id.
    pub id: String,
    /// `<sweep>/points/<id>`.
    pub path: PathBuf,
}

/// Why a point failed (content of failed.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The point id.
    pub id: String,
    /// "diverged", "error", or "parent" (its parent's checkpoint will never come).
    pub kind: String,
    /// What happened, for the user.
    pub reason: String,
    /// Step at which it happened, if known.
    pub step: Option<u64>,
    /// Who ran it.
    pub owner: String,
    /// When (Unix seconds).
    pub failed_unix: f64,
}

impl PointDir {
    /// The directory of point `id` under `sweep_dir`.
    pub fn new(sweep_dir: &Path, id: &str) -> Self {
        PointDir { id: id.to_string(), path: sweep_dir.join("points").join(id) }
    }
    /// `point.json`.
    pub fn point_file(&self) -> PathBuf {
        self.path.join("point.json")
    }
    /// `lease`.
    pub fn lease_file(&self) -> PathBuf {
        self.path.join("lease")
    }
    /// `metrics.jsonl`.
    pub fn metrics_file(&self) -> PathBuf {
        self.path.join("metrics.jsonl")
    }
    /// `result.json`: its presence means done.
    pub fn result_file(&self) -> PathBuf {
        self.path.join("result.json")
    }
    /// `failed.json`.
    pub fn failed_file(&self) -> PathBuf {
        self.path.join("failed.json")
    }
    /// `ckpt/`.
    pub fn ckpt_dir(&self) -> PathBuf {
        self.path.join("ckpt")
    }

    /// The directory of another point of the same sweep (a parent, say).
    pub fn sibling(&self, id: &str) -> PointDir {
        let points = self.path.parent().unwrap_or(Path::new("."));
        PointDir { id: id.to_string(), path: points.join(id) }
    }

    /// The checkpoint of `step`, if it exists (whole: checkpoints are renamed into place).
    pub fn checkpoint_at(&self, step: u64) -> Option<PathBuf> {
        let path = self.ckpt_dir().join(format!("step-{step:010}"));
        path.is_dir().then_some(path)
    }

    /// Reads point.json.
    pub fn read_point(&self) -> io::Result<Point> {
        fsio::read_json(&self.point_file())?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{} is missing", self.point_file().display()))
        })
    }
    /// Whether result.json exists.
    pub fn is_done(&self) -> bool {
        self.result_file().exists()
    }
    /// Whether failed.json exists.
    pub fn is_failed(&self) -> bool {
        self.failed_file().exists()
    }

    /// Appends one metrics record as a line.
    pub fn append_metric(&self, record: &MetricsRecord) -> io::Result<()> {
        let line = to_sorted_json(record).map_err(io::Error::other)?;
        fsio::append_line(&self.metrics_file(), &line.to_string())
    }

    /// All complete metrics records (a torn last line from a crash is skipped).
    pub fn read_metrics(&self) -> io::Result<Vec<MetricsRecord>> {
        Ok(self.metrics_lines()?.iter().filter_map(|l| serde_json::from_str(l).ok()).collect())
    }

    /// The lines of metrics.jsonl (none when it does not exist).
    fn metrics_lines(&self) -> io::Result<Vec<String>> {
        let f = match fs::File::open(self.metrics_file()) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(io::BufReader::new(f).lines().map_while(Result::ok).collect())
    }

    /// The last complete metrics record, read from the file's tail only.
    pub fn last_metric(&self) -> Option<MetricsRecord> {
        let mut f = fs::File::open(self.metrics_file()).ok()?;
        let len = f.metadata().ok()?.len();
        let start = len.saturating_sub(16 * 1024);
        f.seek(SeekFrom::Start(start)).ok()?;
        let mut tail = String::new();
        f.read_to_string(&mut tail).ok()?;
        tail.lines().rev().find_map(|l| serde_json::from_str::<MetricsRecord>(l).ok())
    }

    /// Keeps only records with `step <= max_step` (on resume from a checkpoint at `max_step`).
    /// The kept lines stay as they were written.
    pub fn truncate_metrics(&self, max_step: u64) -> io::Result<()> {
        /// The one key the cut needs, so any complete line qualifies whatever else it holds.
        #[derive(Deserialize)]
        struct Step {
            step: u64,
        }
        let keep: Vec<String> = self
            .metrics_lines()?
            .into_iter()
            .filter(|l| serde_json::from_str::<Step>(l).is_ok_and(|r| r.step <= max_step))
            .map(|l| l + "\n")
            .collect();
        fsio::write_atomic(&self.metrics_file(), keep.concat().as_bytes())
    }

    /// Checkpoint directories, newest first, as (step, path).
    pub fn checkpoints(&self) -> Vec<(u64, PathBuf)> {
        let mut out: Vec<(u64, PathBuf)> = fs::read_dir(self.ckpt_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let step = name.strip_prefix("step-")?.parse().ok()?;
                Some((step, e.path()))
            })
            .collect();
        out.sort_by_key(|e| std::cmp::Reverse(e.0));
        out
    }

    /// Writes a checkpoint for `step`: `fill` writes files into a fresh temporary directory,
    /// which is then synced and renamed to `ckpt/step-<step>`; older ones beyond the last
    /// [`KEEP_CHECKPOINTS`] are removed.
    pub fn write_checkpoint(&self, step: u64, fill: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<PathBuf> {
        self.write_checkpoint_keeping(step, &[], fill)
    }

    /// [`PointDir::write_checkpoint`], never removing the checkpoints of the steps in `keep`
    /// (those children branch from), nor counting them among the last [`KEEP_CHECKPOINTS`].
    pub fn write_checkpoint_keeping(
        &self,
        step: u64,
        keep: &[u64],
        fill: impl FnOnce(&Path) -> io::Result<()>,
    ) -> io::Result<PathBuf> {
        let dir = self.ckpt_dir();
        fs::create_dir_all(&dir)?;
        let final_path = dir.join(format!("step-{step:010}"));
        sweep_io::atomic::write_dir(&final_path, fill)?;
        for (_, old) in self.checkpoints().into_iter().filter(|(s, _)| !keep.contains(s)).skip(KEEP_CHECKPOINTS) {
            let _ = fs::remove_dir_all(old);
        }
        // Temporary directories (hidden names) left by a crash mid-write.
        for e in fs::read_dir(&dir)?.flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        Ok(final_path)
    }

    /// Publishes result.json; false if a result already existed (the point was done elsewhere).
    pub fn publish_result(&self, result: &PointResult) -> io::Result<bool> {
        let value = to_sorted_json(result).map_err(io::Error::other)?;
        let mut text = serde_json::to_vec_pretty(&value).map_err(io::Error::other)?;
        text.push(b'\n');
        fsio::create_exclusive(&self.result_file(), &text)
    }

    /// Reads result.json.
    pub fn read_result(&self) -> io::Result<Option<PointResult>> {
        fsio::read_json(&self.result_file())
    }

    /// Writes failed.json.
    pub fn write_failure(&self, failure: &Failure) -> io::Result<()> {
        fsio::write_json(&self.failed_file(), failure)
    }

    /// Reads failed.json.
    pub fn read_failure(&self) -> io::Result<Option<Failure>> {
        fsio::read_json(&self.failed_file())
    }

    /// Moves failed.json aside (kept as failed.<n>.json) so the point runs again.
    pub fn clear_failure(&self) -> io::Result<bool> {
        if !self.is_failed() {
            return Ok(false);
        }
        let mut n = 1;
        while self.path.join(format!("failed.{n}.json")).exists() {
            n += 1;
        }
        fs::rename(self.failed_file(), self.path.join(format!("failed.{n}.json")))?;
        Ok(true)
    }
}
