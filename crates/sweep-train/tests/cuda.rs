//! The CUDA path against the CPU, on a GPU (build with `--features cuda`; scripts/gpu-check.sh
//! runs this on a lent GPU). Without the feature this file compiles to nothing: CI has no GPU.
//!
//! - The fake-quantisation kernels of src/quant/fake_quant.cu, launched through NVRTC, give the
//!   CPU kernel's values bit for bit: every format family (MXINT8's two's-complement levels
//!   included), scaling, scale rule (the OCP MX E8M0 and NVFP4-style E4M3 scales included) and
//!   rounding, on special values, on a view that starts inside its storage, and on a tensor
//!   larger than one grid (the kernels' grid-stride loops); delayed scaling (which runs on the
//!   host) gives the CPU's values too.
//! - The quantised-gradient op's backward gives the CPU's gradient bit for bit.
//! - Training steps on CUDA (composed candle ops) follow the CPU's (fused kernels) in fp32, in a
//!   fake-quantised format and in bf16 autocast.
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor, Var};
use sweep_plan::config::Rounding;
use sweep_plan::precision::Scaling;
use sweep_plan::shape::Ffn;
use sweep_train::model::{ExecPath, ModelConfig, Transformer};
use sweep_train::optim::{clip_grads, AdamW, AdamWConfig};
use sweep_train::quant::{fake_quant_at, quant_grad_at, FloatFormat, Format, QuantConfig, ScaleRule};

mod common;
use common::formats;

fn gpu() -> Device {
    Device::new_cuda(0).expect("tests/cuda.rs needs a CUDA GPU (it is built only with --features cuda)")
}

/// Values whose magnitudes differ from row to row (so per-channel and per-block scales differ),
/// with zeros, NaN, infinities, subnormals, ties and values past the FP8 ranges sprinkled in.
fn mixed(n: usize, row_len: usize, seed: u64) -> Vec<f32> {
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
        f32::MIN_POSITIVE,
    ];
    (0..n)
        .map(|i| {
            let r = sweep_train::rng::mix64(seed.wrapping_mul(0x9e37_79b9) ^ i as u64);
            if i % 11 == 5 {
                return specials[(r % specials.len() as u64) as usize];
            }
            let mant = (r >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            let exp = ((r >> 3) % 20) as i32 - 10 + ((i / row_len) % 9) as i32 * 3 - 12;
            (mant * 2f64.powi(exp)) as f32
        })
        .collect()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_device(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

fn assert_same_bits(got: &[u32], want: &[u32], x: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let same = g == w || (f32::from_bits(g).is_nan() && f32::from_bits(w).is_nan());
        assert!(
            same,
            "{what}: element {i} = {:e}: CUDA gives {:e} ({g:#x}), CPU {:e} ({w:#x})",
            x[i],
            f32::from_bits(g),
            f32::from_bits(w)
        );
    }
}

#[test]
fn fake_quant_on_cuda_equals_the_cpu_kernel_bit_for_bit() {
    let dev = gpu();
    let (rows, row_len) = (40, 96);
    // Two rows more than used: the CUDA input is a view starting two rows into its storage.
    let x = mixed((rows + 2) * row_len, row_len, 1);
    let host = Tensor::from_vec(x.clone(), (rows + 2, row_len), &Device::Cpu).unwrap().narrow(0, 2, rows).unwrap();
    let on_gpu = Tensor::from_vec(x.clone(), (rows + 2, row_len), &dev).unwrap().narrow(0, 2, rows).unwrap();
    let shown = &x[2 * row_len..];
    let mut cases = 0;
    for format in formats() {
        for scaling in [Scaling::Tensor, Scaling::Channel, Scaling::Block(32), Scaling::Block(64)] {
            for rule in [ScaleRule::AbsMax, ScaleRule::PowerOfTwo, ScaleRule::Unit, ScaleRule::Ue8m0, ScaleRule::Ue4m3]
            {
                for rounding in [Rounding::Nearest, Rounding::Stochastic] {
                    let q = QuantConfig::new(format, scaling, rounding, 4321).unwrap().with_scale_rule(rule);
                    let want = bits(&fake_quant_at(&host, &q, 17).unwrap());
                    let got = fake_quant_at(&on_gpu, &q, 17).unwrap();
                    assert!(got.device().is_cuda(), "the result stays on the GPU");
                    assert_same_bits(
                        &bits(&got),
                        &want,
                        shown,
                        &format!("{} {scaling:?} {rule:?} {rounding:?}", q.name),
                    );
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, formats().len() * 4 * 5 * 2);
}

#[test]
fn fake_quant_on_cuda_covers_tensors_larger_than_one_grid() {
    // 65 535 blocks of 256 threads hold 16.8 M elements; this tensor has 20 M, so the kernels'
    // grid-stride loops and the per-tensor maximum across blocks are exercised.
    let dev = gpu();
    let row_len = 4096;
    let n = 4880 * row_len;
    let x = mixed(n, row_len, 2);
    let host = Tensor::from_vec(x.clone(), (n / row_len, row_len), &Device::Cpu).unwrap();
    let on_gpu = host.to_device(&dev).unwrap();
    for (scaling, rounding, rule) in [
        (Scaling::Tensor, Rounding::Stochastic, ScaleRule::AbsMax),
        (Scaling::Block(128), Rounding::Nearest, ScaleRule::AbsMax),
        (Scaling::Channel, Rounding::Nearest, ScaleRule::AbsMax),
        (Scaling::Block(32), Rounding::Nearest, ScaleRule::Ue8m0),
        // NVFP4-style: the per-tensor scale needs the whole tensor's amax across blocks.
        (Scaling::Block(16), Rounding::Stochastic, ScaleRule::Ue4m3),
    ] {
        let q = QuantConfig::new(Format::Float(FloatFormat::new(4, 3).unwrap()), scaling, rounding, 9)
            .unwrap()
            .with_scale_rule(rule);
        let want = bits(&fake_quant_at(&host, &q, 3).unwrap());
        assert_same_bits(
            &bits(&fake_quant_at(&on_gpu, &q, 3).unwrap()),
            &want,
            &x,
            &format!("large {scaling:?} {rounding:?} {rule:?}"),
        );
    }
}

#[test]
fn delayed_scaling_on_cuda_equals_the_cpu() {
    // Delayed scaling keeps its amax history on the host: a CUDA tensor is quantised there and
    // moved back, with the same values and the same history as on the CPU.
    let dev = gpu();
    let (rows, row_len) = (16, 64);
    let fmt = Format::Float(FloatFormat::new(4, 3).unwrap());
    let make = || QuantConfig::new(fmt, Scaling::Tensor, Rounding::Nearest, 1).unwrap().with_amax_history(3).unwrap();
    let (qc, qg) = (make(), make());
    for step in 0..4u64 {
        let x: Vec<f32> = mixed(rows * row_len, row_len, 10 + step)
            .into_iter()
            .map(|v| if v.is_finite() { v * (1.0 + step as f32) } else { 0.5 })
            .collect();
        let host = Tensor::from_vec(x.clone(), (rows, row_len), &Device::Cpu).unwrap();
        let on_gpu = host.to_device(&dev).unwrap();
        qc.begin_pass();
        qg.begin_pass();
        let want = bits(&sweep_train::quant::fake_quant(&host, &qc).unwrap());
        let got = sweep_train::quant::fake_quant(&on_gpu, &qg).unwrap();
        assert!(got.device().is_cuda(), "the result is moved back to the GPU");
        assert_same_bits(&bits(&got), &want, &x, &format!("delayed scaling step {step}"));
        assert_eq!(qc.amax_histories(), qg.amax_histories(), "step {step}");
    }
}

#[test]
fn quantised_gradients_on_cuda_equal_the_cpu() {
    let dev = gpu();
    let (rows, row_len) = (24, 64);
    let xv = mixed(rows * row_len, row_len, 3)
        .into_iter()
        .map(|v| if v.is_finite() { v.clamp(-4.0, 4.0) } else { 1.0 })
        .collect::<Vec<_>>();
    let wv: Vec<f32> = (0..rows * row_len).map(|i| ((i * 37 % 101) as f32 - 50.0) * 1e-3).collect();
    let q = QuantConfig::new(Format::Float(FloatFormat::new(5, 2).unwrap()), Scaling::Channel, Rounding::Stochastic, 5)
        .unwrap();
    let grad_on = |device: &Device| -> Vec<u32> {
        let x = Var::from_tensor(&Tensor::from_vec(xv.clone(), (rows, row_len), device).unwrap()).unwrap();
        let w = Tensor::from_vec(wv.clone(), (rows, row_len), device).unwrap();
        // Forward: the identity, so the loss is the same; backward: the incoming gradient (w,
        // through the square) is fake-quantised.
        let y = quant_grad_at(x.as_tensor(), &q, 11).unwrap();
        let loss = (y.sqr().unwrap() * &w).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        bits(g.get(x.as_tensor()).unwrap())
    };
    let (want, got) = (grad_on(&Device::Cpu), grad_on(&dev));
    let distinct: std::collections::BTreeSet<u32> = want.iter().copied().collect();
    assert!(distinct.len() > 10, "the gradient is not trivial");
    assert_same_bits(&got, &want, &xv, "quant_grad backward");
}

/// Losses of `steps` AdamW steps of a small model on `device` at `precision`.
fn losses(device: &Device, precision: &str, steps: usize) -> Vec<f64> {
    let config = ModelConfig {
        d_model: 64,
        n_layers: 2,
        n_heads: 4,
        d_ff: 192,
        context: 32,
        vocab_size: 256,
        ffn: Ffn::Swiglu,
        tied_embeddings: true,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
    };
    let hooks = sweep_train::precision::hooks_for(precision, Rounding::Nearest, 0).unwrap();
    let model = Transformer::new(config, 7, device, ExecPath::choose(device, DType::F32, &hooks)).unwrap();
    let params = model.params();
    let mut opt = AdamW::new(AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 }, &params).unwrap();
    // A learnable stream: each token follows from the one before.
    let tokens: Vec<u32> = (0..8 * 33).map(|i: u32| (i * 7 + i / 33) % 61).collect();
    let input: Vec<u32> = tokens.chunks(33).flat_map(|c| c[..32].to_vec()).collect();
    let target: Vec<u32> = tokens.chunks(33).flat_map(|c| c[1..].to_vec()).collect();
    let x = Tensor::from_vec(input, (8, 32), device).unwrap();
    let y = Tensor::from_vec(target, (8, 32), device).unwrap();
    (0..steps)
        .map(|_| {
            let loss = model.loss(&x, &y, &hooks).unwrap();
            let value = loss.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
            let mut grads = model.backward(&loss).unwrap();
            clip_grads(&mut grads, 1.0).unwrap();
            opt.step(&params, &grads, 3e-3).unwrap();
            value
        })
        .collect()
}

fn assert_close(got: &[f64], want: &[f64], rel: f64, what: &str) {
    for (s, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.is_finite() && ((g - w) / w).abs() <= rel,
            "{what}: step {s}: CUDA loss {g}, CPU {w} (tolerance {rel})\n  cuda {got:?}\n  cpu  {want:?}"
        );
    }
}

#[test]
fn training_on_cuda_follows_the_cpu() {
    let dev = gpu();
    let steps = 12;
    let cpu32 = losses(&Device::Cpu, "fp32", steps);
    assert!(cpu32[steps - 1] < cpu32[0] - 0.3, "the model learns: {cpu32:?}");
    // Same arithmetic up to summation order (fused CPU kernels, composed ops and cuBLAS on CUDA).
    assert_close(&losses(&dev, "fp32", steps), &cpu32, 1e-4, "fp32");
    // Fake quantisation rounds the same values the same way; a value near a rounding boundary may
    // flip between the devices, so the tolerance is wider.
    assert_close(&losses(&dev, "fp8-e4m3", steps), &losses(&Device::Cpu, "fp8-e4m3", steps), 2e-3, "fp8-e4m3");
    assert_close(&losses(&dev, "fp4-e2m1", steps), &losses(&Device::Cpu, "fp4-e2m1", steps), 1e-2, "fp4-e2m1");
    // Block formats as hardware stores them: MX (E8M0 scales) and NVFP4 (E4M3 scales).
    assert_close(&losses(&dev, "mxfp8-e4m3", steps), &losses(&Device::Cpu, "mxfp8-e4m3", steps), 2e-3, "mxfp8");
    assert_close(&losses(&dev, "mxfp4", steps), &losses(&Device::Cpu, "mxfp4", steps), 1e-2, "mxfp4");
    assert_close(&losses(&dev, "nvfp4", steps), &losses(&Device::Cpu, "nvfp4", steps), 1e-2, "nvfp4");
    // bf16 autocast: 16-bit products on both devices (cuBLAS accumulates in f32 as the CPU does).
    let bf16 = losses(&dev, "bf16", steps);
    assert_close(&bf16, &losses(&Device::Cpu, "bf16", steps), 1e-2, "bf16");
    assert_close(&bf16, &cpu32, 3e-2, "bf16 against fp32");
}

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

fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
    let a: Vec<f32> = a.to_device(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.to_device(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a.len(), b.len());
    assert!(a.iter().all(|v| v.is_finite()), "non-finite values");
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30) as f64;
    a.iter().zip(&b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max) / scale
}

#[test]
fn cuda_causal_softmax_equals_the_composed_ops() {
    use sweep_train::fused::cuda;
    let dev = gpu();
    for (shape, amp) in [([2usize, 3, 37, 37], 4.0f32), ([1, 2, 512, 512], 8.0), ([1, 1, 1500, 1500], 2.0)] {
        let n: usize = shape.iter().product();
        let x = Var::from_tensor(&Tensor::from_vec(uniform(n, 1, amp), &shape, &dev).unwrap()).unwrap();
        let w = Tensor::from_vec(uniform(n, 2, 1.0), &shape, &dev).unwrap();
        let t = shape[3];
        let mask: Vec<f32> =
            (0..t).flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
        let mask = Tensor::from_vec(mask, (t, t), &dev).unwrap();
        assert!(cuda::available(x.as_tensor()));
        let fused = cuda::causal_softmax(x.as_tensor(), 0.3).unwrap();
        let composed = sweep_train::model::causal_softmax(x.as_tensor(), &mask, 0.3).unwrap();
        assert!(max_rel(&fused, &composed) < 1e-5, "{shape:?} forward: {}", max_rel(&fused, &composed));
        let gf = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (composed * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let (gf, gc) = (gf.get(x.as_tensor()).unwrap(), gc.get(x.as_tensor()).unwrap());
        assert!(max_rel(gf, gc) < 1e-4, "{shape:?} backward: {}", max_rel(gf, gc));
    }
}

#[test]
fn cuda_cross_entropy_equals_the_composed_ops() {
    use sweep_train::fused::cuda;
    let dev = gpu();
    for (rows, v, amp) in [(7usize, 33usize, 3.0f32), (300, 1000, 10.0), (64, 32768, 5.0)] {
        let z = Var::from_tensor(&Tensor::from_vec(uniform(rows * v, 3, amp), (rows, v), &dev).unwrap()).unwrap();
        let targets: Vec<u32> = (0..rows as u64).map(|i| (sweep_train::rng::mix64(i) % v as u64) as u32).collect();
        let targets = Tensor::from_vec(targets, rows, &dev).unwrap();
        let fused = cuda::cross_entropy(z.as_tensor(), &targets).unwrap();
        let composed = sweep_train::model::cross_entropy(z.as_tensor(), &targets).unwrap();
        let (a, b) = (fused.to_scalar::<f32>().unwrap() as f64, composed.to_scalar::<f32>().unwrap() as f64);
        assert!(((a - b) / b).abs() < 1e-5, "{rows}x{v}: loss {a} against {b}");
        let gf = fused.affine(3.0, 0.0).unwrap().backward().unwrap();
        let gc = composed.affine(3.0, 0.0).unwrap().backward().unwrap();
        let (gf, gc) = (gf.get(z.as_tensor()).unwrap(), gc.get(z.as_tensor()).unwrap());
        assert!(max_rel(gf, gc) < 1e-4, "{rows}x{v} backward: {}", max_rel(gf, gc));
    }
}

#[test]
fn cuda_adamw_equals_the_composed_update() {
    let dev = gpu();
    let mut params = std::collections::BTreeMap::new();
    params.insert(
        "w".to_string(),
        Var::from_tensor(
            &Tensor::from_vec(uniform(70_001, 4, 0.1), 70_001, &dev).unwrap().reshape((70_001, 1)).unwrap(),
        )
        .unwrap(),
    );
    params.insert(
        "b".to_string(),
        Var::from_tensor(&Tensor::from_vec(uniform(333, 5, 1.0), 333, &dev).unwrap()).unwrap(),
    );
    let copy = |ps: &std::collections::BTreeMap<String, Var>| -> std::collections::BTreeMap<String, Var> {
        ps.iter().map(|(k, v)| (k.clone(), Var::from_tensor(&v.as_tensor().copy().unwrap()).unwrap())).collect()
    };
    let reference = copy(&params);
    let config = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
    let (mut fused, mut composed) = (AdamW::new(config, &params).unwrap(), AdamW::new(config, &reference).unwrap());
    composed.fused = false;
    for step in 0..5u64 {
        let grads = |ps: &std::collections::BTreeMap<String, Var>| -> std::collections::BTreeMap<String, Tensor> {
            ps.iter()
                .map(|(k, v)| {
                    (k.clone(), Tensor::from_vec(uniform(v.elem_count(), 10 + step, 0.01), v.shape(), &dev).unwrap())
                })
                .collect()
        };
        fused.step(&params, &grads(&params), 1e-2).unwrap();
        composed.step(&reference, &grads(&reference), 1e-2).unwrap();
    }
    for (k, p) in &params {
        let d = max_rel(p.as_tensor(), reference[k].as_tensor());
        assert!(d < 1e-6, "{k}: fused and composed AdamW differ by {d}");
        let moved = max_rel(
            p.as_tensor(),
            &Tensor::from_vec(
                uniform(p.elem_count(), if k == "w" { 4 } else { 5 }, if k == "w" { 0.1 } else { 1.0 }),
                p.shape(),
                &dev,
            )
            .unwrap(),
        );
        assert!(moved > 1e-4, "{k}: the update moved the parameter ({moved})");
    }
}
