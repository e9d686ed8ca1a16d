// Host build of src/quant/fake_quant.cu for tests/quant_cuda_math.rs: the CUDA element and group
// functions compiled as plain C++, with the three kernels emulated by loops.
// Input on stdin: mode row_len block rule emax shift man_bits emin bias max stochastic key n, then n
// values as f32 bit patterns (hex). Output: n result bit patterns (hex), one per line.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#define FQ_HOST_EMULATION 1
typedef unsigned int u32;
typedef unsigned long long u64;
#define FQ_DEVICE static inline
static inline u32 __float_as_uint(float f) { u32 u; std::memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(u32 u) { float f; std::memcpy(&f, &u, 4); return f; }
#include <math.h>  // ceil, exp2, log2, rintf, copysignf, fabsf as in CUDA

#include "../src/quant/fake_quant.cu"

int main() {
    u32 mode, row_len, block, rule, stochastic;
    int emax, shift, man_bits, emin, bias;
    u32 max_bits;
    u64 key, n;
    if (std::scanf("%u %u %u %u %d %d %d %d %d %x %u %llx %llu", &mode, &row_len, &block, &rule, &emax, &shift, &man_bits, &emin, &bias, &max_bits, &stochastic, &key, &n) != 13) return 2;
    float max = __uint_as_float(max_bits);
    std::vector<float> x(n);
    for (u64 i = 0; i < n; ++i) {
        u32 b;
        if (std::scanf("%x", &b) != 1) return 3;
        x[i] = __uint_as_float(b);
    }
    // fq_amax_tensor / fq_amax_groups.
    u64 groups = mode == FQ_TENSOR ? 1 : (mode == FQ_CHANNEL ? n / row_len : (n / row_len) * ((row_len + block - 1) / block));
    std::vector<u32> amax(groups, 0);
    u32 tensor_amax = 0;
    for (u64 i = 0; i < n; ++i) {
        u32 a = fq_bits(x[i]) & 0x7fffffffu;
        u64 g = fq_group(i, mode, row_len, block);
        if (a < 0x7f800000u && a > amax[g]) amax[g] = a;
        if (a < 0x7f800000u && a > tensor_amax) tensor_amax = a;
    }
    // fq_scales (the kernel's body, one group at a time).
    std::vector<double> scale(groups), inv(groups);
    for (u64 g = 0; g < groups; ++g) {
        float global = rule == FQ_UE4M3 ? fq_tensor_scale_e4m3(fq_float(tensor_amax), max) : 1.0f;
        scale[g] = fq_scale_of(fq_float(amax[g]), (double)max, rule, emax, shift, global);
        inv[g] = rule == FQ_UE8M0 ? exp2(-(double)(fq_e8m0_exponent(fq_float(amax[g]), emax) - shift)) : 1.0 / scale[g];
    }
    // fq_apply.
    for (u64 i = 0; i < n; ++i) {
        u64 g = fq_group(i, mode, row_len, block);
        u32 r = stochastic ? fq_random(key, i) : 0u;
        std::printf("%x\n", fq_bits(fq_element(x[i], scale[g], inv[g], man_bits, emin, bias, max, (int)stochastic, r, rule == FQ_UE4M3)));
    }
    return 0;
}
