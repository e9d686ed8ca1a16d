//! The point's precision as linear-layer hooks (fake quantisation).

use crate::model::{LinearHooks, NoHooks};
use sweep_plan::config::Rounding;
use sweep_plan::Point;

/// Hooks for the point's quantised targets; identity for native formats.
pub fn hooks(point: &Point) -> anyhow::Result<Box<dyn LinearHooks>> {
    if point.precision.targets.is_empty() {
        return Ok(Box::new(NoHooks));
    }
    anyhow::bail!("precision {:?} needs fake quantisation, which this build does not have yet", point.precision.name)
}

/// Hooks for a precision name applied to weights and activations (for benchmarks).
pub fn hooks_for(name: &str, _rounding: Rounding, _seed: u64) -> anyhow::Result<Box<dyn LinearHooks>> {
    let spec = sweep_plan::precision::PrecisionSpec::parse(name).map_err(anyhow::Error::msg)?;
    if !spec.format.is_simulated() {
        return Ok(Box::new(NoHooks));
    }
    anyhow::bail!("precision {name:?} needs fake quantisation, which this build does not have yet")
}
