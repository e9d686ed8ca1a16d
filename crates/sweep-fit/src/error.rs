//! The one error type of the fitter: every message says what to change.

use std::path::PathBuf;

/// Everything that can go wrong while reading, fitting or writing laws.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// A `[fit]` setting is wrong; `path` is the key path, e.g. `fit.laws[1].name`.
    #[error("{path}: {message}")]
    Config {
        /// Key path of the offending setting.
        path: String,
        /// What is wrong and what to change.
        message: String,
    },
    /// The results table cannot feed the law (missing column, bad values, too few points).
    #[error("{0}")]
    Data(String),
    /// A user formula does not parse or names something unknown.
    #[error("formula `{formula}`: {message}")]
    Formula {
        /// The formula text as written.
        formula: String,
        /// What is wrong, with the position when known.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A CSV file is malformed.
    #[error("{path}: {message}")]
    Csv {
        /// The CSV file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The optimiser could not produce any finite fit.
    #[error("law {law}: {message}")]
    NoFit {
        /// The law's name.
        law: String,
        /// Why, and what to try.
        message: String,
    },
    /// Serialising or parsing laws.json failed.
    #[error("laws.json: {0}")]
    Json(#[from] serde_json::Error),
}

impl FitError {
    /// A configuration error at `path`.
    pub fn config(path: impl Into<String>, message: impl Into<String>) -> Self {
        FitError::Config { path: path.into(), message: message.into() }
    }
    /// A data error.
    pub fn data(message: impl Into<String>) -> Self {
        FitError::Data(message.into())
    }
}
