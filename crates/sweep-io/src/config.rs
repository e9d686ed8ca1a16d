//! Reading config values into serde types with errors a user can act on: each names the dotted
//! key path (`fit.laws[1].name`), says what is wrong and what is allowed, and suggests the
//! nearest valid key or value for a typo. Every section of a sweep config is read through here.
//!
//! Types derive `Deserialize` with `deny_unknown_fields`. A type that needs its own
//! `Deserialize` (a table whose allowed keys depend on its `type`, say) reports a problem below
//! its own position with [`error_at`], and reads a buffered sub-table with [`nested`]; either
//! way the error arrives here with its full key path.

mod locator;

pub use locator::{parse_path, Locator, Step};

use serde::de::{Deserialize, DeserializeOwned, Deserializer};
use std::fmt;

/// An error at a dotted key path, before it is located in a file.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyError {
    /// Dotted key path, e.g. `grid.mixture_ratio[1]`; empty for the whole value.
    pub key: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl KeyError {
    /// Builds an error for `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        KeyError { key: key.into(), message: message.into() }
    }

    /// The same error with its key read from inside the table at `prefix`.
    pub fn within(self, prefix: &str) -> Self {
        KeyError { key: join(prefix, &self.key), message: self.message }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for KeyError {}

/// A top-level section of a sweep config owned by the crate that defines the type.
pub trait Section: DeserializeOwned {
    /// The section's key in a sweep config, e.g. `"data"`.
    const KEY: &'static str;

    /// Checks serde cannot express (ranges, names, combinations); keys are full paths that start
    /// with [`Section::KEY`].
    fn check(&self) -> Result<(), KeyError> {
        Ok(())
    }
}

/// Reads the table of section `T` and checks it; error keys start with `T::KEY`.
pub fn read_section<T: Section>(value: toml::Value) -> Result<T, KeyError> {
    let section: T = from_value(value, T::KEY)?;
    section.check()?;
    Ok(section)
}

/// Reads `value`, found at key path `at` (empty for a whole document), into `T`.
pub fn from_value<T: DeserializeOwned>(value: toml::Value, at: &str) -> Result<T, KeyError> {
    deserialize(value, at)
}

/// Reads `T` from any serde deserializer (a `serde_json::Value` that holds a copy of a TOML
/// table, say), with the same messages as [`from_value`].
pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(deserializer: D, at: &str) -> Result<T, KeyError> {
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let raw = e.inner().to_string();
        // toml appends "\nin `a.b`" (its own idea of the path): the path comes from serde_path_to_error.
        let raw = raw.split("\nin `").next().unwrap_or_default();
        explain(&path, raw.trim()).within(at)
    })
}

/// An error at `key` below the value a custom `Deserialize` is reading, for [`from_value`] to
/// report at its full path. Read without this module, the message still names the key.
pub fn error_at<E: serde::de::Error>(key: &str, message: impl fmt::Display) -> E {
    E::custom(format!("{AT}{key}{AT_END}{message}"))
}

/// Reads a value a custom `Deserialize` has buffered (a sub-table, say) into `T`, passing any
/// error up with its key path relative to that value.
pub fn nested<T: DeserializeOwned, E: serde::de::Error>(value: toml::Value) -> Result<T, E> {
    from_value(value, "").map_err(|e| if e.key.is_empty() { E::custom(e.message) } else { error_at(&e.key, e.message) })
}

const AT: &str = "at `";
const AT_END: &str = "`: ";

/// The message for an unknown key `name` where `allowed` are the valid keys.
pub fn unknown_key(name: &str, allowed: &[&str]) -> String {
    let list = if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") };
    // "unknown field" is serde's own wording, kept so that a message reads the same whether the
    // key was rejected by a derived type or by a hand-written one.
    format!("unknown key (allowed here: {list}): unknown field `{name}`{}", did_you_mean(name, allowed.iter().copied()))
}

/// The nearest candidate to `word` by edit distance, if it is close enough to be a likely typo;
/// among equally near ones, one that differs from `word` only in case (`d` for `D`), else the first.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), !c.eq_ignore_ascii_case(word), c))
        .filter(|(d, _, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, other_letters, _)| (*d, *other_letters))
        .map(|(_, _, c)| c)
}

/// ` (did you mean "x"?)` or an empty string.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    match nearest(word, candidates) {
        Some(c) => format!(" (did you mean \"{c}\"?)"),
        None => String::new(),
    }
}

/// `a.b` + `c` = `a.b.c`; `a` + `[2].c` = `a[2].c`; either may be empty.
fn join(prefix: &str, key: &str) -> String {
    match (prefix.is_empty(), key.is_empty()) {
        (true, _) => key.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) if key.starts_with('[') => format!("{prefix}{key}"),
        (false, false) => format!("{prefix}.{key}"),
    }
}

/// Backticked names in the tail of a serde message: "expected `a`, `b` or `c`" gives a, b, c.
fn backticked(tail: &str) -> Vec<&str> {
    tail.split('`').skip(1).step_by(2).collect()
}

/// Turns serde's message at `path` into one that says what to change.
fn explain(path: &str, raw: &str) -> KeyError {
    if let Some((key, message)) = raw.strip_prefix(AT).and_then(|rest| rest.split_once(AT_END)) {
        return explain(&join(path, key), message);
    }
    if let Some(rest) = raw.strip_prefix("unknown field `") {
        let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
        // serde_path_to_error ends the path with the unknown key itself for some types only.
        let key = if path == name || path.ends_with(&format!(".{name}")) { path.to_string() } else { join(path, name) };
        return KeyError::new(key, unknown_key(name, &backticked(tail)));
    }
    if let Some(rest) = raw.strip_prefix("unknown variant `") {
        let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = backticked(tail);
        return KeyError::new(
            path,
            format!(
                "unknown value {name:?}{}; allowed: {}",
                did_you_mean(name, expected.iter().copied()),
                expected.join(", ")
            ),
        );
    }
    if let Some(rest) = raw.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or(rest);
        return KeyError::new(path, format!("missing required key `{name}`"));
    }
    let plain = raw
        .replace("invalid type: ", "wrong type: ")
        .replace("expected u64", "expected a non-negative integer")
        .replace("expected u32", "expected a non-negative integer")
        .replace("expected usize", "expected a non-negative integer")
        .replace("expected f64", "expected a number")
        .replace("expected a sequence", "expected a list such as [\"a\", \"b\"]");
    KeyError::new(path, plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Law {
        name: String,
        #[serde(default)]
        huber_delta: Option<f64>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Fit {
        laws: Vec<Law>,
        #[serde(default)]
        max_iters: u64,
        #[serde(default)]
        residuals: Option<Space>,
        #[serde(default)]
        sources: BTreeMap<String, Source>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Space {
        Log,
        Raw,
    }

    /// A table whose allowed keys depend on its `type`, read by hand as sweep-data's sources are.
    #[derive(Debug, PartialEq)]
    struct Source {
        paths: Vec<String>,
    }

    impl<'de> Deserialize<'de> for Source {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let mut table = toml::Table::deserialize(d)?;
            match table.remove("type") {
                Some(toml::Value::String(t)) if t == "files" => {}
                _ => return Err(error_at("type", "unknown source type (allowed: files)")),
            }
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Files {
                paths: Option<Vec<String>>,
            }
            let files: Files = nested(toml::Value::Table(table))?;
            let paths = files.paths.ok_or_else(|| error_at("paths", "is required"))?;
            Ok(Source { paths })
        }
    }

    impl Section for Fit {
        const KEY: &'static str = "fit";
        fn check(&self) -> Result<(), KeyError> {
            if self.laws.is_empty() {
                return Err(KeyError::new("fit.laws", "no laws to fit"));
            }
            Ok(())
        }
    }

    fn read(text: &str) -> Result<Fit, KeyError> {
        read_section::<Fit>(toml::from_str(text).unwrap())
    }

    #[test]
    fn reads_a_section() {
        let fit = read("laws = [{ name = \"chinchilla\" }]\nresiduals = \"log\"").unwrap();
        assert_eq!(fit.laws[0].name, "chinchilla");
        assert_eq!(fit.residuals, Some(Space::Log));
        assert_eq!(read("laws = []").unwrap_err().to_string(), "fit.laws: no laws to fit");
    }

    #[test]
    fn unknown_keys_name_their_path_and_the_nearest_key() {
        let e = read("laws = [{ name = \"c\", huber_delt = 1 }]").unwrap_err();
        assert_eq!(e.key, "fit.laws[0].huber_delt");
        assert_eq!(
            e.message,
            "unknown key (allowed here: name, huber_delta): unknown field `huber_delt` (did you mean \"huber_delta\"?)"
        );
        let e = read("laws = []\nmax_iter = 3").unwrap_err();
        assert_eq!(e.key, "fit.max_iter");
        assert!(e.message.contains("did you mean \"max_iters\""), "{e}");
        // Nothing near: no suggestion, but the allowed keys.
        let e = read("laws = []\nzzzzzzzz = 3").unwrap_err();
        assert!(e.message.starts_with("unknown key (allowed here: laws, max_iters, residuals, sources)"), "{e}");
        assert!(!e.message.contains("did you mean"), "{e}");
    }

    #[test]
    fn values_types_and_missing_keys() {
        let e = read("laws = []\nresiduals = \"lgo\"").unwrap_err();
        assert_eq!(e.to_string(), "fit.residuals: unknown value \"lgo\" (did you mean \"log\"?); allowed: log, raw");
        let e = read("laws = []\nmax_iters = \"many\"").unwrap_err();
        assert_eq!(e.to_string(), "fit.max_iters: wrong type: string \"many\", expected a non-negative integer");
        let e = read("laws = [{ huber_delta = 1.0 }]").unwrap_err();
        assert_eq!(e.to_string(), "fit.laws[0]: missing required key `name`");
        let e = read("laws = 3").unwrap_err();
        assert!(e.to_string().starts_with("fit.laws: wrong type: integer `3`, expected a list"), "{e}");
    }

    #[test]
    fn hand_written_tables_report_at_their_full_path() {
        let e = read("laws = []\n[sources.a]\ntype = \"flies\"\npaths = []").unwrap_err();
        assert_eq!(e.to_string(), "fit.sources.a.type: unknown source type (allowed: files)");
        let e = read("laws = []\n[sources.a]\ntype = \"files\"").unwrap_err();
        assert_eq!(e.to_string(), "fit.sources.a.paths: is required");
        let e = read("laws = []\n[sources.a]\ntype = \"files\"\npath = []").unwrap_err();
        assert_eq!(e.key, "fit.sources.a.path");
        assert!(e.message.contains("did you mean \"paths\""), "{e}");
        let e = read("laws = []\n[sources.a]\ntype = \"files\"\npaths = [1]").unwrap_err();
        assert_eq!(e.key, "fit.sources.a.paths[0]");
        let fit = read("laws = [{ name = \"c\" }]\n[sources.a]\ntype = \"files\"\npaths = [\"x\"]").unwrap();
        assert_eq!(fit.sources["a"], Source { paths: vec!["x".into()] });
    }

    #[test]
    fn json_reads_like_toml() {
        let json = serde_json::json!({ "laws": [{ "name": "c", "huber_delt": 1 }] });
        let e = deserialize::<Fit, _>(&json, "fit").unwrap_err();
        assert_eq!(e.key, "fit.laws[0].huber_delt");
        assert!(e.message.contains("did you mean \"huber_delta\""), "{e}");
    }

    #[test]
    fn suggestions_only_for_likely_typos() {
        assert_eq!(nearest("bach_size", ["batch_size", "grad_accum"]), Some("batch_size"));
        assert_eq!(nearest("lr", ["batch_size", "grad_accum"]), None);
        assert_eq!(did_you_mean("smok", ["smoke"]), " (did you mean \"smoke\"?)");
        assert_eq!(did_you_mean("x", ["smoke"]), "");
        assert_eq!(nearest("d", ["N", "D"]), Some("D"));
    }

    #[test]
    fn keys_join() {
        assert_eq!(KeyError::new("laws[0]", "m").within("fit").key, "fit.laws[0]");
        assert_eq!(KeyError::new("[0]", "m").within("fit.laws").key, "fit.laws[0]");
        assert_eq!(KeyError::new("", "m").within("fit").key, "fit");
        assert_eq!(KeyError::new("a", "m").within("").key, "a");
    }
}
