//! A fully resolved point and its stable id.

use crate::config::{CooldownShape, LrRule, QuantTarget, Rounding, Schedule, SimulateSection, TrainerKind};
use crate::precision::PrecisionSpec;
use crate::shape::{Counts, ModelShape};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Precision as resolved for one point: what is quantised to which format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedPrecision {
    /// The grid's precision name, canonical.
    pub name: String,
    /// The grid's format (applied to `targets`).
    pub spec: PrecisionSpec,
    /// Format per quantised target; targets absent here stay in the compute dtype.
    pub targets: Vec<(QuantTarget, PrecisionSpec)>,
    /// Rounding mode.
    pub rounding: Rounding,
    /// Exponent bits E of the quantisation law (None for integer formats).
    pub exp_bits: Option<u32>,
    /// Mantissa bits M of the quantisation law (None for integer formats).
    pub man_bits: Option<u32>,
    /// Total bits per element.
    pub bits: u32,
    /// Block size B of the quantisation law.
    pub block_size: f64,
    /// Delayed scaling's amax history length (per-tensor scaling); None: just-in-time scaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amax_history: Option<u32>,
}

impl ResolvedPrecision {
    /// Total bits of one target's elements in training: its quantised format's; for a target
    /// that is not quantised, the grid format's when that is native (32 for fp32, 16 for bf16 and
    /// fp16 autocast), else 32 (it runs in f32 beside the simulated formats).
    pub fn target_bits(&self, target: QuantTarget) -> u32 {
        let unquantised = if self.spec.format.is_simulated() { 32 } else { self.spec.format.bits() };
        self.targets.iter().find(|(t, _)| *t == target).map_or(unquantised, |(_, s)| s.format.bits())
    }
}

/// Optimisation settings resolved for one point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedTrain {
    /// Sequences per micro-batch.
    pub batch_size: u64,
    /// Micro-batches per step.
    pub grad_accum: u64,
    /// Optimiser steps.
    pub steps: u64,
    /// Peak learning rate.
    pub lr: f64,
    /// Schedule shape.
    pub schedule: Schedule,
    /// Warmup steps.
    pub warmup_steps: u64,
    /// Cooldown steps (WSD).
    pub cooldown_steps: u64,
    /// Cooldown shape (WSD); written only when not the default 1 - sqrt, so ids stay as before.
    #[serde(default, skip_serializing_if = "is_default_shape")]
    pub cooldown_shape: CooldownShape,
    /// Final LR / peak LR.
    pub min_lr_ratio: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Adam beta1.
    pub beta1: f64,
    /// Adam beta2.
    pub beta2: f64,
    /// Adam epsilon.
    pub eps: f64,
    /// Gradient-norm clip (0 = off).
    pub grad_clip: f64,
    /// Evaluation interval in steps.
    pub eval_every: u64,
    /// Validation batches per source.
    pub eval_batches: u64,
    /// Training-loss log interval in steps.
    pub log_every: u64,
    /// Checkpoint interval in steps.
    pub checkpoint_every: u64,
    /// Divergence threshold (multiple of the running minimum loss).
    pub diverge_factor: f64,
}

impl ResolvedTrain {
    /// Tokens consumed per optimiser step.
    pub fn tokens_per_step(&self, context: u64) -> u64 {
        self.batch_size * self.grad_accum * context
    }

    /// The learning rate at `step` (0-based, counted from the start of this point's own steps)
    /// under the schedule.
    pub fn lr_at(&self, step: u64) -> f64 {
        let peak = self.lr;
        let min = peak * self.min_lr_ratio;
        if step < self.warmup_steps {
            return peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.schedule {
            Schedule::Constant => peak,
            Schedule::Cosine => {
                let span = (self.steps - self.warmup_steps).max(1) as f64;
                let t = ((step - self.warmup_steps) as f64 / span).min(1.0);
                min + 0.5 * (peak - min) * (1.0 + (std::f64::consts::PI * t).cos())
            }
            Schedule::Wsd => {
                let cool_start = self.steps.saturating_sub(self.cooldown_steps);
                if step < cool_start || self.cooldown_steps == 0 {
                    peak
                } else {
                    let t = ((step - cool_start + 1) as f64 / self.cooldown_steps as f64).min(1.0);
                    let left = match self.cooldown_shape {
                        CooldownShape::OneMinusSqrt => 1.0 - t.sqrt(),
                        CooldownShape::Linear => 1.0 - t,
                        CooldownShape::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
                    };
                    min + (peak - min) * left
                }
            }
        }
    }
}

fn is_default_shape(s: &CooldownShape) -> bool {
    *s == CooldownShape::default()
}

/// Where a staged point's model comes from, and what it does with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// The stage's name in its design: `base` and `cpt` (continual pre-training), `stable` and
    /// `cooldown` (WSD branches).
    pub name: String,
    /// Whether the laws fit this point's result; false for a stage that exists to be branched
    /// from (a CPT base, a WSD stable phase).
    pub fitted: bool,
    /// The parent point this one starts from; none for a first stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Branch>,
    /// Steps (counted from the model's start) at which children branch off this point: its
    /// checkpoints there are written and kept. Not part of the id: adding a child does not
    /// change what this point computes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branch_steps: Vec<u64>,
}

/// A child's start: the parent's checkpoint at `step`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Branch {
    /// The parent point's id.
    pub id: String,
    /// The parent's step whose checkpoint the child starts from (weights, optimiser state, data
    /// position, quantiser counters).
    pub step: u64,
    /// Training tokens the parent had seen at that step.
    pub tokens: u64,
    /// What the child's training data does at the branch.
    pub data: StageData,
}

/// The data stream of a child stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageData {
    /// The parent's stream goes on: the child's batches are the ones the parent would have read
    /// next (a WSD cooldown branch is then step for step an independent WSD run).
    Continue,
    /// A new mixture starts: each source continues after the rows the model has read of it.
    Switch,
}

/// Values that do not change what a point computes; excluded from its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Runtime {
    /// Device the candle trainer uses.
    pub device: String,
    /// Simulated wall time per point (simulate trainer).
    pub seconds_per_point: f64,
    /// Estimated wall time in seconds.
    pub estimated_seconds: f64,
}

/// Training FLOPs of a whole point, both conventions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flops {
    /// 6 N D, N non-embedding.
    pub six_nd: f64,
    /// Chinchilla appendix F count times D.
    pub chinchilla: f64,
}

/// One fully resolved point of a sweep (the content of point.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Stable id: hash of the fields that affect training.
    pub id: String,
    /// Position in the plan.
    pub index: usize,
    /// How the model axis was written ("tiny", "1e6", "d64-l2-h2").
    pub label: String,
    /// Training backend.
    pub trainer: TrainerKind,
    /// Seed.
    pub seed: u64,
    /// Architecture.
    pub model: ModelShape,
    /// Training tokens the model has seen when the point ends (steps x tokens per step), a staged
    /// point's parent's included.
    pub tokens: u64,
    /// Training tokens the grid asked of this point's own stage.
    pub tokens_requested: f64,
    /// Fraction of training tokens from the domain source.
    pub mixture_ratio: f64,
    /// The training FLOP budget C (6 N D, N non-embedding) of the `[[grid.isoflop]]` profile the
    /// point was placed on, before its tokens were rounded to whole steps; absent outside IsoFLOP
    /// designs. Not part of the id: the tokens already say what the point trains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isoflop_budget: Option<f64>,
    /// Distinct training tokens the point may read (`grid.unique_tokens`), repeated in epochs;
    /// absent: the whole training split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_tokens: Option<u64>,
    /// Precision.
    pub precision: ResolvedPrecision,
    /// Optimisation.
    pub train: ResolvedTrain,
    /// The `[data]` table as written (validated by sweep-data), or null.
    pub data: serde_json::Value,
    /// Simulated law (simulate trainer only).
    pub simulate: Option<SimulateSection>,
    /// Learning-rate rule as written, for the record (the resolved value is `train.lr`).
    pub lr_rule: LrRule,
    /// Parameter and FLOP-per-token counts (derived).
    pub counts: Counts,
    /// Training FLOPs of the model at its end (derived; a staged point's parent's included: what
    /// the model would cost trained on its own).
    pub flops: Flops,
    /// Values outside the id.
    pub runtime: Runtime,
    /// The point's stage when it starts from (or is branched from by) another point; absent for
    /// a point trained from scratch on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
}

/// Top-level fields of a point that its id ignores.
const NOT_HASHED: &[&str] = &["id", "index", "label", "counts", "flops", "runtime", "lr_rule", "isoflop_budget"];

/// Serialises a JSON value with sorted keys and no whitespace.
pub fn canonical_json(value: &serde_json::Value) -> String {
    fn write(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).expect("string serialises"));
                    out.push(':');
                    write(&map[*k], out);
                }
                out.push('}');
            }
            serde_json::Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// Hex SHA-256 of a string.
pub fn sha256_hex(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Point {
    /// The canonical text its id hashes: every field that affects training, keys sorted.
    pub fn hashed_text(&self) -> String {
        let mut value = serde_json::to_value(self).expect("points serialise");
        if let serde_json::Value::Object(map) = &mut value {
            for key in NOT_HASHED {
                map.remove(*key);
            }
            if let Some(serde_json::Value::Object(sim)) = map.get_mut("simulate") {
                sim.remove("seconds_per_point");
            }
            if let Some(serde_json::Value::Object(stage)) = map.get_mut("stage") {
                stage.remove("branch_steps");
            }
        }
        canonical_json(&value)
    }

    /// Computes the stable id (12 hex digits of SHA-256 of `hashed_text`).
    pub fn compute_id(&self) -> String {
        sha256_hex(&self.hashed_text())[..12].to_string()
    }

    /// Non-embedding parameter count.
    pub fn n(&self) -> f64 {
        self.counts.non_embedding_params as f64
    }

    /// The parent this point starts from, if any.
    pub fn parent(&self) -> Option<&Branch> {
        self.stage.as_ref().and_then(|s| s.parent.as_ref())
    }

    /// Steps the model has taken when this point starts (0 without a parent). Steps, metrics and
    /// checkpoints count from the model's start; the schedule (`train.lr_at`) from this point's.
    pub fn start_step(&self) -> u64 {
        self.parent().map_or(0, |b| b.step)
    }

    /// The step at which this point ends: `start_step() + train.steps`.
    pub fn end_step(&self) -> u64 {
        self.start_step() + self.train.steps
    }

    /// Tokens the model had seen when this point starts (its parent's, at the branch).
    pub fn start_tokens(&self) -> u64 {
        self.parent().map_or(0, |b| b.tokens)
    }

    /// Tokens this point trains on itself.
    pub fn own_tokens(&self) -> u64 {
        self.tokens - self.start_tokens()
    }

    /// Training FLOPs of this point's own steps (what running it costs).
    pub fn own_flops(&self) -> Flops {
        let d = self.own_tokens() as f64;
        Flops { six_nd: self.counts.flops_per_token_6n * d, chinchilla: self.counts.flops_per_token_chinchilla * d }
    }

    /// Whether the laws fit this point (every point but a stage that exists to be branched from).
    pub fn is_fitted(&self) -> bool {
        self.stage.as_ref().is_none_or(|s| s.fitted)
    }

    /// Steps whose checkpoints children need (written and kept).
    pub fn branch_steps(&self) -> &[u64] {
        self.stage.as_ref().map_or(&[], |s| &s.branch_steps)
    }

    /// The stage's name ("" for a point without stages).
    pub fn stage_name(&self) -> &str {
        self.stage.as_ref().map_or("", |s| &s.name)
    }
}
