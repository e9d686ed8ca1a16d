//! Data pipeline benchmarks: BPE tokenization throughput (1 and 2 threads), BPE training time per
//! vocabulary size, building shards from scratch, and loading prepared data from a warm cache.
//! Results for the project's machine are in docs/benchmarks.md ("Data").

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput};
use rayon::prelude::*;
use sweep_data::{prepare_with, DataConfig, HubSettings, Language, PrepareOptions, TextTokenizer, TokenShard};

/// 1 MB of each built-in language, as documents.
fn corpus(seed: u64) -> Vec<String> {
    let mut docs = Language::Prose.automaton().sample_documents(seed, 1_000_000);
    docs.extend(Language::Code.automaton().sample_documents(seed, 1_000_000));
    docs
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sweep-data-bench").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn options(vocab_size: usize, cache: &Path) -> PrepareOptions {
    PrepareOptions {
        vocab_size,
        cache_dir: cache.to_path_buf(),
        base_dir: cache.to_path_buf(),
        hub: HubSettings { offline: true, ..HubSettings::from_env() },
        show_progress: false,
    }
}

fn tokenize(c: &mut Criterion) {
    let sample = corpus(2);
    let text = corpus(1);
    let bytes: usize = text.iter().map(|d| d.len()).sum();
    let mut group = c.benchmark_group("tokenize");
    group.throughput(Throughput::Bytes(bytes as u64)).sample_size(10).sampling_mode(SamplingMode::Flat);
    for v in [4096usize, 32768] {
        let tokenizer = TextTokenizer::train_bpe(sample.iter(), v, false).unwrap();
        for threads in [1usize, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            group.bench_function(BenchmarkId::new(format!("bpe_v{v}"), format!("{threads}_threads")), |b| {
                b.iter(|| pool.install(|| text.par_iter().map(|d| tokenizer.encode(d).unwrap().len()).sum::<usize>()))
            });
        }
    }
    group.finish();
}

fn train_bpe(c: &mut Criterion) {
    // The default data.tokenizer_sample_bytes: 2 MB, half prose, half code.
    let sample = corpus(2);
    let mut group = c.benchmark_group("train_bpe_2MB");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_millis(500));
    for v in [512usize, 4096, 32768] {
        group.bench_function(BenchmarkId::from_parameter(v), |b| {
            b.iter(|| TextTokenizer::train_bpe(sample.iter(), v, false).unwrap().id_count())
        });
    }
    group.finish();
}

fn shards(c: &mut Criterion) {
    let dir = scratch("shards");
    let tokenizer = TextTokenizer::train_bpe(corpus(2).iter(), 4096, false).unwrap();
    let tokenizer_path = dir.join("tokenizer.json");
    std::fs::write(&tokenizer_path, tokenizer.to_json().unwrap().unwrap()).unwrap();
    let text =
        format!("builtin_bytes = 2_000_000\ntokenizer = {{ file = {:?} }}", tokenizer_path.display().to_string());
    let config = DataConfig::from_toml(toml::from_str(&text).unwrap()).unwrap();

    // Generate 2 MB per built-in language, tokenize and write train/validation shards, cold cache.
    let mut group = c.benchmark_group("prepare");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).throughput(Throughput::Bytes(4_000_000));
    let mut round = 0;
    group.bench_function("build_shards_4MB_v4096", |b| {
        b.iter_batched(
            || {
                round += 1;
                scratch(&format!("cold-{round}"))
            },
            |cache| prepare_with(&config, &options(4096, &cache)).unwrap(),
            BatchSize::PerIteration,
        )
    });
    group.finish();

    // Everything cached: what each training point pays before its first step.
    let warm = scratch("warm");
    let data = prepare_with(&config, &options(4096, &warm)).unwrap();
    let mut group = c.benchmark_group("load");
    group.bench_function("prepare_warm_cache_v4096", |b| {
        b.iter(|| prepare_with(&config, &options(4096, &warm)).unwrap())
    });
    let source = &data.sources()[0];
    let (path, width) = (source.train.path().to_path_buf(), source.train.width());
    group.bench_function("open_train_shard", |b| b.iter(|| TokenShard::open(&path, width).unwrap().len()));
    group.finish();

    // One training batch of 16 x 1024 tokens at mixture ratio 0.25.
    let sampler = data.sampler(0.25, 16, 1024, 0).unwrap();
    let mut step = 0u64;
    c.bench_function("sampler_batch_16x1024", |b| {
        b.iter(|| {
            step += 1;
            sampler.batch(step).inputs.len()
        })
    });
}

criterion_group!(benches, tokenize, train_bpe, shards);
criterion_main!(benches);
