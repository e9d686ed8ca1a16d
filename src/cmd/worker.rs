//! `sweep worker`: one of many workers claiming and running points of a sweep directory; also
//! the lease flags every command that starts workers shares.

use crate::{stop_flag, EXIT_STOPPED};
use anyhow::bail;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;
use sweep_store::lease::Owner;
use sweep_store::worker::{run_worker, WorkerOptions};
use sweep_store::Store;
use sweep_train::dispatch::Dispatch;

/// Arguments of `sweep worker`.
#[derive(Args)]
pub struct WorkerArgs {
    /// The sweep directory (`<out>/<name>`).
    pub dir: PathBuf,
    /// Device for this worker (overrides each point's configured device).
    #[arg(long)]
    pub device: Option<String>,
    /// Exit when nothing is left to claim instead of waiting for other workers' points.
    #[arg(long)]
    pub no_wait: bool,
    /// Log warnings only.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub lease: LeaseArgs,
}

/// Lease timing, shared by every command that starts workers.
#[derive(Args, Clone)]
pub struct LeaseArgs {
    /// Seconds between lease heartbeats.
    #[arg(long, default_value_t = 5.0)]
    pub heartbeat: f64,
    /// Seconds without a heartbeat after which another worker takes a point over (leases of
    /// dead processes on this host are taken over at once).
    #[arg(long, default_value_t = 120.0)]
    pub stale_after: f64,
}

/// Worker settings from the lease flags; `wait`: keep waiting for other workers' points.
pub fn worker_options(l: &LeaseArgs, wait: bool) -> anyhow::Result<WorkerOptions> {
    if !(l.heartbeat > 0.0 && l.stale_after > l.heartbeat) {
        bail!("--stale-after ({}) must be larger than --heartbeat ({}), and both positive", l.stale_after, l.heartbeat);
    }
    Ok(WorkerOptions {
        heartbeat: Duration::from_secs_f64(l.heartbeat),
        stale_after: Duration::from_secs_f64(l.stale_after),
        poll: Duration::from_millis(200),
        wait_for_others: wait,
    })
}

/// Runs `sweep worker`.
pub fn run(a: WorkerArgs) -> anyhow::Result<u8> {
    let store = Store::open(&a.dir)?;
    let stop = stop_flag()?;
    let opts = worker_options(&a.lease, !a.no_wait)?;
    let owner = Owner::this_process("w");
    let trainer = Dispatch { device: a.device.clone() };
    let report = run_worker(&store, &trainer, &owner, &opts, stop.clone())?;
    tracing::info!("worker {}: completed {}, failed {}", owner.token, report.completed.len(), report.failed.len());
    Ok(if report.stopped { EXIT_STOPPED } else { 0 })
}
