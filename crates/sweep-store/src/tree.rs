//! Staged points in the sweep directory: a child may start once its parent's checkpoint at the
//! branch step exists (checkpoints are renamed into place whole, so existing means complete);
//! until then it waits, and if the parent failed, or finished without that checkpoint, it never
//! can. Read from the directory alone, like everything else.

use crate::lease;
use crate::pointdir::PointDir;
use sweep_plan::Branch;

/// Whether a point can start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// No parent, or the parent's checkpoint exists.
    Ready,
    /// The parent's checkpoint does not exist yet.
    Waiting {
        /// The parent's id.
        parent: String,
        /// The step whose checkpoint is awaited.
        step: u64,
        /// Whether a worker holds the parent now (its checkpoint is on the way).
        parent_running: bool,
    },
    /// The checkpoint will never come; why, and what to do.
    Blocked(String),
}

/// Whether the point of `dir`, starting from `branch` (its point's `parent()`), can start now.
pub fn readiness(dir: &PointDir, branch: Option<&Branch>) -> Readiness {
    let Some(branch) = branch else { return Readiness::Ready };
    let parent = dir.sibling(&branch.id);
    let ready = || parent.checkpoint_at(branch.step).is_some();
    if ready() {
        return Readiness::Ready;
    }
    // Looked at again after the parent's end is seen: it may have written the checkpoint in
    // between.
    let (failed, done) = (parent.is_failed(), parent.is_done());
    if (failed || done) && ready() {
        return Readiness::Ready;
    }
    if failed {
        return Readiness::Blocked(format!(
            "its parent {} failed, so its checkpoint at step {} will not come; `sweep run --retry-failed` runs both again",
            branch.id, branch.step
        ));
    }
    if done {
        return Readiness::Blocked(format!(
            "its parent {} finished without a checkpoint at step {} (this branch was planned after the parent had passed that step); remove the directory {} and run again to retrain the parent",
            branch.id,
            branch.step,
            parent.path.display()
        ));
    }
    let parent_running = lease::read(&parent.lease_file()).ok().flatten().is_some();
    Readiness::Waiting { parent: branch.id.clone(), step: branch.step, parent_running }
}
