//! The simulate backend: each point's loss curve comes from the law in `[simulate]`
//! (L = E + A/N^alpha + B r^eta/D^beta + C/(r+eps)^gamma; Chinchilla's published fit by default;
//! optionally with Sun et al.'s floating-point quantisation term or Kumar et al.'s effective
//! parameter count under training precision),
//! evaluated at the tokens seen so far, times seeded log-normal noise. It writes metrics and
//! checkpoints exactly like a real trainer and honours stop and resume, so a grid can be checked
//! for whether it recovers a law, and the pipeline tested, in seconds.
//!
//! A staged point starts from its parent's checkpoint and its loss is the law's at the tokens
//! its model has seen in all (the parent's included), at its own stage's mixture ratio. With
//! `[simulate] anneal = { loss, tokens }` the learning rate shows in the loss: `loss * m` is
//! added, m the learning rate relative to its peak averaged over about `tokens` tokens (an
//! exponential moving average, carried in checkpoints and from parent to child), so a run at
//! its peak rate sits `loss` above the law and a cooldown removes that, less of it the shorter
//! the cooldown is against `tokens`.

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
    /// The bits of the averaged relative learning rate m of `[simulate] anneal` (absent without
    /// it): bits, so that it reads back exactly whatever serde_json's float parsing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    anneal: Option<u64>,
    checksum: String,
}

impl State {
    fn new(step: u64, divergence: &DivergenceCheck, anneal: Option<f64>) -> State {
        let mut text = format!("{step}:{}:{}", divergence.factor.to_bits(), divergence.min_loss.to_bits());
        if let Some(m) = anneal {
            text.push_str(&format!(":{}", m.to_bits()));
        }
        let checksum = sweep_plan::point::sha256_hex(&text)[..16].to_string();
        State { step, divergence: divergence.clone(), anneal: anneal.map(f64::to_bits), checksum }
    }

    /// m of `[simulate] anneal`, if the state has it.
    fn m(&self) -> Option<f64> {
        self.anneal.map(f64::from_bits)
    }

    fn verifies(&self, step: u64) -> bool {
        self.step == step && self.checksum == State::new(self.step, &self.divergence, self.m()).checksum
    }
}

fn read_state(path: &std::path::Path) -> Option<State> {
    std::fs::read(path.join("state.json")).ok().and_then(|b| serde_json::from_slice::<State>(&b).ok())
}

/// Loads the newest checkpoint whose checksum verifies, falling back to older ones.
fn load_checkpoint(dir: &PointDir) -> Option<State> {
    for (step, path) in dir.checkpoints() {
        match read_state(&path) {
            Some(s) if s.verifies(step) => return Some(s),
            _ => tracing::warn!(point = %dir.id, step, "checkpoint is corrupt; trying the previous one"),
        }
    }
    None
}

/// A staged point's start: its parent's checkpoint at the branch step.
fn load_parent_checkpoint(dir: &PointDir, point: &Point) -> anyhow::Result<Option<State>> {
    let Some(b) = point.parent() else { return Ok(None) };
    let path = dir.sibling(&b.id).checkpoint_at(b.step).with_context(|| {
        format!(
            "the parent {}'s checkpoint at step {} does not exist (the worker should have waited for it)",
            b.id, b.step
        )
    })?;
    match read_state(&path) {
        Some(s) if s.verifies(b.step) => Ok(Some(s)),
        _ => anyhow::bail!("the parent {}'s checkpoint at step {} is corrupt", b.id, b.step),
    }
}

fn save_checkpoint(dir: &PointDir, keep: &[u64], state: State) -> anyhow::Result<()> {
    dir.write_checkpoint_keeping(state.step, keep, |tmp| {
        std::fs::write(tmp.join("state.json"), serde_json::to_vec(&state).expect("state serialises"))
    })?;
    Ok(())
}

/// Losses of the simulated run after `tokens` tokens: (train, general, domain). N is the
/// parameter count `[simulate] parameters` names; with `unique_tokens` set, N and D become the
/// effective N' and D' of repeated data (Muennighoff et al. 2023).
pub fn losses(point: &Point, tokens: f64, step: u64) -> (f64, f64, Option<f64>) {
    losses_with(point, tokens, step, 0.0)
}

/// [`losses`] with `extra` (the learning-rate term) added to each law before the noise.
fn losses_with(point: &Point, tokens: f64, step: u64, extra: f64) -> (f64, f64, Option<f64>) {
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
    let general =
        (general_loss(point, &sim, n, &law_loss) + fp_quant_term(point, &sim, n, tokens) + extra) * noise(0) * blowup;
    let domain = sim.domain.as_ref().map(|law| (law_loss(law, n, r) + extra) * noise(1) * blowup);
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
        // Steps count from the model's start (a staged point's parent's included); the schedule
        // runs over this point's own steps.
        let (first, steps, keep) = (point.start_step(), point.end_step(), point.branch_steps());
        let tokens_per_step = t.tokens_per_step(point.model.context);
        let anneal = point.simulate.as_ref().and_then(|s| s.anneal.clone());
        let (mut step, mut div, m0) = match load_checkpoint(dir) {
            Some(s) => {
                dir.truncate_metrics(s.step).context("rewriting metrics.jsonl to the checkpoint")?;
                let m = s.m();
                (s.step, s.divergence, m)
            }
            None => match load_parent_checkpoint(dir, point)? {
                Some(s) => {
                    let b = point.parent().expect("a parent checkpoint has a parent");
                    dir.truncate_metrics(s.step).context("starting metrics.jsonl")?;
                    tracing::info!(point = %dir.id, parent = %b.id, step = b.step, "started from the parent's checkpoint");
                    let m = s.m();
                    let div = match b.data {
                        sweep_plan::StageData::Continue => s.divergence,
                        sweep_plan::StageData::Switch => DivergenceCheck::new(t.diverge_factor),
                    };
                    (s.step, div, m)
                }
                None => {
                    dir.truncate_metrics(0).context("starting metrics.jsonl")?;
                    (0, DivergenceCheck::new(t.diverge_factor), None)
                }
            },
        };
        let mut m = anneal.is_some().then(|| m0.unwrap_or(0.0));
        let sleep_per_step = point.runtime.seconds_per_point / t.steps as f64;
        let n6 = point.counts.flops_per_token_6n;
        let session_start = Instant::now();
        let start_step = step;
        let mut last = (0.0, 0.0, None);
        while step < steps {
            if control.lease_lost() {
                return Ok(Outcome::LeaseLost);
            }
            if control.stop_requested() {
                // A checkpoint of this step may exist already, and children may be reading it.
                if dir.checkpoint_at(step).is_none() {
                    save_checkpoint(dir, keep, State::new(step, &div, m))?;
                }
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
            let lr = t.lr_at(step - first);
            step += 1;
            // The learning-rate term: m follows lr / peak over about `anneal.tokens` tokens.
            let extra = match (&anneal, m.as_mut()) {
                (Some(a), Some(m)) => {
                    *m += (lr / t.lr - *m) * -(-(tokens_per_step as f64) / a.tokens).exp_m1();
                    a.loss * *m
                }
                _ => 0.0,
            };
            let tokens = point.start_tokens() + (step - first) * tokens_per_step;
            last = losses_with(point, tokens as f64, step, extra);
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
                    lr,
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
            if (step % t.checkpoint_every == 0 && step < steps) || keep.contains(&step) {
                save_checkpoint(dir, keep, State::new(step, &div, m))?;
            }
        }
        let (train_loss, general, domain) = if start_step == steps {
            let extra = anneal.as_ref().zip(m).map_or(0.0, |(a, m)| a.loss * m);
            losses_with(point, point.tokens as f64, steps, extra)
        } else {
            last
        };
        let mut metrics = FinalMetrics::losses(train_loss, PerSource { general: Some(general), domain }, general);
        if let Some(u) = point.unique_tokens {
            // The planned passes over the distinct tokens (the simulate trainer reads no text).
            let epochs = point.tokens as f64 / u as f64;
            metrics.epochs = Some(PerSource { general: Some(epochs), domain: None });
        }
        Ok(Outcome::Finished(metrics))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::Path;

    /// 128 tokens per step, one budget of 200 steps as a WSD branch off a stable run, no noise;
    /// `anneal` is a line of [simulate].
    fn plan(shape: &str, cooldown_fraction: f64, anneal: &str) -> Vec<Point> {
        let text = format!(
            "[sweep]\nname = \"s\"\ntrainer = \"simulate\"\n[grid]\nmodel = \"micro\"\ntokens = 25600\n[model]\ncontext = 32\n\
             [train]\nbatch_size = 4\nschedule = \"wsd\"\nwarmup_steps = 0\nmin_lr_ratio = 0.0\ncooldown_fraction = {cooldown_fraction}\n\
             cooldown_shape = \"{shape}\"\nlog_every = 50\ncheckpoint_every = 1000\n[stages]\ntype = \"wsd\"\n\
             [simulate]\nnoise = 0.0\n{anneal}\n"
        );
        sweep_plan::plan_text(Path::new("s.toml"), &text, None).unwrap().points
    }

    /// Trains the points (parents first) in a fresh sweep directory; final general losses by id.
    fn train(points: &[Point], name: &str) -> HashMap<String, f64> {
        let dir = std::env::temp_dir().join(format!("sweep-simulate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut out = HashMap::new();
        for p in points {
            let pd = PointDir::new(&dir, &p.id);
            std::fs::create_dir_all(&pd.path).unwrap();
            match SimulateTrainer.train(p, &pd, &Control::default()).unwrap() {
                Outcome::Finished(m) => out.insert(p.id.clone(), m.loss),
                other => panic!("{other:?}"),
            };
        }
        let _ = std::fs::remove_dir_all(&dir);
        out
    }

    fn law(p: &Point, tokens: u64) -> f64 {
        p.simulate.as_ref().unwrap().general.loss(p.n(), tokens as f64, 1.0)
    }

    #[test]
    fn a_branch_loses_the_law_at_its_total_tokens() {
        let points = plan("1-sqrt", 0.2, "");
        let losses = train(&points, "law");
        let (trunk, branch) = (&points[0], &points[1]);
        assert_eq!((trunk.end_step(), branch.start_step(), branch.end_step()), (160, 160, 200));
        assert_eq!(losses[&trunk.id], law(trunk, 160 * 128));
        assert_eq!(losses[&branch.id], law(branch, 200 * 128), "the branch's loss is the law's at its total tokens");
    }

    #[test]
    fn the_learning_rate_term_follows_its_stated_law() {
        // m is the learning rate relative to its peak, averaged with weight 1 - a per step,
        // a = exp(-128 / 1280): at the peak from step 0 (m = 0), m = 1 - a^t.
        let anneal = "anneal = { loss = 0.5, tokens = 1280 }";
        let a = (-0.1f64).exp();
        let residual = |shape: &str, fraction: f64| {
            let points = plan(shape, fraction, anneal);
            let losses = train(&points, &format!("{shape}-{fraction}"));
            let (trunk, branch) = (&points[0], &points[1]);
            let stable = trunk.end_step() as i32;
            let m_trunk = (losses[&trunk.id] - law(trunk, trunk.tokens)) / 0.5;
            assert!(
                (m_trunk - (1.0 - a.powi(stable))).abs() < 1e-12,
                "{shape}: m {m_trunk} after {stable} steps at the peak"
            );
            (losses[&branch.id] - law(branch, branch.tokens)) / 0.5
        };
        // A cooldown of c = 40 steps to zero after 160 steps at the peak, averaged over about
        // tau = 10 steps. Reference values: the same recursion (m += (lr / peak - m) (1 - a) per
        // step, lr of step j of the cooldown at t = (j + 1) / c) in a few lines of Python. m lags
        // the learning rate by about tau times its slope at the end: 1 - sqrt, which ends at half
        // the slope of linear, keeps least of the term; cosine, flat at the end, is in between.
        for (shape, fraction, expected) in [
            ("1-sqrt", 0.2, 0.143340542762252),
            ("linear", 0.2, 0.23335451719985456),
            ("cosine", 0.2, 0.18485376281874796),
            ("linear", 0.4, 0.1188142761232699), // a longer cooldown leaves less
        ] {
            let m = residual(shape, fraction);
            assert!((m - expected).abs() < 1e-9, "{shape} over {fraction} of the steps: m = {m}, expected {expected}");
        }
    }
}
