//! The model's gradients: every parameter receives one, and they match central finite
//! differences in f64 on a tiny model, on every execution path: the fused CPU blocks, the fused
//! per-op kernels and the composed ops.

use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use sweep_plan::shape::Ffn;
use sweep_train::model::{ExecPath, ModelConfig, NoHooks, Transformer};

fn tiny(ffn: Ffn, tied: bool) -> ModelConfig {
    ModelConfig {
        d_model: 8,
        n_layers: 2,
        n_heads: 2,
        d_ff: 12,
        context: 5,
        vocab_size: 11,
        ffn,
        tied_embeddings: tied,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
    }
}

fn batch(dev: &Device) -> (Tensor, Tensor) {
    let x: Vec<u32> = vec![1, 4, 2, 9, 3, 0, 7, 7, 10, 5];
    let y: Vec<u32> = vec![4, 2, 9, 3, 6, 7, 7, 10, 5, 1];
    (Tensor::from_vec(x, (2, 5), dev).unwrap(), Tensor::from_vec(y, (2, 5), dev).unwrap())
}

fn model_f64(cfg: ModelConfig, path: ExecPath) -> Transformer {
    let dev = Device::Cpu;
    let m = Transformer::new(cfg.clone(), 11, &dev, ExecPath::Composed).unwrap();
    // Larger weights than the 0.02 init so every path contributes measurably; norms not all 1.
    let tensors: BTreeMap<String, Tensor> = m
        .tensors()
        .into_iter()
        .map(|(k, t)| {
            let t = t.to_dtype(DType::F64).unwrap();
            (k, if t.rank() == 1 { (t + 0.3).unwrap() } else { (t * 15.0).unwrap() })
        })
        .collect();
    Transformer::from_tensors(cfg, &tensors, path).unwrap()
}

#[test]
fn every_parameter_receives_a_nonzero_gradient() {
    for (ffn, tied) in [(Ffn::Swiglu, true), (Ffn::Gelu, false)] {
        let dev = Device::Cpu;
        let m = Transformer::new(tiny(ffn, tied), 3, &dev, ExecPath::choose(&dev, DType::F32, &NoHooks)).unwrap();
        let (x, y) = batch(&dev);
        let grads = m.backward(&m.loss(&x, &y, &NoHooks).unwrap()).unwrap();
        assert_eq!(grads.len(), m.params().len());
        for (name, g) in grads {
            let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(norm > 0.0 && norm.is_finite(), "{name} has gradient norm {norm}");
        }
    }
}

#[test]
fn gradients_match_finite_differences_in_f64() {
    let cases = [
        (Ffn::Swiglu, true, ExecPath::CpuBlocks),
        (Ffn::Gelu, false, ExecPath::CpuBlocks),
        (Ffn::Swiglu, false, ExecPath::CpuOps),
        (Ffn::Gelu, true, ExecPath::CpuOps),
        (Ffn::Swiglu, false, ExecPath::Composed),
        (Ffn::Gelu, true, ExecPath::Composed),
    ];
    for (ffn, tied, path) in cases {
        let m = model_f64(tiny(ffn, tied), path);
        let (x, y) = batch(&Device::Cpu);
        let loss = |m: &Transformer| m.loss(&x, &y, &NoHooks).unwrap().to_scalar::<f64>().unwrap();
        let grads = m.backward(&m.loss(&x, &y, &NoHooks).unwrap()).unwrap();
        let h = 1e-6;
        let mut checked = 0;
        for (name, var) in &m.params() {
            let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let g: Vec<f64> = grads[name].flatten_all().unwrap().to_vec1().unwrap();
            let shape = var.as_tensor().shape().clone();
            // A spread of entries of every parameter.
            for idx in (0..base.len()).step_by((base.len() / 4).max(1)) {
                let mut plus = base.clone();
                plus[idx] += h;
                var.set(&Tensor::from_vec(plus, shape.clone(), &Device::Cpu).unwrap()).unwrap();
                let lp = loss(&m);
                let mut minus = base.clone();
                minus[idx] -= h;
                var.set(&Tensor::from_vec(minus, shape.clone(), &Device::Cpu).unwrap()).unwrap();
                let lm = loss(&m);
                var.set(&Tensor::from_vec(base.clone(), shape.clone(), &Device::Cpu).unwrap()).unwrap();
                let fd = (lp - lm) / (2.0 * h);
                let tol = 1e-6 + 1e-5 * fd.abs().max(g[idx].abs());
                assert!(
                    (fd - g[idx]).abs() <= tol,
                    "{ffn:?} {path:?} {name}[{idx}]: autograd {} vs finite difference {fd}",
                    g[idx]
                );
                checked += 1;
            }
        }
        assert!(checked > 40);
    }
}
