//! Parameters of each built-in law are recovered from simulated noisy data (tolerances stated
//! per law), and the Chinchilla fit shrugs off a few corrupted points.

mod common;
use common::*;
use sweep_fit::{fit_all, FitConfig, LawsFile, Table};

fn fit(table: &Table, law: &str) -> LawsFile {
    let config = FitConfig::from_toml_str(&format!(
        "laws = [{{ name = \"{law}\" }}]\nbootstrap = {{ resamples = 0 }}\nextrapolation = false"
    ))
    .unwrap();
    fit_all(table, None, &config).unwrap()
}

fn check(laws: &LawsFile, truth: &[(&str, f64)], tol: f64) {
    let law = &laws.laws[0];
    assert!(law.fit.as_ref().unwrap().converged, "{} did not converge", law.name);
    for (name, want) in truth {
        let got = law.params[*name].estimate;
        assert!(rel(got, *want) < tol, "{}: {name} = {got}, truth {want} (tolerance {tol} relative)", law.name);
    }
}

fn chinchilla_inputs() -> Vec<Vec<f64>> {
    // IsoFLOP-style design: 8 budgets x 15 model sizes.
    let mut out = Vec::new();
    for c in logspace(17.0, 21.0, 8) {
        let n_opt = (c / 120.0).sqrt();
        for k in 0..15 {
            let n = n_opt * 10f64.powf(-1.2 + 2.4 * k as f64 / 14.0);
            out.push(vec![n, c / (6.0 * n)]);
        }
    }
    out
}

const CHINCHILLA_TRUTH: [f64; 5] = [1.817, 482.0, 2085.4, 0.348, 0.366];

#[test]
fn chinchilla_recovers_epoch_refit_parameters() {
    // 1% log-normal noise on 120 points: exponents within 5%, E within 3%, A and B within 35%
    // (A and B trade off against the exponents; the exponents are what the frontier uses).
    let t = simulate("chinchilla", &CHINCHILLA_TRUTH, &chinchilla_inputs(), 0.01, 1);
    let laws = fit(&t, "chinchilla");
    check(&laws, &[("alpha", 0.348), ("beta", 0.366)], 0.05);
    check(&laws, &[("E", 1.817)], 0.03);
    check(&laws, &[("A", 482.0), ("B", 2085.4)], 0.35);
    assert!(laws.laws[0].fit.as_ref().unwrap().r2 > 0.99);
}

#[test]
fn chinchilla_huber_fit_barely_moves_with_corrupted_points() {
    let inputs = chinchilla_inputs();
    let clean = simulate("chinchilla", &CHINCHILLA_TRUTH, &inputs, 0.005, 2);
    let mut dirty = clean.clone();
    let loss = dirty.columns.get_mut("loss").unwrap();
    // Five of 120 runs corrupted: losses 1.5 to 3.5 times too high (diverged or mislogged runs).
    for (k, i) in [3usize, 27, 51, 77, 101].iter().enumerate() {
        loss[*i] *= 1.5 + 0.5 * k as f64;
    }
    let a = fit(&clean, "chinchilla");
    let b = fit(&dirty, "chinchilla");
    for p in ["E", "alpha", "beta"] {
        let (x, y) = (a.laws[0].params[p].estimate, b.laws[0].params[p].estimate);
        // Huber: within 0.5% of the clean fit.
        assert!(rel(y, x) < 0.005, "{p}: clean {x}, corrupted {y}");
    }
    // A least-squares fit (huge delta) moves much more: shows the check can fail.
    let config = FitConfig::from_toml_str(
        "laws = [{ name = \"chinchilla\" }]\nhuber_delta = 10.0\nbootstrap = { resamples = 0 }\nextrapolation = false",
    )
    .unwrap();
    let ls = fit_all(&dirty, None, &config).unwrap();
    let moved = ["E", "alpha", "beta"]
        .iter()
        .map(|p| rel(ls.laws[0].params[*p].estimate, a.laws[0].params[*p].estimate))
        .fold(0.0, f64::max);
    assert!(moved > 0.05, "least squares moved only {moved}");
}

#[test]
fn kaplan_recovers_published_parameters() {
    // Published: alpha_N = 0.076, alpha_D = 0.095, N_c = 8.8e13, D_c = 5.4e13. 0.5% noise.
    // Exponents within 5%, N_c and D_c within a factor 2 (20 decades away from the data).
    let truth = [8.8e13, 5.4e13, 0.076, 0.095];
    let inputs = grid(&[&logspace(6.0, 9.0, 8), &logspace(8.0, 11.0, 8)]);
    let laws = fit(&simulate("kaplan", &truth, &inputs, 0.005, 3), "kaplan");
    check(&laws, &[("alpha_N", 0.076), ("alpha_D", 0.095)], 0.05);
    check(&laws, &[("N_c", 8.8e13), ("D_c", 5.4e13)], 1.0);
}

#[test]
fn dcpt_general_and_domain_recover_parameters() {
    let truth = [1.5, 300.0, 0.3, 500.0, 0.2, 0.35, 0.3, 0.05, 0.4];
    let inputs = grid(&[&logspace(7.0, 9.0, 4), &logspace(9.0, 11.0, 4), &[0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]]);
    for (law, seed) in [("dcpt_domain", 4), ("dcpt_general", 5)] {
        // Noise 0.3%; 112 points. E, alpha, beta within 10%; gamma within 25% (it trades off
        // against epsilon, which only the smallest shares pin down).
        let laws = fit(&simulate(law, &truth, &inputs, 0.003, seed), law);
        check(&laws, &[("E", 1.5), ("alpha", 0.3), ("beta", 0.35)], 0.10);
        check(&laws, &[("gamma", 0.4)], 0.25);
        assert!(laws.laws[0].fit.as_ref().unwrap().r2 > 0.99, "{law}: R2 {}", laws.laws[0].fit.as_ref().unwrap().r2);
    }
}

#[test]
fn vocab_law_recovers_published_parameters() {
    // Published Tao et al. values as truth; 1e-3 additive noise on the unigram-normalised loss.
    let truth = [5.53278, 1.83139, 0.195842, 2.12411, 0.670737, 0.446606];
    let inputs: Vec<Vec<f64>> = grid(&[&logspace(7.5, 9.5, 5), &[4096.0, 16384.0, 65536.0], &logspace(9.0, 11.0, 5)])
        .into_iter()
        .map(|x| vec![x[0], x[1] * 1024.0, x[2]])
        .collect();
    let laws = fit(&simulate("vocab", &truth, &inputs, 1e-3, 7), "vocab");
    check(&laws, &[("E", 5.53278), ("beta", 0.446606), ("alpha2", 0.670737)], 0.05);
    check(&laws, &[("A1", 1.83139), ("A2", 0.195842), ("B", 2.12411)], 0.15);
    assert_eq!(laws.laws[0].derived["alpha1"].estimate, laws.laws[0].params["beta"].estimate);
}

#[test]
fn fp_quant_recovers_published_exponents() {
    // Published Sun et al. values as truth, 0.3% noise, 2 x 3 x 3 x formats grid.
    let truth = [69.2343, 0.2368, 68973.0621, 0.5162, 1.9061, 11334.5197, 3.1926, 2.9543];
    let formats: &[(f64, f64)] = &[
        (1.0, 2.0),
        (2.0, 1.0),
        (3.0, 2.0),
        (2.0, 3.0),
        (4.0, 3.0),
        (5.0, 2.0),
        (3.0, 4.0),
        (8.0, 7.0),
        (1.0, 1.0),
        (2.0, 2.0),
    ];
    let mut inputs = Vec::new();
    for n in logspace(7.5, 9.0, 3) {
        for d in logspace(9.5, 11.5, 4) {
            for &(e, m) in formats {
                for b in [32.0, 128.0, 2f64.powf(13.16)] {
                    inputs.push(vec![n, d, e, m, b]);
                }
            }
        }
    }
    let laws = fit(&simulate("fp_quant", &truth, &inputs, 0.003, 8), "fp_quant");
    // alpha, beta, eps within 10%; delta and nu within 15%; their ratio (what M_opt uses) within 5%.
    check(&laws, &[("alpha", 0.2368), ("beta", 0.5162), ("eps", 1.9061)], 0.10);
    check(&laws, &[("delta", 3.1926), ("nu", 2.9543)], 0.15);
    let share = laws.laws[0].derived["mantissa_share"].estimate;
    assert!(rel(share, 2.9543 / (3.1926 + 2.9543)) < 0.05, "mantissa share {share}");
}

#[test]
fn quant_degradation_recovers_exponents() {
    // Reported alpha 0.23, beta 0.53, gamma 5.5 as truth; 2% noise. Within 5%.
    let truth = [1e-2, 0.23, 0.53, 5.5];
    let inputs = grid(&[&logspace(7.0, 10.0, 5), &logspace(9.0, 12.0, 5), &[2.0, 3.0, 4.0, 8.0]]);
    let laws = fit(&simulate("quant_degradation", &truth, &inputs, 0.02, 9), "quant_degradation");
    check(&laws, &[("alpha", 0.23), ("beta", 0.53), ("gamma", 5.5)], 0.05);
}

#[test]
fn user_formula_law_is_fitted_like_a_builtin() {
    // The same Chinchilla law written in TOML: recovers the truth and agrees with the
    // hand-coded built-in on the same data to 1e-4 relative.
    let t = simulate("chinchilla", &CHINCHILLA_TRUTH, &chinchilla_inputs(), 0.01, 10);
    let config = FitConfig::from_toml_str(
        r#"
        bootstrap = { resamples = 0 }
        extrapolation = false
        [[laws]]
        name = "my_chinchilla"
        formula = "E + A / N^alpha + B / D^beta"
        variables = ["N", "D"]
        params.E = { bounds = [0, inf], grid = [0.5, 2] }
        params.A = { bounds = [0, inf], grid = [10, 1000] }
        params.B = { bounds = [0, inf], grid = [10, 1000] }
        params.alpha = { grid = [0.2, 0.5] }
        params.beta = { grid = [0.2, 0.5] }
        "#,
    )
    .unwrap();
    let user = fit_all(&t, None, &config).unwrap();
    let builtin = fit(&t, "chinchilla");
    for p in ["E", "A", "B", "alpha", "beta"] {
        let (u, b) = (user.laws[0].params[p].estimate, builtin.laws[0].params[p].estimate);
        assert!(rel(u, b) < 1e-4, "{p}: formula {u}, built-in {b}");
    }
}

#[test]
fn chinchilla_approach2_recovers_frontier_exponent() {
    // Noise-free IsoFLOP profiles of the Epoch law: the parabola minima follow
    // N_opt ∝ C^(beta/(alpha+beta)) = C^0.5126; approach 2 gets it within 0.02.
    let inputs = chinchilla_inputs();
    let mut t = simulate("chinchilla", &CHINCHILLA_TRUTH, &inputs, 0.0, 11);
    let c: Vec<f64> = inputs.iter().map(|x| 6.0 * x[0] * x[1]).collect();
    t.insert("C", c).unwrap();
    let config = FitConfig::from_toml_str(
        "laws = [{ name = \"chinchilla_approach2\" }]\nbootstrap = { resamples = 50 }\noptimal = { budgets = [1e21] }",
    )
    .unwrap();
    let laws = fit_all(&t, None, &config).unwrap();
    let a = laws.laws[0].params["a"].estimate;
    let want = 0.366 / (0.348 + 0.366);
    assert!((a - want).abs() < 0.02, "a = {a}, want {want}");
    assert!((laws.laws[0].params["b"].estimate - (1.0 - want)).abs() < 0.02);
    assert_eq!(laws.laws[0].optimal.len(), 1);
    // Extrapolation: the frontier refit without the largest budget predicts its N_opt (noise-free
    // data, so within a few per cent: the minima are parabola fits, not exact).
    let x = laws.laws[0].extrapolation.as_ref().expect("approach 2 has an extrapolation check");
    assert_eq!(x.n_held_out, 1, "{x:?}");
    assert!(x.mean_abs_rel_error < 0.05, "{x:?}");
    // A top budget whose minimum sits far off the trend is reported as a large error.
    let (c, n, d) = (t.column("C").unwrap(), t.column("N").unwrap(), t.column("D").unwrap());
    let (minima, skipped) = sweep_fit::approaches::profile_minima(c, n, d, c, t.column("loss").unwrap());
    assert!(skipped.is_empty(), "{skipped:?}");
    let mut f = sweep_fit::approaches::approach2(&minima).unwrap();
    let last = f.points.len() - 1;
    f.points[last].1 *= 3.0;
    let off = sweep_fit::approaches::frontier_extrapolation(&f).unwrap();
    assert!((off.mean_abs_rel_error - 2.0 / 3.0).abs() < 0.05, "{off:?}");
}

#[test]
fn chinchilla_approach1_recovers_frontier_exponent() {
    // Learning curves: 10 model sizes, loss logged every 2x tokens from the Epoch law
    // (each point as if a run had a cosine schedule to that length); lower envelope exponent
    // within 0.05 of beta/(alpha+beta).
    let law = sweep_fit::laws::builtin_law("chinchilla").unwrap();
    let mut rows = Vec::new();
    for (run, n) in logspace(7.0, 10.0, 10).into_iter().enumerate() {
        for d in logspace(8.0, 12.0, 40) {
            rows.push(vec![run as f64, n, 6.0 * n * d, law.predict(&CHINCHILLA_TRUTH, &[n, d])]);
        }
    }
    let curves = Table::from_rows(&["run", "N", "C", "loss"], &rows, "simulated curves").unwrap();
    let config =
        FitConfig::from_toml_str("laws = [{ name = \"chinchilla_approach1\" }]\nbootstrap = { resamples = 20 }")
            .unwrap();
    let laws = fit_all(&Table::default(), Some(&curves), &config).unwrap();
    let a = laws.laws[0].params["a"].estimate;
    let want = 0.366 / (0.348 + 0.366);
    assert!((a - want).abs() < 0.05, "a = {a}, want {want}");
    // Extrapolation over the envelope's top tenth of budgets. Of the 100 budgets, those where
    // the smallest or largest model reaching them is lowest give no point (the optimum may lie
    // beyond the sizes trained): 73 remain here, and the top 7 are held out.
    let x = laws.laws[0].extrapolation.as_ref().expect("approach 1 has an extrapolation check");
    assert_eq!((x.n_train + x.n_held_out, x.n_held_out), (73, 7), "{x:?}");
    assert!(x.mean_abs_rel_error.is_finite() && x.max_abs_rel_error >= x.mean_abs_rel_error, "{x:?}");
}
