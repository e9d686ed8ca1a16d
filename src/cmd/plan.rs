//! `sweep plan`: a config's points with their size and cost; runs nothing. A staged sweep is shown
//! as its tree (parents, then the children that branch off them), each point with the cost of
//! its own steps, and the sweep's total beside what the same grid costs as independent runs.

use crate::config::{load_plan, ConfigArgs};
use crate::fmt;
use clap::Args;
use sweep_plan::{Plan, Point, TrainerKind};

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
        let total_flops: f64 = plan.points.iter().map(|p| p.own_flops().chinchilla).sum();
        let total_secs: f64 = plan.points.iter().map(|p| p.runtime.estimated_seconds).sum();
        let fitted = || plan.points.iter().filter(|p| p.is_fitted());
        // Each point's own cost (a staged point's `tokens` and `flops` include its parent's).
        let own: Vec<serde_json::Value> = plan
            .points
            .iter()
            .map(|p| {
                let f = p.own_flops();
                serde_json::json!({"id": p.id, "tokens": p.own_tokens(), "flops_6nd": f.six_nd, "flops_chinchilla": f.chinchilla})
            })
            .collect();
        let out = serde_json::json!({
            "name": plan.name(),
            "sweep_dir": dir,
            "config_hash": plan.config_hash,
            "points": plan.points,
            "own": own,
            "totals": {"points": plan.points.len(), "flops_chinchilla": total_flops,
                       "flops_6nd": plan.points.iter().map(|p| p.own_flops().six_nd).sum::<f64>(),
                       "estimated_seconds": total_secs,
                       "fitted_points": fitted().count(),
                       "independent_flops_6nd": fitted().map(|p| p.flops.six_nd).sum::<f64>(),
                       "independent_flops_chinchilla": fitted().map(|p| p.flops.chinchilla).sum::<f64>()},
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    if plan.points.iter().any(|p| p.stage.is_some()) {
        print!("{}", staged_table(&plan));
    } else {
        print!("{}", plan_table(&plan));
    }
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

/// A staged plan as its tree: each parent followed by the points that branch off it, with
/// the cost of each point's own steps; then the total beside the same grid as independent runs.
fn staged_table(plan: &Plan) -> String {
    let mut t = fmt::Table::new(
        &[
            "id",
            "stage",
            "from step",
            "model",
            "N (non-emb)",
            "D (total)",
            "D (own)",
            "r",
            "steps (own)",
            "FLOPs 6ND (own)",
            "FLOPs Chinchilla (own)",
            "est. time",
        ],
        &[0, 1, 3],
    );
    let children = |id: Option<&str>| -> Vec<&Point> {
        plan.points.iter().filter(|p| p.parent().map(|b| b.id.as_str()) == id).collect()
    };
    // Depth-first from the roots; `prefix` draws the branches.
    let mut stack: Vec<(&Point, String)> = children(None).into_iter().rev().map(|p| (p, String::new())).collect();
    while let Some((p, prefix)) = stack.pop() {
        let f = p.own_flops();
        t.row(vec![
            format!("{prefix}{}", p.id),
            format!("{}{}", p.stage_name(), if p.is_fitted() { "" } else { " (parent)" }),
            p.parent().map(|b| b.step.to_string()).unwrap_or_else(|| "-".into()),
            p.label.clone(),
            fmt::si(p.n()),
            fmt::si(p.tokens as f64),
            fmt::si(p.own_tokens() as f64),
            format!("{}", p.mixture_ratio),
            p.train.steps.to_string(),
            fmt::sci(f.six_nd),
            fmt::sci(f.chinchilla),
            fmt::duration(p.runtime.estimated_seconds),
        ]);
        let kids = children(Some(&p.id));
        let indent =
            if prefix.is_empty() { String::new() } else { prefix.replace("└ ", "  ").replace("├ ", "│ ") };
        for (i, c) in kids.iter().enumerate().rev() {
            let mark = if i + 1 == kids.len() { "└ " } else { "├ " };
            stack.push((c, format!("{indent}{mark}")));
        }
    }
    let own6: f64 = plan.points.iter().map(|p| p.own_flops().six_nd).sum();
    let ownc: f64 = plan.points.iter().map(|p| p.own_flops().chinchilla).sum();
    let secs: f64 = plan.points.iter().map(|p| p.runtime.estimated_seconds).sum();
    let own_tokens: f64 = plan.points.iter().map(|p| p.own_tokens() as f64).sum();
    let fitted: Vec<&Point> = plan.points.iter().filter(|p| p.is_fitted()).collect();
    let alone6: f64 = fitted.iter().map(|p| p.flops.six_nd).sum();
    let alonec: f64 = fitted.iter().map(|p| p.flops.chinchilla).sum();
    let alone_tokens: f64 = fitted.iter().map(|p| p.tokens as f64).sum();
    let mut total = vec![format!("total ({} points)", plan.points.len())];
    total.extend(std::iter::repeat_n(String::new(), 5));
    total.extend([
        fmt::si(own_tokens),
        String::new(),
        String::new(),
        fmt::sci(own6),
        fmt::sci(ownc),
        fmt::duration(secs),
    ]);
    t.row(total);
    let mut out = format!(
        "sweep {:?}: {} points ({} fitted, {} parents), trainer {:?}, device {}\n",
        plan.name(),
        plan.points.len(),
        fitted.len(),
        plan.points.len() - fitted.len(),
        plan.config.sweep.trainer,
        plan.config.sweep.device
    );
    out.push_str(&t.render());
    out.push_str(&format!(
        "as independent runs (each of the {} fitted points trained from scratch to its total tokens): {} tokens, FLOPs 6ND {}, Chinchilla {}; this sweep costs {:.3} of that (6ND)\n",
        fitted.len(),
        fmt::si(alone_tokens),
        fmt::sci(alone6),
        fmt::sci(alonec),
        own6 / alone6
    ));
    out.push_str(&format!("time estimates: {}\n", time_basis(plan)));
    out
}

/// How the time estimates were made.
fn time_basis(plan: &Plan) -> String {
    match plan.config.sweep.trainer {
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
    }
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
    out.push_str(&format!("time estimates: {}\n", time_basis(plan)));
    out
}
