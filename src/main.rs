//! `sweep`: plan, run, resume and fit scaling-law sweeps. This file only parses arguments and
//! wires the crates together; the work lives in crates/.

mod cmd_data;
mod cmd_fit;
mod cmd_report;
mod cmd_slurm;
mod fmt;
mod progress;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use sweep_plan::{Plan, Point, TrainerKind};
use sweep_store::lease::Owner;
use sweep_store::worker::{run_worker, WorkerOptions};
use sweep_store::{Control, Outcome, PointDir, Store, Trainer};

#[derive(Parser)]
#[command(name = "sweep", version, about = "Plan, run, resume and fit scaling-law sweeps", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Expand a config's grid into points and show their size and cost; runs nothing.
    Plan(PlanArgs),
    /// Run (or resume) every point of a config that is not done yet.
    Run(RunArgs),
    /// Create or update a sweep directory from a config without running anything (for
    /// `sweep worker` processes started elsewhere, e.g. a Slurm job array).
    Init(InitArgs),
    /// Claim and run points of an existing sweep directory (one of many workers).
    Worker(WorkerArgs),
    /// Run a sweep as a Slurm job array over a shared directory (one worker per task), with a
    /// dependent job that fits the laws.
    Slurm(SlurmArgs),
    /// Show done, running, pending and failed points of a sweep directory.
    Status(StatusArgs),
    /// Fit scaling laws to a sweep's finished points (or to a CSV) and write laws.json.
    Fit(cmd_fit::FitArgs),
    /// Plots and index.html of a sweep directory (written after every fit too).
    Report(cmd_report::ReportArgs),
    /// Sample the built-in languages; prepare a sweep's tokenizers and token shards.
    Data(cmd_data::DataArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Training steps of one model on random tokens: tokens/s, step time, MFU, peak memory.
    Train(BenchTrainArgs),
}

#[derive(Args)]
struct BenchTrainArgs {
    /// Residual width.
    #[arg(long, default_value_t = 256)]
    d_model: usize,
    /// Blocks.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Feed-forward width (default 4 d_model for GELU, 8/3 d_model rounded to 32 for SwiGLU).
    #[arg(long)]
    d_ff: Option<usize>,
    /// Feed-forward kind: gelu (GPT-2 style) or swiglu.
    #[arg(long, default_value = "swiglu")]
    ffn: String,
    /// Context length.
    #[arg(long, default_value_t = 128)]
    ctx: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Vocabulary size.
    #[arg(long, default_value_t = 4096)]
    vocab: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// CPU threads (sets RAYON_NUM_THREADS).
    #[arg(long)]
    threads: Option<usize>,
    /// Device: cpu, cuda:N, metal.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Precision (fake quantisation of weights and activations for simulated formats).
    #[arg(long, default_value = "fp32")]
    precision: String,
    /// Untied output projection.
    #[arg(long)]
    untied: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ConfigArgs {
    /// The sweep config (TOML).
    config: PathBuf,
    /// Apply `[profiles.NAME]` of the config on top of the rest.
    #[arg(long)]
    profile: Option<String>,
    /// Output root (overrides `[sweep] out`); the sweep goes to OUT/<name>.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct InitArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Accept a config that drops points with results or checkpoints in the directory.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct SlurmArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    slurm: cmd_slurm::SlurmOptions,
    /// Accept a config that drops points with results or checkpoints in the directory.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    lease: LeaseArgs,
}

#[derive(Args)]
struct PlanArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
struct LeaseArgs {
    /// Seconds between lease heartbeats.
    #[arg(long, default_value_t = 5.0)]
    heartbeat: f64,
    /// Seconds without a heartbeat after which another worker takes a point over (leases of
    /// dead processes on this host are taken over at once).
    #[arg(long, default_value_t = 120.0)]
    stale_after: f64,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Worker processes on this machine sharing the sweep directory.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Devices for the workers, assigned round-robin (e.g. cuda:0,cuda:1); default from the config.
    #[arg(long, value_delimiter = ',')]
    devices: Vec<String>,
    /// Accept a config that drops points with results or checkpoints in the directory.
    #[arg(long)]
    force: bool,
    /// Run points that failed before again.
    #[arg(long)]
    retry_failed: bool,
    /// Plain log lines instead of progress bars.
    #[arg(long)]
    no_progress: bool,
    #[command(flatten)]
    lease: LeaseArgs,
}

#[derive(Args)]
struct WorkerArgs {
    /// The sweep directory (`<out>/<name>`).
    dir: PathBuf,
    /// Device for this worker (overrides each point's configured device).
    #[arg(long)]
    device: Option<String>,
    /// Exit when nothing is left to claim instead of waiting for other workers' points.
    #[arg(long)]
    no_wait: bool,
    /// Log warnings only.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    lease: LeaseArgs,
}

#[derive(Args)]
struct StatusArgs {
    /// The sweep directory (`<out>/<name>`).
    dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Exit codes: 0 all done, 1 error, 2 bad config or usage, 3 finished with failed points,
/// 130 stopped by a signal (resume by running the same command again).
const EXIT_ERROR: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_FAILED_POINTS: u8 = 3;
const EXIT_STOPPED: u8 = 130;

/// An error already explained to the user, with its exit code.
#[derive(Debug)]
struct Exit(u8);
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
    if let Command::Bench(BenchCommand::Train(a)) = &cli.command {
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
        Command::Plan(a) => cmd_plan(a),
        Command::Run(a) => cmd_run(a),
        Command::Init(a) => cmd_init(a),
        Command::Worker(a) => cmd_worker(a),
        Command::Slurm(a) => cmd_slurm(a),
        Command::Status(a) => cmd_status(a),
        Command::Bench(BenchCommand::Train(a)) => cmd_bench_train(a),
        Command::Data(a) => cmd_data::run(a).map(|()| 0),
        Command::Fit(a) => cmd_fit::run(a),
        Command::Report(a) => cmd_report::run(a),
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
fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register_conditional_shutdown(SIGINT, EXIT_STOPPED as i32, stop.clone())?;
    for sig in [SIGINT, SIGTERM, SIGUSR1] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    Ok(stop)
}

fn load_plan(a: &ConfigArgs) -> anyhow::Result<Plan> {
    let plan = sweep_plan::load(&a.config, a.profile.as_deref())?;
    // Sections owned by other crates are checked here, before any work starts.
    plan.section::<sweep_data::DataConfig>()?;
    plan.section::<sweep_fit::FitConfig>()?;
    Ok(plan)
}

fn cmd_plan(a: PlanArgs) -> anyhow::Result<u8> {
    let plan = load_plan(&a.config)?;
    let dir = plan.sweep_dir(a.config.out.as_deref());
    if a.json {
        let total_flops: f64 = plan.points.iter().map(|p| p.flops.chinchilla).sum();
        let total_secs: f64 = plan.points.iter().map(|p| p.runtime.estimated_seconds).sum();
        let out = serde_json::json!({
            "name": plan.name(),
            "sweep_dir": dir,
            "config_hash": plan.config_hash,
            "points": plan.points,
            "totals": {"points": plan.points.len(), "flops_chinchilla": total_flops,
                       "flops_6nd": plan.points.iter().map(|p| p.flops.six_nd).sum::<f64>(),
                       "estimated_seconds": total_secs},
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    print!("{}", plan_table(&plan));
    println!("sweep directory: {}", dir.display());
    Ok(0)
}

fn plan_table(plan: &Plan) -> String {
    let mut t = fmt::Table::new(
        &[
            "id",
            "model",
            "N (non-emb)",
            "N (total)",
            "D (tokens)",
            "D/N",
            "r",
            "V",
            "precision",
            "steps",
            "FLOPs 6ND",
            "FLOPs (Chinchilla)",
            "est. time",
        ],
        &[0, 1, 8],
    );
    for p in &plan.points {
        t.row(vec![
            p.id.clone(),
            p.label.clone(),
            fmt::si(p.counts.non_embedding_params as f64),
            fmt::si(p.counts.total_params as f64),
            fmt::si(p.tokens as f64),
            format!("{:.1}", p.tokens as f64 / p.n()),
            format!("{}", p.mixture_ratio),
            p.model.vocab_size.to_string(),
            p.precision.name.clone(),
            p.train.steps.to_string(),
            fmt::sci(p.flops.six_nd),
            fmt::sci(p.flops.chinchilla),
            fmt::duration(p.runtime.estimated_seconds),
        ]);
    }
    let flops6: f64 = plan.points.iter().map(|p| p.flops.six_nd).sum();
    let flopsc: f64 = plan.points.iter().map(|p| p.flops.chinchilla).sum();
    let secs: f64 = plan.points.iter().map(|p| p.runtime.estimated_seconds).sum();
    let tokens: f64 = plan.points.iter().map(|p| p.tokens as f64).sum();
    t.row(vec![
        format!("total ({} points)", plan.points.len()),
        String::new(),
        String::new(),
        String::new(),
        fmt::si(tokens),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        fmt::sci(flops6),
        fmt::sci(flopsc),
        fmt::duration(secs),
    ]);
    let mut out = format!(
        "sweep {:?}: {} points, trainer {:?}, device {}\n",
        plan.name(),
        plan.points.len(),
        plan.config.sweep.trainer,
        plan.config.sweep.device
    );
    out.push_str(&t.render());
    let basis = match plan.config.sweep.trainer {
        TrainerKind::Simulate => "simulate trainer: [simulate] seconds_per_point each".to_string(),
        TrainerKind::Candle => format!(
            "estimated at {} FLOP/s sustained ({}); set [sweep] flops_per_second after a `sweep bench`",
            fmt::sci(
                plan.config
                    .sweep
                    .flops_per_second
                    .unwrap_or_else(|| sweep_plan::default_flops_per_second(&plan.config.sweep.device))
            ),
            if plan.config.sweep.flops_per_second.is_some() { "from the config" } else { "a default for the device" }
        ),
    };
    out.push_str(&format!("time estimates: {basis}\n"));
    out
}

/// Picks the backend for each point.
struct Backends {
    device_override: Option<String>,
}

impl Trainer for Backends {
    fn name(&self) -> &'static str {
        "dispatch"
    }
    fn train(&self, point: &Point, dir: &PointDir, control: &Control) -> anyhow::Result<Outcome> {
        match point.trainer {
            TrainerKind::Simulate => sweep_train::simulate::SimulateTrainer.train(point, dir, control),
            TrainerKind::Candle => {
                sweep_train::trainer::CandleTrainer { device: self.device_override.clone() }.train(point, dir, control)
            }
        }
    }
}

fn worker_options(l: &LeaseArgs, wait: bool) -> anyhow::Result<WorkerOptions> {
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

fn cmd_run(a: RunArgs) -> anyhow::Result<u8> {
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
    if a.workers == 1 {
        let owner = Owner::this_process("w0");
        let backends = Backends { device_override: a.devices.first().cloned() };
        run_worker(&store, &backends, &owner, &opts, stop.clone())?;
    } else {
        run_children(&a, &dir, bars, &stop)?;
    }
    drop(monitor);
    finish(&store, stop.load(Ordering::SeqCst))
}

fn cmd_init(a: InitArgs) -> anyhow::Result<u8> {
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

/// Creates or reopens the sweep directory, reporting what changed; refuses incompatible changes.
fn prepare(plan: &Plan, dir: &Path, force: bool) -> anyhow::Result<Store> {
    let (store, change) = match Store::prepare(dir, plan, force) {
        Ok(x) => x,
        Err(sweep_store::StoreError::Incompatible(msg)) => {
            eprintln!("error: {msg}");
            return Err(Exit(EXIT_CONFIG).into());
        }
        Err(e) => return Err(e.into()),
    };
    if change.created {
        tracing::info!("created {} with {} points", dir.display(), plan.points.len());
    } else {
        if !change.added.is_empty() {
            tracing::info!("{} new point(s) in the config: {}", change.added.len(), short_list(&change.added));
        }
        if !change.removed.is_empty() {
            tracing::warn!(
                "{} point(s) are no longer in the grid (their files stay): {}",
                change.removed.len(),
                short_list(&change.removed)
            );
        }
    }
    Ok(store)
}

fn short_list(ids: &[String]) -> String {
    let mut s = ids.iter().take(6).cloned().collect::<Vec<_>>().join(", ");
    if ids.len() > 6 {
        s.push_str(", ...");
    }
    s
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
    if c.failed > 0 {
        write_report(store);
        eprintln!("{} point(s) failed; see failed.json in their directories, and `sweep run --retry-failed` to run them again", c.failed);
        return Ok(EXIT_FAILED_POINTS);
    }
    if c.done == c.total {
        match cmd_fit::sweep_config_fit(store) {
            Ok(Some(config)) => match cmd_fit::fit_sweep(store, &config, &store.dir.join("laws.json")) {
                Ok(laws) => {
                    print!("{}", sweep_fit::render_text(&laws));
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
    if c.done < c.total {
        bail!(
            "{} point(s) are neither done nor failed; another worker may still hold them (see `sweep status {}`)",
            c.total - c.done - c.failed,
            store.dir.display()
        );
    }
    Ok(0)
}

fn cmd_slurm(a: SlurmArgs) -> anyhow::Result<u8> {
    use cmd_slurm::{array_script, fit_script, sbatch, validate, ScriptInputs};
    if let Err(e) = validate(&a.slurm) {
        eprintln!("error: {e}");
        return Err(Exit(EXIT_CONFIG).into());
    }
    worker_options(&a.lease, false)?;
    let plan = load_plan(&a.config)?;
    let dir = plan.sweep_dir(a.config.out.as_deref());
    let store = prepare(&plan, &dir, a.force)?;
    let c = store.status()?.counts;
    let left = c.pending + c.running;
    if left == 0 {
        println!("{}: nothing left to run ({} done, {} failed); nothing submitted", dir.display(), c.done, c.failed);
        return Ok(0);
    }
    let o = &a.slurm;
    let dir = std::fs::canonicalize(&dir).with_context(|| format!("resolving {}", dir.display()))?;
    let binary = std::env::current_exe().and_then(|p| p.canonicalize()).context("locating the sweep binary")?;
    let tasks = o.tasks.unwrap_or(left.min(64));
    if tasks > left {
        tracing::warn!(
            "--tasks {tasks} is more than the {left} point(s) left: the extra tasks find nothing to claim and exit"
        );
    }
    if let Some(p) = plan.points.iter().find(|p| p.runtime.device.starts_with("cuda")).filter(|_| o.gpus == 0) {
        tracing::warn!(
            "the config trains on {} but --gpus is 0: the tasks get no GPU; give --gpus 1",
            p.runtime.device
        );
    }
    let inputs = ScriptInputs {
        name: plan.name().to_string(),
        dir: dir.clone(),
        binary,
        tasks,
        heartbeat: a.lease.heartbeat,
        stale_after: a.lease.stale_after,
    };
    let sdir = dir.join("slurm");
    std::fs::create_dir_all(sdir.join("logs")).with_context(|| format!("creating {}", sdir.join("logs").display()))?;
    let (array, fit) = (sdir.join("array.sbatch"), sdir.join("fit.sbatch"));
    sweep_store::fsio::write_atomic(&array, array_script(o, &inputs).as_bytes())
        .with_context(|| format!("writing {}", array.display()))?;
    let with_fit = !o.no_fit && plan.config.fit.is_some();
    if with_fit {
        sweep_store::fsio::write_atomic(&fit, fit_script(o, &inputs).as_bytes())
            .with_context(|| format!("writing {}", fit.display()))?;
    }
    println!("{}: {} point(s) left of {}; {tasks} array task(s)", dir.display(), left, c.total);
    if !o.submit {
        println!(
            "wrote {}{}",
            array.display(),
            if with_fit { format!(" and {}", fit.display()) } else { String::new() }
        );
        println!("submit with:\n  id=$(sbatch --parsable {})", array.display());
        if with_fit {
            println!("  sbatch --dependency=afterany:$id {}", fit.display());
        }
        println!("or run `sweep slurm` again with --submit");
        return Ok(0);
    }
    let id = sbatch(&array, &[])?;
    let fit_id = if with_fit { Some(sbatch(&fit, &[format!("--dependency=afterany:{id}")])?) } else { None };
    let record = serde_json::json!({ "submitted_unix": sweep_store::fsio::unix_now(), "array_job": id, "fit_job": fit_id, "tasks": tasks, "points_left": left });
    sweep_store::fsio::append_line(&sdir.join("submissions.jsonl"), &record.to_string())
        .context("recording the submission")?;
    println!(
        "submitted array job {id} ({tasks} tasks){}",
        fit_id.as_ref().map(|f| format!(" and fit job {f} (after the array)")).unwrap_or_default()
    );
    println!("watch: sweep status {}   logs: {}/logs/", dir.display(), sdir.display());
    Ok(0)
}

fn cmd_worker(a: WorkerArgs) -> anyhow::Result<u8> {
    let store = Store::open(&a.dir)?;
    let stop = stop_flag()?;
    let opts = worker_options(&a.lease, !a.no_wait)?;
    let owner = Owner::this_process("w");
    let backends = Backends { device_override: a.device.clone() };
    let report = run_worker(&store, &backends, &owner, &opts, stop.clone())?;
    tracing::info!("worker {}: completed {}, failed {}", owner.token, report.completed.len(), report.failed.len());
    Ok(if report.stopped { EXIT_STOPPED } else { 0 })
}

fn cmd_status(a: StatusArgs) -> anyhow::Result<u8> {
    let store = Store::open(&a.dir)?;
    let s = store.status()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(0);
    }
    let c = &s.counts;
    println!(
        "sweep {:?} in {}: {} points: {} done, {} running, {} pending, {} failed",
        s.name,
        a.dir.display(),
        c.total,
        c.done,
        c.running,
        c.pending,
        c.failed
    );
    let mut t =
        fmt::Table::new(&["id", "model", "state", "step", "loss", "tok/s", "ETA", "owner / reason"], &[0, 1, 2, 7]);
    for p in &s.points {
        let state = match p.state {
            sweep_store::status::State::Pending if p.checkpoint_step.is_some() => "interrupted".to_string(),
            other => format!("{other:?}").to_lowercase(),
        };
        let who = match (&p.owner, &p.failure) {
            (Some(o), _) => format!("{} (pid {})", o.host, o.pid),
            (None, Some(f)) => f.chars().take(60).collect(),
            _ => String::new(),
        };
        t.row(vec![
            p.id.clone(),
            p.label.clone(),
            state,
            format!("{}/{}", p.step.unwrap_or(0), p.steps),
            p.loss.map(|l| format!("{l:.4}")).unwrap_or_else(|| "-".into()),
            p.tokens_per_second.map(fmt::si).unwrap_or_else(|| "-".into()),
            p.eta_seconds.map(fmt::duration).unwrap_or_else(|| "-".into()),
            who,
        ]);
    }
    print!("{}", t.render());
    Ok(0)
}

fn cmd_bench_train(a: BenchTrainArgs) -> anyhow::Result<u8> {
    use sweep_plan::shape::Ffn;
    let ffn = match a.ffn.as_str() {
        "swiglu" => Ffn::Swiglu,
        "gelu" => Ffn::Gelu,
        other => bail!("--ffn {other:?}: use swiglu or gelu"),
    };
    if a.heads == 0 || !a.d_model.is_multiple_of(a.heads) || !(a.d_model / a.heads).is_multiple_of(2) {
        bail!("--d-model {} must be a multiple of --heads {} with an even head size", a.d_model, a.heads);
    }
    if a.steps == 0 || a.batch == 0 || a.ctx < 2 || a.vocab < 2 || a.layers == 0 {
        bail!("--steps, --batch, --layers must be positive, --ctx and --vocab at least 2");
    }
    let d_ff = a.d_ff.unwrap_or(match ffn {
        Ffn::Gelu => 4 * a.d_model,
        Ffn::Swiglu => (8 * a.d_model).div_ceil(3).div_ceil(32) * 32,
    });
    let config = sweep_train::model::ModelConfig {
        d_model: a.d_model,
        n_layers: a.layers,
        n_heads: a.heads,
        d_ff,
        context: a.ctx,
        vocab_size: a.vocab,
        ffn,
        tied_embeddings: !a.untied,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
    };
    let opts = sweep_train::bench::BenchOptions {
        config,
        batch: a.batch,
        steps: a.steps,
        warmup: a.warmup,
        device: a.device,
        precision: a.precision,
    };
    let r = sweep_train::bench::run(&opts)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} tok/s, step {:.1} ms (forward {:.1}, backward {:.1}, optimiser {:.1}), MFU {:.1}% of a {} GEMM peak, peak RSS {:.0} MB, {} threads",
            fmt::si(r.tokens_per_second), r.step_ms, r.forward_ms, r.backward_ms, r.optimizer_ms, 100.0 * r.mfu, fmt::sci(r.gemm_peak_flops), r.peak_rss_mb, r.threads
        );
    }
    Ok(0)
}

/// Writes DIR/report. The report is a view of the directory: a problem drawing it is a warning,
/// never a failed sweep.
fn write_report(store: &Store) {
    match cmd_report::write_sweep_report(store, &store.dir.join("report")) {
        Ok(r) => tracing::info!("report: {}", r.dir.join("index.html").display()),
        Err(e) => {
            tracing::warn!("writing the report failed: {e:#}; run `sweep report {}` to retry", store.dir.display())
        }
    }
}
