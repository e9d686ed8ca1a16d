//! The live report: while `sweep run` runs, a background thread rewrites DIR/report after each
//! finished point, and the page reloads itself; when the run ends (finished, failed or stopped)
//! the last page is written without the reload.
//!
//! Cheap by construction: the thread notices a finished point by the size of events.jsonl (one
//! `stat` per poll), rereads only the points not finished before ([`SweepReader`]), and after a
//! rewrite that took t seconds waits at least [`BACKOFF`] × t before the next, so it takes at most
//! about 1/(1 + BACKOFF) of one core however fast points finish (a simulate sweep of thousands of
//! points); a point that takes longer than that gap gets its own rewrite. A running point's curve
//! is refreshed every [`REFRESH`] even without events.

use crate::inputs::SweepReader;
use crate::ReportOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use sweep_store::Store;

/// Seconds between reloads of a live page.
pub const RELOAD_SECONDS: u32 = 5;
/// Wait after a rewrite, as a multiple of the time it took.
pub const BACKOFF: u32 = 20;
/// How often the directory is looked at.
pub const POLL: Duration = Duration::from_millis(250);
/// Longest time between rewrites while anything may be running.
pub const REFRESH: Duration = Duration::from_secs(30);

/// What the live report did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LiveStats {
    /// Rewrites while the run ran (the final one not counted).
    pub rewrites: u64,
    /// Seconds spent in them.
    pub seconds: f64,
}

/// The background rewriter; stopping it (or dropping it) writes the final page.
pub struct LiveReport {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<LiveStats>>,
}

/// Size and modification time of events.jsonl: changes when a point starts, finishes or fails.
fn signature(dir: &Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(dir.join("events.jsonl")).ok()?;
    Some((m.len(), m.modified().ok()?))
}

fn rewrite(reader: &mut SweepReader, out: &Path, reload: Option<u32>) -> anyhow::Result<()> {
    let inputs = reader.read()?;
    crate::write_report(out, &inputs, &ReportOptions { reload_seconds: reload })?;
    Ok(())
}

impl LiveReport {
    /// Starts rewriting `store`'s report into `out` (normally DIR/report).
    pub fn start(store: Store, out: PathBuf) -> LiveReport {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("live-report".into())
            .spawn(move || run(&store, &out, &flag))
            .map_err(|e| tracing::warn!("the live report could not start: {e}"))
            .ok();
        LiveReport { stop, handle }
    }
}

impl Drop for LiveReport {
    /// Stops the thread after it writes the final page (no reload).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(store: &Store, out: &Path, stop: &AtomicBool) -> LiveStats {
    let mut stats = LiveStats::default();
    let mut reader = match SweepReader::new(store) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("the live report cannot read the sweep: {e:#}");
            return stats;
        }
    };
    let mut last: Option<(Instant, Option<(u64, std::time::SystemTime)>)> = None;
    let mut gap = Duration::ZERO;
    let mut warned = false;
    while !stop.load(Ordering::SeqCst) {
        let sig = signature(&store.dir);
        let due = match &last {
            None => true,
            Some((at, seen)) => at.elapsed() >= gap && (sig != *seen || at.elapsed() >= REFRESH),
        };
        if due {
            let t0 = Instant::now();
            if let Err(e) = rewrite(&mut reader, out, Some(RELOAD_SECONDS)) {
                if !warned {
                    tracing::warn!("the live report could not be written: {e:#}");
                    warned = true;
                }
            }
            let took = t0.elapsed();
            stats.rewrites += 1;
            stats.seconds += took.as_secs_f64();
            gap = took * BACKOFF;
            last = Some((Instant::now(), sig));
        }
        // Sleep one poll, waking early to stop.
        let until = Instant::now() + POLL;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    if let Err(e) = rewrite(&mut reader, out, None) {
        tracing::warn!("writing the report failed: {e:#}");
    }
    tracing::info!("live report: {} rewrites in {:.2} s", stats.rewrites, stats.seconds);
    stats
}
