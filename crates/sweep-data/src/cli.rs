//! Command-line entry points, as library functions the `sweep` binary wires up as
//! `sweep data sample` and `sweep data prepare`.

use std::io::Write;
use std::path::{Path, PathBuf};

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

/// `sweep data prepare --config FILE.toml [--vocab-size V ...] [--cache-dir DIR]`, for callers
/// without a planner: the vocabulary sizes come from `grid.vocab_size` or `model.vocab_size`.
#[derive(Debug, Clone)]
pub struct PrepareArgs {
    /// The sweep configuration; its `[data]` section and vocabulary sizes are read.
    pub config: PathBuf,
    /// Vocabulary sizes to prepare instead of the configuration's.
    pub vocab_sizes: Vec<usize>,
    /// The data cache (default `runs/cache/data`); pass the sweep's `<sweep dir>/cache/data` to
    /// share it with the sweep.
    pub cache_dir: Option<PathBuf>,
    /// Show progress bars.
    pub show_progress: bool,
}

/// Reads the `[data]` section and the vocabulary sizes (`grid.vocab_size`, a number or a list,
/// else `model.vocab_size`) of a configuration file.
pub fn read_config_file(path: &Path) -> Result<(DataConfig, Vec<usize>), DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let root: toml::Table = toml::from_str(&text).map_err(|e| {
        DataError::config(path.display().to_string(), format!("not valid TOML: {}", e.to_string().trim()))
    })?;
    let in_file = |e: DataError| match e {
        DataError::Config { key, message } => DataError::config(format!("{}: {key}", path.display()), message),
        other => other,
    };
    let config = match root.get("data") {
        Some(value) => DataConfig::from_toml(value.clone()).map_err(in_file)?,
        None => DataConfig::default(),
    };
    let (key, value) = match root.get("grid").and_then(|g| g.get("vocab_size")) {
        Some(v) => ("grid.vocab_size", Some(v)),
        None => ("model.vocab_size", root.get("model").and_then(|m| m.get("vocab_size"))),
    };
    let positive = |v: &toml::Value| match v {
        toml::Value::Integer(i) if *i > 0 => Ok(*i as usize),
        other => {
            Err(DataError::config(format!("{}: {key}", path.display()), format!("{other} is not a positive integer")))
        }
    };
    let vocab_sizes = match value {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items.iter().map(positive).collect::<Result<_, _>>()?,
        Some(v) => vec![positive(v)?],
    };
    Ok((config, vocab_sizes))
}

/// Runs [`prepare_all`] on a configuration file (see [`PrepareArgs`]).
pub fn prepare_command(args: &PrepareArgs, out: &mut dyn Write) -> Result<Vec<PreparedData>, DataError> {
    let (config, file_sizes) = read_config_file(&args.config)?;
    let vocab_sizes = if args.vocab_sizes.is_empty() { file_sizes } else { args.vocab_sizes.clone() };
    if vocab_sizes.is_empty() {
        return Err(DataError::config(
            format!("{}: grid.vocab_size", args.config.display()),
            "no vocabulary sizes: add grid.vocab_size = [...] or pass --vocab-size",
        ));
    }
    let cache_dir = args.cache_dir.clone().unwrap_or_else(|| PathBuf::from("runs/cache/data"));
    let base_dir = args
        .config
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    prepare_all(&config, &vocab_sizes, &cache_dir, &base_dir, args.show_progress, out)
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
    fn prepare_reads_the_data_section_and_the_grid_vocab_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.toml");
        std::fs::write(
            &path,
            "[grid]\nvocab_size = [300, 512]\n\n[data]\nbuiltin_bytes = 200_000\nvalidation_fraction = 0.2\ntokenizer_sample_bytes = 50_000\n",
        )
        .unwrap();
        let args = PrepareArgs {
            config: path.clone(),
            vocab_sizes: vec![],
            cache_dir: Some(dir.path().join("cache")),
            show_progress: false,
        };
        let mut out = Vec::new();
        let prepared = prepare_command(&args, &mut out).unwrap();
        assert_eq!(prepared.iter().map(|p| p.vocab_size()).collect::<Vec<_>>(), vec![300, 512]);
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("data cache:") && out.contains("general: builtin prose"), "{out}");
        assert_eq!(out.lines().filter(|l| l.trim_start().starts_with("512  domain")).count(), 1, "{out}");

        std::fs::write(&path, "[data]\nvalidation_fraction = 2.0\n").unwrap();
        let err = prepare_command(&args, &mut Vec::new()).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: data.validation_fraction", path.display())), "{err}");
        std::fs::write(&path, "[data]\nseed = 1\n").unwrap();
        let err = prepare_command(&args, &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("grid.vocab_size") && err.contains("--vocab-size"), "{err}");
        std::fs::write(&path, "[model]\nvocab_size = 777\n[grid]\nmodel = [\"tiny\"]\n").unwrap();
        assert_eq!(read_config_file(&path).unwrap().1, vec![777]);
        std::fs::write(&path, "[grid]\nvocab_size = [512, \"big\"]\n").unwrap();
        let err = read_config_file(&path).unwrap_err().to_string();
        assert!(err.contains("grid.vocab_size") && err.contains("\"big\" is not a positive integer"), "{err}");
    }
}
