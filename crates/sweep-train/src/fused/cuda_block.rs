//! A whole transformer block on CUDA as one graph node, with its own backward pass: the CUDA
//! twin of [`super::block`]. Also the loss head (logits product fused with cross-entropy, over
//! f32 or bf16 logits), the embedding with a deterministic gradient, and RMSNorm (the model's
//! final norm): with these, a training step on CUDA has no composed candle op left but the
//! optimiser's.
//!
//! - Kernels: `block_kernels.cu` (NVRTC at run time): RMSNorm, RoPE with the head split,
//!   SwiGLU / GELU, causal flash attention (tiled, online softmax, no T x T buffer; backward in a
//!   dK/dV pass per key tile and a dQ pass per query tile, no atomics), cross-entropy, embedding
//!   gradient per vocabulary row. Products: cuBLAS gemm with f32 accumulation (bf16 operands for
//!   bf16 autocast, f32 outputs where the next step needs f32: residuals, norm inputs, weight
//!   gradients).
//! - bf16 autocast: the residual stream, norms, softmax statistics, master weights and their
//!   gradients stay f32; activations between kernels and product operands are bf16.
//! - Fake quantisation (f32 products only) at the CPU block's sites, with the same counters:
//!   weights, each linear layer's input, each linear layer's input gradient, and K/V.
//! - Determinism: every reduction runs in a fixed order, no atomics; cuBLAS is deterministic on
//!   one stream. Two runs on the same GPU give the same bits.
//! - The order of work is [`schedule`], written over a backend trait: the CUDA backend launches
//!   it; `tests/cuda_block_math.rs` runs the same schedule with the kernels compiled as host C++
//!   and checks it against the CPU block ([`super::block::transformer_block`]).
//!
//! Without the `cuda` feature the entry points return an error that says so.

pub mod schedule;

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The CUDA C++ source of the block kernels.
pub const SOURCE: &str = include_str!("block_kernels.cu");

/// Whether the model may choose the CUDA block path (`crate::model::ExecPath::CudaBlocks`): a
/// `cuda` build with `SWEEP_CUDA_BLOCKS=1` in the environment. Opt-in until the path has been
/// checked and measured on a GPU (scripts/gpu-check.sh); then it becomes the default on CUDA.
pub fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    cfg!(feature = "cuda")
        && *ENABLED.get_or_init(|| std::env::var("SWEEP_CUDA_BLOCKS").map(|v| v.trim() == "1").unwrap_or(false))
}

/// Device buffers kept from one step to the next by a model's CUDA ops (per layer: the
/// activations a block keeps for its backward pass; the logits of the loss head). Clones share
/// the buffers.
#[derive(Clone, Default)]
pub struct Buffers(Arc<Mutex<BTreeMap<String, Box<dyn Any + Send>>>>);

impl Buffers {
    /// Takes the buffers stored under `key` if they have type T.
    pub fn take<T: 'static>(&self, key: &str) -> Option<T> {
        let mut map = self.0.lock().expect("buffers lock");
        match map.remove(key)?.downcast::<T>() {
            Ok(b) => Some(*b),
            Err(other) => {
                map.insert(key.to_string(), other);
                None
            }
        }
    }
    /// Stores buffers under `key` for the next step.
    pub fn put<T: Send + 'static>(&self, key: &str, value: T) {
        self.0.lock().expect("buffers lock").insert(key.to_string(), Box::new(value));
    }
    /// Drops every stored buffer.
    pub fn clear(&self) {
        self.0.lock().expect("buffers lock").clear();
    }
}

#[cfg(feature = "cuda")]
mod launch;
#[cfg(feature = "cuda")]
pub use launch::{embedding, head_cross_entropy, peak_memory_bytes, reset_peak_memory, rms_norm, transformer_block};

#[cfg(not(feature = "cuda"))]
mod no_cuda {
    use super::Buffers;
    use crate::fused::block::{BlockParams, SideGrads};
    use crate::quant::QuantTargets;
    use candle_core::{DType, Device, Error, Result, Tensor};

    fn unavailable<T>() -> Result<T> {
        Err(Error::Msg("the CUDA transformer block needs a build with `--features cuda`".into()))
    }

    /// See the `cuda` build: one transformer block on CUDA (f32 or bf16 autocast).
    #[allow(clippy::too_many_arguments)]
    pub fn transformer_block(
        _x: &Tensor,
        _params: BlockParams,
        _cos: &Tensor,
        _sin: &Tensor,
        _heads: usize,
        _d_ff: usize,
        _eps: f64,
        _quant: &QuantTargets,
        _side: &SideGrads,
        _compute: DType,
        _buffers: &Buffers,
    ) -> Result<Tensor> {
        unavailable()
    }

    /// See the `cuda` build: mean cross-entropy of x W^T on CUDA.
    pub fn head_cross_entropy(
        _x: &Tensor,
        _w: &Tensor,
        _targets: &Tensor,
        _compute: DType,
        _buffers: &Buffers,
    ) -> Result<Tensor> {
        unavailable()
    }

    /// See the `cuda` build: RMSNorm on CUDA with its backward.
    pub fn rms_norm(_x: &Tensor, _w: &Tensor, _eps: f64) -> Result<Tensor> {
        unavailable()
    }

    /// See the `cuda` build: embedding rows with a deterministic gradient.
    pub fn embedding(_tokens: &Tensor, _w: &Tensor) -> Result<Tensor> {
        unavailable()
    }

    /// See the `cuda` build: the most device memory allocated so far (None without CUDA).
    pub fn peak_memory_bytes(_device: &Device) -> Option<u64> {
        None
    }

    /// See the `cuda` build: starts the peak of `peak_memory_bytes` again (nothing here).
    pub fn reset_peak_memory(_device: &Device) {}
}
#[cfg(not(feature = "cuda"))]
pub use no_cuda::{embedding, head_cross_entropy, peak_memory_bytes, reset_peak_memory, rms_norm, transformer_block};
