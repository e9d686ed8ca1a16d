//! A whole transformer block as one graph node (CPU, f32/f64; the model's
//! `ExecPath::CpuBlocks`): RMSNorm, Q/K/V projections with RoPE, causal attention, output
//! projection and residual, RMSNorm, MLP (SwiGLU or GELU) and residual, with a hand-written
//! backward built from the fused kernels of the parent module. Full precision, or a
//! fake-quantised one with the same quantisation (and random streams) as the per-op path's hooks.
//!
//! Why: candle's backward gives every tensor in the graph a zero-filled gradient buffer and adds
//! each contribution into it, about 40 ms a step on the reference shape (three full passes over
//! every activation). Inside the block the backward passes gradients directly, and only the
//! block's input gets a candle gradient.
//!
//! The weights are not arguments of the op (candle's custom ops take at most three); their
//! gradients go to a side store that [`crate::model::Transformer::backward`] merges with
//! candle's. The activations the backward needs are kept from the forward pass.

use super::*;
use crate::quant::{QuantCall, QuantTargets};
use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Largest attention-probability tensor [B, H, T, T] a block keeps for its backward pass (per
/// block); above it the backward recomputes the probabilities.
const KEEP_PROBS_BYTES: usize = 64 << 20;

/// Weight gradients computed by block backward passes, by parameter name.
pub type SideGrads = Arc<Mutex<BTreeMap<String, Tensor>>>;

/// The block's parameters, named as in the model.
pub struct BlockParams {
    /// (name, tensor) in the order attn_norm, q, k, v, o, mlp_norm, gate (SwiGLU only), up, down.
    pub weights: Vec<(String, Tensor)>,
    /// SwiGLU (gate and up) rather than GELU (up only).
    pub swiglu: bool,
}

/// Shape and constants of one block application.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    h: usize,
    hd: usize,
    d_ff: usize,
    eps: f64,
    scale: f64,
}

struct Block {
    params: BlockParams,
    cos: Tensor,
    sin: Tensor,
    dims: Dims,
    side: SideGrads,
    /// Fake quantisation of weights, linear inputs and outputs' gradients, input gradients, K/V
    /// and the attention products' inputs (none: full precision).
    quant: QuantTargets,
    /// Activations from the forward pass (`Saved<T>` for the dtype it ran in).
    saved: Mutex<Option<Box<dyn Any + Send>>>,
}

/// What the backward needs from the forward pass.
struct Saved<T> {
    hn: Vec<T>,
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    probs: Option<Vec<T>>,
    /// The quantised probabilities that multiplied V (attention target).
    probs_q: Option<Vec<T>>,
    attn: Vec<T>,
    x1: Vec<T>,
    hn2: Vec<T>,
    gate: Vec<T>,
    up: Vec<T>,
    act: Vec<T>,
    /// Per linear layer, in forward order: what its fake quantisation produced.
    sites: Vec<Site<T>>,
}

/// One linear layer's quantised operands (None: the unquantised tensor was used) and the
/// calls of its gradient quantisations (input gradient dX, output gradient dY), drawn in the
/// forward pass.
struct Site<T> {
    x: Option<Vec<T>>,
    w: Option<Vec<T>>,
    grad_in: Option<QuantCall>,
    grad_out: Option<QuantCall>,
}

/// Fake-quantises a copy of `x` (rows of `row_len`) with one drawn call: the CPU kernel of
/// [`crate::quant::fake_quant`], in f32.
fn fq<T: Real>(x: &[T], row_len: usize, call: &QuantCall) -> Result<Vec<T>> {
    super::fq_call(x, row_len, call)
}

/// Fake-quantises V [B, H, T, hd] along the tokens (rows of T of the per-head transpose, the
/// reduction dimension of P V), as the composed path does on `v.transpose(2, 3)`.
fn fq_tokens<T: Real>(v: &[T], t: usize, hd: usize, call: &QuantCall) -> Result<Vec<T>> {
    let mut vt = vec![T::zero(); v.len()];
    for (src, dst) in v.chunks(t * hd).zip(vt.chunks_mut(t * hd)) {
        for i in 0..t {
            for j in 0..hd {
                dst[j * t + i] = src[i * hd + j];
            }
        }
    }
    let q = fq(&vt, t, call)?;
    let mut out = vec![T::zero(); v.len()];
    for (src, dst) in q.chunks(t * hd).zip(out.chunks_mut(t * hd)) {
        for i in 0..t {
            for j in 0..hd {
                dst[i * hd + j] = src[j * t + i];
            }
        }
    }
    Ok(out)
}

/// a += b, on several threads.
fn add_into<T: Real>(a: &mut [T], b: &[T]) {
    a.par_chunks_mut(ELEMS_PER_TASK).zip(b.par_chunks(ELEMS_PER_TASK)).for_each(|(a, b)| {
        for (a, &b) in a.iter_mut().zip(b) {
            *a += b;
        }
    });
}

/// Runs `f` on CPU slices of the tensors (all contiguous, all of dtype T).
fn with_slices<T: WithDType, R>(ts: &[&Tensor], f: impl FnOnce(&[&[T]]) -> Result<R>) -> Result<R> {
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(ts.len());
    for (s, l) in &guards {
        match &**s {
            Storage::Cpu(c) => slices.push(cpu_slice::<T>(c, l)?),
            _ => bail!("fused block: tensor is not on the CPU"),
        }
    }
    f(&slices)
}

impl Block {
    fn weight_refs(&self) -> Vec<&Tensor> {
        let mut v: Vec<&Tensor> = self.params.weights.iter().map(|(_, t)| t).collect();
        v.push(&self.cos);
        v.push(&self.sin);
        v
    }

    /// A linear layer's forward with the fake quantisation of its input and weight (calls drawn
    /// in the per-op path's order: activations, input gradient, weights, output gradient).
    fn site_fwd<T: Real>(
        &self,
        x: &[T],
        w: &[T],
        (rows, inp, out): (usize, usize, usize),
    ) -> Result<(Vec<T>, Site<T>)> {
        let q = &self.quant;
        let xq = q.activations.as_ref().map(|c| fq(x, inp, &c.next_call())).transpose()?;
        let grad_in = q.gradients.as_ref().map(|c| c.next_call());
        let wq = q.weights.as_ref().map(|c| fq(w, inp, &c.next_call())).transpose()?;
        let y = linear_fwd(xq.as_deref().unwrap_or(x), wq.as_deref().unwrap_or(w), (rows, inp, out));
        let grad_out = q.grad_output.as_ref().map(|c| c.next_call());
        Ok((y, Site { x: xq, w: wq, grad_in, grad_out }))
    }

    /// A linear layer's backward: (dx, dW) with the quantised input and weight the forward used
    /// (straight-through), from dY fake-quantised (rows of `out`) when output gradients are, and
    /// dx fake-quantised when input gradients are.
    fn site_bwd<T: Real>(
        &self,
        site: &Site<T>,
        x: &[T],
        w: &[T],
        gy: &[T],
        dims: (usize, usize, usize),
    ) -> Result<(Vec<T>, Vec<T>)> {
        let gyq = site.grad_out.as_ref().map(|call| fq(gy, dims.2, call)).transpose()?;
        let gy = gyq.as_deref().unwrap_or(gy);
        let (dx, dw) = linear_bwd(site.x.as_deref().unwrap_or(x), site.w.as_deref().unwrap_or(w), gy, dims);
        let dx = match &site.grad_in {
            Some(call) => fq(&dx, dims.1, call)?,
            _ => dx,
        };
        Ok((dx, dw))
    }

    fn forward<T: Real>(&self, x: &[T]) -> Result<Vec<T>> {
        let Dims { b, t, h, hd, d_ff, eps, scale } = self.dims;
        let d = h * hd;
        let rows = b * t;
        let sw = self.params.swiglu;
        with_slices::<T, _>(&self.weight_refs(), |w| {
            let (an, wq, wk, wv, wo, mn) = (w[0], w[1], w[2], w[3], w[4], w[5]);
            let (wg, wu, wd) = if sw { (Some(w[6]), w[7], w[8]) } else { (None, w[6], w[7]) };
            let (cos, sin) = (w[w.len() - 2], w[w.len() - 1]);
            let mut sites = Vec::with_capacity(7);
            let hn = rms_fwd(x, an, eps);
            let mut heads = |wm: &[T], rotate: bool, kv: bool| -> Result<Vec<T>> {
                let (y, site) = self.site_fwd(&hn, wm, (rows, d, d))?;
                sites.push(site);
                let y = split_fwd(&y, cos, sin, b, t, h, hd, rotate);
                match (&self.quant.kv, kv) {
                    (Some(c), true) => fq(&y, hd, &c.next_call()),
                    _ => Ok(y),
                }
            };
            let q = heads(wq, true, false)?;
            let k = heads(wk, true, true)?;
            let v = heads(wv, false, true)?;
            // The attention products' inputs: Q, K along the head dimension, V along the tokens,
            // then P along the keys (the hooks' order on the per-op path).
            let (q, k, v) = match &self.quant.attention {
                Some(c) => {
                    (fq(&q, hd, &c.next_call())?, fq(&k, hd, &c.next_call())?, fq_tokens(&v, t, hd, &c.next_call())?)
                }
                None => (q, k, v),
            };
            let (attn, probs, probs_q) = match &self.quant.attention {
                Some(c) => {
                    let call = c.next_call();
                    let (attn, probs, probs_q) = attn_fwd_quant(&q, &k, &v, (b, h, t, hd), scale, |p| fq(p, t, &call))?;
                    (attn, Some(probs), Some(probs_q))
                }
                None => {
                    // Keep the attention probabilities for the backward unless they are large.
                    let keep = b * h * t * t * std::mem::size_of::<T>() <= KEEP_PROBS_BYTES;
                    let (attn, probs) = attn_fwd(&q, &k, &v, (b, h, t, hd), scale, keep);
                    (attn, probs, None)
                }
            };
            let (mut x1, site) = self.site_fwd(&attn, wo, (rows, d, d))?;
            sites.push(site);
            add_into(&mut x1, x);
            let hn2 = rms_fwd(&x1, mn, eps);
            let (gate, up, act) = match wg {
                Some(wg) => {
                    let (gate, site) = self.site_fwd(&hn2, wg, (rows, d, d_ff))?;
                    sites.push(site);
                    let (up, site) = self.site_fwd(&hn2, wu, (rows, d, d_ff))?;
                    sites.push(site);
                    let act = swiglu_fwd(&gate, &up);
                    (gate, up, act)
                }
                None => {
                    let (up, site) = self.site_fwd(&hn2, wu, (rows, d, d_ff))?;
                    sites.push(site);
                    let act = gelu_fwd(&up);
                    (Vec::new(), up, act)
                }
            };
            let (mut y, site) = self.site_fwd(&act, wd, (rows, d_ff, d))?;
            sites.push(site);
            add_into(&mut y, &x1);
            let saved: Box<dyn Any + Send> =
                Box::new(Saved { hn, q, k, v, probs, probs_q, attn, x1, hn2, gate, up, act, sites });
            *self.saved.lock().expect("saved lock") = Some(saved);
            Ok(y)
        })
    }

    /// dx for the block's input; the weight gradients go to the side store.
    fn backward<T: Real>(&self, x: &[T], gy: &[T]) -> Result<Vec<T>> {
        let Dims { b, t, h, hd, d_ff, eps, scale } = self.dims;
        let d = h * hd;
        let rows = b * t;
        let sw = self.params.swiglu;
        let saved = self
            .saved
            .lock()
            .expect("saved lock")
            .take()
            .ok_or_else(|| candle_core::Error::Msg("fused block: backward without a forward pass".into()))?;
        let s = saved
            .downcast::<Saved<T>>()
            .map_err(|_| candle_core::Error::Msg("fused block: dtype changed between forward and backward".into()))?;
        let mut grads: Vec<Vec<T>> = Vec::with_capacity(self.params.weights.len());
        let dx = with_slices::<T, _>(&self.weight_refs(), |w| {
            let (an, wq, wk, wv, wo, mn) = (w[0], w[1], w[2], w[3], w[4], w[5]);
            let (wg, wu, wd) = if sw { (Some(w[6]), w[7], w[8]) } else { (None, w[6], w[7]) };
            let (cos, sin) = (w[w.len() - 2], w[w.len() - 1]);
            // Sites in forward order: q, k, v, o, [gate,] up, down.
            let site = |i: usize| &s.sites[i];
            let last = s.sites.len() - 1;
            // MLP.
            let (dact, dwd) = self.site_bwd(site(last), &s.act, wd, gy, (rows, d_ff, d))?;
            let (dhn2, dwg, dwu) = match wg {
                Some(wg) => {
                    let (dg, du) = swiglu_bwd(&s.gate, &s.up, &dact);
                    let (mut dhn2, dwg) = self.site_bwd(site(4), &s.hn2, wg, &dg, (rows, d, d_ff))?;
                    let (dhn2_u, dwu) = self.site_bwd(site(5), &s.hn2, wu, &du, (rows, d, d_ff))?;
                    add_into(&mut dhn2, &dhn2_u);
                    (dhn2, Some(dwg), dwu)
                }
                None => {
                    let du = gelu_bwd(&s.up, &dact);
                    let (dhn2, dwu) = self.site_bwd(site(4), &s.hn2, wu, &du, (rows, d, d_ff))?;
                    (dhn2, None, dwu)
                }
            };
            let (mut dx1, dmn) = rms_bwd(&s.x1, mn, &dhn2, eps);
            add_into(&mut dx1, gy);
            // Attention.
            let (dattn, dwo) = self.site_bwd(site(3), &s.attn, wo, &dx1, (rows, d, d))?;
            let (dq, dk, dv) =
                attn_bwd(&s.q, &s.k, &s.v, &dattn, (b, h, t, hd), scale, s.probs.as_deref(), s.probs_q.as_deref());
            let mut dhn: Vec<T> = Vec::new();
            let mut dqkv = Vec::with_capacity(3);
            for (i, (dh, wm, rotate)) in [(&dq, wq, true), (&dk, wk, true), (&dv, wv, false)].into_iter().enumerate() {
                let dlin = split_bwd(dh, cos, sin, t, h, hd, rotate);
                let (dpart, dw) = self.site_bwd(site(i), &s.hn, wm, &dlin, (rows, d, d))?;
                if dhn.is_empty() {
                    dhn = dpart;
                } else {
                    add_into(&mut dhn, &dpart);
                }
                dqkv.push(dw);
            }
            let (mut dx, dan) = rms_bwd(x, an, &dhn, eps);
            add_into(&mut dx, &dx1);
            grads.push(dan);
            grads.extend(dqkv);
            grads.push(dwo);
            grads.push(dmn);
            grads.extend(dwg);
            grads.push(dwu);
            grads.push(dwd);
            Ok(dx)
        })?;
        let mut side = self.side.lock().expect("side grads lock");
        for ((name, w), g) in self.params.weights.iter().zip(grads) {
            let g = to_tensor(g, w.shape())?;
            let g = match side.remove(name) {
                Some(prev) => (prev + g)?,
                None => g,
            };
            side.insert(name.clone(), g);
        }
        Ok(dx)
    }
}

impl CustomOp1 for Block {
    fn name(&self) -> &'static str {
        "fused-transformer-block"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let Dims { b, t, h, hd, .. } = self.dims;
        if l.dims() != [b, t, h * hd] {
            bail!("fused block: input {:?}, expected [{b}, {t}, {}]", l.dims(), h * hd);
        }
        fn run<T: Real>(op: &Block, s: &CpuStorage, l: &Layout) -> Result<CpuStorage> {
            Ok(T::to_cpu_storage_owned(op.forward(cpu_slice::<T>(s, l)?)?))
        }
        Ok((dispatch!(s.dtype(), run, self, s, l)?, l.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, gy: &Tensor) -> Result<Option<Tensor>> {
        fn run<T: Real>(op: &Block, x: &Tensor, gy: &Tensor) -> Result<Tensor> {
            let dx = with_slice::<T, _>(x, |xs| with_slice::<T, _>(gy, |gs| op.backward(xs, gs)))?;
            to_tensor(dx, x.shape())
        }
        Ok(Some(dispatch!(x.dtype(), run, self, x, gy)?))
    }
}

/// One transformer block on x [B, T, d] (CPU, f32 or f64): x + attn(norm(x)), then + mlp(norm(.)).
/// `cos` and `sin` are the RoPE tables [T, hd/2]; `quant` the fake quantisation of the point's
/// precision (the same function, random streams included, as the per-op path's hooks); weight
/// gradients land in `side`.
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
) -> Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    if heads == 0 || d % heads != 0 || !(d / heads).is_multiple_of(2) {
        bail!("fused block: d_model {d} does not split into {heads} heads of even size");
    }
    let hd = d / heads;
    let mut want: Vec<Vec<usize>> = vec![vec![d], vec![d, d], vec![d, d], vec![d, d], vec![d, d], vec![d]];
    if params.swiglu {
        want.push(vec![d_ff, d]);
    }
    want.extend([vec![d_ff, d], vec![d, d_ff]]);
    if params.weights.len() != want.len()
        || params.weights.iter().zip(&want).any(|((_, w), s)| w.dims() != s.as_slice())
    {
        let got: Vec<_> = params.weights.iter().map(|(n, w)| format!("{n} {:?}", w.dims())).collect();
        bail!("fused block: weights {got:?} do not have the shapes {want:?}");
    }
    if cos.dims() != [t, hd / 2] || sin.dims() != [t, hd / 2] {
        bail!("fused block: RoPE tables {:?} {:?}, expected [{t}, {}]", cos.dims(), sin.dims(), hd / 2);
    }
    let weights = params.weights.iter().map(|(n, w)| Ok((n.clone(), w.contiguous()?))).collect::<Result<Vec<_>>>()?;
    let op = Block {
        params: BlockParams { weights, swiglu: params.swiglu },
        cos: cos.contiguous()?,
        sin: sin.contiguous()?,
        dims: Dims { b, t, h: heads, hd, d_ff, eps, scale: 1.0 / (hd as f64).sqrt() },
        side: side.clone(),
        quant: quant.clone(),
        saved: Mutex::new(None),
    };
    x.contiguous()?.apply_op1(op)
}
