//! The report: plots and index.html after `sweep run`, from `sweep report`, and for a sweep with
//! nothing finished yet.

mod common;
use common::*;

fn count(text: &str, what: &str) -> usize {
    text.matches(what).count()
}

#[test]
fn run_writes_plots_and_an_index_of_points_and_laws() {
    let dir = scratch("report-sim");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out =
        run(sweep().arg("run").arg(repo.join("configs/simulate.toml")).args(["--profile", "fast", "--out"]).arg(&dir));
    assert!(out.status.success(), "{}", text(&out));
    let report = dir.join("simulate").join("report");
    let read = |f: &str| std::fs::read_to_string(report.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    let results = results(&dir.join("simulate"));
    let n_points = results.len();
    assert_eq!(n_points, 30);
    // Six model sizes: one legend entry each, and one marker per finished point plus the legend's.
    let curves = read("loss_curves.svg");
    assert!(curves.starts_with("<svg") && curves.trim_end().ends_with("</svg>"), "loss_curves.svg is not a whole SVG");
    assert_eq!(count(&curves, ">\nN = "), 6, "one legend entry per model size");
    let finals = read("final_loss.svg");
    assert_eq!(count(&finals, "<circle"), n_points + 6, "a marker per point and per legend entry");
    assert!(finals.contains("fitted chinchilla"), "the fitted law's curves are drawn and named in the legend");
    let law = read("law-chinchilla.svg");
    assert_eq!(count(&law, "<circle"), n_points + 1, "a marker per fitted point and one in the legend");
    assert!(law.contains("chinchilla: 30 points"), "caption names the law and its points");
    let index = read("index.html");
    assert_eq!(count(&index, "<tr><td class=\"l\"><code>"), n_points, "one table row per point");
    for p in ["alpha", "beta", "E", "A", "B"] {
        assert!(index.contains(&format!("<tr><td class=\"l\">{p}</td>")), "index.html lists parameter {p}");
    }
    for img in ["loss_curves.svg", "final_loss.svg", "law-chinchilla.svg"] {
        assert!(index.contains(&format!("<img src=\"{img}\"")), "index.html shows {img}");
    }
    // `sweep report` rewrites the same files.
    std::fs::remove_file(report.join("final_loss.svg")).unwrap();
    let out = run(sweep().arg("report").arg(dir.join("simulate")));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(read("final_loss.svg"), finals, "the report is a pure function of the directory");
}

#[test]
fn a_sweep_with_nothing_finished_gets_an_index_and_no_plots() {
    let dir = scratch("report-empty");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out =
        run(sweep().arg("init").arg(repo.join("configs/simulate.toml")).args(["--profile", "fast", "--out"]).arg(&dir));
    assert!(out.status.success(), "{}", text(&out));
    let out = run(sweep().arg("report").arg(dir.join("simulate")));
    assert!(out.status.success(), "{}", text(&out));
    let report = dir.join("simulate").join("report");
    let index = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(index.contains("30 points: 0 done, 0 running, 30 pending, 0 failed."), "{index}");
    assert!(index.contains("No laws.json yet"));
    assert!(!report.join("loss_curves.svg").exists() && !report.join("final_loss.svg").exists());
    // A directory that is not a sweep: a clear error, exit non-zero, no panic.
    let out = run(sweep().arg("report").arg(dir.join("nothing-here")));
    assert!(!out.status.success());
    assert!(!text(&out).contains("panicked"), "{}", text(&out));
}
