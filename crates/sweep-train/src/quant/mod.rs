//! Simulated low-precision training: fake quantisation (quantise then dequantise) of weights,
//! activations, input and output gradients, attention K/V and products and the logits product to
//! any ExMy float, symmetric intN or MXINT format, with the scales hardware stores.
//!
//! - Formats and their conventions (OCP E4M3 max 448, E5M2 max 57344, E2M1 max 6, E3M2 max 28,
//!   E2M3 max 7.5, intN symmetric): see [`format`](mod@format).
//! - Scaling: one scale per tensor, per channel (per row: all elements sharing every index but the
//!   last; for a linear weight `[out, in]` one scale per output channel) or per block of B
//!   consecutive elements along the last dimension (a row's last block is shorter when B does not
//!   divide it). The scale s maps the group's largest finite |x| to the format's largest finite
//!   value ([`ScaleRule::AbsMax`], the default: s = amax / max in f64, then x · f32(1/s) is
//!   rounded and multiplied by f32(s)), or is the smallest power of two that keeps the group in
//!   range ([`ScaleRule::PowerOfTwo`], MX style, no rounding error in scaling), or is 1
//!   ([`ScaleRule::Unit`]: a plain saturating cast), or as block formats store it: an OCP MX E8M0
//!   power of two 2^(floor(log2 amax) - emax_elem) clamped to 2^[-127, 127] ([`ScaleRule::Ue8m0`];
//!   the group's largest values may saturate), or an E4M3 block scale under a per-tensor f32 scale
//!   ([`ScaleRule::Ue4m3`], NVFP4; the group is divided by the scale in f32). Infinities and NaN
//!   do not enter amax; an all-zero group gets s = 1 (E8M0: 2^-127). Checked against the OCP MX
//!   reference tables and bit for bit against PyPI's gfloat (`tests/quant_blocks.rs`).
//! - Delayed scaling ([`QuantConfig::with_amax_history`], per tensor): each quantisation site of a
//!   pass takes its scale from the largest amax of its last N calls, then records its own
//!   ([`QuantCall`]); the histories are checkpointed.
//! - Rounding: to nearest, ties to even (the even code); or stochastic: up with probability equal
//!   to the distance to the lower neighbour over the gap (exactly, up to 2^-31 of a gap), using 32
//!   random bits per element that are a pure function of (seed, call counter, element index)
//!   ([`random_bits`]), so results do not depend on thread count and a resumed run that restores
//!   the counter reproduces bit for bit.
//! - Gradient: [`fake_quant`] uses the identity straight-through estimator everywhere (the
//!   gradient passes unchanged, also for values that saturated; with AbsMax or PowerOfTwo scaling
//!   nothing saturates except infinities). [`quant_grad`] is the identity forward and quantises
//!   the incoming gradient in the backward pass.
//! - Speed: one fused CPU kernel: branch-free bit arithmetic on the f32 representation that
//!   vectorises (compiled for AVX2 when the CPU has it), rayon above 32K elements; f32, bf16, f16
//!   and f64 tensors (non-f32 go through f32). CUDA (feature `cuda`): the kernels of
//!   `fake_quant.cu`, compiled at run time with NVRTC, on the tensor's device for f32 tensors; their
//!   arithmetic is checked against the CPU kernel on the host (`tests/quant_cuda_math.rs`) and the
//!   launched kernels on a GPU (`tests/cuda.rs`, bit for bit; passed on an H100 and an H200, see
//!   docs/gpu.md). Metal, and other dtypes on CUDA, copy to the CPU and back.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use sweep_plan::{config::Rounding, precision::PrecisionSpec};
//! use sweep_train::quant::{fake_quant, quant_grad, QuantConfig, QuantTargets};
//!
//! let spec = PrecisionSpec::parse("fp8-e4m3").unwrap();
//! let q = QuantConfig::from_spec(&spec, Rounding::Nearest, 0).unwrap().expect("e4m3 is simulated");
//! let w = Tensor::new(&[[0.1f32, -0.3, 4.0], [1.0, 2.0, 3.0]], &Device::Cpu).unwrap();
//! let wq = fake_quant(&w, &q).unwrap(); // same shape and dtype; gradient passes straight through
//! assert_eq!(wq.dims(), &[2, 3]);
//!
//! // A linear layer with the targets of a run (normally `QuantTargets::from_resolved(&point.precision, seed)`).
//! fn linear(x: &Tensor, w: &Tensor, t: &QuantTargets) -> candle_core::Result<Tensor> {
//!     let x = match &t.activations { Some(q) => fake_quant(x, q)?, None => x.clone() };
//!     let x = match &t.gradients { Some(q) => quant_grad(&x, q)?, None => x };
//!     let w = match &t.weights { Some(q) => fake_quant(w, q)?, None => w.clone() };
//!     x.broadcast_matmul(&w.t()?)
//! }
//! let targets = QuantTargets { weights: Some(q.clone()), activations: Some(q), ..Default::default() };
//! let x = Tensor::new(&[[[1.0f32, 2.0, 3.0]]], &Device::Cpu).unwrap(); // [batch, tokens, in]
//! assert_eq!(linear(&x, &w, &targets).unwrap().dims(), &[1, 1, 2]);
//! ```

pub mod cuda;
pub mod format;
mod kernel;
mod op;

pub use format::{FloatFormat, Format, IntFormat};
pub use kernel::{
    block_scale_e4m3, call_key, e8m0_exponent, quantize_slice, quantize_slice_with_amax, random_bits, tensor_scale_e4m3,
};
pub use op::{fake_quant, fake_quant_at, fake_quant_call, quant_grad, quant_grad_at, quant_grad_call};

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use sweep_plan::config::{QuantTarget, Rounding};
use sweep_plan::precision::{PrecisionSpec, ScaleFormat, Scaling};
use sweep_plan::ResolvedPrecision;

/// An invalid quantisation setting or input, with a message that says what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantError(pub String);

impl QuantError {
    /// An error with this message.
    pub fn new(msg: impl Into<String>) -> QuantError {
        QuantError(msg.into())
    }
}

impl fmt::Display for QuantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QuantError {}

impl From<QuantError> for candle_core::Error {
    fn from(e: QuantError) -> candle_core::Error {
        candle_core::Error::Msg(e.0)
    }
}

/// How a group's scale is chosen from its largest finite absolute value `amax`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScaleRule {
    /// scale = amax / format max: the group's largest value lands exactly on the format's max.
    #[default]
    AbsMax,
    /// scale = the smallest power of two with amax / scale <= format max (no rounding in scaling).
    PowerOfTwo,
    /// scale = 1: a saturating cast to the format with no scaling.
    Unit,
    /// OCP MX E8M0: scale = 2^(floor(log2 amax) - emax_elem), clamped to 2^[-127, 127]; the
    /// group's largest values may saturate (see [`sweep_plan::precision::ScaleFormat::Ue8m0`]).
    Ue8m0,
    /// NVFP4 style: E4M3 block scales under a per-tensor f32 scale (see
    /// [`sweep_plan::precision::ScaleFormat::Ue4m3`]).
    Ue4m3,
}

impl ScaleRule {
    /// The rule that stores scales in `format`.
    pub fn of(format: ScaleFormat) -> ScaleRule {
        match format {
            ScaleFormat::F32 => ScaleRule::AbsMax,
            ScaleFormat::Ue8m0 => ScaleRule::Ue8m0,
            ScaleFormat::Ue4m3 => ScaleRule::Ue4m3,
        }
    }
}

/// A fake-quantisation setting: format, scaling, rounding, and the stochastic-rounding stream.
///
/// Every call to [`fake_quant`] or [`quant_grad`] takes the next value of the config's call
/// counter as its random stream (clones share the counter). Save [`QuantConfig::counter`] in a
/// checkpoint and restore it with [`QuantConfig::set_counter`] to resume bit for bit; or pass
/// counters explicitly with [`fake_quant_at`] / [`quant_grad_at`].
#[derive(Debug, Clone)]
pub struct QuantConfig {
    /// Canonical precision name, e.g. `e4m3-b32`.
    pub name: String,
    /// The simulated number format.
    pub format: Format,
    /// Scaling granularity.
    pub scaling: Scaling,
    /// How each group's scale is chosen.
    pub scale_rule: ScaleRule,
    /// Round to nearest even, or stochastically.
    pub rounding: Rounding,
    /// Seed of stochastic rounding.
    pub seed: u64,
    calls: Arc<AtomicU64>,
    /// Delayed scaling (per-tensor scaling only), shared by clones.
    delayed: Option<Arc<DelayedScaling>>,
}

/// Delayed scaling: each quantisation site (the n-th call of a pass, counted from
/// [`QuantConfig::begin_pass`]) keeps the amax of its last `len` tensors; a call scales by the
/// largest of them (just-in-time while the history is empty) and then records its own amax.
#[derive(Debug)]
pub struct DelayedScaling {
    len: usize,
    state: Mutex<DelayedState>,
    recording: AtomicBool,
}

#[derive(Debug, Default)]
struct DelayedState {
    /// Per site, the recorded amaxes, oldest first.
    histories: Vec<VecDeque<f32>>,
    /// The site the next call takes.
    next_site: usize,
}

impl DelayedScaling {
    fn history_amax(&self, site: usize) -> Option<f32> {
        let st = self.state.lock().expect("delayed scaling lock");
        st.histories.get(site).and_then(|h| h.iter().copied().reduce(f32::max))
    }

    fn record(&self, site: usize, amax: f32) {
        if !self.recording.load(Ordering::SeqCst) {
            return;
        }
        let mut st = self.state.lock().expect("delayed scaling lock");
        if st.histories.len() <= site {
            st.histories.resize_with(site + 1, VecDeque::new);
        }
        let h = &mut st.histories[site];
        h.push_back(amax);
        while h.len() > self.len {
            h.pop_front();
        }
    }
}

/// One quantisation call: its config, stochastic-rounding counter and (delayed scaling) site,
/// drawn when the call is made so that a backward pass running later uses the forward's order.
#[derive(Debug, Clone)]
pub struct QuantCall {
    /// The config.
    pub config: QuantConfig,
    /// The stochastic-rounding counter.
    pub counter: u64,
    /// The delayed-scaling site, when the config scales with an amax history.
    pub site: Option<usize>,
}

impl QuantCall {
    /// Fake-quantises `data` (rows of `row_len`) in place: [`quantize_slice`], with the scale of
    /// a delayed-scaling site taken from its history (and the data's amax recorded).
    pub fn quantize(&self, data: &mut [f32], row_len: usize) -> Result<(), QuantError> {
        match (self.site, &self.config.delayed) {
            (Some(site), Some(d)) => {
                let own = quantize_slice_with_amax(data, row_len, &self.config, self.counter, d.history_amax(site))?;
                d.record(site, own);
                Ok(())
            }
            _ => quantize_slice(data, row_len, &self.config, self.counter),
        }
    }
}

impl QuantConfig {
    /// The config of a parsed precision name; `None` for native formats (fp32, bf16, fp16).
    pub fn from_spec(spec: &PrecisionSpec, rounding: Rounding, seed: u64) -> Result<Option<QuantConfig>, QuantError> {
        let Some(format) = Format::from_number_format(&spec.format)? else {
            return Ok(None);
        };
        QuantConfig::new(format, spec.scaling, rounding, seed).map(|q| {
            let mut q = q.with_scale_rule(ScaleRule::of(spec.scale));
            q.name = spec.name.clone();
            Some(q)
        })
    }

    /// A config from its parts, with the default AbsMax scale rule.
    pub fn new(format: Format, scaling: Scaling, rounding: Rounding, seed: u64) -> Result<QuantConfig, QuantError> {
        if scaling == Scaling::Block(0) {
            return Err(QuantError::new("block scaling needs a block size of at least 1"));
        }
        let base = match format {
            Format::Float(f) => format!("e{}m{}", f.exp_bits, f.man_bits),
            Format::Int(i) if i.neg_max > i.max => format!("mxint{}", i.bits),
            Format::Int(i) => format!("int{}", i.bits),
        };
        let name = match scaling {
            Scaling::Tensor => base,
            Scaling::Channel => format!("{base}-channel"),
            Scaling::Block(b) => format!("{base}-b{b}"),
        };
        Ok(QuantConfig {
            name,
            format,
            scaling,
            scale_rule: ScaleRule::AbsMax,
            rounding,
            seed,
            calls: Arc::new(AtomicU64::new(0)),
            delayed: None,
        })
    }

    /// The same config with another scale rule.
    pub fn with_scale_rule(mut self, rule: ScaleRule) -> QuantConfig {
        self.scale_rule = rule;
        self
    }

    /// The same config with delayed scaling over the last `history` amaxes of each site; errors
    /// unless the scaling is per tensor.
    pub fn with_amax_history(mut self, history: usize) -> Result<QuantConfig, QuantError> {
        if self.scaling != Scaling::Tensor {
            return Err(QuantError::new(format!(
                "{}: delayed scaling (amax_history) applies to per-tensor scaling only",
                self.name
            )));
        }
        if history == 0 {
            return Err(QuantError::new("amax_history must be at least 1"));
        }
        self.delayed =
            Some(Arc::new(DelayedScaling { len: history, state: Mutex::default(), recording: AtomicBool::new(true) }));
        Ok(self)
    }

    /// Whether this config scales from an amax history.
    pub fn is_delayed(&self) -> bool {
        self.delayed.is_some()
    }

    /// The number of counters handed out so far (the next call's stream).
    pub fn counter(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Sets the call counter, e.g. from a checkpoint.
    pub fn set_counter(&self, value: u64) {
        self.calls.store(value, Ordering::SeqCst)
    }

    /// Hands out the next call counter.
    pub fn next_counter(&self) -> u64 {
        self.calls.fetch_add(1, Ordering::SeqCst)
    }

    /// The next call: counter and, under delayed scaling, the next site of this pass.
    pub fn next_call(&self) -> QuantCall {
        let site = self.delayed.as_ref().map(|d| {
            let mut st = d.state.lock().expect("delayed scaling lock");
            st.next_site += 1;
            st.next_site - 1
        });
        QuantCall { config: self.clone(), counter: self.next_counter(), site }
    }

    /// A call with an explicit counter and no delayed-scaling site.
    pub fn call_at(&self, counter: u64) -> QuantCall {
        QuantCall { config: self.clone(), counter, site: None }
    }

    /// Starts a pass: delayed-scaling sites are counted from 0 again.
    pub fn begin_pass(&self) {
        if let Some(d) = &self.delayed {
            d.state.lock().expect("delayed scaling lock").next_site = 0;
        }
    }

    /// Whether delayed scaling records the amax of the calls that follow (on in training; turn
    /// it off for evaluation passes, which then use the history without changing it).
    pub fn set_recording(&self, on: bool) {
        if let Some(d) = &self.delayed {
            d.recording.store(on, Ordering::SeqCst);
        }
    }

    /// Every site's amax history, oldest first (for a checkpoint); empty without delayed scaling.
    pub fn amax_histories(&self) -> Vec<Vec<f32>> {
        self.delayed.as_ref().map_or_else(Vec::new, |d| {
            d.state
                .lock()
                .expect("delayed scaling lock")
                .histories
                .iter()
                .map(|h| h.iter().copied().collect())
                .collect()
        })
    }

    /// Restores the histories saved by [`QuantConfig::amax_histories`].
    pub fn set_amax_histories(&self, histories: &[Vec<f32>]) {
        if let Some(d) = &self.delayed {
            d.state.lock().expect("delayed scaling lock").histories =
                histories.iter().map(|h| h.iter().copied().collect()).collect();
        }
    }
}

/// The fake-quantisation configs of one run, one per target; `None` leaves that target in the
/// compute dtype. Each target has its own seed (derived from the run's) and its own call counter.
#[derive(Debug, Clone, Default)]
pub struct QuantTargets {
    /// Linear-layer weights: `fake_quant(&w, q)` before the matmul.
    pub weights: Option<QuantConfig>,
    /// Inputs to every linear layer: `fake_quant(&x, q)` before the matmul.
    pub activations: Option<QuantConfig>,
    /// The gradient flowing into a linear layer's input (dX): `quant_grad(&x, q)` on its input.
    pub gradients: Option<QuantConfig>,
    /// Attention keys and values as stored: `fake_quant(&k, q)`, `fake_quant(&v, q)`.
    pub kv: Option<QuantConfig>,
    /// Linear layers' output gradients dY before both backward products: `quant_grad(&y, q)` on
    /// the output.
    pub grad_output: Option<QuantConfig>,
    /// The attention products' inputs: Q, K (along the head dimension), V (along tokens) and the
    /// probabilities P (along keys).
    pub attention: Option<QuantConfig>,
    /// The logits product's inputs: final hidden states and the output projection.
    pub logits: Option<QuantConfig>,
}

impl QuantTargets {
    const ALL: [QuantTarget; 7] = QuantTarget::ALL;

    /// The configs of a planned point's precision (targets it does not list stay `None`), with
    /// delayed scaling on the per-tensor targets when the precision has an amax history.
    pub fn from_resolved(precision: &ResolvedPrecision, seed: u64) -> Result<QuantTargets, QuantError> {
        let mut out = QuantTargets::default();
        for (target, spec) in &precision.targets {
            let k = Self::ALL.iter().position(|t| t == target).expect("ALL lists every target") as u64;
            let target_seed = crate::rng::mix64(seed ^ crate::rng::mix64(k + 1));
            let mut config = QuantConfig::from_spec(spec, precision.rounding, target_seed)
                .map_err(|e| QuantError::new(format!("precision for {target:?}: {e}")))?;
            if let (Some(h), Some(c)) = (precision.amax_history, config.as_ref()) {
                if c.scaling == Scaling::Tensor {
                    config = Some(c.clone().with_amax_history(h as usize)?);
                }
            }
            *out.slot(*target) = config;
        }
        Ok(out)
    }

    /// The config of one target.
    pub fn get(&self, target: QuantTarget) -> Option<&QuantConfig> {
        match target {
            QuantTarget::Weights => self.weights.as_ref(),
            QuantTarget::Activations => self.activations.as_ref(),
            QuantTarget::Gradients => self.gradients.as_ref(),
            QuantTarget::Kv => self.kv.as_ref(),
            QuantTarget::GradOutput => self.grad_output.as_ref(),
            QuantTarget::Attention => self.attention.as_ref(),
            QuantTarget::Logits => self.logits.as_ref(),
        }
    }

    fn slot(&mut self, target: QuantTarget) -> &mut Option<QuantConfig> {
        match target {
            QuantTarget::Weights => &mut self.weights,
            QuantTarget::Activations => &mut self.activations,
            QuantTarget::Gradients => &mut self.gradients,
            QuantTarget::Kv => &mut self.kv,
            QuantTarget::GradOutput => &mut self.grad_output,
            QuantTarget::Attention => &mut self.attention,
            QuantTarget::Logits => &mut self.logits,
        }
    }

    fn each(&self) -> impl Iterator<Item = &QuantConfig> {
        Self::ALL.iter().filter_map(|t| self.get(*t))
    }

    /// Whether no target is quantised.
    pub fn is_empty(&self) -> bool {
        self.each().next().is_none()
    }

    /// The call counters in [`QuantTarget::ALL`]'s order (0 for absent targets), to save in a
    /// checkpoint.
    pub fn counters(&self) -> Vec<u64> {
        Self::ALL.iter().map(|t| self.get(*t).map_or(0, QuantConfig::counter)).collect()
    }

    /// Restores the counters saved by [`QuantTargets::counters`] (a shorter list, from a
    /// checkpoint of fewer targets, leaves the rest at 0).
    pub fn set_counters(&self, counters: &[u64]) {
        for (t, c) in Self::ALL.iter().zip(counters.iter().copied().chain(std::iter::repeat(0))) {
            if let Some(q) = self.get(*t) {
                q.set_counter(c);
            }
        }
    }

    /// Delayed scaling's amax histories per target (in [`QuantTarget::ALL`]'s order), for a
    /// checkpoint; empty when no target scales from a history.
    pub fn amax_histories(&self) -> Vec<Vec<Vec<f32>>> {
        if !self.each().any(QuantConfig::is_delayed) {
            return Vec::new();
        }
        Self::ALL.iter().map(|t| self.get(*t).map_or_else(Vec::new, QuantConfig::amax_histories)).collect()
    }

    /// Restores the histories saved by [`QuantTargets::amax_histories`].
    pub fn set_amax_histories(&self, histories: &[Vec<Vec<f32>>]) {
        for (t, h) in Self::ALL.iter().zip(histories) {
            if let Some(q) = self.get(*t) {
                q.set_amax_histories(h);
            }
        }
    }

    /// Starts a forward pass (delayed-scaling sites count from 0 again).
    pub fn begin_pass(&self) {
        self.each().for_each(QuantConfig::begin_pass);
    }

    /// Turns delayed scaling's recording on (training) or off (evaluation).
    pub fn set_recording(&self, on: bool) {
        self.each().for_each(|q| q.set_recording(on));
    }
}
