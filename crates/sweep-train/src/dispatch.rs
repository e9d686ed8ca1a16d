//! The backend a worker runs: each point goes to the trainer its config names.

use crate::simulate::SimulateTrainer;
use crate::trainer::CandleTrainer;
use sweep_plan::{Point, TrainerKind};
use sweep_store::{Control, Outcome, PointDir, Trainer};

/// Runs each point with its configured backend: the candle trainer (on `device` when given,
/// else the point's device) or the simulate trainer.
#[derive(Debug, Clone, Default)]
pub struct Dispatch {
    /// Device overriding every candle point's (`cpu`, `cuda:N`, `metal`).
    pub device: Option<String>,
}

impl Trainer for Dispatch {
    fn name(&self) -> &'static str {
        "dispatch"
    }

    fn train(&self, point: &Point, dir: &PointDir, control: &Control) -> anyhow::Result<Outcome> {
        match point.trainer {
            TrainerKind::Simulate => SimulateTrainer.train(point, dir, control),
            TrainerKind::Candle => CandleTrainer { device: self.device.clone() }.train(point, dir, control),
        }
    }
}
