//! CUDA kernels for the composed path's costliest steps (train_kernels.cu, compiled at run time
//! with NVRTC): the causal softmax of attention, the cross-entropy of the logits, and AdamW.
//!
//! On an H100 the composed candle ops for these (broadcast add/sub/mul/div, max with its `eq`
//! backward, sum, exp; one kernel and one full pass over the tensor each, forward and backward)
//! took several times as long as the matrix products (docs/benchmarks.md, GPU section). Each op
//! here is one pass forward and one backward.
//!
//! Used for f32 CUDA tensors in a `cuda` build; `SWEEP_CUDA_KERNELS=0` turns them off (the
//! composed ops run instead), which is how the benchmark compares the two. tests/cuda.rs checks
//! each against the composed ops on the GPU.

use candle_core::{DType, Tensor};

/// The CUDA C source of the kernels.
pub const SOURCE: &str = include_str!("train_kernels.cu");

/// Whether `t` goes through these kernels: an f32 CUDA tensor in a `cuda` build, unless the
/// environment variable `SWEEP_CUDA_KERNELS` is `0`.
pub fn available(t: &Tensor) -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    cfg!(feature = "cuda")
        && t.device().is_cuda()
        && t.dtype() == DType::F32
        && *ENABLED.get_or_init(|| std::env::var("SWEEP_CUDA_KERNELS").map(|v| v.trim() != "0").unwrap_or(true))
}

#[cfg(feature = "cuda")]
pub(crate) use imp::{adamw_in_place, ptx_once};
#[cfg(feature = "cuda")]
pub use imp::{causal_softmax, cross_entropy};

#[cfg(not(feature = "cuda"))]
mod no_cuda {
    use crate::fused::AdamWStep;
    use candle_core::{Error, Result, Tensor};
    fn unavailable<T>() -> Result<T> {
        Err(Error::Msg("the CUDA training kernels need a build with `--features cuda`".into()))
    }
    /// See the `cuda` build.
    pub fn causal_softmax(_x: &Tensor, _scale: f64) -> Result<Tensor> {
        unavailable()
    }
    /// See the `cuda` build.
    pub fn cross_entropy(_logits: &Tensor, _targets: &Tensor) -> Result<Tensor> {
        unavailable()
    }
    /// See the `cuda` build.
    pub(crate) fn adamw_in_place(_p: &Tensor, _m: &Tensor, _v: &Tensor, _g: &Tensor, _s: AdamWStep) -> Result<()> {
        unavailable()
    }
}
#[cfg(not(feature = "cuda"))]
pub(crate) use no_cuda::adamw_in_place;
#[cfg(not(feature = "cuda"))]
pub use no_cuda::{causal_softmax, cross_entropy};

#[cfg(feature = "cuda")]
mod imp {
    use super::SOURCE;
    use crate::fused::AdamWStep;
    use candle_core::cuda_backend::cudarc::driver::{CudaView, DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
    use candle_core::cuda_backend::CudaDType;
    use candle_core::cuda_backend::{CudaDevice, CudaStorage, WrapErr};
    use candle_core::{
        CpuStorage, CustomOp1, CustomOp2, DType, Error, InplaceOp1, Layout, Result, Shape, Storage, Tensor, D,
    };
    use std::sync::OnceLock;

    const MODULE: &str = "sweep_train_kernels";

    /// PTX of `source`, compiled by NVRTC once per process into `cell` (the error, too, is kept).
    pub(crate) fn ptx_once(
        cell: &'static OnceLock<std::result::Result<String, String>>,
        source: &str,
        opts: CompileOptions,
        what: &str,
    ) -> Result<&'static str> {
        cell.get_or_init(|| {
            compile_ptx_with_opts(source, opts)
                .map(|p| p.to_src())
                .map_err(|e| format!("compiling {what} with NVRTC: {e}"))
        })
        .as_deref()
        .map_err(|e| Error::Msg(e.clone()))
    }

    fn ptx() -> Result<&'static str> {
        static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
        ptx_once(&PTX, SOURCE, CompileOptions::default(), "the CUDA training kernels")
    }

    fn cpu_only(op: &str) -> Result<(CpuStorage, Shape)> {
        Err(Error::Msg(format!("{op} runs on CUDA only (the CPU has its own fused kernels)")))
    }

    /// The contiguous elements of a storage under a layout (f32 tensors; u32 targets).
    fn view<'a, T: CudaDType + DeviceRepr>(s: &'a CudaStorage, l: &Layout, what: &str) -> Result<CudaView<'a, T>> {
        let (a, b) =
            l.contiguous_offsets().ok_or_else(|| Error::Msg(format!("{what}: the input must be contiguous")))?;
        Ok(s.as_cuda_slice::<T>()?.slice(a..b))
    }

    /// Runs `f` on the CUDA storage of a tensor held by an op.
    fn with_cuda<R>(t: &Tensor, what: &str, f: impl FnOnce(&CudaStorage, &Layout) -> Result<R>) -> Result<R> {
        let (s, l) = t.storage_and_layout();
        match &*s {
            Storage::Cuda(c) => f(c, l),
            _ => Err(Error::Msg(format!("{what}: expected a CUDA tensor"))),
        }
    }

    /// Launches kernel `$name` with one block per row over `$rows` rows of `$len` elements (the
    /// block size follows `$len`), with the arguments in order; nothing for zero rows.
    macro_rules! launch_rows {
        ($dev:expr, $name:literal, $rows:expr, $len:expr; $($arg:expr),+ $(,)?) => {{
            let rows: u64 = $rows;
            if rows > 0 {
                let f = $dev.get_or_load_custom_func($name, MODULE, ptx()?)?;
                let mut b = f.builder();
                $( b.arg($arg); )+
                // SAFETY: block r of these kernels reads and writes row r (and per-row scalars)
                // of buffers that hold `rows` rows; the callers size them from the same shape.
                unsafe { b.launch(rows_cfg(rows, row_threads($len))) }.w()?;
            }
        }};
    }

    /// One block per row (grid-stride beyond 2^20 rows), `threads` a multiple of 32.
    fn rows_cfg(rows: u64, threads: u32) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (rows.clamp(1, 1 << 20) as u32, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Threads per row of `len` elements: about 4 elements a thread, 32 to 512.
    fn row_threads(len: usize) -> u32 {
        ((len / 4).next_power_of_two()).clamp(32, 512) as u32
    }

    fn alloc(dev: &CudaDevice, n: usize) -> Result<candle_core::cuda_backend::cudarc::driver::CudaSlice<f32>> {
        // SAFETY: every caller's kernel writes all n elements before the storage is read.
        unsafe { dev.alloc::<f32>(n.max(1)) }
    }

    /// softmax(scale * x + causal mask) over the last dimension of x [.., T, T]: row r of the
    /// flattened rows is query position r % T. Backward: the softmax gradient times scale.
    pub fn causal_softmax(x: &Tensor, scale: f64) -> Result<Tensor> {
        let (t1, t2) = (x.dim(D::Minus2)?, x.dim(D::Minus1)?);
        if t1 != t2 {
            return Err(Error::Msg(format!(
                "causal_softmax: the scores must be square in their last two dimensions, got {:?}",
                x.dims()
            )));
        }
        x.contiguous()?.apply_op1(CausalSoftmax { scale: scale as f32 })
    }

    struct CausalSoftmax {
        scale: f32,
    }

    impl CustomOp1 for CausalSoftmax {
        fn name(&self) -> &'static str {
            "sweep-causal-softmax"
        }

        fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> Result<(CpuStorage, Shape)> {
            cpu_only(self.name())
        }

        fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
            let x = view::<f32>(s, l, self.name())?;
            let dev = &s.device;
            let t = l.dims().last().copied().unwrap_or(1).max(1);
            let rows = (l.shape().elem_count() / t) as u64;
            let mut y = alloc(dev, l.shape().elem_count())?;
            let t32 = t as u32;
            launch_rows!(dev, "sw_causal_softmax_fwd", rows, t; &x, &mut y, &rows, &t32, &self.scale);
            Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), l.shape().clone()))
        }

        fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
            Ok(Some(res.apply_op2_no_bwd(&grad_res.contiguous()?, &CausalSoftmaxBwd { scale: self.scale })?))
        }
    }

    struct CausalSoftmaxBwd {
        scale: f32,
    }

    impl CustomOp2 for CausalSoftmaxBwd {
        fn name(&self) -> &'static str {
            "sweep-causal-softmax-bwd"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            cpu_only(self.name())
        }

        fn cuda_fwd(
            &self,
            ys: &CudaStorage,
            yl: &Layout,
            gs: &CudaStorage,
            gl: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            if yl.shape() != gl.shape() {
                return Err(Error::Msg(format!(
                    "{}: gradient shape {:?} differs from {:?}",
                    self.name(),
                    gl.dims(),
                    yl.dims()
                )));
            }
            let (y, dy) = (view::<f32>(ys, yl, self.name())?, view::<f32>(gs, gl, self.name())?);
            let dev = &ys.device;
            let t = yl.dims().last().copied().unwrap_or(1).max(1);
            let rows = (yl.shape().elem_count() / t) as u64;
            let mut dx = alloc(dev, yl.shape().elem_count())?;
            let t32 = t as u32;
            launch_rows!(dev, "sw_causal_softmax_bwd", rows, t; &y, &dy, &mut dx, &rows, &t32, &self.scale);
            Ok((CudaStorage::wrap_cuda_slice(dx, dev.clone()), yl.shape().clone()))
        }
    }

    /// Mean cross-entropy (nats) of logits [N, V] (f32) against targets [N] (any integer dtype,
    /// values below V). Backward: (softmax - one-hot) / N.
    pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let (n, _v) = logits.dims2()?;
        let targets = targets.flatten_all()?.to_dtype(DType::U32)?.contiguous()?;
        if targets.dim(0)? != n {
            return Err(Error::Msg(format!("cross_entropy: {} targets for {n} rows of logits", targets.dim(0)?)));
        }
        // Column 0: the loss of each row; column 1: its log-sum-exp, kept for the backward.
        let out = logits.contiguous()?.apply_op1(CrossEntropy { targets })?;
        out.narrow(1, 0, 1)?.mean_all()
    }

    struct CrossEntropy {
        targets: Tensor,
    }

    impl CustomOp1 for CrossEntropy {
        fn name(&self) -> &'static str {
            "sweep-cross-entropy"
        }

        fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> Result<(CpuStorage, Shape)> {
            cpu_only(self.name())
        }

        fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
            let z = view::<f32>(s, l, self.name())?;
            let dev = &s.device;
            let (rows, v) = l.shape().dims2()?;
            let mut out = alloc(dev, 2 * rows)?;
            let (rows64, v32) = (rows as u64, v as u32);
            with_cuda(&self.targets, self.name(), |ts, tl| {
                let targets = view::<u32>(ts, tl, "cross_entropy targets")?;
                // Block r reads row r of z and targets[r], writes out[2r..2r+2].
                launch_rows!(dev, "sw_ce_fwd", rows64, v; &z, &targets, &mut out, &rows64, &v32);
                Ok(())
            })?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from((rows, 2))))
        }

        fn bwd(&self, arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
            let op =
                CrossEntropyBwd { targets: self.targets.clone(), res: res.contiguous()?, grad: grad_res.contiguous()? };
            Ok(Some(arg.apply_op1_no_bwd(&op)?))
        }
    }

    struct CrossEntropyBwd {
        targets: Tensor,
        res: Tensor,
        grad: Tensor,
    }

    impl CustomOp1 for CrossEntropyBwd {
        fn name(&self) -> &'static str {
            "sweep-cross-entropy-bwd"
        }

        fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> Result<(CpuStorage, Shape)> {
            cpu_only(self.name())
        }

        fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
            let z = view::<f32>(s, l, self.name())?;
            let dev = &s.device;
            let (rows, v) = l.shape().dims2()?;
            let mut dz = alloc(dev, rows * v)?;
            let (rows64, v32) = (rows as u64, v as u32);
            with_cuda(&self.targets, self.name(), |ts, tl| {
                with_cuda(&self.res, self.name(), |rs, rl| {
                    with_cuda(&self.grad, self.name(), |gs, gl| {
                        let targets = view::<u32>(ts, tl, "cross_entropy targets")?;
                        let (res, grad) = (view::<f32>(rs, rl, self.name())?, view::<f32>(gs, gl, self.name())?);
                        // Block r reads row r of z, targets[r] and res/grad[2r..2r+2], writes row r of dz.
                        launch_rows!(dev, "sw_ce_bwd", rows64, v; &z, &targets, &res, &grad, &mut dz, &rows64, &v32);
                        Ok(())
                    })
                })
            })?;
            Ok((CudaStorage::wrap_cuda_slice(dz, dev.clone()), l.shape().clone()))
        }
    }

    /// One AdamW update of an f32 CUDA parameter `p` and its moments `m`, `v` in place, from
    /// gradient `g`. Reached through `fused::adamw_in_place`, which checks what the kernel
    /// relies on: contiguous tensors of one shape, in separate storages.
    pub(crate) fn adamw_in_place(p: &Tensor, m: &Tensor, v: &Tensor, g: &Tensor, s: AdamWStep) -> Result<()> {
        p.inplace_op1(&AdamWCuda { m: m.clone(), v: v.clone(), g: g.clone(), s })
    }

    struct AdamWCuda {
        m: Tensor,
        v: Tensor,
        g: Tensor,
        s: AdamWStep,
    }

    impl InplaceOp1 for AdamWCuda {
        fn name(&self) -> &'static str {
            "sweep-adamw"
        }

        fn cpu_fwd(&self, _s: &mut CpuStorage, _l: &Layout) -> Result<()> {
            Err(Error::Msg("sweep-adamw (CUDA) got a CPU tensor".into()))
        }

        fn cuda_fwd(&self, storage: &mut CudaStorage, layout: &Layout) -> Result<()> {
            let (a, b) = layout
                .contiguous_offsets()
                .ok_or_else(|| Error::Msg("in-place AdamW: the parameter must be contiguous".into()))?;
            let n = (b - a) as u64;
            if n == 0 {
                return Ok(());
            }
            let dev = storage.device.clone();
            let s = self.s;
            let f32_of = |x: f64| x as f32;
            let consts = [
                s.beta1,
                s.beta2,
                1.0 - s.beta1,
                1.0 - s.beta2,
                1.0 / s.bias_correction1,
                1.0 / s.bias_correction2,
                s.eps,
                s.lr,
                1.0 - s.lr * s.weight_decay,
            ]
            .map(f32_of);
            let mut p = storage.as_cuda_slice_mut::<f32>()?.slice_mut(a..b);
            with_cuda(&self.m, "adamw m", |ms, ml| {
                with_cuda(&self.v, "adamw v", |vs, vl| {
                    with_cuda(&self.g, "adamw g", |gs, gl| {
                        let (m, v, g) = (
                            view::<f32>(ms, ml, "adamw m")?,
                            view::<f32>(vs, vl, "adamw v")?,
                            view::<f32>(gs, gl, "adamw g")?,
                        );
                        let f = dev.get_or_load_custom_func("sw_adamw", MODULE, ptx()?)?;
                        let mut b = f.builder();
                        b.arg(&mut p).arg(&m).arg(&v).arg(&g).arg(&n);
                        for c in &consts {
                            b.arg(c);
                        }
                        let blocks = n.div_ceil(256).clamp(1, 1 << 16) as u32;
                        // SAFETY: a grid-stride loop over n elements of four buffers of n elements.
                        // The kernel also writes m and v, which are read here through shared
                        // guards: the optimiser owns them alone (checked: no storage is shared)
                        // and nothing else reads them during the launch.
                        unsafe {
                            b.launch(LaunchConfig {
                                grid_dim: (blocks, 1, 1),
                                block_dim: (256, 1, 1),
                                shared_mem_bytes: 0,
                            })
                        }
                        .w()?;
                        Ok(())
                    })
                })
            })
        }
    }
}
