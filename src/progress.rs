//! Progress display: indicatif bars on a terminal (the whole sweep plus one bar per running
//! point), plain log lines otherwise. It reads the sweep directory, so it shows every worker's
//! points, in this process or any other.

use crate::fmt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use sweep_store::status::State;
use sweep_store::Store;

/// The MultiProgress log lines must go through while bars are drawn.
static BARS: OnceLock<Mutex<Option<MultiProgress>>> = OnceLock::new();

fn bars() -> &'static Mutex<Option<MultiProgress>> {
    BARS.get_or_init(|| Mutex::new(None))
}

/// A tracing writer that prints above the bars when they are shown.
#[derive(Clone, Copy)]
pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let guard = bars().lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(mp) => {
                let text = String::from_utf8_lossy(buf);
                let _ = mp.println(text.trim_end());
            }
            None => {
                std::io::stderr().write_all(buf)?;
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

/// Whether bars will be drawn (stderr is a terminal and not disabled).
pub fn bars_wanted(disabled: bool) -> bool {
    !disabled && std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
}

/// A background thread showing the sweep's progress until dropped.
pub struct Monitor {
    done: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    /// Starts monitoring `store`; with `bars` false it logs a summary line every 30 s.
    pub fn start(store: Store, bars_on: bool) -> Monitor {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let handle =
            std::thread::spawn(move || if bars_on { run_bars(&store, &flag) } else { run_lines(&store, &flag) });
        Monitor { done, handle: Some(handle) }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run_lines(store: &Store, done: &AtomicBool) {
    let mut last = Instant::now();
    while !done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        if last.elapsed() < Duration::from_secs(30) {
            continue;
        }
        last = Instant::now();
        if let Ok(s) = store.status() {
            let c = &s.counts;
            tracing::info!(
                "progress: {}/{} done, {} running, {} failed, {} pending",
                c.done,
                c.total,
                c.running,
                c.failed,
                c.pending
            );
        }
    }
}

fn run_bars(store: &Store, done: &AtomicBool) {
    let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
    *bars().lock().unwrap_or_else(|e| e.into_inner()) = Some(mp.clone());
    let total_style =
        ProgressStyle::with_template("{prefix:>8} [{bar:30.cyan/blue}] {pos}/{len} points  {msg}  [{elapsed_precise}]")
            .expect("valid template")
            .progress_chars("=> ");
    let point_style = ProgressStyle::with_template("{prefix:>8} [{bar:30.green/white}] {pos}/{len} steps  {msg}")
        .expect("valid template")
        .progress_chars("=> ");
    let overall = mp.add(ProgressBar::new(0).with_style(total_style).with_prefix("sweep"));
    let mut per_point: HashMap<String, ProgressBar> = HashMap::new();
    loop {
        let finished = done.load(Ordering::SeqCst);
        if let Ok(s) = store.status() {
            let c = &s.counts;
            overall.set_length(c.total as u64);
            overall.set_position((c.done + c.failed) as u64);
            overall.set_message(format!("{} running, {} failed", c.running, c.failed));
            for p in &s.points {
                if p.state == State::Running {
                    let bar = per_point.entry(p.id.clone()).or_insert_with(|| {
                        mp.add(
                            ProgressBar::new(p.steps)
                                .with_style(point_style.clone())
                                .with_prefix(p.id[..8.min(p.id.len())].to_string()),
                        )
                    });
                    bar.set_position(p.step.unwrap_or(0));
                    let loss = p.loss.map(|l| format!("loss {l:.4}")).unwrap_or_else(|| "starting".into());
                    let tps = p.tokens_per_second.map(|t| format!("  {} tok/s", fmt::si(t))).unwrap_or_default();
                    let eta = p.eta_seconds.map(|e| format!("  ETA {}", fmt::duration(e))).unwrap_or_default();
                    bar.set_message(format!("{} {loss}{tps}{eta}", p.label));
                } else if let Some(bar) = per_point.remove(&p.id) {
                    bar.finish_and_clear();
                    mp.remove(&bar);
                }
            }
        }
        if finished {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    for (_, bar) in per_point.drain() {
        bar.finish_and_clear();
    }
    overall.finish();
    *bars().lock().unwrap_or_else(|e| e.into_inner()) = None;
}
