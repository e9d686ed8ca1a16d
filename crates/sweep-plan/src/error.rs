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

/// An error found while resolving values, before it is located in the file, and the one
/// "did you mean" helper: both shared by every crate that reads a section of the config.
pub use sweep_io::config::{did_you_mean, nearest, KeyError};
