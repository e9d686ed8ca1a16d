//! The candle trainer: one point of a sweep becomes a real training run. A plain loop with the
//! schedule, clipping, evaluation and checkpointing visible in it.

use crate::divergence::DivergenceCheck;
use crate::model::{ExecPath, ModelConfig, Transformer};
use crate::optim::{clip_grads, AdamW, AdamWConfig};
use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use sweep_data::{DataConfig, PreparedData, SourceEpochs, SourceKind, SourceRows, Unigram};
use sweep_plan::{Point, StageData};
use sweep_store::{Control, FinalMetrics, MetricsRecord, Outcome, PerSource, PointDir, Trainer};

/// The candle backend.
#[derive(Debug, Clone, Default)]
pub struct CandleTrainer {
    /// Device overriding the point's (`cpu`, `cuda:N`, `metal`).
    pub device: Option<String>,
}

/// Opens a device by name.
pub fn open_device(name: &str) -> anyhow::Result<Device> {
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    if let Some(n) = name.strip_prefix("cuda:") {
        let n: usize = n.parse().with_context(|| format!("device {name:?}: expected cuda:N"))?;
        if !candle_core::utils::cuda_is_available() {
            bail!("device {name:?} needs a build with `--features cuda` (this binary is CPU-only)");
        }
        return Ok(Device::new_cuda(n)?);
    }
    if name == "metal" {
        if !candle_core::utils::metal_is_available() {
            bail!("device \"metal\" needs a macOS build with `--features metal`");
        }
        return Ok(Device::new_metal(0)?);
    }
    bail!("unknown device {name:?}; use cpu, cuda:N or metal")
}

/// The point's `[data]` section as sweep-data's config.
pub fn data_config(point: &Point) -> anyhow::Result<DataConfig> {
    Ok(DataConfig::from_json(&point.data)?)
}

/// Where a model stands in its training data: the stream it reads (the step it began at, and
/// the rows of each source read before it) and the rows of each source read in all.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct DataPosition {
    /// The step at which the current stream began (0, or where a stage switched mixtures).
    stream_start: u64,
    /// Rows of each source read before the stream began.
    before: SourceRows,
    /// Rows of each source read in all.
    read: SourceRows,
}

/// Checkpoint bookkeeping beside the tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CkptState {
    step: u64,
    adam_t: u64,
    divergence: DivergenceCheck,
    tokens_seen: u64,
    /// Stochastic-rounding counters of the fake quantisers, in `QuantTarget::ALL`'s order
    /// (checkpoints written before the last three targets existed hold the first four).
    #[serde(default)]
    quant_counters: Vec<u64>,
    /// Delayed scaling's amax histories per target and site (absent without delayed scaling).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    amax_histories: Vec<Vec<Vec<f32>>>,
    /// The data position (absent in checkpoints written before staged points: one stream from
    /// step 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<DataPosition>,
    /// Training loss of the last step (for a result published after resuming at the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    train_loss: Option<f64>,
    /// SHA-256 of state.safetensors.
    checksum: String,
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path)?;
    Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes the checkpoint of `state.step` (its checksum filled in), keeping the steps in `keep`.
fn save_checkpoint(
    dir: &PointDir,
    keep: &[u64],
    model: &Transformer,
    opt: &AdamW,
    mut state: CkptState,
) -> anyhow::Result<()> {
    let mut tensors: BTreeMap<String, Tensor> = model.tensors();
    for (k, m) in &opt.m {
        tensors.insert(format!("adamw.m.{k}"), m.clone());
    }
    for (k, v) in &opt.v {
        tensors.insert(format!("adamw.v.{k}"), v.clone());
    }
    dir.write_checkpoint_keeping(state.step, keep, |tmp| {
        let st = tmp.join("state.safetensors");
        candle_core::safetensors::save(&tensors.into_iter().collect(), &st).map_err(std::io::Error::other)?;
        state.checksum = sha256_file(&st).map_err(std::io::Error::other)?;
        std::fs::write(tmp.join("state.json"), serde_json::to_vec_pretty(&state).expect("state serialises"))
    })?;
    Ok(())
}

/// Reads and verifies the checkpoint of `step` at `path`.
fn read_checkpoint(step: u64, path: &Path, device: &Device) -> anyhow::Result<(CkptState, BTreeMap<String, Tensor>)> {
    let state: CkptState = serde_json::from_slice(&std::fs::read(path.join("state.json"))?)?;
    let st = path.join("state.safetensors");
    if state.step != step || sha256_file(&st)? != state.checksum {
        bail!("checksum mismatch");
    }
    let tensors = candle_core::safetensors::load(&st, device)?;
    Ok((state, tensors.into_iter().collect()))
}

/// Loads the newest checkpoint that verifies, falling back to older ones.
fn load_checkpoint(dir: &PointDir, device: &Device) -> Option<(CkptState, BTreeMap<String, Tensor>)> {
    for (step, path) in dir.checkpoints() {
        match read_checkpoint(step, &path, device) {
            Ok(x) => return Some(x),
            Err(e) => tracing::warn!(point = %dir.id, step, "checkpoint unusable ({e}); trying the previous one"),
        }
    }
    None
}

/// A staged point's start: its parent's checkpoint at the branch step.
fn load_parent_checkpoint(
    dir: &PointDir,
    point: &Point,
    device: &Device,
) -> anyhow::Result<Option<(CkptState, BTreeMap<String, Tensor>)>> {
    let Some(b) = point.parent() else { return Ok(None) };
    let parent = dir.sibling(&b.id);
    let path = parent.checkpoint_at(b.step).with_context(|| {
        format!(
            "the parent {}'s checkpoint at step {} does not exist (the worker should have waited for it)",
            b.id, b.step
        )
    })?;
    let (state, tensors) = read_checkpoint(b.step, &path, device)
        .with_context(|| format!("the parent {}'s checkpoint at step {} is unusable", b.id, b.step))?;
    if state.tokens_seen != b.tokens {
        bail!(
            "the parent {}'s checkpoint at step {} has seen {} tokens, but the plan says {}; the parent was trained with other settings",
            b.id,
            b.step,
            state.tokens_seen,
            b.tokens
        );
    }
    Ok(Some((state, tensors)))
}

fn batch_tensors(
    inputs: &[u32],
    targets: &[u32],
    rows: usize,
    context: usize,
    device: &Device,
) -> anyhow::Result<(Tensor, Tensor)> {
    Ok((Tensor::from_slice(inputs, (rows, context), device)?, Tensor::from_slice(targets, (rows, context), device)?))
}

/// One source's validation metrics.
#[derive(Debug, Clone, Copy)]
struct Evaluation {
    /// Cross-entropy, nats per token.
    loss: f64,
    /// Bits per byte of text.
    bpb: f64,
    /// The unigram model's cross-entropy on the same tokens, nats per token.
    unigram: f64,
}

impl Evaluation {
    /// Unigram-normalised loss (Tao et al. 2024): cross-entropy minus the unigram model's.
    fn loss_u(&self) -> f64 {
        self.loss - self.unigram
    }
}

/// Validation loss (nats/token), bits per byte and the unigram model's loss per source.
#[allow(clippy::too_many_arguments)]
fn evaluate(
    model: &Transformer,
    data: &PreparedData,
    unigram: &Unigram,
    batch_size: usize,
    context: usize,
    batches: usize,
    hooks: &crate::precision::PrecisionHooks,
    device: &Device,
) -> anyhow::Result<BTreeMap<&'static str, Evaluation>> {
    // Evaluation passes use delayed scaling's histories without recording into them.
    hooks.set_training(false);
    let ev = (|| -> anyhow::Result<BTreeMap<&'static str, Evaluation>> {
        let mut out = BTreeMap::new();
        for kind in [SourceKind::General, SourceKind::Domain] {
            if data.source(kind).is_none() {
                continue;
            }
            let val = data.validation(kind, batch_size, context)?;
            let mut total = 0.0;
            let mut unigram_total = 0.0;
            let mut n = 0usize;
            for b in val.iter().take(batches) {
                let rows = b.rows();
                let (x, y) = batch_tensors(&b.inputs, &b.targets, rows, context, device)?;
                let loss = model.loss(&x, &y, hooks)?.to_scalar::<f32>()? as f64;
                total += loss * rows as f64;
                unigram_total += unigram.cross_entropy(&b.targets) * rows as f64;
                n += rows;
            }
            if n == 0 {
                bail!("the {kind} validation set is empty: raise data.validation_fraction or use more text");
            }
            let loss = total / n as f64;
            let bpt = data.bytes_per_token(kind).unwrap_or(f64::NAN);
            out.insert(
                kind.name(),
                Evaluation { loss, bpb: loss / std::f64::consts::LN_2 / bpt, unigram: unigram_total / n as f64 },
            );
        }
        Ok(out)
    })();
    hooks.set_training(true);
    ev
}

/// The measured peak of this device's f32 matrix multiply (FLOP/s), the denominator of MFU
/// (candle exposes no nominal peak). Measured once per process.
pub fn gemm_peak(device: &Device) -> f64 {
    static PEAK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *PEAK.get_or_init(|| {
        // A product large enough to fill the device: 512 on the CPU, 4096 on a GPU (where a
        // 512 product is launch-bound); timed with one synchronisation per batch of products.
        let (n, batch) = if device.is_cpu() { (512, 1) } else { (4096, 10) };
        let run = || -> candle_core::Result<f64> {
            let a = Tensor::ones((n, n), candle_core::DType::F32, device)?;
            a.matmul(&a)?.sum_all()?.to_scalar::<f32>()?;
            let t = Instant::now();
            let mut reps = 0;
            while t.elapsed().as_secs_f64() < 0.3 {
                let mut c = a.matmul(&a)?;
                for _ in 1..batch {
                    c = a.matmul(&a)?;
                }
                c.sum_all()?.to_scalar::<f32>()?;
                reps += batch;
            }
            Ok(2.0 * (n * n * n) as f64 * reps as f64 / t.elapsed().as_secs_f64())
        };
        run().unwrap_or(f64::NAN)
    })
}

impl Trainer for CandleTrainer {
    fn name(&self) -> &'static str {
        "candle"
    }

    fn train(&self, point: &Point, dir: &PointDir, control: &Control) -> anyhow::Result<Outcome> {
        let device = open_device(self.device.as_deref().unwrap_or(&point.runtime.device))?;
        let t = &point.train;
        let cfg = ModelConfig::from_shape(&point.model);
        let (batch, context) = (t.batch_size as usize, cfg.context);
        // Data: prepared once per sweep and shared through the cache.
        let sweep_dir = dir.path.parent().and_then(|p| p.parent()).context("point directory outside a sweep")?;
        let prep_start = Instant::now();
        let data =
            sweep_data::prepare(&data_config(point)?, cfg.vocab_size, &sweep_dir.join("cache").join("data"), false)?;
        tracing::debug!(point = %dir.id, seconds = prep_start.elapsed().as_secs_f64(), "data ready");
        let rows_per_step = batch * t.grad_accum as usize;
        let hooks = crate::precision::hooks(point)?;
        // Steps count from the model's start (a staged point's parent's included); the schedule
        // runs over this point's own steps.
        let (first, last, keep) = (point.start_step(), point.end_step(), point.branch_steps());
        // Model and optimiser: from the newest valid checkpoint, else from the parent's
        // checkpoint at the branch, else fresh.
        let adam = AdamWConfig { beta1: t.beta1, beta2: t.beta2, eps: t.eps, weight_decay: t.weight_decay };
        let path = ExecPath::choose(&device, DType::F32, &hooks);
        let start = match load_checkpoint(dir, &device) {
            Some(own) => Some((own, false)),
            None => load_parent_checkpoint(dir, point, &device)?.map(|parent| (parent, true)),
        };
        let (model, mut opt, mut step, mut div, mut tokens_seen, stream, mut last_train_loss) = match start {
            Some(((state, mut tensors), from_parent)) => {
                let model =
                    Transformer::from_tensors(cfg.clone(), &tensors, path).context("the checkpoint's model weights")?;
                let mut opt = AdamW::new(adam, &model.params())?;
                for name in model.params().keys() {
                    opt.m.insert(
                        name.clone(),
                        tensors
                            .remove(&format!("adamw.m.{name}"))
                            .with_context(|| format!("checkpoint lacks adamw.m.{name}"))?,
                    );
                    opt.v.insert(
                        name.clone(),
                        tensors
                            .remove(&format!("adamw.v.{name}"))
                            .with_context(|| format!("checkpoint lacks adamw.v.{name}"))?,
                    );
                }
                opt.t = state.adam_t;
                hooks.set_counters(&state.quant_counters);
                hooks.set_amax_histories(&state.amax_histories);
                dir.truncate_metrics(state.step)?;
                let position = state.data.unwrap_or_default();
                let (stream, div, train_loss) = match point.parent().filter(|_| from_parent) {
                    None => {
                        tracing::info!(point = %dir.id, step = state.step, "resumed from checkpoint");
                        ((position.stream_start, position.before), state.divergence, state.train_loss)
                    }
                    Some(b) => {
                        tracing::info!(point = %dir.id, parent = %b.id, step = b.step, "started from the parent's checkpoint");
                        match b.data {
                            // The parent's stream goes on, and so does its divergence watch.
                            StageData::Continue => ((position.stream_start, position.before), state.divergence, None),
                            StageData::Switch => {
                                let read = state.data.map(|d| d.read).with_context(|| {
                                    format!("the parent {}'s checkpoint does not record its data position (an older version wrote it); retrain the parent", b.id)
                                })?;
                                ((b.step, read), DivergenceCheck::new(t.diverge_factor), None)
                            }
                        }
                    }
                };
                (model, opt, state.step, div, state.tokens_seen, stream, train_loss.unwrap_or(f64::NAN))
            }
            None => {
                dir.truncate_metrics(0)?;
                let model = Transformer::new(cfg.clone(), point.seed, &device, path)?;
                let opt = AdamW::new(adam, &model.params())?;
                (model, opt, 0, DivergenceCheck::new(t.diverge_factor), 0, (0, SourceRows::default()), f64::NAN)
            }
        };
        // The data stream: begun at `stream_start`, after `before` rows of each source.
        let (stream_start, before) = stream;
        let mut sampler = data.sampler(point.mixture_ratio, rows_per_step, context, point.seed)?.after_rows(before);
        if let Some(unique) = point.unique_tokens {
            // Data-constrained point: repeating its distinct tokens is the design, not a warning.
            sampler.limit_unique_tokens(unique)?;
        } else {
            for w in sampler.repetition_warnings(last - stream_start) {
                tracing::warn!(point = %dir.id, "{w}");
            }
        }
        // The unigram model of exactly the tokens this point trains on, for the unigram-normalised
        // loss (comparable across vocabularies).
        let shard = |kind| data.source(kind).map(|s: &sweep_data::PreparedSource| &s.train);
        let unigram =
            Unigram::of_sampler(&sampler, shard(SourceKind::General), shard(SourceKind::Domain), cfg.vocab_size);
        let checkpoint = |step: u64, adam_t: u64, div: &DivergenceCheck, tokens_seen: u64, train_loss: f64| CkptState {
            step,
            adam_t,
            divergence: div.clone(),
            tokens_seen,
            quant_counters: hooks.counters(),
            amax_histories: hooks.amax_histories(),
            data: Some(DataPosition { stream_start, before, read: sampler.rows_read(step - stream_start) }),
            train_loss: Some(train_loss),
            checksum: String::new(),
        };
        let tokens_per_step = (rows_per_step * context) as u64;
        let flops_per_token = point.counts.flops_per_token_chinchilla;
        let peak = gemm_peak(&device);
        let mut window_start = Instant::now();
        let mut window_tokens = 0u64;
        while step < last {
            if control.lease_lost() {
                return Ok(Outcome::LeaseLost);
            }
            if control.stop_requested() {
                // A checkpoint of this step may exist already (written as the step ended); it
                // holds the same state, and children may be reading it: leave it in place.
                if dir.checkpoint_at(step).is_none() {
                    let state = checkpoint(step, opt.t, &div, tokens_seen, last_train_loss);
                    save_checkpoint(dir, keep, &model, &opt, state)?;
                }
                return Ok(Outcome::Stopped);
            }
            let lr = t.lr_at(step - first);
            let b = sampler.batch(step - stream_start);
            let mut grads: Option<BTreeMap<String, Tensor>> = None;
            let mut loss_sum = 0.0;
            for micro in 0..t.grad_accum as usize {
                let lo = micro * batch * context;
                let hi = lo + batch * context;
                let (x, y) = batch_tensors(&b.inputs[lo..hi], &b.targets[lo..hi], batch, context, &device)?;
                let loss = model.loss(&x, &y, &hooks)?;
                loss_sum += loss.to_scalar::<f32>()? as f64;
                let scaled = if t.grad_accum > 1 { loss.affine(1.0 / t.grad_accum as f64, 0.0)? } else { loss };
                let g = model.backward(&scaled)?;
                grads = Some(match grads {
                    None => g,
                    Some(mut acc) => {
                        for (k, v) in g {
                            let sum = (&acc[&k] + v)?;
                            acc.insert(k, sum);
                        }
                        acc
                    }
                });
            }
            let mut grads = grads.expect("grad_accum >= 1");
            let train_loss = loss_sum / t.grad_accum as f64;
            step += 1;
            if let Some(reason) = div.observe(step, train_loss) {
                return Ok(Outcome::Diverged { step, reason });
            }
            let grad_norm = clip_grads(&mut grads, t.grad_clip)?;
            if !grad_norm.is_finite() {
                return Ok(Outcome::Diverged {
                    step,
                    reason: format!("gradient norm became {grad_norm} at step {step}"),
                });
            }
            opt.step(&model.params(), &grads, lr)?;
            tokens_seen += tokens_per_step;
            window_tokens += tokens_per_step;
            last_train_loss = train_loss;
            let is_eval = step % t.eval_every == 0 || step == last;
            if step % t.log_every == 0 || is_eval {
                let elapsed = window_start.elapsed().as_secs_f64();
                let tps = window_tokens as f64 / elapsed.max(1e-9);
                let mut record = MetricsRecord {
                    step,
                    tokens: tokens_seen,
                    flops: point.counts.flops_per_token_6n * tokens_seen as f64,
                    flops_chinchilla: flops_per_token * tokens_seen as f64,
                    train_loss,
                    lr,
                    grad_norm: Some(grad_norm),
                    tokens_per_second: tps,
                    mfu: Some(tps * flops_per_token / peak),
                    val_loss: None,
                    val_bpb: None,
                    epochs: None,
                    val_loss_u: None,
                };
                if is_eval {
                    let ev =
                        evaluate(&model, &data, &unigram, batch, context, t.eval_batches as usize, &hooks, &device)?;
                    record.val_loss = Some(per_source(&ev, |v| v.loss));
                    record.val_bpb = Some(per_source(&ev, |v| v.bpb));
                    record.val_loss_u = Some(per_source(&ev, Evaluation::loss_u));
                    record.epochs = Some(epochs(sampler.epochs_after(step - stream_start)));
                }
                if control.lease_lost() {
                    return Ok(Outcome::LeaseLost);
                }
                dir.append_metric(&record)?;
                window_start = Instant::now();
                window_tokens = 0;
            }
            if (step % t.checkpoint_every == 0 && step < last) || keep.contains(&step) {
                let state = checkpoint(step, opt.t, &div, tokens_seen, last_train_loss);
                save_checkpoint(dir, keep, &model, &opt, state)?;
            }
        }
        // Final evaluation and export.
        let ev = evaluate(&model, &data, &unigram, batch, context, t.eval_batches as usize, &hooks, &device)?;
        crate::export::export(dir, &model, &data)?;
        let by_source = |f: &dyn Fn(SourceKind) -> Option<f64>| PerSource {
            general: f(SourceKind::General),
            domain: f(SourceKind::Domain),
        };
        let main = ev.get("general").or_else(|| ev.values().next()).map(|v| v.loss).unwrap_or(f64::NAN);
        Ok(Outcome::Finished(FinalMetrics {
            train_loss: last_train_loss,
            val_loss: per_source(&ev, |v| v.loss),
            val_bpb: Some(per_source(&ev, |v| v.bpb)),
            val_loss_u: Some(per_source(&ev, Evaluation::loss_u)),
            val_loss_unigram: Some(per_source(&ev, |v| v.unigram)),
            loss: main,
            bytes_per_token: Some(by_source(&|kind| data.bytes_per_token(kind))),
            entropy_nats_per_byte: Some(by_source(&|kind| data.entropy_nats_per_byte(kind))),
            epochs: Some(epochs(sampler.epochs_after(last - stream_start))),
            device: Some(format!("{device:?}")),
        }))
    }
}

/// One of the metrics of [`evaluate`] per source.
fn per_source(ev: &BTreeMap<&'static str, Evaluation>, pick: impl Fn(&Evaluation) -> f64) -> PerSource<f64> {
    PerSource {
        general: ev.get(SourceKind::General.name()).map(&pick),
        domain: ev.get(SourceKind::Domain.name()).map(&pick),
    }
}

/// Epochs read of each source, as the records store them.
fn epochs(e: SourceEpochs) -> PerSource<f64> {
    PerSource { general: Some(e.general), domain: Some(e.domain) }
}
