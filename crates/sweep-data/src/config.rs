//! The `[data]` section of a sweep configuration: where the text comes from and how it becomes
//! tokens. See the crate documentation for the schema with an example.
//!
//! Read with serde through `sweep_io::config` like every section of a sweep config: unknown keys
//! are rejected with the nearest valid key, and errors name the full key path
//! (`data.general.paths`). A source table's allowed keys depend on its `type`, and a tokenizer is
//! a name or a table, so those two have their own `Deserialize`.

use std::fmt;
use std::path::PathBuf;

use serde::de::value::MapAccessDeserializer;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use sweep_io::config::{error_at, nested, unknown_key, KeyError, Section};

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
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(into = "TokenizerRepr")]
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
#[derive(Serialize)]
#[serde(untagged)]
enum TokenizerRepr {
    Name(String),
    File { file: PathBuf },
    Hub { hub: String, revision: String },
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

const SOURCE_TYPES: [&str; 5] = ["builtin", "files", "jsonl", "parquet", "hub"];

// The keys each source type allows, `type` first as the allowed list in errors shows them.
// Required keys are options here so that a missing one gets an example of what to write.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BuiltinKeys {
    #[serde(rename = "type")]
    _type: IgnoredAny,
    language: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesKeys {
    #[serde(rename = "type")]
    _type: IgnoredAny,
    paths: Option<Vec<String>>,
    #[serde(default = "default_extensions")]
    extensions: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonlKeys {
    #[serde(rename = "type")]
    _type: IgnoredAny,
    paths: Option<Vec<String>>,
    #[serde(default = "default_text_field")]
    field: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParquetKeys {
    #[serde(rename = "type")]
    _type: IgnoredAny,
    paths: Option<Vec<String>>,
    #[serde(default = "default_text_field")]
    column: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HubKeys {
    #[serde(rename = "type")]
    _type: IgnoredAny,
    repo: Option<String>,
    #[serde(default = "default_revision")]
    revision: String,
    #[serde(default = "default_hub_files")]
    files: Vec<String>,
    #[serde(default = "default_text_field")]
    column: String,
}

fn required<E: serde::de::Error, T>(value: Option<T>, name: &str, example: &str) -> Result<T, E> {
    value.ok_or_else(|| error_at(name, format!("is required, e.g. {name} = {example}")))
}

impl<'de> Deserialize<'de> for SourceConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(SourceVisitor)
    }
}

struct SourceVisitor;

impl<'de> Visitor<'de> for SourceVisitor {
    type Value = SourceConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a source table such as { type = \"builtin\", language = \"prose\" }")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SourceConfig, A::Error> {
        // `type` decides which keys are allowed, and may come after them: read the table first.
        let table = toml::Table::deserialize(MapAccessDeserializer::new(map))?;
        let kind = match table.get("type") {
            None => return Err(error_at("type", "is required, e.g. type = \"builtin\"")),
            Some(toml::Value::String(kind)) => kind.clone(),
            Some(other) => {
                return Err(error_at(
                    "type",
                    format!("expected a source type such as \"builtin\", found {}", describe(other)),
                ))
            }
        };
        let keys = toml::Value::Table(table);
        Ok(match kind.as_str() {
            "builtin" => {
                let k: BuiltinKeys = nested(keys)?;
                let name = required(k.language, "language", "\"prose\"")?;
                let language = name.parse::<Language>().map_err(|e| error_at("language", e))?;
                SourceConfig::Builtin { language }
            }
            "files" => {
                let k: FilesKeys = nested(keys)?;
                SourceConfig::Files {
                    paths: required(k.paths, "paths", "[\"corpus/**/*.txt\"]")?,
                    extensions: k.extensions,
                }
            }
            "jsonl" => {
                let k: JsonlKeys = nested(keys)?;
                SourceConfig::Jsonl { paths: required(k.paths, "paths", "[\"data/*.jsonl\"]")?, field: k.field }
            }
            "parquet" => {
                let k: ParquetKeys = nested(keys)?;
                SourceConfig::Parquet { paths: required(k.paths, "paths", "[\"data/*.parquet\"]")?, column: k.column }
            }
            "hub" => {
                let k: HubKeys = nested(keys)?;
                SourceConfig::Hub {
                    repo: required(k.repo, "repo", "\"org/name\"")?,
                    revision: k.revision,
                    files: k.files,
                    column: k.column,
                }
            }
            other => {
                return Err(error_at(
                    "type",
                    format!("unknown source type \"{other}\" (allowed: {})", SOURCE_TYPES.join(", ")),
                ))
            }
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTokenizerKeys {
    file: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HubTokenizerKeys {
    hub: String,
    #[serde(default = "default_revision")]
    revision: String,
}

impl<'de> Deserialize<'de> for TokenizerConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TokenizerVisitor)
    }
}

struct TokenizerVisitor;

impl<'de> Visitor<'de> for TokenizerVisitor {
    type Value = TokenizerConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"bpe\", \"byte\", { file = ... } or { hub = ... }")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<TokenizerConfig, E> {
        match name {
            "bpe" => Ok(TokenizerConfig::Bpe),
            "byte" => Ok(TokenizerConfig::Byte),
            other => Err(E::custom(format!(
                "unknown tokenizer \"{other}\"{} (allowed: \"bpe\", \"byte\", {{ file = \"tokenizer.json\" }}, {{ hub = \"org/name\" }})",
                sweep_io::config::did_you_mean(other, ["bpe", "byte"])
            ))),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TokenizerConfig, A::Error> {
        let table = toml::Table::deserialize(MapAccessDeserializer::new(map))?;
        if table.contains_key("file") {
            let k: FileTokenizerKeys = nested(toml::Value::Table(table))?;
            return Ok(TokenizerConfig::File(k.file));
        }
        if table.contains_key("hub") {
            let k: HubTokenizerKeys = nested(toml::Value::Table(table))?;
            return Ok(TokenizerConfig::Hub { repo: k.hub, revision: k.revision });
        }
        const KEYS: [&str; 3] = ["file", "hub", "revision"];
        if let Some(name) = table.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(error_at(name, unknown_key(name, &KEYS)));
        }
        Err(serde::de::Error::custom("a tokenizer table needs `file = \"tokenizer.json\"` or `hub = \"org/name\"`"))
    }
}

/// `domain = "none"` or a source table.
mod optional_source {
    use super::{SourceConfig, SourceVisitor};
    use serde::de::{MapAccess, SeqAccess, Unexpected, Visitor};
    use serde::{Deserializer, Serialize, Serializer};
    use std::fmt;

    #[derive(Serialize)]
    #[serde(untagged)]
    enum Repr<'a> {
        None(&'a str),
        Source(&'a SourceConfig),
    }

    pub fn serialize<S: Serializer>(value: &Option<SourceConfig>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            None => Repr::None("none").serialize(s),
            Some(source) => Repr::Source(source).serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SourceConfig>, D::Error> {
        d.deserialize_any(DomainVisitor)
    }

    struct DomainVisitor;

    fn not_a_source<E: serde::de::Error>(found: Unexpected) -> E {
        E::custom(format!("expected a source table or \"none\", found {found}"))
    }

    impl<'de> Visitor<'de> for DomainVisitor {
        type Value = Option<SourceConfig>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a source table or \"none\"")
        }

        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
            match s {
                "none" => Ok(None),
                other => Err(E::custom(format!("expected a source table or \"none\", found \"{other}\""))),
            }
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            SourceVisitor.visit_map(map).map(Some)
        }

        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Err(not_a_source(Unexpected::Bool(v)))
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Err(not_a_source(Unexpected::Signed(v)))
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Err(not_a_source(Unexpected::Unsigned(v)))
        }

        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Err(not_a_source(Unexpected::Float(v)))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<Self::Value, A::Error> {
            Err(not_a_source(Unexpected::Seq))
        }
    }
}

impl Section for DataConfig {
    const KEY: &'static str = "data";

    fn check(&self) -> Result<(), KeyError> {
        self.validate().map_err(|e| match e {
            DataError::Config { key, message } => KeyError::new(key, message),
            other => KeyError::new("data", other.to_string()),
        })
    }
}

impl DataConfig {
    /// Reads and validates the `[data]` table, with errors that name the key path
    /// (`data.general.type: unknown source type "flies" (allowed: ...)`).
    pub fn from_toml(value: toml::Value) -> Result<DataConfig, DataError> {
        Ok(sweep_io::config::read_section(value)?)
    }

    /// Reads the `[data]` table as a point stores it (JSON; `null` when the config had none),
    /// with the same checks and messages as [`DataConfig::from_toml`].
    pub fn from_json(value: &serde_json::Value) -> Result<DataConfig, DataError> {
        if value.is_null() {
            return Ok(DataConfig::default());
        }
        let config: DataConfig = sweep_io::config::deserialize(value, DataConfig::KEY)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks value ranges (serde has checked the structure).
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

    #[test]
    fn misspelt_keys_get_the_nearest_key() {
        for (text, key, fix) in [
            ("bultin_bytes = 200_000", "data.bultin_bytes", "builtin_bytes"),
            (r#"general = { type = "files", paht = ["x"] }"#, "data.general.paht", "paths"),
            (r#"domain = { type = "jsonl", paths = ["x"], feild = "body" }"#, "data.domain.feild", "field"),
            (r#"domain = { type = "hub", repo = "o/n", revison = "v1" }"#, "data.domain.revison", "revision"),
            (r#"tokenizer = { fil = "t.json" }"#, "data.tokenizer.fil", "file"),
            (r#"tokenizer = { hub = "o/n", revison = "v1" }"#, "data.tokenizer.revison", "revision"),
            (r#"tokenizer = "bep""#, "data.tokenizer", "bpe"),
        ] {
            let e = error(text);
            assert!(e.starts_with(&format!("{key}: ")), "{text}: {e}");
            assert!(e.contains(&format!("did you mean \"{fix}\"")), "{text}: {e}");
        }
    }

    #[test]
    fn the_tokenizer_forms_and_their_errors() {
        let e = error(r#"tokenizer = { file = "t.json", revision = "v1" }"#);
        assert!(e.starts_with("data.tokenizer.revision: unknown key (allowed here: file)"), "{e}");
        let e = error(r#"tokenizer = { revision = "v1" }"#);
        assert!(e.starts_with("data.tokenizer: a tokenizer table needs `file"), "{e}");
        let e = error("tokenizer = 3");
        assert!(e.starts_with("data.tokenizer: wrong type: integer `3`, expected \"bpe\""), "{e}");
        let e = error(r#"general = { type = 1 }"#);
        assert!(e.starts_with("data.general.type: expected a source type such as \"builtin\""), "{e}");
        let e = error(r#"general = { language = "prose" }"#);
        assert!(e.starts_with("data.general.type: is required"), "{e}");
        let e = error(r#"general = { type = "files", paths = "corpus" }"#);
        assert!(e.starts_with("data.general.paths: wrong type: string \"corpus\", expected a list"), "{e}");
        let e = error(r#"domain = "nothing""#);
        assert!(e.starts_with("data.domain: expected a source table or \"none\", found \"nothing\""), "{e}");
    }
}
