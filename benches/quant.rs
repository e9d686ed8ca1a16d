//! Fake-quantisation throughput: `cargo bench --bench quant`.
//!
//! Measures elements/s of `fake_quant` on a 256x1024 f32 tensor for e4m3 (per tensor), e2m1-b32,
//! int4-channel and the block formats' scale rules (mxfp8-e4m3 and mxfp4 with E8M0 scales,
//! e4m3-b32-ue4m3 and nvfp4 with E4M3 scales under a per-tensor scale), with 1 and 2 threads (each thread count runs in a child process with
//! RAYON_NUM_THREADS set, which both rayon and candle's matmul obey), against a plain f32 copy
//! and a matmul of the same tensor as a linear layer's weight (256 tokens x 1024 in -> 256 out).
//! A plain harness: warmup, then repeated timed samples; prints the median and the best sample.
//! QUANT_BENCH_FILTER=e2m1 keeps only the formats whose name contains that text. Run without
//! `--bench` (as `cargo test --benches` does) it only smoke-tests each case once.

use candle_core::{Device, Tensor};
use std::hint::black_box;
use std::time::{Duration, Instant};
use sweep_plan::config::Rounding;
use sweep_plan::precision::PrecisionSpec;
use sweep_train::quant::{fake_quant, quantize_slice, QuantConfig};

const ROWS: usize = 256;
const COLS: usize = 1024;
const SAMPLES: usize = 15;
const SAMPLE_TIME: Duration = Duration::from_millis(40);

fn main() {
    match std::env::var("QUANT_BENCH_THREADS") {
        Ok(threads) => run(&threads),
        Err(_) => {
            let exe = std::env::current_exe().expect("the bench knows its own path");
            let quick = !std::env::args().any(|a| a == "--bench");
            if quick {
                println!("smoke run (no --bench): one call per case, not a measurement");
            }
            println!(
                "| threads | case | median ms | best ms | CPU ms | elements/s (median) | vs f32 copy | vs matmul |"
            );
            println!("|---|---|---|---|---|---|---|---|");
            for threads in ["1", "2"] {
                let status = std::process::Command::new(&exe)
                    .env("QUANT_BENCH_THREADS", threads)
                    .env("RAYON_NUM_THREADS", threads)
                    .env("QUANT_BENCH_QUICK", if quick { "1" } else { "" })
                    .status()
                    .expect("the bench can run itself");
                assert!(status.success(), "bench child with {threads} threads failed");
            }
        }
    }
}

/// CPU seconds used by this process so far (all threads): unlike wall time, it does not grow
/// while the process waits for a core that other work holds.
fn process_cpu_seconds() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid pointer it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Seconds per iteration: median and best wall time, and median process CPU time.
struct Timing {
    median: f64,
    best: f64,
    cpu: f64,
}

/// Times `f`: a warmup, then SAMPLES samples of enough iterations to last SAMPLE_TIME.
fn time(mut f: impl FnMut()) -> Timing {
    if std::env::var("QUANT_BENCH_QUICK").is_ok_and(|v| !v.is_empty()) {
        let (t, c) = (Instant::now(), process_cpu_seconds());
        f();
        let (wall, cpu) = (t.elapsed().as_secs_f64(), process_cpu_seconds() - c);
        return Timing { median: wall, best: wall, cpu };
    }
    let start = Instant::now();
    let mut warm = 0u32;
    while warm < 3 || start.elapsed() < SAMPLE_TIME {
        f();
        warm += 1;
    }
    let per = start.elapsed().as_secs_f64() / warm as f64;
    let iters = ((SAMPLE_TIME.as_secs_f64() / per).ceil() as u32).max(1);
    let (mut wall, mut cpu): (Vec<f64>, Vec<f64>) = (0..SAMPLES)
        .map(|_| {
            let (t, c) = (Instant::now(), process_cpu_seconds());
            for _ in 0..iters {
                f();
            }
            (t.elapsed().as_secs_f64() / iters as f64, (process_cpu_seconds() - c) / iters as f64)
        })
        .unzip();
    wall.sort_by(|a, b| a.partial_cmp(b).unwrap());
    cpu.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Timing { median: wall[SAMPLES / 2], best: wall[0], cpu: cpu[SAMPLES / 2] }
}

fn run(threads: &str) {
    let n = ROWS * COLS;
    let data: Vec<f32> = (0..n as u64).map(|i| sweep_train::rng::normal(1, 2, i) as f32).collect();
    let x = Tensor::from_vec(data.clone(), (ROWS, COLS), &Device::Cpu).unwrap();
    let tokens = Tensor::from_vec(data.clone(), (ROWS, COLS), &Device::Cpu).unwrap();

    let mut buf = data.clone();
    let copy = time(|| {
        buf.copy_from_slice(black_box(&data));
        black_box(&buf);
    });
    let matmul = time(|| {
        black_box(tokens.matmul(&x.t().unwrap()).unwrap());
    });
    let (copy_s, matmul_s) = (copy.median, matmul.median);
    let row = |case: &str, t: Timing| {
        println!(
            "| {threads} | {case} | {:.3} | {:.3} | {:.3} | {:.3e} | {:.1}x | {:.3}x |",
            t.median * 1e3,
            t.best * 1e3,
            t.cpu * 1e3,
            n as f64 / t.median,
            t.median / copy_s,
            t.median / matmul_s
        );
    };
    row("f32 copy (memcpy)", copy);
    row("matmul 256x1024 · (256x1024)^T", matmul);
    for (name, rounding) in [
        ("fp8-e4m3", Rounding::Nearest),
        ("e2m1-b32", Rounding::Nearest),
        ("int4-channel", Rounding::Nearest),
        ("fp8-e4m3", Rounding::Stochastic),
        ("e2m1-b32", Rounding::Stochastic),
        // The scale rules of the block formats: E8M0 (OCP MX) and E4M3 (NVFP4) scales.
        ("mxfp8-e4m3", Rounding::Nearest),
        ("e4m3-b32-ue4m3", Rounding::Nearest),
        ("mxfp4", Rounding::Nearest),
        ("nvfp4", Rounding::Nearest),
    ] {
        if std::env::var("QUANT_BENCH_FILTER").is_ok_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let spec = PrecisionSpec::parse(name).unwrap();
        let q = QuantConfig::from_spec(&spec, rounding, 0).unwrap().unwrap();
        let label = format!("{} {}", q.name, if rounding == Rounding::Nearest { "nearest" } else { "stochastic" });
        row(
            &format!("fake_quant {label}"),
            time(|| {
                black_box(fake_quant(&x, &q).unwrap());
            }),
        );
        let mut buf = data.clone();
        row(
            &format!("quantize_slice (in place) {label}"),
            time(|| {
                buf.copy_from_slice(&data);
                quantize_slice(&mut buf, COLS, &q, 0).unwrap();
                black_box(&buf);
            }),
        );
    }
}
