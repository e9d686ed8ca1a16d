//! sweep-plan: reads a sweep config (TOML), validates it, expands its grid into fully resolved
//! points with stable ids, and counts their parameters and FLOPs.
//!
//! ```no_run
//! let plan = sweep_plan::load(std::path::Path::new("configs/simulate.toml"), None).unwrap();
//! for p in &plan.points {
//!     println!("{} N={} D={}", p.id, p.counts.non_embedding_params, p.tokens);
//! }
//! ```

pub mod config;
pub mod error;
pub mod grid;
pub mod point;
pub mod precision;
pub mod rates;
pub mod shape;
pub mod stages;

pub use config::{LawParams, RawConfig, TrainerKind};
pub use error::{KeyError, PlanError};
pub use point::{Branch, Point, ResolvedPrecision, ResolvedTrain, Stage, StageData};

use config::{LrRule, ModelSection, QuantTarget, TrainSection};
use error::did_you_mean;
use grid::{Assignment, ModelSpec, TokensSpec};
use precision::{PrecisionSpec, Scaling};
use shape::{CoreShape, ModelShape, ShapeRule, NAMED_SIZES};
use std::path::{Path, PathBuf};
use sweep_io::config::{Locator, Section};

/// A validated config and its resolved points.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The config file.
    pub config_path: PathBuf,
    /// The config text as given.
    pub config_text: String,
    /// The profile applied, if any.
    pub profile: Option<String>,
    /// SHA-256 of the config text and profile name.
    pub config_hash: String,
    /// The parsed config (profile applied).
    pub config: RawConfig,
    /// Resolved points in grid order.
    pub points: Vec<Point>,
}

impl Plan {
    /// The sweep directory: `<out>/<name>`, `out` from `--out` when given.
    pub fn sweep_dir(&self, out_override: Option<&Path>) -> PathBuf {
        out_override.unwrap_or(&self.config.sweep.out).join(&self.config.sweep.name)
    }
    /// The sweep's name.
    pub fn name(&self) -> &str {
        &self.config.sweep.name
    }
}

/// Reads and plans a config file, applying `[profiles.<profile>]` when given.
pub fn load(path: &Path, profile: Option<&str>) -> Result<Plan, PlanError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| PlanError::file(path, format!("cannot read the config: {e}")))?;
    plan_text(path, &text, profile)
}

/// Plans config text (`path` is used in messages).
pub fn plan_text(path: &Path, text: &str, profile: Option<&str>) -> Result<Plan, PlanError> {
    let locator = Locator::new(text);
    let mut root: toml::Table = toml::from_str(text).map_err(|e: toml::de::Error| PlanError {
        file: path.to_path_buf(),
        location: e.span().map(|s| locator.line_col(s.start)),
        key: String::new(),
        message: format!("TOML syntax: {}", e.message().trim()),
    })?;
    let at = |err: KeyError| -> PlanError {
        PlanError {
            file: path.to_path_buf(),
            location: locate_key(&locator, profile, &err.key),
            key: err.key,
            message: err.message,
        }
    };
    let profiles = match root.remove("profiles") {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t,
        Some(_) => return Err(at(KeyError::new("profiles", "expected [profiles.NAME] tables"))),
    };
    if let Some(name) = profile {
        match profiles.get(name) {
            Some(toml::Value::Table(overrides)) => {
                // `tokens` and `tokens_per_param` are two spellings of one axis: a profile that
                // sets one replaces the other.
                if let (Some(toml::Value::Table(g)), Some(toml::Value::Table(base))) =
                    (overrides.get("grid"), root.get_mut("grid"))
                {
                    for (a, b) in [("tokens", "tokens_per_param"), ("tokens_per_param", "tokens")] {
                        if g.contains_key(a) {
                            base.remove(b);
                        }
                    }
                }
                merge(&mut root, overrides)
            }
            Some(_) => return Err(at(KeyError::new(format!("profiles.{name}"), "expected a table of overrides"))),
            None => {
                let names: Vec<&str> = profiles.keys().map(|k| k.as_str()).collect();
                let list = if names.is_empty() {
                    "this config has no [profiles.NAME] sections".to_string()
                } else {
                    format!("available: {}", names.join(", "))
                };
                return Err(PlanError {
                    file: path.to_path_buf(),
                    location: None,
                    key: "--profile".into(),
                    message: format!("no profile {name:?}{}; {list}", did_you_mean(name, names.iter().copied())),
                });
            }
        }
    }
    let config: RawConfig =
        sweep_io::config::from_value(toml::Value::Table(root), "").map_err(explain_lr).map_err(&at)?;
    validate(&config).map_err(&at)?;
    let points = resolve_all(&config).map_err(&at)?;
    let config_hash = point::sha256_hex(&format!("{}\n--profile {}", text, profile.unwrap_or("")));
    Ok(Plan {
        config_path: path.to_path_buf(),
        config_text: text.to_string(),
        profile: profile.map(String::from),
        config_hash,
        config,
        points,
    })
}

impl Plan {
    /// An error about `key` of this plan's config, located in the file (in the profile's
    /// override when the profile sets that key). For sections validated by other crates.
    pub fn error_at(&self, key: &str, message: impl Into<String>) -> PlanError {
        let locator = Locator::new(&self.config_text);
        let location = locate_key(&locator, self.profile.as_deref(), key);
        PlanError { file: self.config_path.clone(), location, key: key.to_string(), message: message.into() }
    }

    /// Reads the section `T::KEY` that another crate owns (`[data]`, `[fit]`) into its type, with
    /// errors located like the plan's own; `None` when the config has no such section.
    ///
    /// Panics if `T::KEY` is not one of those sections (a programming error).
    pub fn section<T: Section>(&self) -> Result<Option<T>, PlanError> {
        let table = match T::KEY {
            "data" => &self.config.data,
            "fit" => &self.config.fit,
            other => panic!("[{other}] is not a section the plan keeps for another crate"),
        };
        let Some(table) = table else { return Ok(None) };
        sweep_io::config::read_section(toml::Value::Table(table.clone()))
            .map(Some)
            .map_err(|e| self.error_at(&e.key, e.message))
    }
}

/// Where `key` is written: in the profile's override when the profile sets it, else in the base.
fn locate_key(locator: &Locator, profile: Option<&str>, key: &str) -> Option<(usize, usize)> {
    let in_profile = profile.map(|p| format!("profiles.{p}.{key}"));
    in_profile.as_deref().filter(|k| locator.has(k)).and_then(|k| locator.locate(k)).or_else(|| locator.locate(key))
}

/// Deep-merges `over` into `base`: tables merge, everything else replaces. A table with a
/// `type` key (a data source) is one value and replaces the base's whole table.
fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) if !o.contains_key("type") => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// serde says only that no form of an untagged enum matched; say which forms `lr` takes.
fn explain_lr(err: KeyError) -> KeyError {
    if err.message.starts_with("data did not match any variant of untagged enum LrRule") {
        return KeyError::new(
            err.key,
            "expected a number, a table { base, ref_params, exponent } or a table of learning rates by model name",
        );
    }
    err
}

fn check(cond: bool, key: &str, msg: impl FnOnce() -> String) -> Result<(), KeyError> {
    if cond {
        Ok(())
    } else {
        Err(KeyError::new(key, msg()))
    }
}

fn validate(c: &RawConfig) -> Result<(), KeyError> {
    let s = &c.sweep;
    check(
        !s.name.trim().is_empty() && !s.name.contains(['/', '\\']) && s.name != "." && s.name != "..",
        "sweep.name",
        || format!("{:?} cannot name a directory: use letters, digits, '-' or '_'", s.name),
    )?;
    let dev = s.device.as_str();
    let dev_ok = dev == "cpu" || dev == "metal" || dev.strip_prefix("cuda:").is_some_and(|n| n.parse::<u32>().is_ok());
    check(dev_ok, "sweep.device", || format!("{dev:?} is not a device; use \"cpu\", \"cuda:N\" or \"metal\""))?;
    if let Some(f) = s.flops_per_second {
        check(f.is_finite() && f > 0.0, "sweep.flops_per_second", || format!("{f} must be positive"))?;
    }
    let m = &c.model;
    check(m.aspect_ratio.is_finite() && m.aspect_ratio > 0.0, "model.aspect_ratio", || {
        format!("{} must be positive", m.aspect_ratio)
    })?;
    check(m.head_dim >= 2 && m.head_dim.is_multiple_of(2), "model.head_dim", || {
        format!("{} must be an even number >= 2", m.head_dim)
    })?;
    check(m.context >= 2, "model.context", || format!("{} is too short; use at least 2 tokens", m.context))?;
    check((256..=u32::MAX as u64).contains(&m.vocab_size), "model.vocab_size", || {
        format!("{} is outside [256, 4294967295]", m.vocab_size)
    })?;
    check(m.ffn_multiple_of >= 1, "model.ffn_multiple_of", || "must be at least 1".into())?;
    if let Some(x) = m.ffn_multiplier {
        check(x.is_finite() && x > 0.0, "model.ffn_multiplier", || format!("{x} must be positive"))?;
    }
    for (name, shape) in &m.sizes {
        grid::check_shape(shape).map_err(|msg| KeyError::new(format!("model.sizes.{name}"), msg))?;
    }
    let t = &c.train;
    check(t.batch_size >= 1, "train.batch_size", || "must be at least 1".into())?;
    check(t.grad_accum >= 1, "train.grad_accum", || "must be at least 1".into())?;
    let lr_ok = |x: f64| x.is_finite() && x > 0.0;
    match &t.lr {
        LrRule::Constant(x) => check(lr_ok(*x), "train.lr", || format!("{x} must be a positive learning rate"))?,
        LrRule::Power { base, ref_params, exponent } => {
            check(lr_ok(*base), "train.lr.base", || format!("{base} must be positive"))?;
            check(lr_ok(*ref_params), "train.lr.ref_params", || format!("{ref_params} must be positive"))?;
            check(exponent.is_finite(), "train.lr.exponent", || "must be finite".into())?;
        }
        LrRule::ByModel(map) => {
            for (k, x) in map {
                check(lr_ok(*x), &format!("train.lr.{k}"), || format!("{x} must be a positive learning rate"))?;
            }
        }
    }
    check((0.0..1.0).contains(&t.warmup_fraction), "train.warmup_fraction", || {
        format!("{} is outside [0, 1)", t.warmup_fraction)
    })?;
    check((0.0..=1.0).contains(&t.cooldown_fraction), "train.cooldown_fraction", || {
        format!("{} is outside [0, 1]", t.cooldown_fraction)
    })?;
    if let Some(x) = t.cooldown_tokens {
        check(x.is_finite() && x > 0.0, "train.cooldown_tokens", || format!("{x} must be a positive token count"))?;
    }
    check((0.0..=1.0).contains(&t.min_lr_ratio), "train.min_lr_ratio", || {
        format!("{} is outside [0, 1]", t.min_lr_ratio)
    })?;
    check(t.weight_decay >= 0.0 && t.weight_decay.is_finite(), "train.weight_decay", || {
        format!("{} must be >= 0", t.weight_decay)
    })?;
    check((0.0..1.0).contains(&t.beta1), "train.beta1", || format!("{} is outside [0, 1)", t.beta1))?;
    check((0.0..1.0).contains(&t.beta2), "train.beta2", || format!("{} is outside [0, 1)", t.beta2))?;
    check(t.eps > 0.0, "train.eps", || format!("{} must be positive", t.eps))?;
    check(t.grad_clip >= 0.0, "train.grad_clip", || format!("{} must be >= 0 (0 disables clipping)", t.grad_clip))?;
    check(t.eval_every != Some(0), "train.eval_every", || "must be at least 1".into())?;
    check(t.eval_batches >= 1, "train.eval_batches", || "must be at least 1".into())?;
    check(t.log_every >= 1, "train.log_every", || "must be at least 1".into())?;
    check(t.checkpoint_every >= 1, "train.checkpoint_every", || "must be at least 1".into())?;
    check(t.diverge_factor > 1.0, "train.diverge_factor", || format!("{} must be above 1", t.diverge_factor))?;
    let p = &c.precision;
    for (key, name) in [
        ("weights", &p.weights),
        ("activations", &p.activations),
        ("gradients", &p.gradients),
        ("kv", &p.kv),
        ("grad_output", &p.grad_output),
        ("attention", &p.attention),
        ("logits", &p.logits),
    ] {
        if let Some(n) = name {
            PrecisionSpec::parse(n).map_err(|msg| KeyError::new(format!("precision.{key}"), msg))?;
        }
    }
    if let Some(h) = p.amax_history {
        check((1..=1024).contains(&h), "precision.amax_history", || {
            format!("{h} is outside 1..=1024 (passes of amax history for delayed scaling)")
        })?;
    }
    let sim = &c.simulate;
    check(sim.noise >= 0.0 && sim.noise < 1.0, "simulate.noise", || format!("{} is outside [0, 1)", sim.noise))?;
    check(sim.seconds_per_point >= 0.0, "simulate.seconds_per_point", || {
        format!("{} must be >= 0", sim.seconds_per_point)
    })?;
    for (key, law) in [("simulate.general", Some(&sim.general)), ("simulate.domain", sim.domain.as_ref())] {
        let Some(law) = law else { continue };
        for (name, v) in [
            ("E", law.e),
            ("A", law.a),
            ("alpha", law.alpha),
            ("B", law.b),
            ("beta", law.beta),
            ("C", law.c),
            ("gamma", law.gamma),
            ("eta", law.eta),
        ] {
            check(v.is_finite() && v >= 0.0, &format!("{key}.{name}"), || format!("{v} must be a finite number >= 0"))?;
        }
        check(law.eps > 0.0, &format!("{key}.eps"), || "must be positive".into())?;
        for (name, v) in [("R_D_star", law.r_d_star), ("R_N_star", law.r_n_star)] {
            if let Some(v) = v {
                check(v.is_finite() && v > 0.0, &format!("{key}.{name}"), || format!("{v} must be positive"))?;
            }
        }
    }
    if let Some(f) = &sim.fp_quant {
        for (name, v) in [("gamma", f.gamma), ("delta", f.delta), ("nu", f.nu)] {
            check(v.is_finite() && v > 0.0, &format!("simulate.fp_quant.{name}"), || format!("{v} must be positive"))?;
        }
    }
    if let Some(k) = &sim.precision {
        for (name, v) in [("gamma_w", k.gamma_w), ("gamma_a", k.gamma_a), ("gamma_kv", k.gamma_kv)] {
            check(v.is_finite() && v > 0.0, &format!("simulate.precision.{name}"), || format!("{v} must be positive"))?;
        }
    }
    if let Some(a) = &sim.anneal {
        check(a.loss.is_finite() && a.loss >= 0.0, "simulate.anneal.loss", || format!("{} must be >= 0", a.loss))?;
        check(a.tokens.is_finite() && a.tokens > 0.0, "simulate.anneal.tokens", || {
            format!("{} must be a positive token count", a.tokens)
        })?;
    }
    stages::validate(c)?;
    Ok(())
}

fn shape_rule(m: &ModelSection) -> ShapeRule {
    let default_mult = match m.ffn {
        shape::Ffn::Swiglu => 8.0 / 3.0,
        shape::Ffn::Gelu => 4.0,
    };
    ShapeRule {
        aspect_ratio: m.aspect_ratio,
        head_dim: m.head_dim,
        ffn: m.ffn,
        ffn_multiplier: m.ffn_multiplier.unwrap_or(default_mult),
        ffn_multiple_of: m.ffn_multiple_of,
    }
}

fn core_shape(spec: &ModelSpec, m: &ModelSection, rule: &ShapeRule) -> CoreShape {
    match spec {
        ModelSpec::Named(n) => m.sizes.get(n).copied().unwrap_or_else(|| {
            let (_, d, l, h) = *NAMED_SIZES.iter().find(|(x, ..)| x == n).expect("checked when parsed");
            CoreShape { d_model: d, n_layers: l, n_heads: h, d_ff: None }
        }),
        ModelSpec::Params(p) => rule.derive(*p),
        ModelSpec::Shape(s) => *s,
    }
}

/// Default sustained training FLOP/s by device, for time estimates only, when nothing was measured.
pub fn default_flops_per_second(device: &str) -> f64 {
    rates::default_flops_per_second(device)
}

/// The sustained training FLOP/s a time estimate assumes for a model of `flops_per_token` in
/// `precision` under config `c`, and where it comes from: `[sweep] flops_per_second`, else a
/// measured rate (`rates`), else the device's default.
pub fn flops_per_second(c: &RawConfig, precision: &str, flops_per_token: f64) -> (f64, String) {
    static RATES: std::sync::OnceLock<rates::Rates> = std::sync::OnceLock::new();
    if let Some(f) = c.sweep.flops_per_second {
        return (f, "[sweep] flops_per_second".into());
    }
    let rates = RATES.get_or_init(rates::Rates::load);
    match rates.estimate(&c.sweep.device, precision, flops_per_token) {
        Some((f, source)) => (f, format!("measured: {source}")),
        None => (default_flops_per_second(&c.sweep.device), "a default for the device; nothing measured".into()),
    }
}

fn resolve_all(c: &RawConfig) -> Result<Vec<Point>, KeyError> {
    let assignments = grid::expand(&c.grid, &c.model.sizes)?;
    let rule = shape_rule(&c.model);
    let data = match &c.data {
        Some(t) => serde_json::to_value(t).map_err(|e| KeyError::new("data", e.to_string()))?,
        None => serde_json::Value::Null,
    };
    let mut points: Vec<Point> = Vec::with_capacity(assignments.len());
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (index, a) in assignments.iter().enumerate() {
        let mut p = resolve(c, &rule, a, index, &data)?;
        p.id = p.compute_id();
        if let Some(&first) = seen.get(&p.id) {
            let where_ = a.model.as_ref().map(|(_, k)| k.clone()).unwrap_or_else(|| "grid".into());
            return Err(KeyError::new(
                where_,
                format!("points {first} and {index} of the grid resolve to the same configuration (id {}): two axis values give the same model or budget; remove one", p.id),
            ));
        }
        seen.insert(p.id.clone(), index);
        points.push(p);
    }
    stages::apply(c, &rule, &assignments, points, &data)
}

/// Estimated wall time of training `flops` (Chinchilla count) under the config's trainer.
pub(crate) fn estimate_seconds(c: &RawConfig, precision: &str, flops_per_token: f64, flops_chinchilla: f64) -> f64 {
    match c.sweep.trainer {
        TrainerKind::Simulate => c.simulate.seconds_per_point,
        TrainerKind::Candle => flops_chinchilla / flops_per_second(c, precision, flops_per_token).0,
    }
}

/// Resolves one assignment of the grid into a point (its id not yet computed).
pub(crate) fn resolve(
    c: &RawConfig,
    rule: &ShapeRule,
    a: &Assignment,
    index: usize,
    data: &serde_json::Value,
) -> Result<Point, KeyError> {
    let m = &c.model;
    let (spec, model_key) = a.model.clone().expect("expand() requires a model axis");
    let core = core_shape(&spec, m, rule);
    let vocab_size = a.vocab_size.as_ref().map(|(v, _)| *v).unwrap_or(m.vocab_size);
    let model = ModelShape {
        d_model: core.d_model,
        n_layers: core.n_layers,
        n_heads: core.n_heads,
        d_ff: core.d_ff.unwrap_or_else(|| rule.d_ff(core.d_model)),
        context: m.context,
        vocab_size,
        ffn: m.ffn,
        tied_embeddings: m.tied_embeddings,
    };
    let counts = model.counts();
    let n = counts.non_embedding_params as f64;
    let (tokens_spec, tokens_key) = a.tokens.clone().expect("expand() requires a token axis");
    let tokens_requested = match tokens_spec {
        TokensSpec::Absolute(d) => d,
        TokensSpec::PerParam(k) => k * n,
        TokensSpec::Budget(cflops) => cflops / (6.0 * n),
    };
    let t: &TrainSection = &c.train;
    let per_step = t.batch_size * t.grad_accum * m.context;
    let steps = ((tokens_requested / per_step as f64).ceil() as u64).max(1);
    if steps > 1_000_000_000 {
        return Err(KeyError::new(tokens_key, format!("{tokens_requested:.3e} tokens need {steps} steps at {per_step} tokens per step; lower the budget or raise train.batch_size")));
    }
    let tokens = steps * per_step;
    let isoflop_budget = match tokens_spec {
        TokensSpec::Budget(c) => Some(c),
        _ => None,
    };
    let unique_tokens = match &a.unique_tokens {
        Some((u, key)) => {
            // The sampler reads windows of context + 1 tokens: fewer distinct tokens than one
            // window cannot be repeated.
            if *u < (m.context + 1) as f64 {
                return Err(KeyError::new(
                    key,
                    format!(
                        "{u} distinct tokens are fewer than one training window (context + 1 = {}); give at least that many",
                        m.context + 1
                    ),
                ));
            }
            Some(*u as u64)
        }
        None => None,
    };
    let label = spec.label();
    let lr = match &t.lr {
        LrRule::Constant(x) => *x,
        LrRule::Power { base, ref_params, exponent } => base * (n / ref_params).powf(*exponent),
        LrRule::ByModel(map) => *map.get(&label).ok_or_else(|| {
            KeyError::new(
                model_key.clone(),
                format!("train.lr has no learning rate for model {label:?}; add {label:?} = <lr> to [train.lr]"),
            )
        })?,
    };
    let warmup_steps = t.warmup_steps.unwrap_or_else(|| (t.warmup_fraction * steps as f64).round() as u64).min(steps);
    let cooldown_steps = match t.schedule {
        config::Schedule::Wsd => cooldown_steps(t, steps, per_step).min(steps - warmup_steps),
        _ => 0,
    };
    let train = ResolvedTrain {
        batch_size: t.batch_size,
        grad_accum: t.grad_accum,
        steps,
        lr,
        schedule: t.schedule,
        warmup_steps,
        cooldown_steps,
        cooldown_shape: if t.schedule == config::Schedule::Wsd { t.cooldown_shape } else { Default::default() },
        min_lr_ratio: t.min_lr_ratio,
        weight_decay: t.weight_decay,
        beta1: t.beta1,
        beta2: t.beta2,
        eps: t.eps,
        grad_clip: t.grad_clip,
        eval_every: t.eval_every.unwrap_or((steps / 10).max(1)).min(steps),
        eval_batches: t.eval_batches,
        log_every: t.log_every.min(steps),
        checkpoint_every: t.checkpoint_every,
        diverge_factor: t.diverge_factor,
    };
    let spec_p = a
        .precision
        .as_ref()
        .map(|(p, _)| p.clone())
        .unwrap_or_else(|| PrecisionSpec::parse("fp32").expect("fp32 parses"));
    let pc = &c.precision;
    let parse_override = |o: &Option<String>| o.as_ref().map(|n| PrecisionSpec::parse(n).expect("validated"));
    let mut targets: Vec<(QuantTarget, PrecisionSpec)> = Vec::new();
    for target in QuantTarget::ALL {
        let over = match target {
            QuantTarget::Weights => parse_override(&pc.weights),
            QuantTarget::Activations => parse_override(&pc.activations),
            QuantTarget::Gradients => parse_override(&pc.gradients),
            QuantTarget::Kv => parse_override(&pc.kv),
            QuantTarget::GradOutput => parse_override(&pc.grad_output),
            QuantTarget::Attention => parse_override(&pc.attention),
            QuantTarget::Logits => parse_override(&pc.logits),
        };
        let chosen = if spec_p.per_target.is_empty() {
            over.or_else(|| pc.targets.contains(&target).then(|| spec_p.clone()))
        } else {
            // A per-target grid value names every quantised target itself.
            spec_p.per_target.iter().find(|(t, _)| *t == target).map(|(_, s)| s.clone())
        };
        if let Some(s) = chosen.filter(|s| s.format.is_simulated()) {
            targets.push((target, s));
        }
    }
    // A per-target value whose targets differ in format (or leave some in fp32) has no single
    // exponent/mantissa split: the floating-point law leaves it out (NaN in the results table).
    let mixed = !spec_p.per_target.is_empty()
        && (spec_p.per_target.iter().any(|(_, s)| s.format != spec_p.format)
            || !pc.targets.iter().all(|t| spec_p.per_target.iter().any(|(u, _)| u == t)));
    let (exp_bits, man_bits) = match spec_p.format.exp_man() {
        Some((e, mm)) if !mixed => (Some(e), Some(mm)),
        _ => (None, None),
    };
    let precision = ResolvedPrecision {
        name: spec_p.name.clone(),
        bits: spec_p.format.bits(),
        block_size: spec_p.law_block_size(),
        exp_bits,
        man_bits,
        spec: spec_p,
        // Delayed scaling only where some target scales per tensor (it keeps no per-block history).
        amax_history: pc.amax_history.filter(|_| targets.iter().any(|(_, s)| s.scaling == Scaling::Tensor)),
        targets,
        rounding: pc.rounding,
    };
    let flops = point::Flops {
        six_nd: counts.flops_per_token_6n * tokens as f64,
        chinchilla: counts.flops_per_token_chinchilla * tokens as f64,
    };
    let simulate = (c.sweep.trainer == TrainerKind::Simulate).then(|| c.simulate.clone());
    let estimated_seconds = estimate_seconds(c, &precision.name, counts.flops_per_token_chinchilla, flops.chinchilla);
    Ok(Point {
        id: String::new(),
        index,
        label,
        trainer: c.sweep.trainer,
        seed: a.seed.as_ref().map_or(c.sweep.seed, |(s, _)| *s),
        model,
        tokens,
        tokens_requested,
        mixture_ratio: a.mixture_ratio.as_ref().map(|(r, _)| *r).unwrap_or(0.0),
        isoflop_budget,
        unique_tokens,
        precision,
        train,
        data: data.clone(),
        simulate,
        lr_rule: t.lr.clone(),
        counts,
        flops,
        runtime: point::Runtime {
            device: c.sweep.device.clone(),
            seconds_per_point: c.simulate.seconds_per_point,
            estimated_seconds,
        },
        stage: None,
    })
}

/// WSD cooldown steps of a run of `steps` steps: `cooldown_tokens` when given (at least one
/// step), else `cooldown_fraction` of the steps, rounded.
pub(crate) fn cooldown_steps(t: &TrainSection, steps: u64, tokens_per_step: u64) -> u64 {
    match t.cooldown_tokens {
        Some(tokens) => ((tokens / tokens_per_step as f64).round() as u64).max(1),
        None => (t.cooldown_fraction * steps as f64).round() as u64,
    }
}
