//! The report in a real browser: the quickstart's report (its `ci` profile) and a simulated
//! IsoFLOP sweep's report are opened from file:// URLs in headless Chromium (Debian's `chromium`;
//! driven over the DevTools pipe, no download). Every image must render (non-zero natural size),
//! the page must log no error and request nothing from the network, and the answer and parameter
//! tables must hold the numbers of laws.json. A full-page screenshot is saved beside the sweep.
//! Without Chromium the tests skip with a message, except under CI=true, where they fail.

#[path = "common/cdp.rs"]
mod cdp;
mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

/// Collects images, table cells carrying laws.json numbers, and whether the page reloads itself.
const CHECK: &str = r#"(() => {
  const imgs = [...document.images].map(i => ({ src: i.getAttribute('src'), w: i.naturalWidth, h: i.naturalHeight, complete: i.complete }));
  const tables = [...document.querySelectorAll('table[data-law]')];
  const cells = [];
  tables.forEach((t, ti) => t.querySelectorAll('td[data-q]').forEach(td => cells.push({
    table: ti, cls: t.className, law: t.dataset.law, kind: t.dataset.kind || '', row: td.parentElement.rowIndex,
    q: td.dataset.q, value: td.dataset.value, lo: td.dataset.lo || '', hi: td.dataset.hi || '', text: td.textContent })));
  const reload = [...document.scripts].some(s => s.textContent.includes('location.reload'));
  return { imgs, cells, reload, status: (document.querySelector('.status') || {}).textContent || '' };
})()"#;

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn attr(v: &Value) -> f64 {
    v.as_str().filter(|s| !s.is_empty()).and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)
}

/// The number a cell shows first (before its interval) agrees with `v` to the shown precision.
fn shows(text: &str, v: f64) -> bool {
    let first = text.split_whitespace().next().unwrap_or("");
    if !v.is_finite() {
        return first == "–";
    }
    sweep_report::units::parse_shown(first).is_some_and(|s| (s - v).abs() <= 0.006 * v.abs() + 6e-4)
}

/// Opens the report of `sweep_dir` in Chromium and checks it against laws.json; returns the
/// number of answer cells checked.
fn check_report(chromium: &Path, sweep_dir: &Path, scratch_dir: &Path) -> usize {
    let report = sweep_dir.join("report");
    let shot = scratch_dir.join("report.png");
    let page =
        cdp::check_page(chromium, &scratch_dir.join("chromium-profile"), &report.join("index.html"), CHECK, &shot);
    assert!(page.errors.is_empty(), "the page logged errors: {:#?}", page.errors);
    assert!(page.remote_requests.is_empty(), "the page asked the network for {:?}", page.remote_requests);
    let r = &page.result;
    // Every image renders, and every plot written is shown.
    let imgs = r["imgs"].as_array().unwrap();
    for i in imgs {
        assert!(i["complete"] == true && num(&i["w"]) > 0.0 && num(&i["h"]) > 0.0, "an image did not render: {i}");
    }
    let mut svgs: Vec<String> = std::fs::read_dir(&report)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".svg"))
        .collect();
    svgs.sort();
    let mut shown: Vec<String> = imgs.iter().map(|i| i["src"].as_str().unwrap().to_string()).collect();
    shown.sort();
    assert_eq!(shown, svgs, "the page shows every plot written");
    assert!(r["reload"] == false, "a finished sweep's page does not reload itself");
    // The answer tables hold laws.json's optimal configurations, and the parameter tables its
    // estimates and intervals: full precision in data attributes, the shown text to its digits.
    let laws: Value = serde_json::from_str(&std::fs::read_to_string(sweep_dir.join("laws.json")).unwrap()).unwrap();
    let cells = r["cells"].as_array().unwrap();
    let mut checked = 0;
    for law in laws["laws"].as_array().unwrap() {
        let name = law["name"].as_str().unwrap();
        for o in law["optimal"].as_array().unwrap() {
            let kind = o["kind"].as_str().unwrap();
            let in_row = |c: &&Value| c["law"] == name && c["kind"] == kind && c["cls"] == "optimal";
            let rows: Vec<(u64, u64)> = cells
                .iter()
                .filter(in_row)
                .map(|c| (c["table"].as_u64().unwrap(), c["row"].as_u64().unwrap()))
                .collect();
            let inputs = o["inputs"].as_object().unwrap();
            let row = rows
                .iter()
                .find(|&&(t, row)| {
                    inputs.iter().all(|(k, v)| {
                        cells.iter().any(|c| {
                            c["table"] == t
                                && c["row"] == row
                                && c["q"] == k.as_str()
                                && close(attr(&c["value"]), num(v))
                        })
                    })
                })
                .unwrap_or_else(|| panic!("{name}: no row of a {kind} table for inputs {inputs:?}"));
            for (k, e) in o["values"].as_object().unwrap() {
                let c = cells
                    .iter()
                    .find(|c| c["table"] == row.0 && c["row"] == row.1 && c["q"] == k.as_str())
                    .unwrap_or_else(|| panic!("{name} {kind}: no cell for {k}"));
                assert!(close(attr(&c["value"]), num(&e["estimate"])), "{name} {kind} {k}: {c} against {e}");
                assert!(shows(c["text"].as_str().unwrap(), num(&e["estimate"])), "{name} {kind} {k} shows {c}");
                match e["ci"].as_array() {
                    Some(ci) => {
                        assert!(
                            close(attr(&c["lo"]), num(&ci[0])) && close(attr(&c["hi"]), num(&ci[1])),
                            "{name} {k}: {c}"
                        );
                        let text = c["text"].as_str().unwrap();
                        assert!(text.contains('[') && text.contains(']'), "{name} {k}: the interval is shown: {text}");
                    }
                    None => assert_eq!(c["lo"], "", "{name} {k}: no interval in laws.json, none on the page"),
                }
                checked += 1;
            }
        }
        for group in ["params", "derived"] {
            for (k, e) in law[group].as_object().unwrap() {
                let c = cells
                    .iter()
                    .find(|c| c["law"] == name && c["cls"] == "params" && c["q"] == k.as_str())
                    .unwrap_or_else(|| panic!("{name}: parameter {k} is not in its table"));
                assert!(close(attr(&c["value"]), num(&e["estimate"])), "{name} {k}: {c} against {e}");
                assert!(shows(c["text"].as_str().unwrap(), num(&e["estimate"])), "{name} {k} shows {c}");
                checked += 1;
            }
        }
    }
    let png = std::fs::read(&shot).unwrap();
    assert!(png.len() > 10_000 && png.starts_with(b"\x89PNG"), "the screenshot {} is a PNG", shot.display());
    eprintln!("screenshot: {} ({} bytes); {checked} numbers checked", shot.display(), png.len());
    checked
}

#[test]
fn the_quickstart_report_renders_in_chromium() {
    let Some(chromium) = cdp::chromium_or_skip("the_quickstart_report_renders_in_chromium") else { return };
    let dir = scratch("browser-quickstart");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out =
        run(sweep().arg("run").arg(repo.join("configs/quickstart.toml")).args(["--profile", "ci", "--out"]).arg(&dir));
    assert!(out.status.success(), "{}", text(&out));
    let checked = check_report(&chromium, &dir.join("quickstart"), &dir);
    assert!(checked >= 5 + 3 + 2 * 4, "the chinchilla parameters, derived values and two budgets' answers: {checked}");
}

/// Five IsoFLOP budgets x seven sizes from Chinchilla's published law (simulate trainer), fitted
/// by approach 3 (the parametric law) and approach 1 (the envelope of the learning curves).
const ISOFLOP: &str = r#"
[sweep]
name = "iso"
seed = 3
trainer = "simulate"

[[grid.isoflop]]
budgets = [3e13, 1e14, 3e14, 1e15, 3e15]
model = [1e5, 2e5, 4e5, 8e5, 1.6e6, 3.2e6, 6.4e6]

[model]
context = 256

[train]
batch_size = 64
log_every = 50
checkpoint_every = 100000

[simulate]
noise = 0.003
seconds_per_point = 0.0

[fit]
bootstrap = { resamples = 40, seed = 0 }

[[fit.laws]]
name = "chinchilla"

[[fit.laws]]
name = "chinchilla_approach1"

[fit.optimal]
budgets = [1e16, 1e18]
"#;

#[test]
fn a_simulated_isoflop_report_renders_in_chromium() {
    let Some(chromium) = cdp::chromium_or_skip("a_simulated_isoflop_report_renders_in_chromium") else { return };
    let dir = scratch("browser-isoflop");
    let cfg = write_config(&dir, "iso.toml", ISOFLOP);
    let out = run(sweep().arg("run").arg(&cfg).arg("--out").arg(&dir));
    assert!(out.status.success(), "{}", text(&out));
    let sweep_dir = dir.join("iso");
    for plot in ["frontier.svg", "isoflop.svg", "extrapolation.svg", "residuals-chinchilla.svg", "loss_curves.svg"] {
        assert!(sweep_dir.join("report").join(plot).exists(), "the IsoFLOP sweep's report has {plot}");
    }
    let checked = check_report(&chromium, &sweep_dir, &dir);
    assert!(checked >= 20, "{checked}");
}
