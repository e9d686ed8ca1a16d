//! The state of every point, read from the directory alone (for `sweep status` and progress).

use crate::lease::{self, LeaseInfo};
use crate::pointdir::PointDir;
use crate::tree::{self, Readiness};
use serde::Serialize;
use std::path::Path;

/// State of one point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// result.json exists.
    Done,
    /// failed.json exists.
    Failed,
    /// A lease is held.
    Running,
    /// Not started, or interrupted without a live lease.
    Pending,
}

/// What `sweep status` shows of one point.
#[derive(Debug, Clone, Serialize)]
pub struct PointStatus {
    /// Point id.
    pub id: String,
    /// Model label.
    pub label: String,
    /// State.
    pub state: State,
    /// Lease holder when running.
    pub owner: Option<LeaseInfo>,
    /// Last logged step (counted from the model's start: a staged point's first is its parent's
    /// step at the branch plus one).
    pub step: Option<u64>,
    /// The step the point ends at.
    pub steps: u64,
    /// Last logged training loss.
    pub loss: Option<f64>,
    /// Last measured throughput.
    pub tokens_per_second: Option<f64>,
    /// Estimated seconds to finish, from throughput.
    pub eta_seconds: Option<f64>,
    /// Newest checkpoint step.
    pub checkpoint_step: Option<u64>,
    /// Failure reason.
    pub failure: Option<String>,
    /// The stage of a staged point.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The parent a staged point starts from, and the parent's step it starts at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<(String, u64)>,
    /// A pending point whose parent's checkpoint does not exist yet: waiting for it.
    pub waiting_for_parent: bool,
}

/// Counts by state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Finished points.
    pub done: usize,
    /// Points with a live lease.
    pub running: usize,
    /// Points not yet done.
    pub pending: usize,
    /// Of the pending points, those waiting for a parent's checkpoint.
    pub waiting: usize,
    /// Failed points.
    pub failed: usize,
    /// All points.
    pub total: usize,
}

/// Status of a whole sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepStatus {
    /// Sweep name.
    pub name: String,
    /// Counts by state.
    pub counts: Counts,
    /// Per point, in plan order.
    pub points: Vec<PointStatus>,
}

/// Reads one point's status.
pub fn point_status(sweep_dir: &Path, id: &str) -> PointStatus {
    let d = PointDir::new(sweep_dir, id);
    let point = d.read_point().ok();
    let steps = point.as_ref().map(|p| p.end_step()).unwrap_or(0);
    let label = point.as_ref().map(|p| p.label.clone()).unwrap_or_default();
    let tokens_per_step = point.as_ref().map(|p| p.train.tokens_per_step(p.model.context)).unwrap_or(0) as f64;
    let owner = lease::read(&d.lease_file()).ok().flatten();
    let failure = d.read_failure().ok().flatten().map(|f| f.reason);
    let state = if d.is_done() {
        State::Done
    } else if failure.is_some() {
        State::Failed
    } else if owner.is_some() {
        State::Running
    } else {
        State::Pending
    };
    let branch = point.as_ref().and_then(|p| p.parent());
    let waiting_for_parent =
        state == State::Pending && matches!(tree::readiness(&d, branch), Readiness::Waiting { .. });
    let last = d.last_metric();
    let step = last.as_ref().map(|m| m.step);
    // NaN stands for a null in the file: no value.
    let tokens_per_second = last.as_ref().map(|m| m.tokens_per_second).filter(|t| *t > 0.0);
    let loss = last.as_ref().map(|m| m.train_loss).filter(|l| !l.is_nan());
    let eta_seconds = match (state, step, tokens_per_second) {
        (State::Done, ..) => Some(0.0),
        (_, Some(s), Some(tps)) => Some(steps.saturating_sub(s) as f64 * tokens_per_step / tps),
        _ => None,
    };
    PointStatus {
        id: id.to_string(),
        label,
        state,
        owner: if state == State::Running { owner } else { None },
        step,
        steps,
        loss,
        tokens_per_second,
        eta_seconds,
        checkpoint_step: d.checkpoints().first().map(|c| c.0),
        failure,
        stage: point.as_ref().and_then(|p| p.stage.as_ref()).map(|s| s.name.clone()),
        parent: branch.map(|b| (b.id.clone(), b.step)),
        waiting_for_parent,
    }
}

/// Reads the status of every point listed in the manifest.
pub fn sweep_status(sweep_dir: &Path, name: &str, ids: &[String]) -> SweepStatus {
    let points: Vec<PointStatus> = ids.iter().map(|id| point_status(sweep_dir, id)).collect();
    let mut counts = Counts { total: points.len(), ..Default::default() };
    for p in &points {
        match p.state {
            State::Done => counts.done += 1,
            State::Failed => counts.failed += 1,
            State::Running => counts.running += 1,
            State::Pending => counts.pending += 1,
        }
        counts.waiting += usize::from(p.waiting_for_parent);
    }
    SweepStatus { name: name.to_string(), counts, points }
}
