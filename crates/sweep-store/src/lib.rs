//! sweep-store: the sweep directory, the only truth of a sweep. Manifest, per-point directories,
//! leases, crash-safe writes, status, and the worker loop that drives a training backend; the
//! typed records its files hold ([`records`]: metrics, results, events), the results table of
//! its finished points ([`results`]), the Slurm job-array scripts that run it ([`slurm`]), and
//! when a staged point may start ([`tree`]).
//!
//! ```no_run
//! let plan = sweep_plan::load(std::path::Path::new("configs/simulate.toml"), None).unwrap();
//! let (store, change) = sweep_store::Store::prepare(&plan.sweep_dir(None), &plan, false).unwrap();
//! println!("{} new points", change.added.len());
//! let status = store.status().unwrap();
//! println!("{} of {} done", status.counts.done, status.counts.total);
//! ```

pub mod backend;
pub mod fsio;
pub mod lease;
pub mod manifest;
pub mod pointdir;
pub mod records;
pub mod results;
pub mod slurm;
pub mod status;
pub mod tree;
pub mod worker;

pub use backend::{Control, Outcome, Trainer};
pub use manifest::{Change, Manifest};
pub use pointdir::PointDir;
pub use records::{Event, EventRecord, FinalMetrics, MetricsRecord, PerSource, PointResult};

use std::path::{Path, PathBuf};
use sweep_plan::Plan;

/// Errors opening or preparing a sweep directory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// File-system failure, with the path.
    #[error("{path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a sweep directory.
    #[error("{0} is not a sweep directory (no manifest.json); run `sweep run CONFIG` to create one")]
    NotASweep(PathBuf),
    /// The config drops points that have work in the directory.
    #[error("{0}")]
    Incompatible(String),
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// An opened sweep directory.
#[derive(Debug, Clone)]
pub struct Store {
    /// `<out>/<name>`.
    pub dir: PathBuf,
}

impl Store {
    /// Opens an existing sweep directory.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        if !dir.join("manifest.json").exists() {
            return Err(StoreError::NotASweep(dir.to_path_buf()));
        }
        Ok(Store { dir: dir.to_path_buf() })
    }

    /// Creates or reopens the sweep directory for `plan`. A change that would drop points with
    /// work in the directory is refused unless `force`; every point's point.json is written.
    pub fn prepare(dir: &Path, plan: &Plan, force: bool) -> Result<(Store, Change), StoreError> {
        std::fs::create_dir_all(dir.join("points")).map_err(io_at(dir))?;
        let old = manifest::read(dir).map_err(io_at(dir))?;
        let now = fsio::unix_now();
        let (change, revisions) = match &old {
            None => {
                let ids: Vec<String> = plan.points.iter().map(|p| p.id.clone()).collect();
                let rev = manifest::Revision {
                    config_hash: plan.config_hash.clone(),
                    applied_unix: now,
                    added: ids.clone(),
                    removed: vec![],
                };
                (Change { created: true, added: ids, ..Default::default() }, vec![rev])
            }
            Some(old) => {
                let change = manifest::diff(dir, old, plan);
                if !change.is_compatible() && !force {
                    return Err(StoreError::Incompatible(format!(
                        "the config no longer contains {} point(s) that have results or checkpoints in {} ({}{}); {} point(s) are new. \
                         Run with --force to accept the new grid (the old points' files stay on disk), or use --out to start a separate sweep",
                        change.removed_with_work.len(),
                        dir.display(),
                        change.removed_with_work.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
                        if change.removed_with_work.len() > 5 { ", ..." } else { "" },
                        change.added.len()
                    )));
                }
                let mut revs = old.revisions.clone();
                if !change.added.is_empty() || !change.removed.is_empty() || old.config_hash != plan.config_hash {
                    revs.push(manifest::Revision {
                        config_hash: plan.config_hash.clone(),
                        applied_unix: now,
                        added: change.added.clone(),
                        removed: change.removed.clone(),
                    });
                }
                (change, revs)
            }
        };
        let store = Store { dir: dir.to_path_buf() };
        for p in &plan.points {
            let pd = store.point(&p.id);
            std::fs::create_dir_all(&pd.path).map_err(io_at(&pd.path))?;
            let fresh = serde_json::to_value(p).expect("points serialise");
            let current: Option<serde_json::Value> = fsio::read_json(&pd.point_file()).ok().flatten();
            if current.as_ref() != Some(&fresh) {
                fsio::write_json(&pd.point_file(), &fresh).map_err(io_at(&pd.point_file()))?;
            }
        }
        let m = manifest::from_plan(plan, revisions);
        if old.as_ref() != Some(&m) {
            fsio::write_json(&dir.join("manifest.json"), &m).map_err(io_at(dir))?;
        }
        Ok((store, change))
    }

    /// The manifest.
    pub fn manifest(&self) -> Result<Manifest, StoreError> {
        manifest::read(&self.dir).map_err(io_at(&self.dir))?.ok_or_else(|| StoreError::NotASweep(self.dir.clone()))
    }

    /// Point ids in plan order.
    pub fn point_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.manifest()?.point_ids)
    }

    /// The directory of one point.
    pub fn point(&self, id: &str) -> PointDir {
        PointDir::new(&self.dir, id)
    }

    /// Status of every point.
    pub fn status(&self) -> Result<status::SweepStatus, StoreError> {
        let m = self.manifest()?;
        Ok(status::sweep_status(&self.dir, &m.name, &m.point_ids))
    }

    /// Appends an event of point `id` to events.jsonl (best effort: events are a log, not the
    /// truth).
    pub fn event(&self, id: &str, event: Event) {
        let record = EventRecord { t: fsio::unix_now(), point: id.to_string(), pid: std::process::id(), event };
        let written = records::to_sorted_json(&record)
            .map_err(std::io::Error::other)
            .and_then(|line| fsio::append_line(&self.dir.join("events.jsonl"), &line.to_string()));
        if let Err(e) = written {
            tracing::debug!("could not log event: {e}");
        }
    }

    /// Clears failed.json of every failed point (kept as failed.N.json); returns how many.
    pub fn retry_failed(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        for id in self.point_ids()? {
            let d = self.point(&id);
            if d.clear_failure().map_err(io_at(&d.path))? {
                n += 1;
            }
        }
        Ok(n)
    }
}
