//! manifest.json: the config as given, its hash, and the ordered point ids; plus the check that
//! a re-run config is compatible with what the directory already holds.

use crate::fsio;
use crate::pointdir::PointDir;
use serde::{Deserialize, Serialize};
use std::path::Path;
use sweep_plan::Plan;

/// Current manifest format.
pub const MANIFEST_VERSION: u32 = 1;

/// One change of the sweep's config, for the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    /// Hash of the config text and profile.
    pub config_hash: String,
    /// When it was applied.
    pub applied_unix: f64,
    /// Points added by it.
    pub added: Vec<String>,
    /// Points dropped by it.
    pub removed: Vec<String>,
}

/// The content of manifest.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub schema_version: u32,
    /// Sweep name.
    pub name: String,
    /// Config path as given on the command line.
    pub config_path: String,
    /// Profile applied.
    pub profile: Option<String>,
    /// Hash of the config text and profile.
    pub config_hash: String,
    /// The config text as given.
    pub config_text: String,
    /// Point ids in plan order.
    pub point_ids: Vec<String>,
    /// Config changes over the sweep's life, oldest first.
    pub revisions: Vec<Revision>,
}

/// What changed between the directory's grid and the config's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    /// The directory was created now.
    pub created: bool,
    /// Points in the config but not the directory.
    pub added: Vec<String>,
    /// Points in the directory but no longer in the config.
    pub removed: Vec<String>,
    /// Of `removed`, those with results, checkpoints or failures (work that would be orphaned).
    pub removed_with_work: Vec<String>,
}

impl Change {
    /// A change is compatible when it drops no point that has work in the directory.
    pub fn is_compatible(&self) -> bool {
        self.removed_with_work.is_empty()
    }
}

/// Compares the plan with an existing manifest.
pub fn diff(sweep_dir: &Path, old: &Manifest, plan: &Plan) -> Change {
    let new: Vec<&str> = plan.points.iter().map(|p| p.id.as_str()).collect();
    let added: Vec<String> =
        new.iter().filter(|id| !old.point_ids.iter().any(|o| o == *id)).map(|s| s.to_string()).collect();
    let removed: Vec<String> = old.point_ids.iter().filter(|o| !new.contains(&o.as_str())).cloned().collect();
    let removed_with_work = removed
        .iter()
        .filter(|id| {
            let d = PointDir::new(sweep_dir, id);
            d.is_done() || d.is_failed() || !d.checkpoints().is_empty() || d.metrics_file().exists()
        })
        .cloned()
        .collect();
    Change { created: false, added, removed, removed_with_work }
}

/// A new manifest for a plan.
pub fn from_plan(plan: &Plan, revisions: Vec<Revision>) -> Manifest {
    Manifest {
        schema_version: MANIFEST_VERSION,
        name: plan.name().to_string(),
        config_path: plan.config_path.display().to_string(),
        profile: plan.profile.clone(),
        config_hash: plan.config_hash.clone(),
        config_text: plan.config_text.clone(),
        point_ids: plan.points.iter().map(|p| p.id.clone()).collect(),
        revisions,
    }
}

/// Reads manifest.json of a sweep directory.
pub fn read(sweep_dir: &Path) -> std::io::Result<Option<Manifest>> {
    fsio::read_json(&sweep_dir.join("manifest.json"))
}
