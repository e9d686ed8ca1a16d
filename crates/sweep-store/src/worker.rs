//! A worker: claims points one at a time with lease files, runs them with a backend, and
//! publishes the outcome. Any number of workers, on any machines sharing the directory, may run
//! on one sweep; the lease and the exclusive result file keep every point to one completion.

use crate::backend::{Control, Outcome, Trainer};
use crate::lease::{self, Beat, Owner, StaleWatch};
use crate::pointdir::{Failure, PointDir};
use crate::records::{Event, PointResult};
use crate::tree::{self, Readiness};
use crate::{fsio, Store};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sweep_plan::TrainerKind;

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// A lease whose counter has not moved for this long is stale.
    pub stale_after: Duration,
    /// Poll interval while waiting for other workers' points.
    pub poll: Duration,
    /// Keep waiting while other workers hold leases (to take over if they die), or while points
    /// wait for a parent's checkpoint. Without it a worker still waits for a checkpoint that a
    /// parent being trained will write, and exits when nothing else is left.
    pub wait_for_others: bool,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            heartbeat: Duration::from_secs(5),
            stale_after: Duration::from_secs(120),
            poll: Duration::from_millis(500),
            wait_for_others: true,
        }
    }
}

/// What a worker did.
#[derive(Debug, Clone, Default)]
pub struct WorkerReport {
    /// Points it completed.
    pub completed: Vec<String>,
    /// Points it recorded as failed.
    pub failed: Vec<String>,
    /// Whether it stopped on request.
    pub stopped: bool,
}

enum Claim {
    Won,
    Busy,
    Skip,
}

fn try_claim(store: &Store, dir: &PointDir, owner: &Owner, watch: &mut StaleWatch) -> std::io::Result<Claim> {
    if dir.is_done() || dir.is_failed() {
        return Ok(Claim::Skip);
    }
    let path = dir.lease_file();
    if lease::claim(&path, owner)? {
        return Ok(Claim::Won);
    }
    let Some(info) = lease::read(&path)? else { return Ok(Claim::Busy) };
    if info.owner == owner.token {
        return Ok(Claim::Won);
    }
    if watch.is_stale(&path, &info) && lease::take_over(&path, &info, owner)? {
        store.event(&dir.id, Event::Takeover { from: info.owner, by: owner.token.clone() });
        return Ok(Claim::Won);
    }
    Ok(Claim::Busy)
}

/// Runs points until none is left to claim (or a stop is requested). A staged point is claimed
/// only once its parent's checkpoint exists; one whose parent failed (or finished without the
/// checkpoint) is recorded as failed with the reason.
pub fn run_worker(
    store: &Store,
    trainer: &dyn Trainer,
    owner: &Owner,
    opts: &WorkerOptions,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<WorkerReport> {
    let mut report = WorkerReport::default();
    let mut watch = StaleWatch::new(opts.stale_after);
    // Each point's parent, read once from point.json (which does not change under an id).
    let mut parents: HashMap<String, Option<sweep_plan::Branch>> = HashMap::new();
    loop {
        if stop.load(Ordering::SeqCst) {
            report.stopped = true;
            break;
        }
        let ids = store.point_ids()?;
        let mut ran = false;
        let mut busy = false;
        let mut waiting = false;
        let mut checkpoint_coming = false;
        for id in &ids {
            let dir = store.point(id);
            if dir.is_done() || dir.is_failed() {
                continue;
            }
            if !parents.contains_key(id) {
                parents.insert(id.clone(), dir.read_point()?.parent().cloned());
            }
            match tree::readiness(&dir, parents[id].as_ref()) {
                Readiness::Ready => {}
                Readiness::Waiting { parent_running, .. } => {
                    waiting = true;
                    checkpoint_coming |= parent_running;
                    continue;
                }
                Readiness::Blocked(reason) => {
                    match try_claim(store, &dir, owner, &mut watch)? {
                        Claim::Won if !(dir.is_done() || dir.is_failed()) => {
                            record_failure(store, &dir, owner, "parent", &reason, None)?;
                            report.failed.push(dir.id.clone());
                        }
                        Claim::Won => lease::release(&dir.lease_file(), owner)?,
                        Claim::Busy => busy = true,
                        Claim::Skip => {}
                    }
                    continue;
                }
            }
            match try_claim(store, &dir, owner, &mut watch)? {
                Claim::Skip => continue,
                Claim::Busy => {
                    busy = true;
                    continue;
                }
                Claim::Won => {}
            }
            // Someone may have finished it between our scan and our claim.
            if dir.is_done() || dir.is_failed() {
                lease::release(&dir.lease_file(), owner)?;
                continue;
            }
            ran = true;
            run_point(store, trainer, owner, opts, &dir, &stop, &mut report)?;
            break;
        }
        if !ran {
            if ((busy || waiting) && opts.wait_for_others) || checkpoint_coming {
                std::thread::sleep(opts.poll);
                continue;
            }
            break;
        }
    }
    Ok(report)
}

fn run_point(
    store: &Store,
    trainer: &dyn Trainer,
    owner: &Owner,
    opts: &WorkerOptions,
    dir: &PointDir,
    stop: &Arc<AtomicBool>,
    report: &mut WorkerReport,
) -> anyhow::Result<()> {
    let point = dir.read_point()?;
    let control = Control { stop: stop.clone(), lost: Arc::new(AtomicBool::new(false)) };
    let resumed_from = dir.checkpoints().first().map(|c| c.0);
    store.event(&dir.id, Event::Start { owner: owner.token.clone(), resume_step: resumed_from });
    tracing::info!(point = %dir.id, label = %point.label, resume_step = ?resumed_from, "point started");
    let started = Instant::now();
    // Heartbeat thread: advances the lease counter every `heartbeat`; flags loss so training
    // stops at once. Dropping `finished` wakes it to end at once (a short point must not wait
    // out a sleep: thousands of simulated points finish within milliseconds).
    let (finished, wait) = std::sync::mpsc::channel::<()>();
    let beat = {
        let (path, owner, lost, every) = (dir.lease_file(), owner.clone(), control.lost.clone(), opts.heartbeat);
        std::thread::spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(every) {
                match lease::heartbeat(&path, &owner) {
                    Ok(Beat::Kept) => {}
                    Ok(Beat::Lost) => {
                        lost.store(true, Ordering::SeqCst);
                        break;
                    }
                    Err(e) => tracing::warn!(lease = %path.display(), "heartbeat failed: {e}"),
                }
            }
        })
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| trainer.train(&point, dir, &control)));
    drop(finished);
    let _ = beat.join();
    let outcome = match outcome {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(anyhow::anyhow!("the trainer panicked: {msg}"))
        }
    };
    let lease_ok = || lease::read(&dir.lease_file()).ok().flatten().is_some_and(|l| l.owner == owner.token);
    let wall = started.elapsed().as_secs_f64();
    match outcome {
        Ok(Outcome::Finished(final_metrics)) => {
            if control.lease_lost() || !lease_ok() {
                store.event(&dir.id, Event::Lost { owner: owner.token.clone() });
                tracing::warn!(point = %dir.id, "lease lost before publishing; result discarded");
                return Ok(());
            }
            let result = PointResult {
                id: dir.id.clone(),
                label: point.label.clone(),
                trainer: trainer_name(point.trainer).into(),
                owner: owner.token.clone(),
                host: owner.host.clone(),
                finished_unix: fsio::unix_now(),
                wall_seconds_last_session: wall,
                steps: point.end_step(),
                tokens: point.tokens,
                non_embedding_params: point.counts.non_embedding_params,
                total_params: point.counts.total_params,
                flops_6nd: point.flops.six_nd,
                flops_chinchilla: point.flops.chinchilla,
                mixture_ratio: point.mixture_ratio,
                vocab_size: point.model.vocab_size,
                precision: point.precision.name.clone(),
                stage: point.stage.as_ref().map(|s| s.name.clone()),
                parent: point.parent().map(|b| b.id.clone()),
                stage_tokens: point.stage.is_some().then(|| point.own_tokens()),
                final_metrics,
            };
            if dir.publish_result(&result)? {
                store.event(&dir.id, Event::Completed { owner: owner.token.clone(), wall_seconds: wall });
                tracing::info!(point = %dir.id, wall_s = format!("{wall:.1}"), "point done");
                report.completed.push(dir.id.clone());
            } else {
                store.event(&dir.id, Event::Duplicate { owner: owner.token.clone() });
                tracing::warn!(point = %dir.id, "a result already existed; kept the first");
            }
            lease::release(&dir.lease_file(), owner)?;
        }
        Ok(Outcome::Stopped) => {
            let checkpoint_step = dir.checkpoints().first().map(|c| c.0);
            store.event(&dir.id, Event::Stopped { owner: owner.token.clone(), checkpoint_step });
            tracing::info!(point = %dir.id, "point stopped with a checkpoint");
            lease::release(&dir.lease_file(), owner)?;
        }
        Ok(Outcome::LeaseLost) => {
            store.event(&dir.id, Event::Lost { owner: owner.token.clone() });
            tracing::warn!(point = %dir.id, "lease lost: another worker took this point over; stopped it");
        }
        Ok(Outcome::Diverged { step, reason }) => {
            if lease_ok() {
                record_failure(store, dir, owner, "diverged", &reason, Some(step))?;
                report.failed.push(dir.id.clone());
            }
        }
        Err(e) => {
            if lease_ok() {
                record_failure(store, dir, owner, "error", &format!("{e:#}"), None)?;
                report.failed.push(dir.id.clone());
            }
        }
    }
    Ok(())
}

fn record_failure(
    store: &Store,
    dir: &PointDir,
    owner: &Owner,
    kind: &str,
    reason: &str,
    step: Option<u64>,
) -> anyhow::Result<()> {
    let failure = Failure {
        id: dir.id.clone(),
        kind: kind.into(),
        reason: reason.into(),
        step,
        owner: owner.token.clone(),
        failed_unix: fsio::unix_now(),
    };
    dir.write_failure(&failure)?;
    store.event(&dir.id, Event::Failed { kind: kind.into(), reason: reason.into(), step });
    tracing::warn!(point = %dir.id, kind, "point failed: {reason}");
    lease::release(&dir.lease_file(), owner)?;
    Ok(())
}

/// The name result.json gives a backend: the config's `trainer` value.
fn trainer_name(kind: TrainerKind) -> &'static str {
    match kind {
        TrainerKind::Candle => "candle",
        TrainerKind::Simulate => "simulate",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trainer_names_are_the_config_values() {
        for kind in [TrainerKind::Candle, TrainerKind::Simulate] {
            assert_eq!(serde_json::to_value(kind).unwrap(), trainer_name(kind));
        }
    }
}
