//! The CUDA block kernels (src/fused/block_kernels.cu) and the schedule that launches them
//! (src/fused/cuda_block/schedule.rs), checked without a GPU: the .cu file is compiled as host
//! C++ (tests/block_kernels_host.cpp emulates each launch: the same grid, per-thread work and
//! reduction trees; cuBLAS's gemm as a naive column-major product; allocations poisoned with
//! NaN, freed buffers unmapped, pointer arguments checked against their allocations), and the
//! schedule runs on it through the same `Backend` trait as on CUDA. References are the CPU's
//! fused kernels and fused block and composed candle ops, in f64. Needs a C++ compiler (CI has
//! g++); without one the tests say so and pass.
//!
//! Tolerances (relative L2 error, ||got - want|| / ||want||, and every value finite; measured
//! errors on 2026-11-26 in brackets):
//! - f32 kernels against f64 references: 1e-5 (at most 5e-7); the whole f32 block, forward and
//!   every gradient: 3e-5 (at most 7e-7);
//! - bf16 kernels (inputs and outputs rounded to bf16, f32 arithmetic): 2e-2 (at most 1.8e-3);
//!   whole bf16 blocks against the f64 block: 3e-2 (at most 1.4e-2, in the d = 128 case whose
//!   attention scores have a standard deviation near 2.6; 2e-3 to 7e-3 for d = 24 and 32);
//! - fake-quantised blocks (e4m3, e2m1, int4; gradients and K/V with stochastic rounding)
//!   against the CPU block in f64 (which quantises in f32 with the same kernel): 1e-4 (at most
//!   5e-7). The quantisation is the CPU kernel (equal to the CUDA kernels bit for bit,
//!   tests/quant_cuda_math.rs); a value whose rounding flips between two summation orders moves
//!   by a whole format step, so the reference is the f64 block: the CPU block in f32 differs from
//!   it by 8e-3 on the GELU int4 case below (three rows' roundings flip), this schedule by 3e-8.

use candle_core::{DType, Device, Tensor, Var, D};
use std::cell::RefCell;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::rc::Rc;
use sweep_plan::config::Rounding;
use sweep_plan::precision::Scaling;
use sweep_train::fused::block::{transformer_block, BlockParams, SideGrads};
use sweep_train::fused::cuda_block::schedule::{self, *};
use sweep_train::quant::{quantize_slice, FloatFormat, Format, IntFormat, QuantConfig, QuantTargets};

// ---------------------------------------------------------------------------------------------
// The host "GPU"

fn host_binary() -> Option<PathBuf> {
    static BIN: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("block_kernels_host");
        for cxx in ["c++", "g++", "clang++"] {
            let status = Command::new(cxx)
                .args(["-O2", "-std=c++17", "-ffp-contract=off", "-Wall", "-Werror", "-o"])
                .arg(&out)
                .arg(dir.join("tests/block_kernels_host.cpp"))
                .status();
            match status {
                Ok(s) if s.success() => return Some(out),
                Ok(s) => panic!("{cxx} failed to compile tests/block_kernels_host.cpp ({s}): block_kernels.cu does not build as C++"),
                Err(_) => continue,
            }
        }
        None
    })
    .clone()
}

macro_rules! host_or_skip {
    ($name:literal) => {
        match Host::start() {
            Some(h) => h,
            None => {
                eprintln!("\n*** SKIP {}: no C++ compiler (c++, g++, clang++); this check did NOT run ***\n", $name);
                return;
            }
        }
    };
}

struct Server {
    _child: Child,
    input: BufWriter<ChildStdin>,
    output: BufReader<ChildStdout>,
}

impl Server {
    fn send(&mut self, bytes: &[u8]) {
        self.input.write_all(bytes).unwrap();
    }
    /// Flushes the request and reads the status; Err(message) for a failed request.
    fn status(&mut self) -> Result<(), String> {
        self.input.flush().unwrap();
        let s = self.u32();
        if s == 0 {
            Ok(())
        } else {
            let n = self.u32() as usize;
            let mut m = vec![0u8; n];
            self.output.read_exact(&mut m).unwrap();
            Err(String::from_utf8_lossy(&m).into_owned())
        }
    }
    fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.output.read_exact(&mut b).expect("the host kernel process died");
        u32::from_le_bytes(b)
    }
    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.output.read_exact(&mut b).expect("the host kernel process died");
        u64::from_le_bytes(b)
    }
}

/// The block kernels compiled for the host, behind the schedule's backend trait.
#[derive(Clone)]
struct Host(Rc<RefCell<Server>>);

/// A buffer in the host process; freeing it unmaps it there (a later use is an error).
struct HostBuf {
    ptr: u64,
    server: Rc<RefCell<Server>>,
}

impl Drop for HostBuf {
    fn drop(&mut self) {
        let mut s = self.server.borrow_mut();
        s.send(&7u32.to_le_bytes());
        s.send(&self.ptr.to_le_bytes());
        let _ = s.status();
    }
}

fn err(m: String) -> candle_core::Error {
    candle_core::Error::Msg(m)
}

impl Host {
    fn start() -> Option<Host> {
        let bin = host_binary()?;
        let mut child = Command::new(bin).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let input = BufWriter::new(child.stdin.take().unwrap());
        let output = BufReader::new(child.stdout.take().unwrap());
        Some(Host(Rc::new(RefCell::new(Server { _child: child, input, output }))))
    }
    fn write(&self, ptr: u64, bytes: &[u8]) {
        let mut s = self.0.borrow_mut();
        s.send(&2u32.to_le_bytes());
        s.send(&ptr.to_le_bytes());
        s.send(&(bytes.len() as u64).to_le_bytes());
        s.send(bytes);
        s.status().unwrap();
    }
    fn read(&self, ptr: u64, bytes: usize) -> Vec<u8> {
        let mut s = self.0.borrow_mut();
        s.send(&3u32.to_le_bytes());
        s.send(&ptr.to_le_bytes());
        s.send(&(bytes as u64).to_le_bytes());
        s.status().unwrap();
        let mut v = vec![0u8; bytes];
        s.output.read_exact(&mut v).unwrap();
        v
    }
    fn upload_f32(&self, v: &[f32]) -> HostBuf {
        let b = self.alloc(v.len() * 4).unwrap();
        self.write(b.ptr, &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
        b
    }
    fn upload_bf16(&self, v: &[f32]) -> HostBuf {
        let b = self.alloc(v.len() * 2).unwrap();
        self.write(
            b.ptr,
            &v.iter().flat_map(|x| half::bf16::from_f32(*x).to_bits().to_le_bytes()).collect::<Vec<u8>>(),
        );
        b
    }
    /// Uploads in the element type (bf16 rounds).
    fn upload(&self, v: &[f32], e: Elem) -> HostBuf {
        match e {
            Elem::F32 => self.upload_f32(v),
            Elem::Bf16 => self.upload_bf16(v),
        }
    }
    fn f32s(&self, ptr: u64, n: usize) -> Vec<f32> {
        self.read(ptr, n * 4).chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    }
    fn elems(&self, ptr: u64, n: usize, e: Elem) -> Vec<f32> {
        match e {
            Elem::F32 => self.f32s(ptr, n),
            Elem::Bf16 => self
                .read(ptr, n * 2)
                .chunks_exact(2)
                .map(|c| half::bf16::from_bits(u16::from_le_bytes(c.try_into().unwrap())).to_f32())
                .collect(),
        }
    }
}

impl Backend for Host {
    type Buf = HostBuf;

    fn alloc(&self, bytes: usize) -> candle_core::Result<HostBuf> {
        let mut s = self.0.borrow_mut();
        s.send(&1u32.to_le_bytes());
        s.send(&(bytes as u64).to_le_bytes());
        s.status().map_err(err)?;
        let ptr = s.u64();
        Ok(HostBuf { ptr, server: self.0.clone() })
    }
    fn ptr(&self, buf: &HostBuf) -> Ptr {
        buf.ptr
    }
    fn upload_u32(&self, data: &[u32]) -> candle_core::Result<HostBuf> {
        let b = self.alloc(data.len().max(1) * 4)?;
        self.write(b.ptr, &data.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
        Ok(b)
    }
    fn launch(&self, name: &str, grid: Grid, args: &[Arg]) -> candle_core::Result<()> {
        let mut s = self.0.borrow_mut();
        s.send(&4u32.to_le_bytes());
        s.send(&(name.len() as u32).to_le_bytes());
        s.send(name.as_bytes());
        for v in [grid.blocks.0, grid.blocks.1, grid.threads, grid.shared_bytes, args.len() as u32] {
            s.send(&v.to_le_bytes());
        }
        for a in args {
            let (kind, val) = match *a {
                Arg::Ptr(p) => (0u32, p),
                Arg::U32(v) => (1, v as u64),
                Arg::U64(v) => (2, v),
                Arg::F32(v) => (3, v.to_bits() as u64),
            };
            s.send(&kind.to_le_bytes());
            s.send(&val.to_le_bytes());
        }
        s.status().map_err(|m| err(format!("{name}: {m}")))
    }
    fn gemm(&self, g: &Gemm) -> candle_core::Result<()> {
        let ty = |e: Elem| match e {
            Elem::F32 => 0u32,
            Elem::Bf16 => 1,
        };
        let mut s = self.0.borrow_mut();
        s.send(&5u32.to_le_bytes());
        for v in [g.trans_a as u32, g.trans_b as u32, g.m as u32, g.n as u32, g.k as u32] {
            s.send(&v.to_le_bytes());
        }
        s.send(&g.a.to_le_bytes());
        s.send(&ty(g.a_type).to_le_bytes());
        s.send(&(g.lda as u32).to_le_bytes());
        s.send(&g.b.to_le_bytes());
        s.send(&ty(g.b_type).to_le_bytes());
        s.send(&(g.ldb as u32).to_le_bytes());
        s.send(&g.beta.to_le_bytes());
        s.send(&g.c.to_le_bytes());
        s.send(&ty(g.c_type).to_le_bytes());
        s.send(&(g.ldc as u32).to_le_bytes());
        s.status().map_err(|m| err(format!("gemm {g:?}: {m}")))
    }
    fn copy(&self, dst: Ptr, src: Ptr, bytes: usize) -> candle_core::Result<()> {
        let mut s = self.0.borrow_mut();
        s.send(&6u32.to_le_bytes());
        for v in [dst, src, bytes as u64] {
            s.send(&v.to_le_bytes());
        }
        s.status().map_err(err)
    }
    fn fake_quant(
        &self,
        src: Ptr,
        n: usize,
        row_len: usize,
        q: &QuantConfig,
        counter: u64,
    ) -> candle_core::Result<HostBuf> {
        // The CPU kernel, which the CUDA kernels equal bit for bit (tests/quant_cuda_math.rs).
        let mut v = self.f32s(src, n);
        quantize_slice(&mut v, row_len, q, counter)?;
        Ok(self.upload_f32(&v))
    }
}

// ---------------------------------------------------------------------------------------------
// Data and comparisons

/// Deterministic values in [-amp, amp).
fn uniform(n: usize, seed: u64, amp: f32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((sweep_train::rng::mix64(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 40) as f32
                / (1u64 << 24) as f32
                * 2.0
                - 1.0)
                * amp
        })
        .collect()
}

fn bf16_round(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| half::bf16::from_f32(*x).to_f32()).collect()
}

fn t64(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.iter().map(|&x| x as f64).collect::<Vec<f64>>(), shape, &Device::Cpu).unwrap()
}

fn vec64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// ||got - want|| / ||want|| (got must be finite everywhere). A reference that is exactly zero
/// (the query gradient of a single-position sequence, where softmax has nothing to shift) is
/// compared in absolute terms: the largest |got| (the inputs are of order 1).
fn rel_l2(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    if got.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let num: f64 = got.iter().zip(want).map(|(&g, &w)| (g as f64 - w).powi(2)).sum();
    let den: f64 = want.iter().map(|w| w * w).sum();
    if den == 0.0 {
        return got.iter().fold(0.0, |m, v| m.max(v.abs() as f64));
    }
    (num / den).sqrt()
}

#[track_caller]
fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    let e = rel_l2(got, want);
    eprintln!("{what}: {e:.2e} (tolerance {tol:.0e})");
    let bad = got.iter().filter(|v| !v.is_finite()).count();
    assert!(
        e <= tol,
        "{what}: relative L2 error {e:.3e} above {tol:.0e} ({bad} non-finite of {}; first got {:?}, want {:?})",
        got.len(),
        &got[..got.len().min(4)],
        &want[..want.len().min(4)]
    );
}

const F32_TOL: f64 = 1e-5;
const BF16_TOL: f64 = 2e-2;

fn tol(e: Elem) -> f64 {
    match e {
        Elem::F32 => F32_TOL,
        Elem::Bf16 => BF16_TOL,
    }
}

/// The values a kernel sees after upload in `e` (bf16 rounds).
fn as_seen(v: &[f32], e: Elem) -> Vec<f32> {
    match e {
        Elem::F32 => v.to_vec(),
        Elem::Bf16 => bf16_round(v),
    }
}

// ---------------------------------------------------------------------------------------------
// Kernel tests

#[test]
fn rms_norm_forward_and_backward_match_the_fused_cpu_kernel() {
    let dev = host_or_skip!("rms_norm_forward_and_backward_match_the_fused_cpu_kernel");
    for (rows, d, e) in [(1usize, 5usize, Elem::F32), (37, 96, Elem::F32), (130, 256, Elem::F32), (70, 40, Elem::Bf16)]
    {
        let (xv, wv, gv, rv) =
            (uniform(rows * d, 1, 2.0), uniform(d, 2, 1.5), uniform(rows * d, 3, 1.0), uniform(rows * d, 4, 1.0));
        let eps = 1e-5;
        // Reference: the fused CPU kernel in f64, its backward through candle.
        let x = Var::from_tensor(&t64(&xv, &[rows, d])).unwrap();
        let w = Var::from_tensor(&t64(&wv, &[d])).unwrap();
        let y = sweep_train::fused::rms_norm(x.as_tensor(), w.as_tensor(), eps).unwrap();
        let g = (y.clone() * t64(&gv, &[rows, d])).unwrap().sum_all().unwrap().backward().unwrap();
        let (dx_ref, dw_ref) = (vec64(g.get(x.as_tensor()).unwrap()), vec64(g.get(w.as_tensor()).unwrap()));
        let dx_ref: Vec<f64> = dx_ref.iter().zip(&rv).map(|(a, &b)| a + b as f64).collect();

        let (xb, wb, gb, rb) = (dev.upload_f32(&xv), dev.upload_f32(&wv), dev.upload_f32(&gv), dev.upload_f32(&rv));
        let yb = dev.alloc(rows * d * e.bytes()).unwrap();
        let rstd = dev.alloc(rows * 4).unwrap();
        schedule::rms_fwd(&dev, xb.ptr, wb.ptr, yb.ptr, e, rstd.ptr, rows, d, eps as f32).unwrap();
        assert_close(&dev.elems(yb.ptr, rows * d, e), &vec64(&y), tol(e), &format!("rms forward {rows}x{d} {e:?}"));
        let (dx, dxc, dw) =
            (dev.alloc(rows * d * 4).unwrap(), dev.alloc(rows * d * e.bytes()).unwrap(), dev.alloc(d * 4).unwrap());
        schedule::rms_bwd(&dev, (xb.ptr, wb.ptr, rstd.ptr, gb.ptr, rb.ptr), dx.ptr, dxc.ptr, e, dw.ptr, rows, d)
            .unwrap();
        assert_close(&dev.f32s(dx.ptr, rows * d), &dx_ref, F32_TOL, &format!("rms dx {rows}x{d}"));
        assert_close(&dev.elems(dxc.ptr, rows * d, e), &dx_ref, tol(e), &format!("rms dx copy {rows}x{d} {e:?}"));
        assert_close(&dev.f32s(dw.ptr, d), &dw_ref, F32_TOL, &format!("rms dw {rows}x{d}"));
    }
}

#[test]
fn rope_with_head_split_forward_and_backward_match_the_cpu() {
    let dev = host_or_skip!("rope_with_head_split_forward_and_backward_match_the_cpu");
    for (b, t, h, hd, e) in
        [(1usize, 1usize, 1usize, 2usize, Elem::F32), (2, 7, 3, 8, Elem::F32), (1, 33, 2, 16, Elem::Bf16)]
    {
        let d = h * hd;
        let n = b * t;
        let qkv = uniform(n * 3 * d, 5, 1.0);
        let seen = as_seen(&qkv, e);
        let inv: Vec<f64> = (0..hd / 2).map(|i| 1.0 / 10_000f64.powf(2.0 * i as f64 / hd as f64)).collect();
        let cos: Vec<f32> = (0..t).flat_map(|p| inv.iter().map(move |f| (p as f64 * f).cos() as f32)).collect();
        let sin: Vec<f32> = (0..t).flat_map(|p| inv.iter().map(move |f| (p as f64 * f).sin() as f32)).collect();
        // Reference: the fused CPU split (f64) of each third.
        let all = t64(&seen, &[b, t, 3 * d]);
        let (c64, s64) = (t64(&cos, &[t, hd / 2]), t64(&sin, &[t, hd / 2]));
        let parts: Vec<Var> = (0..3)
            .map(|i| Var::from_tensor(&all.narrow(2, i * d, d).unwrap().contiguous().unwrap()).unwrap())
            .collect();
        let outs: Vec<Tensor> = parts
            .iter()
            .enumerate()
            .map(|(i, p)| sweep_train::fused::split_heads(p.as_tensor(), &c64, &s64, h, i < 2).unwrap())
            .collect();
        let gq = uniform(n * d * 3, 6, 1.0);
        let gts: Vec<Tensor> = (0..3).map(|i| t64(&gq[i * n * d..(i + 1) * n * d], &[b, h, t, hd])).collect();
        let loss = outs
            .iter()
            .zip(&gts)
            .map(|(o, g)| (o * g).unwrap().sum_all().unwrap())
            .reduce(|a, c| (a + c).unwrap())
            .unwrap();
        let grads = loss.backward().unwrap();

        let qkvb = dev.upload(&qkv, e);
        let (cb, sb) = (dev.upload_f32(&cos), dev.upload_f32(&sin));
        let outb: Vec<HostBuf> = (0..3).map(|_| dev.alloc(n * d * e.bytes()).unwrap()).collect();
        let a = AttnDims { b, h, t, hd };
        schedule::rope_fwd(&dev, qkvb.ptr, cb.ptr, sb.ptr, (outb[0].ptr, outb[1].ptr, outb[2].ptr), a, e).unwrap();
        for i in 0..3 {
            assert_close(
                &dev.elems(outb[i].ptr, n * d, e),
                &vec64(&outs[i]),
                tol(e),
                &format!("rope forward part {i}"),
            );
        }
        let gb: Vec<HostBuf> = (0..3).map(|i| dev.upload_f32(&gq[i * n * d..(i + 1) * n * d])).collect();
        let dqkv = dev.alloc(n * 3 * d * e.bytes()).unwrap();
        schedule::rope_bwd(&dev, (gb[0].ptr, gb[1].ptr, gb[2].ptr), cb.ptr, sb.ptr, dqkv.ptr, a, e).unwrap();
        let got = dev.elems(dqkv.ptr, n * 3 * d, e);
        for i in 0..3 {
            let want = vec64(grads.get(parts[i].as_tensor()).unwrap());
            let got_i: Vec<f32> = got.chunks(3 * d).flat_map(|row| row[i * d..(i + 1) * d].to_vec()).collect();
            assert_close(&got_i, &want, tol(e), &format!("rope backward part {i}"));
        }
    }
}

#[test]
fn swiglu_and_gelu_forward_and_backward_match_the_fused_cpu_kernels() {
    let dev = host_or_skip!("swiglu_and_gelu_forward_and_backward_match_the_fused_cpu_kernels");
    for (rows, f, e) in [(1usize, 3usize, Elem::F32), (29, 70, Elem::F32), (17, 64, Elem::Bf16)] {
        for swiglu in [true, false] {
            let width = if swiglu { 2 * f } else { f };
            let gu = uniform(rows * width, 7, 6.0);
            let seen = as_seen(&gu, e);
            let ga = uniform(rows * f, 8, 1.0);
            let ga_seen = as_seen(&ga, e);
            let all = t64(&seen, &[rows, width]);
            let (y, vars) = if swiglu {
                let g = Var::from_tensor(&all.narrow(1, 0, f).unwrap().contiguous().unwrap()).unwrap();
                let u = Var::from_tensor(&all.narrow(1, f, f).unwrap().contiguous().unwrap()).unwrap();
                (sweep_train::fused::swiglu(g.as_tensor(), u.as_tensor()).unwrap(), vec![g, u])
            } else {
                let u = Var::from_tensor(&all).unwrap();
                (sweep_train::fused::gelu(u.as_tensor()).unwrap(), vec![u])
            };
            let grads = (y.clone() * t64(&ga_seen, &[rows, f])).unwrap().sum_all().unwrap().backward().unwrap();
            let want_d: Vec<f64> = if swiglu {
                let (dg, du) =
                    (vec64(grads.get(vars[0].as_tensor()).unwrap()), vec64(grads.get(vars[1].as_tensor()).unwrap()));
                (0..rows)
                    .flat_map(|r| {
                        dg[r * f..(r + 1) * f].iter().chain(&du[r * f..(r + 1) * f]).copied().collect::<Vec<_>>()
                    })
                    .collect()
            } else {
                vec64(grads.get(vars[0].as_tensor()).unwrap())
            };
            let (gub, gab) = (dev.upload(&gu, e), dev.upload(&ga, e));
            let act = dev.alloc(rows * f * e.bytes()).unwrap();
            schedule::mlp_act_fwd(&dev, gub.ptr, act.ptr, rows, f, swiglu, e).unwrap();
            let what = if swiglu { "swiglu" } else { "gelu" };
            assert_close(
                &dev.elems(act.ptr, rows * f, e),
                &vec64(&y),
                tol(e),
                &format!("{what} forward {rows}x{f} {e:?}"),
            );
            let dgu = dev.alloc(rows * width * e.bytes()).unwrap();
            schedule::mlp_act_bwd(&dev, gub.ptr, gab.ptr, dgu.ptr, rows, f, swiglu, e).unwrap();
            assert_close(
                &dev.elems(dgu.ptr, rows * width, e),
                &want_d,
                tol(e),
                &format!("{what} backward {rows}x{f} {e:?}"),
            );
        }
    }
}

/// Full softmax attention in f64 with candle's composed ops: q, k, v [B, H, T, hd] -> [B, T, H*hd].
fn attention_reference(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
    let (b, h, t, hd) = q.dims4().unwrap();
    let mask: Vec<f64> =
        (0..t).flat_map(|i| (0..t).map(move |j| if j > i { f64::NEG_INFINITY } else { 0.0 })).collect();
    let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu).unwrap();
    let s = (q.matmul(&k.t().unwrap()).unwrap() * (1.0 / (hd as f64).sqrt())).unwrap().broadcast_add(&mask).unwrap();
    let p = candle_nn::ops::softmax(&s, D::Minus1).unwrap();
    p.matmul(v).unwrap().transpose(1, 2).unwrap().reshape((b, t, h * hd)).unwrap()
}

#[test]
fn flash_attention_forward_and_backward_match_full_softmax_attention() {
    let dev = host_or_skip!("flash_attention_forward_and_backward_match_full_softmax_attention");
    // Every kernel variant; T = 1, T within one tile, at a tile edge, past it, several tiles and
    // not a multiple of the tile; odd segment widths.
    let cases = [
        (1usize, 2usize, 1usize, 8usize, Elem::F32),
        (2, 1, 5, 16, Elem::F32),
        (1, 2, 64, 6, Elem::F32),
        (1, 1, 65, 32, Elem::F32),
        (1, 2, 130, 64, Elem::F32),
        (1, 1, 67, 24, Elem::F32),
        (1, 1, 33, 128, Elem::F32),
        (1, 1, 37, 256, Elem::F32),
        (2, 2, 100, 16, Elem::Bf16),
        (1, 1, 70, 64, Elem::Bf16),
    ];
    for (b, h, t, hd, e) in cases {
        let n = b * h * t * hd;
        let (qv, kv, vv) = (uniform(n, 11, 2.0), uniform(n, 12, 2.0), uniform(n, 13, 1.0));
        let gv = uniform(n, 14, 1.0);
        let (qs, ks, vs, gs) = (as_seen(&qv, e), as_seen(&kv, e), as_seen(&vv, e), as_seen(&gv, e));
        let shape = [b, h, t, hd];
        let (q, k, v) = (
            Var::from_tensor(&t64(&qs, &shape)).unwrap(),
            Var::from_tensor(&t64(&ks, &shape)).unwrap(),
            Var::from_tensor(&t64(&vs, &shape)).unwrap(),
        );
        let y = attention_reference(q.as_tensor(), k.as_tensor(), v.as_tensor());
        let grads = (y.clone() * t64(&gs, &[b, t, h * hd])).unwrap().sum_all().unwrap().backward().unwrap();

        let (qb, kb, vb, gb) = (dev.upload(&qv, e), dev.upload(&kv, e), dev.upload(&vv, e), dev.upload(&gv, e));
        let o = dev.alloc(n * e.bytes()).unwrap();
        let lse2 = dev.alloc(b * h * t * 4).unwrap();
        let a = AttnDims { b, h, t, hd };
        schedule::attention_fwd(&dev, (qb.ptr, kb.ptr, vb.ptr), o.ptr, lse2.ptr, a, e).unwrap();
        let what = format!("attention B{b} H{h} T{t} hd{hd} {e:?}");
        assert_close(&dev.elems(o.ptr, n, e), &vec64(&y), tol(e), &format!("{what} forward"));
        let dq = dev.alloc(3 * n * 4).unwrap();
        let (dqp, dkp, dvp) = (dq.ptr, dq.ptr + (n * 4) as u64, dq.ptr + (2 * n * 4) as u64);
        schedule::attention_bwd(&dev, (qb.ptr, kb.ptr, vb.ptr), o.ptr, lse2.ptr, gb.ptr, (dqp, dkp, dvp), a, e)
            .unwrap();
        // bf16: D = rowsum(dO O) uses the bf16-rounded output, and the products run on rounded
        // operands; the gradients themselves are f32.
        let gtol = if e == Elem::F32 { F32_TOL } else { BF16_TOL };
        for (name, p, var) in [("dq", dqp, &q), ("dk", dkp, &k), ("dv", dvp, &v)] {
            assert_close(&dev.f32s(p, n), &vec64(grads.get(var.as_tensor()).unwrap()), gtol, &format!("{what} {name}"));
        }
    }
}

#[test]
fn embedding_gradient_sums_each_tokens_positions_in_order() {
    let dev = host_or_skip!("embedding_gradient_sums_each_tokens_positions_in_order");
    let (vocab, d) = (23usize, 12usize);
    // Repeats, a token at the first and the last position, unused tokens.
    let tokens: Vec<u32> =
        (0..150u64).map(|i| (sweep_train::rng::mix64(i) % 11) as u32 * 2).chain([22, 0, 22]).collect();
    let n = tokens.len();
    let wv = uniform(vocab * d, 21, 1.0);
    let gv = uniform(n * d, 22, 1.0);
    let w = Var::from_tensor(&t64(&wv, &[vocab, d])).unwrap();
    let ids = Tensor::from_vec(tokens.clone(), n, &Device::Cpu).unwrap();
    let y = w.as_tensor().index_select(&ids, 0).unwrap();
    let grads = (y.clone() * t64(&gv, &[n, d])).unwrap().sum_all().unwrap().backward().unwrap();

    let (order, offsets) = schedule::embedding_csr(&tokens, vocab).unwrap();
    assert_eq!(offsets[vocab] as usize, n);
    let (wb, tb, ob, fb, gb) = (
        dev.upload_f32(&wv),
        dev.upload_u32(&tokens).unwrap(),
        dev.upload_u32(&order).unwrap(),
        dev.upload_u32(&offsets).unwrap(),
        dev.upload_f32(&gv),
    );
    let out = dev.alloc(n * d * 4).unwrap();
    schedule::embedding_fwd(&dev, wb.ptr, tb.ptr, out.ptr, n, d).unwrap();
    assert_eq!(dev.f32s(out.ptr, n * d), vec64(&y).iter().map(|&v| v as f32).collect::<Vec<_>>(), "embedding rows");
    let dw = dev.alloc(vocab * d * 4).unwrap();
    schedule::embedding_bwd(&dev, gb.ptr, ob.ptr, fb.ptr, dw.ptr, vocab, d).unwrap();
    let got = dev.f32s(dw.ptr, vocab * d);
    assert_close(&got, &vec64(grads.get(w.as_tensor()).unwrap()), F32_TOL, "embedding gradient");
    // Position order: each row is the f32 sum in the order the positions appear.
    for v in 0..vocab {
        for c in 0..d {
            let want =
                tokens.iter().enumerate().filter(|(_, &t)| t as usize == v).fold(0f32, |s, (p, _)| s + gv[p * d + c]);
            assert_eq!(got[v * d + c].to_bits(), want.to_bits(), "token {v} column {c}");
        }
    }
    assert!(schedule::embedding_csr(&[3, 23], vocab).is_err(), "a token outside the vocabulary is an error");
}

#[test]
fn cross_entropy_head_forward_and_backward_match_the_cpu() {
    let dev = host_or_skip!("cross_entropy_head_forward_and_backward_match_the_cpu");
    for (n, d, v, e) in [(1usize, 8usize, 5usize, Elem::F32), (37, 16, 300, Elem::F32), (40, 32, 1000, Elem::Bf16)] {
        let xv = uniform(n * d, 31, 1.0);
        let wv = uniform(v * d, 32, 1.0);
        let targets: Vec<u32> = (0..n as u64).map(|i| (sweep_train::rng::mix64(i + 7) % v as u64) as u32).collect();
        let (xs, ws) = (as_seen(&xv, e), as_seen(&wv, e));
        let x = Var::from_tensor(&t64(&xs, &[n, d])).unwrap();
        let w = Var::from_tensor(&t64(&ws, &[v, d])).unwrap();
        let logits = x.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap();
        // bf16 logits: the reference sees them rounded too.
        let logits =
            if e == Elem::Bf16 { logits.to_dtype(DType::BF16).unwrap().to_dtype(DType::F64).unwrap() } else { logits };
        let tt = Tensor::from_vec(targets.clone(), n, &Device::Cpu).unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &tt).unwrap();
        let grads = (loss.clone() * 2.5).unwrap().backward().unwrap();

        let (xb, wb, tb) = (dev.upload_f32(&xv), dev.upload_f32(&wv), dev.upload_u32(&targets).unwrap());
        let lossb = dev.alloc(4).unwrap();
        let hd = HeadDims { n, d, v, elem: e };
        let saved = schedule::head_ce_fwd(&dev, xb.ptr, wb.ptr, tb.ptr, lossb.ptr, hd, None).unwrap();
        let what = format!("cross-entropy {n}x{d}x{v} {e:?}");
        assert_close(&dev.f32s(lossb.ptr, 1), &[loss.to_scalar::<f64>().unwrap()], F32_TOL, &format!("{what} loss"));
        let g = dev.upload_f32(&[2.5]);
        let (dx, dw) = (dev.alloc(n * d * 4).unwrap(), dev.alloc(v * d * 4).unwrap());
        schedule::head_ce_bwd(&dev, &saved, xb.ptr, wb.ptr, tb.ptr, g.ptr, dx.ptr, dw.ptr).unwrap();
        // bf16: the logits' gradient is rounded to bf16 before the two products.
        let gtol = if e == Elem::F32 { F32_TOL } else { BF16_TOL };
        assert_close(&dev.f32s(dx.ptr, n * d), &vec64(grads.get(x.as_tensor()).unwrap()), gtol, &format!("{what} dx"));
        assert_close(&dev.f32s(dw.ptr, v * d), &vec64(grads.get(w.as_tensor()).unwrap()), gtol, &format!("{what} dW"));
    }
}

// ---------------------------------------------------------------------------------------------
// The whole block

struct BlockCase {
    b: usize,
    t: usize,
    h: usize,
    hd: usize,
    d_ff: usize,
    swiglu: bool,
}

impl BlockCase {
    fn d(&self) -> usize {
        self.h * self.hd
    }
    fn names(&self) -> Vec<(&'static str, Vec<usize>)> {
        let (d, f) = (self.d(), self.d_ff);
        let mut v = vec![
            ("input_layernorm", vec![d]),
            ("q_proj", vec![d, d]),
            ("k_proj", vec![d, d]),
            ("v_proj", vec![d, d]),
            ("o_proj", vec![d, d]),
            ("post_attention_layernorm", vec![d]),
        ];
        if self.swiglu {
            v.push(("gate_proj", vec![f, d]));
        }
        v.extend([("up_proj", vec![f, d]), ("down_proj", vec![d, f])]);
        v
    }
    fn weights(&self) -> Vec<Vec<f32>> {
        self.names()
            .iter()
            .enumerate()
            .map(|(i, (name, shape))| {
                let n: usize = shape.iter().product();
                if shape.len() == 1 {
                    uniform(n, 100 + i as u64, 0.3).iter().map(|v| 1.0 + v).collect()
                } else {
                    let scale = if name.ends_with("o_proj") || name.ends_with("down_proj") { 0.1 } else { 0.25 };
                    uniform(n, 100 + i as u64, scale)
                }
            })
            .collect()
    }
    fn tables(&self) -> (Vec<f32>, Vec<f32>) {
        let hd = self.hd;
        let inv: Vec<f64> = (0..hd / 2).map(|i| 1.0 / 10_000f64.powf(2.0 * i as f64 / hd as f64)).collect();
        let cos = (0..self.t).flat_map(|p| inv.iter().map(move |f| (p as f64 * f).cos() as f32)).collect();
        let sin = (0..self.t).flat_map(|p| inv.iter().map(move |f| (p as f64 * f).sin() as f32)).collect();
        (cos, sin)
    }
}

/// The CPU fused block's output and gradients (dx, then the weights in order) in `dtype`.
fn cpu_block(c: &BlockCase, x: &[f32], gy: &[f32], quant: &QuantTargets, dtype: DType) -> (Vec<f64>, Vec<Vec<f64>>) {
    let (b, t, d) = (c.b, c.t, c.d());
    let tensor = |v: &[f32], s: &[usize]| t64(v, s).to_dtype(dtype).unwrap();
    let xv = Var::from_tensor(&tensor(x, &[b, t, d])).unwrap();
    let ws = c.weights();
    let weights: Vec<(String, Tensor)> =
        c.names().iter().zip(&ws).map(|((n, s), w)| (n.to_string(), tensor(w, s))).collect();
    let (cos, sin) = c.tables();
    let side = SideGrads::default();
    let y = transformer_block(
        xv.as_tensor(),
        BlockParams { weights: weights.clone(), swiglu: c.swiglu },
        &tensor(&cos, &[t, c.hd / 2]),
        &tensor(&sin, &[t, c.hd / 2]),
        c.h,
        c.d_ff,
        1e-5,
        quant,
        &side,
    )
    .unwrap();
    let grads = (y.clone() * tensor(gy, &[b, t, d])).unwrap().sum_all().unwrap().backward().unwrap();
    let mut out = vec![vec64(grads.get(xv.as_tensor()).unwrap())];
    let side = side.lock().unwrap();
    for (n, _) in &weights {
        out.push(vec64(&side[n]));
    }
    (vec64(&y), out)
}

struct HostBlock {
    y: Vec<f32>,
    /// dx, then the weight gradients in order.
    grads: Vec<Vec<f32>>,
}

/// The schedule on the host kernels: forward (twice with `repeat`, the second reusing the first's
/// buffers, which must give the same bits), then backward.
fn host_block(
    dev: &Host,
    c: &BlockCase,
    x: &[f32],
    gy: &[f32],
    quant: &QuantTargets,
    e: Elem,
    repeat: bool,
) -> HostBlock {
    let (n, d) = (c.b * c.t, c.d());
    let dm = BlockDims { b: c.b, t: c.t, h: c.h, hd: c.hd, d_ff: c.d_ff, eps: 1e-5, swiglu: c.swiglu, elem: e };
    let ws: Vec<HostBuf> = c.weights().iter().map(|w| dev.upload_f32(w)).collect();
    let w = BlockWeights::from_ordered(&ws.iter().map(|b| b.ptr).collect::<Vec<_>>(), c.swiglu).unwrap();
    let (cos, sin) = c.tables();
    let (cb, sb) = (dev.upload_f32(&cos), dev.upload_f32(&sin));
    let (xb, gb) = (dev.upload_f32(x), dev.upload_f32(gy));
    let yb = dev.alloc(n * d * 4).unwrap();
    let mut saved = schedule::block_fwd(dev, &dm, xb.ptr, &w, (cb.ptr, sb.ptr), quant, yb.ptr, None).unwrap();
    let y = dev.f32s(yb.ptr, n * d);
    if repeat {
        let y2b = dev.alloc(n * d * 4).unwrap();
        saved = schedule::block_fwd(dev, &dm, xb.ptr, &w, (cb.ptr, sb.ptr), quant, y2b.ptr, Some(saved)).unwrap();
        let y2 = dev.f32s(y2b.ptr, n * d);
        assert!(
            y.iter().zip(&y2).all(|(a, b)| a.to_bits() == b.to_bits()),
            "a forward pass on reused buffers changed the output"
        );
    }
    let dxb = dev.alloc(n * d * 4).unwrap();
    let gw = schedule::block_bwd(dev, &saved, xb.ptr, &w, (cb.ptr, sb.ptr), quant, gb.ptr, dxb.ptr).unwrap();
    let mut grads = vec![dev.f32s(dxb.ptr, n * d)];
    for (g, (_, s)) in gw.iter().zip(c.names()) {
        grads.push(dev.f32s(g.ptr, s.iter().product()));
    }
    HostBlock { y, grads }
}

fn check_block(got: &HostBlock, want: &(Vec<f64>, Vec<Vec<f64>>), c: &BlockCase, tol: f64, what: &str) {
    assert_close(&got.y, &want.0, tol, &format!("{what}: y"));
    let names: Vec<&str> = std::iter::once("x").chain(c.names().iter().map(|(n, _)| *n)).collect();
    for (i, name) in names.iter().enumerate() {
        assert_close(&got.grads[i], &want.1[i], tol, &format!("{what}: d{name}"));
    }
}

fn block_inputs(c: &BlockCase) -> (Vec<f32>, Vec<f32>) {
    let n = c.b * c.t * c.d();
    (uniform(n, 41, 1.0), uniform(n, 42, 1.0))
}

#[test]
fn whole_block_forward_and_every_gradient_match_the_cpu_fused_block() {
    let dev = host_or_skip!("whole_block_forward_and_every_gradient_match_the_cpu_fused_block");
    let cases = [
        // T not a multiple of the 64-row tile; SwiGLU and GELU.
        BlockCase { b: 2, t: 70, h: 2, hd: 16, d_ff: 64, swiglu: true },
        BlockCase { b: 1, t: 37, h: 3, hd: 8, d_ff: 40, swiglu: false },
        // hd 64 (the MEDIUM shape's kernel variant), two tiles.
        BlockCase { b: 1, t: 100, h: 2, hd: 64, d_ff: 96, swiglu: true },
        BlockCase { b: 2, t: 1, h: 2, hd: 8, d_ff: 24, swiglu: true },
    ];
    for c in &cases {
        let (x, gy) = block_inputs(c);
        let want = cpu_block(c, &x, &gy, &QuantTargets::default(), DType::F64);
        let what = format!("block B{} T{} H{} hd{} ff{} swiglu {}", c.b, c.t, c.h, c.hd, c.d_ff, c.swiglu);
        let got = host_block(&dev, c, &x, &gy, &QuantTargets::default(), Elem::F32, true);
        check_block(&got, &want, c, 3e-5, &format!("{what} f32"));
        let got = host_block(&dev, c, &x, &gy, &QuantTargets::default(), Elem::Bf16, false);
        check_block(&got, &want, c, 3e-2, &format!("{what} bf16"));
    }
}

fn targets(format: Format, rounding: Rounding, grads_and_kv: bool) -> QuantTargets {
    let q = |seed: u64| Some(QuantConfig::new(format, Scaling::Tensor, rounding, seed).unwrap());
    QuantTargets {
        weights: q(1),
        activations: q(2),
        gradients: if grads_and_kv { q(3) } else { None },
        kv: if grads_and_kv { q(4) } else { None },
        ..Default::default()
    }
}

#[test]
fn quantised_blocks_match_the_cpu_fused_block_at_every_site() {
    let dev = host_or_skip!("quantised_blocks_match_the_cpu_fused_block_at_every_site");
    let c = BlockCase { b: 2, t: 40, h: 2, hd: 16, d_ff: 64, swiglu: true };
    let (x, gy) = block_inputs(&c);
    let e4m3 = Format::Float(FloatFormat::new(4, 3).unwrap());
    let e2m1 = Format::Float(FloatFormat::new(2, 1).unwrap());
    let int4 = Format::Int(IntFormat::new(4).unwrap());
    for (name, format, rounding, all, tol) in [
        ("e4m3", e4m3, Rounding::Nearest, false, 1e-4),
        ("e2m1", e2m1, Rounding::Nearest, false, 1e-4),
        ("int4", int4, Rounding::Nearest, false, 1e-4),
        ("e4m3 with gradients and K/V, stochastic", e4m3, Rounding::Stochastic, true, 1e-4),
    ] {
        // Two target sets with the same seeds and their own counters: both draw the same streams.
        let (tc, th) = (targets(format, rounding, all), targets(format, rounding, all));
        let want = cpu_block(&c, &x, &gy, &tc, DType::F64);
        let got = host_block(&dev, &c, &x, &gy, &th, Elem::F32, false);
        check_block(&got, &want, &c, tol, name);
        assert_eq!(tc.counters(), th.counters(), "{name}: the same counters were drawn");
        // Not trivially equal to full precision.
        let full = cpu_block(&c, &x, &gy, &QuantTargets::default(), DType::F32);
        assert!(rel_l2(&got.y, &full.0) > 1e-4, "{name}: the quantised block equals the unquantised one");
    }
    // GELU, every target quantised (its one MLP input site).
    let g = BlockCase { b: 1, t: 50, h: 2, hd: 8, d_ff: 48, swiglu: false };
    let (x, gy) = block_inputs(&g);
    let (tc, th) = (targets(int4, Rounding::Stochastic, true), targets(int4, Rounding::Stochastic, true));
    let want = cpu_block(&g, &x, &gy, &tc, DType::F64);
    let got = host_block(&dev, &g, &x, &gy, &th, Elem::F32, false);
    check_block(&got, &want, &g, 1e-4, "GELU int4 with gradients and K/V, stochastic");
    assert_eq!(tc.counters(), th.counters());
    // bf16 autocast does not combine with fake quantisation: a clear error.
    let dm = BlockDims { b: 1, t: 2, h: 1, hd: 8, d_ff: 8, eps: 1e-5, swiglu: false, elem: Elem::Bf16 };
    let zero = dev.alloc(4096).unwrap();
    let w = BlockWeights::from_ordered(&[zero.ptr; 8], false).unwrap();
    let r = schedule::block_fwd(
        &dev,
        &dm,
        zero.ptr,
        &w,
        (zero.ptr, zero.ptr),
        &targets(e4m3, Rounding::Nearest, false),
        zero.ptr,
        None,
    );
    assert!(r.is_err());
}

/// A change to one kernel's arguments.
type Mutation = fn(&mut Vec<Arg>);

/// A backend that changes one kernel launch: the tests above must catch it.
struct Mutant {
    host: Host,
    kernel: &'static str,
    change: Mutation,
}

impl Backend for Mutant {
    type Buf = HostBuf;
    fn alloc(&self, bytes: usize) -> candle_core::Result<HostBuf> {
        self.host.alloc(bytes)
    }
    fn ptr(&self, buf: &HostBuf) -> Ptr {
        buf.ptr
    }
    fn upload_u32(&self, data: &[u32]) -> candle_core::Result<HostBuf> {
        self.host.upload_u32(data)
    }
    fn launch(&self, name: &str, grid: Grid, args: &[Arg]) -> candle_core::Result<()> {
        let mut args = args.to_vec();
        if name.starts_with(self.kernel) {
            (self.change)(&mut args);
        }
        self.host.launch(name, grid, &args)
    }
    fn gemm(&self, g: &Gemm) -> candle_core::Result<()> {
        self.host.gemm(g)
    }
    fn copy(&self, dst: Ptr, src: Ptr, bytes: usize) -> candle_core::Result<()> {
        self.host.copy(dst, src, bytes)
    }
    fn fake_quant(
        &self,
        src: Ptr,
        n: usize,
        row_len: usize,
        q: &QuantConfig,
        counter: u64,
    ) -> candle_core::Result<HostBuf> {
        self.host.fake_quant(src, n, row_len, q, counter)
    }
}

#[test]
fn the_block_check_catches_wrong_kernel_launches() {
    let dev = host_or_skip!("the_block_check_catches_wrong_kernel_launches");
    let c = BlockCase { b: 1, t: 70, h: 2, hd: 16, d_ff: 32, swiglu: true };
    let (x, gy) = block_inputs(&c);
    let want = cpu_block(&c, &x, &gy, &QuantTargets::default(), DType::F64);
    let (n, d) = (c.b * c.t, c.d());
    let mutants: [(&str, &'static str, Mutation); 6] = [
        ("K and V swapped in the attention forward", "bk_attn_fwd", |a| a.swap(1, 2)),
        ("a softmax scale 1% off", "bk_attn_fwd", |a| {
            if let Arg::F32(s) = a[8] {
                a[8] = Arg::F32(s * 1.01)
            }
        }),
        ("cos and sin swapped in RoPE", "bk_rope_fwd", |a| a.swap(1, 2)),
        ("no residual gradient in the norms' backward", "bk_rms_dx", |a| a[4] = Arg::Ptr(0)),
        ("V replaced by K in the dQ pass", "bk_attn_dq", |a| a[2] = a[1]),
        ("the weight-gradient chunks one row short", "bk_rms_dw_part", |a| {
            if let Arg::U64(r) = a[4] {
                a[4] = Arg::U64(r - 1)
            }
        }),
    ];
    for (what, kernel, change) in mutants {
        let m = Mutant { host: dev.clone(), kernel, change };
        let dm = BlockDims { b: c.b, t: c.t, h: c.h, hd: c.hd, d_ff: c.d_ff, eps: 1e-5, swiglu: true, elem: Elem::F32 };
        let ws: Vec<HostBuf> = c.weights().iter().map(|w| dev.upload_f32(w)).collect();
        let w = BlockWeights::from_ordered(&ws.iter().map(|b| b.ptr).collect::<Vec<_>>(), true).unwrap();
        let (cos, sin) = c.tables();
        let (cb, sb, xb, gb) = (dev.upload_f32(&cos), dev.upload_f32(&sin), dev.upload_f32(&x), dev.upload_f32(&gy));
        let yb = dev.alloc(n * d * 4).unwrap();
        let q = QuantTargets::default();
        let saved = schedule::block_fwd(&m, &dm, xb.ptr, &w, (cb.ptr, sb.ptr), &q, yb.ptr, None).unwrap();
        let dxb = dev.alloc(n * d * 4).unwrap();
        let gw = schedule::block_bwd(&m, &saved, xb.ptr, &w, (cb.ptr, sb.ptr), &q, gb.ptr, dxb.ptr).unwrap();
        let mut worst = rel_l2(&dev.f32s(yb.ptr, n * d), &want.0);
        worst = worst.max(rel_l2(&dev.f32s(dxb.ptr, n * d), &want.1[0]));
        for (i, (g, (_, s))) in gw.iter().zip(c.names()).enumerate() {
            worst = worst.max(rel_l2(&dev.f32s(g.ptr, s.iter().product()), &want.1[i + 1]));
        }
        assert!(worst > 1e-3, "mutant not caught ({what}): largest relative error {worst:.2e}");
    }
}

#[test]
fn the_host_gpu_rejects_reads_of_freed_or_foreign_memory() {
    let dev = host_or_skip!("the_host_gpu_rejects_reads_of_freed_or_foreign_memory");
    let a = dev.alloc(64).unwrap();
    let b = dev.alloc(64).unwrap();
    let (pa, pb) = (a.ptr, b.ptr);
    drop(a);
    let args = [Arg::Ptr(pa), Arg::Ptr(pb), Arg::U64(16)];
    let grid = Grid { blocks: (1, 1), threads: 256, shared_bytes: 0 };
    assert!(dev.launch("bk_add_f32", grid, &args).is_err(), "a freed buffer is not addressable");
    assert!(dev.launch("bk_add_f32", grid, &[Arg::Ptr(pb), Arg::Ptr(pb), Arg::U64(16)]).is_ok());
    assert!(
        dev.launch("bk_add_f32", grid, &[Arg::Ptr(pb), Arg::U32(3), Arg::U64(16)]).is_err(),
        "argument kinds are checked"
    );
    assert!(dev.launch("bk_no_such_kernel", grid, &[]).is_err());
    let g = Grid { blocks: (1, 1), threads: 64, shared_bytes: 0 };
    assert!(
        schedule::attention_variant(16).is_ok() && dev.launch("bk_attn_fwd_l2s8_f32", g, &[]).is_err(),
        "the attention kernels check their launch"
    );
}
