//! The fused quantise-dequantise kernel over f32 slices: group scales, rounding, multi-threading.

use super::format::Format;
use super::{QuantConfig, QuantError, ScaleRule};
use crate::rng::mix64;
use rayon::prelude::*;
use sweep_plan::config::Rounding;
use sweep_plan::precision::Scaling;

/// Below this many elements the kernel stays on the calling thread.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;
/// Elements per parallel task when one scale covers the whole tensor.
const TENSOR_CHUNK: usize = 1 << 14;
/// SplitMix64's increment: consecutive element indices map to well-separated hash inputs.
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Fake-quantises `data` in place: each scaling group is divided by its scale, rounded to the
/// format, and multiplied back. `row_len` is the length of the last dimension (channel scaling
/// uses one scale per row; block scaling uses blocks of B consecutive elements within a row, the
/// last block of a row shorter when B does not divide the row). `counter` selects the stochastic
/// rounding stream: element i of a call draws its random bits from (seed, counter, i) only, so
/// results do not depend on the thread count or on earlier calls.
pub fn quantize_slice(data: &mut [f32], row_len: usize, q: &QuantConfig, counter: u64) -> Result<(), QuantError> {
    if data.is_empty() {
        return Ok(());
    }
    if row_len == 0 || data.len() % row_len != 0 {
        return Err(QuantError::new(format!(
            "quantize_slice: {} elements do not form whole rows of length {row_len}",
            data.len()
        )));
    }
    let key = match q.rounding {
        Rounding::Nearest => None,
        Rounding::Stochastic => Some(mix64(mix64(q.seed) ^ counter)),
    };
    let ctx = Ctx { format: q.format, rule: q.scale_rule, key };
    let parallel = data.len() >= PARALLEL_MIN_ELEMENTS;
    match q.scaling {
        Scaling::Tensor => {
            let amax_bits = if parallel {
                data.par_chunks(TENSOR_CHUNK).map(finite_amax_bits).max().unwrap_or(0)
            } else {
                finite_amax_bits(data)
            };
            let scale = GroupScale::new(f32::from_bits(amax_bits), &ctx);
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
            let rows = |(r, row): (usize, &mut [f32])| {
                let row_start = (r * row_len) as u64;
                for (b, group) in row.chunks_mut(block).enumerate() {
                    let scale = GroupScale::new(f32::from_bits(finite_amax_bits(group)), &ctx);
                    apply(group, row_start + (b * block) as u64, &scale, &ctx);
                }
            };
            if parallel {
                let min_rows = (TENSOR_CHUNK / row_len).max(1);
                data.par_chunks_mut(row_len).enumerate().with_min_len(min_rows).for_each(rows);
            } else {
                data.chunks_mut(row_len).enumerate().for_each(rows);
            }
        }
    }
    Ok(())
}

/// What every group of one call shares.
struct Ctx {
    format: Format,
    rule: ScaleRule,
    /// The stochastic-rounding key of this call; `None` for round-to-nearest.
    key: Option<u64>,
}

/// Bits of the largest finite |x| (ordering of non-negative floats equals that of their bits);
/// infinities and NaN are ignored, an all-non-finite group gives 0.
fn finite_amax_bits(xs: &[f32]) -> u32 {
    xs.iter().fold(0u32, |m, &x| {
        let a = x.to_bits() & 0x7fff_ffff;
        if a < 0x7f80_0000 { m.max(a) } else { m }
    })
}

/// A group's scale s (values are divided by s before rounding) and its inverse.
struct GroupScale {
    scale: f64,
    inv: f64,
    /// Both fit f32 as normal numbers, so the f32 fast path applies.
    fits_f32: bool,
}

impl GroupScale {
    fn new(amax: f32, ctx: &Ctx) -> GroupScale {
        let max = ctx.format.max() as f64;
        let amax = amax as f64;
        let scale = if amax == 0.0 {
            1.0
        } else {
            match ctx.rule {
                ScaleRule::Unit => 1.0,
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
        GroupScale { scale, inv, fits_f32: normal(scale) && normal(inv) }
    }
}

/// Divides a group by its scale, rounds, and multiplies back. `first` is the index of the group's
/// first element in the call (the stochastic-rounding coordinate).
#[inline]
fn apply(group: &mut [f32], first: u64, s: &GroupScale, ctx: &Ctx) {
    let random = |i: usize| ctx.key.map(|k| mix64(k.wrapping_add((first + i as u64).wrapping_mul(GOLDEN_GAMMA))));
    if s.fits_f32 {
        let (scale, inv) = (s.scale as f32, s.inv as f32);
        match (ctx.format, ctx.key) {
            (Format::Float(f), None) => group.iter_mut().for_each(|x| *x = f.round(*x * inv, None) * scale),
            (Format::Int(n), None) => group.iter_mut().for_each(|x| *x = n.round(*x * inv, None) * scale),
            _ => group.iter_mut().enumerate().for_each(|(i, x)| *x = ctx.format.round(*x * inv, random(i)) * scale),
        }
    } else {
        // Scales outside f32's normal range (tiny groups of very wide formats): scale in f64.
        for (i, x) in group.iter_mut().enumerate() {
            let y = (*x as f64 * s.inv) as f32;
            *x = (ctx.format.round(y, random(i)) as f64 * s.scale) as f32;
        }
    }
}
