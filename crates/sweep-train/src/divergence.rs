//! Divergence detection shared by every backend: a non-finite loss, or a loss far above the
//! running minimum, ends the point as diverged.

use serde::{Deserialize, Serialize};

/// Tracks the running minimum of the training loss.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DivergenceCheck {
    /// Loss above `factor` x the running minimum counts as divergence.
    pub factor: f64,
    /// Lowest loss seen so far.
    pub min_loss: f64,
}

impl DivergenceCheck {
    /// A fresh check.
    pub fn new(factor: f64) -> Self {
        DivergenceCheck { factor, min_loss: f64::INFINITY }
    }

    /// Records a loss; returns a reason if it shows divergence.
    pub fn observe(&mut self, step: u64, loss: f64) -> Option<String> {
        if !loss.is_finite() {
            return Some(format!("loss became {loss} at step {step}"));
        }
        if self.min_loss.is_finite() && loss > self.factor * self.min_loss {
            return Some(format!(
                "loss {loss:.4} at step {step} is above {} x the running minimum {:.4}",
                self.factor, self.min_loss
            ));
        }
        self.min_loss = self.min_loss.min(loss);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_nan_and_blowups_only() {
        let mut c = DivergenceCheck::new(3.0);
        assert!(c.observe(1, 5.0).is_none());
        assert!(c.observe(2, 2.0).is_none());
        assert!(c.observe(3, 5.9).is_none());
        assert!(c.observe(4, 6.1).is_some());
        assert!(DivergenceCheck::new(3.0).observe(1, f64::NAN).is_some());
    }
}
