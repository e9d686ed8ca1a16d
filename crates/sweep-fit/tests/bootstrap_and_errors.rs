//! Bootstrap coverage over many simulated data sets; clear errors for bad input; laws.json
//! round trip and its required fields against laws.schema.json.

mod common;
use common::*;
use sweep_fit::{fit_all, fit_csv, read_laws_json, FitConfig, Table};

#[test]
fn bootstrap_intervals_cover_the_truth_near_nominal_rate() {
    // 120 simulated data sets of the Chinchilla law (60 points, 2% noise, Huber delta 0.05 so
    // the fit is close to least squares at this noise); 90% percentile intervals from 150
    // resamples each. Nominal 90%: the count over 120 sets must be within [96, 116]
    // (binomial 90% +- about 3 standard deviations, allowing the percentile bootstrap's
    // known small-sample undercoverage).
    let truth = [1.817, 482.0, 2085.4, 0.348, 0.366];
    let mut inputs = Vec::new();
    for c in logspace(17.0, 21.0, 6) {
        let n_opt = (c / 120.0).sqrt();
        for k in 0..10 {
            let n = n_opt * 10f64.powf(-1.0 + 2.0 * k as f64 / 9.0);
            inputs.push(vec![n, c / (6.0 * n)]);
        }
    }
    let law = sweep_fit::laws::builtin_law("chinchilla").unwrap();
    let opts = sweep_fit::fit::FitOptions { huber_delta: 0.05, ..Default::default() };
    let (sets, mut covered_alpha, mut covered_beta) = (120, 0, 0);
    for s in 0..sets {
        let t = simulate("chinchilla", &truth, &inputs, 0.02, 1000 + s);
        let data = sweep_fit::fit::Dataset::from_table(law.as_ref(), &t, &|v: &str| v.to_string()).unwrap();
        let fit = sweep_fit::fit::fit_multistart(law.as_ref(), &data, &[truth.to_vec()], &opts).unwrap();
        let boot = sweep_fit::bootstrap::bootstrap_params(
            law.as_ref(),
            &data,
            std::slice::from_ref(&fit.best.theta),
            &opts,
            150,
            s,
        );
        for (j, covered) in [(3, &mut covered_alpha), (4, &mut covered_beta)] {
            let col: Vec<f64> = boot.iter().flatten().map(|t| t[j]).collect();
            let [lo, hi] = sweep_fit::bootstrap::percentile_interval(&col, 0.90).unwrap();
            if lo <= truth[j] && truth[j] <= hi {
                *covered += 1;
            }
        }
    }
    eprintln!("90% intervals covered alpha {covered_alpha}/{sets}, beta {covered_beta}/{sets}");
    for c in [covered_alpha, covered_beta] {
        assert!((96..=116).contains(&c), "coverage {c}/{sets} is far from 90%");
    }
}

#[test]
fn bootstrap_is_reproducible_and_gives_intervals_for_params_derived_and_optimal() {
    let truth = [1.817, 482.0, 2085.4, 0.348, 0.366];
    let inputs = grid(&[&logspace(7.0, 9.5, 6), &logspace(9.0, 11.5, 6)]);
    let t = simulate("chinchilla", &truth, &inputs, 0.01, 5);
    let config = FitConfig::from_toml_str("laws = [{ name = \"chinchilla\" }]\nbootstrap = { resamples = 40, seed = 7 }\noptimal = { budgets = [1e20, 1e22] }").unwrap();
    let a = fit_all(&t, None, &config).unwrap();
    let b = fit_all(&t, None, &config).unwrap();
    assert_eq!(a, b, "same seed, same laws.json");
    let law = &a.laws[0];
    for e in law.params.values().chain(law.derived.values()).chain(law.optimal.iter().flat_map(|o| o.values.values())) {
        let [lo, hi] = e.ci.expect("every estimate has an interval");
        assert!(lo <= hi && lo.is_finite());
    }
    assert_eq!(law.optimal.len(), 2);
    let x = law.extrapolation.as_ref().expect("extrapolation check");
    assert_eq!(x.n_held_out, 6);
    assert!(x.mean_abs_rel_error < 0.05, "{x:?}");
}

#[test]
fn bad_input_gives_clear_errors() {
    let cfg = |s: &str| FitConfig::from_toml_str(s).unwrap_err().to_string();
    let e = cfg("laws = [{ name = \"chinchilla\" }, { name = \"chinchila\" }]");
    assert_eq!(e, "fit.laws[1].name: unknown law \"chinchila\" (did you mean \"chinchilla\"?); or give `formula` for a law of your own");
    let e = cfg("laws = [{ name = \"chinchilla\", huber = 1 }]");
    assert!(e.starts_with("fit.laws[0]") && e.contains("unknown field `huber`"), "{e}");
    let e = cfg("laws = [{ name = \"chinchilla\", map = { M = \"params\" } }]");
    assert!(e.starts_with("fit.laws[0].map.M: law chinchilla has no variable M"), "{e}");
    let e = cfg("laws = [{ name = \"u\", formula = \"E + A / M^alpha\", variables = [\"N\"], params = { E = { grid = [1] }, A = { grid = [1] }, alpha = { grid = [1] } } }]");
    assert!(e.starts_with("fit.laws[0].formula") && e.contains("unknown name `M`"), "{e}");
    let e = cfg("laws = [{ name = \"u\", formula = \"E + (A\", variables = [\"N\"], params = { E = { grid = [1] }, A = { grid = [1] } } }]");
    assert!(e.contains("expected `)`"), "{e}");
    let e = cfg("laws = [{ name = \"u\", formula = \"E\", variables = [\"N\"], params = { E = { bounds = [0, 1], grid = [2] } } }]");
    assert!(e.starts_with("fit.laws[0].params.E.grid"), "{e}");
    let e = cfg("laws = [{ name = \"chinchilla\" }]\nbootstrap = { level = 95 }");
    assert!(e.starts_with("fit.bootstrap.level"), "{e}");

    // Data problems are the law's error in laws.json, not a failed fit of everything.
    let config = FitConfig::from_toml_str("laws = [{ name = \"chinchilla\" }]").unwrap();
    let law_error = |t: &Table| {
        let laws = fit_all(t, None, &config).unwrap();
        assert!(laws.laws[0].fit.is_none());
        laws.laws[0].error.clone().expect("the law failed")
    };
    let few = Table::from_rows(&["N", "D", "loss"], &[vec![1e8, 1e9, 3.0], vec![2e8, 1e9, 2.9]], "t").unwrap();
    let e = law_error(&few);
    assert!(e.contains("2 points but 5 parameters"), "{e}");
    let rows: Vec<Vec<f64>> =
        (0..8).map(|i| vec![1e8 * (i + 1) as f64, 1e9, if i == 3 { -1.0 } else { 3.0 }]).collect();
    let bad = Table::from_rows(&["N", "D", "loss"], &rows, "t").unwrap();
    let e = law_error(&bad);
    assert!(e.contains("row 4: loss = -1") && e.contains("positive and finite"), "{e}");
    let mut nan = bad.clone();
    nan.columns.get_mut("loss").unwrap()[3] = f64::NAN;
    assert!(law_error(&nan).contains("row 4: loss = NaN"));
    let missing = Table::from_rows(&["N", "tokens", "loss"], &rows, "t").unwrap();
    let e = law_error(&missing);
    assert!(e.contains("no column D") && e.contains("N, loss, tokens"), "{e}");
}

#[test]
fn fit_csv_writes_whole_laws_json_or_nothing() {
    let dir = std::env::temp_dir().join(format!("sweep-fit-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("runs.csv");
    let mut text = String::from("params,tokens,val_loss\n");
    let law = sweep_fit::laws::builtin_law("chinchilla").unwrap();
    for x in grid(&[&logspace(7.0, 9.0, 5), &logspace(9.0, 11.0, 5)]) {
        text += &format!("{},{},{}\n", x[0], x[1], law.predict(&[1.8, 400.0, 2000.0, 0.34, 0.37], &x));
    }
    std::fs::write(&csv, text).unwrap();
    let out = dir.join("laws.json");
    let maps = vec![
        ("N".to_string(), "params".to_string()),
        ("D".to_string(), "tokens".to_string()),
        ("loss".to_string(), "val_loss".to_string()),
    ];
    let mut config = FitConfig::for_law("chinchilla", &maps).unwrap();
    config.bootstrap.resamples = 20;
    let written = fit_csv(&csv, &config, &out).unwrap();
    assert_eq!(read_laws_json(&out).unwrap(), written);
    check_against_schema(&std::fs::read_to_string(&out).unwrap());
    // A failing fit leaves the existing file untouched and no temporary behind.
    let before = std::fs::read_to_string(&out).unwrap();
    let bad_maps = vec![("N".to_string(), "nope".to_string())];
    let e = FitConfig::for_law("chinchilla", &bad_maps).and_then(|c| fit_csv(&csv, &c, &out)).unwrap_err().to_string();
    assert!(e.contains("no column nope"), "{e}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), before);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2, "only runs.csv and laws.json");
    let e = FitConfig::for_law("chinchila", &[]).unwrap_err().to_string();
    assert!(e.contains("did you mean \"chinchilla\""), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Checks a laws.json text against laws.schema.json: every `required` key of each object
/// schema is present, recursively (a small hand check of the schema's required fields).
fn check_against_schema(text: &str) {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/laws.schema.json")).unwrap(),
    )
    .unwrap();
    let doc: serde_json::Value = serde_json::from_str(text).unwrap();
    fn resolve<'a>(root: &'a serde_json::Value, s: &'a serde_json::Value) -> &'a serde_json::Value {
        match s.get("$ref").and_then(|r| r.as_str()) {
            Some(r) => root.pointer(r.trim_start_matches('#')).unwrap_or_else(|| panic!("schema ref {r} missing")),
            None => s,
        }
    }
    fn walk(root: &serde_json::Value, schema: &serde_json::Value, v: &serde_json::Value, path: &str) {
        let schema = resolve(root, schema);
        if v.is_null() {
            return;
        }
        if let Some(req) = schema.get("required").and_then(|r| r.as_array()) {
            for k in req {
                let k = k.as_str().unwrap();
                assert!(v.get(k).is_some(), "{path}: required field {k} missing");
            }
        }
        if let (Some(props), Some(obj)) = (schema.get("properties").and_then(|p| p.as_object()), v.as_object()) {
            for (k, val) in obj {
                let sub = props.get(k).unwrap_or_else(|| panic!("{path}.{k}: field not in the schema"));
                walk(root, sub, val, &format!("{path}.{k}"));
            }
        }
        if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
            for (i, x) in arr.iter().enumerate() {
                walk(root, items, x, &format!("{path}[{i}]"));
            }
        }
        if let (Some(ap), Some(obj)) = (schema.get("additionalProperties").filter(|a| a.is_object()), v.as_object()) {
            for (k, x) in obj {
                walk(root, ap, x, &format!("{path}.{k}"));
            }
        }
    }
    walk(&schema, &schema, &doc, "$");
}

#[test]
fn intervals_are_withheld_when_too_few_resamples_refit() {
    // Approach 2 resamples whole IsoFLOP profiles. With 3 profiles, a resample draws a single
    // budget three times with probability 3/27 = 11%, and one budget gives no frontier: more than
    // 5% of the resamples fail, so the intervals are withheld with the reason. With 6 profiles
    // that happens with probability 6/6^6 = 0.1%: intervals are given.
    let law = sweep_fit::laws::builtin_law("chinchilla").unwrap();
    let truth = [1.817, 482.0, 2085.4, 0.348, 0.366];
    let profiles = |budgets: &[f64]| {
        let mut rows = Vec::new();
        for &c in budgets {
            let n_opt = (c / 120.0).sqrt();
            for k in 0..7 {
                let n = n_opt * 10f64.powf(-0.9 + 0.3 * k as f64);
                let d = c / (6.0 * n);
                rows.push(vec![n, d, c, c, law.predict(&truth, &[n, d])]);
            }
        }
        Table::from_rows(&["N", "D", "C", "C_budget", "loss"], &rows, "profiles").unwrap()
    };
    let config = FitConfig::from_toml_str(
        "laws = [{ name = \"chinchilla_approach2\", counting = { parameters = \"non_embedding\", compute = \"6ND_non_embedding\" } }]\nbootstrap = { resamples = 400, seed = 1 }",
    )
    .unwrap();
    let three = fit_all(&profiles(&[1e18, 1e19, 1e20]), None, &config).unwrap();
    let law3 = &three.laws[0];
    let b = law3.fit.as_ref().unwrap().bootstrap.as_ref().unwrap();
    eprintln!("3 profiles: {} of {} resamples failed", b.failed, b.resamples);
    assert!(b.failed > 20 && b.failed < 80, "{b:?}");
    assert_eq!(b.succeeded + b.failed, 400);
    let why = b.intervals_withheld.as_ref().expect("intervals withheld");
    assert!(why.contains("fewer than fit.bootstrap.min_success"), "{why}");
    assert!(law3.params.values().all(|e| e.ci.is_none()), "no interval is given");
    let six = fit_all(&profiles(&[1e18, 3e18, 1e19, 3e19, 1e20, 3e20]), None, &config).unwrap();
    let b = six.laws[0].fit.as_ref().unwrap().bootstrap.as_ref().unwrap();
    assert!(b.intervals_withheld.is_none() && b.failed < 20, "{b:?}");
    assert!(six.laws[0].params["a"].ci.is_some());
    // A lower bar accepts the 3-profile bootstrap.
    let lenient = FitConfig::from_toml_str(
        "laws = [{ name = \"chinchilla_approach2\" }]\nbootstrap = { resamples = 400, seed = 1, min_success = 0.8 }",
    )
    .unwrap();
    let three = fit_all(&profiles(&[1e18, 1e19, 1e20]), None, &lenient).unwrap();
    assert!(three.laws[0].params["a"].ci.is_some());
}

#[test]
fn the_fit_record_carries_the_final_gradient_norm() {
    // At the optimum of the noise-free Chinchilla law the gradient vanishes: below 1e-6.
    let truth = [1.817, 482.0, 2085.4, 0.348, 0.366];
    let inputs = grid(&[&logspace(7.0, 9.5, 6), &logspace(9.0, 11.5, 6)]);
    let t = simulate("chinchilla", &truth, &inputs, 0.0, 5);
    let config = FitConfig::from_toml_str("laws = [{ name = \"chinchilla\" }]\nbootstrap = { resamples = 0 }").unwrap();
    let laws = fit_all(&t, None, &config).unwrap();
    let g = laws.laws[0].fit.as_ref().unwrap().grad_norm.unwrap();
    assert!(g.is_finite() && g < 1e-6, "gradient norm {g}");
}

#[test]
fn counting_conventions_pick_the_columns_and_change_the_fit() {
    // Losses from Chinchilla's law in all parameters, N_total = N + V d with V = 32768 and
    // d = 64 N^(1/3) / 8 (small models whose embeddings rival the rest, as in configs/dcpt.toml's
    // smallest). Chinchilla's default (all parameters) recovers alpha; counting non-embedding
    // parameters (Kaplan's N) does not.
    let law = sweep_fit::laws::builtin_law("chinchilla").unwrap();
    let truth = [1.69, 406.4, 410.7, 0.34, 0.28];
    let mut rows = Vec::new();
    for n in logspace(6.0, 8.5, 6) {
        let d_model = 8.0 * (n / 12.0).powf(1.0 / 3.0);
        let n_total = n + 32768.0 * d_model;
        for d in logspace(9.0, 11.0, 5) {
            rows.push(vec![n, n_total, d, 6.0 * n * d, 6.0 * n_total * d, law.predict(&truth, &[n_total, d])]);
        }
    }
    let t = Table::from_rows(&["N", "N_total", "D", "C", "C_total", "loss"], &rows, "sweep-like").unwrap();
    let fit = |counting: &str| {
        let c = FitConfig::from_toml_str(&format!(
            "laws = [{{ name = \"chinchilla\"{counting} }}]\nbootstrap = {{ resamples = 0 }}\nextrapolation = false\noptimal = {{ budgets = [1e21] }}"
        ))
        .unwrap();
        fit_all(&t, None, &c).unwrap().laws.remove(0)
    };
    let all = fit("");
    let counting = all.counting.as_ref().unwrap();
    assert_eq!((counting.parameters.as_str(), counting.compute.as_str()), ("all", "6ND_all"));
    assert_eq!(all.variables["N"], "N_total");
    assert!(!counting.assumed);
    assert_eq!(counting.flops_per_token.unwrap(), sweep_fit::counting::FlopsPerToken::SIX_N);
    assert!(rel(all.params["alpha"].estimate, 0.34) < 0.01, "{}", all.params["alpha"].estimate);
    let ne = fit(", counting = { parameters = \"non_embedding\", compute = \"6ND_non_embedding\" }");
    assert_eq!(ne.variables["N"], "N");
    let alpha_ne = ne.params["alpha"].estimate;
    eprintln!("alpha: all parameters {}, non-embedding {alpha_ne}", all.params["alpha"].estimate);
    assert!(rel(alpha_ne, 0.34) > 0.05, "the wrong count should move alpha: {alpha_ne}");
    // Mixed conventions: N non-embedding, C over all parameters. C/D is fitted as k N^p over
    // the rows, and the compute-optimal question holds it.
    let mixed = fit(", counting = { parameters = \"non_embedding\", compute = \"6ND_all\" }");
    let f = mixed.counting.as_ref().unwrap().flops_per_token.unwrap();
    assert!(f.fitted && f.p < 1.0, "{f:?}");
    assert_eq!(mixed.optimal.len(), 1);
}

#[test]
fn laws_json_with_a_nan_estimate_reads_back() {
    // A derived quantity can be NaN (G of a fit with a negative exponent); it is written as null
    // and must read back as NaN, not stop the report from reading laws.json.
    let truth = [1.817, 482.0, 2085.4, 0.348, 0.366];
    let inputs = grid(&[&logspace(7.0, 9.0, 4), &logspace(9.0, 11.0, 4)]);
    let t = simulate("chinchilla", &truth, &inputs, 0.0, 1);
    let config = FitConfig::from_toml_str("laws = [{ name = \"chinchilla\" }]\nbootstrap = { resamples = 0 }").unwrap();
    let mut laws = fit_all(&t, None, &config).unwrap();
    laws.laws[0].derived.get_mut("G").unwrap().estimate = f64::NAN;
    let dir = std::env::temp_dir().join(format!("sweep-fit-nan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("laws.json");
    sweep_fit::write_laws_json(&path, &laws).unwrap();
    assert!(std::fs::read_to_string(&path).unwrap().contains("\"estimate\": null"));
    let back = read_laws_json(&path).unwrap();
    assert!(back.laws[0].derived["G"].estimate.is_nan());
    std::fs::remove_dir_all(&dir).unwrap();
}
