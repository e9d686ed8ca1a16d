// Fake quantisation on CUDA: the same function as the CPU kernel (quant/kernel.rs and
// quant/format.rs), bit for bit, in three kernels:
//   fq_amax_tensor / fq_amax_groups  largest finite |x| of each scaling group (as f32 bits)
//   fq_scales                        each group's scale and inverse, in f64, by the scale rule
//                                    (absmax, power of two, unit, OCP MX E8M0, E4M3 block scales
//                                    under the per-tensor f32 scale)
//   fq_apply                         divide by the scale, round to the format, multiply back
// Compiled at run time with NVRTC (no nvcc needed to build sweep). The element functions are
// plain C++ as well: tests/quant_cuda_math.rs compiles this file with the host C++ compiler and
// checks it against the CPU kernel without a GPU; tests/cuda.rs checks the launched kernels on one.

#ifndef FQ_HOST_EMULATION
typedef unsigned int u32;
typedef unsigned long long u64;
#define FQ_DEVICE __device__ __forceinline__
#endif

// Scaling modes.
#define FQ_TENSOR 0u
#define FQ_CHANNEL 1u
#define FQ_BLOCK 2u
// Scale rules.
#define FQ_ABSMAX 0u
#define FQ_POW2 1u
#define FQ_UNIT 2u
#define FQ_UE8M0 3u
#define FQ_UE4M3 4u

FQ_DEVICE u32 fq_bits(float x) { return __float_as_uint(x); }
FQ_DEVICE float fq_float(u32 b) { return __uint_as_float(b); }

// 2^e as f32 for e in [-149, 127].
FQ_DEVICE float fq_pow2(int e) {
    return e >= -126 ? fq_float((u32)(e + 127) << 23) : fq_float(1u << (e + 149));
}

// Stochastic rounding of a magnitude a >= 0 (not NaN) to multiples of 2^max(exponent(a) - m, q_min):
// up when the random bits, masked to the bits below the quantum, are below a's bits there.
FQ_DEVICE float fq_stochastic_magnitude(float a, int m, int q_min, u32 random) {
    u32 bits = fq_bits(a);
    u32 exp_field = bits >> 23;
    u32 significand = exp_field == 0 ? bits : ((bits & 0x7fffffu) | 0x800000u);
    int e = (int)(exp_field > 1u ? exp_field : 1u) - 127;
    int q = e - m > q_min ? e - m : q_min;
    int shift_i = q - (e - 23);
    u32 shift = shift_i > 0 ? (u32)shift_i : 0u;
    u32 dropped = shift > 31u ? shift - 31u : 0u;
    significand = dropped >= 32u ? 0u : (significand >> dropped);
    shift = shift < 31u ? shift : 31u;
    u32 mask = (1u << shift) - 1u;
    u32 k = (significand >> shift) + ((random & mask) < (significand & mask) ? 1u : 0u);
    return (float)k * fq_pow2(q);
}

// Floating-point ExMy rounding (format.rs FloatFormat::round): NaN stays NaN, beyond max (and
// infinities) saturates to max, subnormals, ties to even; `stochastic` uses `random`.
FQ_DEVICE float fq_round_float(float x, int man_bits, int emin, int bias, float max, int stochastic, u32 random) {
    u32 bits = fq_bits(x);
    u32 sign = bits & 0x80000000u;
    u32 abs = bits & 0x7fffffffu;
    if (abs > 0x7f800000u) return x;
    if (stochastic) {
        float a = fq_float(abs);
        a = a < max ? a : max;
        return fq_float(sign | fq_bits(fq_stochastic_magnitude(a, man_bits, emin - man_bits, random)));
    }
    if (abs == 0x7f800000u) return fq_float(sign | fq_bits(max));
    int exp_field = (int)(abs >> 23);
    u32 significand;
    int exponent;
    if (exp_field == 0) {
        significand = abs;
        exponent = -126;
    } else {
        significand = (abs & 0x7fffffu) | 0x800000u;
        exponent = exp_field - 127;
    }
    int quantum_exp = (exponent > emin ? exponent : emin) - man_bits;
    u32 shift = (u32)(quantum_exp - (exponent - 23));
    if (shift > 25u) return fq_float(sign);
    u32 k = significand >> shift;
    u32 rem = significand & ((1u << shift) - 1u);
    u32 half = 1u << (shift - 1u);
    u32 parity = (man_bits == 0 && exponent >= emin) ? k + (u32)(exponent + bias - 1) : k;
    k += (rem > half || (rem == half && (parity & 1u) == 1u)) ? 1u : 0u;
    float magnitude = (float)k * fq_pow2(quantum_exp);
    magnitude = magnitude < max ? magnitude : max;
    return fq_float(sign | fq_bits(magnitude));
}

// Integer rounding (format.rs IntFormat::round): levels in [-max, max], or [-(max + 1), max] for
// the two's-complement elements of MXINT (`twos` = 1).
FQ_DEVICE float fq_round_int(float x, float max, int twos, int stochastic, u32 random) {
    if (x != x) return x;
    float a = fabsf(x);
    float limit = (twos && (fq_bits(x) & 0x80000000u)) ? max + 1.0f : max;
    a = a < limit ? a : limit;
    float magnitude = stochastic ? fq_stochastic_magnitude(a, 31, 0, random) : rintf(a);
    if (twos && magnitude == 0.0f) return 0.0f;  // two's complement has one zero
    return copysignf(magnitude, x);
}

// The format's rounding: integer formats have man_bits < 0 (and `bias` 1 for two's complement).
FQ_DEVICE float fq_round(float x, int man_bits, int emin, int bias, float max, int stochastic, u32 random) {
    return man_bits < 0 ? fq_round_int(x, max, bias, stochastic, random) : fq_round_float(x, man_bits, emin, bias, max, stochastic, random);
}

// Random bits of element `index` of a call with key `key` (kernel.rs element_random).
FQ_DEVICE u32 fq_hash32(u32 x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    return x ^ (x >> 16);
}
FQ_DEVICE u32 fq_random(u64 key, u64 index) {
    u32 high = (u32)(index >> 32) * 0x9e3779b9u;
    return fq_hash32(fq_hash32((u32)index ^ (u32)key) ^ (u32)(key >> 32) ^ high);
}

FQ_DEVICE int fq_is_normal(float v) {
    u32 e = (fq_bits(v) >> 23) & 0xffu;
    return e != 0u && e != 0xffu;
}

// One element: x / scale rounded, times scale (kernel.rs apply_inline; f64 when the scale or its
// inverse is not a normal f32; a true f32 division for E4M3 block scales).
FQ_DEVICE float fq_element(float x, double scale, double inv, int man_bits, int emin, int bias, float max, int stochastic, u32 random, int divide) {
    if (divide) {
        float s = (float)scale;
        return fq_round(x / s, man_bits, emin, bias, max, stochastic, random) * s;
    }
    if (!(fq_is_normal((float)scale) && fq_is_normal((float)inv))) {
        float y = (float)((double)x * inv);
        return (float)((double)fq_round(y, man_bits, emin, bias, max, stochastic, random) * scale);
    }
    return fq_round(x * (float)inv, man_bits, emin, bias, max, stochastic, random) * (float)scale;
}

// Scaling group of element i: one per tensor, per row, or per block of `block` elements of a row.
FQ_DEVICE u64 fq_group(u64 i, u32 mode, u32 row_len, u32 block) {
    if (mode == FQ_TENSOR) return 0;
    u64 row = i / row_len;
    if (mode == FQ_CHANNEL) return row;
    u64 per_row = (row_len + block - 1) / block;
    return row * per_row + (i % row_len) / block;
}

// OCP MX E8M0 exponent: floor(log2(amax)) - emax clamped to [-127, 127]; -127 for zero
// (kernel.rs e8m0_exponent).
FQ_DEVICE int fq_e8m0_exponent(float amax, int emax) {
    u32 bits = fq_bits(amax) & 0x7fffffffu;
    if (bits == 0u) return -127;
    int exp_field = (int)(bits >> 23);
    int floor_log2;
    if (exp_field == 0) {
        int lz = 0;
        for (u32 b = bits; (b & 0x80000000u) == 0u; b <<= 1) ++lz;
        floor_log2 = -127 - (lz - 9);
    } else {
        floor_log2 = exp_field - 127;
    }
    int e = floor_log2 - emax;
    return e < -127 ? -127 : (e > 127 ? 127 : e);
}

// Per-tensor f32 scale of E4M3 block scales (kernel.rs tensor_scale_e4m3).
FQ_DEVICE float fq_tensor_scale_e4m3(float amax, float max) {
    float s = amax / (448.0f * max);
    return (s > 0.0f && s <= 3.402823466e38f) ? s : 1.0f;
}

// E4M3 block scale times the per-tensor scale (kernel.rs block_scale_e4m3).
FQ_DEVICE float fq_block_scale_e4m3(float amax, float max, float global) {
    float raw = amax / max / global;
    float clamped = raw > 448.0f ? 448.0f : (raw >= 0.001953125f ? raw : 0.001953125f);
    return fq_round_float(clamped, 3, -6, 7, 448.0f, 0, 0u) * global;
}

// A group's scale from its largest finite |x| (kernel.rs GroupScale::new); `emax` and `shift` are
// the element format's (E8M0 scales: X = 2^(e8m0 exponent), divided by 2^shift for integer
// levels), `global` the per-tensor scale (E4M3 scales).
FQ_DEVICE double fq_scale_of(float amax_f, double max, u32 rule, int emax, int shift, float global) {
    if (rule == FQ_UE8M0) return exp2((double)(fq_e8m0_exponent(amax_f, emax) - shift));
    if (rule == FQ_UE4M3) return (double)fq_block_scale_e4m3(amax_f, (float)max, global);
    double amax = (double)amax_f;
    if (amax == 0.0 || rule == FQ_UNIT) return 1.0;
    if (rule == FQ_ABSMAX) return amax / max;
    int e = (int)ceil(log2(amax / max));
    while (amax / exp2((double)e) > max) e += 1;
    while (amax / exp2((double)(e - 1)) <= max) e -= 1;
    return exp2((double)e);
}

#ifndef FQ_HOST_EMULATION

// Per-tensor amax: a local maximum per thread over a grid-stride loop, then one atomic per thread
// (float bits of non-negative values order like the values).
extern "C" __global__ void fq_amax_tensor(const float* x, u64 n, u32* amax) {
    u32 m = 0;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        u32 a = fq_bits(x[i]) & 0x7fffffffu;
        if (a < 0x7f800000u && a > m) m = a;
    }
    if (m > 0) atomicMax(amax, m);
}

// Per-row or per-block amax: one thread per group, over the group's contiguous elements.
extern "C" __global__ void fq_amax_groups(const float* x, u64 rows, u32 row_len, u32 block, u32* amax) {
    u64 per_row = (row_len + block - 1) / block;
    u64 g = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= rows * per_row) return;
    u64 row = g / per_row;
    u32 start = (u32)(g % per_row) * block;
    u32 end = start + block < row_len ? start + block : row_len;
    const float* p = x + row * row_len;
    u32 m = 0;
    for (u32 j = start; j < end; ++j) {
        u32 a = fq_bits(p[j]) & 0x7fffffffu;
        if (a < 0x7f800000u && a > m) m = a;
    }
    amax[g] = m;
}

// `tensor_amax`: the whole tensor's amax (the per-tensor scale of E4M3 block scales).
extern "C" __global__ void fq_scales(const u32* amax, u64 groups, float max, u32 rule, int emax, int shift,
                                     const u32* tensor_amax, double* scale, double* inv) {
    u64 g = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= groups) return;
    float global = rule == FQ_UE4M3 ? fq_tensor_scale_e4m3(fq_float(tensor_amax[0]), max) : 1.0f;
    double s = fq_scale_of(fq_float(amax[g]), (double)max, rule, emax, shift, global);
    scale[g] = s;
    inv[g] = rule == FQ_UE8M0 ? exp2(-(double)(fq_e8m0_exponent(fq_float(amax[g]), emax) - shift)) : 1.0 / s;
}

extern "C" __global__ void fq_apply(const float* x, float* y, u64 n, u32 mode, u32 row_len, u32 block,
                                    const double* scale, const double* inv, int man_bits, int emin, int bias,
                                    float max, int stochastic, u64 key, int divide) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        u64 g = fq_group(i, mode, row_len, block);
        u32 r = stochastic ? fq_random(key, i) : 0u;
        y[i] = fq_element(x[i], scale[g], inv[g], man_bits, emin, bias, max, stochastic, r, divide);
    }
}

#endif
