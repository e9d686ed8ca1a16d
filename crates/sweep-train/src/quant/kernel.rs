//! The fused quantise-dequantise kernel over f32 slices: group scales, rounding, multi-threading.

use super::format::{stochastic_magnitude, FloatFormat, Format};
use super::{QuantConfig, QuantError, ScaleRule};
use crate::rng::mix64;
use rayon::prelude::*;
use sweep_plan::config::Rounding;
use sweep_plan::precision::Scaling;

/// Below this many elements the kernel stays on the calling thread.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;
/// Elements per parallel task when one scale covers the whole tensor.
const TENSOR_CHUNK: usize = 1 << 14;

/// Fake-quantises `data` in place: each scaling group is divided by its scale, rounded to the
/// format, and multiplied back. `row_len` is the length of the last dimension (channel scaling
/// uses one scale per row; block scaling uses blocks of B consecutive elements within a row, the
/// last block of a row shorter when B does not divide the row). `counter` selects the stochastic
/// rounding stream: element i of a call draws its random bits from (seed, counter, i) only, so
/// results do not depend on the thread count or on earlier calls.
pub fn quantize_slice(data: &mut [f32], row_len: usize, q: &QuantConfig, counter: u64) -> Result<(), QuantError> {
    quantize_slice_with_amax(data, row_len, q, counter, None).map(|_| ())
}

/// [`quantize_slice`] with per-tensor scaling taken from `amax` instead of the data's own largest
/// finite |x| when given (delayed scaling: the amax of earlier steps). Returns the data's own
/// amax (0 for empty data), which delayed scaling records. `amax` is ignored unless the scaling
/// is per tensor.
pub fn quantize_slice_with_amax(
    data: &mut [f32],
    row_len: usize,
    q: &QuantConfig,
    counter: u64,
    amax: Option<f32>,
) -> Result<f32, QuantError> {
    if data.is_empty() {
        return Ok(0.0);
    }
    if row_len == 0 || !data.len().is_multiple_of(row_len) {
        return Err(QuantError::new(format!(
            "quantize_slice: {} elements do not form whole rows of length {row_len}",
            data.len()
        )));
    }
    let key = match q.rounding {
        Rounding::Nearest => None,
        Rounding::Stochastic => Some(call_key(q.seed, counter)),
    };
    let parallel = data.len() >= PARALLEL_MIN_ELEMENTS;
    let tensor_amax = || {
        f32::from_bits(if parallel {
            data.par_chunks(TENSOR_CHUNK).map(finite_amax_bits).max().unwrap_or(0)
        } else {
            finite_amax_bits(data)
        })
    };
    // The per-tensor amax: needed for per-tensor scaling, for the second-level scale of E4M3
    // scales, and as the value delayed scaling records.
    let own_amax = if q.scaling == Scaling::Tensor || q.scale_rule == ScaleRule::Ue4m3 || amax.is_some() {
        tensor_amax()
    } else {
        f32::NAN
    };
    let used_amax = match (q.scaling, amax) {
        (Scaling::Tensor, Some(a)) => a,
        _ => own_amax,
    };
    let ctx = Ctx {
        format: q.format,
        rule: q.scale_rule,
        key,
        nearest: NearestKernel::of(&q.format),
        global: if q.scale_rule == ScaleRule::Ue4m3 { tensor_scale_e4m3(used_amax, q.format.max()) } else { 1.0 },
        e4m3: FloatFormat::new(4, 3).expect("e4m3 is a format"),
    };
    match q.scaling {
        Scaling::Tensor => {
            let scale = GroupScale::new(used_amax, &ctx);
            if parallel {
                data.par_chunks_mut(TENSOR_CHUNK)
                    .enumerate()
                    .for_each(|(c, chunk)| apply(chunk, (c * TENSOR_CHUNK) as u64, &scale, &ctx));
            } else {
                apply(data, 0, &scale, &ctx);
            }
        }
        Scaling::Channel | Scaling::Block(_) => {
            let block = match q.scaling {
                Scaling::Block(b) => (b as usize).min(row_len),
                _ => row_len,
            };
            // Whole rows per task, so no group straddles two tasks.
            let rows_per_task = (TENSOR_CHUNK / row_len).max(1);
            let task = rows_per_task * row_len;
            if parallel {
                data.par_chunks_mut(task)
                    .enumerate()
                    .for_each(|(t, chunk)| groups(chunk, (t * task) as u64, row_len, block, &ctx));
            } else {
                groups(data, 0, row_len, block, &ctx);
            }
        }
    }
    Ok(if own_amax.is_nan() { 0.0 } else { own_amax })
}

/// The largest value of FP8 E4M3, which stores the block scales of [`ScaleRule::Ue4m3`].
const E4M3_MAX: f32 = 448.0;
/// The smallest positive E4M3 value (2^-9): a block scale never rounds to zero.
const E4M3_MIN: f32 = 1.0 / 512.0;

/// The per-tensor f32 scale of two-level (E4M3 block scale) scaling: amax / (448 max_elem),
/// computed in f32 (1 for an all-zero tensor), so the largest block scale lands on 448.
pub fn tensor_scale_e4m3(amax: f32, format_max: f32) -> f32 {
    let s = amax / (E4M3_MAX * format_max);
    if s > 0.0 && s.is_finite() {
        s
    } else {
        1.0
    }
}

/// The block scale of two-level scaling in f32: amax / max_elem / global, clamped to
/// [2^-9, 448] and rounded to E4M3 (nearest, ties to even), times the global scale.
pub fn block_scale_e4m3(amax: f32, format_max: f32, global: f32) -> f32 {
    block_scale_with(&FloatFormat::new(4, 3).expect("e4m3 is a format"), amax, format_max, global)
}

#[inline(always)]
fn block_scale_with(e4m3: &FloatFormat, amax: f32, format_max: f32, global: f32) -> f32 {
    let raw = amax / format_max / global;
    let clamped = if raw > E4M3_MAX {
        E4M3_MAX
    } else if raw >= E4M3_MIN {
        raw
    } else {
        E4M3_MIN // also an all-zero block (any scale gives zeros)
    };
    e4m3.round(clamped, None) * global
}

/// The OCP MX E8M0 scale exponent of a group: floor(log2(amax)) - emax, clamped to [-127, 127]
/// (an all-zero group gets -127, as the reference implementations give it).
pub fn e8m0_exponent(amax: f32, emax: i32) -> i32 {
    let bits = amax.to_bits() & 0x7fff_ffff;
    if bits == 0 {
        return -127;
    }
    let exp_field = (bits >> 23) as i32;
    // floor(log2(amax)): from the exponent field for normal numbers; for subnormals from the
    // position of the leading one of the mantissa.
    let floor_log2 = if exp_field == 0 { -127 - (bits.leading_zeros() as i32 - 9) } else { exp_field - 127 };
    (floor_log2 - emax).clamp(-127, 127)
}

/// Defines `fn $name` that runs its body compiled for AVX2 when the CPU has it (the element loops
/// then vectorise 8 wide) and compiled for the baseline target otherwise. Same results either way.
macro_rules! multiversion {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: AVX2 support was detected just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

multiversion! {
    /// Bits of the largest finite |x| (ordering of non-negative floats equals that of their bits);
    /// infinities and NaN are ignored, an all-non-finite group gives 0.
    fn finite_amax_bits(xs: &[f32]) -> u32 {
        amax_bits_inline(xs)
    }
}

multiversion! {
    /// Quantises one task's elements with a scale shared by all of them. `first` is the index of
    /// the chunk's first element in the call.
    fn apply(chunk: &mut [f32], first: u64, scale: &GroupScale, ctx: &Ctx) {
        let bits = random_for(chunk.len(), first, ctx);
        apply_inline(chunk, bits.as_deref(), scale, ctx)
    }
}

multiversion! {
    /// Quantises whole rows: each row, or each block of `block` elements within a row, gets its
    /// own scale. `first` is the index of the chunk's first element in the call.
    fn groups(chunk: &mut [f32], first: u64, row_len: usize, block: usize, ctx: &Ctx) {
        let bits = random_for(chunk.len(), first, ctx);
        let mut offset = 0;
        for row in chunk.chunks_mut(row_len) {
            for group in row.chunks_mut(block) {
                let scale = GroupScale::new(f32::from_bits(amax_bits_inline(group)), ctx);
                let random = bits.as_deref().map(|b| &b[offset..offset + group.len()]);
                apply_inline(group, random, &scale, ctx);
                offset += group.len();
            }
        }
    }
}

/// The random bits of `len` elements from index `first` on, for stochastic rounding (one long
/// loop, which vectorises; the per-group loops then only round).
#[inline(always)]
fn random_for(len: usize, first: u64, ctx: &Ctx) -> Option<Vec<u32>> {
    let key = ctx.key?;
    let mut bits = vec![0u32; len];
    for (i, b) in bits.iter_mut().enumerate() {
        *b = element_random(key, first + i as u64);
    }
    Some(bits)
}

#[inline(always)]
fn amax_bits_inline(xs: &[f32]) -> u32 {
    let mut m = 0u32;
    for &x in xs {
        let a = x.to_bits() & 0x7fff_ffff;
        m = if a < 0x7f80_0000 && a > m { a } else { m };
    }
    m
}

/// A branch-free round-to-nearest-even for the formats it covers: after clamping |y| to the
/// format's max, adding and subtracting C = 2^(quantum exponent + 23) makes the FPU round |y| to
/// a multiple of the quantum, ties to even (the even multiple is the even code when M >= 1).
#[derive(Debug, Clone, Copy)]
enum NearestKernel {
    /// ExMy with E <= 7 and M >= 1: C's exponent field is max(exponent field of |y|, that of
    /// 2^emin) + 23 - M.
    Float { max: f32, min_exp_field: u32, c_offset: u32 },
    /// Integers: C = 2^23 (|y| <= 128 < 2^22); negative values clamp at `neg_max`.
    Int { max: f32, neg_max: f32 },
    /// Other formats (E = 8, where C would overflow, and M = 0): the scalar kernel.
    Scalar,
}

impl NearestKernel {
    fn of(format: &Format) -> NearestKernel {
        match format {
            Format::Float(f) if f.exp_bits <= 7 && f.man_bits >= 1 => {
                NearestKernel::Float { max: f.max, min_exp_field: (f.emin + 127) as u32, c_offset: 23 - f.man_bits }
            }
            Format::Float(_) => NearestKernel::Scalar,
            Format::Int(i) => NearestKernel::Int { max: i.max, neg_max: i.neg_max },
        }
    }
}

/// |y| clamped to `max` (NaN stays NaN: the comparison is false), and y's sign bit.
#[inline(always)]
fn clamped_abs(y: f32, max: f32) -> (f32, u32) {
    clamped_abs2(y, max, max)
}

/// |y| clamped to `max` for positive and to `neg_max` for negative y, and y's sign bit.
#[inline(always)]
fn clamped_abs2(y: f32, max: f32, neg_max: f32) -> (f32, u32) {
    let bits = y.to_bits();
    let a = f32::from_bits(bits & 0x7fff_ffff);
    let limit = if bits & 0x8000_0000 != 0 { neg_max } else { max };
    (if a > limit { limit } else { a }, bits & 0x8000_0000)
}

/// What every group of one call shares.
struct Ctx {
    format: Format,
    rule: ScaleRule,
    /// The stochastic-rounding key of this call; `None` for round-to-nearest.
    key: Option<u64>,
    /// The round-to-nearest kernel of the format.
    nearest: NearestKernel,
    /// The per-tensor scale of [`ScaleRule::Ue4m3`] (1 otherwise).
    global: f32,
    /// FP8 E4M3, the format of [`ScaleRule::Ue4m3`]'s block scales.
    e4m3: FloatFormat,
}

/// A group's scale s (values are divided by s before rounding) and its inverse.
struct GroupScale {
    scale: f64,
    inv: f64,
    /// Both fit f32 as normal numbers, so the f32 fast path applies.
    fits_f32: bool,
    /// Divide by the f32 scale (E4M3 block scales, which are not powers of two) instead of
    /// multiplying by the inverse.
    divide: bool,
}

impl GroupScale {
    #[inline(always)]
    fn new(amax: f32, ctx: &Ctx) -> GroupScale {
        match ctx.rule {
            ScaleRule::Ue8m0 => {
                // X = 2^e (the stored E8M0 scale); integer levels carry the implicit 2^-(N-2).
                let e = e8m0_exponent(amax, ctx.format.emax()) - ctx.format.level_shift();
                let scale = 2f64.powi(e);
                let inv = 2f64.powi(-e);
                return GroupScale { scale, inv, fits_f32: (-126..=126).contains(&e), divide: false };
            }
            ScaleRule::Ue4m3 => {
                let scale = block_scale_with(&ctx.e4m3, amax, ctx.format.max(), ctx.global) as f64;
                return GroupScale { scale, inv: 1.0 / scale, fits_f32: true, divide: true };
            }
            _ => {}
        }
        let max = ctx.format.max() as f64;
        let amax = amax as f64;
        let scale = if amax == 0.0 {
            1.0
        } else {
            match ctx.rule {
                ScaleRule::Unit | ScaleRule::Ue8m0 | ScaleRule::Ue4m3 => 1.0,
                ScaleRule::AbsMax => amax / max,
                ScaleRule::PowerOfTwo => {
                    // The smallest power of two s with amax / s <= max.
                    let mut e = (amax / max).log2().ceil() as i32;
                    while amax / 2f64.powi(e) > max {
                        e += 1;
                    }
                    while amax / 2f64.powi(e - 1) <= max {
                        e -= 1;
                    }
                    2f64.powi(e)
                }
            }
        };
        let inv = 1.0 / scale;
        let normal = |v: f64| (v as f32).is_normal();
        GroupScale { scale, inv, fits_f32: normal(scale) && normal(inv), divide: false }
    }
}

/// The random bits that element `index` of call `counter` draws under `seed`: stochastic rounding
/// rounds that element's magnitude up when these bits, masked to the bits below its quantum, are
/// below the magnitude's own bits there (see [`super::format::stochastic_magnitude`]).
pub fn random_bits(seed: u64, counter: u64, index: u64) -> u32 {
    element_random(call_key(seed, counter), index)
}

/// The stochastic-rounding key of one call (what the CUDA kernel receives).
pub fn call_key(seed: u64, counter: u64) -> u64 {
    mix64(mix64(seed) ^ counter)
}

/// The 32 random bits of element `index` of a call with stochastic-rounding `key`: two rounds of
/// a 32-bit integer hash (lowbias32), cheap enough to vectorise.
#[inline(always)]
fn element_random(key: u64, index: u64) -> u32 {
    #[inline(always)]
    fn hash32(mut x: u32) -> u32 {
        x ^= x >> 16;
        x = x.wrapping_mul(0x7feb_352d);
        x ^= x >> 15;
        x = x.wrapping_mul(0x846c_a68b);
        x ^ (x >> 16)
    }
    let high = ((index >> 32) as u32).wrapping_mul(0x9e37_79b9);
    hash32(hash32(index as u32 ^ key as u32) ^ (key >> 32) as u32 ^ high)
}

/// Divides a group by its scale, rounds, and multiplies back. `random`: the group's random bits,
/// for stochastic rounding.
#[inline(always)]
fn apply_inline(group: &mut [f32], random: Option<&[u32]>, s: &GroupScale, ctx: &Ctx) {
    if s.divide {
        // x / s and q * s in f32, s = E4M3 block scale times the per-tensor scale.
        let scale = s.scale as f32;
        return round_scaled(group, random, ctx, |x| x / scale, scale);
    }
    if !s.fits_f32 {
        // Scales outside f32's normal range (tiny groups of very wide formats): scale in f64.
        for (i, x) in group.iter_mut().enumerate() {
            let y = (*x as f64 * s.inv) as f32;
            *x = (ctx.format.round(y, random.map(|r| r[i])) as f64 * s.scale) as f32;
        }
        return;
    }
    let (scale, inv) = (s.scale as f32, s.inv as f32);
    round_scaled(group, random, ctx, |x| x * inv, scale)
}

/// Replaces each x of a group by round(scale_in(x)) * scale (the vectorisable loops of
/// [`apply_inline`]; `scale_in` divides by the group's scale or multiplies by its inverse).
#[inline(always)]
fn round_scaled(group: &mut [f32], random: Option<&[u32]>, ctx: &Ctx, scale_in: impl Fn(f32) -> f32, scale: f32) {
    // Plain `for` loops (not `for_each`, whose fold may stay out of line and miss AVX2).
    match (ctx.nearest, random) {
        (NearestKernel::Float { max, min_exp_field, c_offset }, None) => {
            for x in group.iter_mut() {
                let (a, sign) = clamped_abs(scale_in(*x), max);
                let exp_field = a.to_bits() >> 23;
                let c = f32::from_bits((exp_field.max(min_exp_field) + c_offset) << 23);
                *x = f32::from_bits(((a + c) - c).to_bits() | sign) * scale;
            }
        }
        (NearestKernel::Int { max, neg_max }, None) => {
            const C: f32 = 8_388_608.0; // 2^23
                                        // Two's complement (neg_max > max) has one zero, +0.
            let twos = neg_max > max;
            for x in group.iter_mut() {
                let (a, sign) = clamped_abs2(scale_in(*x), max, neg_max);
                let r = (a + C) - C;
                let sign = if twos && r == 0.0 { 0 } else { sign };
                *x = f32::from_bits(r.to_bits() | sign) * scale;
            }
        }
        (_, None) => {
            for x in group.iter_mut() {
                *x = ctx.format.round(scale_in(*x), None) * scale;
            }
        }
        (_, Some(random)) => {
            // The branch-free form of FloatFormat::round / IntFormat::round with random bits.
            let (max, neg_max, m, q_min) = match ctx.format {
                Format::Float(f) => (f.max, f.max, f.man_bits as i32, f.emin - f.man_bits as i32),
                Format::Int(n) => (n.max, n.neg_max, 31, 0),
            };
            for (x, &bits) in group.iter_mut().zip(random) {
                let (a, sign) = clamped_abs2(scale_in(*x), max, neg_max);
                let r = stochastic_magnitude(a, m, q_min, bits);
                let r = if a.is_nan() { a } else { r };
                let sign = if neg_max > max && r == 0.0 { 0 } else { sign };
                *x = f32::from_bits(r.to_bits() | sign) * scale;
            }
        }
    }
}
