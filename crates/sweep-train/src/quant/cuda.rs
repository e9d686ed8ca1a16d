//! Fake quantisation on CUDA: the kernels of `fake_quant.cu` (compiled at run time with NVRTC),
//! launched on the tensor's own device, so quantised training never copies tensors to the CPU.
//!
//! The kernels compute the same function as the CPU kernel bit for bit: `tests/quant_cuda_math.rs`
//! checks the arithmetic without a GPU by compiling the .cu file as host C++, and `tests/cuda.rs`
//! checks the launched kernels on a GPU (passed on an H100 and an H200).

use super::{Format, QuantConfig, ScaleRule};
use sweep_plan::config::Rounding;
use sweep_plan::precision::Scaling;

/// The CUDA C source of the fake-quantisation kernels.
pub const CUDA_SOURCE: &str = include_str!("fake_quant.cu");

/// The scalar arguments of the kernels for one call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelParams {
    /// 0 per tensor, 1 per channel (row), 2 per block.
    pub mode: u32,
    /// Length of the last dimension.
    pub row_len: u32,
    /// Block length (the row length when rows are shorter); 0 unless per block.
    pub block: u32,
    /// 0 AbsMax, 1 PowerOfTwo, 2 Unit, 3 Ue8m0, 4 Ue4m3.
    pub rule: u32,
    /// The element format's E8M0 alignment exponent ([`Format::emax`]).
    pub emax: i32,
    /// log2 of the implicit scale of integer levels ([`Format::level_shift`]; 0 for floats).
    pub shift: i32,
    /// Mantissa bits of a float format; -1 for integer formats.
    pub man_bits: i32,
    /// Smallest normal exponent (floats).
    pub emin: i32,
    /// Exponent bias (floats); for integer formats 1 for two's-complement levels (MXINT), else 0.
    pub bias: i32,
    /// Largest finite value of the format.
    pub max: f32,
    /// 1 for stochastic rounding.
    pub stochastic: i32,
    /// Stochastic-rounding key of the call ([`super::call_key`]).
    pub key: u64,
}

/// The kernel arguments of fake-quantising rows of `row_len` elements with `q` as call `counter`.
pub fn kernel_params(q: &QuantConfig, row_len: usize, counter: u64) -> KernelParams {
    let (mode, block) = match q.scaling {
        Scaling::Tensor => (0, 0),
        Scaling::Channel => (1, 0),
        Scaling::Block(b) => (2, (b as usize).min(row_len) as u32),
    };
    let rule = match q.scale_rule {
        ScaleRule::AbsMax => 0,
        ScaleRule::PowerOfTwo => 1,
        ScaleRule::Unit => 2,
        ScaleRule::Ue8m0 => 3,
        ScaleRule::Ue4m3 => 4,
    };
    let (man_bits, emin, bias) = match q.format {
        Format::Float(f) => (f.man_bits as i32, f.emin, f.bias),
        Format::Int(i) => (-1, 0, i32::from(i.neg_max > i.max)),
    };
    let stochastic = matches!(q.rounding, Rounding::Stochastic);
    KernelParams {
        mode,
        row_len: row_len as u32,
        block,
        rule,
        emax: q.format.emax(),
        shift: q.format.level_shift(),
        man_bits,
        emin,
        bias,
        max: q.format.max(),
        stochastic: i32::from(stochastic),
        key: if stochastic { super::call_key(q.seed, counter) } else { 0 },
    }
}

#[cfg(feature = "cuda")]
pub use launch::fake_quant_cuda;
#[cfg(feature = "cuda")]
pub(crate) use launch::fake_quant_ptr;

#[cfg(feature = "cuda")]
mod launch {
    use super::{kernel_params, QuantConfig, CUDA_SOURCE};
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaDevice, CudaStorage, WrapErr};
    use candle_core::{Error, Layout, Result, Shape};
    use std::sync::OnceLock;

    const MODULE: &str = "sweep_fake_quant";
    const THREADS: u32 = 256;

    /// PTX of the kernels, compiled once per process.
    fn ptx() -> Result<&'static str> {
        use candle_core::cuda_backend::cudarc::nvrtc::CompileOptions;
        static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
        // IEEE arithmetic as on the CPU: no fused multiply-add, subnormals kept.
        let opts = CompileOptions {
            ftz: Some(false),
            prec_div: Some(true),
            prec_sqrt: Some(true),
            fmad: Some(false),
            ..Default::default()
        };
        crate::fused::cuda::ptx_once(&PTX, CUDA_SOURCE, opts, "the fake-quant CUDA kernels")
    }

    fn blocks(n: u64) -> u32 {
        n.div_ceil(THREADS as u64).clamp(1, 65_535) as u32
    }

    fn cfg(n: u64) -> LaunchConfig {
        LaunchConfig { grid_dim: (blocks(n), 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
    }

    /// Fake-quantises an f32 CUDA tensor into a new CUDA storage (same shape), with `q` as call
    /// `counter`: the same values as the CPU kernel.
    pub fn fake_quant_cuda(
        storage: &CudaStorage,
        layout: &Layout,
        q: &QuantConfig,
        counter: u64,
    ) -> Result<(CudaStorage, Shape)> {
        let (start, end) =
            layout.contiguous_offsets().ok_or_else(|| Error::Msg("fake_quant: the input must be contiguous".into()))?;
        let x = storage.as_cuda_slice::<f32>().map_err(|_| {
            Error::Msg(format!(
                "fake_quant on CUDA: dtype {:?} is not supported; use f32 (bf16 autocast keeps f32 tensors)",
                storage.dtype()
            ))
        })?;
        let dev: &CudaDevice = &storage.device;
        let stream = dev.cuda_stream();
        let x = x.slice(start..end);
        let (ptr, _guard) = x.device_ptr(&stream);
        let row_len = layout.dims().last().copied().unwrap_or(1).max(1);
        let y = fake_quant_ptr(dev, ptr, end - start, row_len, q, counter)?;
        Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), layout.shape().clone()))
    }

    /// Fake-quantises `n` f32 values at device address `x` (rows of `row_len`, on `dev`'s
    /// stream) into a new buffer, with `q` as call `counter`.
    pub(crate) fn fake_quant_ptr(
        dev: &CudaDevice,
        x: u64,
        n: usize,
        row_len: usize,
        q: &QuantConfig,
        counter: u64,
    ) -> Result<CudaSlice<f32>> {
        let n = n as u64;
        let p = kernel_params(q, row_len, counter);
        let rows = n / row_len as u64;
        let groups: u64 = match p.mode {
            0 => 1,
            1 => rows,
            _ => rows * (row_len as u64).div_ceil(p.block.max(1) as u64),
        };
        let ptx = ptx()?;
        let mut amax = dev.alloc_zeros::<u32>(groups as usize)?;
        // The whole tensor's amax, for the per-tensor scale of E4M3 block scales.
        let mut tensor_amax = dev.alloc_zeros::<u32>(1)?;
        if n > 0 && p.rule == 4 && p.mode != 0 {
            let f = dev.get_or_load_custom_func("fq_amax_tensor", MODULE, ptx)?;
            let mut b = f.builder();
            b.arg(&x).arg(&n).arg(&mut tensor_amax);
            // SAFETY: the kernel reads n elements of x and writes tensor_amax[0]; both are allocated.
            unsafe { b.launch(cfg(n)) }.w()?;
        }
        if n > 0 {
            if p.mode == 0 {
                let f = dev.get_or_load_custom_func("fq_amax_tensor", MODULE, ptx)?;
                let mut b = f.builder();
                b.arg(&x).arg(&n).arg(&mut amax);
                // SAFETY: the kernel reads n elements of x and writes amax[0]; both are allocated.
                unsafe { b.launch(cfg(n)) }.w()?;
            } else {
                let f = dev.get_or_load_custom_func("fq_amax_groups", MODULE, ptx)?;
                let (row_len, block) = (p.row_len, if p.mode == 1 { p.row_len } else { p.block });
                let mut b = f.builder();
                b.arg(&x).arg(&rows).arg(&row_len).arg(&block).arg(&mut amax);
                // SAFETY: one thread per group reads its rows' elements (< n) and writes amax[g].
                unsafe { b.launch(cfg(groups)) }.w()?;
            }
        }
        let mut scale = dev.alloc_zeros::<f64>(groups as usize)?;
        let mut inv = dev.alloc_zeros::<f64>(groups as usize)?;
        {
            let f = dev.get_or_load_custom_func("fq_scales", MODULE, ptx)?;
            let mut b = f.builder();
            let whole = if p.mode == 0 { &amax } else { &tensor_amax };
            b.arg(&amax)
                .arg(&groups)
                .arg(&p.max)
                .arg(&p.rule)
                .arg(&p.emax)
                .arg(&p.shift)
                .arg(whole)
                .arg(&mut scale)
                .arg(&mut inv);
            // SAFETY: one thread per group, all three arrays hold `groups` elements.
            unsafe { b.launch(cfg(groups)) }.w()?;
        }
        // SAFETY: fq_apply writes every one of the n elements before the storage is used.
        let mut y = unsafe { dev.alloc::<f32>((n as usize).max(1))? };
        if n > 0 {
            let f = dev.get_or_load_custom_func("fq_apply", MODULE, ptx)?;
            let block = if p.mode == 1 { p.row_len } else { p.block };
            let mut b = f.builder();
            b.arg(&x).arg(&mut y).arg(&n).arg(&p.mode).arg(&p.row_len).arg(&block).arg(&scale).arg(&inv);
            let divide = i32::from(p.rule == 4);
            b.arg(&p.man_bits).arg(&p.emin).arg(&p.bias).arg(&p.max).arg(&p.stochastic).arg(&p.key).arg(&divide);
            // SAFETY: grid-stride loop over n elements of x and y; scale/inv hold every group.
            unsafe { b.launch(cfg(n)) }.w()?;
        }
        Ok(y)
    }
}
