//! Several workers on one sweep directory: every point done exactly once; stale leases taken
//! over; a worker that loses its lease stops that point at once.

mod common;
use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn config(name: &str, seconds: f64) -> String {
    format!(
        r#"
[sweep]
name = "{name}"
trainer = "simulate"
[grid]
model = ["micro", "tiny", "mini", 3e5]
tokens_per_param = [2, 4, 8, 16]
[model]
context = 64
[train]
batch_size = 16
log_every = 50
checkpoint_every = 500
[simulate]
seconds_per_point = {seconds}
"#
    )
}

#[test]
fn four_worker_processes_complete_every_point_once() {
    let dir = scratch("workers-four");
    let cfg = write_config(&dir, "w.toml", &config("four", 0.15));
    let out = run(sweep().arg("init").arg(&cfg).arg("--out").arg(&dir));
    assert!(out.status.success(), "{}", text(&out));
    let sweep_dir = dir.join("four");
    let children: Vec<_> =
        (0..4).map(|_| sweep().arg("worker").arg(&sweep_dir).stderr(Stdio::piped()).spawn().unwrap()).collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && !err.contains("panicked"), "{err}");
    }
    let done = completions(&sweep_dir);
    assert_eq!(done.len(), 16, "{done:?}");
    assert!(done.values().all(|&n| n == 1), "{done:?}");
    assert_eq!(results(&sweep_dir).len(), 16);
    // More than one worker did work (the points take wall time, so the work is shared).
    let events = std::fs::read_to_string(sweep_dir.join("events.jsonl")).unwrap();
    let pids: std::collections::BTreeSet<_> = events
        .lines()
        .filter(|l| l.contains("\"completed\""))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["pid"].clone().to_string())
        .collect();
    assert!(pids.len() >= 2, "one worker did everything: {pids:?}");
}

#[test]
fn run_with_workers_flag_matches_single_worker_results() {
    let dir = scratch("workers-flag");
    let cfg = write_config(&dir, "w.toml", &config("flag", 0.05));
    let out = run(sweep().args(["run", "--workers", "3"]).arg(&cfg).arg("--out").arg(dir.join("multi")));
    assert!(out.status.success(), "{}", text(&out));
    let out = run(sweep().args(["run"]).arg(&cfg).arg("--out").arg(dir.join("single")));
    assert!(out.status.success(), "{}", text(&out));
    let multi = dir.join("multi/flag");
    assert_eq!(results(&multi), results(&dir.join("single/flag")));
    assert!(completions(&multi).values().all(|&n| n == 1));
}

fn write_lease(sweep_dir: &std::path::Path, id: &str, owner: &str, host: &str, pid: u32, counter: u64) {
    let lease = serde_json::json!({"owner": owner, "host": host, "pid": pid, "counter": counter, "claimed_unix": 0.0});
    std::fs::write(sweep_dir.join("points").join(id).join("lease"), lease.to_string()).unwrap();
}

fn first_point(sweep_dir: &std::path::Path) -> String {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sweep_dir.join("manifest.json")).unwrap()).unwrap();
    m["point_ids"][0].as_str().unwrap().to_string()
}

#[test]
fn stale_lease_of_another_host_is_taken_over_after_the_timeout() {
    let dir = scratch("workers-stale");
    let cfg = write_config(&dir, "w.toml", &config("stale", 0.0));
    assert!(run(sweep().arg("init").arg(&cfg).arg("--out").arg(&dir)).status.success());
    let sweep_dir = dir.join("stale");
    let id = first_point(&sweep_dir);
    // A lease from a machine that died: its counter never moves.
    write_lease(&sweep_dir, &id, "ghost:1:w:0", "another-node", 1, 7);
    let t = Instant::now();
    let out = run(sweep().args(["worker", "--heartbeat", "0.2", "--stale-after", "1.5"]).arg(&sweep_dir));
    assert!(out.status.success(), "{}", text(&out));
    assert!(t.elapsed() >= Duration::from_millis(1500), "took over before the lease went stale");
    assert!(sweep_dir.join("points").join(&id).join("result.json").exists());
    let events = std::fs::read_to_string(sweep_dir.join("events.jsonl")).unwrap();
    assert!(events.contains("\"takeover\"") && events.contains("ghost:1:w:0"), "{events}");
    assert_eq!(completions(&sweep_dir).len(), 16);
}

#[test]
fn lease_of_a_dead_local_process_is_taken_over_at_once() {
    let dir = scratch("workers-dead");
    let cfg = write_config(&dir, "w.toml", &config("dead", 0.0));
    assert!(run(sweep().arg("init").arg(&cfg).arg("--out").arg(&dir)).status.success());
    let sweep_dir = dir.join("dead");
    let id = first_point(&sweep_dir);
    // A process of this host that no longer exists.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let host =
        String::from_utf8(std::process::Command::new("hostname").output().unwrap().stdout).unwrap().trim().to_string();
    write_lease(&sweep_dir, &id, "dead:1:w:0", &host, pid, 3);
    let out = run(sweep().args(["worker", "--stale-after", "600"]).arg(&sweep_dir));
    assert!(out.status.success(), "{}", text(&out));
    assert!(sweep_dir.join("points").join(&id).join("result.json").exists());
}

#[test]
fn worker_that_loses_its_lease_stops_the_point_at_once() {
    let dir = scratch("workers-lost");
    let text_cfg = config("lost", 30.0)
        .replace("model = [\"micro\", \"tiny\", \"mini\", 3e5]", "model = [\"tiny\"]")
        .replace("tokens_per_param = [2, 4, 8, 16]", "tokens_per_param = [2]");
    let cfg = write_config(&dir, "w.toml", &text_cfg);
    assert!(run(sweep().arg("init").arg(&cfg).arg("--out").arg(&dir)).status.success());
    let sweep_dir = dir.join("lost");
    let id = first_point(&sweep_dir);
    let child = sweep()
        .args(["worker", "--no-wait", "--heartbeat", "0.2", "--stale-after", "600"])
        .arg(&sweep_dir)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lease = sweep_dir.join("points").join(&id).join("lease");
    let t = Instant::now();
    while !lease.exists() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    // Another worker takes the point (as a stale takeover would).
    write_lease(&sweep_dir, &id, "thief:1:w:0", "another-node", 1, 0);
    let t = Instant::now();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the worker did not stop after losing its lease (the point takes 30 s)"
    );
    assert!(out.status.success(), "{err}");
    assert!(err.contains("lease lost"), "{err}");
    assert!(
        !sweep_dir.join("points").join(&id).join("result.json").exists(),
        "the worker published a result without its lease"
    );
    // The thief's lease is untouched.
    assert!(std::fs::read_to_string(&lease).unwrap().contains("thief"));
}
