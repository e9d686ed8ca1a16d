//! Candle ops: fake quantisation with a straight-through gradient, and gradient quantisation.

use super::{QuantCall, QuantConfig};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Device, Error, Layout, Result, Shape, Tensor};
use half::{bf16, f16};

/// Fake-quantises `x` with the config's next call counter. Forward: quantise then dequantise
/// (same shape, dtype and device). Backward: the identity straight-through estimator, everywhere
/// (saturated values included).
pub fn fake_quant(x: &Tensor, q: &QuantConfig) -> Result<Tensor> {
    fake_quant_call(x, q.next_call())
}

/// [`fake_quant`] with an explicit stochastic-rounding counter (the config's counter is untouched).
pub fn fake_quant_at(x: &Tensor, q: &QuantConfig, counter: u64) -> Result<Tensor> {
    fake_quant_call(x, q.call_at(counter))
}

/// [`fake_quant`] of one drawn call (counter and delayed-scaling site).
pub fn fake_quant_call(x: &Tensor, call: QuantCall) -> Result<Tensor> {
    let cpu_only = call.site.is_some();
    on_kernel_device(x, cpu_only, |x| x.apply_op1(FakeQuant { call }))
}

/// The identity in the forward pass; in the backward pass the incoming gradient is fake-quantised
/// (scales from the gradient itself, along its last dimension) with the config's next call
/// counter, drawn now so the backward's order cannot change the random stream.
pub fn quant_grad(x: &Tensor, q: &QuantConfig) -> Result<Tensor> {
    quant_grad_call(x, q.next_call())
}

/// [`quant_grad`] with an explicit stochastic-rounding counter.
pub fn quant_grad_at(x: &Tensor, q: &QuantConfig, counter: u64) -> Result<Tensor> {
    quant_grad_call(x, q.call_at(counter))
}

/// [`quant_grad`] of one drawn call.
pub fn quant_grad_call(x: &Tensor, call: QuantCall) -> Result<Tensor> {
    on_kernel_device(x, false, |x| x.apply_op1(QuantGrad { call }))
}

/// Runs `f` on `x` made contiguous: in place on the CPU, and on CUDA for f32 tensors when built
/// with the `cuda` feature (the kernels of `fake_quant.cu`); other devices and dtypes, and
/// delayed scaling (`cpu_only`: its amax history lives on the host), go through a CPU copy that
/// is moved back to `x`'s device (the transfers are differentiable in candle).
fn on_kernel_device(x: &Tensor, cpu_only: bool, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let on_device =
        x.device().is_cpu() || (!cpu_only && cfg!(feature = "cuda") && x.device().is_cuda() && x.dtype() == DType::F32);
    if on_device {
        f(&x.contiguous()?)
    } else {
        f(&x.to_device(&Device::Cpu)?.contiguous()?)?.to_device(x.device())
    }
}

/// Fake-quantises a CPU tensor's storage into a new storage of the same dtype.
fn quantize_storage(storage: &CpuStorage, layout: &Layout, call: &QuantCall, op: &str) -> Result<CpuStorage> {
    let (start, end) =
        layout.contiguous_offsets().ok_or_else(|| Error::Msg(format!("{op}: the input must be contiguous")))?;
    let row_len = layout.dims().last().copied().unwrap_or(1);
    let run = |mut v: Vec<f32>| -> Result<Vec<f32>> {
        call.quantize(&mut v, row_len)?;
        Ok(v)
    };
    Ok(match storage {
        CpuStorage::F32(s) => CpuStorage::F32(run(s[start..end].to_vec())?),
        CpuStorage::BF16(s) => {
            let v = run(s[start..end].iter().map(|x| x.to_f32()).collect())?;
            CpuStorage::BF16(v.into_iter().map(bf16::from_f32).collect())
        }
        CpuStorage::F16(s) => {
            let v = run(s[start..end].iter().map(|x| x.to_f32()).collect())?;
            CpuStorage::F16(v.into_iter().map(f16::from_f32).collect())
        }
        CpuStorage::F64(s) => {
            let v = run(s[start..end].iter().map(|&x| x as f32).collect())?;
            CpuStorage::F64(v.into_iter().map(f64::from).collect())
        }
        other => {
            let dtype: DType = other.dtype();
            return Err(Error::Msg(format!("{op}: dtype {dtype:?} is not supported; use f32, bf16, f16 or f64")));
        }
    })
}

/// Quantise-dequantise forward, identity backward.
struct FakeQuant {
    call: QuantCall,
}

impl CustomOp1 for FakeQuant {
    fn name(&self) -> &'static str {
        "fake_quant"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = quantize_storage(storage, layout, &self.call, self.name())?;
        Ok((out, layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::fake_quant_cuda(storage, layout, &self.call.config, self.call.counter)
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.clone()))
    }
}

/// Identity forward, gradient-quantising backward.
struct QuantGrad {
    call: QuantCall,
}

impl CustomOp1 for QuantGrad {
    fn name(&self) -> &'static str {
        "quant_grad"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (start, end) =
            layout.contiguous_offsets().ok_or_else(|| Error::Msg("quant_grad: the input must be contiguous".into()))?;
        let out = match storage {
            CpuStorage::F32(s) => CpuStorage::F32(s[start..end].to_vec()),
            CpuStorage::BF16(s) => CpuStorage::BF16(s[start..end].to_vec()),
            CpuStorage::F16(s) => CpuStorage::F16(s[start..end].to_vec()),
            CpuStorage::F64(s) => CpuStorage::F64(s[start..end].to_vec()),
            other => {
                return Err(Error::Msg(format!(
                    "quant_grad: dtype {:?} is not supported; use f32, bf16, f16 or f64",
                    other.dtype()
                )))
            }
        };
        Ok((out, layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendDevice;
        // The identity: a copy of the layout's elements.
        let (start, end) =
            layout.contiguous_offsets().ok_or_else(|| Error::Msg("quant_grad: the input must be contiguous".into()))?;
        let x = storage.as_cuda_slice::<f32>().map_err(|_| {
            Error::Msg(format!("quant_grad on CUDA: dtype {:?} is not supported; use f32", storage.dtype()))
        })?;
        let dev = &storage.device;
        let mut y = dev.zeros_impl(layout.shape(), DType::F32)?;
        dev.memcpy_dtod(&x.slice(start..end), y.as_cuda_slice_mut::<f32>()?)?;
        Ok((y, layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let cpu_only = self.call.site.is_some();
        let grad =
            on_kernel_device(grad_res, cpu_only, |g| g.apply_op1_no_bwd(&FakeQuant { call: self.call.clone() }))?;
        Ok(Some(grad))
    }
}
