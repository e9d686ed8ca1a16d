//! The crate's error type: every message names the key, file or value at fault and what to change.

use std::path::PathBuf;

/// Everything that can go wrong between "where is the text" and "the next batch".
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A `[data]` key has a bad value; `key` is the full path such as `data.general.type`.
    #[error("{key}: {message}")]
    Config {
        /// The key path, e.g. `data.validation_fraction`.
        key: String,
        /// What is wrong and what to change.
        message: String,
    },
    /// A built-in language name that does not exist.
    #[error("unknown built-in language \"{name}\" (allowed: prose, code)")]
    UnknownLanguage {
        /// The name given.
        name: String,
    },
    /// A source's input (a file, a pattern, a record) cannot be used.
    #[error("{source_name} source: {location}: {message}")]
    Input {
        /// `general` or `domain`.
        source_name: String,
        /// The file, pattern or record at fault.
        location: String,
        /// What is wrong and what to change.
        message: String,
    },
    /// The vocabulary size cannot hold the tokenizer's symbols.
    #[error("vocab_size {vocab_size} is too small for tokenizer {tokenizer}: it needs at least {minimum} ({why}); raise vocab_size in the grid or pick another tokenizer")]
    VocabularyTooSmall {
        /// The requested vocabulary size.
        vocab_size: usize,
        /// The smallest workable size.
        minimum: usize,
        /// Which tokenizer.
        tokenizer: String,
        /// Where the minimum comes from.
        why: String,
    },
    /// Training, loading or running a tokenizer failed.
    #[error("tokenizer {tokenizer}: {message}")]
    Tokenizer {
        /// Which tokenizer (kind, file or repository).
        tokenizer: String,
        /// What failed.
        message: String,
    },
    /// The Hugging Face Hub could not provide a file, and the cache has no copy.
    #[error("hub {repo} (revision {revision}): {message}")]
    Hub {
        /// `org/name`.
        repo: String,
        /// Branch, tag or commit.
        revision: String,
        /// What failed and what to change.
        message: String,
    },
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A cached artefact is unreadable or inconsistent.
    #[error("cache {path}: {message}; delete that directory to rebuild it")]
    Cache {
        /// The cache entry.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The sampler was asked for something the prepared data cannot give.
    #[error("sampler: {0}")]
    Sampler(String),
}

impl DataError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), source }
    }

    /// A configuration error at `key`.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        DataError::Config { key: key.into(), message: message.into() }
    }

    /// An input error of source `source_name` at `location`.
    pub fn input(source_name: &str, location: impl Into<String>, message: impl Into<String>) -> Self {
        DataError::Input { source_name: source_name.to_string(), location: location.into(), message: message.into() }
    }
}

impl From<sweep_io::config::KeyError> for DataError {
    fn from(e: sweep_io::config::KeyError) -> Self {
        DataError::Config { key: e.key, message: e.message }
    }
}
