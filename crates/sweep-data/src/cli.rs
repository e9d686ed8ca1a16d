//! Command-line entry points, as library functions the `sweep` binary wires up as
//! `sweep data sample` and `sweep data prepare` (which reads `[data]` and the vocabulary sizes
//! through the planner, as a sweep does).

use std::io::Write;
use std::path::Path;

use crate::config::DataConfig;
use crate::error::DataError;
use crate::hub::HubSettings;
use crate::language::Language;
use crate::prepare::{prepare_with, PrepareOptions, PreparedData};

/// `sweep data sample --language prose --bytes 2000 [--seed S]`.
#[derive(Debug, Clone)]
pub struct SampleArgs {
    /// The built-in language.
    pub language: Language,
    /// About how many bytes of text to print (whole words).
    pub bytes: usize,
    /// Which text.
    pub seed: u64,
}

/// Writes sampled text to `text_out` and the language's exact entropy to `info_out`.
pub fn sample(args: &SampleArgs, text_out: &mut dyn Write, info_out: &mut dyn Write) -> Result<(), DataError> {
    let automaton = args.language.automaton();
    let text = automaton.sample_text(args.seed, args.bytes);
    let io = |e| DataError::io("<stdout>", e);
    text_out.write_all(text.as_bytes()).map_err(io)?;
    if !text.ends_with('\n') {
        text_out.write_all(b"\n").map_err(io)?;
    }
    let rate = automaton.entropy_rate();
    writeln!(
        info_out,
        "language {}: exact entropy {:.6} nats/byte, {:.6} nats/word ({:.4} bytes/word); {} states, {} emissions",
        args.language,
        rate.nats_per_byte,
        rate.nats_per_word,
        rate.bytes_per_word,
        automaton.state_count(),
        automaton.emission_count()
    )
    .map_err(io)
}

/// Builds the tokenizer and shards for every vocabulary size and prints bytes per token per
/// source and V, shard sizes and the cache location. Returns the prepared data per V.
pub fn prepare_all(
    config: &DataConfig,
    vocab_sizes: &[usize],
    cache_dir: &Path,
    base_dir: &Path,
    show_progress: bool,
    out: &mut dyn Write,
) -> Result<Vec<PreparedData>, DataError> {
    let io = |e| DataError::io("<stdout>", e);
    writeln!(out, "data cache: {}", cache_dir.display()).map_err(io)?;
    for (name, source) in config.sources() {
        writeln!(out, "{name}: {}", source.describe()).map_err(io)?;
    }
    writeln!(
        out,
        "{:>7}  {:<8} {:>14} {:>12} {:>11} {:>11} {:>10} {:>16}",
        "V", "source", "docs train/val", "train tokens", "val tokens", "bytes/token", "shard MB", "entropy nats/B"
    )
    .map_err(io)?;
    let mut prepared = Vec::new();
    for &v in vocab_sizes {
        let options = PrepareOptions {
            vocab_size: v,
            cache_dir: cache_dir.to_path_buf(),
            base_dir: base_dir.to_path_buf(),
            hub: HubSettings { show_progress, ..HubSettings::from_env() },
            show_progress,
        };
        let data = prepare_with(config, &options)?;
        for source in data.sources() {
            let s = &source.stats;
            let megabytes = (source.train.len() + source.validation.len()) as f64 * s.width.bytes() as f64 / 1e6;
            writeln!(
                out,
                "{:>7}  {:<8} {:>14} {:>12} {:>11} {:>11.3} {:>10.2} {:>16}",
                v,
                s.source.name(),
                format!("{}/{}", s.train.documents, s.validation.documents),
                s.train.tokens,
                s.validation.tokens,
                s.validation.bytes_per_token(),
                megabytes,
                s.entropy_nats_per_byte.map_or("-".to_string(), |h| format!("{h:.6}"))
            )
            .map_err(io)?;
        }
        if let Some(path) = data.tokenizer_path() {
            writeln!(out, "{:>7}  tokenizer {} ({} ids)", v, path.display(), data.tokenizer().id_count())
                .map_err(io)?;
        }
        prepared.push(data);
    }
    Ok(prepared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_prints_text_and_the_exact_entropy() {
        let (mut text, mut info) = (Vec::new(), Vec::new());
        let args = SampleArgs { language: Language::Code, bytes: 2000, seed: 4 };
        sample(&args, &mut text, &mut info).unwrap();
        let text = String::from_utf8(text).unwrap();
        let expected = Language::Code.automaton().sample_text(4, 2000);
        assert!(expected.len() >= 2000 && expected.starts_with("use "), "{expected}");
        assert_eq!(text.trim_end_matches('\n'), expected.trim_end_matches('\n'));
        let info = String::from_utf8(info).unwrap();
        let expected = format!("{:.6} nats/byte", Language::Code.entropy().nats_per_byte);
        assert!(info.contains(&expected) && info.contains("nats/word"), "{info}");
    }

    #[test]
    fn prepare_all_builds_every_vocab_size_and_reports_it() {
        let dir = tempfile::tempdir().unwrap();
        let section = "builtin_bytes = 200_000\nvalidation_fraction = 0.2\ntokenizer_sample_bytes = 50_000\n";
        let config = DataConfig::from_toml(toml::from_str(section).unwrap()).unwrap();
        let mut out = Vec::new();
        let prepared =
            prepare_all(&config, &[300, 512], &dir.path().join("cache"), dir.path(), false, &mut out).unwrap();
        assert_eq!(prepared.iter().map(|p| p.vocab_size()).collect::<Vec<_>>(), vec![300, 512]);
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("data cache:") && out.contains("general: builtin prose"), "{out}");
        assert_eq!(out.lines().filter(|l| l.trim_start().starts_with("512  domain")).count(), 1, "{out}");
    }
}
