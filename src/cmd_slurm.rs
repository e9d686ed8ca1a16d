//! `sweep slurm`: the sweep as a Slurm job array over a shared sweep directory.
//!
//! Each array task runs one `sweep worker` on the directory; the directory's leases and results
//! (not Slurm) record what ran, so tasks may be cancelled, requeued or resubmitted in any order.
//! A dependent job runs `sweep fit` once every task has ended. The batch script forwards Slurm's
//! signals to the worker (bash runs a trap only between commands, so the worker runs in the
//! background and the script waits for it): SIGUSR1 before the time limit and SIGTERM both
//! make the worker checkpoint and release its point; with `--requeue` a task stopped by SIGUSR1
//! requeues itself (addressed as ARRAYID_TASKID: the bare job id would requeue the whole array).

use anyhow::{bail, Context};
use clap::Args;
use std::path::{Path, PathBuf};

/// Options of `sweep slurm` beyond the config.
#[derive(Args, Debug, Clone)]
pub struct SlurmOptions {
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

/// Everything a batch script needs.
#[derive(Debug, Clone)]
pub struct ScriptInputs {
    /// Sweep name (job names).
    pub name: String,
    /// The sweep directory, absolute.
    pub dir: PathBuf,
    /// The `sweep` binary, absolute.
    pub binary: PathBuf,
    /// Array tasks.
    pub tasks: usize,
    /// Worker lease heartbeat and staleness (seconds).
    pub heartbeat: f64,
    /// Seconds without a heartbeat before a lease is taken over.
    pub stale_after: f64,
}

/// Checks the options that go into the scripts: values Slurm would reject later, or that would
/// break the script, fail here with what to change.
pub fn validate(o: &SlurmOptions) -> anyhow::Result<()> {
    let plain = |what: &str, v: &str| -> anyhow::Result<()> {
        if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control() || "'\"`$\\;&|<>".contains(c)) {
            bail!("{what} {v:?}: use a plain value without spaces, quotes or shell characters");
        }
        Ok(())
    };
    if o.tasks == Some(0) {
        bail!("--tasks 0: give at least 1 array task");
    }
    if o.max_running == Some(0) {
        bail!("--max-running 0: allow at least 1 running task");
    }
    if let Some(p) = &o.partition {
        plain("--partition", p)?;
    }
    if let Some(t) = &o.time {
        if !valid_time(t) {
            bail!("--time {t:?}: use Slurm's format: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS");
        }
    }
    if let Some(m) = &o.mem {
        let ok = m.trim_end_matches(['K', 'M', 'G', 'T']).parse::<u64>().is_ok_and(|n| n > 0);
        if !ok {
            bail!("--mem {m:?}: use a positive size with an optional K, M, G or T suffix (e.g. 16G)");
        }
    }
    if o.cpus_per_task == Some(0) {
        bail!("--cpus-per-task 0: give at least 1");
    }
    if o.signal_before < 10 {
        bail!("--signal-before {}: give at least 10 seconds for the checkpoint", o.signal_before);
    }
    for s in &o.sbatch {
        if !s.starts_with("--") {
            bail!("--sbatch {s:?}: give a long sbatch option such as --account=abc");
        }
        plain("--sbatch", s)?;
    }
    Ok(())
}

/// Slurm's time formats.
fn valid_time(t: &str) -> bool {
    let nums = |s: &str, max_parts: usize| {
        let parts: Vec<&str> = s.split(':').collect();
        parts.len() <= max_parts && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    };
    match t.split_once('-') {
        Some((days, rest)) => !days.is_empty() && days.chars().all(|c| c.is_ascii_digit()) && nums(rest, 3),
        None => nums(t, 3),
    }
}

/// Single-quotes a path for bash.
fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

fn header(o: &SlurmOptions, lines: &mut Vec<String>) {
    if let Some(p) = &o.partition {
        lines.push(format!("#SBATCH --partition={p}"));
    }
    for s in &o.sbatch {
        lines.push(format!("#SBATCH {s}"));
    }
}

/// The job-array script: one `sweep worker` per task.
pub fn array_script(o: &SlurmOptions, s: &ScriptInputs) -> String {
    let mut l = vec!["#!/bin/bash".to_string(), format!("#SBATCH --job-name=sweep-{}", s.name)];
    let limit = o.max_running.map(|k| format!("%{k}")).unwrap_or_default();
    l.push(format!("#SBATCH --array=0-{}{limit}", s.tasks - 1));
    l.push(format!("#SBATCH --output={}/slurm/logs/%A_%a.log", s.dir.display()));
    l.push("#SBATCH --open-mode=append".into());
    l.push(format!("#SBATCH --signal=B:USR1@{}", o.signal_before));
    l.push(format!("#SBATCH --{}", if o.requeue { "requeue" } else { "no-requeue" }));
    if let Some(t) = &o.time {
        l.push(format!("#SBATCH --time={t}"));
    }
    if o.gpus > 0 {
        l.push(format!("#SBATCH --gres=gpu:{}", o.gpus));
    }
    if let Some(c) = o.cpus_per_task {
        l.push(format!("#SBATCH --cpus-per-task={c}"));
    }
    if let Some(m) = &o.mem {
        l.push(format!("#SBATCH --mem={m}"));
    }
    header(o, &mut l);
    let device = if o.gpus > 0 { " --device cuda:0" } else { "" };
    l.push(format!(
        r#"# Written by `sweep slurm` for {dir}. Each task runs one `sweep worker` on that directory;
# the directory's leases and results record what ran, not Slurm.
set -u
task="${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
echo "[sweep slurm] task $task on $(hostname) at $(date -u +%FT%TZ), restart ${{SLURM_RESTART_COUNT:-0}}"
{bin} worker {qdir} --no-wait --heartbeat {hb} --stale-after {stale}{device} &
pid=$!
got=""
# Slurm signals this script only (B:); forward to the worker, which checkpoints and stops.
trap 'got=USR1; kill -USR1 $pid 2>/dev/null' USR1
trap 'got=TERM; kill -TERM $pid 2>/dev/null' TERM
# wait returns early when a trapped signal arrives: wait again until the worker has exited.
while :; do wait $pid; rc=$?; kill -0 $pid 2>/dev/null || break; done
echo "[sweep slurm] worker exited with $rc${{got:+ after SIG$got}}"
if [ "$rc" = 130 ] && [ "$got" = USR1 ] && [ {requeue} = 1 ]; then
  echo "[sweep slurm] requeueing $task"
  scontrol requeue "$task"
fi
exit $rc
"#,
        dir = s.dir.display(),
        bin = quote(&s.binary),
        qdir = quote(&s.dir),
        hb = s.heartbeat,
        stale = s.stale_after,
        requeue = u8::from(o.requeue),
    ));
    l.join("\n")
}

/// The fit job, run once every array task has ended.
pub fn fit_script(o: &SlurmOptions, s: &ScriptInputs) -> String {
    let mut l = vec!["#!/bin/bash".to_string(), format!("#SBATCH --job-name=sweep-{}-fit", s.name)];
    l.push(format!("#SBATCH --output={}/slurm/logs/fit-%j.log", s.dir.display()));
    if let Some(c) = o.cpus_per_task {
        l.push(format!("#SBATCH --cpus-per-task={c}"));
    }
    header(o, &mut l);
    l.push(format!(
        "# Written by `sweep slurm`: fits the laws of the sweep's [fit] section once the array has ended.\n{bin} status {dir}\nexec {bin} fit {dir}\n",
        bin = quote(&s.binary),
        dir = quote(&s.dir)
    ));
    l.join("\n")
}

/// Runs sbatch on a script with extra arguments; returns the job id.
pub fn sbatch(script: &Path, extra: &[String]) -> anyhow::Result<String> {
    let out = std::process::Command::new("sbatch").arg("--parsable").args(extra).arg(script).output().context(
        "running sbatch (is Slurm installed and on PATH? without --submit, `sweep slurm` only writes the scripts)",
    )?;
    if !out.status.success() {
        bail!("sbatch {} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().split(';').next().unwrap_or_default().to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!("sbatch {} printed no job id: {:?}", script.display(), String::from_utf8_lossy(&out.stdout));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        o: SlurmOptions,
    }

    fn opts(args: &[&str]) -> SlurmOptions {
        T::parse_from(std::iter::once("t").chain(args.iter().copied())).o
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
    fn times_in_slurm_formats() {
        for ok in ["30", "30:00", "04:00:00", "2-00", "2-12:30", "1-02:03:04"] {
            assert!(valid_time(ok), "{ok}");
        }
        for bad in ["", "4h", "1:2:3:4", "-3", "2-", "1-2:3:4:5", "10 00"] {
            assert!(!valid_time(bad), "{bad}");
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
