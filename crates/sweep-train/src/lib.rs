//! sweep-train: training backends behind `sweep_store::Trainer`.
//!
//! Today: the `simulate` backend, which draws each point's loss curve from a stated law plus
//! seeded noise, writes metrics and checkpoints like a real trainer, and honours stop/resume.
//! The candle trainer (issue 4) will live here too.
//!
//! ```no_run
//! use sweep_store::Trainer;
//! let trainer = sweep_train::simulate::SimulateTrainer;
//! assert_eq!(trainer.name(), "simulate");
//! ```

pub mod divergence;
pub mod quant;
pub mod rng;
pub mod simulate;
