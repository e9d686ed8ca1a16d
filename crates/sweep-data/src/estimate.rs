//! How many training tokens a `[data]` section holds, estimated without reading, tokenizing or
//! downloading anything (for `sweep plan`, which warns when a point would repeat its text).
//! Built-in languages hold `builtin_bytes`; files their size on disk; hub sources are unknown
//! until downloaded. Bytes become tokens at one per byte for the byte tokenizer and, for BPE,
//! at the bytes per token measured on English prose (2.0 at V = 512, 3.4 at 4096, 4.3 at 32768;
//! interpolated in log V): an estimate, stated as one.

use std::path::Path;

use crate::config::{DataConfig, SourceConfig, TokenizerConfig};
use crate::source::{self, SourceKind};

/// The estimated training tokens of one source.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEstimate {
    /// Which source.
    pub source: SourceKind,
    /// Bytes of training text (validation share removed).
    pub bytes: f64,
    /// Bytes per token assumed.
    pub bytes_per_token: f64,
    /// Training tokens, `bytes / bytes_per_token`.
    pub tokens: f64,
}

/// Bytes per token of a tokenizer of `vocab_size` ids on English prose (see the module docs);
/// None for a given tokenizer file or hub tokenizer (unknown until applied).
pub fn bytes_per_token(tokenizer: &TokenizerConfig, vocab_size: usize) -> Option<f64> {
    match tokenizer {
        TokenizerConfig::Byte => Some(1.0),
        TokenizerConfig::Bpe => {
            let doublings = (vocab_size.max(257) as f64 / 512.0).log2();
            Some(if doublings <= 3.0 { 2.0 + 0.47 * doublings } else { 3.4 + 0.3 * (doublings - 3.0) })
        }
        _ => None,
    }
}

/// Estimated training tokens of each configured source whose size is known without a
/// download (relative paths from `base_dir`).
pub fn estimate_training_tokens(config: &DataConfig, base_dir: &Path, vocab_size: usize) -> Vec<TokenEstimate> {
    let Some(bpt) = bytes_per_token(&config.tokenizer, vocab_size) else { return Vec::new() };
    let mut out = Vec::new();
    for (name, src) in config.sources() {
        let kind = if name == "general" { SourceKind::General } else { SourceKind::Domain };
        let bytes = match src {
            SourceConfig::Builtin { .. } => Some(config.builtin_bytes as f64),
            SourceConfig::Files { paths, extensions } => {
                let exts: Vec<&str> = extensions.iter().map(|s| s.as_str()).collect();
                file_bytes(source::expand_paths(name, paths, base_dir, &exts).ok())
            }
            SourceConfig::Jsonl { paths, .. } => {
                file_bytes(source::expand_paths(name, paths, base_dir, &["jsonl", "json"]).ok())
            }
            SourceConfig::Parquet { paths, .. } => {
                file_bytes(source::expand_paths(name, paths, base_dir, &["parquet"]).ok())
            }
            SourceConfig::Hub { .. } => None,
        };
        if let Some(bytes) = bytes {
            let bytes = bytes * (1.0 - config.validation_fraction);
            out.push(TokenEstimate { source: kind, bytes, bytes_per_token: bpt, tokens: bytes / bpt });
        }
    }
    out
}

fn file_bytes(files: Option<Vec<std::path::PathBuf>>) -> Option<f64> {
    let files = files?;
    Some(files.iter().map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0) as f64).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpe_bytes_per_token_follows_the_measured_points() {
        for (v, want) in [(512, 2.0), (4096, 3.4), (32768, 4.3)] {
            let got = bytes_per_token(&TokenizerConfig::Bpe, v).unwrap();
            assert!((got - want).abs() < 0.02, "V {v}: {got}");
        }
        assert_eq!(bytes_per_token(&TokenizerConfig::Byte, 256), Some(1.0));
    }

    #[test]
    fn builtin_sources_are_estimated_from_their_size() {
        let table: toml::Value = toml::from_str(
            "general = { type = \"builtin\", language = \"prose\" }\ndomain = \"none\"\nbuiltin_bytes = 1_000_000\ntokenizer = \"byte\"",
        )
        .unwrap();
        let config = DataConfig::from_toml(table).unwrap();
        let e = estimate_training_tokens(&config, Path::new("."), 256);
        assert_eq!(e.len(), 1);
        assert!((e[0].tokens - 950_000.0).abs() < 1.0, "{e:?}");
    }
}
