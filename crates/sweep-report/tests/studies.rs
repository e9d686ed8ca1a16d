//! The report's study plots from tables of known laws: Chinchilla's three approaches fitted to
//! exact IsoFLOP profiles (frontier side by side, with bands that hold the true frontier), the
//! D-CPT mixture curves, the vocabulary law along IsoFLOP-over-vocabulary budgets, and the
//! floating-point quantisation law along each bit width's exponent/mantissa splits. Each writes
//! a report under the target's temporary directory (open its index.html to look).

use serde_json::json;
use std::path::PathBuf;
use sweep_fit::{fit_all, FitConfig, Table};
use sweep_report::{write_report, LawsView, ReportInputs, ReportOptions};

fn out_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn report(name: &str, table: Table, laws: serde_json::Value) -> (PathBuf, String) {
    let dir = out_dir(name);
    let inputs = ReportInputs {
        title: name.into(),
        table: Some(table),
        laws: Some(LawsView::parse(&laws.to_string()).unwrap()),
        ..ReportInputs::default()
    };
    write_report(&dir, &inputs, &ReportOptions::default()).unwrap();
    let index = std::fs::read_to_string(dir.join("index.html")).unwrap();
    (dir, index)
}

fn read(dir: &std::path::Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// A deterministic ±`amp` relative wobble (no noise crate needed).
fn wobble(i: usize, amp: f64) -> f64 {
    1.0 + amp * ((i as f64 * 2.399).sin())
}

const TRUTH: [f64; 5] = [1.69, 406.4, 410.7, 0.34, 0.28];

fn chinchilla(n: f64, d: f64) -> f64 {
    TRUTH[0] + TRUTH[1] / n.powf(TRUTH[3]) + TRUTH[2] / d.powf(TRUTH[4])
}

#[test]
fn three_approaches_side_by_side_with_bands_that_hold_the_true_frontier() {
    // Five exact IsoFLOP budgets x nine sizes; learning curves of 20 evaluations for approach 1.
    let budgets = [1e17, 3e17, 1e18, 3e18, 1e19];
    let mut rows = Vec::new();
    let mut curves = Vec::new();
    for &c in &budgets {
        for k in 0..9 {
            let n = 3e6 * 2f64.powi(k);
            let d = c / (6.0 * n);
            let run = rows.len();
            rows.push(vec![n, d, c, chinchilla(n, d) * wobble(run, 0.002)]);
            for j in 1..=20 {
                let dj = d * j as f64 / 20.0;
                curves.push(vec![run as f64, n, dj, 6.0 * n * dj, chinchilla(n, dj) * wobble(run * 20 + j, 0.002)]);
            }
        }
    }
    let table = Table::from_rows(&["N", "D", "C", "loss"], &rows, "exact isoflop").unwrap();
    let curves = Table::from_rows(&["run", "N", "D", "C", "loss"], &curves, "curves").unwrap();
    let config = FitConfig::from_toml_str(
        r#"
        laws = [{ name = "chinchilla" }, { name = "chinchilla_approach1" }, { name = "chinchilla_approach2" }]
        bootstrap = { resamples = 30, seed = 1 }
        optimal = { budgets = [1e20, 1e21] }
        "#,
    )
    .unwrap();
    let laws = fit_all(&table, Some(&curves), &config).unwrap();
    // The approach-3 band holds the true compute-optimal N inside the data's budgets.
    let truth = sweep_fit::optimal::chinchilla_optimal(&TRUTH, 1e18);
    let c3 = &laws.laws[0].frontier;
    assert_eq!(c3.len(), 25);
    let p =
        c3.iter().min_by(|a, b| (a.c.ln() - 1e18f64.ln()).abs().total_cmp(&(b.c.ln() - 1e18f64.ln()).abs())).unwrap();
    let truth_there = sweep_fit::optimal::chinchilla_optimal(&TRUTH, p.c);
    let [lo, hi] = p.n_opt.ci.unwrap();
    assert!(lo <= truth_there.0 && truth_there.0 <= hi, "true N_opt {} in [{lo}, {hi}] at C = {}", truth_there.0, p.c);
    assert!((p.n_opt.estimate / truth_there.0 - 1.0).abs() < 0.1 && truth.0 > 0.0);
    let (dir, index) = report("report-approaches", table, serde_json::to_value(&laws).unwrap());
    let frontier = read(&dir, "frontier.svg");
    for label in ["approach 1 (envelope", "approach 2 (IsoFLOP", "approach 3 (parametric"] {
        assert_eq!(frontier.matches(label).count(), 2, "{label} in both panels' legends");
    }
    assert!(frontier.contains("with band"), "bands are drawn");
    let iso = read(&dir, "isoflop.svg");
    assert_eq!(iso.matches("N* = ").count(), budgets.len(), "a marked minimum per profile");
    assert!(read(&dir, "extrapolation.svg").contains("approach2"), "each law's extrapolation check");
    for law in ["chinchilla", "chinchilla_approach1", "chinchilla_approach2"] {
        assert!(index.contains(&format!("data-law=\"{law}\" data-kind=\"compute_optimal\"")), "{law}'s answer table");
    }
}

/// D-CPT law: E + A/N^alpha + B s^eta / D^beta + C / (s + epsilon)^gamma, s = r or 1 - r.
fn dcpt(p: &[f64; 9], n: f64, d: f64, s: f64) -> f64 {
    p[0] + p[1] / n.powf(p[2]) + p[3] * s.powf(p[4]) / d.powf(p[5]) + p[6] / (s + p[7]).powf(p[8])
}

fn params(names: &[&str], values: &[f64]) -> serde_json::Value {
    names.iter().zip(values).map(|(n, v)| (n.to_string(), json!({ "estimate": v, "ci": null }))).collect()
}

#[test]
fn mixture_study_draws_both_losses_against_r_with_the_dcpt_curves() {
    let g = [1.8, 300.0, 0.3, 400.0, 0.2, 0.3, 0.05, 0.02, 0.3];
    let dm = [1.2, 250.0, 0.3, 350.0, 0.4, 0.3, 0.08, 0.05, 0.5];
    let mut rows = Vec::new();
    for n in [1e8, 3e8] {
        for d in [1e10, 3e10] {
            for r in [0.0, 0.1, 0.25, 0.5, 0.75, 1.0] {
                let i = rows.len();
                rows.push(vec![
                    n,
                    d,
                    r,
                    dcpt(&g, n, d, 1.0 - r) * wobble(i, 0.003),
                    dcpt(&dm, n, d, r) * wobble(i + 7, 0.003),
                ]);
            }
        }
    }
    let table = Table::from_rows(&["N", "D", "r", "loss_general", "loss_domain"], &rows, "mixture").unwrap();
    let names = ["E", "A", "alpha", "B", "eta", "beta", "C", "epsilon", "gamma"];
    let law = |name: &str, p: &[f64; 9], response: &str| {
        json!({ "name": name, "kind": "parametric", "formula": "D-CPT",
                "variables": { "N": "N", "D": "D", "r": "r", "loss": response },
                "params": params(&names, p), "optimal": [] })
    };
    let laws = json!({ "schema_version": 1, "laws": [law("dcpt_general", &g, "loss_general"), law("dcpt_domain", &dm, "loss_domain")] });
    let (dir, _) = report("report-mixture", table, laws);
    let svg = read(&dir, "mixture.svg");
    assert_eq!(svg.matches("with the fitted D-CPT law").count(), 2, "a general and a domain panel, each with its law");
    assert_eq!(svg.matches("N = 100M, D = 10B").count(), 2, "each (N, D) in each legend");
    // Per panel: a fitted curve per (N, D); per (N, D) six markers and a legend marker.
    assert!(svg.matches("<polyline").count() >= 8, "the fitted curves");
    assert_eq!(svg.matches("<circle").count(), 2 * (24 + 4));
}

#[test]
fn vocabulary_study_draws_loss_against_v_per_budget_with_the_law_and_its_minimum() {
    // Tao et al.'s published coefficients; two budgets, each a fixed N_nv and seven vocabularies.
    let truth = [5.53278, 1.83139, 0.195842, 2.12411, 0.670737, 0.446606];
    let law = |nnv: f64, nv: f64, d: f64| {
        -truth[0]
            + truth[1] / (nnv / 1e6).powf(truth[5])
            + truth[2] / (nv / 1e6).powf(truth[4])
            + truth[3] / (d / 1e9).powf(truth[5])
    };
    let mut rows = Vec::new();
    for (c, nnv) in [(1e19, 3e8), (1e20, 1e9)] {
        for k in 0..7 {
            let v = 4096.0 * 2f64.powi(k);
            let nv = v * 1024.0;
            let d = c / (6.0 * (nnv + nv));
            rows.push(vec![v, nnv, nv, d, c, law(nnv, nv, d)]);
        }
    }
    // The vocabulary law is fitted to the unigram-normalised loss (its response, `loss_u`).
    let table = Table::from_rows(&["V", "N_nv", "N_v", "D", "C", "loss_u"], &rows, "vocab").unwrap();
    let laws = json!({ "schema_version": 1, "laws": [{
        "name": "vocab", "kind": "parametric", "formula": "vocab",
        "variables": { "N_nv": "N_nv", "N_v": "N_v", "D": "D", "loss_u": "loss_u" },
        "params": params(&["E", "A1", "A2", "B", "alpha2", "beta"], &truth),
        "optimal": [{ "kind": "vocab_optimal", "inputs": { "N_nv": 1e9, "embed_dim": 1024, "C": 1e20 },
                      "values": { "V_opt": { "estimate": 41235.0, "ci": [38000.0, 45000.0] }, "loss": { "estimate": -3.2, "ci": null } } }]
    }]});
    let (dir, index) = report("report-vocab", table, laws);
    let svg = read(&dir, "vocab.svg");
    assert!(svg.contains("C = 1e19") && svg.contains("C = 1e20"), "a line per budget");
    assert_eq!(svg.matches("<polygon").count(), 2, "the law's minimum marked on each budget's curve");
    assert!(index.contains("V_opt<br><span class=\"note\">vocabulary entries</span>"));
    assert!(index.contains("41.2k <span class=\"ci\">[38.0k, 45.0k]</span>"), "V_opt with its interval");
}

#[test]
fn precision_study_draws_loss_against_bits_and_against_the_split_per_size() {
    // Sun et al.'s published fp_quant parameters.
    let t = [69.2343, 0.2368, 68973.0621, 0.5162, 1.9061, 11334.5197, 3.1926, 2.9543];
    let law = |n: f64, d: f64, e: f64, m: f64, b: f64| {
        t[0] / n.powf(t[1])
            + t[2] / d.powf(t[3])
            + t[4]
            + d.powf(t[3]) / n.powf(t[1]) * b.log2() / (t[5] * (e + 0.5).powf(t[6]) * (m + 0.5).powf(t[7]))
    };
    let formats =
        [(8.0, 2.0, 5.0), (8.0, 4.0, 3.0), (8.0, 5.0, 2.0), (4.0, 1.0, 2.0), (4.0, 2.0, 1.0), (4.0, 3.0, 0.0)];
    let mut rows = Vec::new();
    for n in [1e8, 1e9] {
        for &(bits, e, m) in &formats {
            let d = 2e10;
            rows.push(vec![n, d, bits, e, m, 128.0, law(n, d, e, m, 128.0)]);
        }
    }
    let table = Table::from_rows(&["N", "D", "bits", "exp_bits", "man_bits", "block_size", "loss"], &rows, "precision")
        .unwrap();
    let vars = json!({ "N": "N", "D": "D", "exp_bits": "exp_bits", "man_bits": "man_bits", "block_size": "block_size", "loss": "loss" });
    let laws = json!({ "schema_version": 1, "laws": [{
        "name": "fp_quant", "kind": "parametric", "formula": "fp_quant", "variables": vars,
        "params": params(&["n", "alpha", "d", "beta", "eps", "gamma", "delta", "nu"], &t),
        "optimal": [{ "kind": "precision_split", "inputs": { "bits": 8, "N": 1e9, "block_size": 128 },
                      "values": { "exp_bits": { "estimate": 4, "ci": [4, 4] }, "man_bits": { "estimate": 3, "ci": [3, 3] } } }]
    }]});
    let (dir, index) = report("report-precision", table, laws);
    let bits = read(&dir, "precision_bits.svg");
    assert!(bits.contains("N = 100M, D = 20B") && bits.contains("N = 1B, D = 20B"), "a line per (N, D)");
    let split = read(&dir, "precision_split.svg");
    assert_eq!(split.matches("N = 100M").count() + split.matches("N = 1B").count(), 2, "a panel per size");
    assert!(split.contains("8 bits, D = 20B") && split.contains("4 bits, D = 20B"), "a line per bit width");
    assert!(index.contains("<td data-q=\"exp_bits\" data-value=\"4e0\" data-lo=\"4e0\" data-hi=\"4e0\">4 "));
}

#[test]
fn vocabulary_profiles_with_several_sizes_per_budget_draw_a_line_per_size_and_vocabulary() {
    // An IsoFLOP-over-vocabulary design as configs/vocab.toml plans it: at each budget, three
    // non-vocabulary sizes, each at three vocabularies (D = C / 6 N_nv).
    let mut rows = Vec::new();
    for c in [2e11, 6e11] {
        for nnv in [3e4f64, 1e5, 2.5e5] {
            for v in [384.0, 768.0, 1536.0] {
                let d = c / (6.0 * nnv);
                let loss = 2.0 + 30.0 / nnv.powf(0.3) + 40.0 / d.powf(0.3) + 0.1 * (v / 768.0f64).ln().powi(2);
                rows.push(vec![v, nnv, nnv, v * 64.0, d, c, c, loss - 4.0, loss]);
            }
        }
    }
    let table =
        Table::from_rows(&["V", "N", "N_nv", "N_v", "D", "C", "C_budget", "loss_u", "loss"], &rows, "vocab").unwrap();
    let (dir, _) = report("report-vocab-sizes", table, json!({ "schema_version": 2, "laws": [] }));
    let vocab = read(&dir, "vocab.svg");
    for c in ["2e11", "6e11"] {
        for n in ["30k", "100k", "250k"] {
            let label = format!("C = {c}, N_nv = {n}");
            assert!(vocab.contains(&label), "{label} in the legend of vocab.svg");
        }
    }
    let iso = read(&dir, "isoflop.svg");
    for v in ["384", "768", "1.54k"] {
        assert!(iso.contains(&format!("C = 2e11, V = {v}")), "a profile per vocabulary: V = {v}");
    }
}
