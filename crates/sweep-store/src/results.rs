//! The results of a sweep as rows: one [`ResultRow`] per finished point, with the columns the
//! laws read under the names README documents for `[fit]`, and one [`CurveRow`] per evaluation
//! of a finished point (the learning curves Chinchilla's approach 1 reads). sweep-fit turns
//! either into a table through the rows' `columns`.

use crate::records::{FinalMetrics, MetricsRecord};
use crate::Store;
use std::path::PathBuf;
use sweep_plan::config::QuantTarget;
use sweep_plan::Point;

/// One finished point: what it was and the losses it reached. A value the point does not have
/// (exponent bits of an integer format, the domain loss of a run without a domain source) is NaN.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultRow {
    /// `N`: non-embedding parameters.
    pub non_embedding_params: f64,
    /// `N_total`: all parameters.
    pub total_params: f64,
    /// `N_emb`: embedding parameters.
    pub embedding_params: f64,
    /// `D`: training tokens the model has seen (a staged point's parent's included).
    pub tokens: f64,
    /// `D_stage`: training tokens of the point's own stage (`D` without a parent).
    pub stage_tokens: f64,
    /// `D_parent`: training tokens the model had seen when the point started (0 without a parent).
    pub parent_tokens: f64,
    /// `C`: training compute 6ND, N non-embedding.
    pub compute: f64,
    /// `C_total`: training compute 6ND over all parameters.
    pub compute_total: f64,
    /// `C_chinchilla`: training compute by Chinchilla's appendix F count (embeddings, attention
    /// logits and the output head included).
    pub compute_chinchilla: f64,
    /// `C_budget`: the IsoFLOP budget the point was placed on (NaN outside IsoFLOP designs).
    pub isoflop_budget: f64,
    /// `U`: distinct training tokens (`unique_tokens`; else D / epochs when the run repeated its
    /// text, else D).
    pub unique_tokens: f64,
    /// `epochs`: passes over the distinct training tokens (D / U).
    pub epochs: f64,
    /// `r`: fraction of training tokens from the domain source.
    pub mixture_ratio: f64,
    /// `V`: vocabulary size.
    pub vocab_size: f64,
    /// `N_nv`: non-vocabulary parameters (the vocabulary law's name for N).
    pub non_vocab_params: f64,
    /// `N_v`: vocabulary parameters, V times the model width.
    pub vocab_params: f64,
    /// `H`: training text in bytes, D times the general source's bytes per token.
    pub bytes: f64,
    /// `exp_bits`: exponent bits of the training precision (floating-point formats).
    pub exp_bits: f64,
    /// `man_bits`: mantissa bits of the training precision (floating-point formats).
    pub man_bits: f64,
    /// `block_size`: elements sharing one scale in a block format.
    pub block_size: f64,
    /// `bits`: total bits of the training precision.
    pub bits: f64,
    /// `P_w`: bits of the weights in training (Kumar et al.'s P_w; the grid format's bits when
    /// weights are not quantised: 32 for fp32, 16 for bf16).
    pub bits_weights: f64,
    /// `P_a`: bits of the linear layers' inputs in training.
    pub bits_activations: f64,
    /// `P_kv`: bits of attention keys and values (the `kv` target, else `attention`).
    pub bits_kv: f64,
    /// `seed`: the point's seed (initialisation, data order, stochastic rounding).
    pub seed: f64,
    /// `loss`: the final loss the laws fit (validation loss on the general source).
    pub loss: f64,
    /// `loss_general`: final validation loss on the general source.
    pub loss_general: f64,
    /// `loss_domain`: final validation loss on the domain source.
    pub loss_domain: f64,
    /// `loss_bpb`: final validation bits per byte on the general source.
    pub loss_bpb: f64,
    /// `loss_u`: unigram-normalised validation loss on the general source (cross-entropy minus
    /// the unigram model's of the point's training data; Tao et al. 2024).
    pub loss_u: f64,
    /// The point's id (not a numeric column).
    pub id: String,
    /// The point's stage (`cpt`, `cooldown`, `base`, `stable`; empty without stages).
    pub stage: String,
    /// The id of the point it started from (empty without a parent).
    pub parent: String,
}

impl ResultRow {
    /// The row of a finished point from its point.json and the final metrics of its result.json.
    pub fn new(point: &Point, metrics: &FinalMetrics) -> ResultRow {
        let n = point.counts.non_embedding_params as f64;
        let bytes_per_token = metrics.bytes_per_token.and_then(|b| b.general).unwrap_or(f64::NAN);
        let or_nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
        let tokens = point.tokens as f64;
        // Epochs actually read (candle) or planned (D / unique_tokens), and the distinct tokens
        // they imply.
        let epochs = metrics
            .epochs
            .and_then(|e| e.general)
            .filter(|e| e.is_finite() && *e > 0.0)
            .or(point.unique_tokens.map(|u| tokens / u as f64));
        let unique_tokens = match (point.unique_tokens, epochs) {
            (Some(u), _) => u as f64,
            (None, Some(e)) if e > 1.0 => tokens / e,
            _ => tokens,
        };
        ResultRow {
            non_embedding_params: n,
            total_params: point.counts.total_params as f64,
            embedding_params: point.counts.embedding_params as f64,
            tokens,
            stage_tokens: point.own_tokens() as f64,
            parent_tokens: point.start_tokens() as f64,
            compute: point.flops.six_nd,
            compute_total: 6.0 * point.counts.total_params as f64 * tokens,
            compute_chinchilla: point.flops.chinchilla,
            isoflop_budget: or_nan(point.isoflop_budget),
            unique_tokens,
            epochs: epochs.unwrap_or(tokens / unique_tokens),
            mixture_ratio: point.mixture_ratio,
            vocab_size: point.model.vocab_size as f64,
            non_vocab_params: n,
            vocab_params: (point.model.vocab_size * point.model.d_model) as f64,
            bytes: point.tokens as f64 * bytes_per_token,
            exp_bits: or_nan(point.precision.exp_bits.map(f64::from)),
            man_bits: or_nan(point.precision.man_bits.map(f64::from)),
            block_size: point.precision.block_size,
            bits: point.precision.bits as f64,
            bits_weights: point.precision.target_bits(QuantTarget::Weights) as f64,
            bits_activations: point.precision.target_bits(QuantTarget::Activations) as f64,
            bits_kv: {
                let p = &point.precision;
                let kv = p.targets.iter().any(|(t, _)| *t == QuantTarget::Kv);
                p.target_bits(if kv { QuantTarget::Kv } else { QuantTarget::Attention }) as f64
            },
            seed: point.seed as f64,
            loss: metrics.loss,
            loss_general: or_nan(metrics.val_loss.general),
            loss_domain: or_nan(metrics.val_loss.domain),
            loss_bpb: or_nan(metrics.val_bpb.and_then(|b| b.general)),
            loss_u: or_nan(metrics.val_loss_u.and_then(|b| b.general)),
            id: point.id.clone(),
            stage: point.stage_name().to_string(),
            parent: point.parent().map(|b| b.id.clone()).unwrap_or_default(),
        }
    }

    /// The row's columns by their documented names.
    pub fn columns(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("N", self.non_embedding_params),
            ("N_total", self.total_params),
            ("N_emb", self.embedding_params),
            ("D", self.tokens),
            ("D_stage", self.stage_tokens),
            ("D_parent", self.parent_tokens),
            ("C", self.compute),
            ("C_total", self.compute_total),
            ("C_chinchilla", self.compute_chinchilla),
            ("C_budget", self.isoflop_budget),
            ("U", self.unique_tokens),
            ("epochs", self.epochs),
            ("r", self.mixture_ratio),
            ("V", self.vocab_size),
            ("N_nv", self.non_vocab_params),
            ("N_v", self.vocab_params),
            ("H", self.bytes),
            ("exp_bits", self.exp_bits),
            ("man_bits", self.man_bits),
            ("block_size", self.block_size),
            ("bits", self.bits),
            ("P_w", self.bits_weights),
            ("P_a", self.bits_activations),
            ("P_kv", self.bits_kv),
            ("seed", self.seed),
            ("loss", self.loss),
            ("loss_general", self.loss_general),
            ("loss_domain", self.loss_domain),
            ("loss_bpb", self.loss_bpb),
            ("loss_u", self.loss_u),
        ]
    }
}

/// One evaluation of a finished point: where on its learning curve it was and the loss there.
#[derive(Debug, Clone, PartialEq)]
pub struct CurveRow {
    /// `run`: which finished point (0, 1, ... in plan order).
    pub run: usize,
    /// `N`: non-embedding parameters.
    pub non_embedding_params: f64,
    /// `N_total`: all parameters.
    pub total_params: f64,
    /// `N_emb`: embedding parameters.
    pub embedding_params: f64,
    /// `D`: training tokens seen.
    pub tokens: f64,
    /// `C`: training compute so far, 6N per token (N non-embedding).
    pub compute: f64,
    /// `C_total`: training compute so far, 6N per token over all parameters.
    pub compute_total: f64,
    /// `C_chinchilla`: training compute so far by Chinchilla's appendix F count.
    pub compute_chinchilla: f64,
    /// `loss`: validation loss on the general source.
    pub loss: f64,
}

impl CurveRow {
    /// The row of an evaluation step of run `run` (a finished point); None for a line without a
    /// general validation loss (not an evaluation step).
    pub fn new(run: usize, point: &Point, m: &MetricsRecord) -> Option<CurveRow> {
        let loss = m.val_loss.and_then(|v| v.general)?;
        let c = &point.counts;
        let tokens = m.tokens as f64;
        Some(CurveRow {
            run,
            non_embedding_params: c.non_embedding_params as f64,
            total_params: c.total_params as f64,
            embedding_params: c.embedding_params as f64,
            tokens,
            compute: m.flops,
            compute_total: 6.0 * c.total_params as f64 * tokens,
            compute_chinchilla: c.flops_per_token_chinchilla * tokens,
            loss,
        })
    }

    /// The row's columns by their documented names.
    pub fn columns(&self) -> [(&'static str, f64); 9] {
        [
            ("run", self.run as f64),
            ("N", self.non_embedding_params),
            ("N_total", self.total_params),
            ("N_emb", self.embedding_params),
            ("D", self.tokens),
            ("C", self.compute),
            ("C_total", self.compute_total),
            ("C_chinchilla", self.compute_chinchilla),
            ("loss", self.loss),
        ]
    }
}

/// The finished points of a sweep directory and their learning curves.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepResults {
    /// The sweep directory.
    pub dir: PathBuf,
    /// One row per finished point the laws fit, in plan order.
    pub rows: Vec<ResultRow>,
    /// One row per finished point that exists to be branched from (a CPT base, a WSD stable
    /// phase: not a model the laws describe), in plan order.
    pub parents: Vec<ResultRow>,
    /// One row per evaluation of a finished point, in plan order then step order.
    pub curves: Vec<CurveRow>,
    /// The points without a result (failed, running or not started), in plan order: what a fit
    /// of `rows` leaves out.
    pub unfinished: Vec<Unfinished>,
}

/// A point of the sweep that has no result, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Unfinished {
    /// Point id.
    pub id: String,
    /// Model label.
    pub label: String,
    /// `failed`, `running` or `pending`.
    pub state: String,
    /// The failure's reason (failed.json), else what the state means.
    pub reason: String,
}

impl SweepResults {
    /// Reads every finished point (one with a result.json) of the sweep.
    pub fn read(store: &Store) -> anyhow::Result<SweepResults> {
        let mut rows = Vec::new();
        let mut parents = Vec::new();
        let mut curves = Vec::new();
        let mut unfinished = Vec::new();
        for id in store.point_ids()? {
            let d = store.point(&id);
            let Some(result) = d.read_result()? else {
                let status = crate::status::point_status(&store.dir, &id);
                let (state, reason) = match status.state {
                    crate::status::State::Failed => {
                        ("failed", status.failure.unwrap_or_else(|| "failed (no reason recorded)".into()))
                    }
                    crate::status::State::Running => ("running", "still running when the results were read".into()),
                    _ => ("pending", "not run yet".into()),
                };
                unfinished.push(Unfinished { id, label: status.label, state: state.into(), reason });
                continue;
            };
            let point = d.read_point()?;
            let row = ResultRow::new(&point, &result.final_metrics);
            if !point.is_fitted() {
                parents.push(row);
                continue;
            }
            let run = rows.len();
            curves.extend(d.read_metrics()?.iter().filter_map(|m| CurveRow::new(run, &point, m)));
            rows.push(row);
        }
        Ok(SweepResults { dir: store.dir.clone(), rows, parents, curves, unfinished })
    }

    /// Rows as CSV: `id`, `stage`, `parent`, then the numeric columns by their documented names
    /// (a NaN is an empty cell). Of [`SweepResults::rows`] it is the table the laws are fitted
    /// to, which `sweep fit --csv` reads back.
    pub fn csv(rows: &[ResultRow]) -> String {
        let names: Vec<&str> = ResultRow::default().columns().iter().map(|(n, _)| *n).collect();
        let mut out = format!("id,stage,parent,{}\n", names.join(","));
        for row in rows {
            let values: Vec<String> =
                row.columns().iter().map(|(_, v)| if v.is_nan() { String::new() } else { v.to_string() }).collect();
            out.push_str(&format!("{},{},{},{}\n", row.id, row.stage, row.parent, values.join(",")));
        }
        out
    }

    /// Where the results table came from, as laws.json records it.
    pub fn provenance(&self) -> String {
        format!("sweep directory {} ({} finished points)", self.dir.display(), self.rows.len())
    }

    /// Where the learning-curve table came from.
    pub fn curves_provenance(&self) -> String {
        format!("{}, learning curves", self.provenance())
    }
}
