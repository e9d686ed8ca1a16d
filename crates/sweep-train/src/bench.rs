//! `sweep bench train`: training steps on random tokens, for speed comparisons with other
//! implementations (benches/ runs it beside a PyTorch model of the same architecture).

use crate::model::{ExecPath, ModelConfig, Transformer};
use crate::optim::{clip_grads, AdamW, AdamWConfig};
use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use std::time::Instant;
use sweep_plan::shape::ModelShape;

/// What to benchmark.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Model shape.
    pub config: ModelConfig,
    /// Sequences per step.
    pub batch: usize,
    /// Timed steps (after `warmup` untimed ones).
    pub steps: usize,
    /// Untimed steps.
    pub warmup: usize,
    /// Device name.
    pub device: String,
    /// Precision name (fake quantisation of weights and activations when simulated).
    pub precision: String,
    /// Targets quantised with the precision (empty: weights and activations).
    pub targets: Vec<sweep_plan::config::QuantTarget>,
    /// Delayed scaling's amax history (per-tensor targets); None: just-in-time.
    pub amax_history: Option<u32>,
}

/// The result, printed as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// Training tokens per second.
    pub tokens_per_second: f64,
    /// Median step time in milliseconds.
    pub step_ms: f64,
    /// Mean forward time in milliseconds.
    pub forward_ms: f64,
    /// Mean backward time in milliseconds.
    pub backward_ms: f64,
    /// Mean optimiser time (clip + AdamW) in milliseconds.
    pub optimizer_ms: f64,
    /// Achieved FLOP/s (Chinchilla count) over the measured GEMM peak.
    pub mfu: f64,
    /// The GEMM peak used for MFU (FLOP/s).
    pub gemm_peak_flops: f64,
    /// Peak resident memory in MB.
    pub peak_rss_mb: f64,
    /// Peak device memory in use at once on a GPU, in MiB (CUDA's memory pool, where candle
    /// allocates: weights, optimiser state, activations, gradients; as PyTorch's
    /// max_memory_allocated); None on the CPU.
    pub peak_gpu_mb: Option<f64>,
    /// All parameters (embedding included; the MFU of the GPU benchmark uses 6 x this).
    pub total_params: u64,
    /// Non-embedding parameters.
    pub non_embedding_params: u64,
    /// Training FLOPs per token (Chinchilla count).
    pub flops_per_token: f64,
    /// Threads used by candle.
    pub threads: usize,
    /// Device.
    pub device: String,
    /// Precision.
    pub precision: String,
    /// Final training loss (sanity: it should fall below ln V).
    pub final_loss: f64,
}

/// Peak resident set size of this process (VmHWM), in MB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Runs the benchmark.
pub fn run(o: &BenchOptions) -> anyhow::Result<BenchResult> {
    let device: Device = crate::trainer::open_device(&o.device)?;
    let c = &o.config;
    let hooks = crate::precision::hooks_with(
        &o.precision,
        &o.targets,
        o.amax_history,
        sweep_plan::config::Rounding::Nearest,
        0,
    )?;
    let model = Transformer::new(c.clone(), 0, &device, ExecPath::choose(&device, DType::F32, &hooks))?;
    let params = model.params();
    let mut opt = AdamW::new(AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 }, &params)?;
    let shape = ModelShape {
        d_model: c.d_model as u64,
        n_layers: c.n_layers as u64,
        n_heads: c.n_heads as u64,
        d_ff: c.d_ff as u64,
        context: c.context as u64,
        vocab_size: c.vocab_size as u64,
        ffn: c.ffn,
        tied_embeddings: c.tied_embeddings,
    };
    let counts = shape.counts();
    let n = o.batch * c.context;
    // Random tokens from a fixed seed; targets are inputs shifted, as in real batches.
    let tokens: Vec<u32> = (0..(n + 1) as u64).map(|i| (crate::rng::mix64(i) % c.vocab_size as u64) as u32).collect();
    let x = Tensor::from_slice(&tokens[..n], (o.batch, c.context), &device)?;
    let y = Tensor::from_slice(&tokens[1..], (o.batch, c.context), &device)?;
    device.synchronize()?;
    crate::fused::cuda_block::reset_peak_memory(&device);
    let (mut fwd, mut bwd, mut optim) = (0.0, 0.0, 0.0);
    let mut times = Vec::with_capacity(o.steps);
    let mut final_loss = f64::NAN;
    for s in 0..o.warmup + o.steps {
        let t0 = Instant::now();
        let loss = model.loss(&x, &y, &hooks)?;
        final_loss = loss.to_scalar::<f32>()? as f64;
        let t1 = Instant::now();
        let mut grads = model.backward(&loss)?;
        device.synchronize()?;
        let t2 = Instant::now();
        clip_grads(&mut grads, 1.0)?;
        opt.step(&params, &grads, 1e-3)?;
        device.synchronize()?;
        let t3 = Instant::now();
        if s >= o.warmup {
            fwd += (t1 - t0).as_secs_f64();
            bwd += (t2 - t1).as_secs_f64();
            optim += (t3 - t2).as_secs_f64();
            times.push((t3 - t0).as_secs_f64());
        }
    }
    // Before the product-rate measurement below allocates its own matrices.
    let peak_gpu_mb = crate::fused::cuda_block::peak_memory_bytes(&device).map(|b| b as f64 / (1u64 << 20) as f64);
    let total: f64 = times.iter().sum();
    times.sort_by(|a, b| a.partial_cmp(b).expect("finite times"));
    let median = times[times.len() / 2];
    let tps = (n * o.steps) as f64 / total;
    let peak = crate::trainer::gemm_peak(&device);
    let k = o.steps as f64;
    Ok(BenchResult {
        tokens_per_second: tps,
        step_ms: median * 1e3,
        forward_ms: fwd / k * 1e3,
        backward_ms: bwd / k * 1e3,
        optimizer_ms: optim / k * 1e3,
        mfu: tps * counts.flops_per_token_chinchilla / peak,
        gemm_peak_flops: peak,
        peak_rss_mb: peak_rss_mb(),
        peak_gpu_mb,
        total_params: counts.total_params,
        non_embedding_params: counts.non_embedding_params,
        flops_per_token: counts.flops_per_token_chinchilla,
        threads: candle_core::utils::get_num_threads(),
        device: o.device.clone(),
        precision: o.precision.clone(),
        final_loss,
    })
}
