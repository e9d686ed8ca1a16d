//! Tokenizers: byte-level BPE trained with the `tokenizers` crate at a given vocabulary size,
//! a given `tokenizer.json` (local or from the Hub), or plain bytes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

use crate::cache;
use crate::error::DataError;

/// The special token that separates documents in BPE tokenizers trained here.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// Names of document-separator tokens recognised in given tokenizers, in order of preference.
const END_OF_TEXT_NAMES: [&str; 5] = [END_OF_TEXT, "<|end_of_text|>", "</s>", "<eos>", "[SEP]"];

/// Ids below the byte alphabet plus the end-of-text token cannot hold a byte-level BPE.
pub const MIN_BPE_VOCAB: usize = 256 + 1;

/// A tokenizer that turns text into ids and back.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Option<Tokenizer>,
    id_count: usize,
    end_of_text: Option<u32>,
    identity: String,
    description: String,
}

impl TextTokenizer {
    /// One id per byte: 256 ids, no end-of-text token.
    pub fn byte() -> Self {
        Self {
            inner: None,
            id_count: 256,
            end_of_text: None,
            identity: "byte-v1".to_string(),
            description: "byte (256 ids)".to_string(),
        }
    }

    /// Loads a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self, DataError> {
        let json = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        Self::from_json(&json, &path.display().to_string())
    }

    fn from_json(json: &[u8], name: &str) -> Result<Self, DataError> {
        let inner = Tokenizer::from_bytes(json).map_err(|e| DataError::Tokenizer {
            tokenizer: name.to_string(),
            message: format!("not a tokenizer.json that Hugging Face tokenizers can load: {e}"),
        })?;
        let id_count = inner.get_vocab(true).values().map(|&id| id as usize + 1).max().unwrap_or(0);
        let end_of_text = END_OF_TEXT_NAMES.iter().find_map(|t| inner.token_to_id(t));
        Ok(Self {
            inner: Some(inner),
            id_count,
            end_of_text,
            identity: cache::sha256_hex(json),
            description: format!("{name} ({id_count} ids)"),
        })
    }

    /// Trains a byte-level BPE with `vocab_size` ids (bytes, `<|endoftext|>`, merges) on `texts`.
    pub fn train_bpe<S: AsRef<str> + Send>(
        texts: impl Iterator<Item = S> + Send,
        vocab_size: usize,
        show_progress: bool,
    ) -> Result<Self, DataError> {
        let name = format!("bpe (V = {vocab_size})");
        if vocab_size < MIN_BPE_VOCAB {
            return Err(DataError::VocabularyTooSmall {
                vocab_size,
                minimum: MIN_BPE_VOCAB,
                tokenizer: name,
                why: format!("256 byte symbols plus the special token {END_OF_TEXT}"),
            });
        }
        let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(0)
            .show_progress(show_progress)
            .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
            .initial_alphabet(alphabet)
            .build();
        let failed = |e: tokenizers::Error| DataError::Tokenizer { tokenizer: name.clone(), message: e.to_string() };
        // No prefix space, so that decoding returns the text exactly.
        let byte_level = ByteLevel::new(false, false, true);
        let mut tokenizer = TokenizerBuilder::<BPE, NormalizerWrapper, ByteLevel, ByteLevel, ByteLevel>::new()
            .with_model(BPE::default())
            .with_normalizer(None)
            .with_pre_tokenizer(Some(byte_level))
            .with_post_processor(Some(byte_level))
            .with_decoder(Some(byte_level))
            .build()
            .map_err(failed)?;
        tokenizer.train(&mut trainer, texts).map_err(failed)?;
        let json = Tokenizer::from(tokenizer).to_string(false).map_err(failed)?;
        let mut trained = Self::from_json(json.as_bytes(), &name)?;
        trained.description = format!("bpe (V = {vocab_size}, {} ids learned)", trained.id_count);
        Ok(trained)
    }

    /// Saves the tokenizer as `tokenizer.json` (loadable by Hugging Face tokenizers unchanged);
    /// the byte tokenizer has no file form.
    pub fn to_json(&self) -> Option<Result<String, DataError>> {
        self.inner.as_ref().map(|t| {
            t.to_string(false)
                .map_err(|e| DataError::Tokenizer { tokenizer: self.description.clone(), message: e.to_string() })
        })
    }

    /// Token ids of `text` (special tokens written literally in the text are recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, DataError> {
        match &self.inner {
            None => Ok(text.bytes().map(u32::from).collect()),
            Some(t) => t
                .encode_fast(text, false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| DataError::Tokenizer { tokenizer: self.description.clone(), message: e.to_string() }),
        }
    }

    /// The text of `ids` (bytes that do not form UTF-8 are replaced by U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> Result<String, DataError> {
        match &self.inner {
            None => {
                let bytes: Vec<u8> = ids.iter().map(|&i| i as u8).collect();
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            Some(t) => t
                .decode(ids, false)
                .map_err(|e| DataError::Tokenizer { tokenizer: self.description.clone(), message: e.to_string() }),
        }
    }

    /// One more than the largest id the tokenizer can produce.
    pub fn id_count(&self) -> usize {
        self.id_count
    }

    /// The id placed between documents, if the tokenizer has one.
    pub fn end_of_text(&self) -> Option<u32> {
        self.end_of_text
    }

    /// A content hash that identifies the tokenizer (the SHA-256 of its JSON, or `byte-v1`).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// What the tokenizer is, for messages.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Sets the description shown in messages.
    pub(crate) fn with_description(mut self, description: String) -> Self {
        self.description = description;
        self
    }
}

/// Where a trained BPE tokenizer is cached: `<cache>/tokenizers/bpe-v<V>-<key>/tokenizer.json`.
pub(crate) fn bpe_cache_path(cache_dir: &Path, vocab_size: usize, key: &str) -> PathBuf {
    cache_dir.join("tokenizers").join(format!("bpe-v{vocab_size}-{}", &key[..16])).join("tokenizer.json")
}
