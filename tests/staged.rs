//! Staged sweeps (WSD cooldown branches, continual pre-training) through the `sweep` binary with
//! the simulate trainer: the plan's tree and costs; children wait for their parent's checkpoint
//! (`sweep status` says so) under one worker, `--workers K` and `sweep worker` processes; SIGKILL
//! at random moments (and a parent killed while writing its checkpoint), then resume, gives the
//! uninterrupted run's results with every point completed once; the results table records
//! stage, parent and each stage's tokens; a fit to WSD branches recovers the simulated law.

mod common;
use common::*;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Three sizes, three budgets (100, 200, 300 steps of 128 tokens), 20% 1-sqrt cooldowns: three
/// stable runs of 240 steps and nine branches.
const WSD: &str = r#"
[sweep]
name = "wsd"
seed = 4
trainer = "simulate"

[grid]
model = ["micro", "tiny", "mini"]
tokens = [12800, 25600, 38400]

[model]
context = 32

[train]
batch_size = 4
schedule = "wsd"
warmup_steps = 10
cooldown_fraction = 0.2
log_every = 5
checkpoint_every = 3

[stages]
type = "wsd"

[simulate]
noise = 0.01
seconds_per_point = 0.4
anneal = { loss = 0.3, tokens = 1500 }
"#;

/// Two sizes continued from a base on four mixtures: two bases and eight children.
const CPT: &str = r#"
[sweep]
name = "cpt"
seed = 9
trainer = "simulate"

[grid]
model = ["micro", "tiny"]
mixture_ratio = [0.25, 0.75]
tokens = [6400, 12800]

[model]
context = 32

[train]
batch_size = 4
log_every = 5
checkpoint_every = 4

[stages]
type = "cpt"
base = { tokens = { micro = 25600, tiny = 38400 } }

[simulate]
noise = 0.01
seconds_per_point = 0.4
domain = { E = 1.2, A = 300.0, alpha = 0.3, B = 500.0, beta = 0.3, eta = 0.2, C = 0.05, gamma = 0.5 }
"#;

fn plan_json(cfg: &Path, profile: Option<&str>) -> serde_json::Value {
    let mut cmd = sweep();
    cmd.args(["plan", "--json"]).arg(cfg);
    if let Some(p) = profile {
        cmd.args(["--profile", p]);
    }
    let out = run(&mut cmd);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn point_json(sweep_dir: &Path, id: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(sweep_dir.join("points").join(id).join("point.json")).unwrap()).unwrap()
}

/// Same results, metrics and completions as the uninterrupted run.
fn compare(a: &Path, b: &Path, points: usize) {
    let ra = results(a);
    assert_eq!(ra.len(), points, "every point has a result");
    assert_eq!(ra, results(b), "results differ from the uninterrupted run");
    for id in ra.keys() {
        let (ma, mb) = (metrics(&a.join("points").join(id)), metrics(&b.join("points").join(id)));
        assert!(!ma.is_empty());
        assert_eq!(ma, mb, "metrics of {id} differ from the uninterrupted run");
    }
    let done = completions(a);
    assert!(done.values().all(|&n| n == 1), "a point was completed more than once: {done:?}");
}

#[test]
fn plan_shows_the_tree_each_points_own_flops_and_the_independent_cost() {
    let dir = scratch("staged-plan");
    let cfg = write_config(&dir, "w.toml", &format!("{WSD}\n[profiles.independent]\nstages = {{ type = \"none\" }}\n"));
    let out = run(sweep().arg("plan").arg(&cfg));
    assert!(out.status.success(), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains("12 points (9 fitted, 3 parents)") && t.contains("stable (parent)"), "{t}");
    assert!(t.contains("├ ") && t.contains("└ ") && t.contains("FLOPs 6ND (own)"), "{t}");
    assert!(t.contains("this sweep costs 0.600 of that (6ND)"), "{t}");
    let staged = plan_json(&cfg, None);
    let independent = plan_json(&cfg, Some("independent"));
    let total = |v: &serde_json::Value, k: &str| v["totals"][k].as_f64().unwrap();
    // The independent cost of the staged plan is the plan of the same grid without stages.
    let alone = total(&independent, "flops_6nd");
    assert!((total(&staged, "independent_flops_6nd") - alone).abs() <= 1e-9 * alone);
    // Own FLOPs: 6 N times each point's own tokens; they add up to the total.
    let points = staged["points"].as_array().unwrap();
    let own = staged["own"].as_array().unwrap();
    let mut sum = 0.0;
    for (p, o) in points.iter().zip(own) {
        let n = p["counts"]["non_embedding_params"].as_f64().unwrap();
        let parent_tokens = p["stage"]["parent"]["tokens"].as_f64().unwrap_or(0.0);
        let own_tokens = p["tokens"].as_f64().unwrap() - parent_tokens;
        assert_eq!(o["tokens"].as_f64().unwrap(), own_tokens);
        assert!((o["flops_6nd"].as_f64().unwrap() - 6.0 * n * own_tokens).abs() <= 1e-6 * n * own_tokens);
        sum += o["flops_6nd"].as_f64().unwrap();
    }
    assert!((total(&staged, "flops_6nd") - sum).abs() <= 1e-9 * sum);
    assert!((total(&staged, "flops_6nd") / alone - 0.6).abs() < 1e-12);
}

#[test]
fn children_wait_for_their_parents_checkpoint_under_every_way_of_running() {
    let dir = scratch("staged-wait");
    let cfg = write_config(&dir, "w.toml", &WSD.replace("seconds_per_point = 0.4", "seconds_per_point = 0.15"));
    // The uninterrupted reference, one worker.
    assert!(run(sweep().arg("run").arg(&cfg).arg("--out").arg(dir.join("one"))).status.success());
    // `sweep status` before anything ran: the branches wait for the stable runs.
    assert!(run(sweep().arg("init").arg(&cfg).arg("--out").arg(dir.join("status"))).status.success());
    let out = run(sweep().arg("status").arg(dir.join("status/wsd")));
    let t = text(&out);
    assert!(t.contains("12 pending (9 waiting for a parent's checkpoint)"), "{t}");
    assert_eq!(t.lines().filter(|l| l.contains(" waiting ") && l.contains("waits for")).count(), 9, "{t}");
    assert!(t.contains("'s checkpoint at step 80") && t.contains("stable"), "{t}");
    let s: serde_json::Value =
        serde_json::from_slice(&run(sweep().args(["status", "--json"]).arg(dir.join("status/wsd"))).stdout).unwrap();
    assert_eq!(s["counts"]["waiting"], 9);
    // `sweep run --workers 3`.
    let out = run(sweep().args(["run", "--workers", "3"]).arg(&cfg).arg("--out").arg(dir.join("three")));
    assert!(out.status.success(), "{}", text(&out));
    compare(&dir.join("three/wsd"), &dir.join("one/wsd"), 12);
    // Three `sweep worker` processes on one directory, two of them with --no-wait (as Slurm
    // tasks run): the no-wait ones wait for checkpoints that are being written, then exit.
    assert!(run(sweep().arg("init").arg(&cfg).arg("--out").arg(dir.join("workers"))).status.success());
    let sweep_dir = dir.join("workers/wsd");
    let children: Vec<_> = [vec!["worker"], vec!["worker", "--no-wait"], vec!["worker", "--no-wait"]]
        .iter()
        .map(|args| sweep().args(args).arg(&sweep_dir).stderr(Stdio::piped()).spawn().unwrap())
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && !err.contains("panicked"), "{err}");
    }
    compare(&sweep_dir, &dir.join("one/wsd"), 12);
    // No branch started before its parent had written the checkpoint it starts from: every
    // branch's first logged step is right after the branch, and it started once.
    for (id, _) in results(&sweep_dir) {
        let p = point_json(&sweep_dir, &id);
        if let Some(step) = p["stage"]["parent"]["step"].as_u64() {
            let m = metrics(&sweep_dir.join("points").join(&id));
            assert!(m[0]["step"].as_u64().unwrap() > step, "{id}: {:?}", m[0]);
        }
    }
}

/// Kills runs of `cfg` at random moments with SIGKILL, in three ways (a single-worker run, a
/// `--workers 3` run, two `sweep worker` processes), then resumes it to the end.
fn kill_repeatedly(cfg: &Path, out: &Path, name: &str) -> usize {
    assert!(run(sweep().arg("init").arg(cfg).arg("--out").arg(out)).status.success());
    let sweep_dir = out.join(name);
    let mut rng = TestRng::from_env();
    let mut kills = 0;
    let mut torn = std::collections::BTreeSet::new();
    let started = Instant::now();
    while kills < 14 && started.elapsed() < Duration::from_secs(50) {
        let spawn = |args: &[&str], target: &Path| {
            sweep().args(args).arg(target).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
        };
        let mut procs = match kills % 3 {
            0 => vec![spawn(&["run", "--no-progress", "--out", out.to_str().unwrap()], cfg)],
            1 => vec![spawn(&["run", "--no-progress", "--workers", "3", "--out", out.to_str().unwrap()], cfg)],
            _ => vec![spawn(&["worker"], &sweep_dir), spawn(&["worker"], &sweep_dir)],
        };
        std::thread::sleep(Duration::from_millis(rng.range(80, 700)));
        if procs.iter_mut().all(|p| p.try_wait().unwrap().is_some()) {
            break;
        }
        for p in &mut procs {
            let _ = p.kill(); // SIGKILL
            p.wait().unwrap();
        }
        kills += 1;
        // A checkpoint directory being written when the kill came is left as a hidden temporary.
        for e in std::fs::read_dir(sweep_dir.join("points")).unwrap() {
            for f in std::fs::read_dir(e.unwrap().path().join("ckpt")).into_iter().flatten().flatten() {
                if f.file_name().to_string_lossy().starts_with('.') {
                    torn.insert(f.path());
                }
            }
        }
    }
    eprintln!("{name}: {kills} kills; {} checkpoint(s) were being written when a kill came", torn.len());
    // --workers children stopped by their parent's death may still be finishing their stop.
    std::thread::sleep(Duration::from_millis(300));
    let out_run = run(sweep().args(["run"]).arg(cfg).arg("--out").arg(out));
    assert!(out_run.status.success(), "{}", text(&out_run));
    kills
}

#[test]
fn wsd_sweep_killed_at_random_moments_resumes_to_the_uninterrupted_results() {
    let dir = scratch("staged-kill-wsd");
    let cfg = write_config(&dir, "w.toml", WSD);
    assert!(run(sweep().arg("run").arg(&cfg).arg("--out").arg(dir.join("reference"))).status.success());
    let kills = kill_repeatedly(&cfg, &dir.join("killed"), "wsd");
    assert!(kills >= 3, "the sweep finished before it could be killed often enough");
    compare(&dir.join("killed/wsd"), &dir.join("reference/wsd"), 12);
}

#[test]
fn cpt_sweep_killed_at_random_moments_resumes_to_the_uninterrupted_results() {
    let dir = scratch("staged-kill-cpt");
    let cfg = write_config(&dir, "c.toml", CPT);
    assert!(run(sweep().arg("run").arg(&cfg).arg("--out").arg(dir.join("reference"))).status.success());
    let kills = kill_repeatedly(&cfg, &dir.join("killed"), "cpt");
    assert!(kills >= 3, "the sweep finished before it could be killed often enough");
    compare(&dir.join("killed/cpt"), &dir.join("reference/cpt"), 10);
}

#[test]
fn a_parent_killed_while_writing_its_checkpoint_is_not_taken_for_ready() {
    let dir = scratch("staged-torn");
    let cfg = write_config(&dir, "c.toml", &CPT.replace("seconds_per_point = 0.4", "seconds_per_point = 0.0"));
    assert!(run(sweep().arg("run").arg(&cfg).arg("--out").arg(dir.join("reference"))).status.success());
    assert!(run(sweep().arg("init").arg(&cfg).arg("--out").arg(dir.join("torn"))).status.success());
    let sweep_dir = dir.join("torn/cpt");
    let plan = plan_json(&cfg, None);
    let base = &plan["points"][0];
    let (id, last) = (base["id"].as_str().unwrap(), base["train"]["steps"].as_u64().unwrap());
    // What SIGKILL in the middle of writing the base's final checkpoint leaves: the temporary
    // directory, half filled, and the lease of a process that is gone.
    let torn = sweep_dir.join("points").join(id).join("ckpt").join(format!(".step-{last:010}.x1y2.tmp"));
    std::fs::create_dir_all(&torn).unwrap();
    std::fs::write(torn.join("state.json"), "{\"step\": ").unwrap();
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let host = String::from_utf8(std::process::Command::new("hostname").output().unwrap().stdout).unwrap();
    let lease =
        serde_json::json!({"owner": "dead:1:w:0", "host": host.trim(), "pid": pid, "counter": 3, "claimed_unix": 0.0});
    std::fs::write(sweep_dir.join("points").join(id).join("lease"), lease.to_string()).unwrap();
    let s: serde_json::Value =
        serde_json::from_slice(&run(sweep().args(["status", "--json"]).arg(&sweep_dir)).stdout).unwrap();
    assert_eq!(s["counts"]["waiting"], 8, "{s}");
    let out = run(sweep().arg("run").arg(&cfg).arg("--out").arg(dir.join("torn")));
    assert!(out.status.success(), "{}", text(&out));
    compare(&sweep_dir, &dir.join("reference/cpt"), 10);
    assert!(!torn.exists(), "the torn checkpoint was left behind");
}

#[test]
fn results_table_records_stage_parent_and_the_tokens_of_each_stage() {
    let dir = scratch("staged-table");
    let cfg = write_config(
        &dir,
        "c.toml",
        &format!(
            "{}\n[fit]\nbootstrap = {{ resamples = 0 }}\n[[fit.laws]]\nname = \"chinchilla\"\nmap = {{ D = \"D_stage\" }}\n",
            CPT.replace("seconds_per_point = 0.4", "seconds_per_point = 0.0")
        ),
    );
    let out = run(sweep().arg("run").arg(&cfg).arg("--out").arg(&dir));
    assert!(out.status.success(), "{}", text(&out));
    let sweep_dir = dir.join("cpt");
    let read = |name: &str| -> (Vec<String>, Vec<Vec<String>>) {
        let text = std::fs::read_to_string(sweep_dir.join(name)).unwrap();
        let mut lines = text.lines().map(|l| l.split(',').map(String::from).collect::<Vec<_>>());
        (lines.next().unwrap(), lines.collect())
    };
    let (header, fitted) = read("results.csv");
    let (parents_header, parents) = read("parents.csv");
    assert_eq!(header, parents_header);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"));
    assert_eq!((fitted.len(), parents.len()), (8, 2));
    for r in &fitted {
        assert_eq!(r[col("stage")], "cpt");
        let parent = parents.iter().find(|p| p[col("id")] == r[col("parent")]).expect("the parent's row");
        assert_eq!(parent[col("stage")], "base");
        let num = |row: &Vec<String>, c: &str| row[col(c)].parse::<f64>().unwrap();
        assert_eq!(num(r, "D_parent"), num(parent, "D"), "the branch starts from its parent's end");
        assert_eq!(num(r, "D"), num(r, "D_parent") + num(r, "D_stage"));
        assert!([6400.0, 12800.0].contains(&num(r, "D_stage")));
        let result: serde_json::Value = serde_json::from_slice(
            &std::fs::read(sweep_dir.join("points").join(&r[col("id")]).join("result.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(result["stage"], "cpt");
        assert_eq!(result["parent"], r[col("parent")]);
        assert_eq!(result["stage_tokens"].as_f64().unwrap(), num(r, "D_stage"));
        assert_eq!(result["tokens"].as_f64().unwrap(), num(r, "D"));
    }
    // The law was fitted to the eight CPT points only (the bases are not its data).
    let laws: serde_json::Value = serde_json::from_slice(&std::fs::read(sweep_dir.join("laws.json")).unwrap()).unwrap();
    let law = &laws["laws"][0];
    assert_eq!(law["name"], "chinchilla");
    assert_eq!(law["fit"]["n_points"], 8, "{law}");
    // results.csv is that table: fitted again from the CSV, the same law comes out.
    let again = dir.join("again.json");
    let out = run(sweep()
        .args(["fit", "--csv"])
        .arg(sweep_dir.join("results.csv"))
        .args(["--law", "chinchilla", "--map", "D=D_stage", "--bootstrap", "0", "--out"])
        .arg(&again));
    assert!(out.status.success(), "{}", text(&out));
    let again: serde_json::Value = serde_json::from_slice(&std::fs::read(&again).unwrap()).unwrap();
    for p in ["E", "A", "B", "alpha", "beta"] {
        assert_eq!(again["laws"][0]["params"][p]["estimate"], law["params"][p]["estimate"], "{p}");
    }
}

#[test]
fn a_fit_to_wsd_branches_recovers_the_simulated_law() {
    // Chinchilla's law simulated without the learning-rate term: each branch's loss is the
    // law's at the total tokens its model has seen, so fitting D = total recovers alpha, beta
    // and E (a fit to each branch's own tokens would not).
    let dir = scratch("staged-fit");
    let cfg = write_config(
        &dir,
        "f.toml",
        r#"
[sweep]
name = "fit"
seed = 1
trainer = "simulate"
[grid]
model = [1e5, 3e5, 1e6, 3e6, 1e7, 3e7]
tokens_per_param = [2, 5, 10, 20, 50]
[model]
context = 256
[train]
batch_size = 64
schedule = "wsd"
warmup_steps = 2
cooldown_fraction = 0.2
log_every = 1000
checkpoint_every = 100000
[stages]
type = "wsd"
[simulate]
noise = 0.005
# Chinchilla's law counts all parameters (its paper's convention): simulate it that way.
parameters = "all"
[fit]
bootstrap = { resamples = 100, seed = 0 }
[[fit.laws]]
name = "chinchilla"
"#,
    );
    let out = run(sweep().arg("run").arg(&cfg).arg("--out").arg(&dir));
    assert!(out.status.success(), "{}", text(&out));
    let laws: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("fit/laws.json")).unwrap()).unwrap();
    let law = &laws["laws"][0];
    let params = &law["params"];
    eprintln!("{}", serde_json::to_string_pretty(params).unwrap());
    for (name, truth, tol) in [("alpha", 0.34, 0.05), ("beta", 0.28, 0.05), ("E", 1.69, 0.05)] {
        let est = params[name]["estimate"].as_f64().unwrap();
        assert!((est / truth - 1.0).abs() < tol, "{name}: {est} vs the simulated {truth}");
    }
}
