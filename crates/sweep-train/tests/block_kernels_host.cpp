// Host build of src/fused/block_kernels.cu for tests/cuda_block_math.rs: the kernels' device
// functions compiled as plain C++, each kernel emulated by loops over its grid and threads (the
// same per-thread work, the same warp and block reduction trees), and cuBLAS's gemm as a naive
// column-major product. It serves the block schedule of fused/cuda_block/schedule.rs over pipes,
// as a stand-in GPU: allocations are poisoned with NaN so unwritten outputs show, every pointer
// argument must lie in an allocation, and each kernel checks its launch configuration.
//
// Protocol (little-endian, stdin -> stdout). Request: u32 opcode, then
//   1 alloc   u64 bytes                      -> u64 address
//   2 write   u64 address, u64 bytes, data   -> (nothing)
//   3 read    u64 address, u64 bytes         -> data
//   4 launch  u32 name length, name, u32 grid x, grid y, threads, shared bytes, u32 argument
//             count, per argument u32 kind (0 pointer, 1 u32, 2 u64, 3 f32) and u64 value
//   5 gemm    u32 trans a, trans b, m, n, k, u64 a, u32 a type (0 f32, 1 bf16), u32 lda,
//             u64 b, u32 b type, u32 ldb, f32 beta, u64 c, u32 c type, u32 ldc
//   6 copy    u64 dst, u64 src, u64 bytes
//   7 free    u64 address (poisoned and unmapped: a later use is an error)
// Reply: u32 status (0 ok, then the payload; else u32 length and an error message).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#define BK_HOST 1
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;
#define BK_FN static inline
#define BK_UNROLL
static inline u32 __float_as_uint(float f) {
    u32 u;
    std::memcpy(&u, &f, 4);
    return u;
}
static inline float __uint_as_float(u32 u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
static inline float __int_as_float(int i) { return __uint_as_float((u32)i); }
#include <math.h>

#include "../src/fused/block_kernels.cu"

// ---------------------------------------------------------------------------------------------
// Memory

static std::map<u64, u64> g_allocs;  // start -> bytes
static std::vector<std::unique_ptr<unsigned char[]>> g_owned;

static void fail(const std::string& msg) { throw std::runtime_error(msg); }

static void check_range(u64 p, u64 bytes, const char* what) {
    auto it = g_allocs.upper_bound(p);
    if (it == g_allocs.begin()) fail(std::string(what) + ": address outside every allocation");
    --it;
    if (p + bytes > it->first + it->second) fail(std::string(what) + ": range runs past its allocation");
}

// ---------------------------------------------------------------------------------------------
// Reductions as the device does them

static float host_warp_sum(const float* v) {
    float a[32], t[32];
    std::memcpy(a, v, sizeof a);
    for (int o = 16; o > 0; o >>= 1) {
        for (int l = 0; l < 32; ++l) t[l] = a[l] + a[l ^ o];
        std::memcpy(a, t, sizeof a);
    }
    return a[0];
}

static double host_warp_sum_f64(const double* v) {
    double a[32], t[32];
    std::memcpy(a, v, sizeof a);
    for (int o = 16; o > 0; o >>= 1) {
        for (int l = 0; l < 32; ++l) t[l] = a[l] + a[l ^ o];
        std::memcpy(a, t, sizeof a);
    }
    return a[0];
}

static float host_warp_max(const float* v) {
    float a[32], t[32];
    std::memcpy(a, v, sizeof a);
    for (int o = 16; o > 0; o >>= 1) {
        for (int l = 0; l < 32; ++l) t[l] = fmaxf(a[l], a[l ^ o]);
        std::memcpy(a, t, sizeof a);
    }
    return a[0];
}

// bk_block_sum / bk_block_max: warp butterflies, then the warps in order.
static float host_block_sum(const std::vector<float>& v) {
    float t = 0.0f;
    for (size_t w = 0; w < v.size() / 32; ++w) t += host_warp_sum(&v[32 * w]);
    return t;
}

static float host_block_max(const std::vector<float>& v) {
    float t = -BK_INF;
    for (size_t w = 0; w < v.size() / 32; ++w) t = fmaxf(t, host_warp_max(&v[32 * w]));
    return t;
}

// bk_lanes_sum over the LPR lanes of a row: butterfly with offsets 1, 2, 4, ...
static float host_lanes_sum(const float* part, int lpr) {
    float a[8], t[8];
    for (int l = 0; l < lpr; ++l) a[l] = part[l];
    for (int o = 1; o < lpr; o <<= 1) {
        for (int l = 0; l < lpr; ++l) t[l] = a[l] + a[l ^ o];
        for (int l = 0; l < lpr; ++l) a[l] = t[l];
    }
    return a[0];
}

// ---------------------------------------------------------------------------------------------
// Launch arguments

struct Launch {
    u32 gx, gy, threads, shared;
};

struct Args {
    std::vector<std::pair<u32, u64>> v;
    size_t i = 0;
    std::string kernel;
    std::pair<u32, u64> next(u32 kind) {
        if (i >= v.size()) fail(kernel + ": too few arguments");
        auto a = v[i++];
        if (a.first != kind) fail(kernel + ": argument " + std::to_string(i - 1) + " has the wrong kind");
        return a;
    }
    template <typename T>
    T* p() {
        u64 a = next(0).second;
        if (a == 0) return nullptr;
        check_range(a, 1, (kernel + " pointer argument " + std::to_string(i - 1)).c_str());
        return (T*)(uintptr_t)a;
    }
    u32 u() { return (u32)next(1).second; }
    u64 w() { return next(2).second; }
    float f() { return __uint_as_float((u32)next(3).second); }
    void done() {
        if (i != v.size()) fail(kernel + ": too many arguments");
    }
};

static void require(bool ok, const std::string& what) {
    if (!ok) fail("launch configuration: " + what);
}

// Every index of a grid-stride loop over n, as the device visits them.
template <typename F>
static void grid_stride(const Launch& L, u64 n, F f) {
    const u64 total = (u64)L.gx * L.threads;
    for (u64 blk = 0; blk < L.gx; ++blk)
        for (u64 t = 0; t < L.threads; ++t)
            for (u64 i = blk * L.threads + t; i < n; i += total) f(i);
}

// Every row of a warp-per-row grid-stride loop.
template <typename F>
static void warp_rows(const Launch& L, u64 rows, F f) {
    require(L.threads % 32 == 0, "threads must be a multiple of 32");
    const u64 wpb = L.threads / 32, warps = (u64)L.gx * wpb;
    for (u64 blk = 0; blk < L.gx; ++blk)
        for (u64 wi = 0; wi < wpb; ++wi)
            for (u64 row = blk * wpb + wi; row < rows; row += warps) f(row);
}

// ---------------------------------------------------------------------------------------------
// Kernel emulations

static void emu_cast_bf16(const Launch& L, Args& a) {
    const float* x = a.p<float>();
    u16* y = a.p<u16>();
    u64 n = a.w();
    a.done();
    grid_stride(L, n, [&](u64 i) { y[i] = bk_f32_bf16(x[i]); });
}

static void emu_add_f32(const Launch& L, Args& a) {
    float* acc = a.p<float>();
    const float* x = a.p<float>();
    u64 n = a.w();
    a.done();
    grid_stride(L, n, [&](u64 i) { acc[i] += x[i]; });
}

template <typename T>
static void emu_rms_fwd(const Launch& L, Args& a) {
    const float* x = a.p<float>();
    const float* w = a.p<float>();
    T* y = a.p<T>();
    float* rstd = a.p<float>();
    u64 rows = a.w();
    u32 d = a.u();
    float eps = a.f();
    a.done();
    warp_rows(L, rows, [&](u64 row) {
        const float* xr = x + row * d;
        float part[32];
        for (u32 l = 0; l < 32; ++l) part[l] = bk_rms_lane_sumsq(xr, d, l);
        const float r = bk_rms_rstd(host_warp_sum(part), d, eps);
        for (u32 l = 0; l < 32; ++l) bk_rms_lane_y(xr, w, y + row * d, d, l, r);
        rstd[row] = r;
    });
}

template <typename T>
static void emu_rms_dx(const Launch& L, Args& a) {
    const float* x = a.p<float>();
    const float* w = a.p<float>();
    const float* rstd = a.p<float>();
    const float* gy = a.p<float>();
    const float* gres = a.p<float>();
    float* dx = a.p<float>();
    T* dx_c = a.p<T>();
    u64 rows = a.w();
    u32 d = a.u();
    a.done();
    warp_rows(L, rows, [&](u64 row) {
        const u64 o = row * d;
        float part[32];
        for (u32 l = 0; l < 32; ++l) part[l] = bk_rms_lane_dot(x + o, w, gy + o, d, l);
        const float dot = host_warp_sum(part);
        for (u32 l = 0; l < 32; ++l)
            bk_rms_lane_dx(x + o, w, gy + o, gres ? gres + o : nullptr, dx + o, dx_c ? dx_c + o : nullptr, d, l,
                           rstd[row], dot);
    });
}

static void emu_rms_dw_part(const Launch& L, Args& a) {
    const float* x = a.p<float>();
    const float* rstd = a.p<float>();
    const float* gy = a.p<float>();
    float* part = a.p<float>();
    u64 rows = a.w();
    u32 d = a.u();
    u32 chunk_rows = a.u();
    a.done();
    const u64 chunks = (rows + chunk_rows - 1) / chunk_rows;
    grid_stride(L, chunks * d, [&](u64 i) {
        const u64 ch = i / d;
        const u64 r1 = (ch + 1) * chunk_rows < rows ? (ch + 1) * chunk_rows : rows;
        part[i] = bk_rms_dw_rows(x, rstd, gy, ch * chunk_rows, r1, d, (u32)(i % d));
    });
}

static void emu_colsum(const Launch& L, Args& a) {
    const float* part = a.p<float>();
    float* out = a.p<float>();
    u32 chunks = a.u();
    u32 d = a.u();
    a.done();
    grid_stride(L, d, [&](u64 col) {
        float s = 0.0f;
        for (u32 c = 0; c < chunks; ++c) s += part[(u64)c * d + col];
        out[col] = s;
    });
}

static void emu_embed_fwd(const Launch& L, Args& a) {
    const float* w = a.p<float>();
    const u32* tokens = a.p<u32>();
    float* out = a.p<float>();
    u64 n = a.w();
    u32 d = a.u();
    a.done();
    grid_stride(L, n * d, [&](u64 i) { out[i] = w[(u64)tokens[i / d] * d + i % d]; });
}

static void emu_embed_bwd(const Launch& L, Args& a) {
    const float* gy = a.p<float>();
    const u32* order = a.p<u32>();
    const u32* offsets = a.p<u32>();
    float* dw = a.p<float>();
    u32 vocab = a.u();
    u32 d = a.u();
    a.done();
    grid_stride(L, (u64)vocab * d, [&](u64 i) { dw[i] = bk_embed_grad_at(gy, order, offsets, d, i); });
}

static void emu_mean(const Launch& L, Args& a) {
    const float* x = a.p<float>();
    u64 n = a.w();
    float* out = a.p<float>();
    a.done();
    require(L.gx == 1 && L.threads % 32 == 0, "bk_mean runs one block of whole warps");
    std::vector<double> part(L.threads, 0.0);
    for (u32 t = 0; t < L.threads; ++t)
        for (u64 i = t; i < n; i += L.threads) part[t] += (double)x[i];
    double total = 0.0;
    for (u32 w = 0; w < L.threads / 32; ++w) total += host_warp_sum_f64(&part[32 * w]);
    out[0] = (float)(total / (double)n);
}

template <typename T>
static void emu_ce_fwd(const Launch& L, Args& a) {
    const T* z = a.p<T>();
    const u32* target = a.p<u32>();
    float* loss = a.p<float>();
    float* lse = a.p<float>();
    u64 rows = a.w();
    u32 v = a.u();
    a.done();
    require(L.threads % 32 == 0, "threads must be a multiple of 32");
    std::vector<float> part(L.threads);
    for (u64 blk = 0; blk < L.gx; ++blk)
        for (u64 row = blk; row < rows; row += L.gx) {
            const T* zr = z + row * v;
            for (u32 t = 0; t < L.threads; ++t) part[t] = bk_ce_thread_max(zr, v, t, L.threads);
            const float m = host_block_max(part);
            for (u32 t = 0; t < L.threads; ++t) part[t] = bk_ce_thread_sumexp(zr, v, m, t, L.threads);
            const float s = host_block_sum(part);
            const float l = m + logf(s);
            const u32 t = target[row];
            lse[row] = l;
            loss[row] = t < v ? l - bk_ld(zr, t) : BK_NAN;
        }
}

template <typename T>
static void emu_ce_bwd(const Launch& L, Args& a) {
    T* z = a.p<T>();
    const u32* target = a.p<u32>();
    const float* lse = a.p<float>();
    const float* g = a.p<float>();
    float inv_n = a.f();
    u64 rows = a.w();
    u32 v = a.u();
    a.done();
    const float scale = g[0] * inv_n;
    for (u64 blk = 0; blk < L.gx; ++blk)
        for (u64 row = blk; row < rows; row += L.gx) {
            T* zr = z + row * v;
            for (u32 t = 0; t < L.threads; ++t)
                for (u32 j = t; j < v; j += L.threads) bk_st(zr, j, bk_ce_grad(bk_ld(zr, j), lse[row], j == target[row], scale));
        }
}

template <typename T>
static void emu_rope_fwd(const Launch& L, Args& a) {
    const T* qkv = a.p<T>();
    const float* cos = a.p<float>();
    const float* sin = a.p<float>();
    T* q = a.p<T>();
    T* k = a.p<T>();
    T* v = a.p<T>();
    u64 n = a.w();
    u32 t_len = a.u(), heads = a.u(), hd = a.u();
    a.done();
    grid_stride(L, n, [&](u64 i) { bk_rope_fwd_at<T>(qkv, cos, sin, q, k, v, t_len, heads, hd, i); });
}

template <typename T>
static void emu_rope_bwd(const Launch& L, Args& a) {
    const float* dq = a.p<float>();
    const float* dk = a.p<float>();
    const float* dv = a.p<float>();
    const float* cos = a.p<float>();
    const float* sin = a.p<float>();
    T* dqkv = a.p<T>();
    u64 n = a.w();
    u32 t_len = a.u(), heads = a.u(), hd = a.u();
    a.done();
    grid_stride(L, n, [&](u64 i) { bk_rope_bwd_at<T>(dq, dk, dv, cos, sin, dqkv, t_len, heads, hd, i); });
}

template <typename T>
static void emu_swiglu_fwd(const Launch& L, Args& a) {
    const T* gu = a.p<T>();
    T* act = a.p<T>();
    u64 n = a.w();
    u32 f = a.u();
    a.done();
    grid_stride(L, n, [&](u64 i) { bk_swiglu_fwd_at<T>(gu, act, f, i); });
}

template <typename T>
static void emu_swiglu_bwd(const Launch& L, Args& a) {
    const T* gu = a.p<T>();
    const T* dact = a.p<T>();
    T* dgu = a.p<T>();
    u64 n = a.w();
    u32 f = a.u();
    a.done();
    grid_stride(L, n, [&](u64 i) { bk_swiglu_bwd_at<T>(gu, dact, dgu, f, i); });
}

template <typename T>
static void emu_gelu_fwd(const Launch& L, Args& a) {
    const T* u = a.p<T>();
    T* act = a.p<T>();
    u64 n = a.w();
    a.done();
    grid_stride(L, n, [&](u64 i) { bk_gelu_fwd_at<T>(u, act, i); });
}

template <typename T>
static void emu_gelu_bwd(const Launch& L, Args& a) {
    const T* u = a.p<T>();
    const T* dact = a.p<T>();
    T* du = a.p<T>();
    u64 n = a.w();
    a.done();
    grid_stride(L, n, [&](u64 i) { bk_gelu_bwd_at<T>(u, dact, du, i); });
}

template <typename T>
static void emu_attn_dsum(const Launch& L, Args& a) {
    const T* o = a.p<T>();
    const T* dout = a.p<T>();
    float* dsum = a.p<float>();
    u32 heads = a.u(), t_len = a.u(), hd = a.u();
    u64 rows = a.w();
    a.done();
    warp_rows(L, rows, [&](u64 row) {
        const u64 t = row % t_len, bh = row / t_len, b = bh / heads, h = bh % heads;
        const u64 base = (b * t_len + t) * ((u64)heads * hd) + h * hd;
        float part[32];
        for (u32 l = 0; l < 32; ++l) part[l] = bk_fa_dsum_lane(o, dout, base, hd, l);
        dsum[row] = host_warp_sum(part);
    });
}

// The attention kernels: one block at a time, its threads' registers as arrays, each barrier a
// boundary between loops over the threads.
template <int LPR, int SEG>
struct AttnBlock {
    enum { ROWS = 128 / LPR, THREADS = 128, RS = BkTile<LPR, SEG>::RS, SS = BkTile<LPR, SEG>::SS };
    std::vector<float> sm;
    explicit AttnBlock(u32 shared) : sm(shared / 4, BK_NAN) {}
    static void check(const Launch& L, u32 heads_x_batch_ok, u32 t_len, u32 hd, u32 shared_floats) {
        require(L.threads == THREADS, "attention kernels run 128 threads");
        require(L.gx == (t_len + ROWS - 1) / ROWS, "attention grid x must be the number of tiles");
        require(heads_x_batch_ok, "attention grid y must be batch x heads");
        require(hd % LPR == 0 && hd / LPR <= SEG, "head size does not fit this kernel variant");
        require(L.shared >= shared_floats * 4, "too little shared memory");
    }
};

template <int LPR, int SEG, typename T>
static void emu_attn_fwd(const Launch& L, Args& a) {
    typedef AttnBlock<LPR, SEG> A;
    const int ROWS = A::ROWS, RS = A::RS, SS = A::SS;
    const T* q = a.p<T>();
    const T* k = a.p<T>();
    const T* v = a.p<T>();
    T* o = a.p<T>();
    float* lse2 = a.p<float>();
    u32 heads = a.u(), t_len = a.u(), hd = a.u();
    float scale2 = a.f();
    a.done();
    A::check(L, L.gy % heads == 0, t_len, hd, 2 * ROWS * RS);
    const u32 seg = hd / LPR, ntiles = L.gx;
    for (u32 bh = 0; bh < L.gy; ++bh)
        for (u32 bx = 0; bx < L.gx; ++bx) {
            A blk(L.shared);
            float* ks = blk.sm.data();
            float* vs = ks + ROWS * RS;
            const u32 qt = ntiles - 1 - bx, b = bh / heads, h = bh % heads;
            const u32 qmax = (qt * ROWS + ROWS - 1) < (t_len - 1) ? (qt * ROWS + ROWS - 1) : (t_len - 1);
            const u64 head = (u64)bh * t_len * hd;
            std::vector<float> qr(A::THREADS * SEG), acc(A::THREADS * SEG, 0.0f), m(A::THREADS, -BK_INF),
                l(A::THREADS, 0.0f);
            for (u32 tid = 0; tid < A::THREADS; ++tid) {
                const u32 r = tid / LPR, lane = tid % LPR, i = qt * ROWS + r, ic = i < t_len ? i : t_len - 1;
                bk_fa_row<SEG>(&qr[tid * SEG], q + head + (u64)ic * hd + lane * seg, seg);
            }
            for (u32 kt = 0; kt <= qt; ++kt) {
                for (u32 tid = 0; tid < A::THREADS; ++tid)
                    for (u32 e = tid; e < ROWS * hd; e += A::THREADS) {
                        bk_fa_load_at<LPR, SEG>(ks, k + head, hd, kt * ROWS, t_len, hd, e);
                        bk_fa_load_at<LPR, SEG>(vs, v + head, hd, kt * ROWS, t_len, hd, e);
                    }
                for (u32 j0 = 0; j0 < (u32)ROWS && kt * ROWS + j0 <= qmax; j0 += BK_KC) {
                    for (u32 r = 0; r < (u32)ROWS; ++r) {
                        float s[BK_KC];
                        for (int jj = 0; jj < BK_KC; ++jj) {
                            float part[8];
                            for (u32 lane = 0; lane < (u32)LPR; ++lane)
                                part[lane] = bk_dot_seg<SEG>(&qr[(r * LPR + lane) * SEG], ks + (j0 + jj) * RS + lane * SS, seg);
                            s[jj] = host_lanes_sum(part, LPR);
                        }
                        const u32 i = qt * ROWS + r, ic = i < t_len ? i : t_len - 1;
                        for (u32 lane = 0; lane < (u32)LPR; ++lane) {
                            const u32 tid = r * LPR + lane;
                            float sl[BK_KC];
                            std::memcpy(sl, s, sizeof sl);
                            bk_fa_fwd_step<SEG>(&acc[tid * SEG], &m[tid], &l[tid], sl, vs + j0 * RS + lane * SS, RS, seg,
                                                kt * ROWS + j0, ic, t_len, scale2);
                        }
                    }
                }
            }
            for (u32 tid = 0; tid < A::THREADS; ++tid) {
                const u32 r = tid / LPR, lane = tid % LPR, i = qt * ROWS + r;
                if (i >= t_len) continue;
                const u64 orow = ((u64)b * t_len + i) * ((u64)heads * hd) + (u64)h * hd + lane * seg;
                const float inv = 1.0f / l[tid];
                for (int c = 0; c < SEG; ++c)
                    if ((u32)c < seg) bk_st(o, orow + c, acc[tid * SEG + c] * inv);
                if (lane == 0) lse2[(u64)bh * t_len + i] = m[tid] + log2f(l[tid]);
            }
        }
}

template <int LPR, int SEG, typename T>
static void emu_attn_dkdv(const Launch& L, Args& a) {
    typedef AttnBlock<LPR, SEG> A;
    const int ROWS = A::ROWS, RS = A::RS, SS = A::SS;
    const T* q = a.p<T>();
    const T* k = a.p<T>();
    const T* v = a.p<T>();
    const T* dout = a.p<T>();
    const float* lse2 = a.p<float>();
    const float* dsum = a.p<float>();
    float* dk = a.p<float>();
    float* dv = a.p<float>();
    u32 heads = a.u(), t_len = a.u(), hd = a.u();
    float scale2 = a.f(), scale = a.f();
    a.done();
    A::check(L, L.gy % heads == 0, t_len, hd, 2 * ROWS * RS + 2 * ROWS);
    const u32 seg = hd / LPR, ntiles = L.gx;
    const u64 d = (u64)heads * hd;
    for (u32 bh = 0; bh < L.gy; ++bh)
        for (u32 kt = 0; kt < L.gx; ++kt) {
            A blk(L.shared);
            float* qs = blk.sm.data();
            float* dos = qs + ROWS * RS;
            float* ls = qs + 2 * ROWS * RS;
            float* dss = ls + ROWS;
            const u32 b = bh / heads, h = bh % heads;
            const u64 head = (u64)bh * t_len * hd, obase = (u64)b * t_len * d + (u64)h * hd;
            std::vector<float> kr(A::THREADS * SEG), vr(A::THREADS * SEG), dkr(A::THREADS * SEG, 0.0f),
                dvr(A::THREADS * SEG, 0.0f);
            for (u32 tid = 0; tid < A::THREADS; ++tid) {
                const u32 r = tid / LPR, lane = tid % LPR, j = kt * ROWS + r, jc = j < t_len ? j : t_len - 1;
                bk_fa_row<SEG>(&kr[tid * SEG], k + head + (u64)jc * hd + lane * seg, seg);
                bk_fa_row<SEG>(&vr[tid * SEG], v + head + (u64)jc * hd + lane * seg, seg);
            }
            for (u32 qt = kt; qt < ntiles; ++qt) {
                for (u32 tid = 0; tid < A::THREADS; ++tid) {
                    for (u32 e = tid; e < ROWS * hd; e += A::THREADS) {
                        bk_fa_load_at<LPR, SEG>(qs, q + head, hd, qt * ROWS, t_len, hd, e);
                        bk_fa_load_at<LPR, SEG>(dos, dout + obase, d, qt * ROWS, t_len, hd, e);
                    }
                    for (u32 e = tid; e < (u32)ROWS; e += A::THREADS) {
                        const u32 row = qt * ROWS + e;
                        ls[e] = row < t_len ? lse2[(u64)bh * t_len + row] : 0.0f;
                        dss[e] = row < t_len ? dsum[(u64)bh * t_len + row] : 0.0f;
                    }
                }
                const u32 iend = (qt * ROWS + ROWS < t_len ? qt * ROWS + ROWS : t_len) - qt * ROWS;
                for (u32 ir = 0; ir < iend; ++ir)
                    for (u32 r = 0; r < (u32)ROWS; ++r) {
                        const u32 j = kt * ROWS + r, jc = j < t_len ? j : t_len - 1;
                        float part[8], part2[8];
                        for (u32 lane = 0; lane < (u32)LPR; ++lane) {
                            const u32 tid = r * LPR + lane;
                            part[lane] = bk_dot_seg<SEG>(qs + ir * RS + lane * SS, &kr[tid * SEG], seg);
                            part2[lane] = bk_dot_seg<SEG>(dos + ir * RS + lane * SS, &vr[tid * SEG], seg);
                        }
                        const float dot = host_lanes_sum(part, LPR), dp = host_lanes_sum(part2, LPR);
                        for (u32 lane = 0; lane < (u32)LPR; ++lane) {
                            const u32 tid = r * LPR + lane;
                            bk_fa_dkdv_step<SEG>(&dkr[tid * SEG], &dvr[tid * SEG], dot, dp, qs + ir * RS + lane * SS,
                                                 dos + ir * RS + lane * SS, ls[ir], dss[ir], qt * ROWS + ir >= jc, scale2,
                                                 seg);
                        }
                    }
            }
            for (u32 tid = 0; tid < A::THREADS; ++tid) {
                const u32 r = tid / LPR, lane = tid % LPR, j = kt * ROWS + r;
                if (j >= t_len) continue;
                const u64 at = head + (u64)j * hd + lane * seg;
                for (int c = 0; c < SEG; ++c)
                    if ((u32)c < seg) {
                        dk[at + c] = dkr[tid * SEG + c] * scale;
                        dv[at + c] = dvr[tid * SEG + c];
                    }
            }
        }
}

template <int LPR, int SEG, typename T>
static void emu_attn_dq(const Launch& L, Args& a) {
    typedef AttnBlock<LPR, SEG> A;
    const int ROWS = A::ROWS, RS = A::RS, SS = A::SS;
    const T* q = a.p<T>();
    const T* k = a.p<T>();
    const T* v = a.p<T>();
    const T* dout = a.p<T>();
    const float* lse2 = a.p<float>();
    const float* dsum = a.p<float>();
    float* dq = a.p<float>();
    u32 heads = a.u(), t_len = a.u(), hd = a.u();
    float scale2 = a.f(), scale = a.f();
    a.done();
    A::check(L, L.gy % heads == 0, t_len, hd, 2 * ROWS * RS);
    const u32 seg = hd / LPR, ntiles = L.gx;
    const u64 d = (u64)heads * hd;
    for (u32 bh = 0; bh < L.gy; ++bh)
        for (u32 bx = 0; bx < L.gx; ++bx) {
            A blk(L.shared);
            float* ks = blk.sm.data();
            float* vs = ks + ROWS * RS;
            const u32 qt = ntiles - 1 - bx, b = bh / heads, h = bh % heads;
            const u32 qmax = (qt * ROWS + ROWS - 1) < (t_len - 1) ? (qt * ROWS + ROWS - 1) : (t_len - 1);
            const u64 head = (u64)bh * t_len * hd;
            std::vector<float> qr(A::THREADS * SEG), dor(A::THREADS * SEG), dqr(A::THREADS * SEG, 0.0f),
                lse_i(A::THREADS), d_i(A::THREADS);
            for (u32 tid = 0; tid < A::THREADS; ++tid) {
                const u32 r = tid / LPR, lane = tid % LPR, i = qt * ROWS + r, ic = i < t_len ? i : t_len - 1;
                bk_fa_row<SEG>(&qr[tid * SEG], q + head + (u64)ic * hd + lane * seg, seg);
                bk_fa_row<SEG>(&dor[tid * SEG], dout + ((u64)b * t_len + ic) * d + (u64)h * hd + lane * seg, seg);
                lse_i[tid] = lse2[(u64)bh * t_len + ic];
                d_i[tid] = dsum[(u64)bh * t_len + ic];
            }
            for (u32 kt = 0; kt <= qt; ++kt) {
                for (u32 tid = 0; tid < A::THREADS; ++tid)
                    for (u32 e = tid; e < ROWS * hd; e += A::THREADS) {
                        bk_fa_load_at<LPR, SEG>(ks, k + head, hd, kt * ROWS, t_len, hd, e);
                        bk_fa_load_at<LPR, SEG>(vs, v + head, hd, kt * ROWS, t_len, hd, e);
                    }
                const u32 jend = (qmax + 1 < kt * ROWS + ROWS ? qmax + 1 : kt * ROWS + ROWS) - kt * ROWS;
                for (u32 jr = 0; jr < jend; ++jr)
                    for (u32 r = 0; r < (u32)ROWS; ++r) {
                        const u32 i = qt * ROWS + r, ic = i < t_len ? i : t_len - 1;
                        float part[8], part2[8];
                        for (u32 lane = 0; lane < (u32)LPR; ++lane) {
                            const u32 tid = r * LPR + lane;
                            part[lane] = bk_dot_seg<SEG>(&qr[tid * SEG], ks + jr * RS + lane * SS, seg);
                            part2[lane] = bk_dot_seg<SEG>(&dor[tid * SEG], vs + jr * RS + lane * SS, seg);
                        }
                        const float dot = host_lanes_sum(part, LPR), dp = host_lanes_sum(part2, LPR);
                        for (u32 lane = 0; lane < (u32)LPR; ++lane) {
                            const u32 tid = r * LPR + lane;
                            bk_fa_dq_step<SEG>(&dqr[tid * SEG], dot, dp, ks + jr * RS + lane * SS, lse_i[tid], d_i[tid],
                                               kt * ROWS + jr <= ic, scale2, seg);
                        }
                    }
            }
            for (u32 tid = 0; tid < A::THREADS; ++tid) {
                const u32 r = tid / LPR, lane = tid % LPR, i = qt * ROWS + r;
                if (i >= t_len) continue;
                const u64 at = head + (u64)i * hd + lane * seg;
                for (int c = 0; c < SEG; ++c)
                    if ((u32)c < seg) dq[at + c] = dqr[tid * SEG + c] * scale;
            }
        }
}

// ---------------------------------------------------------------------------------------------
// Dispatch

typedef void (*Emu)(const Launch&, Args&);

static std::map<std::string, Emu> kernels() {
    std::map<std::string, Emu> k;
    k["bk_cast_bf16"] = emu_cast_bf16;
    k["bk_add_f32"] = emu_add_f32;
    k["bk_rms_dw_part"] = emu_rms_dw_part;
    k["bk_colsum"] = emu_colsum;
    k["bk_embed_fwd"] = emu_embed_fwd;
    k["bk_embed_bwd"] = emu_embed_bwd;
    k["bk_mean"] = emu_mean;
#define TYPED(TN, T)                            \
    k["bk_rms_fwd_" #TN] = emu_rms_fwd<T>;       \
    k["bk_rms_dx_" #TN] = emu_rms_dx<T>;         \
    k["bk_rope_fwd_" #TN] = emu_rope_fwd<T>;     \
    k["bk_rope_bwd_" #TN] = emu_rope_bwd<T>;     \
    k["bk_swiglu_fwd_" #TN] = emu_swiglu_fwd<T>; \
    k["bk_swiglu_bwd_" #TN] = emu_swiglu_bwd<T>; \
    k["bk_gelu_fwd_" #TN] = emu_gelu_fwd<T>;     \
    k["bk_gelu_bwd_" #TN] = emu_gelu_bwd<T>;     \
    k["bk_ce_fwd_" #TN] = emu_ce_fwd<T>;         \
    k["bk_ce_bwd_" #TN] = emu_ce_bwd<T>;         \
    k["bk_attn_dsum_" #TN] = emu_attn_dsum<T>;
    TYPED(f32, float)
    TYPED(bf16, u16)
#define ATTN(NAME, LPR, SEG, TN, T)                                 \
    k["bk_attn_fwd_" #NAME "_" #TN] = emu_attn_fwd<LPR, SEG, T>;   \
    k["bk_attn_dkdv_" #NAME "_" #TN] = emu_attn_dkdv<LPR, SEG, T>; \
    k["bk_attn_dq_" #NAME "_" #TN] = emu_attn_dq<LPR, SEG, T>;
#define ATTN_ALL(TN, T)          \
    ATTN(l2s4, 2, 4, TN, T)     \
    ATTN(l2s8, 2, 8, TN, T)     \
    ATTN(l2s16, 2, 16, TN, T)   \
    ATTN(l2s32, 2, 32, TN, T)   \
    ATTN(l4s32, 4, 32, TN, T)   \
    ATTN(l8s32, 8, 32, TN, T)
    ATTN_ALL(f32, float)
    ATTN_ALL(bf16, u16)
    return k;
}

static float load_typed(const void* p, u32 type, u64 i) {
    return type == 0 ? ((const float*)p)[i] : bk_bf16_f32(((const u16*)p)[i]);
}

static void store_typed(void* p, u32 type, u64 i, float v) {
    if (type == 0)
        ((float*)p)[i] = v;
    else
        ((u16*)p)[i] = bk_f32_bf16(v);
}

// cuBLAS gemm semantics (column-major, alpha 1): C = op(A) op(B) + beta C, accumulated in f64.
static void gemm(u32 ta, u32 tb, u32 m, u32 n, u32 k, u64 a, u32 at, u32 lda, u64 b, u32 bt, u32 ldb, float beta, u64 c,
                 u32 ct, u32 ldc) {
    const u64 ea = at == 0 ? 4 : 2, eb = bt == 0 ? 4 : 2, ec = ct == 0 ? 4 : 2;
    if (m == 0 || n == 0) return;
    if (k > 0) {
        check_range(a, ea * (ta ? (u64)(m - 1) * lda + k : (u64)(k - 1) * lda + m), "gemm A");
        check_range(b, eb * (tb ? (u64)(k - 1) * ldb + n : (u64)(n - 1) * ldb + k), "gemm B");
    }
    check_range(c, ec * ((u64)(n - 1) * ldc + m), "gemm C");
    if ((!ta && lda < m) || (ta && lda < k) || (!tb && ldb < k) || (tb && ldb < n) || ldc < m) fail("gemm: leading dimension too small");
    const void* A = (const void*)(uintptr_t)a;
    const void* B = (const void*)(uintptr_t)b;
    void* C = (void*)(uintptr_t)c;
    for (u32 j = 0; j < n; ++j)
        for (u32 i = 0; i < m; ++i) {
            double s = 0.0;
            for (u32 l = 0; l < k; ++l) {
                const float x = load_typed(A, at, ta ? (u64)i * lda + l : (u64)l * lda + i);
                const float y = load_typed(B, bt, tb ? (u64)l * ldb + j : (u64)j * ldb + l);
                s += (double)x * (double)y;
            }
            const u64 ci = (u64)j * ldc + i;
            if (beta != 0.0f) s += (double)beta * (double)load_typed(C, ct, ci);
            store_typed(C, ct, ci, (float)s);
        }
}

// ---------------------------------------------------------------------------------------------
// Server

static void read_exact(void* p, size_t n) {
    if (n && std::fread(p, 1, n, stdin) != n) std::exit(0);
}
template <typename T>
static T rd() {
    T v;
    read_exact(&v, sizeof v);
    return v;
}
static void write_exact(const void* p, size_t n) {
    if (n) std::fwrite(p, 1, n, stdout);
}
template <typename T>
static void wr(T v) {
    write_exact(&v, sizeof v);
}

int main() {
    const std::map<std::string, Emu> table = kernels();
    for (;;) {
        u32 op;
        if (std::fread(&op, 4, 1, stdin) != 1) return 0;
        try {
            switch (op) {
                case 1: {
                    u64 bytes = rd<u64>();
                    g_owned.emplace_back(new unsigned char[bytes ? bytes : 1]);
                    std::memset(g_owned.back().get(), 0xff, bytes ? bytes : 1);  // NaN in f32 and bf16
                    u64 p = (u64)(uintptr_t)g_owned.back().get();
                    g_allocs[p] = bytes ? bytes : 1;
                    wr<u32>(0);
                    wr<u64>(p);
                    break;
                }
                case 2: {
                    u64 p = rd<u64>(), bytes = rd<u64>();
                    std::vector<unsigned char> buf(bytes);
                    read_exact(buf.data(), bytes);
                    check_range(p, bytes, "write");
                    std::memcpy((void*)(uintptr_t)p, buf.data(), bytes);
                    wr<u32>(0);
                    break;
                }
                case 3: {
                    u64 p = rd<u64>(), bytes = rd<u64>();
                    check_range(p, bytes, "read");
                    wr<u32>(0);
                    write_exact((const void*)(uintptr_t)p, bytes);
                    break;
                }
                case 4: {
                    u32 len = rd<u32>();
                    std::string name(len, '\0');
                    read_exact(&name[0], len);
                    Launch L;
                    L.gx = rd<u32>();
                    L.gy = rd<u32>();
                    L.threads = rd<u32>();
                    L.shared = rd<u32>();
                    u32 nargs = rd<u32>();
                    Args args;
                    args.kernel = name;
                    for (u32 i = 0; i < nargs; ++i) {
                        u32 kind = rd<u32>();
                        u64 val = rd<u64>();
                        args.v.push_back({kind, val});
                    }
                    auto it = table.find(name);
                    if (it == table.end()) fail("no kernel named " + name);
                    require(L.gx >= 1 && L.gy >= 1 && L.threads >= 1 && L.threads <= 1024, name + ": empty or oversized launch");
                    it->second(L, args);
                    wr<u32>(0);
                    break;
                }
                case 5: {
                    u32 ta = rd<u32>(), tb = rd<u32>(), m = rd<u32>(), n = rd<u32>(), k = rd<u32>();
                    u64 a = rd<u64>();
                    u32 at = rd<u32>(), lda = rd<u32>();
                    u64 b = rd<u64>();
                    u32 bt = rd<u32>(), ldb = rd<u32>();
                    float beta = rd<float>();
                    u64 c = rd<u64>();
                    u32 ct = rd<u32>(), ldc = rd<u32>();
                    gemm(ta, tb, m, n, k, a, at, lda, b, bt, ldb, beta, c, ct, ldc);
                    wr<u32>(0);
                    break;
                }
                case 6: {
                    u64 dst = rd<u64>(), src = rd<u64>(), bytes = rd<u64>();
                    check_range(dst, bytes, "copy destination");
                    check_range(src, bytes, "copy source");
                    std::memmove((void*)(uintptr_t)dst, (const void*)(uintptr_t)src, bytes);
                    wr<u32>(0);
                    break;
                }
                case 7: {
                    u64 p = rd<u64>();
                    auto it = g_allocs.find(p);
                    if (it == g_allocs.end()) fail("free of an address that is not an allocation");
                    std::memset((void*)(uintptr_t)p, 0xff, it->second);
                    g_allocs.erase(it);  // the memory stays owned, so the address is never reused
                    wr<u32>(0);
                    break;
                }
                default:
                    fail("unknown opcode " + std::to_string(op));
            }
        } catch (const std::exception& e) {
            std::string m = e.what();
            wr<u32>(1);
            wr<u32>((u32)m.size());
            write_exact(m.data(), m.size());
        }
        std::fflush(stdout);
    }
}
