# Everyday commands. Tests and benchmarks run optimised: unoptimised candle is 10x+ slower.

default:
    @just --list

# Build the sweep binary (CPU).
build:
    cargo build --release

# Build with CUDA (needs the CUDA toolkit; see docs/gpu.md).
build-cuda:
    cargo build --release --features cuda

# The whole test suite, as CI runs it.
test:
    cargo test --release --workspace

# The quickstart sweep on built-in data, on the CPU.
quickstart:
    cargo run --release -- run configs/quickstart.toml

# A simulated sweep (seconds): plan, run, status.
simulate:
    cargo run --release -- run configs/simulate.toml

# Benchmarks (see docs/benchmarks.md for recorded numbers).
bench:
    cargo bench

# A one-node Slurm on this machine (root; Debian/Ubuntu): for tests/slurm.rs and trying `sweep slurm`.
slurm-local:
    bash scripts/slurm-local.sh start
