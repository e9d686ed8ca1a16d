//! `sweep run`: every point of a config that is not done yet, by one worker in this process or
//! `--workers K` worker processes; then the laws of `[fit]` and the report.

use super::fit::{fit_sweep, sweep_config_fit};
use super::report::write_report;
use super::worker::{worker_options, LeaseArgs};
use crate::config::{load_plan, prepare, ConfigArgs};
use crate::{progress, stop_flag, EXIT_FAILED_POINTS, EXIT_STOPPED};
use anyhow::{bail, Context};
use clap::Args;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use sweep_report::live::LiveReport;
use sweep_store::lease::Owner;
use sweep_store::worker::run_worker;
use sweep_store::Store;
use sweep_train::dispatch::Dispatch;

/// Arguments of `sweep run`.
#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Worker processes on this machine sharing the sweep directory.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Devices for the workers, assigned round-robin (e.g. cuda:0,cuda:1); default from the config.
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<String>,
    /// Accept a config that drops points with results or checkpoints in the directory.
    #[arg(long)]
    pub force: bool,
    /// Run points that failed before again.
    #[arg(long)]
    pub retry_failed: bool,
    /// Plain log lines instead of progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Do not rewrite DIR/report while the sweep runs (it is still written at the end).
    #[arg(long)]
    pub no_live_report: bool,
    #[command(flatten)]
    pub lease: LeaseArgs,
}

/// Runs `sweep run`.
pub fn run(a: RunArgs) -> anyhow::Result<u8> {
    let plan = load_plan(&a.config)?;
    if a.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let dir = plan.sweep_dir(a.config.out.as_deref());
    let store = prepare(&plan, &dir, a.force)?;
    if a.retry_failed {
        let n = store.retry_failed()?;
        tracing::info!("retrying {n} failed point(s)");
    }
    let before = store.status()?;
    tracing::info!(
        "{}: {} done, {} failed, {} to run{}",
        plan.name(),
        before.counts.done,
        before.counts.failed,
        before.counts.pending + before.counts.running,
        if before.counts.done > 0 || before.points.iter().any(|p| p.checkpoint_step.is_some()) {
            " (resuming)"
        } else {
            ""
        }
    );
    let stop = stop_flag()?;
    let opts = worker_options(&a.lease, true)?;
    let bars = progress::bars_wanted(a.no_progress);
    let monitor = progress::Monitor::start(store.clone(), bars);
    let live = (!a.no_live_report).then(|| LiveReport::start(store.clone(), store.dir.join("report")));
    if a.workers == 1 {
        let owner = Owner::this_process("w0");
        let trainer = Dispatch { device: a.devices.first().cloned() };
        run_worker(&store, &trainer, &owner, &opts, stop.clone())?;
    } else {
        run_children(&a, &dir, bars, &stop)?;
    }
    drop(monitor);
    drop(live);
    finish(&store, stop.load(Ordering::SeqCst))
}

/// Starts `--workers K` worker processes on the directory and waits for them, forwarding stop
/// requests.
fn run_children(a: &RunArgs, dir: &Path, bars: bool, stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the sweep executable")?;
    let mut children = Vec::new();
    for k in 0..a.workers {
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("worker")
            .arg(dir)
            .arg("--heartbeat")
            .arg(a.lease.heartbeat.to_string())
            .arg("--stale-after")
            .arg(a.lease.stale_after.to_string());
        if !a.devices.is_empty() {
            cmd.arg("--device").arg(&a.devices[k % a.devices.len()]);
        }
        if bars {
            cmd.arg("--quiet");
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; the child dies with its parent.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
        }
        children.push(cmd.spawn().context("starting a worker process")?);
    }
    let mut forwarded = false;
    loop {
        let mut running = 0;
        for c in children.iter_mut() {
            if c.try_wait()?.is_none() {
                running += 1;
            }
        }
        if running == 0 {
            break;
        }
        if stop.load(Ordering::SeqCst) && !forwarded {
            for c in &children {
                // SAFETY: sending a signal to our own child process.
                unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            }
            forwarded = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Sums up a finished (or stopped) run: fits the laws on the finished points once no point is
/// left to run (naming the failed ones in laws.json), writes the report, and picks the exit code
/// (3 when points failed, after laws.json and the report are written).
fn finish(store: &Store, stopped: bool) -> anyhow::Result<u8> {
    let s = store.status()?;
    let c = &s.counts;
    if stopped {
        tracing::info!("stopped: {}/{} done; run the same command again to resume", c.done, c.total);
        return Ok(EXIT_STOPPED);
    }
    for p in s.points.iter().filter(|p| p.failure.is_some()) {
        tracing::warn!(point = %p.id, "failed: {}", p.failure.as_deref().unwrap_or(""));
    }
    tracing::info!("{}/{} done, {} failed ({})", c.done, c.total, c.failed, store.dir.display());
    if c.done + c.failed == c.total {
        match sweep_config_fit(store) {
            Ok(Some(config)) => match fit_sweep(store, &config, &store.dir.join("laws.json")) {
                Ok(laws) => {
                    print!("{}", sweep_fit::render_text(&laws));
                    for (name, why) in laws.failed() {
                        tracing::warn!("law {name} could not be fitted: {why}");
                    }
                    tracing::info!("wrote {}", store.dir.join("laws.json").display());
                }
                // Results are safe on disk; a fit problem must not fail the sweep.
                Err(e) => tracing::warn!(
                    "fitting the laws of [fit] failed: {e:#}; fix [fit] and run `sweep fit {}`",
                    store.dir.display()
                ),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!("reading [fit]: {e:#}"),
        }
    }
    write_report(store);
    if c.failed > 0 {
        eprintln!("{} point(s) failed; see failed.json in their directories, and `sweep run --retry-failed` to run them again", c.failed);
        return Ok(EXIT_FAILED_POINTS);
    }
    if c.done < c.total {
        bail!(
            "{} point(s) are neither done nor failed; another worker may still hold them (see `sweep status {}`)",
            c.total - c.done - c.failed,
            store.dir.display()
        );
    }
    Ok(0)
}
