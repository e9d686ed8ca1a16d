//! sweep-io: the two file-level chores every sweep crate shares, done one way.
//!
//! * [`config`]: reads a TOML (or JSON) value into a serde type, with errors that name the dotted
//!   key path (`data.general.paths`), say what to change, and suggest the nearest valid key for a
//!   typo; [`config::Locator`] turns a key path into a line and column of the file.
//! * [`atomic`]: writes files and directories so that readers see them whole or not at all
//!   (a [`tempfile`] beside the target, fsync, rename, fsync of the directory), including an
//!   exclusive create that never replaces what is there (leases, results).
//!
//! ```
//! use serde::Deserialize;
//! use sweep_io::config::{self, Section};
//!
//! #[derive(Debug, Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Train {
//!     batch_size: u64,
//! }
//! impl Section for Train {
//!     const KEY: &'static str = "train";
//! }
//!
//! let value: toml::Value = toml::from_str("bach_size = 8")?;
//! let err = config::read_section::<Train>(value).unwrap_err();
//! assert_eq!(err.key, "train.bach_size");
//! assert!(err.message.contains("did you mean \"batch_size\""));
//!
//! let dir = tempfile::tempdir()?;
//! let result = dir.path().join("result.json");
//! assert!(sweep_io::atomic::create_new(&result, b"{}\n")?);
//! assert!(!sweep_io::atomic::create_new(&result, b"{\"other\": 1}\n")?); // never replaced
//! sweep_io::atomic::write(&dir.path().join("status.json"), b"{}\n")?; // replaces
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod atomic;
pub mod config;
