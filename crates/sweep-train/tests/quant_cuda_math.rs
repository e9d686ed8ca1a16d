//! The CUDA fake-quantisation kernels (src/quant/fake_quant.cu) compute what the CPU kernel
//! computes, bit for bit: the .cu file's element and group functions are compiled as host C++
//! (tests/fake_quant_host.cpp emulates the three kernels with loops) and compared with
//! `quantize_slice` on every format family, scaling, scale rule and rounding, over special
//! values and over every f32 whose low 16 bits are zero. Needs a C++ compiler (CI has g++).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use sweep_plan::config::Rounding;
use sweep_plan::precision::Scaling;
use sweep_train::quant::cuda::kernel_params;
use sweep_train::quant::{quantize_slice, QuantConfig, ScaleRule};

mod common;
use common::formats;

/// The host build of the kernels, compiled once per test process.
fn host_binary() -> Option<PathBuf> {
    static BIN: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BIN.get_or_init(compile_host).clone()
}

fn compile_host() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fake_quant_host");
    for cxx in ["c++", "g++", "clang++"] {
        let status = Command::new(cxx)
            .args(["-O2", "-std=c++17", "-ffp-contract=off", "-o"])
            .arg(&out)
            .arg(dir.join("tests/fake_quant_host.cpp"))
            .status();
        match status {
            Ok(s) if s.success() => return Some(out),
            Ok(s) => {
                panic!("{cxx} failed to compile tests/fake_quant_host.cpp ({s}): the .cu source does not build as C++")
            }
            Err(_) => continue,
        }
    }
    None
}

/// Runs the host build of the kernels on `x` (rows of `row_len`) with `q` as call `counter`.
fn run_host(bin: &PathBuf, q: &QuantConfig, x: &[f32], row_len: usize, counter: u64) -> Vec<u32> {
    let p = kernel_params(q, row_len, counter);
    let mut input = format!(
        "{} {} {} {} {} {} {} {} {} {:x} {} {:x} {}\n",
        p.mode,
        p.row_len,
        p.block.max(1),
        p.rule,
        p.emax,
        p.shift,
        p.man_bits,
        p.emin,
        p.bias,
        p.max.to_bits(),
        p.stochastic,
        p.key,
        x.len()
    );
    for v in x {
        input.push_str(&format!("{:x}\n", v.to_bits()));
    }
    let mut child = Command::new(bin).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "host kernel exited with {}", out.status);
    String::from_utf8(out.stdout).unwrap().lines().map(|l| u32::from_str_radix(l, 16).unwrap()).collect()
}

fn check(bin: &PathBuf, q: &QuantConfig, x: &[f32], row_len: usize, counter: u64, what: &str) {
    let mut want = x.to_vec();
    quantize_slice(&mut want, row_len, q, counter).unwrap();
    let got = run_host(bin, q, x, row_len, counter);
    assert_eq!(got.len(), x.len());
    for (i, (&g, w)) in got.iter().zip(&want).enumerate() {
        let same = g == w.to_bits() || (f32::from_bits(g).is_nan() && w.is_nan());
        assert!(
            same,
            "{what} {}: element {i} = {:e} ({:#x}): CUDA source gives {:e} ({g:#x}), CPU kernel {:e} ({:#x})",
            q.name,
            x[i],
            x[i].to_bits(),
            f32::from_bits(g),
            w,
            w.to_bits()
        );
    }
}

/// Values of many magnitudes in rows of 48, with specials sprinkled in.
fn mixed_input(rows: usize, row_len: usize) -> Vec<f32> {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let specials = [
        0.0,
        -0.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e-40,
        -3e-39,
        0.5,
        1.5,
        2.5,
        -448.0,
        449.0,
        6.5e4,
        f32::MAX,
        f32::MIN_POSITIVE,
    ];
    (0..rows * row_len)
        .map(|i| {
            let r = next();
            if i % 7 == 3 {
                return specials[(r % specials.len() as u64) as usize];
            }
            let mant = (r >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            let exp = ((r >> 3) % 24) as i32 - 12 + (i / row_len) as i32 * 3;
            (mant * 2f64.powi(exp)) as f32
        })
        .collect()
}

#[test]
fn cuda_kernel_source_matches_the_cpu_kernel() {
    let Some(bin) = host_binary() else {
        eprintln!("\n*** SKIP cuda_kernel_source_matches_the_cpu_kernel: no C++ compiler (c++, g++, clang++); this check did NOT run ***\n");
        return;
    };
    let (rows, row_len) = (6, 48);
    let x = mixed_input(rows, row_len);
    let mut cases = 0;
    for format in formats() {
        for scaling in [Scaling::Tensor, Scaling::Channel, Scaling::Block(32), Scaling::Block(64)] {
            for rule in [ScaleRule::AbsMax, ScaleRule::PowerOfTwo, ScaleRule::Unit, ScaleRule::Ue8m0, ScaleRule::Ue4m3]
            {
                for rounding in [Rounding::Nearest, Rounding::Stochastic] {
                    let q = QuantConfig::new(format, scaling, rounding, 1234).unwrap().with_scale_rule(rule);
                    check(&bin, &q, &x, row_len, 7, &format!("{scaling:?} {rule:?} {rounding:?}"));
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, formats().len() * 4 * 5 * 2);
}

#[test]
fn cuda_rounding_matches_on_every_f32_with_zero_low_bits() {
    let Some(bin) = host_binary() else {
        eprintln!("\n*** SKIP cuda_rounding_matches_on_every_f32_with_zero_low_bits: no C++ compiler; this check did NOT run ***\n");
        return;
    };
    // Every sign, exponent and top-7 mantissa pattern, including NaN, infinities and subnormals;
    // a plain saturating cast (unit scale) so each value meets the format's rounding directly.
    let x: Vec<f32> = (0..=u16::MAX).map(|h| f32::from_bits((h as u32) << 16)).collect();
    for format in formats() {
        for rounding in [Rounding::Nearest, Rounding::Stochastic] {
            let q = QuantConfig::new(format, Scaling::Tensor, rounding, 99).unwrap().with_scale_rule(ScaleRule::Unit);
            check(&bin, &q, &x, 256, 3, &format!("all patterns {rounding:?}"));
        }
    }
}
