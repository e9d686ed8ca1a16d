// The whole-block CUDA kernels (fused/cuda_block.rs launches them; compiled at run time with
// NVRTC, so building sweep needs no nvcc). The arithmetic of every kernel lives in device
// functions that are plain C++ too: tests/block_kernels_host.cpp compiles this file as host C++,
// emulates each launch with loops (same grid, same per-thread work, same reduction trees) and
// tests/cuda_block_math.rs checks the results against the CPU's fused kernels and fused block.
//
//   bk_cast_bf16                      f32 -> bf16 (round to nearest even, as half::bf16)
//   bk_add_f32                        acc += x
//   bk_rms_fwd_{f32,bf16}             RMSNorm, one warp per row; keeps 1/rms per row
//   bk_rms_dx_{f32,bf16}              its input gradient (+ a residual gradient), warp per row
//   bk_rms_dw_part, bk_colsum         its weight gradient: per-chunk partial sums, then the sum
//                                     of the chunks in chunk order (deterministic)
//   bk_rope_fwd_* / bk_rope_bwd_*     RoPE (rotate-half) with the head split [N, 3d] -> q, k, v
//                                     [B, H, T, hd], and back
//   bk_swiglu_* / bk_gelu_*           silu(gate) * up and tanh-GELU, forward and backward
//   bk_attn_fwd_*                     causal flash attention: K/V tiles in shared memory, online
//                                     softmax in f32 (base 2), never a T x T buffer; keeps the
//                                     row log-sum-exp
//   bk_attn_dsum_*, bk_attn_dkdv_*,   its backward: D = rowsum(dO * O); dK, dV per key tile
//   bk_attn_dq_*                      (loop over query tiles); dQ per query tile in a separate
//                                     pass (loop over key tiles): no atomics
//   bk_ce_fwd_*, bk_mean, bk_ce_bwd_* cross-entropy over f32 or bf16 logits (f32 arithmetic)
//   bk_embed_fwd, bk_embed_bwd        embedding gather, and its gradient per vocabulary row over
//                                     the positions of that token in position order (no atomics)
//
// Types: `float` for f32 and `u16` for bf16 storage; arithmetic is always f32 (norms, softmax,
// accumulators), as autocast does. Every reduction has a fixed order: results are the same bit
// for bit from run to run. Kernels compiled with fmad off: the fused multiply-adds are the
// explicit fmaf calls.

#ifndef BK_HOST
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;
#define BK_FN __device__ __forceinline__
#define BK_UNROLL _Pragma("unroll")
#endif

#define BK_INF __int_as_float(0x7f800000)
#define BK_NAN __int_as_float(0x7fc00000)
// Keys per online-softmax step of the attention kernels.
#define BK_KC 16

// ---------------------------------------------------------------------------------------------
// Element access

BK_FN float bk_bf16_f32(u16 h) { return __uint_as_float(((u32)h) << 16); }

// f32 -> bf16, round to nearest even, NaN kept quiet (half::bf16::from_f32).
BK_FN u16 bk_f32_bf16(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (u16)(u >> 16);
}

BK_FN float bk_ld(const float* p, u64 i) { return p[i]; }
BK_FN float bk_ld(const u16* p, u64 i) { return bk_bf16_f32(p[i]); }
BK_FN void bk_st(float* p, u64 i, float v) { p[i] = v; }
BK_FN void bk_st(u16* p, u64 i, float v) { p[i] = bk_f32_bf16(v); }

// ---------------------------------------------------------------------------------------------
// RMSNorm: y = x / sqrt(mean(x^2) + eps) * w (fused.rs rms_fwd / rms_bwd)

// Lane `lane`'s share of sum(x^2) over a row (columns lane, lane + 32, ...).
BK_FN float bk_rms_lane_sumsq(const float* x, u32 d, u32 lane) {
    float s = 0.0f;
    for (u32 c = lane; c < d; c += 32) s = fmaf(x[c], x[c], s);
    return s;
}

BK_FN float bk_rms_rstd(float sumsq, u32 d, float eps) { return 1.0f / sqrtf(sumsq / (float)d + eps); }

template <typename T>
BK_FN void bk_rms_lane_y(const float* x, const float* w, T* y, u32 d, u32 lane, float r) {
    for (u32 c = lane; c < d; c += 32) bk_st(y, c, x[c] * r * w[c]);
}

// Lane share of sum(gy * w * x) over a row.
BK_FN float bk_rms_lane_dot(const float* x, const float* w, const float* gy, u32 d, u32 lane) {
    float s = 0.0f;
    for (u32 c = lane; c < d; c += 32) s = fmaf(gy[c] * w[c], x[c], s);
    return s;
}

// dx = r (gy w - xhat c) with c = sum(gy w x) r / d, plus gres when given; dx_c: a copy in the
// compute type (may be null).
template <typename T>
BK_FN void bk_rms_lane_dx(const float* x, const float* w, const float* gy, const float* gres, float* dx, T* dx_c,
                          u32 d, u32 lane, float r, float dot) {
    const float c = dot * r / (float)d;
    for (u32 k = lane; k < d; k += 32) {
        const float xhat = x[k] * r;
        float v = r * (gy[k] * w[k] - xhat * c);
        if (gres) v += gres[k];
        dx[k] = v;
        if (dx_c) bk_st(dx_c, k, v);
    }
}

// Column `col` of rows [row0, row1): sum of gy * x * r, in row order.
BK_FN float bk_rms_dw_rows(const float* x, const float* rstd, const float* gy, u64 row0, u64 row1, u32 d, u32 col) {
    float s = 0.0f;
    for (u64 r = row0; r < row1; ++r) s = fmaf(gy[r * d + col], x[r * d + col] * rstd[r], s);
    return s;
}

// ---------------------------------------------------------------------------------------------
// RoPE (rotate-half) with the head split (fused.rs split_fwd / split_bwd)

// Pair (i, i + hd/2) of head h of row n: rotates the q and k parts of qkv [N, 3d], copies v;
// outputs [B, H, T, hd].
template <typename T>
BK_FN void bk_rope_fwd_at(const T* qkv, const float* cos, const float* sin, T* q, T* k, T* v, u32 t_len, u32 heads,
                          u32 hd, u64 idx) {
    const u32 half = hd / 2;
    const u32 i = (u32)(idx % half);
    const u64 rest = idx / half;
    const u32 h = (u32)(rest % heads);
    const u64 n = rest / heads;
    const u32 t = (u32)(n % t_len);
    const u64 b = n / t_len;
    const u64 d = (u64)heads * hd;
    const u64 src = n * 3 * d + (u64)h * hd;
    const u64 dst = ((b * heads + h) * t_len + t) * hd;
    const float c = cos[(u64)t * half + i], s = sin[(u64)t * half + i];
    float x1 = bk_ld(qkv, src + i), x2 = bk_ld(qkv, src + i + half);
    bk_st(q, dst + i, x1 * c - x2 * s);
    bk_st(q, dst + i + half, x2 * c + x1 * s);
    x1 = bk_ld(qkv, src + d + i);
    x2 = bk_ld(qkv, src + d + i + half);
    bk_st(k, dst + i, x1 * c - x2 * s);
    bk_st(k, dst + i + half, x2 * c + x1 * s);
    bk_st(v, dst + i, bk_ld(qkv, src + 2 * d + i));
    bk_st(v, dst + i + half, bk_ld(qkv, src + 2 * d + i + half));
}

// The transpose: f32 gradients dq, dk, dv [B, H, T, hd] -> dqkv [N, 3d] in the compute type.
template <typename T>
BK_FN void bk_rope_bwd_at(const float* dq, const float* dk, const float* dv, const float* cos, const float* sin, T* dqkv,
                          u32 t_len, u32 heads, u32 hd, u64 idx) {
    const u32 half = hd / 2;
    const u32 i = (u32)(idx % half);
    const u64 rest = idx / half;
    const u32 h = (u32)(rest % heads);
    const u64 n = rest / heads;
    const u32 t = (u32)(n % t_len);
    const u64 b = n / t_len;
    const u64 d = (u64)heads * hd;
    const u64 dst = n * 3 * d + (u64)h * hd;
    const u64 src = ((b * heads + h) * t_len + t) * hd;
    const float c = cos[(u64)t * half + i], s = sin[(u64)t * half + i];
    float g1 = dq[src + i], g2 = dq[src + i + half];
    bk_st(dqkv, dst + i, g1 * c + g2 * s);
    bk_st(dqkv, dst + i + half, g2 * c - g1 * s);
    g1 = dk[src + i];
    g2 = dk[src + i + half];
    bk_st(dqkv, dst + d + i, g1 * c + g2 * s);
    bk_st(dqkv, dst + d + i + half, g2 * c - g1 * s);
    bk_st(dqkv, dst + 2 * d + i, dv[src + i]);
    bk_st(dqkv, dst + 2 * d + i + half, dv[src + i + half]);
}

// ---------------------------------------------------------------------------------------------
// MLP activations (fused.rs swiglu_* / gelu_*)

BK_FN float bk_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// tanh(z) = 1 - 2 / (e^(2z) + 1), as the CPU kernel.
BK_FN float bk_tanh(float z) { return 1.0f - 2.0f / (expf(2.0f * z) + 1.0f); }

#define BK_GELU_C 0.7978845608028654f
#define BK_GELU_A 0.044715f

// gu: rows of [gate (F) | up (F)]; act: rows of F.
template <typename T>
BK_FN void bk_swiglu_fwd_at(const T* gu, T* act, u32 f, u64 idx) {
    const u64 row = idx / f, j = idx % f;
    const float g = bk_ld(gu, row * 2 * f + j), u = bk_ld(gu, row * 2 * f + f + j);
    bk_st(act, idx, g * bk_sigmoid(g) * u);
}

template <typename T>
BK_FN void bk_swiglu_bwd_at(const T* gu, const T* dact, T* dgu, u32 f, u64 idx) {
    const u64 row = idx / f, j = idx % f;
    const float g = bk_ld(gu, row * 2 * f + j), u = bk_ld(gu, row * 2 * f + f + j), gy = bk_ld(dact, idx);
    const float s = bk_sigmoid(g);
    const float silu = g * s;
    const float dsilu = s * (1.0f + g * (1.0f - s));
    bk_st(dgu, row * 2 * f + j, gy * u * dsilu);
    bk_st(dgu, row * 2 * f + f + j, gy * silu);
}

template <typename T>
BK_FN void bk_gelu_fwd_at(const T* u, T* act, u64 idx) {
    const float x = bk_ld(u, idx);
    const float t = bk_tanh(BK_GELU_C * (x + BK_GELU_A * x * x * x));
    bk_st(act, idx, 0.5f * x * (1.0f + t));
}

template <typename T>
BK_FN void bk_gelu_bwd_at(const T* u, const T* dact, T* du, u64 idx) {
    const float x = bk_ld(u, idx), g = bk_ld(dact, idx);
    const float t = bk_tanh(BK_GELU_C * (x + BK_GELU_A * x * x * x));
    const float d =
        0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * BK_GELU_C * (1.0f + 3.0f * BK_GELU_A * x * x);
    bk_st(du, idx, g * d);
}

// ---------------------------------------------------------------------------------------------
// Causal flash attention
//
// LPR threads ("lanes") share one query or key row; lane l owns columns [l seg, (l + 1) seg) of
// the head (seg = hd / LPR <= SEG) and a dot product is the lanes' partial dots summed by a
// butterfly (every lane gets the same bits). Tiles of ROWS = 128 / LPR rows sit in shared memory
// as f32, each lane's segment padded to SEG + 4 floats. Scores are in base 2: s2 = q.k scale
// log2(e), the forward keeps lse2 = m + log2(l) per row, and p = 2^(s2 - lse2).

template <int LPR, int SEG>
struct BkTile {
    enum { SS = SEG + 4, RS = LPR * SS };
};

template <int SEG>
BK_FN float bk_dot_seg(const float* a, const float* b, u32 seg) {
    float s = 0.0f;
    BK_UNROLL
    for (int c = 0; c < SEG; ++c)
        if ((u32)c < seg) s = fmaf(a[c], b[c], s);
    return s;
}

template <int SEG>
BK_FN void bk_axpy_seg(float* acc, float p, const float* x, u32 seg) {
    BK_UNROLL
    for (int c = 0; c < SEG; ++c)
        if ((u32)c < seg) acc[c] = fmaf(p, x[c], acc[c]);
}

// One lane's segment of a row into registers (zeros past seg).
template <int SEG, typename T>
BK_FN void bk_fa_row(float* r, const T* src, u32 seg) {
    BK_UNROLL
    for (int c = 0; c < SEG; ++c) r[c] = (u32)c < seg ? bk_ld(src, (u64)c) : 0.0f;
}

// Element e (of ROWS * hd) of a tile: rows [row0, row0 + ROWS) of a [T, hd] head slice with row
// stride ld, into shared memory as f32; rows past t_len are zero.
template <int LPR, int SEG, typename T>
BK_FN void bk_fa_load_at(float* sm, const T* src, u64 ld, u32 row0, u32 t_len, u32 hd, u32 e) {
    const u32 seg = hd / LPR;
    const u32 r = e / hd, c = e % hd;
    const float v = row0 + r < t_len ? bk_ld(src, (u64)(row0 + r) * ld + c) : 0.0f;
    sm[r * BkTile<LPR, SEG>::RS + (c / seg) * BkTile<LPR, SEG>::SS + c % seg] = v;
}

// One online-softmax step of a query row over keys key0 .. key0 + BK_KC - 1 (raw dots in s):
// keys after the query (or past t_len) are masked; acc, m, l are the lane's running state;
// vrow0 is the first key's V segment in shared memory, rows rs floats apart.
template <int SEG>
BK_FN void bk_fa_fwd_step(float* acc, float* m, float* l, float* s, const float* vrow0, u32 rs, u32 seg, u32 key0,
                          u32 i, u32 t_len, float scale2) {
    float cmax = *m;
    BK_UNROLL
    for (int jj = 0; jj < BK_KC; ++jj) {
        const u32 key = key0 + jj;
        s[jj] = (key <= i && key < t_len) ? s[jj] * scale2 : -BK_INF;
        cmax = fmaxf(cmax, s[jj]);
    }
    // The first step holds key 0, which every query sees: cmax is finite from there on.
    const float corr = exp2f(*m - cmax);
    *l *= corr;
    BK_UNROLL
    for (int c = 0; c < SEG; ++c) acc[c] *= corr;
    BK_UNROLL
    for (int jj = 0; jj < BK_KC; ++jj) {
        const float p = exp2f(s[jj] - cmax);
        *l += p;
        bk_axpy_seg<SEG>(acc, p, vrow0 + jj * rs, seg);
    }
    *m = cmax;
}

// p = 2^(s2 - lse2) for a key the query sees, else 0.
BK_FN float bk_fa_prob(float dot, float scale2, float lse2, int visible) {
    return visible ? exp2f(dot * scale2 - lse2) : 0.0f;
}

// dK/dV of one key row's lane from one query row: dv += p dO, dk += p (dp - D) q (the scale is
// applied once at the end).
template <int SEG>
BK_FN void bk_fa_dkdv_step(float* dk, float* dv, float dot, float dp, const float* qseg, const float* doseg,
                           float lse2, float dsum, int visible, float scale2, u32 seg) {
    const float p = bk_fa_prob(dot, scale2, lse2, visible);
    bk_axpy_seg<SEG>(dv, p, doseg, seg);
    bk_axpy_seg<SEG>(dk, p * (dp - dsum), qseg, seg);
}

// dQ of one query row's lane from one key row: dq += p (dp - D) k.
template <int SEG>
BK_FN void bk_fa_dq_step(float* dq, float dot, float dp, const float* kseg, float lse2, float dsum, int visible,
                         float scale2, u32 seg) {
    const float p = bk_fa_prob(dot, scale2, lse2, visible);
    bk_axpy_seg<SEG>(dq, p * (dp - dsum), kseg, seg);
}

// Lane share of D = sum(dO * O) of one row (columns lane, lane + 32, ...).
template <typename T>
BK_FN float bk_fa_dsum_lane(const T* o, const T* dout, u64 base, u32 hd, u32 lane) {
    float s = 0.0f;
    for (u32 c = lane; c < hd; c += 32) s = fmaf(bk_ld(dout, base + c), bk_ld(o, base + c), s);
    return s;
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy (train_kernels.cu sw_ce_*, over f32 or bf16 logits)

template <typename T>
BK_FN float bk_ce_thread_max(const T* z, u32 v, u32 tid, u32 nth) {
    float m = -BK_INF;
    for (u32 j = tid; j < v; j += nth) m = fmaxf(m, bk_ld(z, j));
    return m;
}

template <typename T>
BK_FN float bk_ce_thread_sumexp(const T* z, u32 v, float m, u32 tid, u32 nth) {
    float s = 0.0f;
    for (u32 j = tid; j < v; j += nth) s += expf(bk_ld(z, j) - m);
    return s;
}

// d loss / d z_j = (softmax_j - [j == target]) g / N.
BK_FN float bk_ce_grad(float z, float lse, int is_target, float scale) {
    const float p = expf(z - lse) * scale;
    return is_target ? p - scale : p;
}

// ---------------------------------------------------------------------------------------------
// Embedding gradient: row v of dW sums the output gradient at the positions holding token v,
// in position order (order/offsets: a stable counting sort of the tokens, built on the host).

BK_FN float bk_embed_grad_at(const float* gy, const u32* order, const u32* offsets, u32 d, u64 idx) {
    const u64 v = idx / d, col = idx % d;
    float s = 0.0f;
    for (u32 p = offsets[v]; p < offsets[v + 1]; ++p) s += gy[(u64)order[p] * d + col];
    return s;
}

#ifndef BK_HOST
// ---------------------------------------------------------------------------------------------
// Kernels (device only; tests/block_kernels_host.cpp emulates each)

extern __shared__ __align__(16) float bk_smem[];

BK_FN float bk_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

BK_FN double bk_warp_sum_f64(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <int LPR>
BK_FN float bk_lanes_sum(float v) {
    for (int o = 1; o < LPR; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Block-wide sum / max (blockDim.x a multiple of 32): warp butterflies, then the warps' values
// summed in warp order by every thread. `sh` holds 32 floats.
BK_FN float bk_block_sum(float v, float* sh) {
    v = bk_warp_sum(v);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
    __syncthreads();
    float t = 0.0f;
    for (u32 w = 0; w < (blockDim.x >> 5); ++w) t += sh[w];
    return t;
}

BK_FN float bk_block_max(float v, float* sh) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
    __syncthreads();
    float t = -BK_INF;
    for (u32 w = 0; w < (blockDim.x >> 5); ++w) t = fmaxf(t, sh[w]);
    return t;
}

#define BK_GRID_STRIDE(i, n) for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (u64)gridDim.x * blockDim.x)

extern "C" __global__ void bk_cast_bf16(const float* x, u16* y, u64 n) {
    BK_GRID_STRIDE(i, n) y[i] = bk_f32_bf16(x[i]);
}

extern "C" __global__ void bk_add_f32(float* acc, const float* x, u64 n) {
    BK_GRID_STRIDE(i, n) acc[i] += x[i];
}

// One warp per row (grid-stride over rows).
template <typename T>
__device__ void bk_rms_fwd(const float* x, const float* w, T* y, float* rstd, u64 rows, u32 d, float eps) {
    const u32 lane = threadIdx.x & 31;
    const u64 warps = (u64)gridDim.x * (blockDim.x >> 5);
    for (u64 row = (u64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); row < rows; row += warps) {
        const float* xr = x + row * d;
        const float r = bk_rms_rstd(bk_warp_sum(bk_rms_lane_sumsq(xr, d, lane)), d, eps);
        bk_rms_lane_y(xr, w, y + row * d, d, lane, r);
        if (lane == 0) rstd[row] = r;
    }
}

template <typename T>
__device__ void bk_rms_dx(const float* x, const float* w, const float* rstd, const float* gy, const float* gres,
                          float* dx, T* dx_c, u64 rows, u32 d) {
    const u32 lane = threadIdx.x & 31;
    const u64 warps = (u64)gridDim.x * (blockDim.x >> 5);
    for (u64 row = (u64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); row < rows; row += warps) {
        const u64 o = row * d;
        const float dot = bk_warp_sum(bk_rms_lane_dot(x + o, w, gy + o, d, lane));
        bk_rms_lane_dx(x + o, w, gy + o, gres ? gres + o : (const float*)0, dx + o, dx_c ? dx_c + o : (T*)0, d, lane,
                       rstd[row], dot);
    }
}

extern "C" __global__ void bk_rms_dw_part(const float* x, const float* rstd, const float* gy, float* part, u64 rows,
                                          u32 d, u32 chunk_rows) {
    const u64 chunks = (rows + chunk_rows - 1) / chunk_rows;
    BK_GRID_STRIDE(i, chunks * d) {
        const u64 ch = i / d;
        const u64 r1 = (ch + 1) * chunk_rows < rows ? (ch + 1) * chunk_rows : rows;
        part[i] = bk_rms_dw_rows(x, rstd, gy, ch * chunk_rows, r1, d, (u32)(i % d));
    }
}

extern "C" __global__ void bk_colsum(const float* part, float* out, u32 chunks, u32 d) {
    BK_GRID_STRIDE(col, (u64)d) {
        float s = 0.0f;
        for (u32 c = 0; c < chunks; ++c) s += part[(u64)c * d + col];
        out[col] = s;
    }
}

extern "C" __global__ void bk_embed_fwd(const float* w, const u32* tokens, float* out, u64 n, u32 d) {
    BK_GRID_STRIDE(i, n * d) out[i] = w[(u64)tokens[i / d] * d + i % d];
}

extern "C" __global__ void bk_embed_bwd(const float* gy, const u32* order, const u32* offsets, float* dw, u32 vocab,
                                        u32 d) {
    BK_GRID_STRIDE(i, (u64)vocab * d) dw[i] = bk_embed_grad_at(gy, order, offsets, d, i);
}

// Mean of n values in one block (f64 partials, fixed tree), as f32 into out[0].
extern "C" __global__ void bk_mean(const float* x, u64 n, float* out) {
    __shared__ double sh[32];
    double s = 0.0;
    for (u64 i = threadIdx.x; i < n; i += blockDim.x) s += (double)x[i];
    s = bk_warp_sum_f64(s);
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0.0;
        for (u32 w = 0; w < (blockDim.x >> 5); ++w) t += sh[w];
        out[0] = (float)(t / (double)n);
    }
}

// One block per row: loss[r] = lse - z[target], lse[r] (NaN loss for a target outside V).
template <typename T>
__device__ void bk_ce_fwd(const T* z, const u32* target, float* loss, float* lse, u64 rows, u32 v) {
    __shared__ float sh[32];
    for (u64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* zr = z + row * v;
        const float m = bk_block_max(bk_ce_thread_max(zr, v, threadIdx.x, blockDim.x), sh);
        const float s = bk_block_sum(bk_ce_thread_sumexp(zr, v, m, threadIdx.x, blockDim.x), sh);
        if (threadIdx.x == 0) {
            const float l = m + logf(s);
            const u32 t = target[row];
            lse[row] = l;
            loss[row] = t < v ? l - bk_ld(zr, t) : BK_NAN;
        }
        __syncthreads();
    }
}

// In place: z -> d loss / d z, with g the loss's gradient (a device scalar) and inv_n = 1 / N.
template <typename T>
__device__ void bk_ce_bwd(T* z, const u32* target, const float* lse, const float* g, float inv_n, u64 rows, u32 v) {
    const float scale = g[0] * inv_n;
    for (u64 row = blockIdx.x; row < rows; row += gridDim.x) {
        T* zr = z + row * v;
        const float l = lse[row];
        const u32 t = target[row];
        for (u32 j = threadIdx.x; j < v; j += blockDim.x) bk_st(zr, j, bk_ce_grad(bk_ld(zr, j), l, j == t, scale));
    }
}

// Grid (query tiles, B * H), ROWS * LPR threads; the tiles with the most keys start first.
template <int LPR, int SEG, int ROWS, typename T>
__device__ void bk_attn_fwd(const T* q, const T* k, const T* v, T* o, float* lse2, u32 heads, u32 t_len, u32 hd,
                            float scale2) {
    typedef BkTile<LPR, SEG> Tl;
    float* ks = bk_smem;
    float* vs = bk_smem + ROWS * Tl::RS;
    const u32 tid = threadIdx.x, nth = blockDim.x;
    const u32 r = tid / LPR, lane = tid % LPR, seg = hd / LPR;
    const u32 ntiles = (t_len + ROWS - 1) / ROWS;
    const u32 qt = ntiles - 1 - blockIdx.x;
    const u32 bh = blockIdx.y, b = bh / heads, h = bh % heads;
    const u32 i = qt * ROWS + r, ic = i < t_len ? i : t_len - 1;
    const u32 qmax = (qt * ROWS + ROWS - 1) < (t_len - 1) ? (qt * ROWS + ROWS - 1) : (t_len - 1);
    const u64 head = (u64)bh * t_len * hd;
    float qr[SEG], acc[SEG];
    bk_fa_row<SEG>(qr, q + head + (u64)ic * hd + lane * seg, seg);
    BK_UNROLL
    for (int c = 0; c < SEG; ++c) acc[c] = 0.0f;
    float m = -BK_INF, l = 0.0f;
    for (u32 kt = 0; kt <= qt; ++kt) {
        __syncthreads();
        for (u32 e = tid; e < ROWS * hd; e += nth) {
            bk_fa_load_at<LPR, SEG>(ks, k + head, hd, kt * ROWS, t_len, hd, e);
            bk_fa_load_at<LPR, SEG>(vs, v + head, hd, kt * ROWS, t_len, hd, e);
        }
        __syncthreads();
        for (u32 j0 = 0; j0 < ROWS && kt * ROWS + j0 <= qmax; j0 += BK_KC) {
            float s[BK_KC];
            BK_UNROLL
            for (int jj = 0; jj < BK_KC; ++jj)
                s[jj] = bk_lanes_sum<LPR>(bk_dot_seg<SEG>(qr, ks + (j0 + jj) * Tl::RS + lane * Tl::SS, seg));
            bk_fa_fwd_step<SEG>(acc, &m, &l, s, vs + j0 * Tl::RS + lane * Tl::SS, Tl::RS, seg, kt * ROWS + j0, ic,
                                t_len, scale2);
        }
    }
    if (i < t_len) {
        const u64 orow = ((u64)b * t_len + i) * ((u64)heads * hd) + (u64)h * hd + lane * seg;
        const float inv = 1.0f / l;
        BK_UNROLL
        for (int c = 0; c < SEG; ++c)
            if ((u32)c < seg) bk_st(o, orow + c, acc[c] * inv);
        if (lane == 0) lse2[(u64)bh * t_len + i] = m + log2f(l);
    }
}

// One warp per (b, h, t) row: D = sum(dO * O), rows in [B, H, T] order.
template <typename T>
__device__ void bk_attn_dsum(const T* o, const T* dout, float* dsum, u32 heads, u32 t_len, u32 hd, u64 rows) {
    const u32 lane = threadIdx.x & 31;
    const u64 warps = (u64)gridDim.x * (blockDim.x >> 5);
    for (u64 row = (u64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); row < rows; row += warps) {
        const u64 t = row % t_len, bh = row / t_len, b = bh / heads, h = bh % heads;
        const u64 base = (b * t_len + t) * ((u64)heads * hd) + h * hd;
        const float s = bk_warp_sum(bk_fa_dsum_lane(o, dout, base, hd, lane));
        if (lane == 0) dsum[row] = s;
    }
}

// Grid (key tiles, B * H): dK, dV of a key tile over the query tiles at or after it.
template <int LPR, int SEG, int ROWS, typename T>
__device__ void bk_attn_dkdv(const T* q, const T* k, const T* v, const T* dout, const float* lse2, const float* dsum,
                             float* dk, float* dv, u32 heads, u32 t_len, u32 hd, float scale2, float scale) {
    typedef BkTile<LPR, SEG> Tl;
    float* qs = bk_smem;
    float* dos = bk_smem + ROWS * Tl::RS;
    float* ls = bk_smem + 2 * ROWS * Tl::RS;
    float* dss = ls + ROWS;
    const u32 tid = threadIdx.x, nth = blockDim.x;
    const u32 r = tid / LPR, lane = tid % LPR, seg = hd / LPR;
    const u32 ntiles = (t_len + ROWS - 1) / ROWS;
    const u32 kt = blockIdx.x;
    const u32 bh = blockIdx.y, b = bh / heads, h = bh % heads;
    const u32 j = kt * ROWS + r, jc = j < t_len ? j : t_len - 1;
    const u64 head = (u64)bh * t_len * hd;
    const u64 d = (u64)heads * hd;
    const u64 obase = (u64)b * t_len * d + (u64)h * hd;
    float kr[SEG], vr[SEG], dkr[SEG], dvr[SEG];
    bk_fa_row<SEG>(kr, k + head + (u64)jc * hd + lane * seg, seg);
    bk_fa_row<SEG>(vr, v + head + (u64)jc * hd + lane * seg, seg);
    BK_UNROLL
    for (int c = 0; c < SEG; ++c) dkr[c] = dvr[c] = 0.0f;
    for (u32 qt = kt; qt < ntiles; ++qt) {
        __syncthreads();
        for (u32 e = tid; e < ROWS * hd; e += nth) {
            bk_fa_load_at<LPR, SEG>(qs, q + head, hd, qt * ROWS, t_len, hd, e);
            bk_fa_load_at<LPR, SEG>(dos, dout + obase, d, qt * ROWS, t_len, hd, e);
        }
        for (u32 e = tid; e < ROWS; e += nth) {
            const u32 row = qt * ROWS + e;
            ls[e] = row < t_len ? lse2[(u64)bh * t_len + row] : 0.0f;
            dss[e] = row < t_len ? dsum[(u64)bh * t_len + row] : 0.0f;
        }
        __syncthreads();
        const u32 iend = (qt * ROWS + ROWS < t_len ? qt * ROWS + ROWS : t_len) - qt * ROWS;
        for (u32 ir = 0; ir < iend; ++ir) {
            const float* qseg = qs + ir * Tl::RS + lane * Tl::SS;
            const float* doseg = dos + ir * Tl::RS + lane * Tl::SS;
            const float dot = bk_lanes_sum<LPR>(bk_dot_seg<SEG>(qseg, kr, seg));
            const float dp = bk_lanes_sum<LPR>(bk_dot_seg<SEG>(doseg, vr, seg));
            bk_fa_dkdv_step<SEG>(dkr, dvr, dot, dp, qseg, doseg, ls[ir], dss[ir], qt * ROWS + ir >= jc, scale2, seg);
        }
    }
    if (j < t_len) {
        const u64 at = head + (u64)j * hd + lane * seg;
        BK_UNROLL
        for (int c = 0; c < SEG; ++c)
            if ((u32)c < seg) {
                dk[at + c] = dkr[c] * scale;
                dv[at + c] = dvr[c];
            }
    }
}

// Grid (query tiles, B * H): dQ of a query tile over the key tiles at or before it.
template <int LPR, int SEG, int ROWS, typename T>
__device__ void bk_attn_dq(const T* q, const T* k, const T* v, const T* dout, const float* lse2, const float* dsum,
                           float* dq, u32 heads, u32 t_len, u32 hd, float scale2, float scale) {
    typedef BkTile<LPR, SEG> Tl;
    float* ks = bk_smem;
    float* vs = bk_smem + ROWS * Tl::RS;
    const u32 tid = threadIdx.x, nth = blockDim.x;
    const u32 r = tid / LPR, lane = tid % LPR, seg = hd / LPR;
    const u32 ntiles = (t_len + ROWS - 1) / ROWS;
    const u32 qt = ntiles - 1 - blockIdx.x;
    const u32 bh = blockIdx.y, b = bh / heads, h = bh % heads;
    const u32 i = qt * ROWS + r, ic = i < t_len ? i : t_len - 1;
    const u32 qmax = (qt * ROWS + ROWS - 1) < (t_len - 1) ? (qt * ROWS + ROWS - 1) : (t_len - 1);
    const u64 head = (u64)bh * t_len * hd;
    const u64 d = (u64)heads * hd;
    float qr[SEG], dor[SEG], dqr[SEG];
    bk_fa_row<SEG>(qr, q + head + (u64)ic * hd + lane * seg, seg);
    bk_fa_row<SEG>(dor, dout + ((u64)b * t_len + ic) * d + (u64)h * hd + lane * seg, seg);
    BK_UNROLL
    for (int c = 0; c < SEG; ++c) dqr[c] = 0.0f;
    const float lse_i = lse2[(u64)bh * t_len + ic], d_i = dsum[(u64)bh * t_len + ic];
    for (u32 kt = 0; kt <= qt; ++kt) {
        __syncthreads();
        for (u32 e = tid; e < ROWS * hd; e += nth) {
            bk_fa_load_at<LPR, SEG>(ks, k + head, hd, kt * ROWS, t_len, hd, e);
            bk_fa_load_at<LPR, SEG>(vs, v + head, hd, kt * ROWS, t_len, hd, e);
        }
        __syncthreads();
        const u32 jend = (qmax + 1 < kt * ROWS + ROWS ? qmax + 1 : kt * ROWS + ROWS) - kt * ROWS;
        for (u32 jr = 0; jr < jend; ++jr) {
            const float* kseg = ks + jr * Tl::RS + lane * Tl::SS;
            const float dot = bk_lanes_sum<LPR>(bk_dot_seg<SEG>(qr, kseg, seg));
            const float dp = bk_lanes_sum<LPR>(bk_dot_seg<SEG>(dor, vs + jr * Tl::RS + lane * Tl::SS, seg));
            bk_fa_dq_step<SEG>(dqr, dot, dp, kseg, lse_i, d_i, kt * ROWS + jr <= ic, scale2, seg);
        }
    }
    if (i < t_len) {
        const u64 at = head + (u64)i * hd + lane * seg;
        BK_UNROLL
        for (int c = 0; c < SEG; ++c)
            if ((u32)c < seg) dq[at + c] = dqr[c] * scale;
    }
}

// The extern "C" entry points, per compute type (f32, bf16).
#define BK_TYPED(TN, T)                                                                                              \
    extern "C" __global__ void bk_rms_fwd_##TN(const float* x, const float* w, T* y, float* rstd, u64 rows, u32 d,     \
                                               float eps) {                                                          \
        bk_rms_fwd<T>(x, w, y, rstd, rows, d, eps);                                                                  \
    }                                                                                                                \
    extern "C" __global__ void bk_rms_dx_##TN(const float* x, const float* w, const float* rstd, const float* gy,      \
                                              const float* gres, float* dx, T* dx_c, u64 rows, u32 d) {               \
        bk_rms_dx<T>(x, w, rstd, gy, gres, dx, dx_c, rows, d);                                                       \
    }                                                                                                                \
    extern "C" __global__ void bk_rope_fwd_##TN(const T* qkv, const float* cos, const float* sin, T* q, T* k, T* v,   \
                                                u64 n, u32 t_len, u32 heads, u32 hd) {                               \
        BK_GRID_STRIDE(i, n) bk_rope_fwd_at<T>(qkv, cos, sin, q, k, v, t_len, heads, hd, i);                         \
    }                                                                                                                \
    extern "C" __global__ void bk_rope_bwd_##TN(const float* dq, const float* dk, const float* dv, const float* cos,  \
                                                const float* sin, T* dqkv, u64 n, u32 t_len, u32 heads, u32 hd) {    \
        BK_GRID_STRIDE(i, n) bk_rope_bwd_at<T>(dq, dk, dv, cos, sin, dqkv, t_len, heads, hd, i);                     \
    }                                                                                                                \
    extern "C" __global__ void bk_swiglu_fwd_##TN(const T* gu, T* act, u64 n, u32 f) {                               \
        BK_GRID_STRIDE(i, n) bk_swiglu_fwd_at<T>(gu, act, f, i);                                                     \
    }                                                                                                                \
    extern "C" __global__ void bk_swiglu_bwd_##TN(const T* gu, const T* dact, T* dgu, u64 n, u32 f) {                \
        BK_GRID_STRIDE(i, n) bk_swiglu_bwd_at<T>(gu, dact, dgu, f, i);                                               \
    }                                                                                                                \
    extern "C" __global__ void bk_gelu_fwd_##TN(const T* u, T* act, u64 n) {                                         \
        BK_GRID_STRIDE(i, n) bk_gelu_fwd_at<T>(u, act, i);                                                           \
    }                                                                                                                \
    extern "C" __global__ void bk_gelu_bwd_##TN(const T* u, const T* dact, T* du, u64 n) {                           \
        BK_GRID_STRIDE(i, n) bk_gelu_bwd_at<T>(u, dact, du, i);                                                      \
    }                                                                                                                \
    extern "C" __global__ void bk_ce_fwd_##TN(const T* z, const u32* target, float* loss, float* lse, u64 rows,       \
                                              u32 v) {                                                               \
        bk_ce_fwd<T>(z, target, loss, lse, rows, v);                                                                 \
    }                                                                                                                \
    extern "C" __global__ void bk_ce_bwd_##TN(T* z, const u32* target, const float* lse, const float* g, float inv_n, \
                                              u64 rows, u32 v) {                                                     \
        bk_ce_bwd<T>(z, target, lse, g, inv_n, rows, v);                                                             \
    }                                                                                                                \
    extern "C" __global__ void bk_attn_dsum_##TN(const T* o, const T* dout, float* dsum, u32 heads, u32 t_len,       \
                                                 u32 hd, u64 rows) {                                                 \
        bk_attn_dsum<T>(o, dout, dsum, heads, t_len, hd, rows);                                                      \
    }

BK_TYPED(f32, float)
BK_TYPED(bf16, u16)

// Attention entry points per (lanes per row, segment width) and compute type.
#define BK_ATTN(NAME, LPR, SEG, TN, T)                                                                               \
    extern "C" __global__ void __launch_bounds__(128) bk_attn_fwd_##NAME##_##TN(                                     \
        const T* q, const T* k, const T* v, T* o, float* lse2, u32 heads, u32 t_len, u32 hd, float scale2) {         \
        bk_attn_fwd<LPR, SEG, 128 / LPR, T>(q, k, v, o, lse2, heads, t_len, hd, scale2);                             \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(128) bk_attn_dkdv_##NAME##_##TN(                                    \
        const T* q, const T* k, const T* v, const T* dout, const float* lse2, const float* dsum, float* dk,          \
        float* dv, u32 heads, u32 t_len, u32 hd, float scale2, float scale) {                                        \
        bk_attn_dkdv<LPR, SEG, 128 / LPR, T>(q, k, v, dout, lse2, dsum, dk, dv, heads, t_len, hd, scale2, scale);    \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(128) bk_attn_dq_##NAME##_##TN(                                      \
        const T* q, const T* k, const T* v, const T* dout, const float* lse2, const float* dsum, float* dq,          \
        u32 heads, u32 t_len, u32 hd, float scale2, float scale) {                                                   \
        bk_attn_dq<LPR, SEG, 128 / LPR, T>(q, k, v, dout, lse2, dsum, dq, heads, t_len, hd, scale2, scale);          \
    }

#define BK_ATTN_ALL(TN, T)         \
    BK_ATTN(l2s4, 2, 4, TN, T)     \
    BK_ATTN(l2s8, 2, 8, TN, T)     \
    BK_ATTN(l2s16, 2, 16, TN, T)   \
    BK_ATTN(l2s32, 2, 32, TN, T)   \
    BK_ATTN(l4s32, 4, 32, TN, T)   \
    BK_ATTN(l8s32, 8, 32, TN, T)

BK_ATTN_ALL(f32, float)
BK_ATTN_ALL(bf16, u16)

#endif
