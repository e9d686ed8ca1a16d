//! The critical mixture ratio law (Gu et al. 2024) against the paper's numbers, and its
//! derivation from a mixture sweep's runs against a simulated trade-off with known parameters.

mod common;
use common::*;
use sweep_fit::cmr::{fit_power_offset, predict_cmr};
use sweep_fit::{fit_all, FitConfig, Table};

#[test]
fn loss_against_ratio_predicts_the_papers_table_2() {
    // Gu et al. Table 2 (Finance): domain loss after 20B CPT tokens at R = 100%, 75%, 50%, 33%
    // and 25%, for the 460M, 940M, 1.6B and 3.1B models, with the paper's own prediction at 25%
    // from L(R) = alpha R^s + beta fitted to the other ratios (errors 0.03%, 0.05%, 0.03%,
    // 0.02%). Our fit of the same form to the same four points predicts the measured 25% loss
    // within the paper's worst reported error (0.05%), and within 0.06% of its prediction.
    let table2 = [
        ("460M", [1.4628, 1.4844, 1.5122, 1.5387], 1.5561, 1.5566),
        ("940M", [1.3723, 1.3910, 1.4155, 1.4385], 1.4538, 1.4546),
        ("1.6B", [1.3242, 1.3416, 1.3643, 1.3854], 1.3994, 1.3999),
        ("3.1B", [1.2585, 1.2750, 1.2965, 1.3170], 1.3305, 1.3303),
    ];
    let ratios = [1.0, 0.75, 0.5, 1.0 / 3.0];
    for (size, losses, measured, published) in table2 {
        let ([alpha, s, beta], _) = fit_power_offset(&ratios, &losses).unwrap();
        let predicted = alpha * 0.25f64.powf(s) + beta;
        eprintln!("{size}: predicted {predicted:.4}, measured {measured}, paper's prediction {published}");
        assert!(rel(predicted, measured) < 5e-4, "{size}: {predicted} vs measured {measured}");
        assert!(rel(predicted, published) < 6e-4, "{size}: {predicted} vs the paper's {published}");
        // The domain loss falls with the domain share (alpha R^s decreasing).
        assert!(alpha * s < 0.0, "{size}: alpha {alpha}, s {s}");
    }
}

/// A mixture sweep from a known trade-off: general loss L0 + kappa r^p over its r = 0 value,
/// with kappa chosen so that it crosses the tolerance eps exactly at
/// r*(D) = alpha4 (D/0.2B)^s4 + beta3 (eq. 8); the domain loss falls with r.
fn mixture_table(truth: &[(f64, [f64; 3])], tokens: &[f64], ratios: &[f64], noise: f64, seed: u64) -> Table {
    let eps = 0.05;
    let p = 2.0;
    let mut normal = Normal::new(seed);
    let mut rows = Vec::new();
    for &(n, theta) in truth {
        for &d in tokens {
            let r_star = predict_cmr(&theta, d);
            let kappa = eps / r_star.powf(p);
            let base = 2.0 + 300.0 / n.powf(0.3) + 500.0 / d.powf(0.3);
            for &r in ratios {
                let general = base + kappa * r.powf(p) + noise * normal.sample();
                let domain = base + 1.0 - 0.8 * r.sqrt() + noise * normal.sample();
                rows.push(vec![n, d, r, general, domain]);
            }
        }
    }
    Table::from_rows(&["N", "D", "r", "loss_general", "loss_domain"], &rows, "simulated mixture sweep").unwrap()
}

#[test]
fn critical_ratios_and_eq_8_are_recovered_from_a_mixture_sweep() {
    // Two model sizes, five token budgets (1B-16B), the paper's kind of ratios plus 0 (the
    // baseline). The CMR rises with tokens and model size, as in the paper.
    let truth = [(4.6e8, [-0.45, -0.25, 0.55]), (1.6e9, [-0.5, -0.2, 0.7])];
    let tokens = [1e9, 2e9, 4e9, 8e9, 1.6e10];
    let ratios = [0.0, 0.125, 0.25, 1.0 / 3.0, 0.5, 0.75, 1.0];
    let config = FitConfig::from_toml_str(
        "laws = [{ name = \"cmr\", counting = { parameters = \"non_embedding\" } }]\nbootstrap = { resamples = 200, seed = 3 }\noptimal = { cmr_tokens = [2e10] }",
    )
    .unwrap();
    // Noise-free: each derived critical ratio equals r*(D) (to 1e-6), and eq. 8 is recovered.
    let laws = fit_all(&mixture_table(&truth, &tokens, &ratios, 0.0, 1), None, &config).unwrap();
    assert_eq!(laws.laws.len(), 2, "one entry per model size");
    for (entry, (n, theta)) in laws.laws.iter().zip(truth) {
        assert_eq!(entry.group.as_ref().unwrap()["N"], n);
        for p in &entry.derived_points {
            let want = predict_cmr(&theta, p["D"]);
            assert!((p["r_crit"] - want).abs() < 1e-6, "N {n} D {}: {} vs {want}", p["D"], p["r_crit"]);
        }
        for (name, want) in ["alpha4", "s4", "beta3"].iter().zip(theta) {
            let got = entry.params[*name].estimate;
            assert!((got - want).abs() < 1e-4, "N {n}: {name} = {got}, truth {want}");
        }
        // Without noise there is nothing to resample: the parametric bootstrap has zero spread.
        assert!(entry.fit.as_ref().unwrap().bootstrap.as_ref().unwrap().intervals_withheld.is_none());
    }
    // With 0.002 nats of noise on every loss: the 95% intervals of eq. 8's parameters and of the
    // predicted CMR at 20B tokens cover the truth.
    let laws = fit_all(&mixture_table(&truth, &tokens, &ratios, 0.002, 2), None, &config).unwrap();
    for (entry, (n, theta)) in laws.laws.iter().zip(truth) {
        let b = entry.fit.as_ref().unwrap().bootstrap.as_ref().unwrap();
        assert_eq!((b.unit.as_str(), b.intervals_withheld.as_ref()), ("parametric", None), "{b:?}");
        let o = &entry.optimal[0];
        let want = predict_cmr(&theta, 2e10);
        let [lo, hi] = o.values["r_crit"].ci.unwrap();
        eprintln!("N {n:e}: CMR at 20B {:.4} [{lo:.4}, {hi:.4}], truth {want:.4}", o.values["r_crit"].estimate);
        assert!(lo <= want && want <= hi, "N {n}: truth {want} outside [{lo}, {hi}]");
        assert!(hi - lo < 0.1, "N {n}: interval [{lo}, {hi}] too wide to be useful");
    }
}

#[test]
fn a_staged_sweep_gives_its_base_losses_as_columns() {
    // Continual pre-training from a base checkpoint: no r = 0 run, the base model's losses in
    // loss_general_base / loss_domain_base. The critical ratio is measured against them.
    let ratios = [0.125, 0.25, 0.5, 0.75];
    let mut rows = Vec::new();
    for d in [1e9, 2e9, 4e9] {
        for r in ratios {
            // General loss 2.0 + 0.2 r^2 (crosses 2.0 + 0.05 at r = 0.5).
            rows.push(vec![1e8, d, r, 2.0 + 0.2 * r * r, 3.0 - r, 2.0, 3.0]);
        }
    }
    let t = Table::from_rows(
        &["N", "D", "r", "loss_general", "loss_domain", "loss_general_base", "loss_domain_base"],
        &rows,
        "staged",
    )
    .unwrap();
    let config = FitConfig::from_toml_str(
        "laws = [{ name = \"cmr\", counting = { parameters = \"non_embedding\" } }]\nbootstrap = { resamples = 0 }",
    )
    .unwrap();
    let laws = fit_all(&t, None, &config).unwrap();
    let e = &laws.laws[0];
    assert!(e.error.is_none(), "{:?}", e.error);
    for p in &e.derived_points {
        assert!((p["r_crit"] - 0.5).abs() < 1e-6, "{p:?}");
    }
    // Without any baseline the law says what is missing.
    let mut no_base = t.clone();
    no_base.columns.remove("loss_general_base");
    let laws = fit_all(&no_base, None, &config).unwrap();
    let err = laws.laws[0].error.as_ref().unwrap();
    assert!(err.contains("no baseline") && err.contains("loss_general_base"), "{err}");
}
