//! Number formats of fake quantisation and their scalar rounding kernels.
//!
//! Floating-point ExMy conventions (sign bit + E exponent bits + M mantissa bits, bias 2^(E-1)-1,
//! exponent code 0 holds zero and the subnormals):
//! - `e4m3`: OCP FP8 E4M3. No infinities; the all-ones exponent holds normal numbers except
//!   S.1111.111, which is NaN. Largest finite value 448.
//! - E >= 5 (`e5m2`, and e.g. `e5m10` = fp16, `e8m7` = bfloat16): IEEE-like, the all-ones exponent
//!   is reserved for infinities and NaN. `e5m2` (OCP FP8 E5M2) has largest finite value 57344.
//! - every other format (E <= 4 except E4M3: `e2m1` FP4, `e3m2` and `e2m3` FP6, `e1m2`, `e4m2`, ...):
//!   every code is a finite number, as in the OCP MX spec for FP6/FP4. `e2m1` max 6, `e3m2` max 28,
//!   `e2m3` max 7.5.
//!
//! Rounding never produces a code that the format lacks: anything beyond the largest finite value,
//! infinities included, saturates to ±max; NaN stays NaN; the sign of zero is kept.
//!
//! Integer formats `intN` are symmetric: values are the integers in [-(2^(N-1)-1), 2^(N-1)-1]
//! (int8: ±127, int4: ±7, int2: ±1); -2^(N-1) is never produced. The OCP MX integer elements
//! `mxintN` are two's complement: levels in [-2^(N-1), 2^(N-1)-1] with an implicit scale
//! 2^-(N-2) (MXINT8: k/64 for k in [-128, 127], so -2 is a value and 2 - 2^-6 the largest).

use super::QuantError;
use sweep_plan::precision::NumberFormat;

/// A simulated floating-point format ExMy with its derived constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloatFormat {
    /// Exponent bits E (1..=8).
    pub exp_bits: u32,
    /// Mantissa bits M (0..=10).
    pub man_bits: u32,
    /// Exponent bias 2^(E-1) - 1.
    pub bias: i32,
    /// Exponent of the smallest normal number, 1 - bias.
    pub emin: i32,
    /// Largest finite value.
    pub max: f32,
}

impl FloatFormat {
    /// The exponent of the largest normal value, floor(log2(max)): what an OCP MX E8M0 scale
    /// aligns a block's largest exponent with (E4M3 8, E5M2 15, E3M2 4, E2M3 2, E2M1 2).
    pub fn emax(&self) -> i32 {
        ((self.max.to_bits() >> 23) as i32) - 127
    }
}

/// Which codes of the all-ones exponent are finite numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TopBinade {
    /// All codes finite (OCP MX FP6/FP4 style).
    AllFinite,
    /// All codes finite but S.1...1.1...1, which is NaN (OCP E4M3).
    LastIsNan,
    /// Reserved for inf/NaN (IEEE style).
    Reserved,
}

impl FloatFormat {
    /// Builds the format ExMy; E must be in 1..=8 and M in 0..=10.
    pub fn new(exp_bits: u32, man_bits: u32) -> Result<FloatFormat, QuantError> {
        if !(1..=8).contains(&exp_bits) || man_bits > 10 {
            return Err(QuantError::new(format!(
                "e{exp_bits}m{man_bits}: exponent bits must be in 1..=8 and mantissa bits in 0..=10"
            )));
        }
        let bias = (1i32 << (exp_bits - 1)) - 1;
        let emin = 1 - bias;
        let top_code = (1i32 << exp_bits) - 1;
        let frac_all_ones = 1.0 - (0.5f64).powi(man_bits as i32); // 0.111..1 in binary
        let max = match Self::top_binade(exp_bits, man_bits) {
            TopBinade::AllFinite => 2f64.powi(top_code - bias) * (1.0 + frac_all_ones),
            TopBinade::LastIsNan => 2f64.powi(top_code - bias) * (1.0 + frac_all_ones - (0.5f64).powi(man_bits as i32)),
            TopBinade::Reserved => 2f64.powi(top_code - 1 - bias) * (1.0 + frac_all_ones),
        };
        Ok(FloatFormat { exp_bits, man_bits, bias, emin, max: max as f32 })
    }

    fn top_binade(exp_bits: u32, man_bits: u32) -> TopBinade {
        match (exp_bits, man_bits) {
            (4, 3) => TopBinade::LastIsNan,
            (e, _) if e >= 5 => TopBinade::Reserved,
            _ => TopBinade::AllFinite,
        }
    }

    /// The smallest positive (subnormal) value, 2^(emin - M).
    pub fn min_subnormal(&self) -> f32 {
        pow2(self.emin - self.man_bits as i32)
    }

    /// The smallest positive normal value, 2^emin.
    pub fn min_normal(&self) -> f32 {
        pow2(self.emin)
    }

    /// Total bits of a code, 1 + E + M.
    pub fn bits(&self) -> u32 {
        1 + self.exp_bits + self.man_bits
    }

    /// The value of a code (its low `bits()` bits: sign, exponent, mantissa): NaN for the NaN codes,
    /// ±inf for the infinity codes of IEEE-like formats.
    pub fn decode(&self, code: u32) -> f32 {
        let m = self.man_bits;
        let mant = code & ((1 << m) - 1);
        let exp = (code >> m) & ((1 << self.exp_bits) - 1);
        let negative = (code >> (m + self.exp_bits)) & 1 == 1;
        let top = (1u32 << self.exp_bits) - 1;
        let magnitude = match Self::top_binade(self.exp_bits, self.man_bits) {
            TopBinade::Reserved if exp == top => {
                if mant == 0 {
                    f32::INFINITY
                } else {
                    f32::NAN
                }
            }
            TopBinade::LastIsNan if exp == top && mant == (1 << m) - 1 => f32::NAN,
            _ if exp == 0 => mant as f32 * pow2(self.emin - m as i32),
            _ => ((1u32 << m) | mant) as f32 * pow2(exp as i32 - self.bias - m as i32),
        };
        if negative {
            -magnitude
        } else {
            magnitude
        }
    }

    /// Rounds `x` to this format: ties to even, or stochastically when `random` is `Some` (32
    /// uniform random bits for this element; see [`stochastic_magnitude`]). Saturates at ±max
    /// (infinities included), keeps NaN and the sign of zero.
    #[inline(always)]
    pub fn round(&self, x: f32, random: Option<u32>) -> f32 {
        let bits = x.to_bits();
        let sign = bits & 0x8000_0000;
        let abs = bits & 0x7fff_ffff;
        if abs > 0x7f80_0000 {
            return x; // NaN
        }
        if let Some(r) = random {
            let a = f32::from_bits(abs).min(self.max);
            let m = self.man_bits as i32;
            return f32::from_bits(sign | stochastic_magnitude(a, m, self.emin - m, r).to_bits());
        }
        if abs == 0x7f80_0000 {
            return f32::from_bits(sign | self.max.to_bits());
        }
        // |x| = significand * 2^(exponent - 23), significand < 2^24 (implicit bit included).
        let exp_field = (abs >> 23) as i32;
        let (significand, exponent) =
            if exp_field == 0 { (abs, -126) } else { ((abs & 0x7f_ffff) | 0x80_0000, exp_field - 127) };
        // Exponent of the target's quantum at this magnitude; the subnormal range has a fixed one.
        let quantum_exp = exponent.max(self.emin) - self.man_bits as i32;
        let shift = (quantum_exp - (exponent - 23)) as u32; // >= 23 - M >= 13
        if shift > 25 {
            return f32::from_bits(sign); // significand < 2^24: below a quarter quantum
        }
        let k = significand >> shift;
        let rem = significand & ((1 << shift) - 1);
        let half = 1 << (shift - 1);
        // Ties go to the even code. With M >= 1 the code's last bit is the last bit of k; with M = 0
        // the code of k * 2^quantum_exp (k = 1 for normal inputs) is k + exponent + bias - 1.
        let parity =
            if self.man_bits == 0 && exponent >= self.emin { k + (exponent + self.bias - 1) as u32 } else { k };
        let k = k + u32::from(rem > half || (rem == half && parity & 1 == 1));
        let magnitude = (k as f32 * pow2(quantum_exp)).min(self.max);
        f32::from_bits(sign | magnitude.to_bits())
    }
}

/// Stochastic rounding of a finite `a >= 0` to a multiple of the quantum 2^q, where
/// q = max(e - m, q_min) and e is a's binary exponent (floats: m = M, q_min = emin - M; integers:
/// q = 0). Rounds up with probability (a mod 2^q) / 2^q computed on a's bits with `random` as a
/// 32-bit uniform threshold: exact while a's bits below the quantum fit in 31 bits, and otherwise
/// biased by less than 2^-31 of a quantum (the lowest bits are dropped). Branch-free, so the
/// element loops vectorise.
#[inline(always)]
pub fn stochastic_magnitude(a: f32, m: i32, q_min: i32, random: u32) -> f32 {
    let bits = a.to_bits();
    let exp_field = bits >> 23;
    let significand = if exp_field == 0 { bits } else { (bits & 0x7f_ffff) | 0x80_0000 };
    let e = exp_field.max(1) as i32 - 127;
    let q = (e - m).max(q_min);
    let shift = (q - (e - 23)).max(0) as u32;
    let dropped = shift.saturating_sub(31);
    let significand = if dropped >= 32 { 0 } else { significand >> dropped };
    let shift = shift.min(31);
    let mask = (1u32 << shift) - 1;
    let k = (significand >> shift) + u32::from((random & mask) < (significand & mask));
    k as f32 * pow2(q)
}

/// 2^e as f32 for e in -149..=127 (subnormal results included).
#[inline(always)]
pub(crate) fn pow2(e: i32) -> f32 {
    if e >= -126 {
        f32::from_bits(((e + 127) as u32) << 23)
    } else {
        f32::from_bits(1u32 << (e + 149))
    }
}

/// An integer format: symmetric intN, or the two's-complement elements of OCP MXINT.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntFormat {
    /// Bits N (2..=8).
    pub bits: u32,
    /// Largest level, 2^(N-1) - 1.
    pub max: f32,
    /// Largest magnitude of a negative level: `max` (symmetric) or 2^(N-1) (two's complement).
    pub neg_max: f32,
}

impl IntFormat {
    /// Builds the symmetric intN; N must be in 2..=8.
    pub fn new(bits: u32) -> Result<IntFormat, QuantError> {
        if !(2..=8).contains(&bits) {
            return Err(QuantError::new(format!("int{bits}: integer bits must be in 2..=8")));
        }
        let max = ((1u32 << (bits - 1)) - 1) as f32;
        Ok(IntFormat { bits, max, neg_max: max })
    }

    /// Builds the two's-complement levels of mxintN (levels -2^(N-1) ..= 2^(N-1) - 1; the
    /// implicit 2^-(N-2) is part of the scale).
    pub fn twos_complement(bits: u32) -> Result<IntFormat, QuantError> {
        let f = IntFormat::new(bits).map_err(|_| QuantError::new(format!("mxint{bits}: bits must be in 2..=8")))?;
        Ok(IntFormat { neg_max: f.max + 1.0, ..f })
    }

    /// The exponent an E8M0 scale aligns a block's largest exponent with: 0, as for MXINT8, whose
    /// elements are levels times the implicit 2^-(N-2) (a block's amax / X lies in [1, 2)).
    pub fn emax(&self) -> i32 {
        0
    }

    /// The implicit scale of the levels, as a power of two: N - 2 (levels k mean k 2^-(N-2)).
    pub fn level_shift(&self) -> i32 {
        self.bits as i32 - 2
    }

    /// Rounds `x` (already divided by the scale) to an integer level in [-neg_max, max]: ties to
    /// even, or stochastically when `random` is given (the magnitude, as [`stochastic_magnitude`]
    /// with quantum 1). NaN stays NaN; the sign of zero is kept, except in two's complement
    /// (MXINT), which has one zero, +0.
    #[inline(always)]
    pub fn round(&self, x: f32, random: Option<u32>) -> f32 {
        let a = x.abs().min(if x.is_sign_negative() { self.neg_max } else { self.max });
        if x.is_nan() {
            return x;
        }
        let magnitude = match random {
            None => a.round_ties_even(),
            Some(r) => stochastic_magnitude(a, 31, 0, r),
        };
        if self.neg_max > self.max && magnitude == 0.0 {
            return 0.0; // two's complement has no negative zero
        }
        magnitude.copysign(x)
    }
}

/// A simulated number format: floating point ExMy or symmetric integer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Format {
    /// ExMy floating point.
    Float(FloatFormat),
    /// Symmetric intN.
    Int(IntFormat),
}

impl Format {
    /// The simulated format of a planner number format; `None` for the native fp32/bf16/fp16.
    pub fn from_number_format(format: &NumberFormat) -> Result<Option<Format>, QuantError> {
        Ok(match *format {
            NumberFormat::F32 | NumberFormat::Bf16 | NumberFormat::F16 => None,
            NumberFormat::Float { exp_bits, man_bits } => Some(Format::Float(FloatFormat::new(exp_bits, man_bits)?)),
            NumberFormat::Int { bits } => Some(Format::Int(IntFormat::new(bits)?)),
            NumberFormat::MxInt { bits } => Some(Format::Int(IntFormat::twos_complement(bits)?)),
        })
    }

    /// The exponent an E8M0 scale aligns a group's largest exponent with (see
    /// [`FloatFormat::emax`], [`IntFormat::emax`]).
    pub fn emax(&self) -> i32 {
        match self {
            Format::Float(f) => f.emax(),
            Format::Int(i) => i.emax(),
        }
    }

    /// log2 of the implicit scale between a value and its level: 0 for floats, N - 2 for integer
    /// levels (an E8M0 scale X divides values; levels are values times 2^(N-2)).
    pub fn level_shift(&self) -> i32 {
        match self {
            Format::Float(_) => 0,
            Format::Int(i) => i.level_shift(),
        }
    }

    /// The largest finite value (float) or level (integer): what a group's absolute maximum maps to.
    pub fn max(&self) -> f32 {
        match self {
            Format::Float(f) => f.max,
            Format::Int(i) => i.max,
        }
    }

    /// Rounds an already scaled value (`random`: this element's 32 random bits, for stochastic rounding).
    #[inline(always)]
    pub fn round(&self, x: f32, random: Option<u32>) -> f32 {
        match self {
            Format::Float(f) => f.round(x, random),
            Format::Int(i) => i.round(x, random),
        }
    }
}
