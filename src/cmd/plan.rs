//! `sweep plan`: a config's points with their size and cost; runs nothing.

use crate::config::{load_plan, ConfigArgs};
use crate::fmt;
use clap::Args;
use sweep_plan::{Plan, TrainerKind};

/// Arguments of `sweep plan`.
#[derive(Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `sweep plan`.
pub fn run(a: PlanArgs) -> anyhow::Result<u8> {
    let plan = load_plan(&a.config)?;
    let dir = plan.sweep_dir(a.config.out.as_deref());
    if a.json {
        let total_flops: f64 = plan.points.iter().map(|p| p.flops.chinchilla).sum();
        let total_secs: f64 = plan.points.iter().map(|p| p.runtime.estimated_seconds).sum();
        let out = serde_json::json!({
            "name": plan.name(),
            "sweep_dir": dir,
            "config_hash": plan.config_hash,
            "points": plan.points,
            "totals": {"points": plan.points.len(), "flops_chinchilla": total_flops,
                       "flops_6nd": plan.points.iter().map(|p| p.flops.six_nd).sum::<f64>(),
                       "estimated_seconds": total_secs},
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    print!("{}", plan_table(&plan));
    println!("sweep directory: {}", dir.display());
    for w in repetition_warnings(&plan) {
        tracing::warn!("{w}");
    }
    Ok(0)
}

/// Points that would read their training text more than once without `unique_tokens` saying
/// so: by an estimate of each source's training tokens from its size on disk (built-in
/// languages: `builtin_bytes`; hub sources are unknown until downloaded), without reading it.
fn repetition_warnings(plan: &Plan) -> Vec<String> {
    if plan.config.sweep.trainer != TrainerKind::Candle {
        return Vec::new();
    }
    let Ok(Some(data)) = plan.section::<sweep_data::DataConfig>() else { return Vec::new() };
    let mut repeating = Vec::new();
    let mut estimates: std::collections::BTreeMap<u64, Vec<sweep_data::estimate::TokenEstimate>> = Default::default();
    for p in plan.points.iter().filter(|p| p.unique_tokens.is_none()) {
        let v = p.model.vocab_size;
        let est = estimates.entry(v).or_insert_with(|| {
            sweep_data::estimate::estimate_training_tokens(&data, std::path::Path::new("."), v as usize)
        });
        for e in est.iter() {
            let share = match e.source {
                sweep_data::SourceKind::General => 1.0 - p.mixture_ratio,
                sweep_data::SourceKind::Domain => p.mixture_ratio,
            };
            let epochs = share * p.tokens as f64 / e.tokens;
            if epochs > 1.0 {
                repeating.push((p, e.source, epochs, e.tokens, e.bytes_per_token));
            }
        }
    }
    let Some(&(_, _, _, tokens, bpt)) = repeating.first() else { return Vec::new() };
    let mut out = vec![format!(
        "{} point(s) would repeat their training text without `unique_tokens` set (estimated from the text's size at {bpt:.1} bytes per token, about {} training tokens; `sweep data prepare` counts them exactly). Set grid.unique_tokens to study repetition on purpose (the data_constrained law), or add text:",
        repeating.len(),
        fmt::si(tokens)
    )];
    for (p, source, epochs, _, _) in repeating.iter().take(5) {
        out.push(format!(
            "  {} ({}, D = {}): about {epochs:.1} epochs of the {source} source",
            p.id,
            p.label,
            fmt::si(p.tokens as f64)
        ));
    }
    if repeating.len() > 5 {
        out.push(format!("  ... and {} more", repeating.len() - 5));
    }
    out
}

/// The points as a table with totals, and how the time was estimated.
fn plan_table(plan: &Plan) -> String {
    let mut t = fmt::Table::new(
        &[
            "id",
            "model",
            "N (non-emb)",
            "N (total)",
            "D (tokens)",
            "D/N",
            "r",
            "V",
            "precision",
            "steps",
            "FLOPs 6ND",
            "FLOPs (Chinchilla)",
            "est. time",
        ],
        &[0, 1, 8],
    );
    for p in &plan.points {
        t.row(vec![
            p.id.clone(),
            p.label.clone(),
            fmt::si(p.counts.non_embedding_params as f64),
            fmt::si(p.counts.total_params as f64),
            fmt::si(p.tokens as f64),
            format!("{:.1}", p.tokens as f64 / p.n()),
            format!("{}", p.mixture_ratio),
            p.model.vocab_size.to_string(),
            p.precision.name.clone(),
            p.train.steps.to_string(),
            fmt::sci(p.flops.six_nd),
            fmt::sci(p.flops.chinchilla),
            fmt::duration(p.runtime.estimated_seconds),
        ]);
    }
    let flops6: f64 = plan.points.iter().map(|p| p.flops.six_nd).sum();
    let flopsc: f64 = plan.points.iter().map(|p| p.flops.chinchilla).sum();
    let secs: f64 = plan.points.iter().map(|p| p.runtime.estimated_seconds).sum();
    let tokens: f64 = plan.points.iter().map(|p| p.tokens as f64).sum();
    t.row(vec![
        format!("total ({} points)", plan.points.len()),
        String::new(),
        String::new(),
        String::new(),
        fmt::si(tokens),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        fmt::sci(flops6),
        fmt::sci(flopsc),
        fmt::duration(secs),
    ]);
    let mut out = format!(
        "sweep {:?}: {} points, trainer {:?}, device {}\n",
        plan.name(),
        plan.points.len(),
        plan.config.sweep.trainer,
        plan.config.sweep.device
    );
    out.push_str(&t.render());
    let basis = match plan.config.sweep.trainer {
        TrainerKind::Simulate => "simulate trainer: [simulate] seconds_per_point each".to_string(),
        TrainerKind::Candle => {
            // The rate of the largest point (the one that dominates the total), and its source.
            let big = plan.points.iter().max_by(|a, b| a.flops.chinchilla.total_cmp(&b.flops.chinchilla));
            let (rate, source) = big.map_or_else(
                || sweep_plan::flops_per_second(&plan.config, "fp32", 0.0),
                |p| sweep_plan::flops_per_second(&plan.config, &p.precision.name, p.counts.flops_per_token_chinchilla),
            );
            format!(
                "{} FLOP/s sustained for the largest point ({source}); per point by its size and precision; \
                 `sweep bench train --record` on this machine, or [sweep] flops_per_second, replaces it",
                fmt::sci(rate)
            )
        }
    };
    out.push_str(&format!("time estimates: {basis}\n"));
    out
}
