//! The exported model loads in candle-transformers' Llama and gives the trainer's logits.

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_transformers::models::llama::{Cache, Llama, LlamaConfig};
use sweep_plan::shape::Ffn;
use sweep_train::model::{ExecPath, ModelConfig, NoHooks, Transformer};

#[test]
fn llama_loads_the_export_and_matches_logits() {
    let dev = Device::Cpu;
    for tied in [true, false] {
        let cfg = ModelConfig {
            d_model: 32,
            n_layers: 2,
            n_heads: 4,
            d_ff: 64,
            context: 12,
            vocab_size: 50,
            ffn: Ffn::Swiglu,
            tied_embeddings: tied,
            rope_theta: 10_000.0,
            norm_eps: 1e-5,
        };
        let model = Transformer::new(cfg, 5, &dev, ExecPath::choose(&dev, DType::F32, &NoHooks)).unwrap();
        // Perturb the norms so a misplaced norm weight would show.
        for (name, v) in &model.params() {
            if v.rank() == 1 {
                v.set(&(v.as_tensor() * 1.5).unwrap()).unwrap();
            }
            assert!(!name.is_empty());
        }
        let dir = std::env::temp_dir().join(format!("sweep-llama-{}-{tied}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let weights = dir.join("model.safetensors");
        candle_core::safetensors::save(&model.tensors().into_iter().collect(), &weights).unwrap();
        let config_json = sweep_train::export::llama_config(&model);
        let llama_cfg: LlamaConfig = serde_json::from_value(config_json).unwrap();
        let llama_cfg = llama_cfg.into_config(false);
        let vb = unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &dev).unwrap() };
        let llama = Llama::load(vb, &llama_cfg).unwrap();
        let tokens: Vec<u32> = vec![3, 17, 42, 8, 8, 1, 49, 0, 23, 11, 30, 7];
        let ours = model.forward(&Tensor::from_vec(tokens.clone(), (1, 12), &dev).unwrap(), &NoHooks).unwrap();
        for t in 1..=12 {
            let mut cache = Cache::new(false, DType::F32, &llama_cfg, &dev).unwrap();
            let input = Tensor::from_vec(tokens[..t].to_vec(), (1, t), &dev).unwrap();
            let theirs: Vec<f32> =
                llama.forward(&input, 0, &mut cache).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let mine: Vec<f32> = ours.i(t - 1).unwrap().to_vec1().unwrap();
            let max_diff = mine.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(max_diff < 1e-4, "tied={tied} position {t}: logits differ by {max_diff}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
