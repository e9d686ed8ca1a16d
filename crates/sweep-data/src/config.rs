//! The `[data]` section of a sweep configuration: where the text comes from and how it becomes
//! tokens. See the crate documentation for the schema with an example.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::language::Language;

/// The `[data]` section: two sources, the tokenizer, and how text is sampled and split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// The general (pre-training) source.
    pub general: SourceConfig,
    /// The domain source mixed in at the point's mixture ratio; `"none"` for no domain source.
    #[serde(with = "optional_source")]
    pub domain: Option<SourceConfig>,
    /// Which tokenizer turns text into ids.
    pub tokenizer: TokenizerConfig,
    /// Bytes of training text (split evenly between the sources) used to train a BPE tokenizer.
    pub tokenizer_sample_bytes: u64,
    /// Fraction of each source's documents held out for validation, chosen by document hash.
    pub validation_fraction: f64,
    /// How many bytes of text each built-in language generates.
    pub builtin_bytes: u64,
    /// Text files longer than this are cut into documents at line ends.
    pub max_document_bytes: u64,
    /// What to do with text that is not valid UTF-8.
    pub on_invalid_utf8: InvalidUtf8,
    /// Seed of the generated text and of the train/validation split (not of the batch order).
    pub seed: u64,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            general: SourceConfig::Builtin { language: Language::Prose },
            domain: Some(SourceConfig::Builtin { language: Language::Code }),
            tokenizer: TokenizerConfig::Bpe,
            tokenizer_sample_bytes: 2_000_000,
            validation_fraction: 0.05,
            builtin_bytes: 4_000_000,
            max_document_bytes: 65_536,
            on_invalid_utf8: InvalidUtf8::Skip,
            seed: 0,
        }
    }
}

/// Where one source's text comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    /// A built-in synthetic language with exactly known entropy.
    Builtin {
        /// `prose` or `code`.
        language: Language,
    },
    /// Plain text files: paths, directories (searched recursively) and glob patterns.
    Files {
        /// Files, directories or glob patterns (`corpus/**/*.txt`).
        paths: Vec<String>,
        /// File name extensions taken from directories (globs and named files are always taken).
        #[serde(default = "default_extensions")]
        extensions: Vec<String>,
    },
    /// JSON Lines files, one document per line in a string field.
    Jsonl {
        /// Files, directories or glob patterns.
        paths: Vec<String>,
        /// The field that holds the text.
        #[serde(default = "default_text_field")]
        field: String,
    },
    /// Parquet files with a string column (how Hugging Face datasets are stored).
    Parquet {
        /// Files, directories or glob patterns.
        paths: Vec<String>,
        /// The column that holds the text.
        #[serde(default = "default_text_field")]
        column: String,
    },
    /// A dataset repository on the Hugging Face Hub (Parquet, JSON Lines or text files).
    Hub {
        /// `org/name`.
        repo: String,
        /// Branch, tag or commit.
        #[serde(default = "default_revision")]
        revision: String,
        /// Glob patterns of files in the repository.
        #[serde(default = "default_hub_files")]
        files: Vec<String>,
        /// The Parquet column or JSON field that holds the text.
        #[serde(default = "default_text_field")]
        column: String,
    },
}

/// Which tokenizer to use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TokenizerRepr", into = "TokenizerRepr")]
pub enum TokenizerConfig {
    /// Byte-level BPE trained at each point's vocabulary size (cached per size).
    Bpe,
    /// One id per byte (256 ids, no special tokens).
    Byte,
    /// A Hugging Face `tokenizer.json` file.
    File(PathBuf),
    /// The `tokenizer.json` of a model repository on the Hub.
    Hub {
        /// `org/name`.
        repo: String,
        /// Branch, tag or commit.
        revision: String,
    },
}

/// What to do with text that is not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvalidUtf8 {
    /// Skip the document (file, line or row) and report how many were skipped.
    Skip,
    /// Stop with an error naming the file and byte offset.
    Fail,
}

fn default_extensions() -> Vec<String> {
    [
        "txt", "md", "rst", "tex", "rs", "py", "go", "c", "h", "cc", "cpp", "hpp", "java", "js", "ts", "pod", "pl",
        "sh", "toml", "yaml", "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
fn default_text_field() -> String {
    "text".to_string()
}
fn default_revision() -> String {
    "main".to_string()
}
fn default_hub_files() -> Vec<String> {
    vec!["**/*.parquet".to_string()]
}

/// The serialised form of a tokenizer: `"bpe"`, `"byte"`, `{ file = ... }` or `{ hub = ... }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum TokenizerRepr {
    Name(String),
    File {
        file: PathBuf,
    },
    Hub {
        hub: String,
        #[serde(default = "default_revision")]
        revision: String,
    },
}

impl TryFrom<TokenizerRepr> for TokenizerConfig {
    type Error = String;
    fn try_from(repr: TokenizerRepr) -> Result<Self, String> {
        match repr {
            TokenizerRepr::Name(name) => match name.as_str() {
                "bpe" => Ok(TokenizerConfig::Bpe),
                "byte" => Ok(TokenizerConfig::Byte),
                other => Err(format!(
                    "unknown tokenizer \"{other}\" (allowed: \"bpe\", \"byte\", {{ file = \"tokenizer.json\" }}, {{ hub = \"org/name\" }})"
                )),
            },
            TokenizerRepr::File { file } => Ok(TokenizerConfig::File(file)),
            TokenizerRepr::Hub { hub, revision } => Ok(TokenizerConfig::Hub { repo: hub, revision }),
        }
    }
}

impl From<TokenizerConfig> for TokenizerRepr {
    fn from(config: TokenizerConfig) -> Self {
        match config {
            TokenizerConfig::Bpe => TokenizerRepr::Name("bpe".into()),
            TokenizerConfig::Byte => TokenizerRepr::Name("byte".into()),
            TokenizerConfig::File(file) => TokenizerRepr::File { file },
            TokenizerConfig::Hub { repo, revision } => TokenizerRepr::Hub { hub: repo, revision },
        }
    }
}

/// `domain = "none"` or a source table.
mod optional_source {
    use super::SourceConfig;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        None(String),
        Source(SourceConfig),
    }

    pub fn serialize<S: Serializer>(value: &Option<SourceConfig>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            None => Repr::None("none".into()).serialize(s),
            Some(source) => Repr::Source(source.clone()).serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SourceConfig>, D::Error> {
        match Repr::deserialize(d)? {
            Repr::None(s) if s == "none" => Ok(None),
            Repr::None(s) => {
                Err(serde::de::Error::custom(format!("expected a source table or \"none\", found \"{s}\"")))
            }
            Repr::Source(source) => Ok(Some(source)),
        }
    }
}

const TOP_KEYS: [&str; 9] = [
    "general",
    "domain",
    "tokenizer",
    "tokenizer_sample_bytes",
    "validation_fraction",
    "builtin_bytes",
    "max_document_bytes",
    "on_invalid_utf8",
    "seed",
];
const SOURCE_TYPES: [&str; 5] = ["builtin", "files", "jsonl", "parquet", "hub"];

impl DataConfig {
    /// Reads and validates the `[data]` table, with errors that name the key path
    /// (`data.general.type: unknown source type "flies" (allowed: ...)`).
    pub fn from_toml(value: toml::Value) -> Result<DataConfig, DataError> {
        let table = as_table(&value, "data")?;
        check_keys(table, "data", &TOP_KEYS)?;
        let defaults = DataConfig::default();
        let config = DataConfig {
            general: match table.get("general") {
                Some(v) => parse_source(v, "data.general")?,
                None => defaults.general,
            },
            domain: match table.get("domain") {
                Some(toml::Value::String(s)) if s == "none" => None,
                Some(v @ toml::Value::Table(_)) => Some(parse_source(v, "data.domain")?),
                Some(other) => {
                    return Err(DataError::config(
                        "data.domain",
                        format!("expected a source table or \"none\", found {}", describe(other)),
                    ))
                }
                None => defaults.domain,
            },
            tokenizer: match table.get("tokenizer") {
                Some(v) => parse_tokenizer(v)?,
                None => defaults.tokenizer,
            },
            tokenizer_sample_bytes: field(table, "data", "tokenizer_sample_bytes")?
                .unwrap_or(defaults.tokenizer_sample_bytes),
            validation_fraction: match table.get("validation_fraction") {
                // TOML integers are accepted for fractions (0 or 1 would be rejected below).
                Some(toml::Value::Integer(i)) => *i as f64,
                _ => field(table, "data", "validation_fraction")?.unwrap_or(defaults.validation_fraction),
            },
            builtin_bytes: field(table, "data", "builtin_bytes")?.unwrap_or(defaults.builtin_bytes),
            max_document_bytes: field(table, "data", "max_document_bytes")?.unwrap_or(defaults.max_document_bytes),
            on_invalid_utf8: field(table, "data", "on_invalid_utf8")?.unwrap_or(defaults.on_invalid_utf8),
            seed: field(table, "data", "seed")?.unwrap_or(defaults.seed),
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads the `[data]` table as a point stores it (JSON; `null` when the config had none),
    /// with the same checks and messages as [`DataConfig::from_toml`].
    pub fn from_json(value: &serde_json::Value) -> Result<DataConfig, DataError> {
        if value.is_null() {
            return Ok(DataConfig::default());
        }
        let table: toml::Value = serde_json::from_value(value.clone())
            .map_err(|e| DataError::config("data", format!("cannot be read as a TOML table: {e}")))?;
        DataConfig::from_toml(table)
    }

    /// Checks value ranges (the structure is checked by [`DataConfig::from_toml`] or serde).
    pub fn validate(&self) -> Result<(), DataError> {
        if !(self.validation_fraction > 0.0 && self.validation_fraction <= 0.5) {
            return Err(DataError::config(
                "data.validation_fraction",
                format!("{} is outside (0, 0.5]; use e.g. 0.05", self.validation_fraction),
            ));
        }
        if self.tokenizer_sample_bytes < 1024 {
            return Err(DataError::config(
                "data.tokenizer_sample_bytes",
                format!(
                    "{} is too small to train a tokenizer; use at least 1024 (e.g. 2_000_000)",
                    self.tokenizer_sample_bytes
                ),
            ));
        }
        if self.builtin_bytes < 10_000 {
            return Err(DataError::config(
                "data.builtin_bytes",
                format!(
                    "{} is too small for a train/validation split by document; use at least 10000",
                    self.builtin_bytes
                ),
            ));
        }
        if self.max_document_bytes < 256 {
            return Err(DataError::config(
                "data.max_document_bytes",
                format!("{} is too small; use at least 256", self.max_document_bytes),
            ));
        }
        for (name, source) in self.sources() {
            source.validate(&format!("data.{name}"))?;
        }
        if let TokenizerConfig::Hub { repo, .. } = &self.tokenizer {
            check_repo(repo, "data.tokenizer.hub")?;
        }
        Ok(())
    }

    /// The configured sources with their names (`general`, then `domain` if present).
    pub fn sources(&self) -> impl Iterator<Item = (&'static str, &SourceConfig)> {
        std::iter::once(("general", &self.general)).chain(self.domain.iter().map(|d| ("domain", d)))
    }
}

impl SourceConfig {
    fn validate(&self, key: &str) -> Result<(), DataError> {
        let paths = match self {
            SourceConfig::Builtin { .. } => return Ok(()),
            SourceConfig::Files { paths, .. }
            | SourceConfig::Jsonl { paths, .. }
            | SourceConfig::Parquet { paths, .. } => paths,
            SourceConfig::Hub { repo, files, column, .. } => {
                check_repo(repo, &format!("{key}.repo"))?;
                if files.is_empty() {
                    return Err(DataError::config(
                        format!("{key}.files"),
                        "is empty; list file patterns such as [\"data/*.parquet\"]",
                    ));
                }
                for (i, pattern) in files.iter().enumerate() {
                    glob::Pattern::new(pattern).map_err(|e| {
                        DataError::config(format!("{key}.files[{i}]"), format!("bad pattern {pattern:?}: {e}"))
                    })?;
                }
                if column.is_empty() {
                    return Err(DataError::config(
                        format!("{key}.column"),
                        "is empty; name the text column, e.g. \"text\"",
                    ));
                }
                return Ok(());
            }
        };
        if paths.is_empty() {
            return Err(DataError::config(
                format!("{key}.paths"),
                "is empty; list files, directories or globs such as [\"corpus/**/*.txt\"]",
            ));
        }
        match self {
            SourceConfig::Jsonl { field: name, .. } | SourceConfig::Parquet { column: name, .. } if name.is_empty() => {
                let k = if matches!(self, SourceConfig::Jsonl { .. }) { "field" } else { "column" };
                Err(DataError::config(format!("{key}.{k}"), "is empty; name the text field, e.g. \"text\""))
            }
            _ => Ok(()),
        }
    }

    /// A short human description (`builtin prose`, `hub org/name@main`, ...).
    pub fn describe(&self) -> String {
        match self {
            SourceConfig::Builtin { language } => format!("builtin {language}"),
            SourceConfig::Files { paths, .. } => format!("files {}", paths.join(", ")),
            SourceConfig::Jsonl { paths, field } => format!("jsonl {} (field {field})", paths.join(", ")),
            SourceConfig::Parquet { paths, column } => format!("parquet {} (column {column})", paths.join(", ")),
            SourceConfig::Hub { repo, revision, files, .. } => format!("hub {repo}@{revision} {}", files.join(", ")),
        }
    }
}

fn check_repo(repo: &str, key: &str) -> Result<(), DataError> {
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(DataError::config(key, format!("\"{repo}\" is not a repository id; write it as \"org/name\"")));
    }
    Ok(())
}

fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("string \"{s}\""),
        toml::Value::Integer(i) => format!("integer {i}"),
        toml::Value::Float(f) => format!("float {f}"),
        toml::Value::Boolean(b) => format!("boolean {b}"),
        toml::Value::Datetime(d) => format!("datetime {d}"),
        toml::Value::Array(_) => "an array".to_string(),
        toml::Value::Table(_) => "a table".to_string(),
    }
}

fn as_table<'a>(value: &'a toml::Value, key: &str) -> Result<&'a toml::Table, DataError> {
    value.as_table().ok_or_else(|| DataError::config(key, format!("expected a table, found {}", describe(value))))
}

fn check_keys(table: &toml::Table, key: &str, allowed: &[&str]) -> Result<(), DataError> {
    for name in table.keys() {
        if !allowed.contains(&name.as_str()) {
            return Err(DataError::config(
                format!("{key}.{name}"),
                format!("unknown key (allowed here: {})", allowed.join(", ")),
            ));
        }
    }
    Ok(())
}

/// Deserialises `table[name]` if present, naming `key.name` in the error.
fn field<T: DeserializeOwned>(table: &toml::Table, key: &str, name: &str) -> Result<Option<T>, DataError> {
    match table.get(name) {
        None => Ok(None),
        Some(value) => T::deserialize(value.clone()).map(Some).map_err(|e| {
            let message = e.to_string().trim().replace("a sequence", "a list such as [\"a\", \"b\"]");
            let message = if message.contains("invalid type") {
                message
            } else {
                format!("{message} (found {})", describe(value))
            };
            DataError::config(format!("{key}.{name}"), message)
        }),
    }
}

fn required<T: DeserializeOwned>(table: &toml::Table, key: &str, name: &str, example: &str) -> Result<T, DataError> {
    field(table, key, name)?
        .ok_or_else(|| DataError::config(format!("{key}.{name}"), format!("is required, e.g. {name} = {example}")))
}

fn parse_source(value: &toml::Value, key: &str) -> Result<SourceConfig, DataError> {
    let table = value.as_table().ok_or_else(|| {
        DataError::config(
            key,
            format!(
                "expected a source table such as {{ type = \"builtin\", language = \"prose\" }}, found {}",
                describe(value)
            ),
        )
    })?;
    let kind: String = required(table, key, "type", "\"builtin\"")?;
    let allowed: &[&str] = match kind.as_str() {
        "builtin" => &["type", "language"],
        "files" => &["type", "paths", "extensions"],
        "jsonl" => &["type", "paths", "field"],
        "parquet" => &["type", "paths", "column"],
        "hub" => &["type", "repo", "revision", "files", "column"],
        other => {
            return Err(DataError::config(
                format!("{key}.type"),
                format!("unknown source type \"{other}\" (allowed: {})", SOURCE_TYPES.join(", ")),
            ))
        }
    };
    check_keys(table, key, allowed)?;
    let text_field =
        |name: &str| -> Result<String, DataError> { Ok(field(table, key, name)?.unwrap_or_else(default_text_field)) };
    Ok(match kind.as_str() {
        "builtin" => {
            let name: String = required(table, key, "language", "\"prose\"")?;
            let language =
                name.parse::<Language>().map_err(|e| DataError::config(format!("{key}.language"), e.to_string()))?;
            SourceConfig::Builtin { language }
        }
        "files" => SourceConfig::Files {
            paths: required(table, key, "paths", "[\"corpus/**/*.txt\"]")?,
            extensions: field(table, key, "extensions")?.unwrap_or_else(default_extensions),
        },
        "jsonl" => SourceConfig::Jsonl {
            paths: required(table, key, "paths", "[\"data/*.jsonl\"]")?,
            field: text_field("field")?,
        },
        "parquet" => SourceConfig::Parquet {
            paths: required(table, key, "paths", "[\"data/*.parquet\"]")?,
            column: text_field("column")?,
        },
        _ => SourceConfig::Hub {
            repo: required(table, key, "repo", "\"org/name\"")?,
            revision: field(table, key, "revision")?.unwrap_or_else(default_revision),
            files: field(table, key, "files")?.unwrap_or_else(default_hub_files),
            column: text_field("column")?,
        },
    })
}

fn parse_tokenizer(value: &toml::Value) -> Result<TokenizerConfig, DataError> {
    let key = "data.tokenizer";
    match value {
        toml::Value::String(_) | toml::Value::Table(_) => {}
        other => {
            return Err(DataError::config(
                key,
                format!("expected \"bpe\", \"byte\", {{ file = ... }} or {{ hub = ... }}, found {}", describe(other)),
            ))
        }
    }
    if let toml::Value::Table(table) = value {
        if table.contains_key("file") {
            check_keys(table, key, &["file"])?;
        } else if table.contains_key("hub") {
            check_keys(table, key, &["hub", "revision"])?;
        } else {
            return Err(DataError::config(
                key,
                "a tokenizer table needs `file = \"tokenizer.json\"` or `hub = \"org/name\"`",
            ));
        }
    }
    TokenizerConfig::deserialize(value.clone()).map_err(|e| DataError::config(key, e.to_string().trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DataConfig, DataError> {
        let value: toml::Value = toml::from_str(text).expect("test TOML parses");
        DataConfig::from_toml(value)
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn empty_table_gives_the_defaults() {
        assert_eq!(parse("").unwrap(), DataConfig::default());
    }

    #[test]
    fn every_source_type_and_tokenizer_form_parses_like_serde() {
        let text = r#"
            general = { type = "files", paths = ["corpus/**/*.txt"], extensions = ["txt"] }
            domain = { type = "hub", repo = "org/name", files = ["data/*.parquet"] }
            tokenizer = { hub = "org/tok", revision = "v1" }
            tokenizer_sample_bytes = 1_000_000
            validation_fraction = 0.1
            builtin_bytes = 100_000
            on_invalid_utf8 = "fail"
            seed = 3
        "#;
        let config = parse(text).unwrap();
        let via_serde: DataConfig = toml::from_str(text).unwrap();
        assert_eq!(config, via_serde);
        assert_eq!(
            config.domain,
            Some(SourceConfig::Hub {
                repo: "org/name".into(),
                revision: "main".into(),
                files: vec!["data/*.parquet".into()],
                column: "text".into()
            })
        );
        assert_eq!(config.tokenizer, TokenizerConfig::Hub { repo: "org/tok".into(), revision: "v1".into() });
        for (text, tokenizer) in [
            (r#"tokenizer = "byte""#, TokenizerConfig::Byte),
            (r#"tokenizer = "bpe""#, TokenizerConfig::Bpe),
            (r#"tokenizer = { file = "t.json" }"#, TokenizerConfig::File("t.json".into())),
        ] {
            assert_eq!(parse(text).unwrap().tokenizer, tokenizer);
        }
        for text in [
            r#"general = { type = "jsonl", paths = ["a.jsonl"], field = "content" }"#,
            r#"general = { type = "parquet", paths = ["d/"] }"#,
            r#"domain = "none""#,
        ] {
            assert_eq!(parse(text).unwrap(), toml::from_str::<DataConfig>(text).unwrap(), "{text}");
        }
        assert_eq!(parse(r#"domain = "none""#).unwrap().domain, None);
    }

    #[test]
    fn the_json_a_point_stores_reads_like_the_toml() {
        let text = r#"
            general = { type = "jsonl", paths = ["a.jsonl"] }
            tokenizer_sample_bytes = 500_000
            validation_fraction = 0.1
        "#;
        let table: toml::Table = toml::from_str(text).unwrap();
        let json = serde_json::to_value(&table).unwrap();
        assert_eq!(DataConfig::from_json(&json).unwrap(), parse(text).unwrap());
        assert_eq!(DataConfig::from_json(&serde_json::Value::Null).unwrap(), DataConfig::default());
        let bad = serde_json::json!({ "seed": -1 });
        assert!(DataConfig::from_json(&bad).unwrap_err().to_string().starts_with("data.seed:"));
    }

    #[test]
    fn configs_round_trip_through_json() {
        let config = parse(
            r#"tokenizer = { file = "t.json" }
            domain = "none""#,
        )
        .unwrap();
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<DataConfig>(&json).unwrap(), config);
    }

    #[test]
    fn errors_name_the_key_path() {
        assert_eq!(
            error(r#"general = { type = "flies", paths = ["x"] }"#),
            r#"data.general.type: unknown source type "flies" (allowed: builtin, files, jsonl, parquet, hub)"#
        );
        let e = error(r#"general = { type = "files", path = ["x"] }"#);
        assert!(e.starts_with("data.general.path: unknown key (allowed here: type, paths, extensions)"), "{e}");
        let e = error(r#"general = { type = "files" }"#);
        assert!(e.starts_with("data.general.paths: is required"), "{e}");
        let e = error(r#"domain = { type = "builtin", language = "poetry" }"#);
        assert!(e.starts_with("data.domain.language: unknown built-in language \"poetry\""), "{e}");
        let e = error("validation_fraction = 0.9");
        assert!(e.starts_with("data.validation_fraction: 0.9 is outside (0, 0.5]"), "{e}");
        let e = error("seed = \"zero\"");
        assert!(e.starts_with("data.seed: ") && e.contains("string \"zero\""), "{e}");
        let e = error("vocab = 3");
        assert!(e.starts_with("data.vocab: unknown key"), "{e}");
        let e = error(r#"tokenizer = "sentencepiece""#);
        assert!(e.starts_with("data.tokenizer: ") && e.contains("sentencepiece"), "{e}");
        let e = error(r#"domain = { type = "hub", repo = "justname" }"#);
        assert!(e.starts_with("data.domain.repo: \"justname\" is not a repository id"), "{e}");
        let e = error(r#"on_invalid_utf8 = "ignore""#);
        assert!(e.starts_with("data.on_invalid_utf8: ") && e.contains("ignore"), "{e}");
        let e = error(r#"general = { type = "parquet", paths = [] }"#);
        assert!(e.starts_with("data.general.paths: is empty"), "{e}");
        let e = error(r#"domain = 3"#);
        assert!(e.starts_with("data.domain: expected a source table or \"none\""), "{e}");
    }
}
