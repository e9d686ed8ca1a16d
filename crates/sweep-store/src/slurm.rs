//! Slurm job arrays over a shared sweep directory: the batch scripts and their submission.
//!
//! Each array task runs one `sweep worker` on the directory; the directory's leases and results
//! (not Slurm) record what ran, so tasks may be cancelled, requeued or resubmitted in any order.
//! A dependent job runs `sweep fit` once every task has ended. The batch script forwards Slurm's
//! signals to the worker (bash runs a trap only between commands, so the worker runs in the
//! background and the script waits for it): SIGUSR1 before the time limit and SIGTERM both
//! make the worker checkpoint and release its point; with `requeue` a task stopped by SIGUSR1
//! requeues itself (addressed as ARRAYID_TASKID: the bare job id would requeue the whole array).

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What the batch scripts ask of Slurm (`sweep slurm`'s options).
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmOptions {
    /// Array tasks (workers); None: one per point left to run, at most 64.
    pub tasks: Option<usize>,
    /// Tasks running at once at most (`--array=0-N%K`).
    pub max_running: Option<usize>,
    /// Slurm partition.
    pub partition: Option<String>,
    /// Time limit of each task, in Slurm's format.
    pub time: Option<String>,
    /// GPUs per task; each worker then trains on cuda:0 of its own allocation.
    pub gpus: u32,
    /// CPUs per task.
    pub cpus_per_task: Option<u32>,
    /// Memory per task, in Slurm's format (e.g. 16G).
    pub mem: Option<String>,
    /// Seconds before the time limit at which Slurm sends SIGUSR1.
    pub signal_before: u32,
    /// Requeue a task that SIGUSR1 stopped before its time limit.
    pub requeue: bool,
    /// More #SBATCH options for both jobs, e.g. `--account=abc`.
    pub sbatch: Vec<String>,
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
fn sbatch(script: &Path, extra: &[String]) -> anyhow::Result<String> {
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

/// The batch scripts of a sweep, in DIR/slurm.
#[derive(Debug, Clone, PartialEq)]
pub struct Scripts {
    /// DIR/slurm (the tasks' logs go to its logs/).
    pub dir: PathBuf,
    /// The job-array script.
    pub array: PathBuf,
    /// The fit job's script, when there is one.
    pub fit: Option<PathBuf>,
}

/// Writes the array script, and the fit job's when `with_fit`, into DIR/slurm.
pub fn write_scripts(o: &SlurmOptions, s: &ScriptInputs, with_fit: bool) -> anyhow::Result<Scripts> {
    let sdir = s.dir.join("slurm");
    std::fs::create_dir_all(sdir.join("logs")).with_context(|| format!("creating {}", sdir.join("logs").display()))?;
    let (array, fit) = (sdir.join("array.sbatch"), sdir.join("fit.sbatch"));
    crate::fsio::write_atomic(&array, array_script(o, s).as_bytes())
        .with_context(|| format!("writing {}", array.display()))?;
    if with_fit {
        crate::fsio::write_atomic(&fit, fit_script(o, s).as_bytes())
            .with_context(|| format!("writing {}", fit.display()))?;
    }
    Ok(Scripts { dir: sdir, array, fit: with_fit.then_some(fit) })
}

/// Submits the array and then the fit job, to start once the array has ended; records the
/// submission in slurm/submissions.jsonl.
pub fn submit(scripts: &Scripts, tasks: usize, points_left: usize) -> anyhow::Result<Submission> {
    let id = sbatch(&scripts.array, &[])?;
    let fit_job = match &scripts.fit {
        Some(fit) => Some(sbatch(fit, &[format!("--dependency=afterany:{id}")])?),
        None => None,
    };
    let record = Submission { submitted_unix: crate::fsio::unix_now(), array_job: id, fit_job, tasks, points_left };
    let line = crate::records::to_sorted_json(&record)?;
    crate::fsio::append_line(&scripts.dir.join("submissions.jsonl"), &line.to_string())
        .context("recording the submission")?;
    Ok(record)
}

/// One line of slurm/submissions.jsonl: what `sweep slurm --submit` submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    /// When (Unix seconds).
    pub submitted_unix: f64,
    /// The array job's id.
    pub array_job: String,
    /// The dependent fit job's id, if one was submitted.
    pub fit_job: Option<String>,
    /// Array tasks.
    pub tasks: usize,
    /// Points left to run when it was submitted.
    pub points_left: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_slurm_formats() {
        for ok in ["30", "30:00", "04:00:00", "2-00", "2-12:30", "1-02:03:04"] {
            assert!(valid_time(ok), "{ok}");
        }
        for bad in ["", "4h", "1:2:3:4", "-3", "2-", "1-2:3:4:5", "10 00"] {
            assert!(!valid_time(bad), "{bad}");
        }
    }
}
