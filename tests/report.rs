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
    // Six model sizes: one panel each, five runs per panel, each finished run's final loss marked.
    let curves = read("loss_curves.svg");
    assert!(curves.starts_with("<svg") && curves.trim_end().ends_with("</svg>"), "loss_curves.svg is not a whole SVG");
    assert_eq!(count(&curves, "(5 runs)"), 6, "one panel per model size");
    // (30 distinct token counts: colour runs dark to yellow, named in the title, no legend.)
    assert_eq!(count(&curves, "<circle"), n_points, "a final-loss marker per run");
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
    // The answers: a compute-optimal table with units and intervals for each budget asked.
    assert!(index.contains("<table class=\"optimal\" data-law=\"chinchilla\" data-kind=\"compute_optimal\">"));
    assert_eq!(count(&index, "<td data-q=\"C\""), 2, "one row per budget of [fit.optimal]");
    assert!(index.contains("N_opt<br><span class=\"note\">parameters</span>"), "N_opt in parameters");
    assert!(!index.contains("location.reload"), "a finished sweep's page does not reload itself");
    for img in [
        "loss_curves.svg",
        "final_loss.svg",
        "law-chinchilla.svg",
        "frontier.svg",
        "extrapolation.svg",
        "residuals-chinchilla.svg",
    ] {
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

#[test]
fn the_report_is_rewritten_live_while_the_sweep_runs() {
    let dir = scratch("report-live");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // 30 points of 0.2 s each: several seconds in which the page must follow the sweep.
    let mut child = sweep()
        .arg("run")
        .arg(repo.join("configs/simulate.toml"))
        .arg("--out")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let page = dir.join("simulate").join("report").join("index.html");
    let mut seen_done = std::collections::BTreeSet::new();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if let Ok(html) = std::fs::read_to_string(&page) {
            assert!(html.starts_with("<!doctype html>") && html.ends_with("</html>\n"), "a whole page at every moment");
            if html.contains("location.reload") {
                let done = html.split(" points: ").nth(1).and_then(|t| t.split(" done").next()).unwrap().to_string();
                seen_done.insert(done.parse::<usize>().unwrap());
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success());
    assert!(
        seen_done.iter().filter(|&&d| d > 0 && d < 30).count() >= 2,
        "the live page followed the sweep through several finished points: {seen_done:?}"
    );
    let last = std::fs::read_to_string(&page).unwrap();
    assert!(!last.contains("location.reload"), "the finished page does not reload");
    assert!(last.contains("30 points: 30 done"), "{last}");
    // The incrementally read live report ends where a fresh read does.
    let out = run(sweep().arg("report").arg(dir.join("simulate")));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&page).unwrap(), last, "`sweep report` writes the same page");
    // `sweep status` names the page.
    let out = run(sweep().arg("status").arg(dir.join("simulate")));
    let shown = text(&out);
    assert!(shown.contains(&format!("report: {}", page.display())), "{shown}");
}

#[test]
fn status_says_when_there_is_no_report_yet() {
    let dir = scratch("report-status-none");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out =
        run(sweep().arg("init").arg(repo.join("configs/simulate.toml")).args(["--profile", "fast", "--out"]).arg(&dir));
    assert!(out.status.success(), "{}", text(&out));
    let out = run(sweep().arg("status").arg(dir.join("simulate")));
    assert!(text(&out).contains("report: none yet"), "{}", text(&out));
}
