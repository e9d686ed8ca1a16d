//! The finished model in a Llama-style layout: model.safetensors + config.json + tokenizer.json,
//! loadable by Hugging Face transformers and candle-transformers' Llama.

use crate::model::Transformer;
use anyhow::Context;
use sweep_data::PreparedData;
use sweep_plan::shape::Ffn;
use sweep_store::{fsio, PointDir};

/// config.json in Hugging Face's LlamaConfig format.
pub fn llama_config(model: &Transformer) -> serde_json::Value {
    let c = &model.config;
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": c.d_model,
        "intermediate_size": c.d_ff,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_heads,
        "vocab_size": c.vocab_size,
        "max_position_embeddings": c.context,
        "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_theta,
        "tie_word_embeddings": c.tied_embeddings,
        "hidden_act": match c.ffn { Ffn::Swiglu => "silu", Ffn::Gelu => "gelu_pytorch_tanh" },
        "torch_dtype": "float32",
        "sweep_ffn": match c.ffn { Ffn::Swiglu => "swiglu", Ffn::Gelu => "gelu (two-matrix MLP: not a Llama MLP)" },
    })
}

/// Writes model.safetensors, config.json and tokenizer.json into the point's directory.
pub fn export(dir: &PointDir, model: &Transformer, data: &PreparedData) -> anyhow::Result<()> {
    let weights = dir.path.join("model.safetensors");
    let tmp = sweep_io::atomic::temp_file_beside(&weights)?;
    candle_core::safetensors::save(&model.tensors().into_iter().collect(), tmp.path())?;
    sweep_io::atomic::persist(tmp, &weights).context("placing model.safetensors")?;
    fsio::write_json(&dir.path.join("config.json"), &llama_config(model))?;
    if let Some(tok) = data.tokenizer_path() {
        let bytes = std::fs::read(tok).with_context(|| format!("reading {}", tok.display()))?;
        fsio::write_atomic(&dir.path.join("tokenizer.json"), &bytes)?;
    }
    Ok(())
}
