//! Batches for training and validation.
//!
//! A training batch is `batch_size` rows of `context_length + 1` consecutive tokens (inputs and
//! the targets shifted by one). Global row `n = step * batch_size + i` comes from the domain
//! source exactly when `floor((n + 1) r + u) > floor(n r + u)` (r the mixture ratio in units of
//! 2^-32, u a seed-derived offset), so after n rows exactly `floor(n r + u)` came from the
//! domain: the realised fraction is r to within one row, at every step. The k-th row of a source
//! is window `perm_e(k mod M)` of epoch `e = k div M`, where the source's training tokens hold
//! M windows and `perm_e` is a keyed pseudo-random permutation. Everything is a closed-form
//! function of (seed, step), so resuming at step k needs only k, and the batch is the same
//! however many workers build it or in which order.
//!
//! A later stage of the same model (continual pre-training on a new mixture) reads on where the
//! earlier stages stopped: [`MixtureSampler::after_rows`] offsets each source's row count by the
//! rows already read of it, so its k-th row of a source is that source's row `offset + k`.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::rng::{hash_words, IndexPermutation};
use crate::shard::TokenShard;
use crate::source::SourceKind;

/// Rows of token windows: `inputs[i * context_length + t]`, `targets` shifted by one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Input ids, row-major `[rows, context_length]`.
    pub inputs: Vec<u32>,
    /// Target ids (the next token of each input), row-major `[rows, context_length]`.
    pub targets: Vec<u32>,
    /// Which source each row came from.
    pub sources: Vec<SourceKind>,
    /// Tokens per row.
    pub context_length: usize,
}

impl Batch {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.sources.len()
    }

    /// Rows that came from `kind`.
    pub fn rows_from(&self, kind: SourceKind) -> usize {
        self.sources.iter().filter(|&&s| s == kind).count()
    }

    fn with_capacity(rows: usize, context_length: usize) -> Self {
        Self {
            inputs: Vec::with_capacity(rows * context_length),
            targets: Vec::with_capacity(rows * context_length),
            sources: Vec::with_capacity(rows),
            context_length,
        }
    }

    fn push_window(&mut self, kind: SourceKind, window: &[u32]) {
        let c = self.context_length;
        self.inputs.extend_from_slice(&window[..c]);
        self.targets.extend_from_slice(&window[1..=c]);
        self.sources.push(kind);
    }
}

/// Epochs of each source's training tokens consumed (fractional).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceEpochs {
    /// Epochs of the general source.
    pub general: f64,
    /// Epochs of the domain source.
    pub domain: f64,
}

/// Rows read of each source: where a model stands in its training data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRows {
    /// Rows of the general source.
    pub general: u64,
    /// Rows of the domain source.
    pub domain: u64,
}

/// Fixed-point denominator of the mixture ratio.
const RATIO_ONE: u128 = 1 << 32;

#[derive(Debug, Clone)]
struct TrainSource {
    kind: SourceKind,
    shard: TokenShard,
    /// Windows of `context_length + 1` tokens per epoch (consecutive windows share one token).
    windows: u64,
}

/// Deterministic, resumable training batches mixing two sources at a fixed ratio.
#[derive(Debug, Clone)]
pub struct MixtureSampler {
    general: Option<TrainSource>,
    domain: Option<TrainSource>,
    ratio: u128,
    offset: u128,
    batch_size: usize,
    context_length: usize,
    seed: u64,
    /// Rows of each source read before this sampler's first row (by earlier stages).
    before: SourceRows,
}

impl MixtureSampler {
    /// A sampler drawing a fraction `mixture_ratio` of rows from `domain`, the rest from
    /// `general`; a source may be absent only if its share is zero.
    pub fn new(
        general: Option<TokenShard>,
        domain: Option<TokenShard>,
        mixture_ratio: f64,
        batch_size: usize,
        context_length: usize,
        seed: u64,
    ) -> Result<Self, DataError> {
        if !(0.0..=1.0).contains(&mixture_ratio) {
            return Err(DataError::Sampler(format!("mixture_ratio {mixture_ratio} is outside [0, 1]")));
        }
        if batch_size == 0 || context_length == 0 {
            return Err(DataError::Sampler(format!(
                "batch_size ({batch_size}) and context_length ({context_length}) must be positive"
            )));
        }
        let ratio = (mixture_ratio * RATIO_ONE as f64).round() as u128;
        let source = |kind: SourceKind,
                      shard: Option<TokenShard>,
                      needed: bool|
         -> Result<Option<TrainSource>, DataError> {
            let Some(shard) = shard else {
                return if needed {
                    Err(DataError::Sampler(format!(
                        "mixture_ratio {mixture_ratio} needs a {kind} source; configure data.{kind}"
                    )))
                } else {
                    Ok(None)
                };
            };
            if shard.len() < context_length + 1 {
                return if needed {
                    Err(DataError::Sampler(format!(
                        "the {kind} source has {} training tokens, fewer than context_length + 1 = {}; add text or shorten the context",
                        shard.len(),
                        context_length + 1
                    )))
                } else {
                    Ok(None)
                };
            }
            let windows = ((shard.len() - 1) / context_length) as u64;
            Ok(Some(TrainSource { kind, shard, windows }))
        };
        let general = source(SourceKind::General, general, ratio < RATIO_ONE)?;
        let domain = source(SourceKind::Domain, domain, ratio > 0)?;
        let offset = (hash_words(&[seed, 0x0FF5E7]) as u128) >> 32;
        Ok(Self { general, domain, ratio, offset, batch_size, context_length, seed, before: SourceRows::default() })
    }

    /// The same sampler reading on after `before` rows of each source (read by an earlier stage
    /// of the model): its k-th row of a source is that source's row `before + k`.
    pub fn after_rows(mut self, before: SourceRows) -> Self {
        self.before = before;
        self
    }

    /// Rows of each source read after the first `steps` steps, the earlier stages' included.
    pub fn rows_read(&self, steps: u64) -> SourceRows {
        let rows = steps * self.batch_size as u64;
        let domain = self.domain_rows_before(rows);
        SourceRows { general: self.before.general + rows - domain, domain: self.before.domain + domain }
    }

    /// Restricts each source to its first distinct tokens, so that a run repeats `unique` tokens
    /// in epochs (Muennighoff et al. 2023's data-constrained setting): each source in use keeps
    /// its share of them (the domain source `r * unique`, the general source the rest), as whole
    /// windows from the start of its training split. A source with fewer tokens keeps them all.
    pub fn limit_unique_tokens(&mut self, unique: u64) -> Result<(), DataError> {
        let r = self.ratio as f64 / RATIO_ONE as f64;
        let domain_share = (unique as f64 * r).round() as u64;
        let context = self.context_length as u64;
        for (source, share) in [(&mut self.general, unique - domain_share), (&mut self.domain, domain_share)] {
            let Some(s) = source else { continue };
            let windows = share.saturating_sub(1) / context;
            if windows == 0 {
                return Err(DataError::Sampler(format!(
                    "unique_tokens {unique} leaves the {} source {share} distinct tokens at mixture ratio {r}, fewer than one window of context_length + 1 = {}; raise unique_tokens",
                    s.kind,
                    context + 1
                )));
            }
            s.windows = s.windows.min(windows);
        }
        Ok(())
    }

    /// Training tokens of a source that batches can read (its first windows; all of them
    /// unless [`MixtureSampler::limit_unique_tokens`] restricted it); None when unused.
    pub fn readable_tokens(&self, kind: SourceKind) -> Option<u64> {
        let s = match kind {
            SourceKind::General => self.general.as_ref(),
            SourceKind::Domain => self.domain.as_ref(),
        }?;
        Some(s.windows * self.context_length as u64 + 1)
    }

    /// The fraction of rows drawn from the domain source.
    pub fn mixture_ratio(&self) -> f64 {
        self.ratio as f64 / RATIO_ONE as f64
    }

    /// Rows per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Tokens per row (inputs; each row reads one more token for the last target).
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Training tokens (input positions) per step.
    pub fn tokens_per_step(&self) -> u64 {
        (self.batch_size * self.context_length) as u64
    }

    /// Domain rows among the first `rows` global rows: `floor(rows * r + u)`.
    fn domain_rows_before(&self, rows: u64) -> u64 {
        ((rows as u128 * self.ratio + self.offset) / RATIO_ONE) as u64
    }

    /// The batch of training step `step` (steps count from 0).
    pub fn batch(&self, step: u64) -> Batch {
        self.rows(step, 0..self.batch_size)
    }

    /// Rows `rows` of step `step`'s batch: data-parallel workers each take a slice, and together
    /// they see exactly the rows of [`MixtureSampler::batch`].
    pub fn rows(&self, step: u64, rows: Range<usize>) -> Batch {
        assert!(rows.end <= self.batch_size, "rows {rows:?} beyond batch of {}", self.batch_size);
        let mut batch = Batch::with_capacity(rows.len(), self.context_length);
        let mut window = Vec::with_capacity(self.context_length + 1);
        for i in rows {
            let n = step * self.batch_size as u64 + i as u64;
            let domain_before = self.domain_rows_before(n);
            let is_domain = self.domain_rows_before(n + 1) > domain_before;
            let (source, k) = if is_domain {
                (self.domain.as_ref(), self.before.domain + domain_before)
            } else {
                (self.general.as_ref(), self.before.general + n - domain_before)
            };
            let source = source.expect("a source with a non-zero share is present (checked in new)");
            let start = self.window_start(source, k);
            window.clear();
            source.shard.extend_from(start, self.context_length + 1, &mut window);
            batch.push_window(source.kind, &window);
        }
        batch
    }

    /// Start token of a source's k-th window: epoch `k / M`, shuffled position within it.
    fn window_start(&self, source: &TrainSource, k: u64) -> usize {
        let epoch = k / source.windows;
        let key = hash_words(&[self.seed, source.kind as u64, epoch]);
        let window = IndexPermutation::new(source.windows, key).apply(k % source.windows);
        window as usize * self.context_length
    }

    /// Epochs of each source consumed by the first `steps` steps (the earlier stages' rows
    /// included).
    pub fn epochs_after(&self, steps: u64) -> SourceEpochs {
        let read = self.rows_read(steps);
        let epochs = |s: &Option<TrainSource>, r: u64| s.as_ref().map_or(0.0, |s| r as f64 / s.windows as f64);
        SourceEpochs { general: epochs(&self.general, read.general), domain: epochs(&self.domain, read.domain) }
    }

    /// One message per source that a run of `steps` steps would repeat (more than one epoch).
    pub fn repetition_warnings(&self, steps: u64) -> Vec<String> {
        let epochs = self.epochs_after(steps);
        let mut out = Vec::new();
        for (source, e) in [(&self.general, epochs.general), (&self.domain, epochs.domain)] {
            if let Some(s) = source {
                if e > 1.0 {
                    out.push(format!(
                        "{} source: {} training tokens, but {steps} steps read {:.0} tokens of it: {e:.2} epochs, so its text repeats; add text or plan fewer tokens",
                        s.kind,
                        s.shard.len(),
                        e * (s.windows * self.context_length as u64) as f64
                    ));
                }
            }
        }
        out
    }
}

/// A source's validation windows in fixed order (independent of the training seed).
#[derive(Debug, Clone)]
pub struct ValidationSet {
    kind: SourceKind,
    shard: TokenShard,
    batch_size: usize,
    context_length: usize,
    windows: usize,
}

impl ValidationSet {
    /// The windows of `shard`, `batch_size` per batch.
    pub fn new(
        kind: SourceKind,
        shard: TokenShard,
        batch_size: usize,
        context_length: usize,
    ) -> Result<Self, DataError> {
        if batch_size == 0 || context_length == 0 {
            return Err(DataError::Sampler("validation batch_size and context_length must be positive".into()));
        }
        if shard.len() < context_length + 1 {
            return Err(DataError::Sampler(format!(
                "the {kind} validation split has {} tokens, fewer than context_length + 1 = {}; raise data.validation_fraction or add text",
                shard.len(),
                context_length + 1
            )));
        }
        let windows = (shard.len() - 1) / context_length;
        Ok(Self { kind, shard, batch_size, context_length, windows })
    }

    /// Number of windows (every validation token is a target once).
    pub fn windows(&self) -> usize {
        self.windows
    }

    /// Number of batches (the last may be smaller).
    pub fn batches(&self) -> usize {
        self.windows.div_ceil(self.batch_size)
    }

    /// Batch `index` (`None` past the end).
    pub fn batch(&self, index: usize) -> Option<Batch> {
        let first = index.checked_mul(self.batch_size)?;
        if first >= self.windows {
            return None;
        }
        let last = (first + self.batch_size).min(self.windows);
        let mut batch = Batch::with_capacity(last - first, self.context_length);
        let mut window = Vec::with_capacity(self.context_length + 1);
        for w in first..last {
            window.clear();
            self.shard.extend_from(w * self.context_length, self.context_length + 1, &mut window);
            batch.push_window(self.kind, &window);
        }
        Some(batch)
    }

    /// All batches in order.
    pub fn iter(&self) -> impl Iterator<Item = Batch> + '_ {
        (0..self.batches()).filter_map(|i| self.batch(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::{ShardWriter, TokenWidth};
    use rayon::prelude::*;

    /// A shard whose token at position p is `base + p` (so a window's start can be read off).
    fn shard(dir: &std::path::Path, name: &str, base: u32, len: u32) -> TokenShard {
        let path = dir.join(name);
        let mut w = ShardWriter::create(&path, TokenWidth::U32).unwrap();
        w.write(&(base..base + len).collect::<Vec<_>>()).unwrap();
        w.finish().unwrap();
        TokenShard::open(&path, TokenWidth::U32).unwrap()
    }

    fn fixture() -> (tempfile::TempDir, TokenShard, TokenShard) {
        let dir = tempfile::tempdir().unwrap();
        let g = shard(dir.path(), "g.bin", 0, 10_001);
        let d = shard(dir.path(), "d.bin", 1_000_000, 4_001);
        (dir, g, d)
    }

    #[test]
    fn realised_domain_fraction_matches_the_ratio() {
        let (_dir, g, d) = fixture();
        for r in [0.0, 0.1, 0.25, 1.0 / 3.0, 0.5, 0.9, 1.0] {
            let s = MixtureSampler::new(Some(g.clone()), Some(d.clone()), r, 12, 10, 5).unwrap();
            let mut domain = 0usize;
            for step in 0..200u64 {
                let b = s.batch(step);
                let in_batch = b.rows_from(SourceKind::Domain);
                // Every batch holds floor or ceil of r * batch_size domain rows.
                assert!((in_batch as f64 - r * 12.0).abs() < 1.0 + 1e-9, "r {r}: {in_batch} in a batch");
                domain += in_batch;
                // Each row's tokens come from the source it claims.
                for (row, kind) in b.sources.iter().enumerate() {
                    let first = b.inputs[row * 10];
                    assert_eq!(first >= 1_000_000, *kind == SourceKind::Domain);
                }
            }
            let rows = 200.0 * 12.0;
            // Exact to within one row over the whole run (binomial sampling would allow about
            // sqrt(rows r (1 - r)), up to 25 rows here).
            assert!((domain as f64 - r * rows).abs() <= 1.0, "r {r}: {domain} of {rows}");
        }
    }

    #[test]
    fn resuming_at_step_k_gives_the_uninterrupted_stream() {
        let (_dir, g, d) = fixture();
        let make = || MixtureSampler::new(Some(g.clone()), Some(d.clone()), 0.3, 8, 16, 11).unwrap();
        let uninterrupted: Vec<Batch> = {
            let s = make();
            (0..120).map(|k| s.batch(k)).collect()
        };
        // A fresh sampler (a restarted process) asked for step k directly.
        let resumed = make();
        for k in [0u64, 1, 57, 119] {
            assert_eq!(resumed.batch(k), uninterrupted[k as usize], "step {k}");
        }
        // Workers in parallel, and data-parallel slices of a batch, give the same rows.
        let parallel: Vec<Batch> = (0..120u64).into_par_iter().map(|k| resumed.batch(k)).collect();
        assert_eq!(parallel, uninterrupted);
        for k in [3u64, 90] {
            let halves = [resumed.rows(k, 0..3), resumed.rows(k, 3..8)];
            let mut joined = halves[0].clone();
            joined.inputs.extend(&halves[1].inputs);
            joined.targets.extend(&halves[1].targets);
            joined.sources.extend(&halves[1].sources);
            assert_eq!(joined, uninterrupted[k as usize]);
        }
        // Another seed gives other batches.
        let other = MixtureSampler::new(Some(g.clone()), Some(d.clone()), 0.3, 8, 16, 12).unwrap();
        assert_ne!(other.batch(5), uninterrupted[5]);
    }

    #[test]
    fn a_later_stage_reads_on_where_the_earlier_one_stopped() {
        let (_dir, g, d) = fixture();
        let first = MixtureSampler::new(Some(g.clone()), Some(d.clone()), 0.0, 8, 16, 11).unwrap();
        let read = first.rows_read(30);
        assert_eq!(read, SourceRows { general: 240, domain: 0 });
        // The same mixture read on is the uninterrupted stream, shifted by the steps done.
        let on = MixtureSampler::new(Some(g.clone()), Some(d.clone()), 0.0, 8, 16, 11).unwrap().after_rows(read);
        for k in [0u64, 1, 17, 200] {
            assert_eq!(on.batch(k), first.batch(30 + k), "step {k}");
        }
        // A new mixture takes each source's next rows: the general rows go on from row 240 (no
        // window of the first stage's epoch is read again before the epoch ends), the domain
        // rows start at the domain's first.
        let switched = MixtureSampler::new(Some(g.clone()), Some(d.clone()), 0.5, 8, 16, 11).unwrap().after_rows(read);
        let whole = MixtureSampler::new(Some(g.clone()), Some(d.clone()), 0.0, 8, 16, 11).unwrap();
        let general_after: Vec<u32> = (30..60u64).flat_map(|k| whole.batch(k).inputs).collect();
        let seen_before: std::collections::BTreeSet<u32> =
            (0..30u64).flat_map(|k| whole.batch(k).inputs.chunks(16).map(|w| w[0]).collect::<Vec<_>>()).collect();
        let fresh = MixtureSampler::new(Some(g), Some(d), 1.0, 8, 16, 11).unwrap();
        let domain_first: Vec<u32> = (0..30u64).flat_map(|k| fresh.batch(k).inputs).collect();
        let (mut gi, mut di) = (0, 0);
        for k in 0..20u64 {
            let b = switched.batch(k);
            for (row, kind) in b.sources.iter().enumerate() {
                let w = &b.inputs[row * 16..(row + 1) * 16];
                match kind {
                    SourceKind::General => {
                        assert_eq!(w, &general_after[gi * 16..(gi + 1) * 16]);
                        assert!(!seen_before.contains(&w[0]), "a window of the first stage came again");
                        gi += 1;
                    }
                    SourceKind::Domain => {
                        assert_eq!(w, &domain_first[di * 16..(di + 1) * 16]);
                        di += 1;
                    }
                }
            }
        }
        assert_eq!((gi, di), (80, 80));
        assert_eq!(switched.rows_read(20), SourceRows { general: 320, domain: 80 });
        let e = switched.epochs_after(20);
        assert!((e.general - 320.0 / 625.0).abs() < 1e-12 && (e.domain - 80.0 / 250.0).abs() < 1e-12, "{e:?}");
    }

    #[test]
    fn targets_are_the_next_tokens() {
        let (_dir, g, d) = fixture();
        let s = MixtureSampler::new(Some(g), Some(d), 0.5, 4, 32, 0).unwrap();
        let b = s.batch(9);
        for row in 0..4 {
            let x = &b.inputs[row * 32..(row + 1) * 32];
            let y = &b.targets[row * 32..(row + 1) * 32];
            for t in 0..32 {
                assert_eq!(y[t], x[t] + 1, "row {row} position {t}");
            }
            assert_eq!(x[0] % 32, 0, "windows start on the window grid");
        }
    }

    #[test]
    fn each_epoch_visits_every_window_once_in_a_new_order() {
        let (_dir, g, _d) = fixture();
        let context = 10;
        let s = MixtureSampler::new(Some(g.clone()), None, 0.0, 10, context, 3).unwrap();
        let windows = (g.len() - 1) / context; // 1000
        let starts: Vec<u32> = (0..200u64)
            .flat_map(|k| {
                let b = s.batch(k);
                (0..10).map(move |r| b.inputs[r * context]).collect::<Vec<_>>()
            })
            .collect();
        for epoch in starts.chunks(windows) {
            let mut sorted = epoch.to_vec();
            sorted.sort_unstable();
            let expected: Vec<u32> = (0..windows as u32).map(|w| w * context as u32).collect();
            assert_eq!(sorted, expected);
        }
        assert_ne!(starts[..windows], starts[windows..], "the second epoch is reshuffled");
        let e = s.epochs_after(150);
        assert!((e.general - 1.5).abs() < 1e-12 && e.domain == 0.0, "{e:?}");
        assert!(s.repetition_warnings(100).is_empty());
        let w = s.repetition_warnings(150);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("general source") && w[0].contains("1.50 epochs"), "{}", w[0]);
    }

    #[test]
    fn unique_tokens_repeat_the_first_windows_in_epochs() {
        let (_dir, g, d) = fixture();
        let context = 10;
        // 200 distinct tokens at r = 0.25: 150 general tokens (14 windows), 50 domain (4 windows).
        let mut s = MixtureSampler::new(Some(g), Some(d), 0.25, 8, context, 1).unwrap();
        s.limit_unique_tokens(200).unwrap();
        assert_eq!(s.readable_tokens(SourceKind::General), Some(14 * 10 + 1));
        assert_eq!(s.readable_tokens(SourceKind::Domain), Some(4 * 10 + 1));
        let mut general_starts = std::collections::BTreeSet::new();
        let mut domain_starts = std::collections::BTreeSet::new();
        for step in 0..100u64 {
            let b = s.batch(step);
            for (row, kind) in b.sources.iter().enumerate() {
                let first = b.inputs[row * context];
                match kind {
                    SourceKind::General => general_starts.insert(first),
                    SourceKind::Domain => domain_starts.insert(first - 1_000_000),
                };
            }
        }
        // Every window of the limited prefix is read, and nothing beyond it.
        assert_eq!(general_starts.into_iter().collect::<Vec<_>>(), (0..14).map(|w| w * 10).collect::<Vec<u32>>());
        assert_eq!(domain_starts.into_iter().collect::<Vec<_>>(), (0..4).map(|w| w * 10).collect::<Vec<u32>>());
        // 100 steps of 8 rows: 600 general rows over 14 windows.
        let e = s.epochs_after(100);
        assert!((e.general - 600.0 / 14.0).abs() < 1e-9 && (e.domain - 200.0 / 4.0).abs() < 1e-9, "{e:?}");
        let err = s.clone().limit_unique_tokens(30).unwrap_err().to_string();
        assert!(err.contains("fewer than one window"), "{err}");
    }

    #[test]
    fn missing_or_tiny_sources_are_errors() {
        let (dir, g, d) = fixture();
        let err = MixtureSampler::new(Some(g.clone()), None, 0.2, 4, 8, 0).unwrap_err().to_string();
        assert!(err.contains("needs a domain source"), "{err}");
        let tiny = shard(dir.path(), "tiny.bin", 0, 5);
        let err = MixtureSampler::new(Some(g.clone()), Some(tiny), 0.2, 4, 8, 0).unwrap_err().to_string();
        assert!(err.contains("domain source has 5 training tokens"), "{err}");
        assert!(MixtureSampler::new(Some(g.clone()), Some(d.clone()), 1.5, 4, 8, 0).is_err());
        // r = 1 needs no general source.
        assert!(MixtureSampler::new(None, Some(d), 1.0, 4, 8, 0).is_ok());
    }

    #[test]
    fn validation_windows_cover_the_split_in_order() {
        let (_dir, g, _d) = fixture();
        let v = ValidationSet::new(SourceKind::General, g.clone(), 64, 100).unwrap();
        assert_eq!(v.windows(), 100);
        assert_eq!(v.batches(), 2);
        let all: Vec<Batch> = v.iter().collect();
        assert_eq!(all[0].rows(), 64);
        assert_eq!(all[1].rows(), 36);
        let targets: Vec<u32> = all.iter().flat_map(|b| b.targets.clone()).collect();
        assert_eq!(targets, (1..=10_000).collect::<Vec<u32>>(), "every token after the first is a target once");
        assert!(v.batch(2).is_none());
    }
}
