//! Sustained training speed for `sweep plan`'s time estimates, from measurements: a rate is the
//! Chinchilla-counted FLOP/s a device kind sustained while training a model of a given size
//! (FLOPs per token) in a given precision. Small models run far below a device's peak (launch
//! and memory bound), so a point's rate is interpolated between measured sizes (linear in
//! log-log, clamped at the ends) rather than taken as one number per device.
//!
//! Rates come from, in order: `[sweep] flops_per_second` in the config; rates recorded on this
//! machine by `sweep bench train --record` (a JSON-lines file: `$SWEEP_RATES`, else
//! `$XDG_CONFIG_HOME/sweep/rates.jsonl` or `~/.config/sweep/rates.jsonl`); the built-in rates
//! below (measured in this repository's benchmarks); a fixed default per device kind.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One measured rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    /// Device kind: `cpu`, `cuda` or `metal` (the index of `cuda:N` is dropped).
    pub device: String,
    /// Precision name as in the grid (`fp32`, `bf16`, `fp8-e4m3`, ...).
    pub precision: String,
    /// Chinchilla-counted training FLOPs per token of the measured model.
    pub flops_per_token: f64,
    /// Sustained training FLOP/s (tokens/s times FLOPs per token).
    pub flops_per_second: f64,
    /// Where the number comes from (benchmark file or command, machine, date).
    pub source: String,
}

/// The device kind of a device name: `cuda:1` -> `cuda`.
pub fn device_kind(device: &str) -> &str {
    device.split(':').next().unwrap_or(device)
}

const H200: &str = "benches/results/2026-11-25-gpu-h200-kernels.jsonl (H200, composed path with the CUDA kernels)";

/// Rates measured in this repository's benchmarks (`sweep bench train`, SMALL and MEDIUM shapes
/// of docs/benchmarks.md).
pub fn builtin() -> Vec<Rate> {
    let row = |precision: &str, flops_per_token: f64, tokens_per_second: f64| Rate {
        device: "cuda".into(),
        precision: precision.into(),
        flops_per_token,
        flops_per_second: flops_per_token * tokens_per_second,
        source: H200.into(),
    };
    let (small, medium) = (33_441_792.0, 1_060_700_160.0);
    vec![
        row("fp32", small, 86_727.0),
        row("fp32", medium, 27_753.0),
        row("bf16", small, 81_442.0),
        row("bf16", medium, 30_341.0),
        row("fp8-e4m3", small, 95_145.0),
        row("fp8-e4m3", medium, 25_394.0),
    ]
}

/// A fixed default by device kind, when nothing was measured.
pub fn default_flops_per_second(device: &str) -> f64 {
    match device_kind(device) {
        "cuda" => 5e13,
        "metal" => 5e12,
        _ => 2.5e10,
    }
}

/// The file `sweep bench train --record` appends to.
pub fn recorded_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SWEEP_RATES") {
        return Some(PathBuf::from(p));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(config.join("sweep").join("rates.jsonl"))
}

/// Rates recorded on this machine (none when the file is missing; unreadable lines are skipped).
pub fn recorded() -> Vec<Rate> {
    let Some(path) = recorded_file() else { return Vec::new() };
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Appends a measured rate to [`recorded_file`]; returns the file.
pub fn record(rate: &Rate) -> std::io::Result<PathBuf> {
    use std::io::Write;
    let path = recorded_file().ok_or_else(|| std::io::Error::other("no $SWEEP_RATES or $HOME to record rates in"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    writeln!(f, "{}", serde_json::to_string(rate).map_err(std::io::Error::other)?)?;
    Ok(path)
}

/// The rates a plan estimates from: recorded ones, then the built-in ones.
#[derive(Debug, Clone)]
pub struct Rates {
    recorded: Vec<Rate>,
    builtin: Vec<Rate>,
}

impl Rates {
    /// Recorded rates (this machine) and the built-in ones.
    pub fn load() -> Self {
        Rates::from_rows(recorded(), builtin())
    }

    /// Rates from given rows: for a device kind, recorded rows replace the built-in ones.
    pub fn from_rows(recorded: Vec<Rate>, builtin: Vec<Rate>) -> Self {
        Rates { recorded, builtin }
    }

    /// The rows that apply to `device` and `precision`: the recorded rows of the device kind if
    /// any, else the built-in ones; of those the precision's rows, else the fp32 rows, else all.
    fn rows_for(&self, device: &str, precision: &str) -> Vec<&Rate> {
        let kind = device_kind(device);
        let mut source_rows: Vec<&Rate> = self.recorded.iter().filter(|r| r.device == kind).collect();
        if source_rows.is_empty() {
            source_rows = self.builtin.iter().filter(|r| r.device == kind).collect();
        }
        let pick = |p: &str| source_rows.iter().copied().filter(|r| r.precision == p).collect::<Vec<_>>();
        let exact = pick(precision);
        if !exact.is_empty() {
            return exact;
        }
        let fp32 = pick("fp32");
        if !fp32.is_empty() {
            return fp32;
        }
        source_rows
    }

    /// Estimated sustained FLOP/s for a model of `flops_per_token` trained in `precision` on
    /// `device`, and where it comes from; None when nothing was measured for the device kind.
    pub fn estimate(&self, device: &str, precision: &str, flops_per_token: f64) -> Option<(f64, &str)> {
        let mut rows = self.rows_for(device, precision);
        rows.retain(|r| r.flops_per_token > 0.0 && r.flops_per_second > 0.0);
        rows.sort_by(|a, b| a.flops_per_token.total_cmp(&b.flops_per_token));
        let (first, last) = (rows.first()?, rows.last()?);
        let source = first.source.as_str();
        if flops_per_token <= first.flops_per_token {
            return Some((first.flops_per_second, source));
        }
        if flops_per_token >= last.flops_per_token {
            return Some((last.flops_per_second, source));
        }
        let x = flops_per_token.ln();
        for w in rows.windows(2) {
            let (a, b) = (w[0], w[1]);
            if x <= b.flops_per_token.ln() {
                let f = (x - a.flops_per_token.ln()) / (b.flops_per_token.ln() - a.flops_per_token.ln()).max(1e-300);
                let y = a.flops_per_second.ln() + f * (b.flops_per_second.ln() - a.flops_per_second.ln());
                return Some((y.exp(), source));
            }
        }
        Some((last.flops_per_second, source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(device: &str, precision: &str, fpt: f64, fps: f64, source: &str) -> Rate {
        Rate {
            device: device.into(),
            precision: precision.into(),
            flops_per_token: fpt,
            flops_per_second: fps,
            source: source.into(),
        }
    }

    #[test]
    fn interpolates_in_log_log_and_clamps() {
        let r =
            Rates::from_rows(vec![rate("cuda", "fp32", 1e7, 1e12, "a"), rate("cuda", "fp32", 1e9, 1e14, "b")], vec![]);
        let mid = r.estimate("cuda:3", "fp32", 1e8).unwrap().0;
        assert!((mid / 1e13 - 1.0).abs() < 1e-9, "{mid}");
        assert_eq!(r.estimate("cuda:0", "fp32", 1e5).unwrap().0, 1e12);
        assert_eq!(r.estimate("cuda:0", "fp32", 1e11).unwrap().0, 1e14);
        // Another precision falls back to fp32; another device kind has no estimate.
        assert_eq!(r.estimate("cuda:0", "bf16", 1e5).unwrap().0, 1e12);
        assert!(r.estimate("metal", "fp32", 1e8).is_none());
    }

    #[test]
    fn recorded_rows_replace_the_built_in_ones_for_their_device() {
        let r = Rates::from_rows(vec![rate("cuda", "bf16", 1e8, 7e13, "recorded")], builtin());
        assert_eq!(r.estimate("cuda:0", "bf16", 1e6), Some((7e13, "recorded")));
        // fp32 has no recorded row: the recorded source's other rows stand in for it.
        assert_eq!(r.estimate("cuda:0", "fp32", 1e6), Some((7e13, "recorded")));
    }

    #[test]
    fn built_in_rates_reproduce_the_benchmark() {
        let r = Rates::from_rows(vec![], builtin());
        let (fps, _) = r.estimate("cuda:0", "bf16", 1_060_700_160.0).unwrap();
        assert!((fps / 1_060_700_160.0 - 30_341.0).abs() < 1e-6);
    }
}
