//! From a `[data]` configuration and a vocabulary size to memory-mapped token shards: resolve the
//! sources, get the tokenizer (train, load or download), tokenize every source once into train and
//! validation shards, all cached under the caller's cache directory.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cache;
use crate::config::{DataConfig, TokenizerConfig};
use crate::error::DataError;
use crate::hub::{self, HubSettings};
use crate::rng::{hash_bytes, hash_words};
use crate::sampler::{MixtureSampler, ValidationSet};
use crate::shard::{ShardWriter, TokenShard, TokenWidth};
use crate::source::{self, ResolvedSource, SkipReport, SourceKind};
use crate::tokenizer::{bpe_cache_path, TextTokenizer, MIN_BPE_VOCAB};

/// Bump when the shard layout or the split rule changes, so old cache entries are not reused.
const SHARD_FORMAT: u32 = 1;

/// Everything [`prepare_with`] needs besides the `[data]` configuration.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// The point's vocabulary size: every token id will be below it.
    pub vocab_size: usize,
    /// The shared data cache (the sweep passes `<sweep dir>/cache/data`).
    pub cache_dir: PathBuf,
    /// Relative paths in the configuration start here (the config file's directory).
    pub base_dir: PathBuf,
    /// Where the Hugging Face Hub and its cache are.
    pub hub: HubSettings,
    /// Show progress bars while tokenizing.
    pub show_progress: bool,
}

impl PrepareOptions {
    /// Options with paths relative to the working directory and hub settings from the environment.
    pub fn new(vocab_size: usize, cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            vocab_size,
            cache_dir: cache_dir.into(),
            base_dir: PathBuf::from("."),
            hub: HubSettings::from_env(),
            show_progress: false,
        }
    }
}

/// Sizes of one split of one source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitStats {
    /// Documents in the split.
    pub documents: u64,
    /// UTF-8 bytes of text in the split.
    pub bytes: u64,
    /// Tokens in the shard (end-of-text separators included: they are predicted too).
    pub tokens: u64,
}

impl SplitStats {
    /// Bytes of text per token: divide a loss per token by this to get a loss per byte.
    pub fn bytes_per_token(&self) -> f64 {
        if self.tokens == 0 {
            0.0
        } else {
            self.bytes as f64 / self.tokens as f64
        }
    }
}

/// What is known about one prepared source (saved as `meta.json` beside its shards).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceStats {
    /// `general` or `domain`.
    pub source: SourceKind,
    /// Where the text came from.
    pub description: String,
    /// The training split.
    pub train: SplitStats,
    /// The held-out validation split.
    pub validation: SplitStats,
    /// Exact entropy rate in nats per byte for built-in languages; `None` for real text.
    pub entropy_nats_per_byte: Option<f64>,
    /// Documents skipped while reading.
    pub skipped: SkipReport,
    /// Identity of the tokenizer that made the shards.
    pub tokenizer: String,
    /// Bytes per token id in the shard files.
    pub width: TokenWidth,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ShardMeta {
    format: u32,
    fingerprint: String,
    stats: SourceStats,
}

/// One source's shards and statistics.
#[derive(Debug, Clone)]
pub struct PreparedSource {
    /// Sizes, bytes per token and entropy.
    pub stats: SourceStats,
    /// Training tokens.
    pub train: TokenShard,
    /// Validation tokens.
    pub validation: TokenShard,
    /// The cache directory holding the shards.
    pub dir: PathBuf,
}

/// Tokenized sources, ready to give batches.
#[derive(Debug, Clone)]
pub struct PreparedData {
    tokenizer: TextTokenizer,
    tokenizer_path: Option<PathBuf>,
    vocab_size: usize,
    sources: Vec<PreparedSource>,
}

impl PreparedData {
    /// The vocabulary size asked for: every id in every shard is below it.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The tokenizer that made the shards.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The cached or given `tokenizer.json` (none for the byte tokenizer).
    pub fn tokenizer_path(&self) -> Option<&Path> {
        self.tokenizer_path.as_deref()
    }

    /// The prepared sources (general first).
    pub fn sources(&self) -> &[PreparedSource] {
        &self.sources
    }

    /// One source, if configured.
    pub fn source(&self, kind: SourceKind) -> Option<&PreparedSource> {
        self.sources.iter().find(|s| s.stats.source == kind)
    }

    /// Validation bytes per token of a source (to report validation loss per byte).
    pub fn bytes_per_token(&self, kind: SourceKind) -> Option<f64> {
        self.source(kind).map(|s| s.stats.validation.bytes_per_token())
    }

    /// The exact entropy in nats per byte of a built-in source (`None` for real text).
    pub fn entropy_nats_per_byte(&self, kind: SourceKind) -> Option<f64> {
        self.source(kind).and_then(|s| s.stats.entropy_nats_per_byte)
    }

    /// A training batch sampler: a fraction `mixture_ratio` of rows from the domain source.
    pub fn sampler(
        &self,
        mixture_ratio: f64,
        batch_size: usize,
        context_length: usize,
        seed: u64,
    ) -> Result<MixtureSampler, DataError> {
        MixtureSampler::new(
            self.source(SourceKind::General).map(|s| s.train.clone()),
            self.source(SourceKind::Domain).map(|s| s.train.clone()),
            mixture_ratio,
            batch_size,
            context_length,
            seed,
        )
    }

    /// The validation windows of one source, in fixed order.
    pub fn validation(
        &self,
        kind: SourceKind,
        batch_size: usize,
        context_length: usize,
    ) -> Result<ValidationSet, DataError> {
        let source = self
            .source(kind)
            .ok_or_else(|| DataError::Sampler(format!("no {kind} source is configured (set data.{kind})")))?;
        ValidationSet::new(kind, source.validation.clone(), batch_size, context_length)
    }
}

/// Prepares the data of a point: `vocab_size` ids, cache in `cache_dir`, relative paths from
/// the working directory, hub settings from the environment.
pub fn prepare(
    config: &DataConfig,
    vocab_size: usize,
    cache_dir: &Path,
    show_progress: bool,
) -> Result<PreparedData, DataError> {
    let mut options = PrepareOptions::new(vocab_size, cache_dir);
    options.show_progress = show_progress;
    options.hub.show_progress = show_progress;
    prepare_with(config, &options)
}

/// Prepares the data of a point with explicit options.
pub fn prepare_with(config: &DataConfig, options: &PrepareOptions) -> Result<PreparedData, DataError> {
    config.validate()?;
    let resolved: Vec<ResolvedSource> = config
        .sources()
        .map(|(name, source)| {
            let kind = if name == "general" { SourceKind::General } else { SourceKind::Domain };
            source::resolve(kind, source, config, &options.base_dir, &options.hub)
        })
        .collect::<Result<_, _>>()?;
    let (tokenizer, tokenizer_path) = tokenizer_for(config, options, &resolved)?;
    if tokenizer.id_count() > options.vocab_size {
        return Err(DataError::VocabularyTooSmall {
            vocab_size: options.vocab_size,
            minimum: tokenizer.id_count(),
            tokenizer: tokenizer.description().to_string(),
            why: "the tokenizer's ids must all be below vocab_size".into(),
        });
    }
    let width = TokenWidth::for_id_count(options.vocab_size);
    let mut sources = Vec::new();
    for source in &resolved {
        sources.push(prepared_source(source, config, options, &tokenizer, width)?);
    }
    Ok(PreparedData { tokenizer, tokenizer_path, vocab_size: options.vocab_size, sources })
}

fn tokenizer_for(
    config: &DataConfig,
    options: &PrepareOptions,
    sources: &[ResolvedSource],
) -> Result<(TextTokenizer, Option<PathBuf>), DataError> {
    let v = options.vocab_size;
    match &config.tokenizer {
        TokenizerConfig::Byte => {
            if v < 256 {
                return Err(DataError::VocabularyTooSmall {
                    vocab_size: v,
                    minimum: 256,
                    tokenizer: "byte".into(),
                    why: "one id per byte value".into(),
                });
            }
            Ok((TextTokenizer::byte(), None))
        }
        TokenizerConfig::File(path) => {
            let path = options.base_dir.join(path);
            if !path.is_file() {
                return Err(DataError::config(
                    "data.tokenizer.file",
                    format!("{} does not exist; give the path of a tokenizer.json", path.display()),
                ));
            }
            Ok((TextTokenizer::from_file(&path)?, Some(path)))
        }
        TokenizerConfig::Hub { repo, revision } => {
            let path = hub::model_file(&options.hub, repo, revision, "tokenizer.json")?;
            let tokenizer = TextTokenizer::from_file(&path)?.with_description(format!("hub {repo}@{revision}"));
            Ok((tokenizer, Some(path)))
        }
        TokenizerConfig::Bpe => {
            if v < MIN_BPE_VOCAB {
                return Err(DataError::VocabularyTooSmall {
                    vocab_size: v,
                    minimum: MIN_BPE_VOCAB,
                    tokenizer: "bpe".into(),
                    why: "256 byte symbols plus the special token <|endoftext|>; use tokenizer = \"byte\" for 256"
                        .into(),
                });
            }
            let mut identity = format!(
                "bpe trainer v1; V {v}; sample {}; seed {}; validation {}",
                config.tokenizer_sample_bytes, config.seed, config.validation_fraction
            );
            for s in sources {
                identity += &format!("; {}: {}", s.kind, s.fingerprint);
            }
            let path = bpe_cache_path(&options.cache_dir, v, &cache::sha256_hex(identity.as_bytes()));
            if !path.exists() {
                let sample = tokenizer_sample(config, sources)?;
                let spinner = spinner(options.show_progress, format!("training BPE tokenizer, V = {v}"));
                let trained = TextTokenizer::train_bpe(sample.iter(), v, false)?;
                spinner.finish_and_clear();
                let json = trained.to_json().expect("a trained BPE has a JSON form")?;
                let dir = path.parent().expect("cache path has a parent");
                cache::create_dir(dir)?;
                // What the tokenizer was trained on, for people reading the cache.
                cache::write_atomic(&dir.join("identity.txt"), identity.as_bytes())?;
                cache::write_first(&path, json.as_bytes())?;
            }
            // Load what is in the cache: if two workers trained at once, both use the first copy.
            let tokenizer = TextTokenizer::from_file(&path)?;
            if tokenizer.id_count() < v {
                tracing::warn!(
                    "BPE at V = {v} learned only {} ids from a {}-byte sample: nothing more was frequent enough to merge (the built-in languages' small lexicons saturate near 5k ids); ids above that stay unused",
                    tokenizer.id_count(),
                    config.tokenizer_sample_bytes
                );
            }
            let description = format!("bpe (V = {v})");
            Ok((tokenizer.with_description(description), Some(path)))
        }
    }
}

fn spinner(show: bool, message: String) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_message(message);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// The key that decides which documents are held out: the same for both sources, so a document
/// present in both is held out of both.
fn split_key(config: &DataConfig) -> u64 {
    hash_words(&[0x0005_B117_u64, config.seed])
}

/// Whether a document goes to validation: a hash of its text against the fraction, so the split
/// is the same whatever the file order, and duplicated documents land on the same side.
fn is_validation(text: &str, key: u64, fraction: f64) -> bool {
    let u = (hash_bytes(key, text.as_bytes()) >> 11) as f64 / (1u64 << 53) as f64;
    u < fraction
}

/// A deterministic sample of training text for BPE: an equal share per source, each source's
/// share split over its units in proportion to their size, taken from each unit's start.
fn tokenizer_sample(config: &DataConfig, sources: &[ResolvedSource]) -> Result<Vec<String>, DataError> {
    let share = config.tokenizer_sample_bytes / sources.len() as u64;
    let mut sample = Vec::new();
    for source in sources {
        let key = split_key(config);
        let sizes: Vec<u64> = source.units.iter().map(|u| u.size_hint()).collect();
        let total: u64 = sizes.iter().sum::<u64>().max(1);
        let mut carry = 0u64;
        for (unit, size) in source.units.iter().zip(sizes) {
            let mut budget = (share as u128 * size as u128 / total as u128) as u64 + carry;
            if budget == 0 {
                continue;
            }
            let mut skipped = SkipReport::default();
            for doc in source::read_unit(source.kind.name(), unit, config, &mut skipped)? {
                if budget == 0 {
                    break;
                }
                if doc.is_empty() || is_validation(&doc, key, config.validation_fraction) {
                    continue;
                }
                let take = if doc.len() as u64 <= budget {
                    doc.len()
                } else {
                    let mut end = budget as usize;
                    while !doc.is_char_boundary(end) {
                        end -= 1;
                    }
                    end
                };
                budget -= take as u64;
                sample.push(doc[..take].to_string());
            }
            // A unit with less training text than its share passes the rest on.
            carry = budget;
        }
    }
    Ok(sample)
}

fn prepared_source(
    source: &ResolvedSource,
    config: &DataConfig,
    options: &PrepareOptions,
    tokenizer: &TextTokenizer,
    width: TokenWidth,
) -> Result<PreparedSource, DataError> {
    let fingerprint = format!(
        "shards v{SHARD_FORMAT}; {}; tokenizer {}; width {width:?}; split seed {} fraction {}",
        source.fingerprint,
        tokenizer.identity(),
        config.seed,
        config.validation_fraction
    );
    let key = cache::sha256_hex(fingerprint.as_bytes());
    let dir = options.cache_dir.join("shards").join(format!("{}-{}", source.kind, &key[..16]));
    let meta_path = dir.join("meta.json");
    if !meta_path.exists() {
        build_shards(source, config, options, tokenizer, width, &dir, &fingerprint)?;
    }
    let text = std::fs::read(&meta_path).map_err(|e| DataError::io(&meta_path, e))?;
    let meta: ShardMeta = serde_json::from_slice(&text)
        .map_err(|e| DataError::Cache { path: dir.clone(), message: format!("meta.json is unreadable: {e}") })?;
    if meta.format != SHARD_FORMAT || meta.fingerprint != fingerprint {
        return Err(DataError::Cache { path: dir, message: "meta.json belongs to other data".into() });
    }
    let train = TokenShard::open(&dir.join("train.bin"), width)?;
    let validation = TokenShard::open(&dir.join("validation.bin"), width)?;
    if train.len() as u64 != meta.stats.train.tokens || validation.len() as u64 != meta.stats.validation.tokens {
        return Err(DataError::Cache { path: dir, message: "shard sizes disagree with meta.json".into() });
    }
    Ok(PreparedSource { stats: meta.stats, train, validation, dir })
}

/// Documents are tokenized in batches of about this many bytes, in parallel within a batch.
const TOKENIZE_BATCH_BYTES: usize = 8 << 20;

struct ShardBuilder<'a> {
    tokenizer: &'a TextTokenizer,
    train: ShardWriter,
    validation: ShardWriter,
    stats: [SplitStats; 2],
    pending: Vec<(bool, String)>,
    pending_bytes: usize,
    id_limit: u32,
}

impl ShardBuilder<'_> {
    fn push(&mut self, validation: bool, doc: String) -> Result<(), DataError> {
        self.pending_bytes += doc.len();
        self.pending.push((validation, doc));
        if self.pending_bytes >= TOKENIZE_BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DataError> {
        let tokenizer = self.tokenizer;
        let encoded: Vec<Vec<u32>> =
            self.pending.par_iter().map(|(_, doc)| tokenizer.encode(doc)).collect::<Result<_, _>>()?;
        for ((validation, doc), ids) in self.pending.drain(..).zip(encoded) {
            if let Some(&bad) = ids.iter().find(|&&id| id >= self.id_limit) {
                return Err(DataError::Tokenizer {
                    tokenizer: tokenizer.description().to_string(),
                    message: format!("produced id {bad}, not below vocab_size {}", self.id_limit),
                });
            }
            let (writer, stats) = if validation {
                (&mut self.validation, &mut self.stats[1])
            } else {
                (&mut self.train, &mut self.stats[0])
            };
            writer.write(&ids)?;
            if let Some(eot) = tokenizer.end_of_text() {
                writer.write(&[eot])?;
            }
            stats.documents += 1;
            stats.bytes += doc.len() as u64;
            stats.tokens = writer.tokens();
        }
        self.pending_bytes = 0;
        Ok(())
    }
}

fn build_shards(
    source: &ResolvedSource,
    config: &DataConfig,
    options: &PrepareOptions,
    tokenizer: &TextTokenizer,
    width: TokenWidth,
    dir: &Path,
    fingerprint: &str,
) -> Result<(), DataError> {
    cache::create_dir(dir)?;
    let name = source.kind.name();
    let total: u64 = source.units.iter().map(|u| u.size_hint()).sum();
    let bar = if options.show_progress {
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:>8} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        ) {
            bar.set_style(style);
        }
        bar.set_prefix(name);
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut builder = ShardBuilder {
        tokenizer,
        train: ShardWriter::create(&dir.join("train.bin"), width)?,
        validation: ShardWriter::create(&dir.join("validation.bin"), width)?,
        stats: [SplitStats::default(); 2],
        pending: Vec::new(),
        pending_bytes: 0,
        id_limit: options.vocab_size.min(u32::MAX as usize) as u32,
    };
    let key = split_key(config);
    let mut skipped = SkipReport::default();
    for unit in &source.units {
        bar.set_message(unit.location());
        for doc in source::read_unit(name, unit, config, &mut skipped)? {
            if !doc.is_empty() {
                let validation = is_validation(&doc, key, config.validation_fraction);
                builder.push(validation, doc)?;
            }
        }
        bar.inc(unit.size_hint());
    }
    builder.flush()?;
    bar.finish_and_clear();
    let [train, validation] = builder.stats;
    let location = source.description.clone();
    if train.documents == 0 {
        return Err(DataError::input(
            name,
            location,
            "no training text (every document was empty, skipped or held out); add text",
        ));
    }
    if validation.documents == 0 {
        return Err(DataError::input(
            name,
            location,
            format!(
                "no document was held out for validation ({} documents, validation_fraction {}); add documents, raise data.validation_fraction, or lower data.max_document_bytes to cut long files",
                train.documents, config.validation_fraction
            ),
        ));
    }
    if skipped.invalid_utf8 > 0 || skipped.empty_files > 0 {
        tracing::warn!(
            "{name} source: skipped {} documents with invalid UTF-8 and {} empty files",
            skipped.invalid_utf8,
            skipped.empty_files
        );
    }
    builder.train.finish()?;
    builder.validation.finish()?;
    let meta = ShardMeta {
        format: SHARD_FORMAT,
        fingerprint: fingerprint.to_string(),
        stats: SourceStats {
            source: source.kind,
            description: source.description.clone(),
            train,
            validation,
            entropy_nats_per_byte: source.entropy_nats_per_byte,
            skipped,
            tokenizer: tokenizer.identity().to_string(),
            width,
        },
    };
    let json = serde_json::to_vec_pretty(&meta).expect("shard metadata serialises");
    let meta_path = dir.join("meta.json");
    cache::write_first(&meta_path, &json)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_deterministic_and_near_the_fraction() {
        let key = 42;
        let docs: Vec<String> = (0..20_000).map(|i| format!("document number {i}")).collect();
        let held: usize = docs.iter().filter(|d| is_validation(d, key, 0.1)).count();
        // Binomial(20000, 0.1): sd about 42; allow 5 sd.
        assert!((held as i64 - 2000).abs() < 212, "held out {held}");
        let again: usize = docs.iter().filter(|d| is_validation(d, key, 0.1)).count();
        assert_eq!(held, again);
    }
}
