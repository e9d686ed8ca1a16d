//! A sweep's life: failures recorded and retried, config changes detected, plan output, status.

mod common;
use common::*;

const BASE: &str = r#"
[sweep]
name = "life"
trainer = "simulate"
[grid]
model = ["micro", "tiny"]
tokens = [5e4, 1e5]
[model]
context = 32
[train]
batch_size = 8
lr = { tiny = 0.5, micro = 1e-3 }
log_every = 5
checkpoint_every = 50
"#;

#[test]
fn diverging_points_are_recorded_and_the_sweep_goes_on() {
    let dir = scratch("life-fail");
    let cfg = write_config(&dir, "c.toml", &format!("{BASE}\n[simulate]\ndiverge_lr = 0.1\n"));
    let out = run(sweep().arg("run").arg(&cfg).arg("--out").arg(&dir));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("2 point(s) failed"), "{}", text(&out));
    let sweep_dir = dir.join("life");
    let status: serde_json::Value =
        serde_json::from_slice(&run(sweep().args(["status", "--json"]).arg(&sweep_dir)).stdout).unwrap();
    assert_eq!(status["counts"]["done"], 2);
    assert_eq!(status["counts"]["failed"], 2);
    for p in status["points"].as_array().unwrap() {
        let failed = p["state"] == "failed";
        assert_eq!(failed, p["label"] == "tiny", "{p}");
        if failed {
            let f: serde_json::Value = serde_json::from_slice(
                &std::fs::read(sweep_dir.join("points").join(p["id"].as_str().unwrap()).join("failed.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(f["kind"], "diverged");
            assert!(f["reason"].as_str().unwrap().contains("running minimum"), "{f}");
        }
    }
    // Rerunning without --retry-failed leaves them; with it, they run again (and fail again).
    let out = run(sweep().arg("run").arg(&cfg).arg("--out").arg(&dir));
    assert_eq!(out.status.code(), Some(3));
    assert!(!text(&out).contains("point started"), "{}", text(&out));
    let out = run(sweep().args(["run", "--retry-failed"]).arg(&cfg).arg("--out").arg(&dir));
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains("retrying 2 failed point(s)"), "{}", text(&out));
    let kept = std::fs::read_dir(sweep_dir.join("points"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().join("failed.1.json").exists())
        .count();
    assert_eq!(kept, 2, "the first failure records are kept");
}

#[test]
fn config_changes_are_reported_and_incompatible_ones_refused() {
    let dir = scratch("life-change");
    let cfg = write_config(&dir, "c.toml", BASE);
    assert!(run(sweep().arg("run").arg(&cfg).arg("--out").arg(&dir)).status.success());
    let sweep_dir = dir.join("life");
    let before = results(&sweep_dir);
    // Adding a token budget is compatible: only the new points run.
    write_config(&dir, "c.toml", &BASE.replace("tokens = [5e4, 1e5]", "tokens = [5e4, 1e5, 2e5]"));
    let out = run(sweep().arg("run").arg(&cfg).arg("--out").arg(&dir));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("2 new point(s)"), "{}", text(&out));
    assert_eq!(text(&out).matches("point started").count(), 2, "{}", text(&out));
    let after = results(&sweep_dir);
    assert_eq!(after.len(), 6);
    for (id, r) in &before {
        assert_eq!(&after[id], r, "a finished result changed");
    }
    // Changing a training value changes every id: refused, nothing runs, nothing is lost.
    write_config(&dir, "c.toml", &BASE.replace("batch_size = 8", "batch_size = 4"));
    let out = run(sweep().arg("run").arg(&cfg).arg("--out").arg(&dir));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--force"), "{}", text(&out));
    assert_eq!(results(&sweep_dir).len(), 6);
    // With --force the new grid runs; the old points' files stay on disk.
    let out = run(sweep().args(["run", "--force"]).arg(&cfg).arg("--out").arg(&dir));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(results(&sweep_dir).len(), 10);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sweep_dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["point_ids"].as_array().unwrap().len(), 4);
    assert_eq!(manifest["revisions"].as_array().unwrap().len(), 3);
}

#[test]
fn plan_prints_table_and_json_with_totals() {
    let dir = scratch("life-plan");
    let cfg = write_config(&dir, "c.toml", BASE);
    let out = run(sweep().arg("plan").arg(&cfg));
    assert!(out.status.success());
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains("N (non-emb)") && t.contains("total (4 points)") && t.contains("FLOPs 6ND"), "{t}");
    let out = run(sweep().args(["plan", "--json"]).arg(&cfg));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), 4);
    let sum: f64 = points.iter().map(|p| p["flops"]["six_nd"].as_f64().unwrap()).sum();
    assert!((v["totals"]["flops_6nd"].as_f64().unwrap() - sum).abs() <= 1e-9 * sum);
    for p in points {
        let n = p["counts"]["non_embedding_params"].as_f64().unwrap();
        let d = p["tokens"].as_f64().unwrap();
        assert!((p["flops"]["six_nd"].as_f64().unwrap() - 6.0 * n * d).abs() <= 1e-6 * n * d);
    }
    // Plan ids are the directory's ids.
    assert!(run(sweep().arg("init").arg(&cfg).arg("--out").arg(&dir)).status.success());
    for p in points {
        assert!(dir.join("life/points").join(p["id"].as_str().unwrap()).join("point.json").exists());
    }
}

#[test]
fn data_section_errors_are_located_before_work_starts() {
    let dir = scratch("life-data");
    let cfg =
        write_config(&dir, "c.toml", &format!("{BASE}\n[data]\ngeneral = {{ type = \"flies\", paths = [\"x\"] }}\n"));
    let out = run(sweep().arg("run").arg(&cfg).arg("--out").arg(&dir));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("c.toml:17:20:") && text(&out).contains("data.general"), "{}", text(&out));
    assert!(!dir.join("life").exists());
}
