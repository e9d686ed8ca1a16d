//! The TOML schema of a sweep config. `[grid]` is read by hand in `grid.rs` (its axes have
//! several spellings); every other section is a serde struct that rejects unknown keys.

use crate::shape::{CoreShape, Ffn};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Which training backend runs the points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainerKind {
    /// Real training with candle.
    #[default]
    Candle,
    /// Loss curves drawn from a stated law plus noise.
    Simulate,
}

/// `[sweep]`: identity and where the sweep directory goes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSection {
    /// The sweep's name; its directory is `<out>/<name>`.
    pub name: String,
    /// Output root, relative to the working directory (`--out` overrides).
    #[serde(default = "default_out")]
    pub out: PathBuf,
    /// Seed for initialisation, data order and simulated noise.
    #[serde(default)]
    pub seed: u64,
    /// Training backend.
    #[serde(default)]
    pub trainer: TrainerKind,
    /// Device for the candle trainer: `cpu`, `cuda:N` or `metal`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Sustained training FLOP/s assumed for time estimates; by device when absent.
    #[serde(default)]
    pub flops_per_second: Option<f64>,
}

fn default_out() -> PathBuf {
    PathBuf::from("runs")
}
fn default_device() -> String {
    "cpu".into()
}

/// `[model]`: the shape rule and defaults shared by all points.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// d_model / n_layers aimed at when deriving a shape from a parameter count.
    #[serde(default = "default_aspect")]
    pub aspect_ratio: f64,
    /// Head size of derived shapes.
    #[serde(default = "default_head_dim")]
    pub head_dim: u64,
    /// Feed-forward block.
    #[serde(default = "default_ffn")]
    pub ffn: Ffn,
    /// d_ff / d_model (8/3 for SwiGLU and 4 for GELU when absent).
    #[serde(default)]
    pub ffn_multiplier: Option<f64>,
    /// d_ff is rounded up to a multiple of this.
    #[serde(default = "default_multiple_of")]
    pub ffn_multiple_of: u64,
    /// Context length in tokens.
    #[serde(default = "default_context")]
    pub context: u64,
    /// Tie the output projection to the token embedding.
    #[serde(default = "default_true")]
    pub tied_embeddings: bool,
    /// Vocabulary size when the grid has no `vocab_size` axis.
    #[serde(default = "default_vocab")]
    pub vocab_size: u64,
    /// Named sizes of this config, added to (or replacing) the built-in ladder.
    #[serde(default)]
    pub sizes: BTreeMap<String, CoreShape>,
}

fn default_aspect() -> f64 {
    32.0
}
fn default_head_dim() -> u64 {
    32
}
fn default_ffn() -> Ffn {
    Ffn::Swiglu
}
fn default_multiple_of() -> u64 {
    32
}
fn default_context() -> u64 {
    128
}
fn default_true() -> bool {
    true
}
fn default_vocab() -> u64 {
    4096
}

impl Default for ModelSection {
    fn default() -> Self {
        toml::Table::new().try_into().expect("all model fields have defaults")
    }
}

/// Learning rate: a number, a table by model name, or a power law in N.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LrRule {
    /// One learning rate for every point.
    Constant(f64),
    /// lr = base * (N / ref_params)^exponent, N the non-embedding parameter count.
    Power {
        /// Learning rate at `ref_params`.
        base: f64,
        /// Reference non-embedding parameter count.
        ref_params: f64,
        /// Exponent (negative: bigger models take smaller steps).
        exponent: f64,
    },
    /// Learning rate per model name (as written in the grid, e.g. "tiny" or "1e6").
    ByModel(BTreeMap<String, f64>),
}

/// Learning-rate schedule shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Linear warmup, then cosine decay to min_lr_ratio * lr.
    Cosine,
    /// Linear warmup, then constant.
    Constant,
    /// Warmup, stable, then a cooldown (`cooldown_shape`) over cooldown_fraction of the steps.
    Wsd,
}

/// How a WSD cooldown takes the learning rate from its peak to the minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CooldownShape {
    /// lr = min + (peak - min) (1 - sqrt(t)), t the cooldown's elapsed fraction (Haegele et al. 2024).
    #[default]
    #[serde(rename = "1-sqrt")]
    OneMinusSqrt,
    /// lr = min + (peak - min) (1 - t).
    #[serde(rename = "linear")]
    Linear,
    /// lr = min + (peak - min) (1 + cos(pi t)) / 2.
    #[serde(rename = "cosine")]
    Cosine,
}

/// `[train]`: optimisation settings shared by all points.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Sequences per optimiser micro-batch.
    #[serde(default = "default_batch")]
    pub batch_size: u64,
    /// Micro-batches per optimiser step.
    #[serde(default = "default_one")]
    pub grad_accum: u64,
    /// Peak learning rate rule.
    #[serde(default = "default_lr")]
    pub lr: LrRule,
    /// Schedule shape.
    #[serde(default = "default_schedule")]
    pub schedule: Schedule,
    /// Warmup steps; `warmup_fraction` of the steps when absent.
    #[serde(default)]
    pub warmup_steps: Option<u64>,
    /// Warmup as a fraction of the steps.
    #[serde(default = "default_warmup_fraction")]
    pub warmup_fraction: f64,
    /// WSD cooldown as a fraction of the steps.
    #[serde(default = "default_cooldown")]
    pub cooldown_fraction: f64,
    /// WSD cooldown length in tokens (replaces `cooldown_fraction` when given).
    #[serde(default)]
    pub cooldown_tokens: Option<f64>,
    /// WSD cooldown shape.
    #[serde(default)]
    pub cooldown_shape: CooldownShape,
    /// Final learning rate as a fraction of the peak.
    #[serde(default = "default_min_lr")]
    pub min_lr_ratio: f64,
    /// Decoupled weight decay (AdamW), applied to matrices only.
    #[serde(default = "default_wd")]
    pub weight_decay: f64,
    /// Adam beta1.
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    /// Adam beta2.
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// Adam epsilon.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Global gradient-norm clip; 0 disables.
    #[serde(default = "default_one_f")]
    pub grad_clip: f64,
    /// Evaluate every this many steps; about 10 evaluations per run when absent.
    #[serde(default)]
    pub eval_every: Option<u64>,
    /// Validation batches per source and evaluation.
    #[serde(default = "default_eval_batches")]
    pub eval_batches: u64,
    /// Log training loss every this many steps.
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    /// Checkpoint every this many steps (and on stop requests).
    #[serde(default = "default_ckpt")]
    pub checkpoint_every: u64,
    /// A loss above this multiple of the running minimum ends the point as diverged.
    #[serde(default = "default_diverge")]
    pub diverge_factor: f64,
}

fn default_batch() -> u64 {
    16
}
fn default_one() -> u64 {
    1
}
fn default_one_f() -> f64 {
    1.0
}
fn default_lr() -> LrRule {
    LrRule::Constant(3e-3)
}
fn default_schedule() -> Schedule {
    Schedule::Cosine
}
fn default_warmup_fraction() -> f64 {
    0.05
}
fn default_cooldown() -> f64 {
    0.2
}
fn default_min_lr() -> f64 {
    0.1
}
fn default_wd() -> f64 {
    0.1
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.95
}
fn default_eps() -> f64 {
    1e-8
}
fn default_eval_batches() -> u64 {
    4
}
fn default_log_every() -> u64 {
    10
}
fn default_ckpt() -> u64 {
    100
}
fn default_diverge() -> f64 {
    3.0
}

impl Default for TrainSection {
    fn default() -> Self {
        toml::Table::new().try_into().expect("all train fields have defaults")
    }
}

/// Where fake quantisation applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantTarget {
    /// Linear-layer weights.
    Weights,
    /// Inputs to every linear layer.
    Activations,
    /// The gradient flowing into each linear layer's input (dX), quantised after its product.
    Gradients,
    /// Attention keys and values (as stored: the KV cache).
    Kv,
    /// The output gradient dY of each linear layer, quantised before both backward products
    /// (dX = dY W and dW = dY^T X): the FP8 training recipe's backward.
    GradOutput,
    /// The inputs of the attention products: Q and K (along the head dimension) for Q K^T, the
    /// probabilities P (along keys) and V (along tokens) for P V.
    Attention,
    /// The inputs of the logits product: the final hidden states and the output projection.
    Logits,
}

impl QuantTarget {
    /// Every target, in the order of checkpointed counters.
    pub const ALL: [QuantTarget; 7] = [
        QuantTarget::Weights,
        QuantTarget::Activations,
        QuantTarget::Gradients,
        QuantTarget::Kv,
        QuantTarget::GradOutput,
        QuantTarget::Attention,
        QuantTarget::Logits,
    ];
}

/// Rounding mode of fake quantisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// Round to nearest, ties to even.
    #[default]
    Nearest,
    /// Stochastic rounding.
    Stochastic,
}

/// `[precision]`: where the grid's precision applies, and per-target overrides.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrecisionSection {
    /// Targets quantised with the grid's precision.
    #[serde(default = "default_targets")]
    pub targets: Vec<QuantTarget>,
    /// Override format for weights (a precision name).
    #[serde(default)]
    pub weights: Option<String>,
    /// Override format for activations.
    #[serde(default)]
    pub activations: Option<String>,
    /// Format for activation gradients (off when absent and not in `targets`).
    #[serde(default)]
    pub gradients: Option<String>,
    /// Format for attention K/V (off when absent and not in `targets`).
    #[serde(default)]
    pub kv: Option<String>,
    /// Format for the output gradients dY of linear layers (off when absent and not in `targets`).
    #[serde(default)]
    pub grad_output: Option<String>,
    /// Format for the attention products' inputs (off when absent and not in `targets`).
    #[serde(default)]
    pub attention: Option<String>,
    /// Format for the logits product's inputs (off when absent and not in `targets`).
    #[serde(default)]
    pub logits: Option<String>,
    /// Delayed scaling: per-tensor scales come from the largest amax of the last this-many
    /// passes of the same tensor (just-in-time, from the tensor itself, when absent).
    #[serde(default)]
    pub amax_history: Option<u32>,
    /// Rounding mode.
    #[serde(default)]
    pub rounding: Rounding,
}

fn default_targets() -> Vec<QuantTarget> {
    vec![QuantTarget::Weights, QuantTarget::Activations]
}

impl Default for PrecisionSection {
    fn default() -> Self {
        toml::Table::new().try_into().expect("all precision fields have defaults")
    }
}

/// Parameters of the simulated loss law
/// L = E + A/N^alpha + B r^eta / D^beta + C/(r + eps)^gamma,
/// the D-CPT form; with eta = 0 and C = 0 (the defaults) it is Chinchilla's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LawParams {
    /// Irreducible loss.
    #[serde(rename = "E")]
    pub e: f64,
    /// Model-size coefficient.
    #[serde(rename = "A")]
    pub a: f64,
    /// Model-size exponent.
    pub alpha: f64,
    /// Data coefficient.
    #[serde(rename = "B")]
    pub b: f64,
    /// Data exponent.
    pub beta: f64,
    /// Mixture-ratio exponent on the data term.
    #[serde(default)]
    pub eta: f64,
    /// Mixture-ratio coefficient.
    #[serde(rename = "C", default)]
    pub c: f64,
    /// Mixture-ratio exponent.
    #[serde(default)]
    pub gamma: f64,
    /// Ratio offset that keeps r = 0 finite.
    #[serde(default = "default_law_eps")]
    pub eps: f64,
    /// Repeated data (Muennighoff et al. 2023): the decay constant R_D* of repeated tokens'
    /// value, used when a point sets `unique_tokens` (15.39, the paper's fit, when absent).
    #[serde(rename = "R_D_star", default, skip_serializing_if = "Option::is_none")]
    pub r_d_star: Option<f64>,
    /// Repeated data: the decay constant R_N* of excess parameters' value (5.31 when absent).
    #[serde(rename = "R_N_star", default, skip_serializing_if = "Option::is_none")]
    pub r_n_star: Option<f64>,
}

fn default_law_eps() -> f64 {
    1e-3
}

/// R_D* of Muennighoff et al.'s fit (huggingface/datablations README): 15.387756.
pub const DEFAULT_R_D_STAR: f64 = 15.387756;
/// R_N* of Muennighoff et al.'s fit: 5.309743.
pub const DEFAULT_R_N_STAR: f64 = 5.309743;

/// Which parameter count the simulated law's N is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimulatedParams {
    /// Non-embedding parameters (Kaplan's N; the default).
    #[default]
    NonEmbedding,
    /// All parameters, embeddings included (Chinchilla's N).
    All,
}

impl SimulatedParams {
    fn is_default(&self) -> bool {
        *self == SimulatedParams::NonEmbedding
    }
}

impl LawParams {
    /// Chinchilla's published fit (Hoffmann et al. 2022, approach 3).
    pub fn chinchilla() -> Self {
        LawParams {
            e: 1.69,
            a: 406.4,
            alpha: 0.34,
            b: 410.7,
            beta: 0.28,
            eta: 0.0,
            c: 0.0,
            gamma: 0.0,
            eps: 1e-3,
            r_d_star: None,
            r_n_star: None,
        }
    }

    /// Effective parameters N' and tokens D' when only `unique` distinct tokens are read
    /// (Muennighoff et al. 2023, eq. 5 and 6): repeated epochs and parameters beyond the
    /// compute-optimal size for the unique tokens, N_opt(U_D) = G (G U_D)^(beta/alpha) with
    /// G = (alpha A / (beta B))^(1/(alpha+beta)), are worth less and less.
    pub fn effective(&self, n: f64, d: f64, unique: f64) -> (f64, f64) {
        let r_d_star = self.r_d_star.unwrap_or(DEFAULT_R_D_STAR);
        let r_n_star = self.r_n_star.unwrap_or(DEFAULT_R_N_STAR);
        let u_d = unique.min(d);
        let r_d = (d / u_d - 1.0).max(0.0);
        let d_eff = u_d + u_d * r_d_star * (1.0 - (-r_d / r_d_star).exp());
        let g = (self.alpha * self.a / (self.beta * self.b)).powf(1.0 / (self.alpha + self.beta));
        let n_opt = g * (g * u_d).powf(self.beta / self.alpha);
        let u_n = n.min(n_opt);
        let r_n = (n / u_n - 1.0).max(0.0);
        let n_eff = u_n + u_n * r_n_star * (1.0 - (-r_n / r_n_star).exp());
        (n_eff, d_eff)
    }

    /// The law's loss for N parameters, D tokens and a source's own data fraction r.
    pub fn loss(&self, n: f64, d: f64, r: f64) -> f64 {
        let data =
            if self.eta == 0.0 { self.b / d.powf(self.beta) } else { self.b * r.powf(self.eta) / d.powf(self.beta) };
        let ratio = if self.c == 0.0 { 0.0 } else { self.c / (r + self.eps).powf(self.gamma) };
        self.e + self.a / n.powf(self.alpha) + data + ratio
    }
}

/// `[simulate]`: the law and noise of the simulate trainer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulateSection {
    /// Law of the general-source validation loss (r = 1 - mixture_ratio).
    #[serde(default = "LawParams::chinchilla")]
    pub general: LawParams,
    /// Law of the domain-source validation loss (r = mixture_ratio); no domain loss when absent.
    #[serde(default)]
    pub domain: Option<LawParams>,
    /// Relative (log-normal) noise on each logged loss.
    #[serde(default = "default_noise")]
    pub noise: f64,
    /// Wall time each point takes, spread over its steps (not part of point ids).
    #[serde(default)]
    pub seconds_per_point: f64,
    /// Points whose learning rate exceeds this diverge (loss blows up); never when absent.
    #[serde(default)]
    pub diverge_lr: Option<f64>,
    /// Sun et al. 2025's floating-point quantisation term added to the general loss (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp_quant: Option<FpQuantParams>,
    /// Kumar et al. 2024's effective parameter count in the general law (absent: N itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<KumarParams>,
    /// Which parameter count N the laws take: `non_embedding` (default) or `all`.
    #[serde(default, skip_serializing_if = "SimulatedParams::is_default")]
    pub parameters: SimulatedParams,
    /// The learning rate's effect on the loss (what a cooldown removes); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anneal: Option<Anneal>,
}

/// The floating-point quantisation term of Sun et al. 2025 (arXiv 2501.02423), added to the
/// simulated general loss: D^beta / N^alpha * log2(B) / (gamma (E + 0.5)^delta (M + 0.5)^nu),
/// with the general law's alpha and beta and the point's exponent bits E, mantissa bits M and
/// block size B (integer formats get no term).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FpQuantParams {
    /// Scale of the quantisation term's denominator.
    pub gamma: f64,
    /// Exponent-bits exponent.
    pub delta: f64,
    /// Mantissa-bits exponent.
    pub nu: f64,
}

/// Kumar et al. 2024 (arXiv 2411.04330): the simulated general law sees the effective parameter
/// count N_eff = N (1 - e^(-P_w/gamma_w)) (1 - e^(-P_a/gamma_a)) (1 - e^(-P_kv/gamma_kv)) in
/// place of N, with P_x the bits the point trains target x in (the grid format's bits where x is
/// not quantised).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KumarParams {
    /// Weight-precision scale.
    pub gamma_w: f64,
    /// Activation-precision scale.
    pub gamma_a: f64,
    /// KV/attention-precision scale.
    pub gamma_kv: f64,
}

/// The simulate trainer's learning-rate term: the loss is the law's plus `loss * m`, where m is
/// the learning rate relative to its peak, averaged (exponentially, over about `tokens` tokens)
/// over the tokens trained so far. A run at its peak rate sits `loss` above the law; a cooldown
/// to the minimum removes most of that, and less of it the shorter the cooldown is against
/// `tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anneal {
    /// Loss added at m = 1 (nats per token).
    pub loss: f64,
    /// Tokens over which m follows the learning rate (the moving average's time constant).
    pub tokens: f64,
}

fn default_noise() -> f64 {
    0.005
}

impl Default for SimulateSection {
    fn default() -> Self {
        toml::Table::new().try_into().expect("all simulate fields have defaults")
    }
}

/// The whole config with `[grid]` kept raw (see `grid.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[sweep]`.
    pub sweep: SweepSection,
    /// `[grid]`, parsed by hand.
    pub grid: toml::Table,
    /// `[model]`.
    #[serde(default)]
    pub model: ModelSection,
    /// `[train]`.
    #[serde(default)]
    pub train: TrainSection,
    /// `[data]`, validated by sweep-data.
    #[serde(default)]
    pub data: Option<toml::Table>,
    /// `[precision]`.
    #[serde(default)]
    pub precision: PrecisionSection,
    /// `[simulate]`.
    #[serde(default)]
    pub simulate: SimulateSection,
    /// `[fit]`, validated by sweep-fit.
    #[serde(default)]
    pub fit: Option<toml::Table>,
    /// `[stages]`: points that start from other points' checkpoints (see `stages.rs`).
    #[serde(default)]
    pub stages: Option<crate::stages::StagesSection>,
}
