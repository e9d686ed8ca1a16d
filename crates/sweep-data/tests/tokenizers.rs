//! Tokenizers: trained BPE round-trips text exactly, saves as a tokenizer.json that loads back
//! and encodes the same, and refuses vocabularies too small for the byte alphabet.

use sweep_data::{DataError, Language, TextTokenizer, END_OF_TEXT, MIN_BPE_VOCAB};

fn training_text() -> Vec<String> {
    let mut docs = Language::Prose.automaton().sample_documents(1, 150_000);
    docs.extend(Language::Code.automaton().sample_documents(1, 150_000));
    docs
}

/// Text the tokenizer never saw, with everything that breaks careless tokenizers.
fn awkward_texts() -> Vec<String> {
    let mut texts: Vec<String> = vec![
        "  leading spaces, trailing spaces   ".into(),
        "tabs\tand\r\nwindows line ends\n\n\n".into(),
        "Unicode: naïve café, 東京, emoji 🦀🚀, combining e\u{301}, RTL שלום".into(),
        format!("a special token in the text: {END_OF_TEXT} stays text"),
        "".into(),
        " ".into(),
        "x".into(),
    ];
    texts.push(Language::Prose.automaton().sample_text(99, 5_000));
    texts.push(Language::Code.automaton().sample_text(99, 5_000));
    texts
}

#[test]
fn trained_bpe_round_trips_text_exactly() {
    let docs = training_text();
    let sample = Language::Prose.automaton().sample_text(5, 20_000);
    let mut previous_tokens = usize::MAX;
    for v in [MIN_BPE_VOCAB, 512, 2048] {
        let tok = TextTokenizer::train_bpe(docs.iter(), v, false).unwrap();
        assert!(tok.id_count() <= v && tok.id_count() > 256, "V {v}: {} ids", tok.id_count());
        assert!(tok.end_of_text().is_some());
        for text in awkward_texts() {
            let ids = tok.encode(&text).unwrap();
            assert!(ids.iter().all(|&id| (id as usize) < v));
            assert_eq!(tok.decode(&ids).unwrap(), text, "V {v}");
        }
        // No merges fit at the minimum (one token per byte); larger vocabularies compress better.
        let tokens = tok.encode(&sample).unwrap().len();
        if v == MIN_BPE_VOCAB {
            assert_eq!(tokens, sample.len());
        } else {
            assert!(tokens < previous_tokens, "V {v}: {tokens} tokens, {previous_tokens} at the smaller V");
        }
        previous_tokens = tokens;
    }
}

#[test]
fn saved_tokenizer_json_loads_back_and_encodes_the_same() {
    let docs = training_text();
    let tok = TextTokenizer::train_bpe(docs.iter(), 1024, false).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, tok.to_json().unwrap().unwrap()).unwrap();
    let loaded = TextTokenizer::from_file(&path).unwrap();
    assert_eq!(loaded.identity(), tok.identity());
    assert_eq!(loaded.id_count(), tok.id_count());
    assert_eq!(loaded.end_of_text(), tok.end_of_text());
    for text in awkward_texts() {
        assert_eq!(loaded.encode(&text).unwrap(), tok.encode(&text).unwrap());
    }
    // The file is a standard Hugging Face tokenizer.json: byte-level BPE with the special token.
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(json["model"]["type"], "BPE");
    assert_eq!(json["pre_tokenizer"]["type"], "ByteLevel");
    assert_eq!(json["decoder"]["type"], "ByteLevel");
    assert_eq!(json["added_tokens"][0]["content"], END_OF_TEXT);
}

#[test]
fn training_is_deterministic() {
    let docs = training_text();
    let a = TextTokenizer::train_bpe(docs.iter(), 700, false).unwrap();
    let b = TextTokenizer::train_bpe(docs.iter(), 700, false).unwrap();
    assert_eq!(a.identity(), b.identity());
}

#[test]
fn byte_tokenizer_round_trips_and_has_256_ids() {
    let tok = TextTokenizer::byte();
    assert_eq!(tok.id_count(), 256);
    assert_eq!(tok.end_of_text(), None);
    for text in awkward_texts() {
        let ids = tok.encode(&text).unwrap();
        assert_eq!(ids.len(), text.len());
        assert_eq!(tok.decode(&ids).unwrap(), text);
    }
}

#[test]
fn a_vocabulary_below_the_byte_alphabet_plus_specials_is_refused() {
    let err = TextTokenizer::train_bpe(["some text"].into_iter(), 256, false).unwrap_err();
    assert!(matches!(err, DataError::VocabularyTooSmall { minimum: 257, .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("vocab_size 256") && message.contains("at least 257"), "{message}");
}

#[test]
fn a_file_that_is_not_a_tokenizer_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, "{\"not\": \"a tokenizer\"}").unwrap();
    let err = TextTokenizer::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json") && err.contains("not a tokenizer.json"), "{err}");
}
