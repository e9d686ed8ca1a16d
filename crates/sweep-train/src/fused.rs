//! Fused CPU kernels with their own backward pass, as candle custom ops: RMSNorm, causal
//! softmax, SwiGLU, tanh GELU, RoPE with the head split, and cross-entropy fused with the
//! output projection. Each replaces a chain of composed candle ops (one graph node, one pass
//! over memory, several threads) and computes the same function as its composed reference in
//! `crate::model` (`rms_norm`, `rope`, `causal_softmax`, `swiglu`, `cross_entropy`), which
//! `tests/fused.rs` checks forward and backward. [`block`] runs a whole transformer block as one op.
//!
//! CPU only: these kernels have no CUDA or Metal forward, so the model runs them only on the
//! CPU paths of `crate::model::ExecPath` (f32/f64 parameters on the CPU, [`supports`]) and the
//! composed ops elsewhere.
//!
//! Determinism: work is split into chunks whose boundaries depend only on the tensor shapes;
//! reductions across rows sum per-chunk partials in chunk order, so results are bit-for-bit
//! the same run to run and for any thread count.

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, InplaceOp1, Layout, Result, Shape, Storage,
    Tensor, WithDType,
};
use rayon::prelude::*;
use std::sync::Mutex;

/// Whether the fused kernels run tensors of `dtype` on `device` (CPU, f32 or f64).
pub fn supports(device: &Device, dtype: DType) -> bool {
    device.is_cpu() && matches!(dtype, DType::F32 | DType::F64)
}

/// Whether the fused kernels apply to this tensor (CPU, f32 or f64).
pub fn use_fused(t: &Tensor) -> bool {
    supports(t.device(), t.dtype())
}

/// Floating-point element types the kernels run on.
pub trait Real: num_traits::Float + WithDType + Send + Sync + std::iter::Sum {
    /// e^x; a vectorisable polynomial in f32 (about 1 ulp), the libm function in f64.
    fn exp_(self) -> Self;
    /// Converts from f64.
    fn of(x: f64) -> Self;
    /// The storage's elements when it holds this type.
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]>;
    /// f32 values in this type (no copy for f32).
    fn from_f32_vec(v: Vec<f32>) -> Vec<Self>;
}

impl Real for f32 {
    #[inline(always)]
    fn exp_(self) -> f32 {
        exp_f32(self)
    }
    #[inline(always)]
    fn of(x: f64) -> f32 {
        x as f32
    }
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [f32]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
    fn from_f32_vec(v: Vec<f32>) -> Vec<f32> {
        v
    }
}

impl Real for f64 {
    #[inline(always)]
    fn exp_(self) -> f64 {
        self.exp()
    }
    #[inline(always)]
    fn of(x: f64) -> f64 {
        x
    }
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [f64]> {
        match s {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
    fn from_f32_vec(v: Vec<f32>) -> Vec<f64> {
        v.into_iter().map(f64::from).collect()
    }
}

/// e^x in f32 by range reduction to [-ln2/2, ln2/2] and a degree-6 polynomial (Cephes
/// coefficients); branch-free so loops over it vectorise. Inputs are clamped to [-87.3, 88.7].
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding and subtracting it rounds to an integer.
    let x = x.clamp(-87.3, 88.7);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// Rows per parallel task for rows of `width` elements (about 16k elements a task).
fn rows_per_task(width: usize) -> usize {
    (16_384 / width.max(1)).max(1)
}

/// Accumulator lanes of the vectorisable reductions below: a fixed order (so results are the
/// same run to run), wide enough for one AVX-512 register of f32.
const LANES: usize = 16;

/// sum_i f(i) over 0..n with LANES partial sums; the compiler vectorises this where a single
/// running sum (which fixes the order of additions) stays scalar.
#[inline(always)]
fn lane_reduce<T: Real>(n: usize, init: T, f: impl Fn(usize) -> T, op: impl Fn(T, T) -> T) -> T {
    let mut acc = [init; LANES];
    let full = n - n % LANES;
    let mut i = 0;
    while i < full {
        for (l, a) in acc.iter_mut().enumerate() {
            *a = op(*a, f(i + l));
        }
        i += LANES;
    }
    let mut out = acc.iter().fold(init, |a, &b| op(a, b));
    for j in full..n {
        out = op(out, f(j));
    }
    out
}

/// Sum of the elements (vectorised, fixed order).
#[inline(always)]
fn lane_sum<T: Real>(x: &[T]) -> T {
    lane_reduce(x.len(), T::zero(), |i| x[i], |a, b| a + b)
}

/// Dot product (vectorised, fixed order).
#[inline(always)]
fn lane_dot<T: Real>(x: &[T], y: &[T]) -> T {
    let y = &y[..x.len()];
    lane_reduce(x.len(), T::zero(), |i| x[i] * y[i], |a, b| a + b)
}

/// Largest element (vectorised); -inf for an empty slice.
#[inline(always)]
fn lane_max<T: Real>(x: &[T]) -> T {
    lane_reduce(x.len(), T::neg_infinity(), |i| x[i], |a, b| if b > a { b } else { a })
}

/// The contiguous slice a storage and layout describe.
fn cpu_slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<T>()?[a..b]),
        None => bail!("fused kernel: input is not contiguous"),
    }
}

/// Runs `f` on the elements of a CPU tensor (made contiguous first).
fn with_slice<T: WithDType, R>(t: &Tensor, f: impl FnOnce(&[T]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(c) => f(cpu_slice(c, l)?),
        _ => bail!("fused kernel: tensor is not on the CPU"),
    }
}

fn to_tensor<T: WithDType>(v: Vec<T>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_vec(v, shape, &Device::Cpu)
}

/// Sums per-chunk partial vectors in chunk order.
fn sum_partials<T: Real>(parts: Vec<Vec<T>>, n: usize) -> Vec<T> {
    let mut out = vec![T::zero(); n];
    for p in parts {
        for (o, v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
    out
}

macro_rules! dispatch {
    ($dtype:expr, $f:ident $(, $arg:expr)*) => {
        match $dtype {
            DType::F32 => $f::<f32>($($arg),*),
            DType::F64 => $f::<f64>($($arg),*),
            d => bail!("fused kernel: dtype {d:?} is not supported"),
        }
    };
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

/// RMSNorm over the last dimension: x / sqrt(mean(x^2) + eps) * weight.
struct RmsNorm {
    eps: f64,
}

fn rms_fwd<T: Real>(x: &[T], w: &[T], eps: f64) -> Vec<T> {
    let d = w.len();
    let mut y = vec![T::zero(); x.len()];
    let rows = rows_per_task(d) * d;
    y.par_chunks_mut(rows).zip(x.par_chunks(rows)).for_each(|(y, x)| {
        for (y, x) in y.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
            let ms = lane_dot(x, x) / T::of(d as f64);
            let r = T::one() / (ms + T::of(eps)).sqrt();
            for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                *y = x * r * w;
            }
        }
    });
    y
}

fn rms_bwd<T: Real>(x: &[T], w: &[T], gy: &[T], eps: f64) -> (Vec<T>, Vec<T>) {
    let d = w.len();
    let mut dx = vec![T::zero(); x.len()];
    let rows = rows_per_task(d) * d;
    let parts: Vec<Vec<T>> = dx
        .par_chunks_mut(rows)
        .zip(x.par_chunks(rows))
        .zip(gy.par_chunks(rows))
        .map(|((dx, x), gy)| {
            let mut dw = vec![T::zero(); d];
            for ((dx, x), gy) in dx.chunks_exact_mut(d).zip(x.chunks_exact(d)).zip(gy.chunks_exact(d)) {
                let ms = lane_dot(x, x) / T::of(d as f64);
                let r = T::one() / (ms + T::of(eps)).sqrt();
                let c = lane_reduce(d, T::zero(), |i| gy[i] * w[i] * x[i], |a, b| a + b) * r / T::of(d as f64);
                for i in 0..d {
                    let xhat = x[i] * r;
                    dw[i] += gy[i] * xhat;
                    dx[i] = r * (gy[i] * w[i] - xhat * c);
                }
            }
            dw
        })
        .collect();
    (dx, sum_partials(parts, d))
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        fn run<T: Real>(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, eps: f64) -> Result<CpuStorage> {
            Ok(T::to_cpu_storage_owned(rms_fwd(cpu_slice::<T>(s1, l1)?, cpu_slice::<T>(s2, l2)?, eps)))
        }
        Ok((dispatch!(s1.dtype(), run, s1, l1, s2, l2, self.eps)?, l1.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, gy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        fn run<T: Real>(x: &Tensor, w: &Tensor, gy: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
            let (dx, dw) = with_slice::<T, _>(x, |xs| {
                with_slice::<T, _>(w, |ws| with_slice::<T, _>(gy, |gs| Ok(rms_bwd(xs, ws, gs, eps))))
            })?;
            Ok((to_tensor(dx, x.shape())?, to_tensor(dw, w.shape())?))
        }
        let (dx, dw) = dispatch!(x.dtype(), run, x, w, gy, self.eps)?;
        Ok((Some(dx), Some(dw)))
    }
}

/// Fused RMSNorm over the last dimension (CPU), with weight `w` of that dimension's size.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, RmsNorm { eps })
}

// ---------------------------------------------------------------------------------------------
// Causal softmax

/// softmax(scale * s) over the last dimension of square [.., T, T] scores, keys after the query
/// masked out (probability 0).
struct CausalSoftmax {
    scale: f64,
}

fn csm_fwd<T: Real>(s: &[T], t: usize, scale: f64) -> Vec<T> {
    let mut p = vec![T::zero(); s.len()];
    let scale = T::of(scale);
    p.par_chunks_mut(t * t).zip(s.par_chunks(t * t)).for_each(|(p, s)| {
        for (i, (p, s)) in p.chunks_exact_mut(t).zip(s.chunks_exact(t)).enumerate() {
            let (p, s) = (&mut p[..=i], &s[..=i]);
            let m = lane_max(s);
            for (p, &s) in p.iter_mut().zip(s) {
                *p = ((s - m) * scale).exp_();
            }
            let inv = T::one() / lane_sum(p);
            p.iter_mut().for_each(|p| *p *= inv);
        }
    });
    p
}

fn csm_bwd<T: Real>(p: &[T], gp: &[T], t: usize, scale: f64) -> Vec<T> {
    let mut ds = vec![T::zero(); p.len()];
    let scale = T::of(scale);
    ds.par_chunks_mut(t * t).zip(p.par_chunks(t * t)).zip(gp.par_chunks(t * t)).for_each(|((ds, p), gp)| {
        for (i, ((ds, p), gp)) in ds.chunks_exact_mut(t).zip(p.chunks_exact(t)).zip(gp.chunks_exact(t)).enumerate() {
            let (ds, p, gp) = (&mut ds[..=i], &p[..=i], &gp[..=i]);
            let dot = lane_dot(p, gp);
            for ((ds, &p), &g) in ds.iter_mut().zip(p).zip(gp) {
                *ds = scale * p * (g - dot);
            }
        }
    });
    ds
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "fused-causal-softmax"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = l.dims();
        let t = dims[dims.len() - 1];
        if dims.len() < 2 || dims[dims.len() - 2] != t {
            bail!("causal softmax needs square [.., T, T] scores, got {dims:?}");
        }
        fn run<T: Real>(s: &CpuStorage, l: &Layout, t: usize, scale: f64) -> Result<CpuStorage> {
            Ok(T::to_cpu_storage_owned(csm_fwd(cpu_slice::<T>(s, l)?, t, scale)))
        }
        Ok((dispatch!(s.dtype(), run, s, l, t, self.scale)?, l.shape().clone()))
    }
    fn bwd(&self, s: &Tensor, p: &Tensor, gp: &Tensor) -> Result<Option<Tensor>> {
        fn run<T: Real>(p: &Tensor, gp: &Tensor, scale: f64) -> Result<Tensor> {
            let t = p.dim(candle_core::D::Minus1)?;
            let ds = with_slice::<T, _>(p, |ps| with_slice::<T, _>(gp, |gs| Ok(csm_bwd(ps, gs, t, scale))))?;
            to_tensor(ds, p.shape())
        }
        Ok(Some(dispatch!(s.dtype(), run, p, gp, self.scale)?))
    }
}

/// Fused causal softmax(scale * scores) over the last dimension of square [.., T, T] scores.
pub fn causal_softmax(scores: &Tensor, scale: f64) -> Result<Tensor> {
    scores.contiguous()?.apply_op1(CausalSoftmax { scale })
}

// ---------------------------------------------------------------------------------------------
// SwiGLU

/// silu(gate) * up.
struct SwiGlu;

#[inline(always)]
fn sigmoid<T: Real>(x: T) -> T {
    T::one() / (T::one() + (-x).exp_())
}

const ELEMS_PER_TASK: usize = 16_384;

fn swiglu_fwd<T: Real>(g: &[T], u: &[T]) -> Vec<T> {
    let mut y = vec![T::zero(); g.len()];
    y.par_chunks_mut(ELEMS_PER_TASK).zip(g.par_chunks(ELEMS_PER_TASK)).zip(u.par_chunks(ELEMS_PER_TASK)).for_each(
        |((y, g), u)| {
            for ((y, &g), &u) in y.iter_mut().zip(g).zip(u) {
                *y = g * sigmoid(g) * u;
            }
        },
    );
    y
}

fn swiglu_bwd<T: Real>(g: &[T], u: &[T], gy: &[T]) -> (Vec<T>, Vec<T>) {
    let mut dg = vec![T::zero(); g.len()];
    let mut du = vec![T::zero(); g.len()];
    let n = ELEMS_PER_TASK;
    dg.par_chunks_mut(n)
        .zip(du.par_chunks_mut(n))
        .zip(g.par_chunks(n))
        .zip(u.par_chunks(n))
        .zip(gy.par_chunks(n))
        .for_each(|((((dg, du), g), u), gy)| {
            for i in 0..g.len() {
                let s = sigmoid(g[i]);
                let silu = g[i] * s;
                let dsilu = s * (T::one() + g[i] * (T::one() - s));
                dg[i] = gy[i] * u[i] * dsilu;
                du[i] = gy[i] * silu;
            }
        });
    (dg, du)
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            bail!("swiglu: gate {:?} and up {:?} differ in shape", l1.dims(), l2.dims());
        }
        fn run<T: Real>(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<CpuStorage> {
            Ok(T::to_cpu_storage_owned(swiglu_fwd(cpu_slice::<T>(s1, l1)?, cpu_slice::<T>(s2, l2)?)))
        }
        Ok((dispatch!(s1.dtype(), run, s1, l1, s2, l2)?, l1.shape().clone()))
    }
    fn bwd(&self, g: &Tensor, u: &Tensor, _y: &Tensor, gy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        fn run<T: Real>(g: &Tensor, u: &Tensor, gy: &Tensor) -> Result<(Tensor, Tensor)> {
            let (dg, du) = with_slice::<T, _>(g, |gs| {
                with_slice::<T, _>(u, |us| with_slice::<T, _>(gy, |ys| Ok(swiglu_bwd(gs, us, ys))))
            })?;
            Ok((to_tensor(dg, g.shape())?, to_tensor(du, u.shape())?))
        }
        let (dg, du) = dispatch!(g.dtype(), run, g, u, gy)?;
        Ok((Some(dg), Some(du)))
    }
}

/// Fused silu(gate) * up (CPU).
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

// ---------------------------------------------------------------------------------------------
// GELU (tanh approximation, as candle's `gelu`)

/// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
struct Gelu;

const GELU_C: f64 = 0.797_884_560_802_865_4; // sqrt(2 / pi)
const GELU_A: f64 = 0.044_715;

/// tanh through e^(2z): 1 - 2 / (e^(2z) + 1).
#[inline(always)]
fn tanh_<T: Real>(z: T) -> T {
    let two = T::of(2.0);
    T::one() - two / ((two * z).exp_() + T::one())
}

fn gelu_fwd<T: Real>(x: &[T]) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    let (c, a, half) = (T::of(GELU_C), T::of(GELU_A), T::of(0.5));
    y.par_chunks_mut(ELEMS_PER_TASK).zip(x.par_chunks(ELEMS_PER_TASK)).for_each(|(y, x)| {
        for (y, &x) in y.iter_mut().zip(x) {
            let t = tanh_(c * (x + a * x * x * x));
            *y = half * x * (T::one() + t);
        }
    });
    y
}

fn gelu_bwd<T: Real>(x: &[T], gy: &[T]) -> Vec<T> {
    let mut dx = vec![T::zero(); x.len()];
    let (c, a, half) = (T::of(GELU_C), T::of(GELU_A), T::of(0.5));
    let a3 = T::of(3.0 * GELU_A);
    dx.par_chunks_mut(ELEMS_PER_TASK).zip(x.par_chunks(ELEMS_PER_TASK)).zip(gy.par_chunks(ELEMS_PER_TASK)).for_each(
        |((dx, x), gy)| {
            for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(gy) {
                let t = tanh_(c * (x + a * x * x * x));
                let d = half * (T::one() + t) + half * x * (T::one() - t * t) * c * (T::one() + a3 * x * x);
                *dx = g * d;
            }
        },
    );
    dx
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "fused-gelu"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        fn run<T: Real>(s: &CpuStorage, l: &Layout) -> Result<CpuStorage> {
            Ok(T::to_cpu_storage_owned(gelu_fwd(cpu_slice::<T>(s, l)?)))
        }
        Ok((dispatch!(s.dtype(), run, s, l)?, l.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, gy: &Tensor) -> Result<Option<Tensor>> {
        fn run<T: Real>(x: &Tensor, gy: &Tensor) -> Result<Tensor> {
            let dx = with_slice::<T, _>(x, |xs| with_slice::<T, _>(gy, |gs| Ok(gelu_bwd(xs, gs))))?;
            to_tensor(dx, x.shape())
        }
        Ok(Some(dispatch!(x.dtype(), run, x, gy)?))
    }
}

/// Fused tanh-approximation GELU (CPU).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Gelu)
}

// ---------------------------------------------------------------------------------------------
// Head split with RoPE

/// [B, T, H*hd] -> [B, H, T, hd], rotating each head by RoPE (rotate-half form) when `rotate`.
struct SplitHeads {
    heads: usize,
    rotate: bool,
}

#[allow(clippy::too_many_arguments)] // three tensors, the four dimensions and a flag
fn split_fwd<T: Real>(x: &[T], cos: &[T], sin: &[T], b: usize, t: usize, h: usize, hd: usize, rotate: bool) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    let half = hd / 2;
    // One task per (batch, head) block of the output.
    y.par_chunks_mut(t * hd).enumerate().for_each(|(bh, y)| {
        let (bi, hi) = (bh / h, bh % h);
        for ti in 0..t {
            let src = &x[(bi * t + ti) * h * hd + hi * hd..][..hd];
            let dst = &mut y[ti * hd..][..hd];
            if rotate {
                let (c, s) = (&cos[ti * half..][..half], &sin[ti * half..][..half]);
                for i in 0..half {
                    let (x1, x2) = (src[i], src[i + half]);
                    dst[i] = x1 * c[i] - x2 * s[i];
                    dst[i + half] = x2 * c[i] + x1 * s[i];
                }
            } else {
                dst.copy_from_slice(src);
            }
        }
    });
    let _ = b;
    y
}

fn split_bwd<T: Real>(gy: &[T], cos: &[T], sin: &[T], t: usize, h: usize, hd: usize, rotate: bool) -> Vec<T> {
    let mut dx = vec![T::zero(); gy.len()];
    let half = hd / 2;
    // One task per (batch, position) row of the input.
    dx.par_chunks_mut(h * hd).enumerate().for_each(|(bt, dx)| {
        let (bi, ti) = (bt / t, bt % t);
        for hi in 0..h {
            let src = &gy[((bi * h + hi) * t + ti) * hd..][..hd];
            let dst = &mut dx[hi * hd..][..hd];
            if rotate {
                let (c, s) = (&cos[ti * half..][..half], &sin[ti * half..][..half]);
                for i in 0..half {
                    let (g1, g2) = (src[i], src[i + half]);
                    dst[i] = g1 * c[i] + g2 * s[i];
                    dst[i + half] = g2 * c[i] - g1 * s[i];
                }
            } else {
                dst.copy_from_slice(src);
            }
        }
    });
    dx
}

impl CustomOp3 for SplitHeads {
    fn name(&self) -> &'static str {
        "fused-split-heads-rope"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, t, d) = l1.shape().dims3()?;
        let (h, hd) = (self.heads, d / self.heads);
        if d % h != 0 || (self.rotate && (hd % 2 != 0 || l2.dims() != [t, hd / 2] || l3.dims() != [t, hd / 2])) {
            bail!("split heads: input {:?}, {} heads, tables {:?} {:?}", l1.dims(), h, l2.dims(), l3.dims());
        }
        #[allow(clippy::too_many_arguments)] // the three storages and layouts of a CustomOp3, and the shape
        fn run<T: Real>(
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
            dims: (usize, usize, usize, usize),
            rotate: bool,
        ) -> Result<CpuStorage> {
            let (b, t, h, hd) = dims;
            Ok(T::to_cpu_storage_owned(split_fwd(
                cpu_slice::<T>(s1, l1)?,
                cpu_slice::<T>(s2, l2)?,
                cpu_slice::<T>(s3, l3)?,
                b,
                t,
                h,
                hd,
                rotate,
            )))
        }
        let out = dispatch!(s1.dtype(), run, s1, l1, s2, l2, s3, l3, (b, t, h, hd), self.rotate)?;
        Ok((out, Shape::from((b, h, t, hd))))
    }
    fn bwd(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        fn run<T: Real>(x: &Tensor, cos: &Tensor, sin: &Tensor, gy: &Tensor, h: usize, rotate: bool) -> Result<Tensor> {
            let (_, t, d) = x.dims3()?;
            let dx = with_slice::<T, _>(gy, |g| {
                with_slice::<T, _>(cos, |c| with_slice::<T, _>(sin, |s| Ok(split_bwd(g, c, s, t, h, d / h, rotate))))
            })?;
            to_tensor(dx, x.shape())
        }
        Ok((Some(dispatch!(x.dtype(), run, x, cos, sin, gy, self.heads, self.rotate)?), None, None))
    }
}

/// Fused [B, T, H*hd] -> [B, H, T, hd] head split, with RoPE (tables [T, hd/2]) when `rotate`.
pub fn split_heads(x: &Tensor, cos: &Tensor, sin: &Tensor, heads: usize, rotate: bool) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&cos.contiguous()?, &sin.contiguous()?, SplitHeads { heads, rotate })
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy fused with the output projection

/// Mean cross-entropy of logits = x W^T against targets. The [N, V] logits are not a graph
/// node: the forward pass computes them into a buffer the op keeps and replaces them by their
/// softmax, the backward pass turns that into their gradient in place and returns dx and dW. The buffer (the largest of a step:
/// 32 MiB on the reference shape) comes from and goes back to a [`Scratch`] pool, so steady-
/// state training allocates and page-faults it once rather than twice a step.
struct HeadCrossEntropy {
    targets: Vec<u32>,
    scratch: Scratch,
    /// The softmax of the logits (a `Vec<T>` from the scratch pool), from the forward pass.
    state: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

/// A reusable buffer shared by the ops of one model (any element type; the last one returned).
pub type Scratch = std::sync::Arc<Mutex<Option<Box<dyn std::any::Any + Send>>>>;

/// A buffer of `n` elements from the pool (contents unspecified but initialised), or a new one.
fn scratch_take<T: Real>(pool: &Scratch, n: usize) -> Vec<T> {
    let reused = pool.lock().expect("scratch lock").take().and_then(|b| b.downcast::<Vec<T>>().ok());
    let mut v = reused.map(|b| *b).unwrap_or_default();
    // Only a larger buffer is reallocated (zero-filled once); same-size reuse touches nothing.
    v.resize(n, T::zero());
    v
}

fn scratch_give<T: Real>(pool: &Scratch, v: Vec<T>) {
    *pool.lock().expect("scratch lock") = Some(Box::new(v));
}

/// Mean cross-entropy of the rows of `logits` [N, V]; replaces each row by its softmax (what
/// the backward needs) and returns the loss.
fn ce_fwd_in_place<T: Real>(logits: &mut [T], targets: &[u32], v: usize) -> Result<f64> {
    if targets.iter().any(|&t| t as usize >= v) {
        bail!("cross-entropy: a target is outside the vocabulary of {v}");
    }
    let per_row: Vec<f64> = logits
        .par_chunks_mut(v)
        .zip(targets.par_iter())
        .map(|(row, &t)| {
            let m = lane_max(row);
            let target = row[t as usize];
            for x in row.iter_mut() {
                *x = (*x - m).exp_();
            }
            let s = lane_sum(row);
            let inv = T::one() / s;
            row.iter_mut().for_each(|x| *x *= inv);
            m.to_f64() + s.to_f64().ln() - target.to_f64()
        })
        .collect();
    Ok(per_row.iter().sum::<f64>() / per_row.len() as f64)
}

/// Turns softmax rows into d(loss)/d(logits) in place: g/N (softmax - onehot(target)).
fn ce_bwd_in_place<T: Real>(probs: &mut [T], targets: &[u32], v: usize, g: f64) {
    let scale = T::of(g / targets.len() as f64);
    probs.par_chunks_mut(v).zip(targets.par_iter()).for_each(|(row, &t)| {
        row.iter_mut().for_each(|x| *x *= scale);
        row[t as usize] -= scale;
    });
}

impl CustomOp2 for HeadCrossEntropy {
    fn name(&self) -> &'static str {
        "fused-head-cross-entropy"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, d) = l1.shape().dims2()?;
        let (v, d2) = l2.shape().dims2()?;
        if d != d2 {
            bail!("cross-entropy: hidden size {d} but the output projection is [{v}, {d2}]");
        }
        if n != self.targets.len() {
            bail!("cross-entropy: {n} rows but {} targets", self.targets.len());
        }
        fn run<T: Real>(
            op: &HeadCrossEntropy,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            (n, d, v): (usize, usize, usize),
        ) -> Result<CpuStorage> {
            let (x, w) = (cpu_slice::<T>(s1, l1)?, cpu_slice::<T>(s2, l2)?);
            let mut logits = scratch_take::<T>(&op.scratch, n * v);
            matmul_into(&mut logits, v, mat(x, 0, d, 1), mat(w, 0, 1, d), (n, v, d), rayon::current_num_threads());
            let loss = ce_fwd_in_place(&mut logits, &op.targets, v)?;
            *op.state.lock().expect("ce state lock") = Some(Box::new(logits));
            Ok(T::to_cpu_storage_owned(vec![T::of(loss)]))
        }
        Ok((dispatch!(s1.dtype(), run, self, s1, l1, s2, l2, (n, d, v))?, Shape::from(())))
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, _loss: &Tensor, gl: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = gl.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let probs = self
            .state
            .lock()
            .expect("ce state lock")
            .take()
            .ok_or_else(|| candle_core::Error::Msg("cross-entropy: backward without a forward pass".into()))?;
        fn run<T: Real>(
            op: &HeadCrossEntropy,
            x: &Tensor,
            w: &Tensor,
            probs: Box<dyn std::any::Any + Send>,
            g: f64,
        ) -> Result<(Tensor, Tensor)> {
            let (n, d) = x.dims2()?;
            let v = w.dim(0)?;
            let mut dl = *probs.downcast::<Vec<T>>().map_err(|_| {
                candle_core::Error::Msg("cross-entropy: dtype changed between forward and backward".into())
            })?;
            ce_bwd_in_place(&mut dl, &op.targets, v, g);
            // dx = dlogits W [n x d]; dW = dlogits^T x [v x d].
            let (dx, dw) = with_slice::<T, _>(x, |xs| {
                with_slice::<T, _>(w, |ws| {
                    Ok(matmul_pair(
                        (mat(&dl, 0, v, 1), mat(ws, 0, d, 1), (n, d, v)),
                        (mat(&dl, 0, 1, v), mat(xs, 0, d, 1), (v, d, n)),
                    ))
                })
            })?;
            scratch_give(&op.scratch, dl);
            Ok((to_tensor(dx, x.shape())?, to_tensor(dw, w.shape())?))
        }
        let (dx, dw) = dispatch!(x.dtype(), run, self, x, w, probs, g)?;
        Ok((Some(dx), Some(dw)))
    }
}

/// Mean cross-entropy of the logits x W^T (x [N, d], W [V, d]) against `targets` (N of them), fused so
/// the [N, V] logits are not a graph node; gradients flow to x and W (CPU). `scratch` holds the
/// logits buffer between steps.
pub fn head_cross_entropy(x: &Tensor, w: &Tensor, targets: &Tensor, scratch: &Scratch) -> Result<Tensor> {
    let targets: Vec<u32> = targets.flatten_all()?.to_dtype(DType::U32)?.to_vec1()?;
    x.contiguous()?
        .apply_op2(&w.contiguous()?, HeadCrossEntropy { targets, scratch: scratch.clone(), state: Mutex::new(None) })
}

// ---------------------------------------------------------------------------------------------
// In-place updates (AdamW, gradient clipping)

/// An in-place op that hands a closure the tensor's storage once.
struct InPlace<F>(std::cell::RefCell<Option<F>>);

impl<F: FnOnce(&mut CpuStorage, &Layout) -> Result<()>> InplaceOp1 for InPlace<F> {
    fn name(&self) -> &'static str {
        "fused-in-place"
    }
    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        match self.0.borrow_mut().take() {
            Some(f) => f(s, l),
            None => bail!("in-place op ran twice"),
        }
    }
}

/// Runs `f` on the elements of a contiguous CPU tensor, in place.
fn with_slice_mut<T: Real>(t: &Tensor, f: impl FnOnce(&mut [T]) -> Result<()>) -> Result<()> {
    if !t.is_contiguous() {
        bail!("in-place update: tensor is not contiguous");
    }
    let op = InPlace(std::cell::RefCell::new(Some(move |s: &mut CpuStorage, l: &Layout| {
        let (a, b) =
            l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("in-place update: not contiguous".into()))?;
        match T::slice_mut(s) {
            Some(v) => f(&mut v[a..b]),
            None => bail!("in-place update: dtype mismatch"),
        }
    })));
    t.inplace_op1(&op)
}

/// AdamW hyperparameters for one parameter's update.
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    /// beta1.
    pub beta1: f64,
    /// beta2.
    pub beta2: f64,
    /// epsilon.
    pub eps: f64,
    /// 1 - beta1^t.
    pub bias_correction1: f64,
    /// 1 - beta2^t.
    pub bias_correction2: f64,
    /// Learning rate.
    pub lr: f64,
    /// Decoupled weight decay for this parameter.
    pub weight_decay: f64,
}

fn adamw_kernel<T: Real>(p: &mut [T], m: &mut [T], v: &mut [T], g: &[T], s: AdamWStep) {
    let (b1, b2, c1, c2) = (T::of(s.beta1), T::of(s.beta2), T::of(1.0 - s.beta1), T::of(1.0 - s.beta2));
    let (ibc1, ibc2, eps, lr, keep) = (
        T::of(1.0 / s.bias_correction1),
        T::of(1.0 / s.bias_correction2),
        T::of(s.eps),
        T::of(s.lr),
        T::of(1.0 - s.lr * s.weight_decay),
    );
    let n = ELEMS_PER_TASK;
    p.par_chunks_mut(n).zip(m.par_chunks_mut(n)).zip(v.par_chunks_mut(n)).zip(g.par_chunks(n)).for_each(
        |(((p, m), v), g)| {
            for i in 0..p.len() {
                m[i] = b1 * m[i] + c1 * g[i];
                v[i] = b2 * v[i] + c2 * (g[i] * g[i]);
                let update = (m[i] * ibc1) / ((v[i] * ibc2).sqrt() + eps);
                p[i] = p[i] * keep - lr * update;
            }
        },
    );
}

/// Whether [`adamw_in_place`] can update `p` with moments `m`, `v` and gradient `g`: contiguous
/// tensors of the parameter's shape and dtype, on a device with a kernel (the CPU's f32/f64, or
/// CUDA's f32 in a `cuda` build), in four separate storages.
pub fn adamw_supported(p: &Tensor, m: &Tensor, v: &Tensor, g: &Tensor) -> bool {
    let kernel = |t: &Tensor| use_fused(t) || cuda::available(t);
    [p, m, v, g].iter().all(|t| {
        t.is_contiguous()
            && t.shape() == p.shape()
            && t.dtype() == p.dtype()
            && t.device().same_device(p.device())
            && kernel(t)
    }) && ![(p, m), (p, v), (m, v), (g, p), (g, m), (g, v)].iter().any(|(a, b)| shares_storage(a, b))
}

/// One AdamW update of parameter `p` and its moments `m`, `v` in place from gradient `g`, on the
/// CPU or on CUDA (errors unless [`adamw_supported`]).
pub fn adamw_in_place(p: &Tensor, m: &Tensor, v: &Tensor, g: &Tensor, s: AdamWStep) -> Result<()> {
    if !adamw_supported(p, m, v, g) {
        bail!("in-place AdamW: parameter, moments and gradient must be contiguous tensors of one shape and float dtype, in separate storages, on the CPU (f32/f64) or CUDA (f32)");
    }
    if p.device().is_cuda() {
        return cuda::adamw_in_place(p, m, v, g, s);
    }
    fn run<T: Real>(p: &Tensor, m: &Tensor, v: &Tensor, g: &Tensor, s: AdamWStep) -> Result<()> {
        with_slice::<T, _>(g, |gs| {
            with_slice_mut::<T>(p, |ps| {
                with_slice_mut::<T>(m, |ms| {
                    with_slice_mut::<T>(v, |vs| {
                        adamw_kernel(ps, ms, vs, gs, s);
                        Ok(())
                    })
                })
            })
        })
    }
    dispatch!(p.dtype(), run, p, m, v, g, s)
}

/// Whether two tensors are views of one storage.
pub fn shares_storage(a: &Tensor, b: &Tensor) -> bool {
    let ptr = |t: &Tensor| {
        let (s, _) = t.storage_and_layout();
        &*s as *const Storage as usize
    };
    ptr(a) == ptr(b)
}

/// Sum of squares of a CPU tensor's elements, accumulated in f64 over fixed chunks.
pub fn sum_of_squares(t: &Tensor) -> Result<f64> {
    fn run<T: Real>(t: &Tensor) -> Result<f64> {
        with_slice::<T, _>(t, |x| {
            let parts: Vec<f64> = x
                .par_chunks(ELEMS_PER_TASK)
                .map(|c| {
                    c.iter()
                        .map(|&v| {
                            let v = WithDType::to_f64(v);
                            v * v
                        })
                        .sum::<f64>()
                })
                .collect();
            Ok(parts.iter().sum())
        })
    }
    dispatch!(t.dtype(), run, t)
}

/// x * scale for a CPU tensor, on several threads.
pub fn scale(t: &Tensor, s: f64) -> Result<Tensor> {
    fn run<T: Real>(t: &Tensor, s: f64) -> Result<Tensor> {
        let s = T::of(s);
        let v = with_slice::<T, _>(t, |x| {
            Ok(x.par_chunks(ELEMS_PER_TASK).flat_map_iter(|c| c.iter().map(move |&v| v * s)).collect::<Vec<T>>())
        })?;
        to_tensor(v, t.shape())
    }
    dispatch!(t.dtype(), run, t, s)
}

// ---------------------------------------------------------------------------------------------
// Matrix products (gemm, as candle's CPU matmul uses)

/// A strided read-only matrix: element (r, c) at `data[off + r * rs + c * cs]`.
#[derive(Clone, Copy)]
struct Mat<'a, T> {
    data: &'a [T],
    off: usize,
    rs: usize,
    cs: usize,
}

fn mat<T>(data: &[T], off: usize, rs: usize, cs: usize) -> Mat<'_, T> {
    Mat { data, off, rs, cs }
}

/// dst[m x n] (row-major, row stride `dst_rs`) = a[m x k] b[k x n], on `threads` threads.
fn matmul_into<T: Real>(
    dst: &mut [T],
    dst_rs: usize,
    a: Mat<T>,
    b: Mat<T>,
    (m, n, k): (usize, usize, usize),
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * dst_rs + n <= dst.len() && n <= dst_rs);
    // SAFETY: the assert keeps every row of dst inside the slice, which is borrowed mutably.
    unsafe { matmul_raw(dst.as_mut_ptr(), dst_rs, a, b, (m, n, k), threads) }
}

/// a[m x k] b[k x n] as a new row-major [m x n] buffer, written by gemm without zero-filling it
/// first.
fn matmul_new<T: Real>(a: Mat<T>, b: Mat<T>, (m, n, k): (usize, usize, usize), threads: usize) -> Vec<T> {
    if k == 0 {
        return vec![T::zero(); m * n];
    }
    let mut out = Vec::with_capacity(m * n);
    // SAFETY: with k > 0 and read_dst false, gemm writes each of the m * n elements of the
    // buffer (row stride n) before set_len exposes them.
    unsafe {
        matmul_raw(out.spare_capacity_mut().as_mut_ptr().cast::<T>(), n, a, b, (m, n, k), threads);
        out.set_len(m * n);
    }
    out
}

/// gemm into `dst` (row stride `dst_rs`, m rows of n). Safety: dst must be valid for writes
/// of (m - 1) * dst_rs + n elements and not aliased.
unsafe fn matmul_raw<T: Real>(
    dst: *mut T,
    dst_rs: usize,
    a: Mat<T>,
    b: Mat<T>,
    (m, n, k): (usize, usize, usize),
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    // Bounds: the last element each operand addresses lies inside its slice.
    assert!(
        k == 0
            || (a.off + (m - 1) * a.rs + (k - 1) * a.cs < a.data.len()
                && b.off + (k - 1) * b.rs + (n - 1) * b.cs < b.data.len())
    );
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the assert above keeps every operand address inside its slice; the caller
    // guarantees dst.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            false,
            a.data.as_ptr().add(a.off),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr().add(b.off),
            b.cs as isize,
            b.rs as isize,
            T::zero(),
            T::one(),
            false,
            false,
            false,
            par,
        )
    }
}

/// Two independent products side by side, one thread each when the pool has two or more
/// (the backward's input and weight gradients have equal FLOPs, so the halves balance and each
/// gemm runs without synchronisation); one after the other on all threads otherwise.
fn matmul_pair<T: Real>(
    p: (Mat<T>, Mat<T>, (usize, usize, usize)),
    q: (Mat<T>, Mat<T>, (usize, usize, usize)),
) -> (Vec<T>, Vec<T>) {
    let threads = rayon::current_num_threads();
    if threads >= 2 {
        let (half, rest) = (threads / 2, threads - threads / 2);
        rayon::join(|| matmul_new(p.0, p.1, p.2, half), || matmul_new(q.0, q.1, q.2, rest))
    } else {
        (matmul_new(p.0, p.1, p.2, threads), matmul_new(q.0, q.1, q.2, threads))
    }
}

// ---------------------------------------------------------------------------------------------
// Linear layer

/// y = x W^T over the last dimension of x, W [out, in].
struct Linear;

fn linear_fwd<T: Real>(x: &[T], w: &[T], (rows, inp, out): (usize, usize, usize)) -> Vec<T> {
    matmul_new(mat(x, 0, inp, 1), mat(w, 0, 1, inp), (rows, out, inp), rayon::current_num_threads())
}

fn linear_bwd<T: Real>(x: &[T], w: &[T], gy: &[T], (rows, inp, out): (usize, usize, usize)) -> (Vec<T>, Vec<T>) {
    // dx = gy W [rows x inp]; dW = gy^T x [out x inp].
    matmul_pair(
        (mat(gy, 0, out, 1), mat(w, 0, inp, 1), (rows, inp, out)),
        (mat(gy, 0, 1, out), mat(x, 0, inp, 1), (out, inp, rows)),
    )
}

fn linear_dims(x: &Shape, w: &Shape) -> Result<(usize, usize, usize)> {
    let (out, inp) = w.dims2()?;
    let xd = x.dims();
    if xd.is_empty() || xd[xd.len() - 1] != inp {
        bail!("linear: input {xd:?} does not end in the weight's input size {inp}");
    }
    Ok((x.elem_count() / inp, inp, out))
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "fused-linear"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = linear_dims(l1.shape(), l2.shape())?;
        fn run<T: Real>(
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            dims: (usize, usize, usize),
        ) -> Result<CpuStorage> {
            Ok(T::to_cpu_storage_owned(linear_fwd(cpu_slice::<T>(s1, l1)?, cpu_slice::<T>(s2, l2)?, dims)))
        }
        let mut out_dims = l1.dims().to_vec();
        *out_dims.last_mut().expect("rank >= 1") = dims.2;
        Ok((dispatch!(s1.dtype(), run, s1, l1, s2, l2, dims)?, Shape::from(out_dims)))
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, gy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        fn run<T: Real>(x: &Tensor, w: &Tensor, gy: &Tensor) -> Result<(Tensor, Tensor)> {
            let dims = linear_dims(x.shape(), w.shape())?;
            let (dx, dw) = with_slice::<T, _>(x, |xs| {
                with_slice::<T, _>(w, |ws| with_slice::<T, _>(gy, |gs| Ok(linear_bwd(xs, ws, gs, dims))))
            })?;
            Ok((to_tensor(dx, x.shape())?, to_tensor(dw, w.shape())?))
        }
        let (dx, dw) = dispatch!(x.dtype(), run, x, w, gy)?;
        Ok((Some(dx), Some(dw)))
    }
}

/// Fused y = x W^T over the last dimension (CPU): one graph node instead of reshape, transpose
/// and matmul nodes.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, Linear)
}

// ---------------------------------------------------------------------------------------------
// Causal self-attention core

/// softmax(scale * Q K^T, causal) V per head: q, k, v [B, H, T, hd] -> y [B, T, H*hd] (heads
/// merged). The [T, T] probabilities live only in per-head scratch; the backward recomputes them.
/// With `probs_quant` the probabilities are fake-quantised (rows along the keys) before they
/// multiply V: then all of them are kept, with their quantised copy, for the backward.
struct CausalAttention {
    scale: f64,
    probs_quant: Option<crate::quant::QuantCall>,
    /// (P, P_q) as `Vec<T>`s, from a forward pass with quantised probabilities.
    saved: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

/// The probabilities a quantised attention forward kept, for its backward.
struct SavedProbs<T> {
    probs: Vec<T>,
    probs_q: Vec<T>,
}

/// Fake-quantises a copy of `x` (rows of `row_len`) with one drawn call, in f32.
pub(crate) fn fq_call<T: Real>(x: &[T], row_len: usize, call: &crate::quant::QuantCall) -> Result<Vec<T>> {
    let mut v: Vec<f32> = x.iter().map(|v| v.to_f32().unwrap_or(f32::NAN)).collect();
    call.quantize(&mut v, row_len)?;
    Ok(T::from_f32_vec(v))
}

/// Causal softmax of scale * s in place over the rows of a [t, t] block.
fn softmax_rows_causal<T: Real>(s: &mut [T], t: usize, scale: T) {
    for (i, row) in s.chunks_exact_mut(t).enumerate() {
        let (live, dead) = row.split_at_mut(i + 1);
        let m = lane_max(live);
        for p in live.iter_mut() {
            *p = ((*p - m) * scale).exp_();
        }
        let inv = T::one() / lane_sum(live);
        live.iter_mut().for_each(|p| *p *= inv);
        dead.iter_mut().for_each(|p| *p = T::zero());
    }
}

/// The sub-matrix of `m` starting at row r0, column c0.
fn sub<T>(m: Mat<'_, T>, r0: usize, c0: usize) -> Mat<'_, T> {
    Mat { off: m.off + r0 * m.rs + c0 * m.cs, ..m }
}

/// Causal products skip the zero upper-right block of P: rows below `s = t / 2` only involve
/// columns below s, so each product is two gemms covering 3/4 of the full one.
fn causal_split(t: usize) -> usize {
    t / 2
}

/// One head's probabilities into `p` [t, t] (row stride t): causal softmax(scale Q K^T).
fn attn_head_probs<T: Real>(p: &mut [T], q: Mat<T>, kt: Mat<T>, t: usize, hd: usize, scale: T) {
    let s = causal_split(t);
    matmul_into(p, t, q, kt, (s, s, hd), 1);
    matmul_into(&mut p[s * t..], t, sub(q, s, 0), kt, (t - s, t, hd), 1);
    softmax_rows_causal(p, t, scale);
}

/// Attention forward: y [B, T, H*hd], and the probabilities [B, H, T, T] when `keep`.
fn attn_fwd<T: Real>(
    q: &[T],
    k: &[T],
    v: &[T],
    (_b, h, t, hd): (usize, usize, usize, usize),
    scale: f64,
    keep: bool,
) -> (Vec<T>, Option<Vec<T>>) {
    let scale = T::of(scale);
    let blk = t * hd;
    let s = causal_split(t);
    let mut heads = vec![T::zero(); q.len()];
    let head = |p: &mut [T], bh: usize, o: &mut [T]| {
        let off = bh * blk;
        attn_head_probs(p, mat(q, off, hd, 1), mat(k, off, 1, hd), t, hd, scale);
        // O = P V: rows below s use only the first s rows of V.
        let (pm, vm) = (mat(p, 0, t, 1), mat(v, off, hd, 1));
        matmul_into(o, hd, pm, vm, (s, hd, s), 1);
        matmul_into(&mut o[s * hd..], hd, sub(pm, s, 0), vm, (t - s, hd, t), 1);
    };
    let kept = if keep {
        let mut all = vec![T::zero(); q.len() / hd * t];
        heads.par_chunks_mut(blk).zip(all.par_chunks_mut(t * t)).enumerate().for_each(|(bh, (o, p))| head(p, bh, o));
        Some(all)
    } else {
        heads.par_chunks_mut(blk).enumerate().for_each_init(|| vec![T::zero(); t * t], |p, (bh, o)| head(p, bh, o));
        None
    };
    // [B, H, T, hd] -> [B, T, H, hd].
    let mut y = vec![T::zero(); q.len()];
    y.par_chunks_mut(h * hd).enumerate().for_each(|(bt, row)| {
        let (bi, ti) = (bt / t, bt % t);
        for hi in 0..h {
            row[hi * hd..][..hd].copy_from_slice(&heads[((bi * h + hi) * t + ti) * hd..][..hd]);
        }
    });
    (y, kept)
}

/// Attention forward with quantised probabilities: all heads' probabilities P [B, H, T, T] are
/// computed (zeros above the diagonal), `quantize` turns them into the P_q that multiplies V,
/// and the output is P_q V with heads merged. Returns (y, P, P_q): the backward needs P for the
/// softmax and P_q for dV.
fn attn_fwd_quant<T: Real>(
    q: &[T],
    k: &[T],
    v: &[T],
    (_b, h, t, hd): (usize, usize, usize, usize),
    scale: f64,
    quantize: impl FnOnce(&[T]) -> Result<Vec<T>>,
) -> Result<(Vec<T>, Vec<T>, Vec<T>)> {
    let sc = T::of(scale);
    let blk = t * hd;
    let s = causal_split(t);
    let mut probs = vec![T::zero(); q.len() / hd * t];
    probs.par_chunks_mut(t * t).enumerate().for_each(|(bh, p)| {
        let off = bh * blk;
        attn_head_probs(p, mat(q, off, hd, 1), mat(k, off, 1, hd), t, hd, sc);
    });
    let probs_q = quantize(&probs)?;
    let mut heads = vec![T::zero(); q.len()];
    heads.par_chunks_mut(blk).zip(probs_q.par_chunks(t * t)).enumerate().for_each(|(bh, (o, p))| {
        let (pm, vm) = (mat(p, 0, t, 1), mat(v, bh * blk, hd, 1));
        matmul_into(o, hd, pm, vm, (s, hd, s), 1);
        matmul_into(&mut o[s * hd..], hd, sub(pm, s, 0), vm, (t - s, hd, t), 1);
    });
    let mut y = vec![T::zero(); q.len()];
    y.par_chunks_mut(h * hd).enumerate().for_each(|(bt, row)| {
        let (bi, ti) = (bt / t, bt % t);
        for hi in 0..h {
            row[hi * hd..][..hd].copy_from_slice(&heads[((bi * h + hi) * t + ti) * hd..][..hd]);
        }
    });
    Ok((y, probs, probs_q))
}

type Grads3<T> = (Vec<T>, Vec<T>, Vec<T>);

/// Attention backward; `probs` are the forward pass's [B, H, T, T] probabilities if it kept
/// them (otherwise they are recomputed per head); `probs_q` the quantised probabilities that
/// multiplied V, when they were quantised (dV = P_q^T dO; straight through to the softmax).
#[allow(clippy::too_many_arguments)]
fn attn_bwd<T: Real>(
    q: &[T],
    k: &[T],
    v: &[T],
    gy: &[T],
    (_b, h, t, hd): (usize, usize, usize, usize),
    scale: f64,
    probs: Option<&[T]>,
    probs_q: Option<&[T]>,
) -> Grads3<T> {
    let sc = T::of(scale);
    let blk = t * hd;
    let s = causal_split(t);
    let (mut dq, mut dk, mut dv) = (vec![T::zero(); q.len()], vec![T::zero(); q.len()], vec![T::zero(); q.len()]);
    dq.par_chunks_mut(blk).zip(dk.par_chunks_mut(blk)).zip(dv.par_chunks_mut(blk)).enumerate().for_each_init(
        || (vec![T::zero(); if probs.is_some() { 0 } else { t * t }], vec![T::zero(); t * t]),
        |(scratch, dp), (bh, ((dq, dk), dv))| {
            let off = bh * blk;
            let (bi, hi) = (bh / h, bh % h);
            // The head's output gradient, read in place from [B, T, H, hd].
            let go = mat(gy, (bi * t * h + hi) * hd, h * hd, 1);
            let (qm, km, vt) = (mat(q, off, hd, 1), mat(k, off, hd, 1), mat(v, off, 1, hd));
            let p: &[T] = match probs {
                Some(all) => &all[bh * t * t..][..t * t],
                None => {
                    attn_head_probs(scratch, qm, mat(k, off, 1, hd), t, hd, sc);
                    scratch
                }
            };
            let pv: &[T] = probs_q.map_or(p, |all| &all[bh * t * t..][..t * t]);
            let pt = mat(pv, 0, 1, t);
            // dV = P^T dO: rows below s see all of P's rows; rows from s only P's rows from s.
            matmul_into(dv, hd, pt, go, (s, hd, t), 1);
            matmul_into(&mut dv[s * hd..], hd, sub(pt, s, s), sub(go, s, 0), (t - s, hd, t - s), 1);
            // dP = dO V^T on the lower triangle's blocks.
            matmul_into(dp, t, go, vt, (s, s, hd), 1);
            matmul_into(&mut dp[s * t..], t, sub(go, s, 0), vt, (t - s, t, hd), 1);
            // dS = scale * P (dP - rowsum(dP P)), zero above the diagonal.
            for i in 0..t {
                let (pr, dr) = (&p[i * t..][..=i], &mut dp[i * t..][..t]);
                let dot = lane_dot(pr, dr);
                for j in 0..=i {
                    dr[j] = sc * pr[j] * (dr[j] - dot);
                }
                dr[i + 1..].iter_mut().for_each(|d| *d = T::zero());
            }
            let (dsm, dst) = (mat(dp, 0, t, 1), mat(dp, 0, 1, t));
            // dQ = dS K; dK = dS^T Q, split like O and dV.
            matmul_into(dq, hd, dsm, km, (s, hd, s), 1);
            matmul_into(&mut dq[s * hd..], hd, sub(dsm, s, 0), km, (t - s, hd, t), 1);
            matmul_into(dk, hd, dst, qm, (s, hd, t), 1);
            matmul_into(&mut dk[s * hd..], hd, sub(dst, s, s), sub(qm, s, 0), (t - s, hd, t - s), 1);
        },
    );
    (dq, dk, dv)
}

impl CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "fused-causal-attention"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = l1.shape().dims4()?;
        if l2.dims() != l1.dims() || l3.dims() != l1.dims() {
            bail!("causal attention: q {:?}, k {:?}, v {:?} differ in shape", l1.dims(), l2.dims(), l3.dims());
        }
        #[allow(clippy::too_many_arguments)] // the three storages and layouts of a CustomOp3, and the shape
        fn run<T: Real>(
            op: &CausalAttention,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
            dims: (usize, usize, usize, usize),
        ) -> Result<CpuStorage> {
            let (q, k, v) = (cpu_slice::<T>(s1, l1)?, cpu_slice::<T>(s2, l2)?, cpu_slice::<T>(s3, l3)?);
            let y = match &op.probs_quant {
                None => attn_fwd(q, k, v, dims, op.scale, false).0,
                Some(call) => {
                    let (y, probs, probs_q) = attn_fwd_quant(q, k, v, dims, op.scale, |p| fq_call(p, dims.2, call))?;
                    *op.saved.lock().expect("attention lock") = Some(Box::new(SavedProbs { probs, probs_q }));
                    y
                }
            };
            Ok(T::to_cpu_storage_owned(y))
        }
        let (b, h, t, hd) = dims;
        Ok((dispatch!(s1.dtype(), run, self, s1, l1, s2, l2, s3, l3, dims)?, Shape::from((b, t, h * hd))))
    }
    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let saved = self.saved.lock().expect("attention lock").take();
        if self.probs_quant.is_some() && saved.is_none() {
            bail!("causal attention: backward without a forward pass");
        }
        fn run<T: Real>(
            q: &Tensor,
            k: &Tensor,
            v: &Tensor,
            gy: &Tensor,
            scale: f64,
            saved: Option<Box<dyn std::any::Any + Send>>,
        ) -> Result<(Tensor, Tensor, Tensor)> {
            let dims = q.dims4()?;
            let saved = match saved {
                Some(b) => Some(b.downcast::<SavedProbs<T>>().map_err(|_| {
                    candle_core::Error::Msg("causal attention: dtype changed between forward and backward".into())
                })?),
                None => None,
            };
            let probs = saved.as_ref().map(|s| s.probs.as_slice());
            let probs_q = saved.as_ref().map(|s| s.probs_q.as_slice());
            let (dq, dk, dv) = with_slice::<T, _>(q, |qs| {
                with_slice::<T, _>(k, |ks| {
                    with_slice::<T, _>(v, |vs| {
                        with_slice::<T, _>(gy, |gs| Ok(attn_bwd(qs, ks, vs, gs, dims, scale, probs, probs_q)))
                    })
                })
            })?;
            Ok((to_tensor(dq, q.shape())?, to_tensor(dk, k.shape())?, to_tensor(dv, v.shape())?))
        }
        let (dq, dk, dv) = dispatch!(q.dtype(), run, q, k, v, gy, self.scale, saved)?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

/// Fused causal attention core (CPU): q, k, v [B, H, T, hd] -> softmax(scale Q K^T) V with
/// heads merged, [B, T, H*hd]. `probs_quant`: fake quantisation of the probabilities (rows of T,
/// along the keys) before they multiply V, straight through in the backward.
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    probs_quant: Option<crate::quant::QuantCall>,
) -> Result<Tensor> {
    let op = CausalAttention { scale, probs_quant, saved: Mutex::new(None) };
    q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

pub mod block;
pub mod cuda;
pub mod cuda_block;
