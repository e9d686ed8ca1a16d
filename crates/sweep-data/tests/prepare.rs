//! Preparing data end to end: sources of every local kind, tokenizers, shards and their cache,
//! and the errors a user meets before training starts.

mod common;

use std::fs;

use common::{config, documents, options, write_parquet};
use sweep_data::{prepare_with, DataError, Language, SourceKind, TextTokenizer, END_OF_TEXT};

const SMALL: &str = "builtin_bytes = 300_000\ntokenizer_sample_bytes = 200_000\n";

#[test]
fn builtin_languages_prepare_end_to_end_and_decode_back_to_their_documents() {
    let cache = tempfile::tempdir().unwrap();
    let data = prepare_with(&config(SMALL), &options(512, cache.path(), cache.path())).unwrap();
    assert_eq!(data.vocab_size(), 512);
    assert_eq!(data.sources().len(), 2);
    let tokenizer = TextTokenizer::from_file(data.tokenizer_path().unwrap()).unwrap();
    let eot = tokenizer.end_of_text().unwrap();
    for (kind, language) in [(SourceKind::General, Language::Prose), (SourceKind::Domain, Language::Code)] {
        let source = data.source(kind).unwrap();
        let stats = &source.stats;
        assert_eq!(stats.entropy_nats_per_byte, Some(language.entropy().nats_per_byte));
        assert!(stats.train.bytes + stats.validation.bytes >= 300_000);
        let held = stats.validation.documents as f64 / (stats.train.documents + stats.validation.documents) as f64;
        assert!(held > 0.01 && held < 0.12, "{kind}: held out {held}");
        let bpt = stats.validation.bytes_per_token();
        assert!(bpt > 1.2 && bpt < 8.0, "{kind}: {bpt} bytes per token");
        assert_eq!(source.train.len() as u64, stats.train.tokens);
        // The shard decodes back to whole documents of the language, separated by end-of-text.
        let ids = source.validation.to_vec();
        assert_eq!(*ids.last().unwrap(), eot);
        let text = tokenizer.decode(&ids).unwrap();
        let docs: Vec<&str> = text.split(END_OF_TEXT).filter(|d| !d.is_empty()).collect();
        assert_eq!(docs.len() as u64, stats.validation.documents);
        assert_eq!(docs.iter().map(|d| d.len() as u64).sum::<u64>(), stats.validation.bytes);
        for doc in docs {
            language.automaton().text_loss(doc).expect("a held-out document of the language");
        }
    }
    // The sampler gives ids below V, with the domain share asked for.
    let sampler = data.sampler(0.25, 8, 64, 1).unwrap();
    let batch = sampler.batch(3);
    assert!(batch.inputs.iter().chain(&batch.targets).all(|&id| id < 512));
    assert_eq!(batch.rows_from(SourceKind::Domain), 2);
    let validation = data.validation(SourceKind::Domain, 8, 64).unwrap();
    assert!(validation.batches() > 0);
}

#[test]
fn the_cache_is_reused_and_shared_across_vocabulary_sizes() {
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(SMALL);
    let first = prepare_with(&cfg, &options(512, cache.path(), cache.path())).unwrap();
    let meta = first.source(SourceKind::General).unwrap().dir.join("meta.json");
    let stamp = fs::metadata(&meta).unwrap().modified().unwrap();
    let again = prepare_with(&cfg, &options(512, cache.path(), cache.path())).unwrap();
    assert_eq!(fs::metadata(&meta).unwrap().modified().unwrap(), stamp, "shards were rebuilt");
    assert_eq!(again.source(SourceKind::General).unwrap().stats, first.source(SourceKind::General).unwrap().stats);
    assert_eq!(again.sampler(0.5, 4, 32, 0).unwrap().batch(7), first.sampler(0.5, 4, 32, 0).unwrap().batch(7));
    // Another V: another tokenizer and other shards, with more bytes per token.
    let bigger = prepare_with(&cfg, &options(2048, cache.path(), cache.path())).unwrap();
    assert_ne!(bigger.tokenizer_path(), first.tokenizer_path());
    let bpt = |d: &sweep_data::PreparedData| d.bytes_per_token(SourceKind::General).unwrap();
    assert!(bpt(&bigger) > bpt(&first), "{} vs {}", bpt(&bigger), bpt(&first));
    // A given tokenizer.json identical to the cached one reuses the same shards.
    let path = first.tokenizer_path().unwrap().to_path_buf();
    let text = format!("{SMALL}tokenizer = {{ file = {:?} }}", path.display().to_string());
    let given = prepare_with(&config(&text), &options(600, cache.path(), cache.path())).unwrap();
    assert_eq!(given.source(SourceKind::Domain).unwrap().dir, first.source(SourceKind::Domain).unwrap().dir);
    assert_eq!(given.vocab_size(), 600);
    // No temporary files are left behind.
    let mut stack = vec![cache.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let p = entry.path();
            assert!(!p.to_string_lossy().ends_with(".tmp"), "{} left behind", p.display());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
}

#[test]
fn concurrent_workers_preparing_one_cache_agree() {
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(SMALL);
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| prepare_with(&cfg, &options(512, cache.path(), cache.path())).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for other in &results[1..] {
        assert_eq!(other.tokenizer().identity(), results[0].tokenizer().identity());
        for kind in [SourceKind::General, SourceKind::Domain] {
            let (a, b) = (results[0].source(kind).unwrap(), other.source(kind).unwrap());
            assert_eq!(a.stats, b.stats);
            assert_eq!(a.train.to_vec(), b.train.to_vec());
        }
    }
}

#[test]
fn byte_tokenizer_gives_one_byte_per_token() {
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&format!("{SMALL}tokenizer = \"byte\"\ndomain = \"none\""));
    let data = prepare_with(&cfg, &options(256, cache.path(), cache.path())).unwrap();
    assert!(data.source(SourceKind::Domain).is_none());
    let stats = &data.source(SourceKind::General).unwrap().stats;
    assert_eq!(stats.train.tokens, stats.train.bytes);
    assert_eq!(data.bytes_per_token(SourceKind::General), Some(1.0));
    let err = data.sampler(0.1, 4, 16, 0).unwrap_err().to_string();
    assert!(err.contains("needs a domain source"), "{err}");
    let err = prepare_with(&cfg, &options(200, cache.path(), cache.path())).unwrap_err();
    assert!(matches!(err, DataError::VocabularyTooSmall { minimum: 256, .. }), "{err}");
    let err = prepare_with(&config(SMALL), &options(256, cache.path(), cache.path())).unwrap_err().to_string();
    assert!(err.contains("vocab_size 256") && err.contains("at least 257"), "{err}");
}

#[test]
fn text_files_directories_and_globs_with_the_utf8_policy() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    fs::create_dir_all(corpus.join("sub")).unwrap();
    for (i, doc) in documents(80, 1).iter().enumerate() {
        let sub = if i % 2 == 0 { "" } else { "sub/" };
        fs::write(corpus.join(format!("{sub}doc{i}.txt")), doc).unwrap();
    }
    fs::write(corpus.join("empty.txt"), "").unwrap();
    fs::write(corpus.join("latin1.txt"), b"caf\xe9 au lait\n").unwrap();
    fs::write(corpus.join("image.png"), b"\x89PNG").unwrap();
    // One long file is cut into documents at line ends.
    let long: String = documents(40, 2).concat();
    fs::write(dir.path().join("book.md"), &long).unwrap();
    let cache = dir.path().join("cache");
    let text = r#"
        general = { type = "files", paths = ["corpus", "*.md"] }
        domain = "none"
        tokenizer = "byte"
        max_document_bytes = 4096
    "#;
    let data = prepare_with(&config(text), &options(256, &cache, dir.path())).unwrap();
    let stats = &data.source(SourceKind::General).unwrap().stats;
    assert_eq!(stats.skipped.invalid_utf8, 1);
    assert_eq!(stats.skipped.empty_files, 1);
    let total_docs = stats.train.documents + stats.validation.documents;
    assert!(total_docs >= 80 + (long.len() as u64 / 4096), "{total_docs} documents");
    let all_bytes: u64 = documents(80, 1).iter().map(|d| d.len() as u64).sum::<u64>() + long.len() as u64;
    assert_eq!(stats.train.bytes + stats.validation.bytes, all_bytes, "every valid byte is in a shard, the PNG is not");

    let failing = text.replace("tokenizer = \"byte\"", "tokenizer = \"byte\"\non_invalid_utf8 = \"fail\"");
    let err = prepare_with(&config(&failing), &options(256, &cache, dir.path())).unwrap_err().to_string();
    assert!(
        err.contains("latin1.txt") && err.contains("invalid UTF-8 at byte 3") && err.contains("on_invalid_utf8"),
        "{err}"
    );

    let missing = r#"general = { type = "files", paths = ["nowhere/*.txt"] }"#;
    let err = prepare_with(&config(missing), &options(256, &cache, dir.path())).unwrap_err().to_string();
    assert!(err.contains("general source") && err.contains("nowhere/*.txt") && err.contains("no files match"), "{err}");
    let missing = r#"general = { type = "files", paths = ["corpus/absent.txt"] }"#;
    let err = prepare_with(&config(missing), &options(256, &cache, dir.path())).unwrap_err().to_string();
    assert!(err.contains("absent.txt") && err.contains("no such file"), "{err}");
    let empty = r#"general = { type = "files", paths = ["corpus/empty.txt"] }"#;
    let err = prepare_with(&config(empty), &options(256, &cache, dir.path())).unwrap_err().to_string();
    assert!(err.contains("empty.txt") && err.contains("empty"), "{err}");
}

#[test]
fn a_single_document_corpus_cannot_hold_out_validation() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("one.txt"), "just one short document\n").unwrap();
    let text = r#"
        general = { type = "files", paths = ["one.txt"] }
        domain = "none"
        tokenizer = "byte"
    "#;
    let err = prepare_with(&config(text), &options(256, &dir.path().join("c"), dir.path())).unwrap_err().to_string();
    assert!(err.contains("general source"), "{err}");
    assert!(err.contains("validation") || err.contains("no training text"), "{err}");
}

#[test]
fn jsonl_and_parquet_sources_read_their_text_field() {
    let dir = tempfile::tempdir().unwrap();
    let docs = documents(60, 3);
    let mut jsonl = String::new();
    for (i, d) in docs.iter().enumerate() {
        jsonl += &serde_json::json!({ "id": i, "content": d }).to_string();
        jsonl += "\n";
    }
    fs::write(dir.path().join("a.jsonl"), jsonl).unwrap();
    let mut rows: Vec<&[u8]> = docs.iter().map(|d| d.as_bytes()).collect();
    rows.push(b"bad \xff bytes");
    write_parquet(&dir.path().join("b.parquet"), "text", &rows);
    let cache = dir.path().join("cache");
    let text = r#"
        general = { type = "jsonl", paths = ["a.jsonl"], field = "content" }
        domain = { type = "parquet", paths = ["."] }
        tokenizer = "byte"
    "#;
    let data = prepare_with(&config(text), &options(256, &cache, dir.path())).unwrap();
    let bytes: u64 = docs.iter().map(|d| d.len() as u64).sum();
    for kind in [SourceKind::General, SourceKind::Domain] {
        let s = &data.source(kind).unwrap().stats;
        assert_eq!(s.train.documents + s.validation.documents, 60, "{kind}");
        assert_eq!(s.train.bytes + s.validation.bytes, bytes, "{kind}");
        // The split depends on the text only, so the same documents are held out in both.
    }
    assert_eq!(data.source(SourceKind::Domain).unwrap().stats.skipped.invalid_utf8, 1);
    assert_eq!(
        data.source(SourceKind::General).unwrap().stats.validation.bytes,
        data.source(SourceKind::Domain).unwrap().stats.validation.bytes
    );

    let wrong = text.replace("field = \"content\"", "field = \"body\"");
    let err = prepare_with(&config(&wrong), &options(256, &cache, dir.path())).unwrap_err().to_string();
    assert!(err.contains("a.jsonl:1") && err.contains("no field \"body\"") && err.contains("content, id"), "{err}");
    let wrong = text.replace("paths = [\".\"] }", "paths = [\".\"], column = \"body\" }");
    let err = prepare_with(&config(&wrong), &options(256, &cache, dir.path())).unwrap_err().to_string();
    assert!(err.contains("b.parquet") && err.contains("no column \"body\"") && err.contains("text, id"), "{err}");
}

#[test]
fn a_small_corpus_warns_with_its_epoch_count() {
    let cache = tempfile::tempdir().unwrap();
    let cfg = config("builtin_bytes = 60_000\nvalidation_fraction = 0.2\ntokenizer = \"byte\"");
    let data = prepare_with(&cfg, &options(256, cache.path(), cache.path())).unwrap();
    let sampler = data.sampler(0.5, 8, 64, 0).unwrap();
    let train_tokens = data.source(SourceKind::Domain).unwrap().train.len() as f64;
    let steps = 1000;
    let warnings = sampler.repetition_warnings(steps);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    let expected = (steps * 4 * 64) as f64 / (train_tokens - 1.0);
    let epochs = sampler.epochs_after(steps).domain;
    assert!((epochs - expected).abs() / expected < 0.02, "{epochs} vs {expected}");
    assert!(
        warnings[1].contains("domain source") && warnings[1].contains(&format!("{epochs:.2} epochs")),
        "{}",
        warnings[1]
    );
}
