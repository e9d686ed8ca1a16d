//! A sweep killed with SIGKILL (and stopped with SIGINT) at random moments, many times, then
//! resumed until done, gives the same results as an uninterrupted run, with every point
//! completed exactly once.

mod common;
use common::*;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[sweep]
name = "resume"
seed = 3
trainer = "simulate"

[grid]
model = [1e5, 3e5, 1e6]
tokens_per_param = [4, 16]
mixture_ratio = [0.25]

[model]
context = 64

[train]
batch_size = 8
log_every = 5
checkpoint_every = 20

[simulate]
noise = 0.01
seconds_per_point = 0.6
domain = { E = 1.2, A = 300.0, alpha = 0.3, B = 500.0, beta = 0.3, eta = 0.2, C = 0.05, gamma = 0.5 }
"#;

fn compare(a: &std::path::Path, b: &std::path::Path) {
    let ra = results(a);
    let rb = results(b);
    assert_eq!(ra.len(), 6, "every point has a result");
    assert_eq!(ra, rb, "results differ from the uninterrupted run");
    for id in ra.keys() {
        let ma = metrics(&a.join("points").join(id));
        let mb = metrics(&b.join("points").join(id));
        assert!(!ma.is_empty());
        assert_eq!(ma, mb, "metrics of {id} differ from the uninterrupted run");
    }
    // result.json (created exclusively) is the record of completion; events.jsonl is a
    // best-effort log: a SIGKILL between publishing a result and appending its "completed"
    // event leaves the point done without the event. What must never happen is a second
    // completion (a "duplicate" event, which `completions` rejects, or two "completed").
    let done = completions(a);
    assert!(done.keys().all(|id| ra.contains_key(id)), "completed events for points without a result: {done:?}");
    assert!(done.values().all(|&n| n == 1), "a point was completed more than once: {done:?}");
}

#[test]
fn sigkill_at_random_moments_then_resume_equals_uninterrupted() {
    let dir = scratch("resume-kill");
    let cfg = write_config(&dir, "resume.toml", CONFIG);
    let reference = dir.join("reference");
    let out = run(sweep().args(["run"]).arg(&cfg).arg("--out").arg(&reference));
    assert!(out.status.success(), "{}", text(&out));

    let killed = dir.join("killed");
    let mut rng = TestRng::from_env();
    let mut kills = 0;
    let started = Instant::now();
    while kills < 12 && started.elapsed() < Duration::from_secs(60) {
        let mut child = sweep()
            .args(["run", "--no-progress"])
            .arg(&cfg)
            .arg("--out")
            .arg(&killed)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.range(30, 500)));
        if child.try_wait().unwrap().is_some() {
            break; // finished before we could kill it
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    }
    assert!(kills >= 3, "the sweep finished before it could be killed often enough");
    let out = run(sweep().args(["run"]).arg(&cfg).arg("--out").arg(&killed));
    assert!(out.status.success(), "{}", text(&out));
    let sweep_dir = killed.join("resume");
    compare(&sweep_dir, &reference.join("resume"));
    // Running again does nothing and changes nothing.
    let out = run(sweep().args(["run"]).arg(&cfg).arg("--out").arg(&killed));
    assert!(out.status.success());
    assert!(text(&out).contains("6 done"), "{}", text(&out));
    compare(&sweep_dir, &reference.join("resume"));
}

#[test]
fn sigint_checkpoints_and_resumes() {
    let dir = scratch("resume-int");
    let cfg = write_config(&dir, "resume.toml", CONFIG);
    let reference = dir.join("reference");
    assert!(run(sweep().args(["run"]).arg(&cfg).arg("--out").arg(&reference)).status.success());
    let out_dir = dir.join("interrupted");
    let mut stops = 0;
    for delay in [400u64, 900, 700] {
        let child = sweep()
            .args(["run", "--no-progress"])
            .arg(&cfg)
            .arg("--out")
            .arg(&out_dir)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!err.contains("panicked"), "{err}");
        if out.status.code() == Some(130) {
            stops += 1;
            assert!(err.contains("run the same command again to resume"), "{err}");
        } else {
            assert!(out.status.success(), "{err}");
        }
    }
    assert!(stops >= 1, "no run was stopped by SIGINT");
    // A stopped point left a checkpoint and no lease.
    let status = run(sweep().args(["status", "--json"]).arg(out_dir.join("resume")));
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(s["counts"]["running"], 0, "a lease was left behind: {s}");
    assert!(run(sweep().args(["run"]).arg(&cfg).arg("--out").arg(&out_dir)).status.success());
    compare(&out_dir.join("resume"), &reference.join("resume"));
}
