//! `sweep bench`: benchmarks.

use crate::fmt;
use anyhow::bail;
use clap::{Args, Subcommand};

/// `sweep bench`'s subcommands.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Training steps of one model on random tokens: tokens/s, step time, MFU, peak memory.
    Train(BenchTrainArgs),
}

/// Arguments of `sweep bench train`.
#[derive(Args)]
pub struct BenchTrainArgs {
    /// Residual width.
    #[arg(long, default_value_t = 256)]
    pub d_model: usize,
    /// Blocks.
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Feed-forward width (default 4 d_model for GELU, 8/3 d_model rounded to 32 for SwiGLU).
    #[arg(long)]
    pub d_ff: Option<usize>,
    /// Feed-forward kind: gelu (GPT-2 style) or swiglu.
    #[arg(long, default_value = "swiglu")]
    pub ffn: String,
    /// Context length.
    #[arg(long, default_value_t = 128)]
    pub ctx: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Vocabulary size.
    #[arg(long, default_value_t = 4096)]
    pub vocab: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// CPU threads (sets RAYON_NUM_THREADS).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Device: cpu, cuda:N, metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Precision (fake quantisation of weights and activations for simulated formats).
    #[arg(long, default_value = "fp32")]
    pub precision: String,
    /// Targets quantised with the precision, comma-separated (weights, activations, gradients,
    /// kv, grad_output, attention, logits); default weights,activations.
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Delayed scaling over this many passes' amax (per-tensor targets).
    #[arg(long)]
    pub amax_history: Option<u32>,
    /// Untied output projection.
    #[arg(long)]
    pub untied: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Record the measured rate for `sweep plan`'s time estimates on this machine ($SWEEP_RATES,
    /// else ~/.config/sweep/rates.jsonl); record a small and a large shape per precision.
    #[arg(long)]
    pub record: bool,
}

/// Runs a `sweep bench` subcommand.
pub fn run(command: BenchCommand) -> anyhow::Result<u8> {
    match command {
        BenchCommand::Train(a) => train(a),
    }
}

/// Runs `sweep bench train`.
fn train(a: BenchTrainArgs) -> anyhow::Result<u8> {
    use sweep_plan::shape::Ffn;
    let ffn = match a.ffn.as_str() {
        "swiglu" => Ffn::Swiglu,
        "gelu" => Ffn::Gelu,
        other => bail!("--ffn {other:?}: use swiglu or gelu"),
    };
    if a.heads == 0 || !a.d_model.is_multiple_of(a.heads) || !(a.d_model / a.heads).is_multiple_of(2) {
        bail!("--d-model {} must be a multiple of --heads {} with an even head size", a.d_model, a.heads);
    }
    if a.steps == 0 || a.batch == 0 || a.ctx < 2 || a.vocab < 2 || a.layers == 0 {
        bail!("--steps, --batch, --layers must be positive, --ctx and --vocab at least 2");
    }
    let d_ff = a.d_ff.unwrap_or(match ffn {
        Ffn::Gelu => 4 * a.d_model,
        Ffn::Swiglu => (8 * a.d_model).div_ceil(3).div_ceil(32) * 32,
    });
    let config = sweep_train::model::ModelConfig {
        d_model: a.d_model,
        n_layers: a.layers,
        n_heads: a.heads,
        d_ff,
        context: a.ctx,
        vocab_size: a.vocab,
        ffn,
        tied_embeddings: !a.untied,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
    };
    let shape = format!("d_model {} layers {} ctx {} batch {} vocab {}", a.d_model, a.layers, a.ctx, a.batch, a.vocab);
    let opts = sweep_train::bench::BenchOptions {
        config,
        batch: a.batch,
        steps: a.steps,
        warmup: a.warmup,
        device: a.device.clone(),
        precision: a.precision.clone(),
        targets: a
            .targets
            .iter()
            .map(|t| {
                serde_json::from_value(serde_json::Value::String(t.clone())).map_err(|_| {
                    anyhow::anyhow!(
                        "--targets {t:?}: use weights, activations, gradients, kv, grad_output, attention or logits"
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?,
        amax_history: a.amax_history,
    };
    let r = sweep_train::bench::run(&opts)?;
    if a.record {
        let rate = sweep_plan::rates::Rate {
            device: sweep_plan::rates::device_kind(&a.device).to_string(),
            precision: a.precision.clone(),
            flops_per_token: r.flops_per_token,
            flops_per_second: r.tokens_per_second * r.flops_per_token,
            source: format!(
                "sweep bench train on {} ({shape}), unix {:.0}",
                sweep_store::fsio::hostname(),
                sweep_store::fsio::unix_now()
            ),
        };
        let file = sweep_plan::rates::record(&rate)?;
        eprintln!(
            "recorded {} FLOP/s for {} {} in {}",
            fmt::sci(rate.flops_per_second),
            rate.device,
            rate.precision,
            file.display()
        );
    }
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} tok/s, step {:.1} ms (forward {:.1}, backward {:.1}, optimiser {:.1}), MFU {:.1}% of a {} GEMM peak, peak RSS {:.0} MB, {} threads",
            fmt::si(r.tokens_per_second), r.step_ms, r.forward_ms, r.backward_ms, r.optimizer_ms, 100.0 * r.mfu, fmt::sci(r.gemm_peak_flops), r.peak_rss_mb, r.threads
        );
    }
    Ok(0)
}
