//! The one trait every training backend implements.

use crate::pointdir::PointDir;
use crate::records::FinalMetrics;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use sweep_plan::Point;

/// Signals a running point must honour.
#[derive(Debug, Clone, Default)]
pub struct Control {
    /// Set on SIGINT/SIGTERM: checkpoint, then return [`Outcome::Stopped`].
    pub stop: Arc<AtomicBool>,
    /// Set when this worker lost the point's lease: return at once, writing nothing more.
    pub lost: Arc<AtomicBool>,
}

impl Control {
    /// A stop was requested (checkpoint and return).
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
    /// The lease was lost (return without writing).
    pub fn lease_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

/// How a point's training ended.
// One Outcome per trained point: the size of the Finished variant costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Finished: the backend's final metrics, which go into result.json under "final".
    Finished(FinalMetrics),
    /// Stopped on request after writing a checkpoint.
    Stopped,
    /// Gave up because the lease was lost; nothing was written after the loss was seen.
    LeaseLost,
    /// Diverged (NaN/inf or loss blow-up) at `step`.
    Diverged {
        /// Step of divergence.
        step: u64,
        /// What was seen.
        reason: String,
    },
}

/// A training backend: given a point and its directory, produce metrics and a result, honour a
/// stop request (checkpoint and return), and resume from the directory's checkpoint.
pub trait Trainer: Send + Sync {
    /// Short name for logs ("candle", "simulate").
    fn name(&self) -> &'static str;
    /// Runs (or resumes) the point. Errors are recorded in failed.json.
    fn train(&self, point: &Point, dir: &PointDir, control: &Control) -> anyhow::Result<Outcome>;
}
