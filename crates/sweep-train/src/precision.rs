//! The point's precision as linear-layer hooks (fake quantisation).

use crate::model::{LinearHooks, NoHooks};
use sweep_plan::Point;

/// Hooks for the point's quantised targets; identity for native formats.
pub fn hooks(point: &Point) -> anyhow::Result<Box<dyn LinearHooks>> {
    if point.precision.targets.is_empty() {
        return Ok(Box::new(NoHooks));
    }
    anyhow::bail!("precision {:?} needs fake quantisation, which this build does not have yet", point.precision.name)
}
