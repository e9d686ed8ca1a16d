//! The CUDA backend of the block schedule (NVRTC kernels, cuBLAS) and the candle ops around it:
//! the transformer block, the loss head and the embedding, each a graph node with its own
//! backward pass.

use super::schedule::{self, Arg, Backend, BlockDims, BlockWeights, Elem, Gemm, Grid, HeadDims, HeadSaved, Ptr, Saved};
use super::{Buffers, SOURCE};
use crate::fused::block::{BlockParams, SideGrads};
use crate::quant::{QuantConfig, QuantTargets};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cublas::{result as cublas, sys as cublas_sys};
use candle_core::cuda_backend::cudarc::driver::{
    result as driver, sys as driver_sys, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::cudarc::nvrtc::CompileOptions;
use candle_core::cuda_backend::{CudaDevice, CudaStorage, WrapErr};
use candle_core::op::BackpropOp;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, Error, Layout, Result, Shape, Storage, Tensor,
};
use std::sync::{Arc, Mutex, OnceLock};

const MODULE: &str = "sweep_block_kernels";

fn ptx() -> Result<&'static str> {
    static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    // No contraction into fused multiply-adds beyond the source's explicit fmaf: the same
    // arithmetic as the host build the tests check.
    let opts = CompileOptions { fmad: Some(false), ..Default::default() };
    crate::fused::cuda::ptx_once(&PTX, SOURCE, opts, "the CUDA block kernels")
}

/// The schedule's backend on one candle CUDA device (its stream, its cuBLAS handle).
pub(crate) struct Cuda {
    dev: CudaDevice,
    stream: Arc<CudaStream>,
}

impl Cuda {
    pub(crate) fn new(dev: &CudaDevice) -> Cuda {
        keep_pool_memory(dev);
        Cuda { dev: dev.clone(), stream: dev.cuda_stream() }
    }
}

/// The default memory pool of `dev`'s GPU keeps freed memory for reuse instead of returning it
/// to the driver at every synchronisation (its release threshold is 0 by default): buffers
/// freed in one step are reused by the next without new mappings. Once per GPU.
fn keep_pool_memory(dev: &CudaDevice) {
    static DONE: OnceLock<Mutex<Vec<i32>>> = OnceLock::new();
    let ctx = dev.cuda_stream().context().clone();
    let ordinal = ctx.cu_device();
    let mut done = DONE.get_or_init(Default::default).lock().expect("pool lock");
    if done.contains(&ordinal) {
        return;
    }
    done.push(ordinal);
    if let Some(pool) = default_pool(dev) {
        let mut threshold = u64::MAX;
        // SAFETY: a valid pool handle and a u64 value, as the attribute requires. A failure
        // only leaves the driver's default in place.
        let _ = unsafe {
            driver_sys::cuMemPoolSetAttribute(
                pool,
                driver_sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                &mut threshold as *mut u64 as *mut std::ffi::c_void,
            )
        };
    }
}

fn default_pool(dev: &CudaDevice) -> Option<driver_sys::CUmemoryPool> {
    let ctx = dev.cuda_stream().context().clone();
    let mut pool: driver_sys::CUmemoryPool = std::ptr::null_mut();
    // SAFETY: writes one pool handle for a valid device.
    let r = unsafe { driver_sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) };
    (r == driver_sys::CUresult::CUDA_SUCCESS && !pool.is_null()).then_some(pool)
}

/// The most device memory in use at once so far through the GPU's default memory pool (where
/// candle's and these ops' allocations come from), in bytes; None on other devices.
pub fn peak_memory_bytes(device: &Device) -> Option<u64> {
    let Device::Cuda(dev) = device else { return None };
    let pool = default_pool(dev)?;
    let mut v: u64 = 0;
    // SAFETY: reads one u64 attribute of a valid pool.
    let r = unsafe {
        driver_sys::cuMemPoolGetAttribute(
            pool,
            driver_sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
            &mut v as *mut u64 as *mut std::ffi::c_void,
        )
    };
    (r == driver_sys::CUresult::CUDA_SUCCESS).then_some(v)
}

/// Starts the peak of [`peak_memory_bytes`] again from the memory in use now.
pub fn reset_peak_memory(device: &Device) {
    let Device::Cuda(dev) = device else { return };
    if let Some(pool) = default_pool(dev) {
        let mut zero: u64 = 0;
        // SAFETY: writing 0 to the high-water mark resets it, as the driver documents.
        let _ = unsafe {
            driver_sys::cuMemPoolSetAttribute(
                pool,
                driver_sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                &mut zero as *mut u64 as *mut std::ffi::c_void,
            )
        };
    }
}

fn cublas_type(e: Elem) -> cublas_sys::cudaDataType_t {
    match e {
        Elem::F32 => cublas_sys::cudaDataType_t::CUDA_R_32F,
        Elem::Bf16 => cublas_sys::cudaDataType_t::CUDA_R_16BF,
    }
}

fn int(x: usize, what: &str) -> Result<i32> {
    i32::try_from(x).map_err(|_| Error::Msg(format!("cuBLAS: {what} = {x} does not fit an int")))
}

impl Backend for Cuda {
    type Buf = CudaSlice<f32>;

    fn alloc(&self, bytes: usize) -> Result<CudaSlice<f32>> {
        // SAFETY: the schedule writes every buffer before it reads it.
        unsafe { self.dev.alloc::<f32>(bytes.div_ceil(4).max(1)) }
    }

    fn ptr(&self, buf: &CudaSlice<f32>) -> Ptr {
        // One stream: the event guard is not needed past this point.
        buf.device_ptr(&self.stream).0
    }

    fn upload_u32(&self, data: &[u32]) -> Result<CudaSlice<f32>> {
        let bits: Vec<f32> = data.iter().map(|&u| f32::from_bits(u)).collect();
        let bits = if bits.is_empty() { vec![0.0] } else { bits };
        self.dev.clone_htod(&bits)
    }

    fn launch(&self, name: &str, grid: Grid, args: &[Arg]) -> Result<()> {
        let f = self.dev.get_or_load_custom_func(name, MODULE, ptx()?)?;
        let mut b = f.builder();
        for a in args {
            match a {
                Arg::Ptr(p) => b.arg(p),
                Arg::U32(v) => b.arg(v),
                Arg::U64(v) => b.arg(v),
                Arg::F32(v) => b.arg(v),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: (grid.blocks.0, grid.blocks.1, 1),
            block_dim: (grid.threads, 1, 1),
            shared_mem_bytes: grid.shared_bytes,
        };
        // SAFETY: the schedule sizes every buffer for the grid it launches (checked on the host
        // by tests/cuda_block_math.rs, whose kernel emulation rejects out-of-allocation pointers).
        unsafe { b.launch(cfg) }.w()?;
        Ok(())
    }

    fn gemm(&self, g: &Gemm) -> Result<()> {
        let op = |t: bool| {
            if t {
                cublas_sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                cublas_sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let (alpha, beta) = (1.0f32, g.beta);
        let blas = self.dev.cublas_handle();
        // SAFETY: the pointers address buffers of the schedule sized for these dimensions; alpha
        // and beta are f32 as CUBLAS_COMPUTE_32F requires; cuBLAS runs on the device's stream.
        unsafe {
            cublas::gemm_ex(
                *blas.handle(),
                op(g.trans_a),
                op(g.trans_b),
                int(g.m, "m")?,
                int(g.n, "n")?,
                int(g.k, "k")?,
                &alpha as *const f32 as *const std::ffi::c_void,
                g.a as *const std::ffi::c_void,
                cublas_type(g.a_type),
                int(g.lda.max(1), "lda")?,
                g.b as *const std::ffi::c_void,
                cublas_type(g.b_type),
                int(g.ldb.max(1), "ldb")?,
                &beta as *const f32 as *const std::ffi::c_void,
                g.c as *mut std::ffi::c_void,
                cublas_type(g.c_type),
                int(g.ldc.max(1), "ldc")?,
                cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT_TENSOR_OP,
            )
        }
        .map_err(|e| Error::Msg(format!("cuBLAS gemm {g:?}: {e:?}")))
    }

    fn copy(&self, dst: Ptr, src: Ptr, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        // SAFETY: both ranges lie in buffers of the schedule; ordered on the device's stream.
        unsafe { driver::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }.w()
    }

    fn fake_quant(&self, src: Ptr, n: usize, row_len: usize, q: &QuantConfig, counter: u64) -> Result<CudaSlice<f32>> {
        crate::quant::cuda::fake_quant_ptr(&self.dev, src, n, row_len, q, counter)
    }
}

fn cpu_only(op: &str) -> Result<(CpuStorage, Shape)> {
    Err(Error::Msg(format!("{op} runs on CUDA only (the CPU has its own fused block)")))
}

/// The address of a contiguous CUDA tensor's first element (element type T).
fn tensor_ptr<T: candle_core::cuda_backend::CudaDType>(t: &Tensor, stream: &CudaStream, what: &str) -> Result<Ptr> {
    let (s, l) = t.storage_and_layout();
    let Storage::Cuda(c) = &*s else { bail!("{what}: expected a CUDA tensor") };
    storage_ptr::<T>(c, l, stream, what)
}

fn storage_ptr<T: candle_core::cuda_backend::CudaDType>(
    c: &CudaStorage,
    l: &Layout,
    stream: &CudaStream,
    what: &str,
) -> Result<Ptr> {
    let (a, _) = l.contiguous_offsets().ok_or_else(|| Error::Msg(format!("{what}: must be contiguous")))?;
    let slice = c.as_cuda_slice::<T>().map_err(|_| Error::Msg(format!("{what}: unexpected dtype {:?}", c.dtype())))?;
    Ok(slice.device_ptr(stream).0 + (a * std::mem::size_of::<T>()) as u64)
}

fn f32_tensor(buf: CudaSlice<f32>, dev: &CudaDevice, shape: impl Into<Shape>) -> Tensor {
    Tensor::from_storage(
        Storage::Cuda(CudaStorage::wrap_cuda_slice(buf, dev.clone())),
        shape,
        BackpropOp::none(),
        false,
    )
}

fn elem_of(dtype: DType) -> Result<Elem> {
    match dtype {
        DType::F32 => Ok(Elem::F32),
        DType::BF16 => Ok(Elem::Bf16),
        d => bail!("CUDA block: compute dtype {d:?} is not supported; use f32 or bf16"),
    }
}

// ---------------------------------------------------------------------------------------------
// The transformer block

struct BlockOp {
    /// (name, shape) of each weight, in the CPU block's order.
    names: Vec<(String, Vec<usize>)>,
    weights: Vec<Tensor>,
    cos: Tensor,
    sin: Tensor,
    dims: BlockDims,
    quant: QuantTargets,
    side: SideGrads,
    buffers: Buffers,
    key: String,
    saved: Mutex<Option<Saved<CudaSlice<f32>>>>,
}

impl BlockOp {
    fn pointers(&self, stream: &CudaStream) -> Result<(BlockWeights, Ptr, Ptr)> {
        let ptrs = self
            .weights
            .iter()
            .zip(&self.names)
            .map(|(w, (n, _))| tensor_ptr::<f32>(w, stream, n))
            .collect::<Result<Vec<_>>>()?;
        Ok((
            BlockWeights::from_ordered(&ptrs, self.dims.swiglu)?,
            tensor_ptr::<f32>(&self.cos, stream, "RoPE cos")?,
            tensor_ptr::<f32>(&self.sin, stream, "RoPE sin")?,
        ))
    }
}

impl Drop for BlockOp {
    fn drop(&mut self) {
        // A forward pass without a backward pass (evaluation): its buffers serve the next step.
        if let Some(saved) = self.saved.get_mut().ok().and_then(|s| s.take()) {
            self.buffers.put(&self.key, saved);
        }
    }
}

impl CustomOp1 for BlockOp {
    fn name(&self) -> &'static str {
        "sweep-cuda-transformer-block"
    }

    fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> Result<(CpuStorage, Shape)> {
        cpu_only(self.name())
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let dm = &self.dims;
        if l.dims() != [dm.b, dm.t, dm.d()] {
            bail!("CUDA block: input {:?}, expected [{}, {}, {}]", l.dims(), dm.b, dm.t, dm.d());
        }
        let dev = Cuda::new(&s.device);
        let x = storage_ptr::<f32>(s, l, &dev.stream, "block input")?;
        let (w, cos, sin) = self.pointers(&dev.stream)?;
        let y = dev.alloc(dm.rows() * dm.d() * 4)?;
        let reuse = self.buffers.take::<Saved<CudaSlice<f32>>>(&self.key);
        let saved = schedule::block_fwd(&dev, dm, x, &w, (cos, sin), &self.quant, dev.ptr(&y), reuse)?;
        if let Some(old) = self.saved.lock().expect("saved lock").replace(saved) {
            self.buffers.put(&self.key, old);
        }
        Ok((CudaStorage::wrap_cuda_slice(y, s.device.clone()), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, gy: &Tensor) -> Result<Option<Tensor>> {
        let bwd = BlockBwd { op: self, grads: Mutex::new(Vec::new()) };
        let dx = x.apply_op2_no_bwd(&gy.contiguous()?, &bwd)?;
        let cdev = x.device().as_cuda_device()?.clone();
        let grads = bwd.grads.into_inner().expect("grads lock");
        let mut side = self.side.lock().expect("side grads lock");
        for ((name, shape), g) in self.names.iter().zip(grads) {
            let g = f32_tensor(g, &cdev, shape.as_slice());
            let g = match side.remove(name) {
                Some(prev) => (prev + g)?,
                None => g,
            };
            side.insert(name.clone(), g);
        }
        Ok(Some(dx))
    }
}

struct BlockBwd<'a> {
    op: &'a BlockOp,
    grads: Mutex<Vec<CudaSlice<f32>>>,
}

impl CustomOp2 for BlockBwd<'_> {
    fn name(&self) -> &'static str {
        "sweep-cuda-transformer-block-bwd"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        cpu_only(self.name())
    }

    fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout, gs: &CudaStorage, gl: &Layout) -> Result<(CudaStorage, Shape)> {
        if xl.shape() != gl.shape() {
            bail!("CUDA block backward: gradient {:?} for an input {:?}", gl.dims(), xl.dims());
        }
        let op = self.op;
        let dev = Cuda::new(&xs.device);
        let saved = op
            .saved
            .lock()
            .expect("saved lock")
            .take()
            .ok_or_else(|| Error::Msg("CUDA block: backward without a forward pass".into()))?;
        let x = storage_ptr::<f32>(xs, xl, &dev.stream, "block input")?;
        let gy = storage_ptr::<f32>(gs, gl, &dev.stream, "block output gradient")?;
        let (w, cos, sin) = op.pointers(&dev.stream)?;
        let dx = dev.alloc(xl.shape().elem_count() * 4)?;
        let grads = schedule::block_bwd(&dev, &saved, x, &w, (cos, sin), &op.quant, gy, dev.ptr(&dx))?;
        op.buffers.put(&op.key, saved);
        *self.grads.lock().expect("grads lock") = grads;
        Ok((CudaStorage::wrap_cuda_slice(dx, xs.device.clone()), xl.shape().clone()))
    }
}

/// One transformer block on x [B, T, d] (f32, CUDA): x + attn(norm(x)), then + mlp(norm(.)),
/// as [`crate::fused::block::transformer_block`] computes on the CPU. `cos` and `sin` are the
/// RoPE tables [T, hd/2] (f32, CUDA); `quant` the fake quantisation of the point's precision
/// (f32 compute only); weight gradients land in `side`. `compute` is F32, or BF16 for autocast
/// (bf16 activations and products, f32 residual stream, norms, softmax and gradients of the
/// master weights). `buffers` keeps the activations' memory from step to step (one per model).
#[allow(clippy::too_many_arguments)]
pub fn transformer_block(
    x: &Tensor,
    params: BlockParams,
    cos: &Tensor,
    sin: &Tensor,
    heads: usize,
    d_ff: usize,
    eps: f64,
    quant: &QuantTargets,
    side: &SideGrads,
    compute: DType,
    buffers: &Buffers,
) -> Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    if !x.device().is_cuda() || x.dtype() != DType::F32 {
        bail!("CUDA block: the input must be an f32 CUDA tensor, got {:?} on {:?}", x.dtype(), x.device());
    }
    if heads == 0 || d % heads != 0 || !(d / heads).is_multiple_of(2) {
        bail!("CUDA block: d_model {d} does not split into {heads} heads of even size");
    }
    let hd = d / heads;
    let mut want: Vec<Vec<usize>> = vec![vec![d], vec![d, d], vec![d, d], vec![d, d], vec![d, d], vec![d]];
    if params.swiglu {
        want.push(vec![d_ff, d]);
    }
    want.extend([vec![d_ff, d], vec![d, d_ff]]);
    if params.weights.len() != want.len()
        || params.weights.iter().zip(&want).any(|((_, w), s)| w.dims() != s.as_slice() || w.dtype() != DType::F32)
    {
        let got: Vec<_> = params.weights.iter().map(|(n, w)| format!("{n} {:?} {:?}", w.dims(), w.dtype())).collect();
        bail!("CUDA block: weights {got:?} do not have the shapes {want:?} (f32)");
    }
    if cos.dims() != [t, hd / 2] || sin.dims() != [t, hd / 2] {
        bail!("CUDA block: RoPE tables {:?} {:?}, expected [{t}, {}]", cos.dims(), sin.dims(), hd / 2);
    }
    let dims = BlockDims { b, t, h: heads, hd, d_ff, eps: eps as f32, swiglu: params.swiglu, elem: elem_of(compute)? };
    let key = format!("block {} {compute:?}", params.weights[0].0);
    let names = params.weights.iter().map(|(n, w)| (n.clone(), w.dims().to_vec())).collect();
    let weights = params.weights.iter().map(|(_, w)| w.contiguous()).collect::<Result<Vec<_>>>()?;
    let op = BlockOp {
        names,
        weights,
        cos: cos.to_dtype(DType::F32)?.contiguous()?,
        sin: sin.to_dtype(DType::F32)?.contiguous()?,
        dims,
        quant: quant.clone(),
        side: side.clone(),
        buffers: buffers.clone(),
        key,
        saved: Mutex::new(None),
    };
    x.contiguous()?.apply_op1(op)
}

// ---------------------------------------------------------------------------------------------
// The loss head

struct HeadOp {
    targets: Tensor,
    elem: Elem,
    buffers: Buffers,
    saved: Mutex<Option<HeadSaved<CudaSlice<f32>>>>,
}

const HEAD_KEY: &str = "loss head";

impl Drop for HeadOp {
    fn drop(&mut self) {
        if let Some(saved) = self.saved.get_mut().ok().and_then(|s| s.take()) {
            self.buffers.put(HEAD_KEY, saved);
        }
    }
}

impl CustomOp2 for HeadOp {
    fn name(&self) -> &'static str {
        "sweep-cuda-head-cross-entropy"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        cpu_only(self.name())
    }

    fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout, ws: &CudaStorage, wl: &Layout) -> Result<(CudaStorage, Shape)> {
        let (n, d) = xl.shape().dims2()?;
        let (v, d2) = wl.shape().dims2()?;
        if d != d2 {
            bail!("cross-entropy: hidden size {d} but the output projection is [{v}, {d2}]");
        }
        let dev = Cuda::new(&xs.device);
        let x = storage_ptr::<f32>(xs, xl, &dev.stream, "hidden states")?;
        let w = storage_ptr::<f32>(ws, wl, &dev.stream, "output projection")?;
        let targets = tensor_ptr::<u32>(&self.targets, &dev.stream, "targets")?;
        let loss = dev.alloc(4)?;
        let hd = HeadDims { n, d, v, elem: self.elem };
        let reuse = self.buffers.take::<HeadSaved<CudaSlice<f32>>>(HEAD_KEY);
        let saved = schedule::head_ce_fwd(&dev, x, w, targets, dev.ptr(&loss), hd, reuse)?;
        if let Some(old) = self.saved.lock().expect("head lock").replace(saved) {
            self.buffers.put(HEAD_KEY, old);
        }
        Ok((CudaStorage::wrap_cuda_slice(loss, xs.device.clone()), Shape::from(())))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _loss: &Tensor, gl: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let bwd = HeadBwd { op: self, dw: Mutex::new(None) };
        let gl = gl.to_dtype(DType::F32)?.contiguous()?;
        let dx = x.apply_op3_no_bwd(w, &gl, &bwd)?;
        let dw = bwd.dw.into_inner().expect("head lock").ok_or_else(|| Error::Msg("cross-entropy: no dW".into()))?;
        let dw = f32_tensor(dw, x.device().as_cuda_device()?, w.shape());
        Ok((Some(dx), Some(dw)))
    }
}

struct HeadBwd<'a> {
    op: &'a HeadOp,
    dw: Mutex<Option<CudaSlice<f32>>>,
}

impl CustomOp3 for HeadBwd<'_> {
    fn name(&self) -> &'static str {
        "sweep-cuda-head-cross-entropy-bwd"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu_only(self.name())
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = Cuda::new(&xs.device);
        let saved = self
            .op
            .saved
            .lock()
            .expect("head lock")
            .take()
            .ok_or_else(|| Error::Msg("cross-entropy: backward without a forward pass".into()))?;
        let x = storage_ptr::<f32>(xs, xl, &dev.stream, "hidden states")?;
        let w = storage_ptr::<f32>(ws, wl, &dev.stream, "output projection")?;
        let g = storage_ptr::<f32>(gs, gl, &dev.stream, "loss gradient")?;
        let targets = tensor_ptr::<u32>(&self.op.targets, &dev.stream, "targets")?;
        let dx = dev.alloc(xl.shape().elem_count() * 4)?;
        let dw = dev.alloc(wl.shape().elem_count() * 4)?;
        schedule::head_ce_bwd(&dev, &saved, x, w, targets, g, dev.ptr(&dx), dev.ptr(&dw))?;
        self.op.buffers.put(HEAD_KEY, saved);
        *self.dw.lock().expect("head lock") = Some(dw);
        Ok((CudaStorage::wrap_cuda_slice(dx, xs.device.clone()), xl.shape().clone()))
    }
}

/// Mean cross-entropy (nats) of logits = x W^T (x [N, d], W [V, d]; f32 CUDA tensors) against
/// `targets` [N] (any integer dtype, values below V): one product into a logits buffer kept from
/// step to step in `buffers` (f32, or bf16 when `compute` is BF16: operands and logits bf16,
/// softmax and loss in f32), then one kernel per row. The backward turns the logits into their
/// gradient in place and returns dx and dW (f32).
pub fn head_cross_entropy(
    x: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    compute: DType,
    buffers: &Buffers,
) -> Result<Tensor> {
    let (n, _) = x.dims2()?;
    let targets = targets.flatten_all()?.to_dtype(DType::U32)?.contiguous()?;
    if targets.dim(0)? != n {
        bail!("cross-entropy: {} targets for {n} rows", targets.dim(0)?);
    }
    let op = HeadOp { targets, elem: elem_of(compute)?, buffers: buffers.clone(), saved: Mutex::new(None) };
    x.contiguous()?.apply_op2(&w.contiguous()?, op)
}

// ---------------------------------------------------------------------------------------------
// RMSNorm (the model's final norm)

struct RmsOp {
    eps: f32,
    rstd: Mutex<Option<CudaSlice<f32>>>,
}

impl CustomOp2 for RmsOp {
    fn name(&self) -> &'static str {
        "sweep-cuda-rms-norm"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        cpu_only(self.name())
    }

    fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout, ws: &CudaStorage, wl: &Layout) -> Result<(CudaStorage, Shape)> {
        let d = wl.shape().elem_count();
        if xl.dims().last() != Some(&d) {
            bail!("rms_norm: input {:?} does not end in the weight's size {d}", xl.dims());
        }
        let rows = xl.shape().elem_count() / d.max(1);
        let dev = Cuda::new(&xs.device);
        let x = storage_ptr::<f32>(xs, xl, &dev.stream, "rms_norm input")?;
        let w = storage_ptr::<f32>(ws, wl, &dev.stream, "rms_norm weight")?;
        let (y, rstd) = (dev.alloc(rows * d * 4)?, dev.alloc(rows * 4)?);
        schedule::rms_fwd(&dev, x, w, dev.ptr(&y), Elem::F32, dev.ptr(&rstd), rows, d, self.eps)?;
        *self.rstd.lock().expect("rms lock") = Some(rstd);
        Ok((CudaStorage::wrap_cuda_slice(y, xs.device.clone()), xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, gy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let bwd = RmsBwd { op: self, dw: Mutex::new(None) };
        let dx = x.apply_op3_no_bwd(w, &gy.contiguous()?, &bwd)?;
        let dw = bwd.dw.into_inner().expect("rms lock").ok_or_else(|| Error::Msg("rms_norm: no dw".into()))?;
        Ok((Some(dx), Some(f32_tensor(dw, x.device().as_cuda_device()?, w.shape()))))
    }
}

struct RmsBwd<'a> {
    op: &'a RmsOp,
    dw: Mutex<Option<CudaSlice<f32>>>,
}

impl CustomOp3 for RmsBwd<'_> {
    fn name(&self) -> &'static str {
        "sweep-cuda-rms-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu_only(self.name())
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let d = wl.shape().elem_count();
        let rows = xl.shape().elem_count() / d.max(1);
        let dev = Cuda::new(&xs.device);
        let rstd = self.op.rstd.lock().expect("rms lock").take();
        let rstd = rstd.ok_or_else(|| Error::Msg("rms_norm: backward without a forward pass".into()))?;
        let x = storage_ptr::<f32>(xs, xl, &dev.stream, "rms_norm input")?;
        let w = storage_ptr::<f32>(ws, wl, &dev.stream, "rms_norm weight")?;
        let gy = storage_ptr::<f32>(gs, gl, &dev.stream, "rms_norm output gradient")?;
        let (dx, dw) = (dev.alloc(rows * d * 4)?, dev.alloc(d * 4)?);
        schedule::rms_bwd(&dev, (x, w, dev.ptr(&rstd), gy, 0), dev.ptr(&dx), 0, Elem::F32, dev.ptr(&dw), rows, d)?;
        *self.dw.lock().expect("rms lock") = Some(dw);
        Ok((CudaStorage::wrap_cuda_slice(dx, xs.device.clone()), xl.shape().clone()))
    }
}

/// RMSNorm over the last dimension of x (f32, CUDA) with weight w [d]: x / sqrt(mean(x^2) + eps)
/// w, one kernel each way (the weight gradient summed over row chunks in a fixed order). For the
/// model's final norm; the blocks' norms are inside [`transformer_block`].
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if x.dtype() != DType::F32 || w.dtype() != DType::F32 {
        bail!("rms_norm (CUDA): f32 tensors expected, got {:?} and {:?}", x.dtype(), w.dtype());
    }
    x.contiguous()?.apply_op2(&w.contiguous()?, RmsOp { eps: eps as f32, rstd: Mutex::new(None) })
}

// ---------------------------------------------------------------------------------------------
// The embedding

struct EmbedOp {
    tokens: CudaSlice<f32>,
    order: CudaSlice<f32>,
    offsets: CudaSlice<f32>,
    n: usize,
}

impl CustomOp1 for EmbedOp {
    fn name(&self) -> &'static str {
        "sweep-cuda-embedding"
    }

    fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> Result<(CpuStorage, Shape)> {
        cpu_only(self.name())
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (_, d) = l.shape().dims2()?;
        let dev = Cuda::new(&s.device);
        let w = storage_ptr::<f32>(s, l, &dev.stream, "embedding")?;
        let out = dev.alloc(self.n * d * 4)?;
        schedule::embedding_fwd(&dev, w, dev.ptr(&self.tokens), dev.ptr(&out), self.n, d)?;
        Ok((CudaStorage::wrap_cuda_slice(out, s.device.clone()), Shape::from((self.n, d))))
    }

    fn bwd(&self, w: &Tensor, _y: &Tensor, gy: &Tensor) -> Result<Option<Tensor>> {
        let bwd = EmbedBwd { op: self, vocab: w.dim(0)? };
        Ok(Some(gy.contiguous()?.apply_op1_no_bwd(&bwd)?))
    }
}

struct EmbedBwd<'a> {
    op: &'a EmbedOp,
    vocab: usize,
}

impl CustomOp1 for EmbedBwd<'_> {
    fn name(&self) -> &'static str {
        "sweep-cuda-embedding-bwd"
    }

    fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> Result<(CpuStorage, Shape)> {
        cpu_only(self.name())
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (_, d) = l.shape().dims2()?;
        let dev = Cuda::new(&s.device);
        let gy = storage_ptr::<f32>(s, l, &dev.stream, "embedding output gradient")?;
        let dw = dev.alloc(self.vocab * d * 4)?;
        let (order, offsets) = (dev.ptr(&self.op.order), dev.ptr(&self.op.offsets));
        schedule::embedding_bwd(&dev, gy, order, offsets, dev.ptr(&dw), self.vocab, d)?;
        Ok((CudaStorage::wrap_cuda_slice(dw, s.device.clone()), Shape::from((self.vocab, d))))
    }
}

/// Rows `tokens` [B, T] (any integer dtype) of the embedding w [V, d] (f32, CUDA), as [B, T, d].
/// The backward sums each vocabulary row's gradient over the positions of its token in position
/// order (one pass, no atomics: deterministic), from a counting sort of the tokens made on the
/// host here (the tokens are copied to the host once).
pub fn embedding(tokens: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (vocab, d) = w.dims2()?;
    let Device::Cuda(cdev) = w.device() else { bail!("embedding: the weight must be a CUDA tensor") };
    let ids: Vec<u32> = tokens.flatten_all()?.to_dtype(DType::U32)?.to_vec1()?;
    let (order, offsets) = schedule::embedding_csr(&ids, vocab)?;
    let dev = Cuda::new(cdev);
    let op = EmbedOp {
        tokens: dev.upload_u32(&ids)?,
        order: dev.upload_u32(&order)?,
        offsets: dev.upload_u32(&offsets)?,
        n: ids.len(),
    };
    let mut out_dims = tokens.dims().to_vec();
    out_dims.push(d);
    w.contiguous()?.apply_op1(op)?.reshape(out_dims)
}
