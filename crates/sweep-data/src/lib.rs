//! Text for scaling-law sweeps: everything between "where is the text" and "the next batch of
//! token ids".
//!
//! * Sources ([`SourceConfig`]): built-in synthetic languages whose entropy rate is known
//!   exactly ([`Language`]), text files, JSON Lines, Parquet, and Hugging Face Hub datasets.
//! * Tokenizers ([`TextTokenizer`]): byte-level BPE trained per vocabulary size and cached, a
//!   given `tokenizer.json` (local or from the Hub), or plain bytes.
//! * Token shards ([`TokenShard`]): each source tokenized once into memory-mapped train and
//!   validation shards, cached by (text, tokenizer) and shared by every point of a sweep.
//! * Batches ([`MixtureSampler`]): a fraction r of rows from the domain source, a pure function
//!   of (seed, step), so a run resumes at step k without replaying anything.
//!
//! # The `[data]` section
//!
//! ```toml
//! [data]
//! general = { type = "builtin", language = "prose" }   # builtin | files | jsonl | parquet | hub
//! domain  = { type = "builtin", language = "code" }    # or "none"
//! # general = { type = "files", paths = ["corpus/**/*.txt"] }            # also: extensions = [...]
//! # general = { type = "jsonl", paths = ["data/*.jsonl"], field = "text" }
//! # general = { type = "parquet", paths = ["data/"], column = "text" }
//! # domain  = { type = "hub", repo = "org/name", revision = "main", files = ["data/*.parquet"], column = "text" }
//! tokenizer = "bpe"                 # "bpe" (trained per vocab_size), "byte", { file = "tok.json" },
//!                                   # { hub = "org/name", revision = "main" }
//! tokenizer_sample_bytes = 2_000_000  # BPE training text, split evenly between the sources
//! validation_fraction = 0.05        # documents held out per source, chosen by a hash of their text
//! builtin_bytes = 4_000_000         # text generated per built-in language
//! max_document_bytes = 65_536       # longer text files are cut into documents at line ends
//! on_invalid_utf8 = "skip"          # or "fail"
//! seed = 0                          # generated text and the train/validation split
//! ```
//!
//! Every key is optional; the defaults are the values shown. Unknown keys are rejected with the
//! nearest valid key, and errors name the key path (`data.general.paths: is required, ...`).
//! Relative paths start at [`PrepareOptions::base_dir`] (the config file's directory when the
//! caller knows it).
//! The hub is reached through `HF_ENDPOINT`, cached in `HF_HUB_CACHE` or `HF_HOME/hub`, and not
//! contacted at all with `HF_HUB_OFFLINE=1`; when it cannot be reached the cache is used.
//!
//! # Example
//!
//! ```no_run
//! use sweep_data::{prepare, DataConfig, SourceKind};
//!
//! let table: toml::Value = toml::from_str(r#"general = { type = "builtin", language = "prose" }"#)?;
//! let config = DataConfig::from_toml(table)?;
//! let data = prepare(&config, 4096, "out/cache/data".as_ref(), true)?;
//! let sampler = data.sampler(0.25, 16, 128, 7)?;
//! let batch = sampler.batch(1000); // the same batch on every run, resumed or not
//! assert_eq!(batch.inputs.len(), 16 * 128);
//! println!(
//!     "bytes/token {:.2}, irreducible loss {:?} nats/byte",
//!     data.bytes_per_token(SourceKind::General).unwrap(),
//!     data.entropy_nats_per_byte(SourceKind::General),
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cache;
pub mod cli;
mod config;
mod error;
pub mod estimate;
mod hub;
mod language;
mod prepare;
pub mod rng;
mod sampler;
mod shard;
mod source;
mod tokenizer;
pub mod unigram;

pub use config::{DataConfig, InvalidUtf8, SourceConfig, TokenizerConfig};
pub use error::DataError;
pub use hub::HubSettings;
pub use language::{Automaton, AutomatonBuilder, EntropyRate, Language, TextLoss};
pub use prepare::{prepare, prepare_with, PrepareOptions, PreparedData, PreparedSource, SourceStats, SplitStats};
pub use sampler::{Batch, MixtureSampler, SourceEpochs, SourceRows, ValidationSet};
pub use shard::{TokenShard, TokenWidth};
pub use source::{SkipReport, SourceKind};
pub use tokenizer::{TextTokenizer, END_OF_TEXT, MIN_BPE_VOCAB};
pub use unigram::Unigram;
