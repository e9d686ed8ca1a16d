//! `sweep`: plan, run, resume and fit scaling-law sweeps. This binary only parses arguments and
//! wires the crates together: this file holds the command line, logging, signals and exit codes;
//! each command is one module of cmd/ and the shared config handling is config.rs; the work
//! lives in crates/.

mod cmd;
mod config;
mod fmt;
mod progress;

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "sweep", version, about = "Plan, run, resume and fit scaling-law sweeps", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Expand a config's grid into points and show their size and cost; runs nothing.
    Plan(cmd::plan::PlanArgs),
    /// Run (or resume) every point of a config that is not done yet.
    Run(cmd::run::RunArgs),
    /// Create or update a sweep directory from a config without running anything (for
    /// `sweep worker` processes started elsewhere, e.g. a Slurm job array).
    Init(cmd::init::InitArgs),
    /// Claim and run points of an existing sweep directory (one of many workers).
    Worker(cmd::worker::WorkerArgs),
    /// Run a sweep as a Slurm job array over a shared directory (one worker per task), with a
    /// dependent job that fits the laws.
    Slurm(cmd::slurm::SlurmArgs),
    /// Show done, running, pending and failed points of a sweep directory.
    Status(cmd::status::StatusArgs),
    /// Fit scaling laws to a sweep's finished points (or to a CSV) and write laws.json.
    Fit(cmd::fit::FitArgs),
    /// Plots and index.html of a sweep directory (written after every fit too).
    Report(cmd::report::ReportArgs),
    /// Sample the built-in languages; prepare a sweep's tokenizers and token shards.
    Data(cmd::data::DataArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
}

// Exit codes: 0 all done, 1 error, 2 bad config or usage, 3 finished with failed points,
// 130 stopped by a signal (resume by running the same command again). Decided here and in the
// commands' return values, nowhere else.
/// Any other error (and `sweep fit` when a law could not be fitted, after writing laws.json).
pub const EXIT_ERROR: u8 = 1;
/// Bad config or usage.
pub const EXIT_CONFIG: u8 = 2;
/// Finished with failed points.
pub const EXIT_FAILED_POINTS: u8 = 3;
/// Stopped by a signal.
pub const EXIT_STOPPED: u8 = 130;

/// An error already explained to the user, with its exit code.
#[derive(Debug)]
pub struct Exit(pub u8);
impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}
impl std::error::Error for Exit {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A training step allocates and frees the same large buffers (activations, gradients, the
    // 32 MB logits gradient) every step; glibc would return them to the OS and take page faults
    // to get them back. Keep them in the heap instead (about 10-25% of a step on 2 cores).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // candle runs its element-wise ops on a spinning barrier pool beside the rayon pool
        // that gemm and the trainer's fused kernels use; on few cores the two pools fight
        // (a step took twice as long under load). One thread there keeps candle's remaining
        // small element-wise ops inline; matmul and the fused kernels still use every thread.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if let Command::Bench(cmd::bench::BenchCommand::Train(a)) = &cli.command {
        if let Some(t) = a.threads {
            // Before any thread pool starts: candle and gemm size their pools from this.
            std::env::set_var("RAYON_NUM_THREADS", t.to_string());
        }
    }
    let quiet = matches!(&cli.command, Command::Worker(w) if w.quiet);
    // With progress bars, per-point log lines would only repeat the bars: keep the CLI's own
    // summaries and every warning.
    let bars = matches!(&cli.command, Command::Run(r) if progress::bars_wanted(r.no_progress));
    init_logging(quiet, bars);
    let result = match cli.command {
        Command::Plan(a) => cmd::plan::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Init(a) => cmd::init::run(a),
        Command::Worker(a) => cmd::worker::run(a),
        Command::Slurm(a) => cmd::slurm::run(a),
        Command::Status(a) => cmd::status::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Data(a) => cmd::data::run(a).map(|()| 0),
        Command::Fit(a) => cmd::fit::run(a),
        Command::Report(a) => cmd::report::run(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if let Some(Exit(code)) = e.downcast_ref::<Exit>() {
                return ExitCode::from(*code);
            }
            if let Some(pe) = e.downcast_ref::<sweep_plan::PlanError>() {
                eprintln!("error: {pe}");
                return ExitCode::from(EXIT_CONFIG);
            }
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn init_logging(quiet: bool, bars: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if quiet {
        "warn"
    } else if bars {
        "warn,sweep=info,sweep_store=warn,sweep_train=warn,sweep_data=warn,sweep_fit=warn,sweep_plan=warn"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_env("SWEEP_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress::LogWriter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .compact()
        .init();
}

/// SIGINT, SIGTERM and SIGUSR1 (Slurm's warning before a time limit) request a clean stop;
/// a second SIGINT exits at once.
pub fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register_conditional_shutdown(SIGINT, EXIT_STOPPED as i32, stop.clone())?;
    for sig in [SIGINT, SIGTERM, SIGUSR1] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    Ok(stop)
}
