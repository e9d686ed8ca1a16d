//! `sweep plan`'s time estimates come from measured rates: `sweep bench train --record` on this
//! machine, else the built-in rates measured on a GPU, else a default.

mod common;
use common::*;

fn plan_json(config: &std::path::Path, rates: &std::path::Path) -> serde_json::Value {
    let out = run(sweep().args(["plan", "--json"]).arg(config).env("SWEEP_RATES", rates));
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_recorded_rate_sets_the_estimate() {
    let dir = scratch("rates");
    let rates = dir.join("rates.jsonl");
    let config = write_config(
        &dir,
        "sweep.toml",
        "[sweep]\nname = \"r\"\n[grid]\nmodel = [{ d_model = 64, n_layers = 2, n_heads = 2 }]\ntokens = [1e5]\n\
         vocab_size = [512]\n[model]\ncontext = 64\n",
    );
    // Nothing recorded: the CPU default.
    let p = &plan_json(&config, &rates)["points"][0];
    let flops = p["flops"]["chinchilla"].as_f64().unwrap();
    let secs = p["runtime"]["estimated_seconds"].as_f64().unwrap();
    assert!((flops / secs / 2.5e10 - 1.0).abs() < 1e-9, "{flops} / {secs}");
    // Record the same shape: the estimate is its measured rate.
    let out = run(sweep()
        .args(["bench", "train", "--d-model", "64", "--layers", "2", "--heads", "2", "--ctx", "64", "--batch", "4"])
        .args(["--vocab", "512", "--steps", "3", "--warmup", "1", "--record", "--json"])
        .env("SWEEP_RATES", &rates));
    assert!(out.status.success(), "{}", text(&out));
    let bench: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let measured = bench["tokens_per_second"].as_f64().unwrap() * bench["flops_per_token"].as_f64().unwrap();
    let p = &plan_json(&config, &rates)["points"][0];
    let secs = p["runtime"]["estimated_seconds"].as_f64().unwrap();
    assert!((flops / secs / measured - 1.0).abs() < 1e-9, "{} against {measured}", flops / secs);
}

#[test]
fn a_cuda_plan_uses_the_built_in_gpu_measurements() {
    let dir = scratch("rates-cuda");
    let config = write_config(
        &dir,
        "sweep.toml",
        "[sweep]\nname = \"r\"\ndevice = \"cuda:0\"\n[grid]\nmodel = [{ d_model = 1024, n_layers = 8, n_heads = 16 }]\n\
         tokens = [1e8]\nvocab_size = [32768]\nprecision = [\"bf16\"]\n[model]\ncontext = 512\n",
    );
    let p = &plan_json(&config, &dir.join("none.jsonl"))["points"][0];
    let fpt = p["counts"]["flops_per_token_chinchilla"].as_f64().unwrap();
    let secs = p["runtime"]["estimated_seconds"].as_f64().unwrap();
    let tokens_per_second = p["flops"]["chinchilla"].as_f64().unwrap() / secs / fpt;
    // The H200 measurement of this shape in bf16 (benches/results/2026-11-25-gpu-h200-kernels.jsonl).
    assert!((tokens_per_second / 30_341.0 - 1.0).abs() < 0.02, "{tokens_per_second} tok/s");
}
