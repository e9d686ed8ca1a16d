//! The records of a sweep directory as types: one line of metrics.jsonl ([`MetricsRecord`]),
//! result.json ([`PointResult`] with its [`FinalMetrics`]) and one line of events.jsonl
//! ([`EventRecord`]). The trainers write them and status, the results table and the report read
//! them, so writer and reader agree on every key at compile time.
//!
//! The files keep the shape the first versions wrote with `serde_json::json!`: objects are
//! written with their keys in sorted order ([`to_sorted_json`]), a number that is not finite is
//! written as null, and a null or absent number reads back as missing (`None`, or NaN where the
//! field is a plain `f64`), so files written before these types existed still read.

use serde::{Deserialize, Deserializer, Serialize};

/// One value per data source: the general text and, in a mixture, the domain text. A source the
/// point does not train on is absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PerSource<T> {
    /// The general source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub general: Option<T>,
    /// The domain source (mixtures only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<T>,
}

/// One line of metrics.jsonl: a run after `step` optimiser steps. Validation losses and epochs
/// appear only on evaluation steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsRecord {
    /// Optimiser steps taken.
    pub step: u64,
    /// Training tokens seen.
    pub tokens: u64,
    /// Training FLOPs so far, 6N per token.
    #[serde(default = "nan", deserialize_with = "nan_if_null")]
    pub flops: f64,
    /// Training FLOPs so far, Chinchilla's count per token (attention included).
    #[serde(default = "nan", deserialize_with = "nan_if_null")]
    pub flops_chinchilla: f64,
    /// Training loss of this step (nats per token).
    #[serde(default = "nan", deserialize_with = "nan_if_null")]
    pub train_loss: f64,
    /// Learning rate of this step.
    #[serde(default = "nan", deserialize_with = "nan_if_null")]
    pub lr: f64,
    /// Gradient norm before clipping (null from the simulate trainer, which has no gradients).
    #[serde(default)]
    pub grad_norm: Option<f64>,
    /// Training throughput since the previous line.
    #[serde(default = "nan", deserialize_with = "nan_if_null")]
    pub tokens_per_second: f64,
    /// Model FLOPs utilisation against the device's measured GEMM peak (null from simulate).
    #[serde(default)]
    pub mfu: Option<f64>,
    /// Validation loss per source (nats per token), on evaluation steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<PerSource<f64>>,
    /// Validation bits per byte per source, on evaluation steps (candle trainer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_bpb: Option<PerSource<f64>>,
    /// Epochs of each source's training text read so far, on evaluation steps (candle trainer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<PerSource<f64>>,
    /// Unigram-normalised validation loss per source (cross-entropy minus the unigram model's of
    /// the point's training data), on evaluation steps (candle trainer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss_u: Option<PerSource<f64>>,
}

/// A finished run's final metrics: `final` in result.json, what a backend returns in
/// [`crate::Outcome::Finished`]. The simulate trainer fills the losses only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalMetrics {
    /// Training loss of the last step.
    #[serde(default = "nan", deserialize_with = "nan_if_null")]
    pub train_loss: f64,
    /// Final validation loss per source (nats per token).
    #[serde(default)]
    pub val_loss: PerSource<f64>,
    /// Final validation bits per byte per source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_bpb: Option<PerSource<f64>>,
    /// The loss the laws are fitted to: the general source's validation loss (or the only one's).
    #[serde(default = "nan", deserialize_with = "nan_if_null")]
    pub loss: f64,
    /// Bytes of text per token of the point's tokenizer, per source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_token: Option<PerSource<f64>>,
    /// Exact entropy of a built-in language's text (nats per byte), per source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy_nats_per_byte: Option<PerSource<f64>>,
    /// Epochs of each source's training text read by the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<PerSource<f64>>,
    /// Final unigram-normalised validation loss per source (Tao et al. 2024): the cross-entropy
    /// minus that of the unigram model of the point's training tokens, nats per token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss_u: Option<PerSource<f64>>,
    /// The unigram model's validation cross-entropy per source (nats per token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss_unigram: Option<PerSource<f64>>,
    /// The device it trained on, as candle names it ("Cpu", "Cuda(..)").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

impl FinalMetrics {
    /// Final metrics with only the losses (the simulate trainer's).
    pub fn losses(train_loss: f64, val_loss: PerSource<f64>, loss: f64) -> FinalMetrics {
        FinalMetrics {
            train_loss,
            val_loss,
            val_bpb: None,
            loss,
            bytes_per_token: None,
            entropy_nats_per_byte: None,
            epochs: None,
            val_loss_u: None,
            val_loss_unigram: None,
            device: None,
        }
    }
}

/// result.json: a finished point, what it was and how it ended. Its presence means done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointResult {
    /// Point id.
    pub id: String,
    /// Model label from the grid.
    pub label: String,
    /// The backend that trained it ("candle", "simulate"; "dispatch" in the earliest results).
    pub trainer: String,
    /// The worker that published it.
    pub owner: String,
    /// That worker's host.
    pub host: String,
    /// When it was published (Unix seconds).
    pub finished_unix: f64,
    /// Wall time of the session that finished it (earlier sessions stopped and resumed).
    pub wall_seconds_last_session: f64,
    /// Optimiser steps of the model (a staged point's parent's included).
    pub steps: u64,
    /// Training tokens of the model (a staged point's parent's included).
    pub tokens: u64,
    /// Non-embedding parameters.
    pub non_embedding_params: u64,
    /// All parameters.
    pub total_params: u64,
    /// Training compute 6ND.
    pub flops_6nd: f64,
    /// Training compute with Chinchilla's FLOP count.
    pub flops_chinchilla: f64,
    /// Fraction of training tokens from the domain source.
    pub mixture_ratio: f64,
    /// Vocabulary size.
    pub vocab_size: u64,
    /// Precision name.
    pub precision: String,
    /// The stage of a staged point (`cpt`, `cooldown`, `base`, `stable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The point a staged point started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Tokens a staged point trained on itself (`tokens` includes its parent's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_tokens: Option<u64>,
    /// The backend's final metrics.
    #[serde(rename = "final")]
    pub final_metrics: FinalMetrics,
}

/// One line of events.jsonl: who did what to which point, when. The log is for people; the
/// files of the point directories are the truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// When (Unix seconds).
    pub t: f64,
    /// The point.
    pub point: String,
    /// The process that logged it.
    pub pid: u32,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

/// What happened to a point, by the `event` key of its line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A worker claimed the point and started (or resumed) it.
    Start {
        /// The worker.
        owner: String,
        /// The checkpoint it resumed from.
        resume_step: Option<u64>,
    },
    /// A worker took over the stale lease of another.
    Takeover {
        /// The previous holder.
        from: String,
        /// The new holder.
        by: String,
    },
    /// The point's result was published.
    Completed {
        /// The worker.
        owner: String,
        /// Wall time of the session that finished it.
        wall_seconds: f64,
    },
    /// A result already existed; the first was kept.
    Duplicate {
        /// The worker whose result was discarded.
        owner: String,
    },
    /// The worker stopped on request after a checkpoint.
    Stopped {
        /// The worker.
        owner: String,
        /// The newest checkpoint.
        checkpoint_step: Option<u64>,
    },
    /// The worker lost the lease and gave the point up.
    Lost {
        /// The worker.
        owner: String,
    },
    /// The point failed (failed.json has the details).
    Failed {
        /// "diverged" or "error".
        kind: String,
        /// What happened.
        reason: String,
        /// Step at which it happened, if known.
        step: Option<u64>,
    },
}

/// A record as one line of JSON with its keys sorted, the order the files have always had.
pub fn to_sorted_json<T: Serialize>(record: &T) -> serde_json::Result<serde_json::Value> {
    // serde_json's map (without preserve_order) is sorted by key: going through a Value writes
    // the keys as the json!-built records did, whatever the order of the struct's fields.
    serde_json::to_value(record)
}

fn nan() -> f64 {
    f64::NAN
}

/// A number, or NaN for null (serde_json writes a NaN as null).
fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` as serde_json reads it back and writes it: the same keys in the same order and the
    /// same numbers as reading the record gives (without serde_json's float_roundtrip, which
    /// this crate alone does not enable, a number may read back one ulp off).
    fn reread(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap()
    }

    /// Lines as the json!-built writers produced them, before these types existed.
    const CANDLE_LINES: [&str; 2] = [
        r#"{"flops":823787520.0,"flops_chinchilla":3094609920.0,"grad_norm":0.6044365711220253,"lr":0.003,"mfu":0.260735449888638,"step":10,"tokens":10240,"tokens_per_second":142794.90515587502,"train_loss":6.020998001098633}"#,
        r#"{"epochs":{"domain":0.0,"general":0.024673321970619267},"flops":1565196288.0,"flops_chinchilla":5879758848.0,"grad_norm":0.4614751727557993,"lr":0.0029876945720136226,"mfu":0.23561700299980443,"step":19,"tokens":19456,"tokens_per_second":129038.48560231675,"train_loss":5.517798900604248,"val_bpb":{"general":3.2439387450026818},"val_loss":{"general":5.475044369697571}}"#,
    ];

    #[test]
    fn candle_metrics_lines_read_and_write_back_unchanged() {
        for line in CANDLE_LINES {
            let m: MetricsRecord = serde_json::from_str(line).unwrap();
            assert_eq!(to_sorted_json(&m).unwrap().to_string(), reread(line).to_string());
        }
    }

    #[test]
    fn simulate_metrics_lines_with_nulls_read() {
        let old = r#"{"flops":31501320192.0,"flops_chinchilla":205806108672.0,"grad_norm":null,"lr":0.003,"mfu":null,"step":3,"tokens":49152,"tokens_per_second":2685038.612179408,"train_loss":29.453356438595076,"val_loss":null}"#;
        let m: MetricsRecord = serde_json::from_str(old).unwrap();
        assert_eq!((m.step, m.grad_norm, m.mfu, m.val_loss), (3, None, None, None));
        let eval = old.replace(r#""val_loss":null"#, r#""val_loss":{"general":29.6,"domain":null}"#);
        let m: MetricsRecord = serde_json::from_str(&eval).unwrap();
        assert_eq!(m.val_loss, Some(PerSource { general: Some(29.6), domain: None }));
        // A non-finite number goes out as null, as json! wrote it.
        let mut nan = m.clone();
        nan.train_loss = f64::NAN;
        nan.mfu = Some(f64::NAN);
        let text = to_sorted_json(&nan).unwrap().to_string();
        assert!(text.contains(r#""train_loss":null"#) && text.contains(r#""mfu":null"#), "{text}");
        assert!(serde_json::from_str::<MetricsRecord>(&text).unwrap().train_loss.is_nan());
    }

    #[test]
    fn results_of_both_trainers_read_and_write_back_unchanged() {
        let candle = r#"{
  "final": {
    "bytes_per_token": {
      "general": 2.434947137327402
    },
    "device": "Cpu",
    "entropy_nats_per_byte": {
      "general": 0.6012505735115967
    },
    "epochs": {
      "domain": 0.0,
      "general": 0.2545247950653356
    },
    "loss": 3.957318067550659,
    "train_loss": 3.9620323181152344,
    "val_bpb": {
      "general": 2.3446928533906712
    },
    "val_loss": {
      "general": 3.957318067550659
    }
  },
  "finished_unix": 1796325233.0991275,
  "flops_6nd": 16146235392.0,
  "flops_chinchilla": 60654354432.0,
  "host": "vm",
  "id": "005e17295b60",
  "label": "micro",
  "mixture_ratio": 0.0,
  "non_embedding_params": 13408,
  "owner": "vm:8487:w0:2afab4b8",
  "precision": "fp32",
  "steps": 196,
  "tokens": 200704,
  "total_params": 29792,
  "trainer": "candle",
  "vocab_size": 512,
  "wall_seconds_last_session": 1.858059925
}"#;
        let r: PointResult = serde_json::from_str(candle).unwrap();
        assert_eq!(r.final_metrics.bytes_per_token.unwrap().general, Some(2.434947137327402));
        let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap();
        assert_eq!(pretty(&to_sorted_json(&r).unwrap()), pretty(&reread(candle)));
        let simulate = candle.replace(
            &candle[candle.find("\"final\"").unwrap()..candle.find("\"finished_unix\"").unwrap()],
            "\"final\": {\n    \"loss\": 19.89,\n    \"train_loss\": 19.9,\n    \"val_loss\": {\n      \"general\": 19.89\n    }\n  },\n  ",
        );
        let r: PointResult = serde_json::from_str(&simulate).unwrap();
        assert_eq!(
            r.final_metrics,
            FinalMetrics::losses(19.9, PerSource { general: Some(19.89), domain: None }, 19.89)
        );
        assert_eq!(pretty(&to_sorted_json(&r).unwrap()), pretty(&reread(&simulate)));
    }

    #[test]
    fn event_lines_read_and_write_back_unchanged() {
        for line in [
            r#"{"event":"start","owner":"vm:8487:w0:2afab4b8","pid":8487,"point":"4e822326425f","resume_step":null,"t":1796325228.722224}"#,
            r#"{"event":"completed","owner":"vm:8487:w0:2afab4b8","pid":8487,"point":"4e822326425f","t":1796325230.1823614,"wall_seconds":1.4583353319999999}"#,
            r#"{"by":"vm:1:w:1","event":"takeover","from":"ghost:1:w:0","pid":1,"point":"a","t":1.5}"#,
            r#"{"event":"failed","kind":"diverged","pid":1,"point":"a","reason":"loss 9 > 3","step":12,"t":1.5}"#,
            r#"{"checkpoint_step":40,"event":"stopped","owner":"o","pid":1,"point":"a","t":1.5}"#,
        ] {
            let e: EventRecord = serde_json::from_str(line).unwrap();
            assert_eq!(to_sorted_json(&e).unwrap().to_string(), reread(line).to_string());
        }
    }
}
