//! Precision names of the grid ("fp32", "bf16", "fp8-e4m3", "e3m2-b128", "int4-channel") and
//! what they resolve to: a number format, a scaling granularity, and the E/M/B variables of the
//! floating-point quantisation law.

use serde::{Deserialize, Serialize};

/// A number format for simulated (fake-quantised) or native training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NumberFormat {
    /// IEEE single precision: no quantisation.
    F32,
    /// bfloat16 autocast (native on GPUs).
    Bf16,
    /// IEEE half precision.
    F16,
    /// A simulated floating-point format with `exp_bits` exponent and `man_bits` mantissa bits
    /// (plus a sign bit). E4M3 follows the OCP FP8 convention (no infinities, max 448).
    Float { exp_bits: u32, man_bits: u32 },
    /// A symmetric integer format with `bits` bits.
    Int { bits: u32 },
}

impl NumberFormat {
    /// Total bits per element including the sign.
    pub fn bits(&self) -> u32 {
        match *self {
            NumberFormat::F32 => 32,
            NumberFormat::Bf16 | NumberFormat::F16 => 16,
            NumberFormat::Float { exp_bits, man_bits } => 1 + exp_bits + man_bits,
            NumberFormat::Int { bits } => bits,
        }
    }
    /// (exponent bits, mantissa bits) as the quantisation law counts them; integers have none.
    pub fn exp_man(&self) -> Option<(u32, u32)> {
        match *self {
            NumberFormat::F32 => Some((8, 23)),
            NumberFormat::Bf16 => Some((8, 7)),
            NumberFormat::F16 => Some((5, 10)),
            NumberFormat::Float { exp_bits, man_bits } => Some((exp_bits, man_bits)),
            NumberFormat::Int { .. } => None,
        }
    }
    /// Whether training in this format needs fake quantisation (not a native dtype).
    pub fn is_simulated(&self) -> bool {
        matches!(self, NumberFormat::Float { .. } | NumberFormat::Int { .. })
    }
    /// The canonical spelling: `fp32`, `bf16`, `fp16`, `e4m3`, `int4`.
    pub fn canonical(&self) -> String {
        match *self {
            NumberFormat::F32 => "fp32".into(),
            NumberFormat::Bf16 => "bf16".into(),
            NumberFormat::F16 => "fp16".into(),
            NumberFormat::Float { exp_bits, man_bits } => format!("e{exp_bits}m{man_bits}"),
            NumberFormat::Int { bits } => format!("int{bits}"),
        }
    }
}

/// How scaling factors are shared between elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scaling {
    /// One scale per tensor.
    Tensor,
    /// One scale per output channel (row).
    Channel,
    /// One scale per block of this many consecutive elements.
    Block(u32),
}

/// A parsed precision name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrecisionSpec {
    /// Canonical name, e.g. `e4m3-b128`.
    pub name: String,
    /// The number format.
    pub format: NumberFormat,
    /// Scaling granularity (ignored for native formats).
    pub scaling: Scaling,
}

/// The precision names the planner understands, for error messages.
pub const ALLOWED: &str = "fp32, bf16, fp16, fp8-e4m3, fp8-e5m2, fp6-e3m2, fp6-e2m3, fp4-e2m1 (or fp4), \
any eXmY with X in 1..=8 and Y in 0..=10 (e.g. e3m2), int8, int4, int2 (any intN, N in 2..=8); \
optional suffix -bN (block of N elements), -channel or -tensor";

impl PrecisionSpec {
    /// Parses a grid precision name; the error says what is allowed.
    pub fn parse(raw: &str) -> Result<PrecisionSpec, String> {
        let lower = raw.trim().to_ascii_lowercase();
        let mut parts: Vec<&str> = lower.split('-').collect();
        let mut scaling = Scaling::Tensor;
        if parts.len() > 1 {
            let last = *parts.last().unwrap();
            let parsed = match last {
                "channel" => Some(Scaling::Channel),
                "tensor" => Some(Scaling::Tensor),
                b if b.starts_with('b') && b.len() > 1 && b[1..].chars().all(|c| c.is_ascii_digit()) => {
                    let n: u32 = b[1..].parse().map_err(|_| format!("block size in {raw:?} is too large"))?;
                    if n == 0 {
                        return Err(format!("block size in {raw:?} must be at least 1"));
                    }
                    Some(Scaling::Block(n))
                }
                _ => None,
            };
            if let Some(s) = parsed {
                scaling = s;
                parts.pop();
            }
        }
        let base = parts.join("-");
        let format = match base.as_str() {
            "fp32" | "f32" | "float32" => NumberFormat::F32,
            "bf16" | "bfloat16" => NumberFormat::Bf16,
            "fp16" | "f16" | "float16" => NumberFormat::F16,
            "fp8-e4m3" | "fp8" => NumberFormat::Float { exp_bits: 4, man_bits: 3 },
            "fp8-e5m2" => NumberFormat::Float { exp_bits: 5, man_bits: 2 },
            "fp6-e3m2" => NumberFormat::Float { exp_bits: 3, man_bits: 2 },
            "fp6-e2m3" => NumberFormat::Float { exp_bits: 2, man_bits: 3 },
            "fp4" | "fp4-e2m1" => NumberFormat::Float { exp_bits: 2, man_bits: 1 },
            other => parse_exmy(other)
                .or_else(|| parse_int(other))
                .ok_or_else(|| format!("unknown precision {raw:?}; allowed: {ALLOWED}"))??,
        };
        if !format.is_simulated() && scaling != Scaling::Tensor {
            return Err(format!(
                "precision {raw:?}: a block or channel suffix only applies to simulated formats (eXmY, intN)"
            ));
        }
        let mut name = format.canonical();
        match scaling {
            Scaling::Tensor => {}
            Scaling::Channel => name.push_str("-channel"),
            Scaling::Block(b) => name.push_str(&format!("-b{b}")),
        }
        Ok(PrecisionSpec { name, format, scaling })
    }

    /// The block size B of the quantisation law: the block length, 2^13.16 for channel-wise
    /// scaling (Sun et al. 2025), and 2^16 standing in for per-tensor scaling.
    pub fn law_block_size(&self) -> f64 {
        match self.scaling {
            Scaling::Block(b) => b as f64,
            Scaling::Channel => 2f64.powf(13.16),
            Scaling::Tensor => 65536.0,
        }
    }
}

fn parse_exmy(s: &str) -> Option<Result<NumberFormat, String>> {
    let s = s
        .strip_prefix("fp")
        .map(|r| r.trim_start_matches(|c: char| c.is_ascii_digit()).trim_start_matches('-'))
        .unwrap_or(s);
    let rest = s.strip_prefix('e')?;
    let (e, m) = rest.split_once('m')?;
    let e: u32 = e.parse().ok()?;
    let m: u32 = m.parse().ok()?;
    if !(1..=8).contains(&e) || m > 10 {
        return Some(Err(format!("e{e}m{m}: exponent bits must be in 1..=8 and mantissa bits in 0..=10")));
    }
    Some(Ok(NumberFormat::Float { exp_bits: e, man_bits: m }))
}

fn parse_int(s: &str) -> Option<Result<NumberFormat, String>> {
    let bits: u32 = s.strip_prefix("int")?.parse().ok()?;
    if !(2..=8).contains(&bits) {
        return Some(Err(format!("int{bits}: integer bits must be in 2..=8")));
    }
    Some(Ok(NumberFormat::Int { bits }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        let p = PrecisionSpec::parse("fp8-e4m3").unwrap();
        assert_eq!(p.format, NumberFormat::Float { exp_bits: 4, man_bits: 3 });
        assert_eq!(p.name, "e4m3");
        let p = PrecisionSpec::parse("E3M2-b128").unwrap();
        assert_eq!((p.name.as_str(), p.scaling), ("e3m2-b128", Scaling::Block(128)));
        assert_eq!(PrecisionSpec::parse("int4-channel").unwrap().name, "int4-channel");
        assert_eq!(PrecisionSpec::parse("bf16").unwrap().format.bits(), 16);
        assert_eq!(PrecisionSpec::parse("fp4").unwrap().format.bits(), 4);
        assert_eq!(PrecisionSpec::parse("fp6-e3m2").unwrap().name, "e3m2");
    }

    #[test]
    fn rejects_bad_names() {
        for bad in ["fp7", "e9m2", "e4m11", "int1", "int16", "bf16-b32", "e4m3-b0", "int"] {
            assert!(PrecisionSpec::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
