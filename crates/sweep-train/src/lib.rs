//! sweep-train: training backends behind `sweep_store::Trainer`.
//!
//! * [`trainer::CandleTrainer`]: a decoder-only transformer ([`model`]) trained with AdamW
//!   ([`optim`]) on candle, resumable bit for bit on the CPU, exporting a Llama-style model.
//! * [`simulate::SimulateTrainer`]: loss curves drawn from a stated law plus seeded noise, for
//!   planning grids and testing the pipeline in seconds.
//! * [`dispatch::Dispatch`]: what a worker runs, each point with the backend its config names.
//!
//! ```no_run
//! use sweep_store::Trainer;
//! let trainer = sweep_train::simulate::SimulateTrainer;
//! assert_eq!(trainer.name(), "simulate");
//! ```

pub mod bench;
pub mod dispatch;
pub mod divergence;
pub mod export;
pub mod fused;
pub mod model;
pub mod optim;
pub mod precision;
pub mod quant;
pub mod rng;
pub mod simulate;
pub mod trainer;
