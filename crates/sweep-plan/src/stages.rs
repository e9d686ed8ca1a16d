//! Staged points: points that start from another point's checkpoint. `[stages]` names the
//! design, and [`apply`] turns the grid's independent points into a tree of parents and children:
//!
//! - `type = "cpt"`, continual pre-training (D-CPT, Que et al. 2024; CMR, Gu et al. 2024): every
//!   grid point continues a base model trained on `[stages.base]` (its corpus mixture and its
//!   tokens per size), from the base's last step, on the grid point's own mixture ratio and
//!   tokens, with `[train]`'s schedule (warmup included) run over those tokens. One base is
//!   trained per model (and vocabulary and precision), whatever number of grid points continue it.
//! - `type = "wsd"`, WSD cooldown branches (Haegele et al. 2024): the grid's points are WSD runs
//!   (`[train] schedule = "wsd"`); the warmup-stable phase shared by all budgets of one model is
//!   one run (stage `stable`), and each budget is a cooldown branched off it at the step where
//!   its own cooldown starts (stage `cooldown`), continuing the stable run's data stream: each
//!   branch is step for step the WSD run it replaces.
//! - `type = "none"`: every point trains from scratch (what no `[stages]` means; a profile sets
//!   it to run the same grid as independent runs).
//!
//! A child's `tokens` and `flops` are those of its model at the end (its parent's included);
//! its `train` settings and schedule are those of its own steps.

use crate::config::{RawConfig, Schedule};
use crate::error::KeyError;
use crate::grid::{Assignment, TokensSpec};
use crate::point::{Branch, Flops, Point, Stage, StageData};
use crate::shape::ShapeRule;
use serde::Deserialize;

/// The staged design of a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Design {
    /// Every point from scratch.
    None,
    /// Continual pre-training from base models.
    Cpt,
    /// WSD cooldowns branched off one stable run per model.
    Wsd,
}

/// `[stages]`: which design, and its settings. A profile's `stages` table replaces the base's
/// whole (it has a `type` key, like a data source).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagesSection {
    /// `"none"`, `"cpt"` or `"wsd"`.
    #[serde(rename = "type")]
    pub design: Design,
    /// The base stage of continual pre-training (`type = "cpt"` only).
    #[serde(default)]
    pub base: Option<BaseStage>,
}

/// `[stages.base]`: the base models that continual pre-training starts from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseStage {
    /// Base training tokens: one count for every size, or a table by model label
    /// (`{ micro = 2e4, tiny = 4e4 }`).
    #[serde(default)]
    pub tokens: Option<toml::Value>,
    /// Base training tokens as a multiple of N (non-embedding).
    #[serde(default)]
    pub tokens_per_param: Option<f64>,
    /// Domain share of the base's training tokens (0: the general corpus only).
    #[serde(default)]
    pub mixture_ratio: f64,
    /// The base's schedule (default: `[train] schedule`).
    #[serde(default)]
    pub schedule: Option<Schedule>,
}

fn design(c: &RawConfig) -> Design {
    c.stages.as_ref().map_or(Design::None, |s| s.design)
}

/// A positive finite number from a TOML value.
fn positive(v: &toml::Value) -> Option<f64> {
    let x = match v {
        toml::Value::Integer(i) => *i as f64,
        toml::Value::Float(f) => *f,
        _ => return None,
    };
    (x.is_finite() && x > 0.0).then_some(x)
}

/// Checks `[stages]` against the rest of the config.
pub(crate) fn validate(c: &RawConfig) -> Result<(), KeyError> {
    let Some(s) = &c.stages else { return Ok(()) };
    if s.design != Design::Cpt && s.base.is_some() {
        return Err(KeyError::new(
            "stages.base",
            "a base stage belongs to continual pre-training: use type = \"cpt\", or remove [stages.base]",
        ));
    }
    match s.design {
        Design::None => Ok(()),
        Design::Wsd => {
            let t = &c.train;
            if t.schedule != Schedule::Wsd {
                return Err(KeyError::new(
                    "stages.type",
                    "\"wsd\" branches the cooldowns of WSD runs off one stable run: set [train] schedule = \"wsd\" (the cooldown from cooldown_fraction or cooldown_tokens, and cooldown_shape)",
                ));
            }
            if t.cooldown_tokens.is_none() && !(t.cooldown_fraction > 0.0 && t.cooldown_fraction < 1.0) {
                return Err(KeyError::new(
                    "train.cooldown_fraction",
                    format!("{} leaves no stable phase to share or no cooldown to branch: with [stages] type = \"wsd\" use a value in (0, 1), e.g. 0.2", t.cooldown_fraction),
                ));
            }
            Ok(())
        }
        Design::Cpt => {
            let Some(b) = &s.base else {
                return Err(KeyError::new(
                    "stages",
                    "continual pre-training needs [stages.base] with the base models' tokens (tokens or tokens_per_param)",
                ));
            };
            match (&b.tokens, b.tokens_per_param) {
                (Some(_), Some(_)) => {
                    return Err(KeyError::new("stages.base.tokens_per_param", "give tokens or tokens_per_param, not both"))
                }
                (None, None) => {
                    return Err(KeyError::new(
                        "stages.base",
                        "missing the base models' tokens: give tokens (a count, or a table by model such as { tiny = 4e4 }) or tokens_per_param",
                    ))
                }
                (Some(toml::Value::Table(by_size)), None) => {
                    for (label, v) in by_size {
                        if positive(v).is_none() {
                            return Err(KeyError::new(
                                format!("stages.base.tokens.{label}"),
                                format!("{v} is not a token count: give a positive number such as 4e4"),
                            ));
                        }
                    }
                }
                (Some(v), None) => {
                    if positive(v).is_none() {
                        return Err(KeyError::new(
                            "stages.base.tokens",
                            format!("{v} is not a token count: give a positive number such as 4e4, or a table by model such as {{ tiny = 4e4 }}"),
                        ));
                    }
                }
                (None, Some(k)) => {
                    if !(k.is_finite() && k > 0.0) {
                        return Err(KeyError::new("stages.base.tokens_per_param", format!("{k} must be positive")));
                    }
                }
            }
            if !(0.0..=1.0).contains(&b.mixture_ratio) {
                return Err(KeyError::new(
                    "stages.base.mixture_ratio",
                    format!(
                        "{} is outside [0, 1]: the base's share of domain tokens (0 for the general corpus only)",
                        b.mixture_ratio
                    ),
                ));
            }
            Ok(())
        }
    }
}

/// The staged points of the config: parents first (in the order the grid first needs them),
/// then the grid's points as children, in grid order. Without stages, `leaves` as they are.
pub(crate) fn apply(
    c: &RawConfig,
    rule: &ShapeRule,
    assignments: &[Assignment],
    leaves: Vec<Point>,
    data: &serde_json::Value,
) -> Result<Vec<Point>, KeyError> {
    let (parents, children) = match design(c) {
        Design::None => return Ok(leaves),
        Design::Wsd => wsd(c, assignments, leaves)?,
        Design::Cpt => cpt(c, rule, assignments, leaves, data)?,
    };
    let mut points = parents;
    points.extend(children);
    for (index, p) in points.iter_mut().enumerate() {
        p.index = index;
    }
    Ok(points)
}

/// Training FLOPs of `tokens` tokens of `p`'s model.
fn flops_of(p: &Point, tokens: u64) -> Flops {
    Flops {
        six_nd: p.counts.flops_per_token_6n * tokens as f64,
        chinchilla: p.counts.flops_per_token_chinchilla * tokens as f64,
    }
}

/// Evaluation and log intervals of a point of `steps` own steps, as `resolve` sets them.
fn intervals(c: &RawConfig, p: &mut Point, steps: u64) {
    let t = &c.train;
    p.train.eval_every = t.eval_every.unwrap_or((steps / 10).max(1)).min(steps);
    p.train.log_every = t.log_every.min(steps);
}

/// WSD: one stable run per model (every axis but the token budget), each budget a cooldown
/// branched off it.
fn wsd(c: &RawConfig, assignments: &[Assignment], leaves: Vec<Point>) -> Result<(Vec<Point>, Vec<Point>), KeyError> {
    let t = &c.train;
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, a) in assignments.iter().enumerate() {
        let key = format!(
            "{:?}|{:?}|{:?}|{:?}",
            a.model.as_ref().map(|m| &m.0),
            a.mixture_ratio.as_ref().map(|r| r.0),
            a.vocab_size.as_ref().map(|v| v.0),
            a.precision.as_ref().map(|p| &p.0)
        );
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    let mut parents = Vec::with_capacity(groups.len());
    let mut children: Vec<(usize, Point)> = Vec::with_capacity(leaves.len());
    for (_, members) in &groups {
        let per_step = leaves[members[0]].train.tokens_per_step(leaves[members[0]].model.context);
        // (leaf, step where its cooldown starts, cooldown steps)
        let starts: Vec<(usize, u64, u64)> = members
            .iter()
            .map(|&i| {
                let steps = leaves[i].train.steps;
                let cool = crate::cooldown_steps(t, steps, per_step).min(steps);
                (i, steps - cool, cool)
            })
            .collect();
        let &(longest, stable, _) = starts.iter().max_by_key(|s| s.1).expect("a group has members");
        let warmup = t.warmup_steps.unwrap_or_else(|| (t.warmup_fraction * stable as f64).round() as u64).min(stable);
        for &(i, start, cool) in &starts {
            let key = assignments[i].tokens.as_ref().map(|(_, k)| k.clone()).unwrap_or_else(|| "grid".into());
            let steps = leaves[i].train.steps;
            if cool == 0 {
                return Err(KeyError::new(
                    key,
                    format!("this budget's cooldown rounds to 0 of its {steps} steps: raise train.cooldown_fraction (or give cooldown_tokens) or the budget"),
                ));
            }
            if start == 0 || start < warmup {
                let why = if start == 0 {
                    "at step 0: the cooldown is the whole run".to_string()
                } else {
                    format!("at step {start}, inside the stable run's warmup of {warmup} steps")
                };
                return Err(KeyError::new(
                    key,
                    format!("this budget ({steps} steps) would branch its cooldown of {cool} steps {why}; shorten the cooldown or the warmup (train.warmup_steps or warmup_fraction), or raise the budget"),
                ));
            }
        }
        let mut trunk = leaves[longest].clone();
        trunk.train.steps = stable;
        trunk.train.schedule = Schedule::Constant;
        trunk.train.warmup_steps = warmup;
        trunk.train.cooldown_steps = 0;
        trunk.train.cooldown_shape = Default::default();
        intervals(c, &mut trunk, stable);
        trunk.tokens = stable * per_step;
        trunk.tokens_requested = trunk.tokens as f64;
        trunk.flops = flops_of(&trunk, trunk.tokens);
        trunk.runtime.estimated_seconds = crate::estimate_seconds(
            c,
            &trunk.precision.name,
            trunk.counts.flops_per_token_chinchilla,
            trunk.flops.chinchilla,
        );
        let mut branch_steps: Vec<u64> = starts.iter().map(|s| s.1).collect();
        branch_steps.sort_unstable();
        branch_steps.dedup();
        trunk.stage = Some(Stage { name: "stable".into(), fitted: false, parent: None, branch_steps });
        trunk.id = trunk.compute_id();
        for &(i, start, cool) in &starts {
            let mut p = leaves[i].clone();
            p.train.steps = cool;
            p.train.warmup_steps = 0;
            p.train.cooldown_steps = cool;
            intervals(c, &mut p, cool);
            p.stage = Some(Stage {
                name: "cooldown".into(),
                fitted: true,
                parent: Some(Branch {
                    id: trunk.id.clone(),
                    step: start,
                    tokens: start * per_step,
                    data: StageData::Continue,
                }),
                branch_steps: Vec::new(),
            });
            p.runtime.estimated_seconds = crate::estimate_seconds(
                c,
                &p.precision.name,
                p.counts.flops_per_token_chinchilla,
                p.own_flops().chinchilla,
            );
            p.id = p.compute_id();
            children.push((i, p));
        }
        parents.push(trunk);
    }
    children.sort_by_key(|(i, _)| *i);
    Ok((parents, children.into_iter().map(|(_, p)| p).collect()))
}

/// Continual pre-training: each grid point continues its model's base from the base's end.
fn cpt(
    c: &RawConfig,
    rule: &ShapeRule,
    assignments: &[Assignment],
    leaves: Vec<Point>,
    data: &serde_json::Value,
) -> Result<(Vec<Point>, Vec<Point>), KeyError> {
    let base = c.stages.as_ref().and_then(|s| s.base.as_ref()).expect("validated: cpt has a base");
    let mut base_config = c.clone();
    if let Some(schedule) = base.schedule {
        base_config.train.schedule = schedule;
    }
    let mut parents: Vec<Point> = Vec::new();
    let mut children = Vec::with_capacity(leaves.len());
    for (a, leaf) in assignments.iter().zip(leaves) {
        let spec = match (&base.tokens, base.tokens_per_param) {
            (Some(toml::Value::Table(by_size)), _) => {
                let v = by_size.get(&leaf.label).ok_or_else(|| {
                    KeyError::new(
                        "stages.base.tokens",
                        format!(
                            "no base tokens for model {:?}; add {:?} = <tokens> (the table has {})",
                            leaf.label,
                            leaf.label,
                            by_size.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    )
                })?;
                (TokensSpec::Absolute(positive(v).expect("validated")), "stages.base.tokens")
            }
            (Some(v), _) => (TokensSpec::Absolute(positive(v).expect("validated")), "stages.base.tokens"),
            (None, Some(k)) => (TokensSpec::PerParam(k), "stages.base.tokens_per_param"),
            (None, None) => unreachable!("validated: the base has tokens"),
        };
        let mut at = a.clone();
        at.tokens = Some((spec.0, spec.1.to_string()));
        at.mixture_ratio = Some((base.mixture_ratio, "stages.base.mixture_ratio".into()));
        let mut b = crate::resolve(&base_config, rule, &at, 0, data)?;
        b.stage = Some(Stage { name: "base".into(), fitted: false, parent: None, branch_steps: vec![b.train.steps] });
        b.id = b.compute_id();
        let mut p = leaf;
        p.tokens += b.tokens;
        p.flops = flops_of(&p, p.tokens);
        p.stage = Some(Stage {
            name: "cpt".into(),
            fitted: true,
            parent: Some(Branch { id: b.id.clone(), step: b.train.steps, tokens: b.tokens, data: StageData::Switch }),
            branch_steps: Vec::new(),
        });
        p.id = p.compute_id();
        if !parents.iter().any(|q| q.id == b.id) {
            parents.push(b);
        }
        children.push(p);
    }
    Ok((parents, children))
}
