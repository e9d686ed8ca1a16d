//! The order of work of a transformer block's forward and backward pass on a GPU, written once
//! over a [`Backend`]: which kernel of block_kernels.cu runs with which grid and arguments, which
//! cuBLAS product, which fake quantisation at which site. The CUDA backend (`launch.rs`) runs
//! it with NVRTC kernels and cuBLAS; tests/cuda_block_math.rs runs the very same code with a
//! backend that executes the kernels as host C++ (tests/block_kernels_host.cpp), so the launch
//! arguments, grids, GEMM shapes and quantisation sites are checked on any machine.
//!
//! Memory is addressed by raw device pointers ([`Ptr`]); buffers are owned by the backend's
//! [`Backend::Buf`] and freed when dropped (stream-ordered on CUDA). All work runs on one stream.

use crate::quant::{QuantConfig, QuantTargets};
use candle_core::{bail, Result};

/// A device address.
pub type Ptr = u64;

/// Element type of activations and GEMM operands: f32, or bf16 for autocast (f32 master
/// weights, f32 norms, softmax, loss and accumulation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    /// 32-bit float.
    F32,
    /// bfloat16.
    Bf16,
}

impl Elem {
    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            Elem::F32 => 4,
            Elem::Bf16 => 2,
        }
    }
    /// The suffix of the kernels for this type.
    pub fn suffix(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::Bf16 => "bf16",
        }
    }
}

/// A kernel argument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    /// A device pointer (0: none).
    Ptr(Ptr),
    /// unsigned int.
    U32(u32),
    /// unsigned long long.
    U64(u64),
    /// float.
    F32(f32),
}

/// A launch configuration: a 2-D grid of 1-D blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// Blocks in x and y.
    pub blocks: (u32, u32),
    /// Threads per block.
    pub threads: u32,
    /// Dynamic shared memory per block, in bytes.
    pub shared_bytes: u32,
}

/// A cuBLAS gemm (column-major, alpha 1, f32 accumulation): C = op(A) op(B) + beta C.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gemm {
    /// op(A) = A^T.
    pub trans_a: bool,
    /// op(B) = B^T.
    pub trans_b: bool,
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// The inner dimension.
    pub k: usize,
    /// A's address.
    pub a: Ptr,
    /// A's element type.
    pub a_type: Elem,
    /// A's leading dimension.
    pub lda: usize,
    /// B's address.
    pub b: Ptr,
    /// B's element type.
    pub b_type: Elem,
    /// B's leading dimension.
    pub ldb: usize,
    /// 0 overwrites C, 1 adds to it.
    pub beta: f32,
    /// C's address.
    pub c: Ptr,
    /// C's element type.
    pub c_type: Elem,
    /// C's leading dimension.
    pub ldc: usize,
}

/// What the schedule needs from a device.
pub trait Backend {
    /// An owned device buffer.
    type Buf;
    /// `bytes` of uninitialised device memory.
    fn alloc(&self, bytes: usize) -> Result<Self::Buf>;
    /// A buffer's address.
    fn ptr(&self, buf: &Self::Buf) -> Ptr;
    /// A device copy of `data`.
    fn upload_u32(&self, data: &[u32]) -> Result<Self::Buf>;
    /// Runs kernel `name` of block_kernels.cu.
    fn launch(&self, name: &str, grid: Grid, args: &[Arg]) -> Result<()>;
    /// Runs a cuBLAS product.
    fn gemm(&self, g: &Gemm) -> Result<()>;
    /// Copies `bytes` from `src` to `dst` (device to device).
    fn copy(&self, dst: Ptr, src: Ptr, bytes: usize) -> Result<()>;
    /// Fake-quantises `n` f32 values at `src` (rows of `row_len`) with `q` as call `counter` into
    /// a new f32 buffer: the function of `crate::quant::quantize_slice`.
    fn fake_quant(&self, src: Ptr, n: usize, row_len: usize, q: &QuantConfig, counter: u64) -> Result<Self::Buf>;
}

// ---------------------------------------------------------------------------------------------
// Launch configurations

const THREADS: u32 = 256;
/// Rows per partial sum of the RMSNorm weight gradient.
const DW_CHUNK_ROWS: usize = 64;
/// Largest row of the RMSNorm kernels handled (warp per row: any size works, this bounds the
/// per-lane loop to a sensible length).
const MAX_NORM_WIDTH: usize = 1 << 16;

fn grid_stride(n: usize) -> Grid {
    Grid {
        blocks: ((n as u64).div_ceil(THREADS as u64).clamp(1, 1 << 16) as u32, 1),
        threads: THREADS,
        shared_bytes: 0,
    }
}

/// One warp per row, 8 rows a block.
fn warp_rows(rows: usize) -> Grid {
    Grid { blocks: ((rows as u64).div_ceil(8).clamp(1, 1 << 16) as u32, 1), threads: THREADS, shared_bytes: 0 }
}

/// One block per row.
fn block_rows(rows: usize) -> Grid {
    Grid { blocks: (rows.clamp(1, 1 << 16) as u32, 1), threads: THREADS, shared_bytes: 0 }
}

fn u32_of(x: usize, what: &str) -> Result<u32> {
    u32::try_from(x)
        .map_err(|_| candle_core::Error::Msg(format!("{what} = {x} does not fit the kernels' 32-bit sizes")))
}

/// The attention kernel variant for head size `hd`: (name, lanes per row, max segment).
pub fn attention_variant(hd: usize) -> Result<(&'static str, usize, usize)> {
    let v = match hd {
        0 => bail!("attention: head size 0"),
        1..=8 => ("l2s4", 2, 4),
        9..=16 => ("l2s8", 2, 8),
        17..=32 => ("l2s16", 2, 16),
        33..=64 => ("l2s32", 2, 32),
        65..=128 => ("l4s32", 4, 32),
        129..=256 => ("l8s32", 8, 32),
        _ => bail!("attention: head size {hd} is above the kernels' 256"),
    };
    if !hd.is_multiple_of(v.1) {
        bail!("attention: head size {hd} must be a multiple of {} for the CUDA kernels", v.1);
    }
    Ok(v)
}

/// (grid, shared floats per block) of the attention kernels: `extra` floats past the two tiles.
fn attention_grid(b: usize, h: usize, t: usize, hd: usize, extra_rows: bool) -> Result<Grid> {
    let (_, lpr, seg) = attention_variant(hd)?;
    let rows = 128 / lpr;
    let rs = lpr * (seg + 4);
    let floats = 2 * rows * rs + if extra_rows { 2 * rows } else { 0 };
    Ok(Grid {
        blocks: (u32_of(t.div_ceil(rows), "attention tiles")?, u32_of(b * h, "batch x heads")?),
        threads: 128,
        shared_bytes: (floats * 4) as u32,
    })
}

// ---------------------------------------------------------------------------------------------
// Products (row-major views over cuBLAS's column-major gemm)

/// A row-major matrix operand: address, element type, row stride (elements).
#[derive(Debug, Clone, Copy)]
pub struct Mat {
    /// Address of element (0, 0).
    pub ptr: Ptr,
    /// Element type.
    pub elem: Elem,
    /// Row stride in elements.
    pub ld: usize,
}

impl Mat {
    /// The sub-matrix starting `cols` columns to the right.
    pub fn col(self, cols: usize) -> Mat {
        Mat { ptr: self.ptr + (cols * self.elem.bytes()) as u64, ..self }
    }
}

fn mat(ptr: Ptr, elem: Elem, ld: usize) -> Mat {
    Mat { ptr, elem, ld }
}

/// Row-major C [m x n] (+)= op(A) op(B): A is [m x k] (`a_t`: stored [k x m]), B is [k x n]
/// (`b_t`: stored [n x k]). In cuBLAS's column-major terms this is C^T = op(B)^T op(A)^T.
#[allow(clippy::too_many_arguments)]
pub fn matmul<B: Backend>(
    dev: &B,
    c: Mat,
    a: Mat,
    a_t: bool,
    b: Mat,
    b_t: bool,
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    dev.gemm(&Gemm {
        trans_a: b_t,
        trans_b: a_t,
        m: n,
        n: m,
        k,
        a: b.ptr,
        a_type: b.elem,
        lda: b.ld,
        b: a.ptr,
        b_type: a.elem,
        ldb: a.ld,
        beta: if accumulate { 1.0 } else { 0.0 },
        c: c.ptr,
        c_type: c.elem,
        ldc: c.ld,
    })
}

// ---------------------------------------------------------------------------------------------
// Kernels, one function each (the grids and arguments the kernels expect)

/// x (f32) -> y in `elem` (a copy for f32).
pub fn convert<B: Backend>(dev: &B, dst: Ptr, src: Ptr, n: usize, elem: Elem) -> Result<()> {
    match elem {
        Elem::F32 => dev.copy(dst, src, n * 4),
        Elem::Bf16 => dev.launch("bk_cast_bf16", grid_stride(n), &[Arg::Ptr(src), Arg::Ptr(dst), Arg::U64(n as u64)]),
    }
}

/// acc += x (f32).
pub fn add_f32<B: Backend>(dev: &B, acc: Ptr, x: Ptr, n: usize) -> Result<()> {
    dev.launch("bk_add_f32", grid_stride(n), &[Arg::Ptr(acc), Arg::Ptr(x), Arg::U64(n as u64)])
}

/// RMSNorm of rows of d (f32 x, weight w) into y (`elem`), keeping 1/rms per row in rstd.
#[allow(clippy::too_many_arguments)]
pub fn rms_fwd<B: Backend>(
    dev: &B,
    x: Ptr,
    w: Ptr,
    y: Ptr,
    elem: Elem,
    rstd: Ptr,
    rows: usize,
    d: usize,
    eps: f32,
) -> Result<()> {
    if d > MAX_NORM_WIDTH {
        bail!("RMSNorm width {d} is above the CUDA kernels' {MAX_NORM_WIDTH}");
    }
    dev.launch(
        &format!("bk_rms_fwd_{}", elem.suffix()),
        warp_rows(rows),
        &[
            Arg::Ptr(x),
            Arg::Ptr(w),
            Arg::Ptr(y),
            Arg::Ptr(rstd),
            Arg::U64(rows as u64),
            Arg::U32(d as u32),
            Arg::F32(eps),
        ],
    )
}

/// RMSNorm backward: dx (f32) = the input gradient + `gres` (a residual gradient, 0 for none),
/// also written to `dx_c` in `elem` when non-zero; the weight gradient into `dw` (f32 [d]),
/// summed over chunks of rows in a fixed order.
#[allow(clippy::too_many_arguments)]
pub fn rms_bwd<B: Backend>(
    dev: &B,
    (x, w, rstd, gy, gres): (Ptr, Ptr, Ptr, Ptr, Ptr),
    dx: Ptr,
    dx_c: Ptr,
    elem: Elem,
    dw: Ptr,
    rows: usize,
    d: usize,
) -> Result<()> {
    dev.launch(
        &format!("bk_rms_dx_{}", elem.suffix()),
        warp_rows(rows),
        &[
            Arg::Ptr(x),
            Arg::Ptr(w),
            Arg::Ptr(rstd),
            Arg::Ptr(gy),
            Arg::Ptr(gres),
            Arg::Ptr(dx),
            Arg::Ptr(dx_c),
            Arg::U64(rows as u64),
            Arg::U32(d as u32),
        ],
    )?;
    let chunks = rows.div_ceil(DW_CHUNK_ROWS).max(1);
    let part = dev.alloc(chunks * d * 4)?;
    let pp = dev.ptr(&part);
    dev.launch(
        "bk_rms_dw_part",
        grid_stride(chunks * d),
        &[
            Arg::Ptr(x),
            Arg::Ptr(rstd),
            Arg::Ptr(gy),
            Arg::Ptr(pp),
            Arg::U64(rows as u64),
            Arg::U32(d as u32),
            Arg::U32(DW_CHUNK_ROWS as u32),
        ],
    )?;
    dev.launch(
        "bk_colsum",
        grid_stride(d),
        &[Arg::Ptr(pp), Arg::Ptr(dw), Arg::U32(u32_of(rows.div_ceil(DW_CHUNK_ROWS), "chunks")?), Arg::U32(d as u32)],
    )
}

/// Shape of the attention inputs: batch, heads, positions, head size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnDims {
    /// Batch.
    pub b: usize,
    /// Heads.
    pub h: usize,
    /// Positions.
    pub t: usize,
    /// Head size.
    pub hd: usize,
}

impl AttnDims {
    fn pairs(&self) -> usize {
        self.b * self.t * self.h * (self.hd / 2)
    }
    /// 1/sqrt(hd) and the base-2 score scale 1/sqrt(hd) log2(e).
    pub fn scales(&self) -> (f32, f32) {
        let s = 1.0 / (self.hd as f64).sqrt();
        (s as f32, (s * std::f64::consts::LOG2_E) as f32)
    }
}

/// RoPE with the head split: qkv [N, 3d] -> q, k, v [B, H, T, hd], all in `elem`.
#[allow(clippy::too_many_arguments)]
pub fn rope_fwd<B: Backend>(
    dev: &B,
    qkv: Ptr,
    cos: Ptr,
    sin: Ptr,
    (q, k, v): (Ptr, Ptr, Ptr),
    a: AttnDims,
    elem: Elem,
) -> Result<()> {
    let n = a.pairs();
    dev.launch(
        &format!("bk_rope_fwd_{}", elem.suffix()),
        grid_stride(n),
        &[
            Arg::Ptr(qkv),
            Arg::Ptr(cos),
            Arg::Ptr(sin),
            Arg::Ptr(q),
            Arg::Ptr(k),
            Arg::Ptr(v),
            Arg::U64(n as u64),
            Arg::U32(a.t as u32),
            Arg::U32(a.h as u32),
            Arg::U32(a.hd as u32),
        ],
    )
}

/// The transpose of [`rope_fwd`]: f32 dq, dk, dv [B, H, T, hd] -> dqkv [N, 3d] in `elem`.
pub fn rope_bwd<B: Backend>(
    dev: &B,
    (dq, dk, dv): (Ptr, Ptr, Ptr),
    cos: Ptr,
    sin: Ptr,
    dqkv: Ptr,
    a: AttnDims,
    elem: Elem,
) -> Result<()> {
    let n = a.pairs();
    dev.launch(
        &format!("bk_rope_bwd_{}", elem.suffix()),
        grid_stride(n),
        &[
            Arg::Ptr(dq),
            Arg::Ptr(dk),
            Arg::Ptr(dv),
            Arg::Ptr(cos),
            Arg::Ptr(sin),
            Arg::Ptr(dqkv),
            Arg::U64(n as u64),
            Arg::U32(a.t as u32),
            Arg::U32(a.h as u32),
            Arg::U32(a.hd as u32),
        ],
    )
}

/// act [rows, f] = silu(gate) * up from gu [rows, 2f] (gate | up), or tanh-GELU of up [rows, f].
pub fn mlp_act_fwd<B: Backend>(
    dev: &B,
    gu: Ptr,
    act: Ptr,
    rows: usize,
    f: usize,
    swiglu: bool,
    elem: Elem,
) -> Result<()> {
    let n = rows * f;
    if swiglu {
        dev.launch(
            &format!("bk_swiglu_fwd_{}", elem.suffix()),
            grid_stride(n),
            &[Arg::Ptr(gu), Arg::Ptr(act), Arg::U64(n as u64), Arg::U32(f as u32)],
        )
    } else {
        dev.launch(
            &format!("bk_gelu_fwd_{}", elem.suffix()),
            grid_stride(n),
            &[Arg::Ptr(gu), Arg::Ptr(act), Arg::U64(n as u64)],
        )
    }
}

/// The gradient of [`mlp_act_fwd`]: dgu (the layout of gu) from dact.
#[allow(clippy::too_many_arguments)]
pub fn mlp_act_bwd<B: Backend>(
    dev: &B,
    gu: Ptr,
    dact: Ptr,
    dgu: Ptr,
    rows: usize,
    f: usize,
    swiglu: bool,
    elem: Elem,
) -> Result<()> {
    let n = rows * f;
    if swiglu {
        dev.launch(
            &format!("bk_swiglu_bwd_{}", elem.suffix()),
            grid_stride(n),
            &[Arg::Ptr(gu), Arg::Ptr(dact), Arg::Ptr(dgu), Arg::U64(n as u64), Arg::U32(f as u32)],
        )
    } else {
        dev.launch(
            &format!("bk_gelu_bwd_{}", elem.suffix()),
            grid_stride(n),
            &[Arg::Ptr(gu), Arg::Ptr(dact), Arg::Ptr(dgu), Arg::U64(n as u64)],
        )
    }
}

/// Causal attention: q, k, v [B, H, T, hd] -> o [B, T, H*hd] (heads merged), all in `elem`, and
/// the base-2 log-sum-exp of each row, lse2 [B, H, T] (f32).
pub fn attention_fwd<B: Backend>(
    dev: &B,
    (q, k, v): (Ptr, Ptr, Ptr),
    o: Ptr,
    lse2: Ptr,
    a: AttnDims,
    elem: Elem,
) -> Result<()> {
    let (name, _, _) = attention_variant(a.hd)?;
    let (_, scale2) = a.scales();
    dev.launch(
        &format!("bk_attn_fwd_{name}_{}", elem.suffix()),
        attention_grid(a.b, a.h, a.t, a.hd, false)?,
        &[
            Arg::Ptr(q),
            Arg::Ptr(k),
            Arg::Ptr(v),
            Arg::Ptr(o),
            Arg::Ptr(lse2),
            Arg::U32(a.h as u32),
            Arg::U32(a.t as u32),
            Arg::U32(a.hd as u32),
            Arg::F32(scale2),
        ],
    )
}

/// The attention's backward: f32 dq, dk, dv [B, H, T, hd] from the forward's inputs, output o
/// and lse2, and the output gradient dout [B, T, H*hd] (`elem`). Three passes: D = rowsum(dO O),
/// dK and dV per key tile, dQ per query tile.
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd<B: Backend>(
    dev: &B,
    (q, k, v): (Ptr, Ptr, Ptr),
    o: Ptr,
    lse2: Ptr,
    dout: Ptr,
    (dq, dk, dv): (Ptr, Ptr, Ptr),
    a: AttnDims,
    elem: Elem,
) -> Result<()> {
    let (name, _, _) = attention_variant(a.hd)?;
    let (scale, scale2) = a.scales();
    let rows = a.b * a.h * a.t;
    let dsum = dev.alloc(rows.max(1) * 4)?;
    let ds = dev.ptr(&dsum);
    let sfx = elem.suffix();
    dev.launch(
        &format!("bk_attn_dsum_{sfx}"),
        warp_rows(rows),
        &[
            Arg::Ptr(o),
            Arg::Ptr(dout),
            Arg::Ptr(ds),
            Arg::U32(a.h as u32),
            Arg::U32(a.t as u32),
            Arg::U32(a.hd as u32),
            Arg::U64(rows as u64),
        ],
    )?;
    let common = |out: &[Ptr]| -> Vec<Arg> {
        let mut args = vec![Arg::Ptr(q), Arg::Ptr(k), Arg::Ptr(v), Arg::Ptr(dout), Arg::Ptr(lse2), Arg::Ptr(ds)];
        args.extend(out.iter().map(|&p| Arg::Ptr(p)));
        args.extend([
            Arg::U32(a.h as u32),
            Arg::U32(a.t as u32),
            Arg::U32(a.hd as u32),
            Arg::F32(scale2),
            Arg::F32(scale),
        ]);
        args
    };
    dev.launch(&format!("bk_attn_dkdv_{name}_{sfx}"), attention_grid(a.b, a.h, a.t, a.hd, true)?, &common(&[dk, dv]))?;
    dev.launch(&format!("bk_attn_dq_{name}_{sfx}"), attention_grid(a.b, a.h, a.t, a.hd, false)?, &common(&[dq]))
}

// ---------------------------------------------------------------------------------------------
// Embedding

/// A stable counting sort of `tokens` by id: (positions in token order, then position order;
/// offsets [vocab + 1] of each token's run). Errors for a token outside the vocabulary.
pub fn embedding_csr(tokens: &[u32], vocab: usize) -> Result<(Vec<u32>, Vec<u32>)> {
    let mut offsets = vec![0u32; vocab + 1];
    for &t in tokens {
        if t as usize >= vocab {
            bail!("embedding: token {t} is outside the vocabulary of {vocab}");
        }
        offsets[t as usize + 1] += 1;
    }
    for i in 0..vocab {
        offsets[i + 1] += offsets[i];
    }
    let mut next = offsets.clone();
    let mut order = vec![0u32; tokens.len()];
    for (p, &t) in tokens.iter().enumerate() {
        order[next[t as usize] as usize] = p as u32;
        next[t as usize] += 1;
    }
    Ok((order, offsets))
}

/// Rows `tokens` (n of them, u32 on the device) of w [V, d] (f32) into out [n, d].
pub fn embedding_fwd<B: Backend>(dev: &B, w: Ptr, tokens: Ptr, out: Ptr, n: usize, d: usize) -> Result<()> {
    dev.launch(
        "bk_embed_fwd",
        grid_stride(n * d),
        &[Arg::Ptr(w), Arg::Ptr(tokens), Arg::Ptr(out), Arg::U64(n as u64), Arg::U32(d as u32)],
    )
}

/// dW [V, d] (f32) of the embedding from the output gradient gy [n, d] and the device copies of
/// [`embedding_csr`]'s order and offsets: one pass, no atomics.
pub fn embedding_bwd<B: Backend>(
    dev: &B,
    gy: Ptr,
    order: Ptr,
    offsets: Ptr,
    dw: Ptr,
    vocab: usize,
    d: usize,
) -> Result<()> {
    dev.launch(
        "bk_embed_bwd",
        grid_stride(vocab * d),
        &[Arg::Ptr(gy), Arg::Ptr(order), Arg::Ptr(offsets), Arg::Ptr(dw), Arg::U32(vocab as u32), Arg::U32(d as u32)],
    )
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy of the output projection

/// Shape of the loss head: rows, hidden size, vocabulary, compute type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadDims {
    /// Rows (tokens).
    pub n: usize,
    /// Hidden size.
    pub d: usize,
    /// Vocabulary.
    pub v: usize,
    /// Type of the logits and of the products' operands.
    pub elem: Elem,
}

/// What the head's backward needs: the logits buffer (becomes their gradient in place), the
/// rows' log-sum-exp, and the product operands in the compute type.
pub struct HeadSaved<Buf> {
    /// Logits [n, v] in the compute type.
    pub logits: Buf,
    /// Log-sum-exp per row (f32).
    pub lse: Buf,
    /// The hidden states in the compute type (None for f32: the input itself).
    pub x_c: Option<Buf>,
    /// The projection in the compute type (None for f32).
    pub w_c: Option<Buf>,
    /// Shape.
    pub dims: HeadDims,
}

/// Mean cross-entropy of logits = x W^T (x [n, d], W [v, d], both f32) against `targets` (u32
/// on the device); the loss (f32) into `loss`. `reuse`: the previous step's buffers.
pub fn head_ce_fwd<B: Backend>(
    dev: &B,
    x: Ptr,
    w: Ptr,
    targets: Ptr,
    loss: Ptr,
    hd: HeadDims,
    reuse: Option<HeadSaved<B::Buf>>,
) -> Result<HeadSaved<B::Buf>> {
    let HeadDims { n, d, v, elem } = hd;
    u32_of(v, "vocabulary")?;
    let s = match reuse {
        Some(s) if s.dims == hd => s,
        _ => HeadSaved {
            logits: dev.alloc(n * v * elem.bytes())?,
            lse: dev.alloc(n.max(1) * 4)?,
            x_c: if elem == Elem::F32 { None } else { Some(dev.alloc(n * d * elem.bytes())?) },
            w_c: if elem == Elem::F32 { None } else { Some(dev.alloc(v * d * elem.bytes())?) },
            dims: hd,
        },
    };
    let (xo, wo) = match (&s.x_c, &s.w_c) {
        (Some(xc), Some(wc)) => {
            let (xp, wp) = (dev.ptr(xc), dev.ptr(wc));
            convert(dev, xp, x, n * d, elem)?;
            convert(dev, wp, w, v * d, elem)?;
            (xp, wp)
        }
        _ => (x, w),
    };
    let z = dev.ptr(&s.logits);
    matmul(dev, mat(z, elem, v), mat(xo, elem, d), false, mat(wo, elem, d), true, (n, v, d), false)?;
    let rows_loss = dev.alloc(n.max(1) * 4)?;
    let rl = dev.ptr(&rows_loss);
    let lse = dev.ptr(&s.lse);
    dev.launch(
        &format!("bk_ce_fwd_{}", elem.suffix()),
        block_rows(n),
        &[Arg::Ptr(z), Arg::Ptr(targets), Arg::Ptr(rl), Arg::Ptr(lse), Arg::U64(n as u64), Arg::U32(v as u32)],
    )?;
    dev.launch(
        "bk_mean",
        Grid { blocks: (1, 1), threads: 1024, shared_bytes: 0 },
        &[Arg::Ptr(rl), Arg::U64(n as u64), Arg::Ptr(loss)],
    )?;
    Ok(s)
}

/// The head's backward: dx [n, d] and dW [v, d] (f32, into `dx`, `dw`) for a loss gradient `g`
/// (a device f32 scalar). The logits buffer becomes their gradient in place.
#[allow(clippy::too_many_arguments)]
pub fn head_ce_bwd<B: Backend>(
    dev: &B,
    s: &HeadSaved<B::Buf>,
    x: Ptr,
    w: Ptr,
    targets: Ptr,
    g: Ptr,
    dx: Ptr,
    dw: Ptr,
) -> Result<()> {
    let HeadDims { n, d, v, elem } = s.dims;
    let z = dev.ptr(&s.logits);
    dev.launch(
        &format!("bk_ce_bwd_{}", elem.suffix()),
        block_rows(n),
        &[
            Arg::Ptr(z),
            Arg::Ptr(targets),
            Arg::Ptr(dev.ptr(&s.lse)),
            Arg::Ptr(g),
            Arg::F32((1.0 / n.max(1) as f64) as f32),
            Arg::U64(n as u64),
            Arg::U32(v as u32),
        ],
    )?;
    let xo = s.x_c.as_ref().map_or(x, |b| dev.ptr(b));
    let wo = s.w_c.as_ref().map_or(w, |b| dev.ptr(b));
    // dx = dZ W [n x d]; dW = dZ^T x [v x d].
    matmul(dev, mat(dx, Elem::F32, d), mat(z, elem, v), false, mat(wo, elem, d), false, (n, d, v), false)?;
    matmul(dev, mat(dw, Elem::F32, d), mat(z, elem, v), true, mat(xo, elem, d), false, (v, d, n), false)
}

// ---------------------------------------------------------------------------------------------
// The transformer block

/// Shape and constants of one block application.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockDims {
    /// Batch.
    pub b: usize,
    /// Positions.
    pub t: usize,
    /// Heads.
    pub h: usize,
    /// Head size.
    pub hd: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// SwiGLU (gate and up) rather than GELU (up only).
    pub swiglu: bool,
    /// Compute type of activations and products.
    pub elem: Elem,
}

impl BlockDims {
    /// d_model.
    pub fn d(&self) -> usize {
        self.h * self.hd
    }
    /// Rows B * T.
    pub fn rows(&self) -> usize {
        self.b * self.t
    }
    fn attn(&self) -> AttnDims {
        AttnDims { b: self.b, h: self.h, t: self.t, hd: self.hd }
    }
    /// Width of the gate|up activation: 2 d_ff (SwiGLU) or d_ff (GELU).
    fn gu_width(&self) -> usize {
        if self.swiglu {
            2 * self.d_ff
        } else {
            self.d_ff
        }
    }
    /// Element offsets of q, k, v, o, [gate,] up, down in the packed weights, and their total.
    fn pack_offsets(&self) -> (Vec<usize>, usize) {
        let (d, f) = (self.d(), self.d_ff);
        let mut sizes = vec![d * d; 4];
        if self.swiglu {
            sizes.push(f * d);
        }
        sizes.extend([f * d, d * f]);
        let mut offs = Vec::with_capacity(sizes.len());
        let mut at = 0;
        for s in sizes {
            offs.push(at);
            at += s;
        }
        (offs, at)
    }
}

/// Addresses of a block's f32 master weights, named as in the model.
#[derive(Debug, Clone, Copy)]
pub struct BlockWeights {
    /// input_layernorm [d].
    pub attn_norm: Ptr,
    /// q_proj [d, d].
    pub q: Ptr,
    /// k_proj [d, d].
    pub k: Ptr,
    /// v_proj [d, d].
    pub v: Ptr,
    /// o_proj [d, d].
    pub o: Ptr,
    /// post_attention_layernorm [d].
    pub mlp_norm: Ptr,
    /// gate_proj [d_ff, d] (SwiGLU only).
    pub gate: Option<Ptr>,
    /// up_proj [d_ff, d].
    pub up: Ptr,
    /// down_proj [d, d_ff].
    pub down: Ptr,
}

impl BlockWeights {
    /// The weights in the CPU block's order: attn_norm, q, k, v, o, mlp_norm, [gate,] up, down.
    pub fn from_ordered(ptrs: &[Ptr], swiglu: bool) -> Result<BlockWeights> {
        let want = if swiglu { 9 } else { 8 };
        if ptrs.len() != want {
            bail!("block weights: {} given, {want} expected", ptrs.len());
        }
        let (gate, rest) = if swiglu { (Some(ptrs[6]), &ptrs[7..]) } else { (None, &ptrs[6..]) };
        Ok(BlockWeights {
            attn_norm: ptrs[0],
            q: ptrs[1],
            k: ptrs[2],
            v: ptrs[3],
            o: ptrs[4],
            mlp_norm: ptrs[5],
            gate,
            up: rest[0],
            down: rest[1],
        })
    }
    /// The matrices in pack order: q, k, v, o, [gate,] up, down.
    fn matrices(&self) -> Vec<Ptr> {
        let mut m = vec![self.q, self.k, self.v, self.o];
        m.extend(self.gate);
        m.extend([self.up, self.down]);
        m
    }
}

/// One linear layer's fake-quantised input (None: the unquantised activation) and the
/// stochastic-rounding counter of its input gradient, drawn in the forward pass.
pub struct Site<Buf> {
    x: Option<Buf>,
    grad_counter: Option<u64>,
}

/// What the backward needs from the forward pass; the buffers are reused by the next step's
/// forward pass of the same block when the shape is unchanged.
pub struct Saved<Buf> {
    dims: BlockDims,
    /// Matrices q, k, v, o, [gate,] up, down (fake-quantised when weights are) in the compute type.
    wpack: Buf,
    hn: Buf,
    rstd1: Buf,
    q: Buf,
    k: Buf,
    v: Buf,
    attn: Buf,
    lse2: Buf,
    x1: Buf,
    hn2: Buf,
    rstd2: Buf,
    gu: Buf,
    act: Buf,
    sites: Vec<Site<Buf>>,
}

impl<Buf> Saved<Buf> {
    fn alloc<B: Backend<Buf = Buf>>(dev: &B, dm: &BlockDims) -> Result<Saved<Buf>> {
        let (n, d, e) = (dm.rows(), dm.d(), dm.elem.bytes());
        let f32s = |k: usize| dev.alloc(k.max(1) * 4);
        let cds = |k: usize| dev.alloc(k.max(1) * e);
        Ok(Saved {
            dims: *dm,
            wpack: cds(dm.pack_offsets().1)?,
            hn: cds(n * d)?,
            rstd1: f32s(n)?,
            q: cds(n * d)?,
            k: cds(n * d)?,
            v: cds(n * d)?,
            attn: cds(n * d)?,
            lse2: f32s(n * dm.h)?,
            x1: f32s(n * d)?,
            hn2: cds(n * d)?,
            rstd2: f32s(n)?,
            gu: cds(n * dm.gu_width())?,
            act: cds(n * dm.d_ff)?,
            sites: Vec::new(),
        })
    }
    /// The shape these buffers hold.
    pub fn dims(&self) -> BlockDims {
        self.dims
    }
}

fn check_dims(dm: &BlockDims, quant: &QuantTargets) -> Result<()> {
    if dm.hd == 0 || !dm.hd.is_multiple_of(2) {
        bail!("CUDA block: head size {} must be even (RoPE)", dm.hd);
    }
    attention_variant(dm.hd)?;
    u32_of(dm.rows() * 3 * dm.d(), "rows x 3 d_model")?;
    u32_of(dm.rows() * dm.gu_width(), "rows x d_ff")?;
    if dm.elem != Elem::F32 && !quant.is_empty() {
        bail!(
            "CUDA block: fake quantisation runs with f32 products; bf16 autocast and a quantised format do not combine"
        );
    }
    Ok(())
}

/// A linear layer's input after the activation quantisation of its site (drawn now, in site
/// order), and its gradient counter.
fn site_input<B: Backend>(
    dev: &B,
    quant: &QuantTargets,
    x: Ptr,
    n: usize,
    row_len: usize,
) -> Result<(Ptr, Site<B::Buf>)> {
    let xq = match &quant.activations {
        Some(c) => Some(dev.fake_quant(x, n, row_len, c, c.next_counter())?),
        None => None,
    };
    let grad_counter = quant.gradients.as_ref().map(|c| c.next_counter());
    let p = xq.as_ref().map_or(x, |b| dev.ptr(b));
    Ok((p, Site { x: xq, grad_counter }))
}

/// A site's input-gradient quantisation (f32 rows of `row_len`), or the gradient itself.
fn site_grad<B: Backend>(
    dev: &B,
    quant: &QuantTargets,
    site: &Site<B::Buf>,
    g: Ptr,
    n: usize,
    row_len: usize,
) -> Result<Option<B::Buf>> {
    match (&quant.gradients, site.grad_counter) {
        (Some(c), Some(counter)) => Ok(Some(dev.fake_quant(g, n, row_len, c, counter)?)),
        _ => Ok(None),
    }
}

/// One transformer block forward on x [B*T, d] (f32): y = x1 + mlp(norm(x1)), x1 = x +
/// attn(norm(x)), into `y` (f32, same shape). Returns what the backward needs (reusing
/// `reuse`'s buffers when its shape matches). The fake quantisation of `quant` runs at the CPU
/// block's sites with the same counters, in the same order.
#[allow(clippy::too_many_arguments)]
pub fn block_fwd<B: Backend>(
    dev: &B,
    dm: &BlockDims,
    x: Ptr,
    w: &BlockWeights,
    (cos, sin): (Ptr, Ptr),
    quant: &QuantTargets,
    y: Ptr,
    reuse: Option<Saved<B::Buf>>,
) -> Result<Saved<B::Buf>> {
    check_dims(dm, quant)?;
    if w.gate.is_some() != dm.swiglu {
        bail!("CUDA block: a gate projection is given exactly for SwiGLU");
    }
    let (n, d, f, e) = (dm.rows(), dm.d(), dm.d_ff, dm.elem);
    let mut s = match reuse {
        Some(s) if s.dims == *dm => s,
        _ => Saved::alloc(dev, dm)?,
    };
    s.sites.clear();
    let cd = |p: Ptr, ld: usize| mat(p, e, ld);
    let f32m = |p: Ptr, ld: usize| mat(p, Elem::F32, ld);

    // Weights in the compute type, fake-quantised in site order when weights are quantised.
    let (offs, _) = dm.pack_offsets();
    let wp = dev.ptr(&s.wpack);
    let wrow = |i: usize| wp + (offs[i] * e.bytes()) as u64;
    let inner: Vec<usize> = {
        let mut v = vec![d; 4];
        if dm.swiglu {
            v.push(d);
        }
        v.extend([d, f]);
        v
    };
    for (i, &src) in w.matrices().iter().enumerate() {
        let len = if i + 1 == inner.len() || i >= 4 { f * d } else { d * d };
        let q = match &quant.weights {
            Some(c) => Some(dev.fake_quant(src, len, inner[i], c, c.next_counter())?),
            None => None,
        };
        convert(dev, wrow(i), q.as_ref().map_or(src, |b| dev.ptr(b)), len, e)?;
    }
    let (wq, wo) = (wrow(0), wrow(3));
    let (wgu, wd) = (wrow(4), wrow(offs.len() - 1));

    // Attention.
    let hn = dev.ptr(&s.hn);
    rms_fwd(dev, x, w.attn_norm, hn, e, dev.ptr(&s.rstd1), n, d, dm.eps)?;
    let qkv = dev.alloc(n * 3 * d * e.bytes())?;
    let qkvp = dev.ptr(&qkv);
    if quant.activations.is_some() {
        for i in 0..3 {
            let (xin, site) = site_input(dev, quant, hn, n * d, d)?;
            let wi = wq + (i * d * d * e.bytes()) as u64;
            matmul(dev, cd(qkvp, 3 * d).col(i * d), cd(xin, d), false, cd(wi, d), true, (n, d, d), false)?;
            s.sites.push(site);
        }
    } else {
        for _ in 0..3 {
            s.sites.push(site_input(dev, quant, hn, n * d, d)?.1);
        }
        matmul(dev, cd(qkvp, 3 * d), cd(hn, d), false, cd(wq, d), true, (n, 3 * d, d), false)?;
    }
    let a = dm.attn();
    rope_fwd(dev, qkvp, cos, sin, (dev.ptr(&s.q), dev.ptr(&s.k), dev.ptr(&s.v)), a, e)?;
    drop(qkv);
    if let Some(c) = &quant.kv {
        s.k = dev.fake_quant(dev.ptr(&s.k), n * d, dm.hd, c, c.next_counter())?;
        s.v = dev.fake_quant(dev.ptr(&s.v), n * d, dm.hd, c, c.next_counter())?;
    }
    let attn = dev.ptr(&s.attn);
    attention_fwd(dev, (dev.ptr(&s.q), dev.ptr(&s.k), dev.ptr(&s.v)), attn, dev.ptr(&s.lse2), a, e)?;
    let x1 = dev.ptr(&s.x1);
    dev.copy(x1, x, n * d * 4)?;
    let (ain, site) = site_input(dev, quant, attn, n * d, d)?;
    matmul(dev, f32m(x1, d), cd(ain, d), false, cd(wo, d), true, (n, d, d), true)?;
    s.sites.push(site);

    // MLP.
    let hn2 = dev.ptr(&s.hn2);
    rms_fwd(dev, x1, w.mlp_norm, hn2, e, dev.ptr(&s.rstd2), n, d, dm.eps)?;
    let (gu, gw) = (dev.ptr(&s.gu), dm.gu_width());
    if quant.activations.is_some() && dm.swiglu {
        for i in 0..2 {
            let (xin, site) = site_input(dev, quant, hn2, n * d, d)?;
            let wi = wgu + (i * f * d * e.bytes()) as u64;
            matmul(dev, cd(gu, gw).col(i * f), cd(xin, d), false, cd(wi, d), true, (n, f, d), false)?;
            s.sites.push(site);
        }
    } else {
        let (xin, site) = site_input(dev, quant, hn2, n * d, d)?;
        s.sites.push(site);
        if dm.swiglu {
            s.sites.push(site_input(dev, quant, hn2, n * d, d)?.1);
        }
        matmul(dev, cd(gu, gw), cd(xin, d), false, cd(wgu, d), true, (n, gw, d), false)?;
    }
    let act = dev.ptr(&s.act);
    mlp_act_fwd(dev, gu, act, n, f, dm.swiglu, e)?;
    dev.copy(y, x1, n * d * 4)?;
    let (actin, site) = site_input(dev, quant, act, n * f, f)?;
    matmul(dev, f32m(y, d), cd(actin, f), false, cd(wd, f), true, (n, d, f), true)?;
    s.sites.push(site);
    Ok(s)
}

/// The block's backward from gy [B*T, d] (f32): dx (f32, into `dx`) and the weight gradients
/// (f32 buffers in the CPU block's order: attn_norm, q, k, v, o, mlp_norm, [gate,] up, down).
#[allow(clippy::too_many_arguments)]
pub fn block_bwd<B: Backend>(
    dev: &B,
    s: &Saved<B::Buf>,
    x: Ptr,
    w: &BlockWeights,
    (cos, sin): (Ptr, Ptr),
    quant: &QuantTargets,
    gy: Ptr,
    dx: Ptr,
) -> Result<Vec<B::Buf>> {
    let dm = &s.dims;
    let (n, d, f, e) = (dm.rows(), dm.d(), dm.d_ff, dm.elem);
    let eb = e.bytes();
    let cd = |p: Ptr, ld: usize| mat(p, e, ld);
    let f32m = |p: Ptr, ld: usize| mat(p, Elem::F32, ld);
    let (offs, _) = dm.pack_offsets();
    let wp = dev.ptr(&s.wpack);
    let wrow = |i: usize| wp + (offs[i] * eb) as u64;
    let (wq, wo, wgu, wd) = (wrow(0), wrow(3), wrow(4), wrow(offs.len() - 1));
    let site = |i: usize| &s.sites[i];
    let site_x = |i: usize, default: Ptr| site(i).x.as_ref().map_or(default, |b| dev.ptr(b));
    let last = s.sites.len() - 1;
    let grad = |len: usize| dev.alloc(len * 4);

    // The output gradient as a product operand.
    let gyc_buf = if e == Elem::F32 { None } else { Some(dev.alloc(n * d * eb)?) };
    let gyc = match &gyc_buf {
        Some(b) => {
            convert(dev, dev.ptr(b), gy, n * d, e)?;
            dev.ptr(b)
        }
        None => gy,
    };

    // Down projection.
    let dwd = grad(d * f)?;
    let act_in = site_x(last, dev.ptr(&s.act));
    matmul(dev, f32m(dev.ptr(&dwd), f), cd(gyc, d), true, cd(act_in, f), false, (d, f, n), false)?;
    let dact_buf = dev.alloc(n * f * eb)?;
    matmul(dev, cd(dev.ptr(&dact_buf), f), cd(gyc, d), false, cd(wd, f), false, (n, f, d), false)?;
    let dact_q = site_grad(dev, quant, site(last), dev.ptr(&dact_buf), n * f, f)?;
    let dact = dact_q.as_ref().map_or(dev.ptr(&dact_buf), |b| dev.ptr(b));

    // Activation, gate and up projections.
    let gw = dm.gu_width();
    let dgu = dev.alloc(n * gw * eb)?;
    let dgup = dev.ptr(&dgu);
    mlp_act_bwd(dev, dev.ptr(&s.gu), dact, dgup, n, f, dm.swiglu, e)?;
    let hn2 = dev.ptr(&s.hn2);
    let mlp_sites: Vec<usize> = if dm.swiglu { vec![4, 5] } else { vec![4] };
    let dhn2 = dev.alloc(n * d * 4)?;
    let dhn2p = dev.ptr(&dhn2);
    if quant.gradients.is_some() {
        let tmp = dev.alloc(n * d * 4)?;
        for (j, &si) in mlp_sites.iter().enumerate() {
            let wi = wgu + (j * f * d * eb) as u64;
            let out = if j == 0 { dhn2p } else { dev.ptr(&tmp) };
            matmul(dev, f32m(out, d), cd(dgup, gw).col(j * f), false, cd(wi, d), false, (n, d, f), false)?;
            if let Some(qd) = site_grad(dev, quant, site(si), out, n * d, d)? {
                dev.copy(out, dev.ptr(&qd), n * d * 4)?;
            }
            if j > 0 {
                add_f32(dev, dhn2p, out, n * d)?;
            }
        }
    } else {
        matmul(dev, f32m(dhn2p, d), cd(dgup, gw), false, cd(wgu, d), false, (n, d, gw), false)?;
    }
    let mut dw_mlp = Vec::with_capacity(2);
    for (j, &si) in mlp_sites.iter().enumerate() {
        let g = grad(f * d)?;
        let xin = site_x(si, hn2);
        matmul(dev, f32m(dev.ptr(&g), d), cd(dgup, gw).col(j * f), true, cd(xin, d), false, (f, d, n), false)?;
        dw_mlp.push(g);
    }
    drop(dgu);

    // Second norm and the residual.
    let dx1 = dev.alloc(n * d * 4)?;
    let dx1p = dev.ptr(&dx1);
    let dx1c_buf = if e == Elem::F32 { None } else { Some(dev.alloc(n * d * eb)?) };
    let dx1c = dx1c_buf.as_ref().map_or(0, |b| dev.ptr(b));
    let dmn = grad(d)?;
    let x1 = dev.ptr(&s.x1);
    rms_bwd(dev, (x1, w.mlp_norm, dev.ptr(&s.rstd2), dhn2p, gy), dx1p, dx1c, e, dev.ptr(&dmn), n, d)?;
    drop(dhn2);
    let dx1o = if dx1c != 0 { dx1c } else { dx1p };

    // Output projection.
    let dwo = grad(d * d)?;
    let attn = dev.ptr(&s.attn);
    matmul(dev, f32m(dev.ptr(&dwo), d), cd(dx1o, d), true, cd(site_x(3, attn), d), false, (d, d, n), false)?;
    let dattn_buf = dev.alloc(n * d * eb)?;
    matmul(dev, cd(dev.ptr(&dattn_buf), d), cd(dx1o, d), false, cd(wo, d), false, (n, d, d), false)?;
    let dattn_q = site_grad(dev, quant, site(3), dev.ptr(&dattn_buf), n * d, d)?;
    let dattn = dattn_q.as_ref().map_or(dev.ptr(&dattn_buf), |b| dev.ptr(b));

    // Attention and RoPE.
    let dqkv_f32 = dev.alloc(3 * n * d * 4)?;
    let dqp = dev.ptr(&dqkv_f32);
    let (dq, dk, dv) = (dqp, dqp + (n * d * 4) as u64, dqp + (2 * n * d * 4) as u64);
    let a = dm.attn();
    attention_bwd(
        dev,
        (dev.ptr(&s.q), dev.ptr(&s.k), dev.ptr(&s.v)),
        attn,
        dev.ptr(&s.lse2),
        dattn,
        (dq, dk, dv),
        a,
        e,
    )?;
    drop(dattn_q);
    drop(dattn_buf);
    let dqkv = dev.alloc(n * 3 * d * eb)?;
    let dqkvp = dev.ptr(&dqkv);
    rope_bwd(dev, (dq, dk, dv), cos, sin, dqkvp, a, e)?;
    drop(dqkv_f32);

    // Q, K, V projections.
    let hn = dev.ptr(&s.hn);
    let dhn = dev.alloc(n * d * 4)?;
    let dhnp = dev.ptr(&dhn);
    if quant.gradients.is_some() {
        let tmp = dev.alloc(n * d * 4)?;
        for i in 0..3 {
            let wi = wq + (i * d * d * eb) as u64;
            let out = if i == 0 { dhnp } else { dev.ptr(&tmp) };
            matmul(dev, f32m(out, d), cd(dqkvp, 3 * d).col(i * d), false, cd(wi, d), false, (n, d, d), false)?;
            if let Some(qd) = site_grad(dev, quant, site(i), out, n * d, d)? {
                dev.copy(out, dev.ptr(&qd), n * d * 4)?;
            }
            if i > 0 {
                add_f32(dev, dhnp, out, n * d)?;
            }
        }
    } else {
        matmul(dev, f32m(dhnp, d), cd(dqkvp, 3 * d), false, cd(wq, d), false, (n, d, 3 * d), false)?;
    }
    let mut dw_qkv = Vec::with_capacity(3);
    for i in 0..3 {
        let g = grad(d * d)?;
        matmul(
            dev,
            f32m(dev.ptr(&g), d),
            cd(dqkvp, 3 * d).col(i * d),
            true,
            cd(site_x(i, hn), d),
            false,
            (d, d, n),
            false,
        )?;
        dw_qkv.push(g);
    }
    drop(dqkv);

    // First norm and the residual.
    let dan = grad(d)?;
    rms_bwd(dev, (x, w.attn_norm, dev.ptr(&s.rstd1), dhnp, dx1p), dx, 0, e, dev.ptr(&dan), n, d)?;

    let mut grads = vec![dan];
    grads.extend(dw_qkv);
    grads.push(dwo);
    grads.push(dmn);
    grads.extend(dw_mlp);
    grads.push(dwd);
    Ok(grads)
}
