//! sweep-fit: fit scaling laws to a table of training results, with bootstrap intervals,
//! extrapolation checks and optimal configurations, and write them as laws.json.
//!
//! It needs only a table (from a sweep directory or any CSV): the built-in laws are Chinchilla
//! (approaches 1, 2 and 3), Kaplan, D-CPT (general and domain loss), the critical mixture ratio,
//! the vocabulary law, data-constrained scaling (repeated data), floating-point quantised
//! training and quantisation degradation; users can add a law as a formula in TOML. Fits
//! minimise a summed Huber loss with L-BFGS from a grid of starts, in parallel. Each law counts
//! parameters and compute by its paper's convention unless told otherwise.
//!
//! ```
//! use sweep_fit::{fit_all, render_text, FitConfig, Table};
//!
//! // Twelve runs drawn from L = 1.8 + 400/N^0.34 + 2000/D^0.37.
//! let mut rows = Vec::new();
//! for n in [1e7, 3e7, 1e8, 3e8] {
//!     for d in [1e9, 4e9, 1.6e10] {
//!         rows.push(vec![n, d, 1.8 + 400.0 / f64::powf(n, 0.34) + 2000.0 / f64::powf(d, 0.37)]);
//!     }
//! }
//! let table = Table::from_rows(&["N", "D", "loss"], &rows, "example").unwrap();
//! let config = FitConfig::from_toml_str(r#"
//!     laws = [{ name = "chinchilla" }]
//!     bootstrap = { resamples = 0 }
//!     optimal = { budgets = [1e21] }
//! "#).unwrap();
//! let laws = fit_all(&table, None, &config).unwrap();
//! assert!((laws.laws[0].params["alpha"].estimate - 0.34).abs() < 0.01);
//! // The table has N, not N_total: Chinchilla's all-parameter count is assumed for it.
//! assert!(laws.laws[0].counting.as_ref().unwrap().assumed);
//! println!("{}", render_text(&laws));
//! ```

pub mod approaches;
pub mod bands;
pub mod bootstrap;
pub mod cmr;
pub mod config;
pub mod counting;
pub mod data_constrained;
pub mod error;
pub mod expr;
pub mod fit;
pub mod law;
pub mod laws;
pub mod optimal;
pub mod output;
pub mod precision_law;
pub mod run;
pub mod table;

pub use config::{FitConfig, LawConfig};
pub use error::FitError;
pub use law::{Law, Space};
pub use output::{read_laws_json, render_text, write_laws_json, Estimate, LawEntry, LawsFile, LeftOut};
pub use run::{fit_all, fit_all_complete_rows, fit_csv};
pub use table::Table;
