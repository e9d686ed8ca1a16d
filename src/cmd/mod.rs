//! One module per command: its arguments and a `run` that wires the crates together.

pub mod bench;
pub mod data;
pub mod fit;
pub mod init;
pub mod plan;
pub mod report;
pub mod run;
pub mod slurm;
pub mod status;
pub mod worker;
