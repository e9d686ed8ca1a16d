//! Errors that point at the place in the config file the user must change.

use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration or planning error, located in the file where possible.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanError {
    /// The config file the error is about.
    pub file: PathBuf,
    /// 1-based line and column, when the offending key or value could be located.
    pub location: Option<(usize, usize)>,
    /// Dotted key path such as `grid.mixture_ratio[2]`; empty for file-level errors.
    pub key: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl PlanError {
    /// An error about the whole file (it cannot be read, say).
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        PlanError { file: file.to_path_buf(), location: None, key: String::new(), message: message.into() }
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.location {
            write!(f, ":{line}:{col}")?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for PlanError {}

/// An error found while resolving values, before it is located in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyError {
    /// Dotted key path, e.g. `grid.mixture_ratio[1]`.
    pub key: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl KeyError {
    /// Builds an error for `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        KeyError { key: key.into(), message: message.into() }
    }
}

/// The nearest candidate to `word` by edit distance, if it is close enough to be a likely typo.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// ` (did you mean "x"?)` or an empty string.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    match nearest(word, candidates) {
        Some(c) => format!(" (did you mean \"{c}\"?)"),
        None => String::new(),
    }
}
