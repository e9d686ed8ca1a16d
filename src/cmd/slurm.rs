//! `sweep slurm`: the sweep as a Slurm job array over a shared sweep directory, one `sweep
//! worker` per task, and a dependent job that fits the laws. The scripts are sweep-store's
//! [`sweep_store::slurm`]; this module maps the flags onto them.

use super::worker::{worker_options, LeaseArgs};
use crate::config::{load_plan, prepare, ConfigArgs};
use crate::{Exit, EXIT_CONFIG};
use anyhow::Context;
use clap::Args;
use sweep_store::slurm::{self, SlurmOptions};

/// Arguments of `sweep slurm`.
#[derive(Args)]
pub struct SlurmArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub slurm: SlurmFlags,
    /// Accept a config that drops points with results or checkpoints in the directory.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub lease: LeaseArgs,
}

/// Options of `sweep slurm` beyond the config.
#[derive(Args, Debug, Clone)]
pub struct SlurmFlags {
    /// Array tasks (workers). Default: one per point left to run, at most 64.
    #[arg(long)]
    pub tasks: Option<usize>,
    /// Tasks running at once at most (`--array=0-N%K`).
    #[arg(long)]
    pub max_running: Option<usize>,
    /// Slurm partition.
    #[arg(long)]
    pub partition: Option<String>,
    /// Time limit of each task, in Slurm's format (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS).
    #[arg(long)]
    pub time: Option<String>,
    /// GPUs per task; each worker then trains on cuda:0 of its own allocation.
    #[arg(long, default_value_t = 0)]
    pub gpus: u32,
    /// CPUs per task.
    #[arg(long)]
    pub cpus_per_task: Option<u32>,
    /// Memory per task, in Slurm's format (e.g. 16G).
    #[arg(long)]
    pub mem: Option<String>,
    /// Seconds before the time limit at which Slurm sends SIGUSR1: the worker checkpoints and stops.
    #[arg(long, default_value_t = 120)]
    pub signal_before: u32,
    /// Requeue a task that SIGUSR1 stopped before its time limit (it resumes from the checkpoint).
    #[arg(long)]
    pub requeue: bool,
    /// Another #SBATCH option for both jobs, e.g. --sbatch=--account=abc (repeatable).
    #[arg(long = "sbatch", allow_hyphen_values = true, value_name = "OPTION")]
    pub sbatch: Vec<String>,
    /// Do not submit the dependent `sweep fit` job.
    #[arg(long)]
    pub no_fit: bool,
    /// Submit with sbatch; without it the scripts are written and the commands printed.
    #[arg(long)]
    pub submit: bool,
}

impl SlurmFlags {
    /// The options that go into the scripts.
    pub fn options(&self) -> SlurmOptions {
        SlurmOptions {
            tasks: self.tasks,
            max_running: self.max_running,
            partition: self.partition.clone(),
            time: self.time.clone(),
            gpus: self.gpus,
            cpus_per_task: self.cpus_per_task,
            mem: self.mem.clone(),
            signal_before: self.signal_before,
            requeue: self.requeue,
            sbatch: self.sbatch.clone(),
        }
    }
}

/// Runs `sweep slurm`.
pub fn run(a: SlurmArgs) -> anyhow::Result<u8> {
    let o = a.slurm.options();
    if let Err(e) = slurm::validate(&o) {
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
    let inputs = slurm::ScriptInputs {
        name: plan.name().to_string(),
        dir: dir.clone(),
        binary,
        tasks,
        heartbeat: a.lease.heartbeat,
        stale_after: a.lease.stale_after,
    };
    let with_fit = !a.slurm.no_fit && plan.config.fit.is_some();
    let scripts = slurm::write_scripts(&o, &inputs, with_fit)?;
    println!("{}: {} point(s) left of {}; {tasks} array task(s)", dir.display(), left, c.total);
    if c.waiting > 0 {
        println!(
            "{} of them wait for a parent's checkpoint: a task that finds only such points waits while their parent is being trained (the checkpoint is on the way) and exits otherwise",
            c.waiting
        );
    }
    if !a.slurm.submit {
        println!(
            "wrote {}{}",
            scripts.array.display(),
            scripts.fit.as_ref().map(|f| format!(" and {}", f.display())).unwrap_or_default()
        );
        println!("submit with:\n  id=$(sbatch --parsable {})", scripts.array.display());
        if let Some(fit) = &scripts.fit {
            println!("  sbatch --dependency=afterany:$id {}", fit.display());
        }
        println!("or run `sweep slurm` again with --submit");
        return Ok(0);
    }
    let submitted = slurm::submit(&scripts, tasks, left)?;
    println!(
        "submitted array job {} ({tasks} tasks){}",
        submitted.array_job,
        submitted.fit_job.as_ref().map(|f| format!(" and fit job {f} (after the array)")).unwrap_or_default()
    );
    println!("watch: sweep status {}   logs: {}/logs/", dir.display(), scripts.dir.display());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use sweep_store::slurm::{array_script, fit_script, validate, ScriptInputs};

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        o: SlurmFlags,
    }

    fn opts(args: &[&str]) -> SlurmOptions {
        T::parse_from(std::iter::once("t").chain(args.iter().copied())).o.options()
    }

    fn inputs() -> ScriptInputs {
        ScriptInputs {
            name: "demo".into(),
            dir: "/shared/runs/demo".into(),
            binary: "/opt/it's/sweep".into(),
            tasks: 4,
            heartbeat: 5.0,
            stale_after: 120.0,
        }
    }

    #[test]
    fn bad_options_say_what_to_change() {
        for (args, needle) in [
            (vec!["--tasks", "0"], "--tasks 0"),
            (vec!["--time", "4h"], "--time \"4h\""),
            (vec!["--mem", "lots"], "--mem"),
            (vec!["--partition", "gpu; rm"], "--partition"),
            (vec!["--sbatch=account=x"], "long sbatch option"),
            (vec!["--sbatch=--comment=$(id)"], "shell characters"),
            (vec!["--signal-before", "3"], "--signal-before 3"),
        ] {
            let e = validate(&opts(&args)).unwrap_err().to_string();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        validate(&opts(&[
            "--tasks",
            "3",
            "--time",
            "1-00:00:00",
            "--mem",
            "16G",
            "--partition",
            "gpu",
            "--sbatch=--account=abc",
        ]))
        .unwrap();
    }

    #[test]
    fn array_script_carries_the_options() {
        let o = opts(&[
            "--time",
            "04:00:00",
            "--gpus",
            "1",
            "--partition",
            "gpu",
            "--requeue",
            "--max-running",
            "2",
            "--sbatch=--account=abc",
            "--signal-before",
            "300",
        ]);
        let s = array_script(&o, &inputs());
        for line in [
            "#SBATCH --array=0-3%2",
            "#SBATCH --output=/shared/runs/demo/slurm/logs/%A_%a.log",
            "#SBATCH --signal=B:USR1@300",
            "#SBATCH --requeue",
            "#SBATCH --time=04:00:00",
            "#SBATCH --gres=gpu:1",
            "#SBATCH --partition=gpu",
            "#SBATCH --account=abc",
            r"'/opt/it'\''s/sweep' worker '/shared/runs/demo' --no-wait --heartbeat 5 --stale-after 120 --device cuda:0 &",
            r#"if [ "$rc" = 130 ] && [ "$got" = USR1 ] && [ 1 = 1 ]; then"#,
            r#"task="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}""#,
        ] {
            assert!(s.lines().any(|l| l == line), "missing {line:?} in\n{s}");
        }
        // #SBATCH lines must come before the first command, or sbatch ignores them.
        let first_cmd = s.lines().position(|l| !l.starts_with('#')).unwrap();
        assert!(s.lines().skip(first_cmd).all(|l| !l.starts_with("#SBATCH")), "{s}");
        let plain = array_script(&opts(&[]), &inputs());
        assert!(
            plain.contains("#SBATCH --no-requeue")
                && !plain.contains("--device")
                && !plain.contains("--gres")
                && plain.contains("[ 0 = 1 ]"),
            "{plain}"
        );
    }

    #[test]
    fn fit_script_fits_the_directory() {
        let s = fit_script(&opts(&["--partition", "cpu"]), &inputs());
        assert!(
            s.contains("#SBATCH --partition=cpu") && s.contains(r"exec '/opt/it'\''s/sweep' fit '/shared/runs/demo'"),
            "{s}"
        );
    }
}
