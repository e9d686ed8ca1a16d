//! Precision names of the grid ("fp32", "bf16", "fp8-e4m3", "e3m2-b128", "int4-channel",
//! "mxfp4", "nvfp4", "e3m2-b64-ue8m0") and what they resolve to: a number format, a scaling
//! granularity, how each scale is stored, and the E/M/B variables of the floating-point
//! quantisation law.
//!
//! Block formats as hardware stores them:
//! - OCP MX v1.0 (`mxfp8-e4m3`, `mxfp8-e5m2`, `mxfp6-e3m2`, `mxfp6-e2m3`, `mxfp4`, `mxint8`): blocks
//!   of 32 along the last dimension, one E8M0 (power-of-two) scale per block ([`ScaleFormat::Ue8m0`]).
//! - NVFP4 (`nvfp4`): E2M1 elements in blocks of 16, each block's scale stored as E4M3, plus one
//!   f32 scale per tensor ([`ScaleFormat::Ue4m3`]).
//! - Any eXmY or intN with `-bN` and a scale-format suffix `-ue8m0`, `-ue4m3` or `-f32` (the
//!   default: an unrounded absmax scale).

use crate::config::QuantTarget;
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
    /// OCP MX integer elements: `bits`-bit two's complement with an implicit scale 2^-(bits-2)
    /// (MXINT8: values k/64, k in [-128, 127]).
    MxInt { bits: u32 },
}

impl NumberFormat {
    /// Total bits per element including the sign.
    pub fn bits(&self) -> u32 {
        match *self {
            NumberFormat::F32 => 32,
            NumberFormat::Bf16 | NumberFormat::F16 => 16,
            NumberFormat::Float { exp_bits, man_bits } => 1 + exp_bits + man_bits,
            NumberFormat::Int { bits } | NumberFormat::MxInt { bits } => bits,
        }
    }
    /// (exponent bits, mantissa bits) as the quantisation law counts them; integers have none.
    pub fn exp_man(&self) -> Option<(u32, u32)> {
        match *self {
            NumberFormat::F32 => Some((8, 23)),
            NumberFormat::Bf16 => Some((8, 7)),
            NumberFormat::F16 => Some((5, 10)),
            NumberFormat::Float { exp_bits, man_bits } => Some((exp_bits, man_bits)),
            NumberFormat::Int { .. } | NumberFormat::MxInt { .. } => None,
        }
    }
    /// Whether training in this format needs fake quantisation (not a native dtype).
    pub fn is_simulated(&self) -> bool {
        matches!(self, NumberFormat::Float { .. } | NumberFormat::Int { .. } | NumberFormat::MxInt { .. })
    }
    /// The canonical spelling: `fp32`, `bf16`, `fp16`, `e4m3`, `int4`.
    pub fn canonical(&self) -> String {
        match *self {
            NumberFormat::F32 => "fp32".into(),
            NumberFormat::Bf16 => "bf16".into(),
            NumberFormat::F16 => "fp16".into(),
            NumberFormat::Float { exp_bits, man_bits } => format!("e{exp_bits}m{man_bits}"),
            NumberFormat::Int { bits } => format!("int{bits}"),
            NumberFormat::MxInt { bits } => format!("mxint{bits}"),
        }
    }
}

/// How each group's scale is stored, which decides how it is rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleFormat {
    /// An unrounded scale amax / max (f32 scaling; what per-tensor FP8 recipes store).
    #[default]
    F32,
    /// OCP MX E8M0: the power of two 2^(floor(log2 amax) - emax_elem), clamped to 2^[-127, 127]
    /// (the group's largest values may saturate to the element format's max).
    Ue8m0,
    /// NVFP4 style: a per-tensor f32 scale s = amax_tensor / (448 max_elem), and per group the
    /// scale amax_group / max_elem / s rounded to E4M3 (clamped to [2^-9, 448]); the group is
    /// divided by (E4M3 scale) s.
    Ue4m3,
}

impl ScaleFormat {
    /// Whether this is the default (f32) scale format; such specs serialise without the field,
    /// so points planned before scale formats existed keep their ids.
    pub fn is_f32(&self) -> bool {
        *self == ScaleFormat::F32
    }
    /// The name suffix: `ue8m0`, `ue4m3`, `f32`.
    pub fn suffix(&self) -> &'static str {
        match self {
            ScaleFormat::F32 => "f32",
            ScaleFormat::Ue8m0 => "ue8m0",
            ScaleFormat::Ue4m3 => "ue4m3",
        }
    }
    /// Bits each stored scale takes (for the bits-per-element count).
    pub fn bits(&self) -> u32 {
        match self {
            ScaleFormat::F32 => 32,
            ScaleFormat::Ue8m0 | ScaleFormat::Ue4m3 => 8,
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
    /// How each scale is stored (f32 unless the name says otherwise).
    #[serde(default, skip_serializing_if = "ScaleFormat::is_f32")]
    pub scale: ScaleFormat,
    /// A grid value that names a format per target (`{ weights = "int4", activations = "int8" }`):
    /// those targets and formats, in place of `[precision]`'s; empty for a plain name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_target: Vec<(QuantTarget, PrecisionSpec)>,
}

/// The precision names the planner understands, for error messages.
pub const ALLOWED: &str = "fp32, bf16, fp16, fp8-e4m3, fp8-e5m2, fp6-e3m2, fp6-e2m3, fp4-e2m1 (or fp4), \
any eXmY with X in 1..=8 and Y in 0..=10 (e.g. e3m2), int8, int4, int2 (any intN, N in 2..=8); \
the block formats mxfp8-e4m3, mxfp8-e5m2, mxfp6-e3m2, mxfp6-e2m3, mxfp4, mxint8 (OCP MX: blocks of 32, \
E8M0 scales) and nvfp4 (E2M1, blocks of 16, E4M3 scales and a per-tensor f32 scale); \
optional suffix -bN (block of N elements), -channel or -tensor, then optionally the scale format \
-ue8m0, -ue4m3 or -f32 (e.g. e3m2-b64-ue8m0)";

/// The named block formats: (name, format, block size, scale format).
const NAMED_BLOCK_FORMATS: &[(&str, NumberFormat, u32, ScaleFormat)] = &[
    ("mxfp8-e4m3", NumberFormat::Float { exp_bits: 4, man_bits: 3 }, 32, ScaleFormat::Ue8m0),
    ("mxfp8-e5m2", NumberFormat::Float { exp_bits: 5, man_bits: 2 }, 32, ScaleFormat::Ue8m0),
    ("mxfp6-e3m2", NumberFormat::Float { exp_bits: 3, man_bits: 2 }, 32, ScaleFormat::Ue8m0),
    ("mxfp6-e2m3", NumberFormat::Float { exp_bits: 2, man_bits: 3 }, 32, ScaleFormat::Ue8m0),
    ("mxfp4", NumberFormat::Float { exp_bits: 2, man_bits: 1 }, 32, ScaleFormat::Ue8m0),
    ("mxint8", NumberFormat::MxInt { bits: 8 }, 32, ScaleFormat::Ue8m0),
    ("nvfp4", NumberFormat::Float { exp_bits: 2, man_bits: 1 }, 16, ScaleFormat::Ue4m3),
];

impl PrecisionSpec {
    /// Parses a grid precision name; the error says what is allowed.
    pub fn parse(raw: &str) -> Result<PrecisionSpec, String> {
        let lower = raw.trim().to_ascii_lowercase();
        let alias = match lower.as_str() {
            "mxfp8" => "mxfp8-e4m3",
            "mxfp6" => "mxfp6-e3m2",
            "mxfp4-e2m1" => "mxfp4",
            other => other,
        };
        if let Some(&(name, format, block, scale)) = NAMED_BLOCK_FORMATS.iter().find(|f| f.0 == alias) {
            return Ok(PrecisionSpec {
                name: name.into(),
                format,
                scaling: Scaling::Block(block),
                scale,
                per_target: Vec::new(),
            });
        }
        let mut parts: Vec<&str> = lower.split('-').collect();
        let mut scaling = Scaling::Tensor;
        let mut scale = ScaleFormat::F32;
        let mut scale_given = false;
        if parts.len() > 1 {
            let parsed = match *parts.last().unwrap() {
                "ue8m0" | "e8m0" => Some(ScaleFormat::Ue8m0),
                "ue4m3" => Some(ScaleFormat::Ue4m3),
                "f32" => Some(ScaleFormat::F32),
                _ => None,
            };
            if let Some(s) = parsed {
                scale = s;
                scale_given = true;
                parts.pop();
            }
        }
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
                .or_else(|| parse_mxint(other))
                .ok_or_else(|| format!("unknown precision {raw:?}; allowed: {ALLOWED}"))??,
        };
        if !format.is_simulated() && scaling != Scaling::Tensor {
            return Err(format!(
                "precision {raw:?}: a block or channel suffix only applies to simulated formats (eXmY, intN)"
            ));
        }
        if scale_given && !format.is_simulated() {
            return Err(format!(
                "precision {raw:?}: a scale format (-ue8m0, -ue4m3, -f32) only applies to simulated formats (eXmY, intN)"
            ));
        }
        Ok(PrecisionSpec::new(format, scaling, scale))
    }

    /// The spec of a format, scaling and scale format, with its canonical name (the MX and
    /// NVFP4 names where the spec is one of those formats).
    pub fn new(format: NumberFormat, scaling: Scaling, scale: ScaleFormat) -> PrecisionSpec {
        if let Some(named) =
            NAMED_BLOCK_FORMATS.iter().find(|f| (f.1, Scaling::Block(f.2), f.3) == (format, scaling, scale))
        {
            return PrecisionSpec { name: named.0.into(), format, scaling, scale, per_target: Vec::new() };
        }
        let mut name = format.canonical();
        match scaling {
            Scaling::Tensor => {}
            Scaling::Channel => name.push_str("-channel"),
            Scaling::Block(b) => name.push_str(&format!("-b{b}")),
        }
        if !scale.is_f32() {
            name.push('-');
            name.push_str(scale.suffix());
        }
        PrecisionSpec { name, format, scaling, scale, per_target: Vec::new() }
    }

    /// A grid value naming a format per target, e.g. `{ weights = "int4", activations = "int8",
    /// kv = "int6" }`: the listed targets are quantised to their formats (`fp32` leaves one
    /// unquantised) and the others stay in fp32; the value's format for the laws' exp_bits,
    /// man_bits, bits and block_size is the weights' (fp32 when weights are not listed). Its
    /// name lists the targets: `weights=int4,activations=int8,kv=int6`.
    pub fn parse_per_target(table: &toml::Table) -> Result<PrecisionSpec, String> {
        let names: Vec<String> = QuantTarget::ALL.iter().map(target_key).collect();
        let mut per_target = Vec::new();
        for (key, value) in table {
            let Some(target) = QuantTarget::ALL.iter().copied().find(|t| target_key(t) == *key) else {
                return Err(format!(
                    "unknown target {key:?}{}; a per-target precision names targets among {}",
                    crate::error::did_you_mean(key, names.iter().map(|n| n.as_str())),
                    names.join(", ")
                ));
            };
            let toml::Value::String(name) = value else {
                return Err(format!("{key}: expected a precision name such as \"int4\""));
            };
            let spec = PrecisionSpec::parse(name).map_err(|m| format!("{key}: {m}"))?;
            if !spec.format.is_simulated() && spec.format != NumberFormat::F32 {
                return Err(format!(
                    "{key} = {name:?}: a per-target format is a simulated one (eXmY, intN, MX, NVFP4) or fp32"
                ));
            }
            per_target.push((target, spec));
        }
        if per_target.is_empty() {
            return Err("an empty table: name at least one target, e.g. { weights = \"int4\" }".into());
        }
        per_target.sort_by_key(|(t, _)| QuantTarget::ALL.iter().position(|a| a == t));
        let base = per_target
            .iter()
            .find(|(t, _)| *t == QuantTarget::Weights)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| PrecisionSpec::parse("fp32").expect("fp32 parses"));
        let name =
            per_target.iter().map(|(t, s)| format!("{}={}", target_key(t), s.name)).collect::<Vec<_>>().join(",");
        per_target.retain(|(_, s)| s.format.is_simulated());
        Ok(PrecisionSpec { name, per_target, ..base })
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

/// A target's key in configs (`weights`, `grad_output`, ...).
fn target_key(t: &QuantTarget) -> String {
    serde_json::to_value(t).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn parse_mxint(s: &str) -> Option<Result<NumberFormat, String>> {
    let bits: u32 = s.strip_prefix("mxint")?.parse().ok()?;
    if !(2..=8).contains(&bits) {
        return Some(Err(format!("mxint{bits}: integer bits must be in 2..=8")));
    }
    Some(Ok(NumberFormat::MxInt { bits }))
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
    fn parses_block_format_names() {
        let mx = PrecisionSpec::parse("MXFP4").unwrap();
        assert_eq!(mx.format, NumberFormat::Float { exp_bits: 2, man_bits: 1 });
        assert_eq!((mx.scaling, mx.scale, mx.name.as_str()), (Scaling::Block(32), ScaleFormat::Ue8m0, "mxfp4"));
        let nv = PrecisionSpec::parse("nvfp4").unwrap();
        assert_eq!((nv.scaling, nv.scale, nv.law_block_size()), (Scaling::Block(16), ScaleFormat::Ue4m3, 16.0));
        assert_eq!(PrecisionSpec::parse("mxint8").unwrap().format, NumberFormat::MxInt { bits: 8 });
        assert_eq!(PrecisionSpec::parse("mxfp8").unwrap().name, "mxfp8-e4m3");
        // The generic spelling of a named format gets the name; other combinations keep theirs.
        assert_eq!(PrecisionSpec::parse("e2m1-b32-ue8m0").unwrap().name, "mxfp4");
        assert_eq!(PrecisionSpec::parse("fp8-e5m2-b32-ue8m0").unwrap().name, "mxfp8-e5m2");
        let g = PrecisionSpec::parse("e3m2-b64-ue8m0").unwrap();
        assert_eq!((g.name.as_str(), g.scaling, g.scale), ("e3m2-b64-ue8m0", Scaling::Block(64), ScaleFormat::Ue8m0));
        assert_eq!(PrecisionSpec::parse("e2m1-b16-ue4m3").unwrap().name, "nvfp4");
        assert_eq!(PrecisionSpec::parse("e4m3-b128-f32").unwrap().name, "e4m3-b128");
        assert_eq!(PrecisionSpec::parse("int4-channel-ue8m0").unwrap().name, "int4-channel-ue8m0");
        // Specs without a scale format serialise as before (so point ids do not change).
        let json = serde_json::to_string(&PrecisionSpec::parse("e4m3-b32").unwrap()).unwrap();
        assert!(!json.contains("scale\""), "{json}");
        assert!(serde_json::to_string(&mx).unwrap().contains("\"scale\":\"ue8m0\""));
    }

    #[test]
    fn parses_per_target_values() {
        let t: toml::Table = toml::from_str("weights = \"int4\"\nkv = \"fp8-e4m3\"\nactivations = \"fp32\"").unwrap();
        let p = PrecisionSpec::parse_per_target(&t).unwrap();
        assert_eq!(p.name, "weights=int4,activations=fp32,kv=e4m3");
        assert_eq!(p.format, NumberFormat::Int { bits: 4 }, "the weights' format stands for the value");
        let targets: Vec<QuantTarget> = p.per_target.iter().map(|(t, _)| *t).collect();
        assert_eq!(targets, [QuantTarget::Weights, QuantTarget::Kv], "fp32 leaves activations unquantised");
        let t: toml::Table = toml::from_str("activations = \"int8\"").unwrap();
        assert_eq!(PrecisionSpec::parse_per_target(&t).unwrap().format, NumberFormat::F32);
        for (bad, why) in [
            ("wieghts = \"int4\"", "did you mean \"weights\""),
            ("weights = 4", "expected a precision name"),
            ("weights = \"bf16\"", "simulated one"),
            ("weights = \"int77\"", "weights:"),
        ] {
            let t: toml::Table = toml::from_str(bad).unwrap();
            let err = PrecisionSpec::parse_per_target(&t).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for bad in
            ["fp7", "e9m2", "e4m11", "int1", "int16", "bf16-b32", "e4m3-b0", "int", "bf16-ue8m0", "mxint9", "fp32-f32"]
        {
            assert!(PrecisionSpec::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
