//! The precision laws from the command line: `sweep run` of a simulate sweep whose loss follows
//! Sun et al.'s floating-point quantisation law (a grid varying block size as well as the
//! exponent/mantissa split) or Kumar et al.'s effective-parameter law (a grid of formats per
//! target), then the fit of `[fit]` recovers the known parameters, and the optimal-precision
//! answers are in laws.json.

mod common;
use common::*;

fn laws(sweep_dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(sweep_dir.join("laws.json")).expect("laws.json written")).unwrap()
}

fn param(laws: &serde_json::Value, law: &str, name: &str) -> f64 {
    let l =
        laws["laws"].as_array().unwrap().iter().find(|l| l["name"] == law).unwrap_or_else(|| panic!("{law} fitted"));
    l["params"][name]["estimate"].as_f64().unwrap_or_else(|| panic!("{law}.{name}: {}", l["params"]))
}

fn check(laws: &serde_json::Value, law: &str, truth: &[(&str, f64, f64)]) {
    for &(name, want, tol) in truth {
        let got = param(laws, law, name);
        assert!(((got - want) / want).abs() <= tol, "{law}.{name} = {got}, truth {want} (tolerance {tol} relative)");
    }
}

const FP_QUANT: &str = r#"
[sweep]
name = "fpq"
trainer = "simulate"
seed = 3
[grid]
model = [1e5, 3e5, 1e6, 3e6, 1e7]
tokens_per_param = [20, 100, 500]
# Exponent/mantissa splits and block sizes from 16 to per-tensor, MX and NVFP4 among them.
precision = ["e4m3-b32", "e4m3-b256", "e3m2-b16", "e3m2-b128", "e2m3-b32", "e2m3-b1024", "e2m1-b64",
             "mxfp4", "nvfp4", "e5m2-b64", "e4m3-channel", "e3m2"]
[model]
context = 1024
[train]
batch_size = 512
log_every = 100000
checkpoint_every = 100000
[simulate]
noise = 0.001
general = { E = 1.9061, A = 69.2343, alpha = 0.2368, B = 2000.0, beta = 0.5162 }
fp_quant = { gamma = 300.0, delta = 3.1926, nu = 2.9543 }
[fit]
bootstrap = { resamples = 0 }
[[fit.laws]]
name = "fp_quant"
[fit.optimal]
precision = [{ bits = 8, N = 1e9, block_size = 32 }, { bits = 4, N = 1e9, block_size = 16 }]
"#;

#[test]
fn fp_quant_law_is_recovered_from_a_simulated_block_size_grid() {
    let dir = scratch("precision-fpq");
    let cfg = write_config(&dir, "fpq.toml", FP_QUANT);
    let out = run(sweep().arg("run").arg(&cfg).arg("--out").arg(&dir));
    assert!(out.status.success(), "{}", text(&out));
    let sweep_dir = dir.join("fpq");
    assert_eq!(results(&sweep_dir).len(), 5 * 3 * 12);
    let l = laws(&sweep_dir);
    // 0.1% log-normal noise on 180 points: the exponents of the quantisation term within 5%,
    // its scale within 25% (it trades off against them), the Chinchilla part within 5-20%.
    check(
        &l,
        "fp_quant",
        &[
            ("delta", 3.1926, 0.05),
            ("nu", 2.9543, 0.05),
            ("gamma", 300.0, 0.25),
            ("alpha", 0.2368, 0.05),
            ("beta", 0.5162, 0.05),
            ("eps", 1.9061, 0.05),
            ("n", 69.2343, 0.2),
            ("d", 2000.0, 0.2),
        ],
    );
    let text = std::fs::read_to_string(sweep_dir.join("laws.json")).unwrap();
    assert!(text.contains("precision_split") && text.contains("D_crit"), "the optimal split is answered");
}

const KUMAR: &str = r#"
[sweep]
name = "kumar"
trainer = "simulate"
seed = 4
[grid]
model = [1e5, 1e6, 1e7]
tokens_per_param = [10, 40, 160]
# Formats per target (the rest in fp32), so the weight, activation and K/V bits vary apart.
precision = [
  "fp32",
  { weights = "int3" }, { weights = "int5" }, { weights = "e2m1" },
  { activations = "int3" }, { activations = "int5" }, { activations = "e2m1" },
  { kv = "int2" }, { kv = "int3" }, { kv = "int5" },
  { weights = "int4", activations = "int4", kv = "int4" },
  { weights = "e4m3", activations = "e4m3", kv = "int3" },
]
[model]
context = 1024
[train]
batch_size = 256
log_every = 100000
checkpoint_every = 100000
[simulate]
noise = 0.001
general = { E = 1.69, A = 406.4, alpha = 0.34, B = 410.7, beta = 0.28 }
precision = { gamma_w = 2.5, gamma_a = 2.2, gamma_kv = 1.5 }
[fit]
bootstrap = { resamples = 0 }
[[fit.laws]]
name = "kumar_precision"
[fit.optimal]
training_precision = [{ C = 1e21 }, { C = 1e21, N = 1e9 }]
"#;

#[test]
fn kumar_precision_law_is_recovered_from_a_simulated_per_target_grid() {
    let dir = scratch("precision-kumar");
    let cfg = write_config(&dir, "kumar.toml", KUMAR);
    let out = run(sweep().arg("run").arg(&cfg).arg("--out").arg(&dir));
    assert!(out.status.success(), "{}", text(&out));
    let sweep_dir = dir.join("kumar");
    assert_eq!(results(&sweep_dir).len(), 3 * 3 * 12);
    let l = laws(&sweep_dir);
    check(
        &l,
        "kumar_precision",
        &[
            ("gamma_w", 2.5, 0.05),
            ("gamma_a", 2.2, 0.05),
            ("gamma_kv", 1.5, 0.05),
            ("alpha", 0.34, 0.05),
            ("beta", 0.28, 0.05),
            ("E", 1.69, 0.05),
        ],
    );
    // The optimal training precision: the fitted law's answer equals the true law's (by the
    // closed form, checked against brute force in sweep-fit), within what the fit leaves.
    let truth = [1.69, 406.4, 0.34, 410.7, 0.28, 2.5, 2.2, 1.5];
    let (p_true, ..) = sweep_fit::precision_law::optimal_precision(&truth, 1e21);
    let answers = l["laws"].as_array().unwrap().iter().find(|x| x["name"] == "kumar_precision").unwrap()["optimal"]
        .as_array()
        .unwrap()
        .clone();
    let joint = answers.iter().find(|a| a["kind"] == "training_precision").expect("training_precision answered");
    let p_fit = joint["values"]["P_opt"]["estimate"].as_f64().unwrap();
    assert!((p_fit - p_true).abs() <= 0.05 * p_true, "P_opt {p_fit}, truth {p_true}");
    assert!(answers.iter().any(|a| a["kind"] == "training_precision_fixed_N"));
}
