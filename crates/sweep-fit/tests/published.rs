//! Checks against published numbers: the vocabulary-law coefficients reproduced from the
//! public data of Tao et al. 2024, and the precision law's optimal formats and critical data
//! sizes of Sun et al. 2025.

mod common;
use common::*;
use sweep_fit::optimal::{critical_data_size, optimal_mantissa_continuous, optimal_split};
use sweep_fit::{fit_all, FitConfig, Table};

/// Tokens per character of the public fitting code (utils.H_to_D), evaluated, as that code
/// does, at the vocabulary size in thousands (its V is divided by 1000 before the call).
fn tokens_per_character(vocab_size: f64) -> f64 {
    let logv = (vocab_size / 1000.0).min(200_000.0).ln();
    0.00639222 * logv * logv - 0.15811069 * logv + 1.20470122
}

/// The public vocabulary-law data as the law's table, by the procedure of laws.md and the public
/// code: drop points with FLOPs < 2.18e17; N_v = V d; tokens D = H * tokens_per_character(V);
/// units N/1e6 and D/1e9 are part of the law. None (with a loud SKIP for `test`) when the file
/// is absent.
fn vocab_table(test: &str) -> Option<Table> {
    let path = shared_data().join("vocab_scaling_exp_data.csv");
    if !path.exists() {
        eprintln!("\n*** SKIP {test}: {} is absent; this check did NOT run ***\n", path.display());
        return None;
    }
    let raw = Table::from_csv(&path, &[]).unwrap();
    let col = |n: &str| raw.column(n).unwrap().to_vec();
    let (v, d, h, nnv, flops, lossu) = (
        col("vocab_size"),
        col("embed_dim"),
        col("num_characters"),
        col("Non_vocab_parameters"),
        col("FLOPs"),
        col("Lossu"),
    );
    let rows: Vec<Vec<f64>> = (0..v.len())
        .filter(|&i| flops[i] >= 2.18e17)
        .map(|i| vec![nnv[i], v[i] * d[i], h[i] * tokens_per_character(v[i]), lossu[i]])
        .collect();
    Some(Table::from_rows(&["N_nv", "N_v", "D", "loss_u"], &rows, path.display().to_string()).unwrap())
}

#[test]
fn vocab_law_reproduces_published_coefficients() {
    let Some(table) = vocab_table("vocab_law_reproduces_published_coefficients") else { return };
    assert_eq!(table.len(), 1054, "points kept after the FLOPs cut");
    let config =
        FitConfig::from_toml_str("laws = [{ name = \"vocab\" }]\nbootstrap = { resamples = 0 }\nextrapolation = false")
            .unwrap();
    let laws = fit_all(&table, None, &config).unwrap();
    let p = &laws.laws[0].params;
    // Published: A1 = 1.83139, A2 = 0.195842, B = 2.12411, E = 5.53278, alpha1 = beta = 0.446606,
    // alpha2 = 0.670737. Tolerances (relative): 1% for A1, B, E, beta; 2% for alpha2; 3% for A2.
    // A2 and alpha2 are looser because the published pair is not an optimum of the published
    // objective: the public code (approach 3) stops scipy's L-BFGS-B at its default tolerance
    // (relative reduction of f <= 2.2e-9, finite-difference gradients), which leaves the 486
    // starts scattered along a flat (A2, alpha2) valley (A2 0.187 to 0.198 within 1e-6 of the
    // lowest Huber loss), and reports the end point with the lowest relative *squared* error.
    // scripts/vocab_reference.py redoes this: with scipy < 1.15 and rows in FLOPs order it gives
    // the published digits exactly; scipy 1.17 gives A2 = 0.1930, the CSV's row order 0.1910 (or
    // 0.2100 with scipy 1.17), and converged runs 0.1907 to 0.1908, our value. The summed Huber
    // loss is lower at our estimate (checked below), and scipy's Nelder-Mead polished from the
    // published values lands on A2 = 0.190668, alpha2 = 0.663671 (we match it to 0.2%).
    let published = [
        ("A1", 1.83139, 0.01),
        ("A2", 0.195842, 0.03),
        ("B", 2.12411, 0.01),
        ("E", 5.53278, 0.01),
        ("beta", 0.446606, 0.01),
        ("alpha2", 0.670737, 0.02),
    ];
    for (name, want, tol) in published {
        let got = p[name].estimate;
        eprintln!("vocab {name}: reproduced {got:.6}, published {want} ({:.2}% apart)", 100.0 * rel(got, want));
        assert!(rel(got, want) < tol, "{name}: reproduced {got}, published {want}");
    }
    for (name, polished) in [
        ("A1", 1.8288794),
        ("A2", 0.19066846),
        ("B", 2.1219732),
        ("E", 5.5349426),
        ("beta", 0.445317),
        ("alpha2", 0.66367133),
    ] {
        assert!(rel(p[name].estimate, polished) < 2e-3, "{name}: {} vs scipy-polished {polished}", p[name].estimate);
    }
    let law = sweep_fit::laws::builtin_law("vocab").unwrap();
    let data = sweep_fit::fit::Dataset::from_table(law.as_ref(), &table, &|s: &str| s.to_string()).unwrap();
    let order = ["E", "A1", "A2", "B", "alpha2", "beta"];
    let ours: Vec<f64> = order.iter().map(|n| p[*n].estimate).collect();
    let theirs = [5.53278, 1.83139, 0.195842, 2.12411, 0.670737, 0.446606];
    let mut g = [0.0; 6];
    let (o1, o2) = (
        sweep_fit::fit::objective(law.as_ref(), &data, &ours, 1e-3, &mut g),
        sweep_fit::fit::objective(law.as_ref(), &data, &theirs, 1e-3, &mut g),
    );
    eprintln!("summed Huber objective: ours {o1:.9}, at the published values {o2:.9}");
    assert!(o1 <= o2, "our optimum {o1} is worse than the published values' {o2}");
}

#[test]
fn published_vocab_coefficients_lie_inside_the_bootstrap_intervals() {
    // The published A2 and alpha2 sit a little off the converged optimum (where scipy stopped;
    // see above), but well inside the fit's own 95% bootstrap intervals, as all six do.
    let Some(table) = vocab_table("published_vocab_coefficients_lie_inside_the_bootstrap_intervals") else { return };
    let config = FitConfig::from_toml_str(
        "laws = [{ name = \"vocab\" }]\nbootstrap = { resamples = 100, level = 0.95 }\nextrapolation = false",
    )
    .unwrap();
    let laws = fit_all(&table, None, &config).unwrap();
    let p = &laws.laws[0].params;
    for (name, published) in
        [("A1", 1.83139), ("A2", 0.195842), ("B", 2.12411), ("E", 5.53278), ("beta", 0.446606), ("alpha2", 0.670737)]
    {
        let [lo, hi] = p[name].ci.expect("bootstrap interval");
        eprintln!("vocab {name}: published {published} in [{lo:.5}, {hi:.5}]?");
        assert!(
            lo <= published && published <= hi,
            "{name}: published {published} outside the 95% interval [{lo}, {hi}]"
        );
    }
}

#[test]
fn fp_quant_optimal_formats_match_published() {
    // Sun et al.: E2M1 at 4 bits, E4M3 at 8, E8M7 at 16 with delta = 3.1926, nu = 2.9543.
    let (delta, nu) = (3.1926, 2.9543);
    assert_eq!(optimal_split(delta, nu, 4), (2, 1));
    assert_eq!(optimal_split(delta, nu, 8), (4, 3));
    assert_eq!(optimal_split(delta, nu, 16), (8, 7));
    // Continuous optimum M = nu P / (delta + nu) - 0.5 rounds to the same mantissas.
    assert_eq!(optimal_mantissa_continuous(delta, nu, 8.0).round(), 3.0);
    assert_eq!(optimal_mantissa_continuous(delta, nu, 16.0).round(), 7.0);
}

#[test]
fn fp_quant_critical_data_size_matches_published() {
    // Sun et al. for N = 1e9, B = 128: about 1730T (BF16 = E8M7), 27T (E4M3), 0.39T (E2M1) tokens.
    // Within 5% (the paper rounds).
    let theta = [69.2343, 0.2368, 68973.0621, 0.5162, 1.9061, 11334.5197, 3.1926, 2.9543];
    for ((e, m), want) in [((8.0, 7.0), 1730e12), ((4.0, 3.0), 27e12), ((2.0, 1.0), 0.39e12)] {
        let got = critical_data_size(&theta, 1e9, e, m, 128.0);
        assert!(rel(got, want) < 0.05, "E{e}M{m}: D_crit = {got:.3e}, published {want:.3e}");
    }
}

#[test]
fn chinchilla_compute_optimal_matches_published_coefficients() {
    // Hoffmann et al.'s fitted E, A, B, alpha, beta give N_opt ∝ C^0.45 (beta/(alpha+beta) =
    // 0.28/0.62 = 0.4516); checks the closed form against a direct numeric minimisation of
    // L(N, C/(6N)) to 1e-3 relative, at C = 5.76e23 (Chinchilla's budget).
    let theta = [1.69, 406.4, 410.7, 0.34, 0.28];
    let (n, d) = sweep_fit::optimal::chinchilla_optimal(&theta, 5.76e23);
    let law = sweep_fit::laws::builtin_law("chinchilla").unwrap();
    let (n2, d2, _) = sweep_fit::optimal::compute_optimal(law.as_ref(), &theta, 5.76e23, &|n, d| vec![n, d]);
    assert!(rel(n2, n) < 1e-3 && rel(d2, d) < 1e-3, "closed form ({n:.4e}, {d:.4e}) vs numeric ({n2:.4e}, {d2:.4e})");
    assert!((6.0 * n * d / 5.76e23 - 1.0).abs() < 1e-12);
}
