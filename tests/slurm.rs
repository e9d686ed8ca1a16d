//! `sweep slurm` on a real single-node Slurm (scripts/slurm-local.sh starts one; .ci/run does):
//! a job array completes every point exactly once with the results of a local run and the
//! dependent job fits the laws; a task that gets SIGUSR1 (Slurm's warning before a time limit)
//! checkpoints, requeues itself and resumes, with results equal to an uninterrupted run; a
//! staged (WSD) sweep's array runs every point once, branches after their stable runs' checkpoints.
//! Without Slurm those three say so and pass, except under CI=true, where they fail. A fourth test
//! needs no Slurm: without --submit the scripts are written (valid bash), and bad options are
//! refused before anything is written.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Whether a Slurm controller answers with a usable node.
fn slurm_up(test: &str) -> bool {
    let up = Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .map(|o| {
            o.status.success()
                && ["idle", "mix", "alloc"].iter().any(|s| String::from_utf8_lossy(&o.stdout).contains(s))
        })
        .unwrap_or(false);
    if !up {
        assert!(
            std::env::var("CI").is_err(),
            "{test}: no Slurm answers; CI must start one (scripts/slurm-local.sh start)"
        );
        eprintln!(
            "\n*** SKIP {test}: no Slurm (run scripts/slurm-local.sh start as root); this check did NOT run ***\n"
        );
    }
    up
}

fn config(name: &str, seconds: f64) -> String {
    format!(
        r#"
[sweep]
name = "{name}"
seed = 5
trainer = "simulate"
[grid]
model = ["micro", "tiny", "mini"]
tokens_per_param = [4, 16]
[model]
context = 64
[train]
batch_size = 16
log_every = 5
checkpoint_every = 20
[simulate]
seconds_per_point = {seconds}
noise = 0.01
[fit]
bootstrap = {{ resamples = 10, seed = 0 }}
[[fit.laws]]
name = "chinchilla"
"#
    )
}

/// The ids from the sweep's submissions record (array job, fit job).
fn submitted(sweep_dir: &Path) -> (String, Option<String>) {
    let text = std::fs::read_to_string(sweep_dir.join("slurm/submissions.jsonl")).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    (v["array_job"].as_str().unwrap().to_string(), v["fit_job"].as_str().map(String::from))
}

/// Slurm states of every task of these jobs.
fn states(ids: &[&str]) -> Vec<String> {
    let out =
        Command::new("squeue").args(["-h", "-r", "-t", "all", "-o", "%T", "-j", &ids.join(",")]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect()
}

fn wait_for_jobs(ids: &[&str], timeout: Duration) {
    let t0 = Instant::now();
    loop {
        let s = states(ids);
        if !s.is_empty()
            && s.iter().all(|x| {
                !matches!(
                    x.as_str(),
                    "PENDING"
                        | "RUNNING"
                        | "COMPLETING"
                        | "CONFIGURING"
                        | "REQUEUED"
                        | "REQUEUE_HOLD"
                        | "REQUEUE_FED"
                        | "SUSPENDED"
                )
            })
        {
            assert!(s.iter().all(|x| x == "COMPLETED"), "jobs {ids:?} ended as {s:?}");
            return;
        }
        assert!(t0.elapsed() < timeout, "jobs {ids:?} still {s:?} after {timeout:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The same sweep run locally, uninterrupted, for comparison.
fn local_results(dir: &Path, cfg: &Path, name: &str) -> std::collections::BTreeMap<String, serde_json::Value> {
    let out = run(sweep().arg("run").arg(cfg).arg("--out").arg(dir.join("local")).arg("--no-progress"));
    assert!(out.status.success(), "{}", text(&out));
    results(&dir.join("local").join(name))
}

fn logs(sweep_dir: &Path) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(sweep_dir.join("slurm/logs")).unwrap() {
        all += &std::fs::read_to_string(e.unwrap().path()).unwrap();
    }
    all
}

#[test]
fn a_job_array_runs_every_point_once_then_fits() {
    if !slurm_up("a_job_array_runs_every_point_once_then_fits") {
        return;
    }
    let dir = scratch("slurm-array");
    let cfg = write_config(&dir, "s.toml", &config("array", 0.3));
    let out =
        run(sweep().arg("slurm").arg(&cfg).arg("--out").arg(dir.join("slurm")).args(["--tasks", "3", "--submit"]));
    assert!(out.status.success(), "{}", text(&out));
    let sweep_dir = dir.join("slurm").join("array");
    let (array, fit) = submitted(&sweep_dir);
    let fit = fit.expect("the config has [fit], so a fit job is submitted");
    wait_for_jobs(&[&array, &fit], Duration::from_secs(240));
    let done = completions(&sweep_dir);
    assert_eq!(done.len(), 6, "{done:?}");
    assert!(done.values().all(|&n| n == 1), "a point ran twice: {done:?}");
    assert_eq!(results(&sweep_dir), local_results(&dir, &cfg, "array"), "the array's results differ from a local run");
    let laws: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(sweep_dir.join("laws.json")).expect("the fit job wrote laws.json"),
    )
    .unwrap();
    assert_eq!(laws["laws"][0]["name"], "chinchilla");
    let log = logs(&sweep_dir);
    for t in 0..3 {
        assert!(log.contains(&format!("[sweep slurm] task {array}_{t} on ")), "task {t} did not start:\n{log}");
    }
    // Submitting again with everything done submits nothing.
    let out = run(sweep().arg("slurm").arg(&cfg).arg("--out").arg(dir.join("slurm")).arg("--submit"));
    assert!(out.status.success() && text(&out).contains("nothing left to run"), "{}", text(&out));
}

#[test]
fn sigusr1_checkpoints_requeues_and_resumes() {
    if !slurm_up("sigusr1_checkpoints_requeues_and_resumes") {
        return;
    }
    let dir = scratch("slurm-requeue");
    let cfg = write_config(&dir, "s.toml", &config("requeue", 2.5));
    let out = run(sweep().arg("slurm").arg(&cfg).arg("--out").arg(dir.join("slurm")).args([
        "--tasks",
        "1",
        "--requeue",
        "--no-fit",
        "--submit",
    ]));
    assert!(out.status.success(), "{}", text(&out));
    let sweep_dir = dir.join("slurm").join("requeue");
    let (array, fit) = submitted(&sweep_dir);
    assert!(fit.is_none());
    // Once the task has trained a point past its first checkpoint, send what Slurm sends before
    // a time limit (`--signal=B:USR1@N`): SIGUSR1 to the batch script.
    let t0 = Instant::now();
    loop {
        let events = std::fs::read_to_string(sweep_dir.join("events.jsonl")).unwrap_or_default();
        if events.lines().any(|l| l.contains("\"completed\"")) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "the task never completed a point");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1200));
    let task = format!("{array}_0");
    let sent = Command::new("scancel").args(["--signal=USR1", "--batch", &task]).status().unwrap();
    assert!(sent.success(), "scancel --signal=USR1 --batch {task}");
    wait_for_jobs(&[&array], Duration::from_secs(240));
    let log = logs(&sweep_dir);
    assert!(
        log.contains("worker exited with 130 after SIGUSR1") && log.contains(&format!("requeueing {task}")),
        "no requeue:\n{log}"
    );
    assert!(log.contains("restart 1"), "the task did not run again:\n{log}");
    assert!(log.contains("resume_step=Some("), "no point resumed from a checkpoint:\n{log}");
    let done = completions(&sweep_dir);
    assert_eq!(done.len(), 6, "{done:?}");
    assert!(done.values().all(|&n| n == 1), "a point ran twice: {done:?}");
    assert_eq!(
        results(&sweep_dir),
        local_results(&dir, &cfg, "requeue"),
        "the requeued run's results differ from an uninterrupted run"
    );
    for id in results(&sweep_dir).keys() {
        assert_eq!(
            metrics(&sweep_dir.join("points").join(id)),
            metrics(&dir.join("local/requeue/points").join(id)),
            "metrics of {id} differ"
        );
    }
}

#[test]
fn without_submit_the_scripts_are_written_and_bad_options_refused() {
    // Needs no Slurm: nothing is submitted.
    let dir = scratch("slurm-scripts");
    let cfg = write_config(&dir, "s.toml", &config("scripts", 0.1));
    let out = run(sweep().arg("slurm").arg(&cfg).arg("--out").arg(&dir).args(["--time", "4h"]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--time \"4h\": use Slurm's format"), "{}", text(&out));
    assert!(!dir.join("scripts").exists(), "a refused command wrote the sweep directory");
    let out = run(sweep().arg("slurm").arg(&cfg).arg("--out").arg(&dir).args([
        "--tasks",
        "2",
        "--time",
        "1:00:00",
        "--partition",
        "cpu",
    ]));
    assert!(out.status.success(), "{}", text(&out));
    let sweep_dir = dir.join("scripts");
    let array = sweep_dir.join("slurm/array.sbatch");
    let script = std::fs::read_to_string(&array).unwrap();
    assert!(
        script.contains("#SBATCH --array=0-1")
            && script.contains("#SBATCH --time=1:00:00")
            && script.contains("#SBATCH --partition=cpu"),
        "{script}"
    );
    assert!(
        text(&out).contains(&format!("sbatch --parsable {}", array.canonicalize().unwrap().display())),
        "{}",
        text(&out)
    );
    for s in ["array.sbatch", "fit.sbatch"] {
        let syntax = Command::new("bash").arg("-n").arg(sweep_dir.join("slurm").join(s)).status().unwrap();
        assert!(syntax.success(), "{s} is not valid bash");
    }
    assert!(!sweep_dir.join("slurm/submissions.jsonl").exists(), "nothing was submitted");
    assert_eq!(completions(&sweep_dir).len(), 0);
}

#[test]
fn a_job_array_runs_a_staged_sweep_once_children_after_their_parents() {
    if !slurm_up("a_job_array_runs_a_staged_sweep_once_children_after_their_parents") {
        return;
    }
    // Three stable runs and six WSD cooldown branches, one task per point and two more: tasks
    // that find only branches whose stable run is being trained wait for its checkpoints; the
    // extra tasks find nothing left and exit cleanly.
    let dir = scratch("slurm-staged");
    let cfg = write_config(
        &dir,
        "s.toml",
        &config("staged", 1.0).replace(
                "checkpoint_every = 20",
                "checkpoint_every = 20\nschedule = \"wsd\"\nwarmup_steps = 2\ncooldown_fraction = 0.2\n[stages]\ntype = \"wsd\"",
            ),
    );
    let out =
        run(sweep().arg("slurm").arg(&cfg).arg("--out").arg(dir.join("slurm")).args(["--tasks", "11", "--submit"]));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("6 of them wait for a parent's checkpoint"), "{}", text(&out));
    let sweep_dir = dir.join("slurm").join("staged");
    let (array, fit) = submitted(&sweep_dir);
    wait_for_jobs(&[&array, &fit.expect("a fit job")], Duration::from_secs(300));
    let done = completions(&sweep_dir);
    assert_eq!(done.len(), 9, "{done:?}");
    assert!(done.values().all(|&n| n == 1), "a point ran twice: {done:?}");
    assert_eq!(results(&sweep_dir), local_results(&dir, &cfg, "staged"), "the array's results differ from a local run");
    for (id, _) in results(&sweep_dir) {
        assert_eq!(
            metrics(&sweep_dir.join("points").join(&id)),
            metrics(&dir.join("local/staged/points").join(&id)),
            "metrics of {id} differ"
        );
    }
    assert!(sweep_dir.join("laws.json").exists(), "the fit job wrote no laws.json");
}
