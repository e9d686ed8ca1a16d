//! Grid expansion: axes, `[[grid.zip]]` blocks and `[[grid.isoflop]]` designs become a list of
//! assignments, each a value per axis.

use crate::error::{did_you_mean, KeyError};
use crate::precision::PrecisionSpec;
use crate::shape::{CoreShape, NAMED_SIZES};
use std::collections::BTreeMap;

/// The axes a grid may vary.
pub const AXES: &[&str] =
    &["model", "tokens", "tokens_per_param", "mixture_ratio", "vocab_size", "precision", "seed", "unique_tokens"];
const GRID_KEYS: &[&str] = &[
    "model",
    "tokens",
    "tokens_per_param",
    "mixture_ratio",
    "vocab_size",
    "precision",
    "seed",
    "unique_tokens",
    "zip",
    "isoflop",
];

/// How a model size is given.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSpec {
    /// A named size (built-in ladder or `[model.sizes]`).
    Named(String),
    /// A target non-embedding parameter count.
    Params(f64),
    /// An explicit shape.
    Shape(CoreShape),
}

impl ModelSpec {
    /// How the size is shown in tables and used as a key of `lr` tables.
    pub fn label(&self) -> String {
        match self {
            ModelSpec::Named(n) => n.clone(),
            ModelSpec::Params(p) => format_count(*p),
            ModelSpec::Shape(s) => format!("d{}-l{}-h{}", s.d_model, s.n_layers, s.n_heads),
        }
    }
}

/// `1e6`, `2.5e7`: compact scientific notation for counts.
pub fn format_count(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let exp = x.abs().log10().floor() as i32;
    let mant = x / 10f64.powi(exp);
    let mant = (mant * 1000.0).round() / 1000.0;
    if (mant - mant.round()).abs() < 1e-9 {
        format!("{}e{}", mant.round() as i64, exp)
    } else {
        format!("{mant}e{exp}")
    }
}

/// How the training-token count is given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TokensSpec {
    /// An absolute token count.
    Absolute(f64),
    /// A multiple of the non-embedding parameter count.
    PerParam(f64),
    /// A training FLOP budget C of an IsoFLOP design: D = C / (6 N).
    Budget(f64),
}

/// One value of one axis.
#[derive(Debug, Clone, PartialEq)]
pub enum AxisValue {
    /// `model`.
    Model(ModelSpec),
    /// `tokens` or `tokens_per_param`.
    Tokens(TokensSpec),
    /// `mixture_ratio`.
    Ratio(f64),
    /// `vocab_size`.
    Vocab(u64),
    /// `precision`.
    Precision(PrecisionSpec),
    /// `seed` (replaces `[sweep] seed`: paired runs that differ only in initialisation and data order).
    Seed(u64),
    /// `unique_tokens`: distinct training tokens, repeated in epochs.
    UniqueTokens(f64),
}

/// One grid point before resolution: a value per axis, plus where each came from.
#[derive(Debug, Clone, Default)]
pub struct Assignment {
    /// Model size.
    pub model: Option<(ModelSpec, String)>,
    /// Token budget.
    pub tokens: Option<(TokensSpec, String)>,
    /// Mixture ratio.
    pub mixture_ratio: Option<(f64, String)>,
    /// Vocabulary size.
    pub vocab_size: Option<(u64, String)>,
    /// Precision.
    pub precision: Option<(PrecisionSpec, String)>,
    /// Seed.
    pub seed: Option<(u64, String)>,
    /// Distinct training tokens.
    pub unique_tokens: Option<(f64, String)>,
}

impl Assignment {
    fn set(&mut self, value: AxisValue, key: String) {
        match value {
            AxisValue::Model(m) => self.model = Some((m, key)),
            AxisValue::Tokens(t) => self.tokens = Some((t, key)),
            AxisValue::Ratio(r) => self.mixture_ratio = Some((r, key)),
            AxisValue::Vocab(v) => self.vocab_size = Some((v, key)),
            AxisValue::Precision(p) => self.precision = Some((p, key)),
            AxisValue::Seed(v) => self.seed = Some((v, key)),
            AxisValue::UniqueTokens(u) => self.unique_tokens = Some((u, key)),
        }
    }
}

type Factor = Vec<Vec<(AxisValue, String)>>;

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

fn number(v: &toml::Value) -> Option<f64> {
    match v {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(f) => Some(*f),
        _ => None,
    }
}

fn parse_model(v: &toml::Value, key: &str, custom: &BTreeMap<String, CoreShape>) -> Result<ModelSpec, KeyError> {
    match v {
        toml::Value::String(s) => {
            if custom.contains_key(s) || NAMED_SIZES.iter().any(|(n, ..)| n == s) {
                Ok(ModelSpec::Named(s.clone()))
            } else {
                let names: Vec<&str> =
                    NAMED_SIZES.iter().map(|(n, ..)| *n).chain(custom.keys().map(|k| k.as_str())).collect();
                Err(KeyError::new(
                    key,
                    format!(
                        "unknown model size {s:?}{}; use a named size ({}), a [model.sizes] entry, a non-embedding parameter count such as 1e6, or a table {{ d_model, n_layers, n_heads }}",
                        did_you_mean(s, names.iter().copied()),
                        names.join(", ")
                    ),
                ))
            }
        }
        toml::Value::Table(t) => {
            let shape: CoreShape = toml::Value::Table(t.clone())
                .try_into()
                .map_err(|e: toml::de::Error| KeyError::new(key, format!("model shape: {}", e.message().trim())))?;
            check_shape(&shape).map_err(|m| KeyError::new(key, m))?;
            Ok(ModelSpec::Shape(shape))
        }
        other => match number(other) {
            Some(p) if p.is_finite() && p >= 1.0 => Ok(ModelSpec::Params(p)),
            Some(p) => Err(KeyError::new(
                key,
                format!("{p} is not a valid parameter count; it must be a positive number such as 1e6"),
            )),
            None => Err(KeyError::new(
                key,
                format!("expected a size name, a parameter count or a shape table, found {}", type_name(other)),
            )),
        },
    }
}

/// Checks an explicit shape; the message says what to change.
pub fn check_shape(s: &CoreShape) -> Result<(), String> {
    if s.d_model == 0 || s.n_layers == 0 || s.n_heads == 0 {
        return Err(format!(
            "d_model, n_layers and n_heads must be positive (got {}, {}, {})",
            s.d_model, s.n_layers, s.n_heads
        ));
    }
    if !s.d_model.is_multiple_of(s.n_heads) {
        return Err(format!("d_model {} is not divisible by n_heads {}", s.d_model, s.n_heads));
    }
    if !(s.d_model / s.n_heads).is_multiple_of(2) {
        return Err(format!("head size d_model / n_heads = {} must be even for RoPE", s.d_model / s.n_heads));
    }
    if s.d_ff == Some(0) {
        return Err("d_ff must be positive".into());
    }
    Ok(())
}

fn parse_value(
    axis: &str,
    v: &toml::Value,
    key: &str,
    custom: &BTreeMap<String, CoreShape>,
) -> Result<AxisValue, KeyError> {
    let positive = |what: &str| -> Result<f64, KeyError> {
        match number(v) {
            Some(x) if x.is_finite() && x > 0.0 => Ok(x),
            Some(x) => Err(KeyError::new(key, format!("{x} is not allowed: {what} must be a positive number"))),
            None => Err(KeyError::new(key, format!("expected a number, found {}", type_name(v)))),
        }
    };
    Ok(match axis {
        "model" => AxisValue::Model(parse_model(v, key, custom)?),
        "tokens" => AxisValue::Tokens(TokensSpec::Absolute(positive("a token count")?)),
        "tokens_per_param" => AxisValue::Tokens(TokensSpec::PerParam(positive("tokens per parameter")?)),
        "unique_tokens" => AxisValue::UniqueTokens(positive("a count of distinct training tokens")?.round()),
        "mixture_ratio" => match number(v) {
            Some(r) if (0.0..=1.0).contains(&r) => AxisValue::Ratio(r),
            Some(r) => return Err(KeyError::new(key, format!("{r} is outside [0, 1]: the mixture ratio is the fraction of training tokens from the domain corpus"))),
            None => return Err(KeyError::new(key, format!("expected a number in [0, 1], found {}", type_name(v)))),
        },
        "vocab_size" => match v {
            toml::Value::Integer(n) if (256..=(u32::MAX as i64)).contains(n) => AxisValue::Vocab(*n as u64),
            toml::Value::Integer(n) => return Err(KeyError::new(key, format!("{n} is outside [256, 4294967295]: the vocabulary holds at least the 256 bytes"))),
            other => return Err(KeyError::new(key, format!("expected an integer vocabulary size, found {}", type_name(other)))),
        },
        "precision" => match v {
            toml::Value::String(s) => AxisValue::Precision(PrecisionSpec::parse(s).map_err(|m| KeyError::new(key, m))?),
            toml::Value::Table(t) => AxisValue::Precision(PrecisionSpec::parse_per_target(t).map_err(|m| KeyError::new(key, m))?),
            other => return Err(KeyError::new(key, format!("expected a precision name such as \"fp8-e4m3\" or a table of formats per target such as {{ weights = \"int4\" }}, found {}", type_name(other)))),
        },
        "seed" => match v {
            toml::Value::Integer(n) if *n >= 0 => AxisValue::Seed(*n as u64),
            other => return Err(KeyError::new(key, format!("expected a non-negative integer seed, found {}", type_name(other)))),
        },
        _ => unreachable!("axis names are checked before values"),
    })
}

fn parse_list(
    axis: &str,
    v: &toml::Value,
    key: &str,
    custom: &BTreeMap<String, CoreShape>,
) -> Result<Vec<(AxisValue, String)>, KeyError> {
    let items: Vec<toml::Value> = match v {
        toml::Value::Array(a) => a.clone(),
        // A single value is a one-element axis.
        other => vec![other.clone()],
    };
    if items.is_empty() {
        return Err(KeyError::new(key, "the axis is empty: give at least one value"));
    }
    let single = !matches!(v, toml::Value::Array(_));
    let mut out: Vec<(AxisValue, String)> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let k = if single { key.to_string() } else { format!("{key}[{i}]") };
        let value = parse_value(axis, item, &k, custom)?;
        if let Some((_, first)) = out.iter().find(|(x, _)| *x == value) {
            return Err(KeyError::new(k, format!("duplicate value: the same as {first}; remove one")));
        }
        out.push((value, k));
    }
    Ok(out)
}

fn axis_key(axis: &str) -> &'static str {
    match axis {
        "tokens" | "tokens_per_param" => "tokens",
        "model" => "model",
        "mixture_ratio" => "mixture_ratio",
        "vocab_size" => "vocab_size",
        "seed" => "seed",
        "unique_tokens" => "unique_tokens",
        _ => "precision",
    }
}

fn unknown_key(key: &str, name: &str, allowed: &[&str]) -> KeyError {
    KeyError::new(key, sweep_io::config::unknown_key(name, allowed))
}

/// Expands the raw `[grid]` table into assignments (cartesian product of its factors).
pub fn expand(grid: &toml::Table, custom: &BTreeMap<String, CoreShape>) -> Result<Vec<Assignment>, KeyError> {
    let mut factors: Vec<Factor> = Vec::new();
    // Which semantic axis each factor covers, and where it was set, to catch overlaps.
    let mut covered: BTreeMap<&'static str, String> = BTreeMap::new();
    let mut cover = |axis: &str, key: &str| -> Result<(), KeyError> {
        let k = axis_key(axis);
        if let Some(prev) = covered.get(k) {
            return Err(KeyError::new(key, format!("the {k} axis is already set by {prev}; an axis may appear once (top level, one zip block or the isoflop design)")));
        }
        covered.insert(k, key.to_string());
        Ok(())
    };
    for name in grid.keys() {
        if !GRID_KEYS.contains(&name.as_str()) {
            return Err(unknown_key(&format!("grid.{name}"), name, GRID_KEYS));
        }
    }
    // Axes in a fixed order, the last varying fastest, whatever order the file uses.
    for name in AXES {
        let Some(value) = grid.get(*name) else { continue };
        let key = format!("grid.{name}");
        cover(name, &key)?;
        let values = parse_list(name, value, &key, custom)?;
        factors.push(values.into_iter().map(|v| vec![v]).collect());
    }
    if let Some(zips) = grid.get("zip") {
        let toml::Value::Array(blocks) = zips else {
            return Err(KeyError::new("grid.zip", "expected [[grid.zip]] blocks (tables of equal-length axis lists)"));
        };
        for (b, block) in blocks.iter().enumerate() {
            let bkey = format!("grid.zip[{b}]");
            let toml::Value::Table(t) = block else {
                return Err(KeyError::new(bkey, "expected a table of axis lists"));
            };
            if t.is_empty() {
                return Err(KeyError::new(bkey, "an empty zip block: give two or more axes of equal length"));
            }
            let mut columns: Vec<Vec<(AxisValue, String)>> = Vec::new();
            for (name, value) in t {
                let key = format!("{bkey}.{name}");
                if !AXES.contains(&name.as_str()) {
                    return Err(unknown_key(&key, name, AXES));
                }
                cover(name, &key)?;
                if !matches!(value, toml::Value::Array(_)) {
                    return Err(KeyError::new(key, "zip axes are lists of equal length"));
                }
                columns.push(parse_list(name, value, &key, custom)?);
            }
            let len = columns[0].len();
            if let Some((i, c)) = columns.iter().enumerate().find(|(_, c)| c.len() != len) {
                let name = t.keys().nth(i).expect("same order");
                return Err(KeyError::new(
                    format!("{bkey}.{name}"),
                    format!(
                        "has {} values but the block's first axis has {len}: zipped axes must have equal length",
                        c.len()
                    ),
                ));
            }
            factors.push((0..len).map(|row| columns.iter().map(|c| c[row].clone()).collect()).collect());
        }
    }
    if let Some(iso) = grid.get("isoflop") {
        let toml::Value::Array(blocks) = iso else {
            return Err(KeyError::new("grid.isoflop", "expected [[grid.isoflop]] blocks with budgets and model lists"));
        };
        let mut rows: Factor = Vec::new();
        for (b, block) in blocks.iter().enumerate() {
            let bkey = format!("grid.isoflop[{b}]");
            let toml::Value::Table(t) = block else {
                return Err(KeyError::new(bkey, "expected a table with `budgets` and `model`"));
            };
            for name in t.keys() {
                if !["budgets", "model"].contains(&name.as_str()) {
                    return Err(unknown_key(&format!("{bkey}.{name}"), name, &["budgets", "model"]));
                }
            }
            let budgets = t.get("budgets").ok_or_else(|| {
                KeyError::new(&bkey, "missing `budgets` (training FLOP budgets C; tokens follow as C / (6 N))")
            })?;
            let models = t
                .get("model")
                .ok_or_else(|| KeyError::new(&bkey, "missing `model` (the sizes to place on each budget)"))?;
            let bkey_b = format!("{bkey}.budgets");
            let toml::Value::Array(bs) = budgets else {
                return Err(KeyError::new(bkey_b, "expected a list of FLOP budgets"));
            };
            if bs.is_empty() {
                return Err(KeyError::new(bkey_b, "the list is empty: give at least one budget"));
            }
            let models = parse_list("model", models, &format!("{bkey}.model"), custom)?;
            for (i, c) in bs.iter().enumerate() {
                let ck = format!("{bkey_b}[{i}]");
                let c = match number(c) {
                    Some(x) if x.is_finite() && x > 0.0 => x,
                    _ => return Err(KeyError::new(ck, "a FLOP budget must be a positive number such as 1e15")),
                };
                for (m, mk) in &models {
                    rows.push(vec![(m.clone(), mk.clone()), (AxisValue::Tokens(TokensSpec::Budget(c)), ck.clone())]);
                }
            }
        }
        if !rows.is_empty() {
            cover("model", "grid.isoflop")?;
            cover("tokens", "grid.isoflop")?;
            factors.push(rows);
        }
    }
    if !covered.contains_key("model") {
        return Err(KeyError::new(
            "grid",
            "missing the `model` axis: give sizes such as model = [\"tiny\", \"mini\"] or [1e5, 1e6]",
        ));
    }
    if !covered.contains_key("tokens") {
        return Err(KeyError::new("grid", "missing the token budget: give `tokens` (absolute) or `tokens_per_param` (multiples of N), or an isoflop design"));
    }
    let mut out = vec![Assignment::default()];
    for factor in factors {
        let mut next = Vec::with_capacity(out.len() * factor.len());
        for a in &out {
            for row in &factor {
                let mut a2 = a.clone();
                for (v, k) in row {
                    a2.set(v.clone(), k.clone());
                }
                next.push(a2);
            }
        }
        out = next;
    }
    Ok(out)
}
