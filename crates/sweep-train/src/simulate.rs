//! The simulate backend: each point's loss curve comes from the law in `[simulate]`
//! (L = E + A/N^alpha + B r^eta/D^beta + C/(r+eps)^gamma; Chinchilla's published fit by default;
//! optionally with Sun et al.'s floating-point quantisation term or Kumar et al.'s effective
//! parameter count under training precision),
//! evaluated at the tokens seen so far, times seeded log-normal noise. It writes metrics and
//! checkpoints exactly like a real trainer and honours stop and resume, so a grid can be checked
//! for whether it recovers a law, and the pipeline tested, in seconds.

use crate::divergence::DivergenceCheck;
use crate::rng;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use sweep_plan::config::SimulatedParams;
use sweep_plan::Point;
use sweep_store::{Control, FinalMetrics, MetricsRecord, Outcome, PerSource, PointDir, Trainer};

/// The simulate backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimulateTrainer;

/// Checkpoint content.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    step: u64,
    divergence: DivergenceCheck,
    checksum: String,
}

impl State {
    fn digest(step: u64, d: &DivergenceCheck) -> String {
        let text = format!("{step}:{}:{}", d.factor.to_bits(), d.min_loss.to_bits());
        sweep_plan::point::sha256_hex(&text)[..16].to_string()
    }
}

/// Loads the newest checkpoint whose checksum verifies, falling back to older ones.
fn load_checkpoint(dir: &PointDir) -> Option<State> {
    for (step, path) in dir.checkpoints() {
        let parsed = std::fs::read(path.join("state.json")).ok().and_then(|b| serde_json::from_slice::<State>(&b).ok());
        match parsed {
            Some(s) if s.step == step && s.checksum == State::digest(s.step, &s.divergence) => return Some(s),
            _ => tracing::warn!(point = %dir.id, step, "checkpoint is corrupt; trying the previous one"),
        }
    }
    None
}

fn save_checkpoint(dir: &PointDir, step: u64, div: &DivergenceCheck) -> anyhow::Result<()> {
    let state = State { step, divergence: div.clone(), checksum: State::digest(step, div) };
    dir.write_checkpoint(step, |tmp| {
        std::fs::write(tmp.join("state.json"), serde_json::to_vec(&state).expect("state serialises"))
    })?;
    Ok(())
}

/// Losses of the simulated run after `tokens` tokens: (train, general, domain). N is the
/// parameter count `[simulate] parameters` names; with `unique_tokens` set, N and D become the
/// effective N' and D' of repeated data (Muennighoff et al. 2023).
pub fn losses(point: &Point, tokens: f64, step: u64) -> (f64, f64, Option<f64>) {
    let sim = point.simulate.clone().unwrap_or_default();
    let n = match sim.parameters {
        SimulatedParams::NonEmbedding => point.counts.non_embedding_params as f64,
        SimulatedParams::All => point.counts.total_params as f64,
    };
    let r = point.mixture_ratio;
    let law_loss = |law: &sweep_plan::LawParams, n: f64, share: f64| match point.unique_tokens {
        Some(u) => {
            let (n_eff, d_eff) = law.effective(n, tokens, u as f64);
            law.loss(n_eff, d_eff, share)
        }
        None => law.loss(n, tokens, share),
    };
    let stream = rng::stream_of(&point.id);
    let noise = |k: u64| (sim.noise * rng::normal(point.seed, stream, step * 4 + k)).exp();
    let mut blowup = 1.0;
    if let Some(limit) = sim.diverge_lr {
        if point.train.lr > limit && step > point.train.warmup_steps {
            // Too high a learning rate: the loss grows exponentially once warmup ends.
            blowup = (0.5 * (step - point.train.warmup_steps) as f64).exp();
        }
    }
    let general = (general_loss(point, &sim, n, &law_loss) + fp_quant_term(point, &sim, n, tokens)) * noise(0) * blowup;
    let domain = sim.domain.as_ref().map(|law| law_loss(law, n, r) * noise(1) * blowup);
    let train = match domain {
        Some(d) => ((1.0 - r) * general + r * d) * noise(2),
        None => general * noise(2),
    };
    (train, general, domain)
}

/// The general law at N, or at Kumar et al.'s effective parameter count when `[simulate]
/// precision` is set (P_w, P_a, P_kv: the bits of the point's weights, activations and K/V or
/// attention inputs). `law_loss` evaluates a law at (N, mixture share), with the effective N' and
/// D' of repeated data where the point sets `unique_tokens`.
fn general_loss(
    point: &Point,
    sim: &sweep_plan::config::SimulateSection,
    n: f64,
    law_loss: &dyn Fn(&sweep_plan::LawParams, f64, f64) -> f64,
) -> f64 {
    use sweep_plan::config::QuantTarget;
    let r = point.mixture_ratio;
    let Some(k) = &sim.precision else {
        return law_loss(&sim.general, n, 1.0 - r);
    };
    let p = &point.precision;
    let kv =
        if p.targets.iter().any(|(t, _)| *t == QuantTarget::Kv) { QuantTarget::Kv } else { QuantTarget::Attention };
    let factor = |bits: u32, gamma: f64| 1.0 - (-(bits as f64) / gamma).exp();
    let n_eff = n
        * factor(p.target_bits(QuantTarget::Weights), k.gamma_w)
        * factor(p.target_bits(QuantTarget::Activations), k.gamma_a)
        * factor(p.target_bits(kv), k.gamma_kv);
    law_loss(&sim.general, n_eff, 1.0 - r)
}

/// Sun et al.'s quantisation term when `[simulate] fp_quant` is set and the point's format has
/// exponent and mantissa bits: D^beta / N^alpha * log2(B) / (gamma (E+0.5)^delta (M+0.5)^nu).
fn fp_quant_term(point: &Point, sim: &sweep_plan::config::SimulateSection, n: f64, tokens: f64) -> f64 {
    let (Some(f), Some(e), Some(m)) = (&sim.fp_quant, point.precision.exp_bits, point.precision.man_bits) else {
        return 0.0;
    };
    let g = &sim.general;
    tokens.powf(g.beta) / n.powf(g.alpha) * point.precision.block_size.log2()
        / (f.gamma * (e as f64 + 0.5).powf(f.delta) * (m as f64 + 0.5).powf(f.nu))
}

impl Trainer for SimulateTrainer {
    fn name(&self) -> &'static str {
        "simulate"
    }

    fn train(&self, point: &Point, dir: &PointDir, control: &Control) -> anyhow::Result<Outcome> {
        let t = &point.train;
        let steps = t.steps;
        let tokens_per_step = t.tokens_per_step(point.model.context);
        let (mut step, mut div) = match load_checkpoint(dir) {
            Some(s) => {
                dir.truncate_metrics(s.step).context("rewriting metrics.jsonl to the checkpoint")?;
                (s.step, s.divergence)
            }
            None => {
                dir.truncate_metrics(0).context("starting metrics.jsonl")?;
                (0, DivergenceCheck::new(t.diverge_factor))
            }
        };
        let sleep_per_step = point.runtime.seconds_per_point / steps as f64;
        let n6 = point.counts.flops_per_token_6n;
        let session_start = Instant::now();
        let start_step = step;
        let mut last = (0.0, 0.0, None);
        while step < steps {
            if control.lease_lost() {
                return Ok(Outcome::LeaseLost);
            }
            if control.stop_requested() {
                save_checkpoint(dir, step, &div)?;
                return Ok(Outcome::Stopped);
            }
            if sleep_per_step > 0.0 {
                // Pace the session so each step takes its share of seconds_per_point, sleeping
                // in chunks of at least a millisecond.
                let due = sleep_per_step * (step + 1 - start_step) as f64;
                let ahead = due - session_start.elapsed().as_secs_f64();
                if ahead > 1e-3 {
                    std::thread::sleep(Duration::from_secs_f64(ahead));
                }
            }
            step += 1;
            let tokens = step * tokens_per_step;
            last = losses(point, tokens as f64, step);
            let (train_loss, general, domain) = last;
            if let Some(reason) = div.observe(step, train_loss) {
                return Ok(Outcome::Diverged { step, reason });
            }
            let is_eval = step % t.eval_every == 0 || step == steps;
            if step % t.log_every == 0 || is_eval {
                let elapsed = session_start.elapsed().as_secs_f64();
                let tps = if elapsed > 0.0 { ((step - start_step) * tokens_per_step) as f64 / elapsed } else { 0.0 };
                let record = MetricsRecord {
                    step,
                    tokens,
                    flops: n6 * tokens as f64,
                    flops_chinchilla: point.counts.flops_per_token_chinchilla * tokens as f64,
                    train_loss,
                    lr: t.lr_at(step - 1),
                    grad_norm: None,
                    tokens_per_second: tps,
                    mfu: None,
                    val_loss: is_eval.then_some(PerSource { general: Some(general), domain }),
                    val_bpb: None,
                    epochs: None,
                    val_loss_u: None,
                };
                if control.lease_lost() {
                    return Ok(Outcome::LeaseLost);
                }
                dir.append_metric(&record)?;
            }
            if step % t.checkpoint_every == 0 && step < steps {
                save_checkpoint(dir, step, &div)?;
            }
        }
        let (train_loss, general, domain) =
            if start_step == steps { losses(point, (steps * tokens_per_step) as f64, steps) } else { last };
        let mut metrics = FinalMetrics::losses(train_loss, PerSource { general: Some(general), domain }, general);
        if let Some(u) = point.unique_tokens {
            // The planned passes over the distinct tokens (the simulate trainer reads no text).
            let epochs = (steps * tokens_per_step) as f64 / u as f64;
            metrics.epochs = Some(PerSource { general: Some(epochs), domain: None });
        }
        Ok(Outcome::Finished(metrics))
    }
}
