//! The D-CPT usages and the critical mixture ratio against an independent computation: the
//! law written out by hand in the test and searched by brute force on a fine grid.

use sweep_fit::laws::builtin_law;
use sweep_fit::optimal::{critical_mixture_ratio, dcpt_best_ratio};

/// E, A, alpha, B, eta, beta, C, epsilon, gamma (the laws' parameter order).
const GENERAL: [f64; 9] = [1.8, 400.0, 0.33, 900.0, 0.05, 0.3, 0.3, 0.02, 0.5];
const DOMAIN: [f64; 9] = [1.2, 300.0, 0.30, 700.0, 0.3, 0.3, 0.08, 0.03, 0.6];

/// The D-CPT form for a corpus whose own share of the data is `share`.
fn dcpt(p: &[f64; 9], n: f64, d: f64, share: f64) -> f64 {
    let [e, a, alpha, b, eta, beta, c, eps, gamma] = *p;
    e + a / n.powf(alpha) + b * share.powf(eta) / d.powf(beta) + c / (share + eps).powf(gamma)
}

#[test]
fn law_parameter_order_is_the_one_written_here() {
    let g = builtin_law("dcpt_general").unwrap();
    let d = builtin_law("dcpt_domain").unwrap();
    let names: Vec<&str> = g.params().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["E", "A", "alpha", "B", "eta", "beta", "C", "epsilon", "gamma"]);
    for (n, dd, r) in [(1e8, 1e10, 0.0), (3e8, 2e10, 0.3), (1e9, 5e10, 0.9)] {
        let pg = g.predict(&GENERAL, &[n, dd, r]);
        assert!((pg - dcpt(&GENERAL, n, dd, 1.0 - r)).abs() < 1e-9 * pg, "general at r = {r}");
        let pd = d.predict(&DOMAIN, &[n, dd, r]);
        assert!((pd - dcpt(&DOMAIN, n, dd, r)).abs() < 1e-9 * pd, "domain at r = {r}");
    }
}

#[test]
fn critical_ratio_and_best_ratio_match_brute_force() {
    let g = builtin_law("dcpt_general").unwrap();
    let d = builtin_law("dcpt_domain").unwrap();
    let (n, tokens, tol) = (1e9, 2e10, 0.05);
    // Critical ratio: the largest r whose general loss stays within (1 + T) of its r = 0 value.
    let base = dcpt(&GENERAL, n, tokens, 1.0);
    let grid: Vec<f64> = (0..=200_000).map(|i| i as f64 / 200_000.0).collect();
    let brute_crit =
        grid.iter().copied().take_while(|&r| dcpt(&GENERAL, n, tokens, 1.0 - r) <= (1.0 + tol) * base).last().unwrap();
    let crit = critical_mixture_ratio(g.as_ref(), &GENERAL, n, tokens, tol);
    assert!((crit - brute_crit).abs() < 1e-4, "critical ratio {crit} vs brute force {brute_crit}");
    assert!(crit > 0.05 && crit < 0.95, "the test's laws should put the critical ratio inside (0, 1): {crit}");
    // Usage 1 (fixed total tokens): the feasible r with the lowest domain loss.
    let feasible = |r: f64| dcpt(&GENERAL, n, tokens, 1.0 - r) <= (1.0 + tol) * base;
    let (brute_r, brute_loss) = grid
        .iter()
        .copied()
        .filter(|&r| r > 0.0 && feasible(r))
        .map(|r| (r, dcpt(&DOMAIN, n, tokens, r)))
        .fold((f64::NAN, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
    let (r, ld, lg) = dcpt_best_ratio(g.as_ref(), &GENERAL, d.as_ref(), &DOMAIN, n, &|_| tokens, tol)
        .expect("a feasible ratio exists");
    assert!((r - brute_r).abs() < 2e-3, "best ratio {r} vs brute force {brute_r}");
    assert!((ld - brute_loss).abs() < 1e-3 * brute_loss, "domain loss {ld} vs {brute_loss}");
    assert!(lg <= (1.0 + tol) * base * (1.0 + 1e-9), "the returned ratio breaks the constraint");
    // Usage 2 (domain tokens fixed at D_d, so total tokens D = D_d / r): brute force again.
    let d_domain = 5e9;
    let tokens_of = |r: f64| d_domain / r;
    let feasible2 =
        |r: f64| dcpt(&GENERAL, n, tokens_of(r), 1.0 - r) <= (1.0 + tol) * dcpt(&GENERAL, n, tokens_of(r), 1.0);
    let (brute_r2, _) = grid
        .iter()
        .copied()
        .filter(|&r| r > 0.0 && feasible2(r))
        .map(|r| (r, dcpt(&DOMAIN, n, tokens_of(r), r)))
        .fold((f64::NAN, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
    let (r2, _, _) = dcpt_best_ratio(g.as_ref(), &GENERAL, d.as_ref(), &DOMAIN, n, &tokens_of, tol).expect("feasible");
    assert!((r2 - brute_r2).abs() < 2e-3, "fixed-domain-data ratio {r2} vs brute force {brute_r2}");
}
