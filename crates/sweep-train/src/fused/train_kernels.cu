// Row-wise training kernels for CUDA, where candle's composed ops cost most (profiled on an H100:
// the broadcast add/sub/mul/div, sum, max and eq kernels of the composed softmax and
// cross-entropy, and their backward, took several times the matrix products' time):
//   sw_causal_softmax_fwd / _bwd   softmax(scale * x + causal mask) over rows of T, and its
//                                  gradient scale * y * (dy - sum(y * dy))
//   sw_ce_fwd / sw_ce_bwd          per-row cross-entropy (loss and log-sum-exp), and its gradient
//                                  (softmax - one-hot) * g
//   sw_adamw                       one AdamW update of a parameter and its moments, in place
// One block per row (grid-stride over rows), fixed-order block reductions: deterministic, so a
// resumed run repeats an uninterrupted one bit for bit. Compiled at run time with NVRTC.

typedef unsigned int u32;
typedef unsigned long long u64;

#define SW_NEG_INF __int_as_float(0xff800000)

// Block-wide maximum / sum of one value per thread (blockDim.x a multiple of 32, at most 1024).
// Every thread gets the result. `sh` holds 32 floats.
__device__ __forceinline__ float sw_block_max(float v, float* sh) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < (int)(blockDim.x >> 5) ? sh[lane] : SW_NEG_INF;
        for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
        if (lane == 0) sh[0] = v;
    }
    __syncthreads();
    return sh[0];
}

__device__ __forceinline__ float sw_block_sum(float v, float* sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < (int)(blockDim.x >> 5) ? sh[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) sh[0] = v;
    }
    __syncthreads();
    return sh[0];
}

// x, y: rows of t scores; row r is query position r % t, which sees keys 0..=r % t.
extern "C" __global__ void sw_causal_softmax_fwd(const float* x, float* y, u64 rows, u32 t, float scale) {
    __shared__ float sh[32];
    for (u64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const u32 last = (u32)(row % t);
        const float* xr = x + row * t;
        float* yr = y + row * t;
        float m = SW_NEG_INF;
        for (u32 j = threadIdx.x; j <= last; j += blockDim.x) m = fmaxf(m, xr[j] * scale);
        m = sw_block_max(m, sh);
        float s = 0.0f;
        for (u32 j = threadIdx.x; j <= last; j += blockDim.x) s += expf(xr[j] * scale - m);
        s = sw_block_sum(s, sh);
        const float inv = 1.0f / s;
        for (u32 j = threadIdx.x; j < t; j += blockDim.x) yr[j] = j <= last ? expf(xr[j] * scale - m) * inv : 0.0f;
    }
}

// dx = scale * y * (dy - sum_k y_k dy_k) on the causal part, 0 above it.
extern "C" __global__ void sw_causal_softmax_bwd(const float* y, const float* dy, float* dx, u64 rows, u32 t, float scale) {
    __shared__ float sh[32];
    for (u64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const u32 last = (u32)(row % t);
        const float* yr = y + row * t;
        const float* dyr = dy + row * t;
        float* dxr = dx + row * t;
        float d = 0.0f;
        for (u32 j = threadIdx.x; j <= last; j += blockDim.x) d += yr[j] * dyr[j];
        d = sw_block_sum(d, sh);
        for (u32 j = threadIdx.x; j < t; j += blockDim.x) dxr[j] = j <= last ? scale * yr[j] * (dyr[j] - d) : 0.0f;
    }
}

// out[2 r] = log-sum-exp(z_r) - z_r[target_r], out[2 r + 1] = log-sum-exp(z_r); NaN for a target
// outside the vocabulary.
extern "C" __global__ void sw_ce_fwd(const float* z, const u32* target, float* out, u64 rows, u32 v) {
    __shared__ float sh[32];
    for (u64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* zr = z + row * v;
        float m = SW_NEG_INF;
        for (u32 j = threadIdx.x; j < v; j += blockDim.x) m = fmaxf(m, zr[j]);
        m = sw_block_max(m, sh);
        float s = 0.0f;
        for (u32 j = threadIdx.x; j < v; j += blockDim.x) s += expf(zr[j] - m);
        s = sw_block_sum(s, sh);
        if (threadIdx.x == 0) {
            const float lse = m + logf(s);
            const u32 tg = target[row];
            out[2 * row] = tg < v ? lse - zr[tg] : __int_as_float(0x7fc00000);
            out[2 * row + 1] = lse;
        }
    }
}

// dz_r = (exp(z_r - lse_r) - onehot(target_r)) * g_r, with lse_r = res[2 r + 1] and g_r = grad[2 r]
// (the gradient of the loss column; the log-sum-exp column is an auxiliary output).
extern "C" __global__ void sw_ce_bwd(const float* z, const u32* target, const float* res, const float* grad, float* dz, u64 rows, u32 v) {
    for (u64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* zr = z + row * v;
        float* dzr = dz + row * v;
        const float lse = res[2 * row + 1];
        const float g = grad[2 * row];
        const u32 tg = target[row];
        for (u32 j = threadIdx.x; j < v; j += blockDim.x) dzr[j] = (expf(zr[j] - lse) - (j == tg ? 1.0f : 0.0f)) * g;
    }
}

// AdamW, as the CPU kernel (fused.rs adamw_kernel), constants computed in f64 by the caller:
// m = b1 m + c1 g; v = b2 v + c2 g^2; p = p keep - lr (m ibc1) / (sqrt(v ibc2) + eps).
extern "C" __global__ void sw_adamw(float* p, float* m, float* v, const float* g, u64 n, float b1, float b2, float c1, float c2, float ibc1, float ibc2, float eps, float lr, float keep) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        const float gi = g[i];
        const float mi = b1 * m[i] + c1 * gi;
        const float vi = b2 * v[i] + c2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * keep - lr * ((mi * ibc1) / (sqrtf(vi * ibc2) + eps));
    }
}
