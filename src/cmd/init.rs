//! `sweep init`: create or update a sweep directory from a config without running anything, for
//! workers started elsewhere.

use crate::config::{load_plan, prepare, ConfigArgs};
use clap::Args;

/// Arguments of `sweep init`.
#[derive(Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Accept a config that drops points with results or checkpoints in the directory.
    #[arg(long)]
    pub force: bool,
}

/// Runs `sweep init`.
pub fn run(a: InitArgs) -> anyhow::Result<u8> {
    let plan = load_plan(&a.config)?;
    let dir = plan.sweep_dir(a.config.out.as_deref());
    let store = prepare(&plan, &dir, a.force)?;
    let s = store.status()?;
    println!(
        "{}: {} points ({} done, {} failed, {} to run)",
        dir.display(),
        s.counts.total,
        s.counts.done,
        s.counts.failed,
        s.counts.pending + s.counts.running
    );
    Ok(0)
}
