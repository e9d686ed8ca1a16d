//! Reading a source's documents: built-in languages, text files, JSON Lines and Parquet files
//! (local or downloaded from the Hub), with the UTF-8 policy applied.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use parquet::basic::Type as PhysicalType;
use parquet::column::reader::ColumnReader;
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde::{Deserialize, Serialize};

use crate::config::{DataConfig, InvalidUtf8, SourceConfig};
use crate::error::DataError;
use crate::hub::{self, HubSettings};
use crate::language::Language;

/// Which of the two sources: the general text, or the domain text mixed in at ratio r.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The general (pre-training) source.
    General,
    /// The domain source.
    Domain,
}

impl SourceKind {
    /// `general` or `domain`.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::General => "general",
            SourceKind::Domain => "domain",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One unit of reading: a generated language sample or one file.
#[derive(Debug, Clone)]
pub(crate) enum Unit {
    Builtin { language: Language, seed: u64, bytes: u64 },
    Text(PathBuf),
    Jsonl { path: PathBuf, field: String },
    Parquet { path: PathBuf, column: String },
}

impl Unit {
    /// An estimate of the unit's text size, to share the tokenizer sample between units.
    pub(crate) fn size_hint(&self) -> u64 {
        match self {
            Unit::Builtin { bytes, .. } => *bytes,
            Unit::Text(p) | Unit::Jsonl { path: p, .. } | Unit::Parquet { path: p, .. } => {
                fs::metadata(p).map(|m| m.len()).unwrap_or(0)
            }
        }
    }

    /// Where the unit's text comes from, for messages.
    pub(crate) fn location(&self) -> String {
        match self {
            Unit::Builtin { language, seed, .. } => format!("builtin {language} (seed {seed})"),
            Unit::Text(p) | Unit::Jsonl { path: p, .. } | Unit::Parquet { path: p, .. } => p.display().to_string(),
        }
    }
}

/// A source resolved to the units it reads, with a fingerprint that changes when its text may.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedSource {
    pub kind: SourceKind,
    pub units: Vec<Unit>,
    /// Identity of the text: config, files with sizes and modification times, hub commits.
    pub fingerprint: String,
    /// The exact entropy in nats per byte, for built-in languages.
    pub entropy_nats_per_byte: Option<f64>,
    pub description: String,
}

/// Counts of what reading skipped, for the report before training.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipReport {
    /// Documents skipped because their text is not valid UTF-8.
    pub invalid_utf8: u64,
    /// Empty files skipped (found through a directory or glob).
    pub empty_files: u64,
}

/// Bump when generated text or document splitting changes, so caches are rebuilt.
const READER_VERSION: u32 = 1;

/// Finds the units of one source (expanding paths and globs, downloading hub files).
pub(crate) fn resolve(
    kind: SourceKind,
    source: &SourceConfig,
    config: &DataConfig,
    base_dir: &Path,
    hub_settings: &HubSettings,
) -> Result<ResolvedSource, DataError> {
    let name = kind.name();
    let mut fingerprint = format!(
        "reader v{READER_VERSION}; max_document_bytes {}; on_invalid_utf8 {:?}; ",
        config.max_document_bytes, config.on_invalid_utf8
    );
    let mut entropy = None;
    let units = match source {
        SourceConfig::Builtin { language } => {
            let rate = language.entropy();
            entropy = Some(rate.nats_per_byte);
            fingerprint += &format!(
                "builtin {language} seed {} bytes {} h {:e}",
                config.seed, config.builtin_bytes, rate.nats_per_byte
            );
            vec![Unit::Builtin {
                language: *language,
                seed: config.seed ^ kind_salt(kind),
                bytes: config.builtin_bytes,
            }]
        }
        SourceConfig::Files { paths, extensions } => {
            let exts: Vec<&str> = extensions.iter().map(|s| s.as_str()).collect();
            let files = expand_paths(name, paths, base_dir, &exts)?;
            fingerprint += &file_fingerprint("files", &files)?;
            files.into_iter().map(Unit::Text).collect()
        }
        SourceConfig::Jsonl { paths, field } => {
            let files = expand_paths(name, paths, base_dir, &["jsonl", "json"])?;
            fingerprint += &format!("field {field}; {}", file_fingerprint("jsonl", &files)?);
            files.into_iter().map(|path| Unit::Jsonl { path, field: field.clone() }).collect()
        }
        SourceConfig::Parquet { paths, column } => {
            let files = expand_paths(name, paths, base_dir, &["parquet"])?;
            fingerprint += &format!("column {column}; {}", file_fingerprint("parquet", &files)?);
            files.into_iter().map(|path| Unit::Parquet { path, column: column.clone() }).collect()
        }
        SourceConfig::Hub { repo, revision, files, column } => {
            let snapshot = hub::dataset_files(hub_settings, repo, revision, files)?;
            fingerprint += &format!("hub {repo} commit {} column {column} files {:?}", snapshot.commit, snapshot.files);
            snapshot.local_paths().map(|path| hub_unit(name, path, column)).collect::<Result<_, _>>()?
        }
    };
    Ok(ResolvedSource { kind, units, fingerprint, entropy_nats_per_byte: entropy, description: source.describe() })
}

/// Different text for the two sources even when both are built-in with one seed.
fn kind_salt(kind: SourceKind) -> u64 {
    match kind {
        SourceKind::General => 0,
        SourceKind::Domain => 0x0D0A_1D0A_1D0A_1D0A,
    }
}

fn hub_unit(name: &str, path: PathBuf, column: &str) -> Result<Unit, DataError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    Ok(match ext.as_str() {
        "parquet" => Unit::Parquet { path, column: column.to_string() },
        "jsonl" | "json" => Unit::Jsonl { path, field: column.to_string() },
        "txt" | "md" | "text" => Unit::Text(path),
        other => {
            return Err(DataError::input(
                name,
                path.display().to_string(),
                format!("cannot read .{other} files from the hub (use parquet, jsonl or txt); narrow `files`"),
            ))
        }
    })
}

fn file_fingerprint(kind: &str, files: &[PathBuf]) -> Result<String, DataError> {
    let mut out = format!("{kind}:");
    for f in files {
        let meta = fs::metadata(f).map_err(|e| DataError::io(f, e))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        out += &format!(" {}:{}:{}", f.display(), meta.len(), mtime);
    }
    Ok(out)
}

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// Files named by `paths` (files, directories searched recursively for `extensions`, globs), in
/// a stable order without duplicates; each entry must match something.
pub(crate) fn expand_paths(
    source_name: &str,
    paths: &[String],
    base_dir: &Path,
    extensions: &[&str],
) -> Result<Vec<PathBuf>, DataError> {
    let mut out: Vec<PathBuf> = Vec::new();
    for entry in paths {
        let full = base_dir.join(entry);
        let mut found = Vec::new();
        if is_glob(entry) {
            let pattern = full.to_string_lossy().to_string();
            let matches = glob::glob(&pattern)
                .map_err(|e| DataError::input(source_name, entry, format!("bad glob pattern: {e}")))?;
            for m in matches {
                let path = m.map_err(|e| DataError::input(source_name, entry, e.to_string()))?;
                if path.is_file() {
                    found.push(path);
                }
            }
            found.sort();
        } else if full.is_dir() {
            walk(&full, extensions, &mut found)?;
            found.sort();
        } else if full.is_file() {
            let len = fs::metadata(&full).map_err(|e| DataError::io(&full, e))?.len();
            if len == 0 {
                return Err(DataError::input(
                    source_name,
                    full.display().to_string(),
                    "the file is empty; remove it from the paths or give it text",
                ));
            }
            found.push(full.clone());
        } else {
            return Err(DataError::input(
                source_name,
                full.display().to_string(),
                "no such file or directory; fix the path (relative paths start at the config file's directory)",
            ));
        }
        if found.is_empty() {
            let what = if is_glob(entry) {
                "no files match this pattern".to_string()
            } else {
                format!("no files with extensions {} in this directory", extensions.join(", "))
            };
            return Err(DataError::input(source_name, full.display().to_string(), what));
        }
        for f in found {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    Ok(out)
}

fn walk(dir: &Path, extensions: &[&str], out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let entries = fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, extensions, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| extensions.iter().any(|x| x.eq_ignore_ascii_case(e)))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads one unit's documents, in file order.
pub(crate) fn read_unit(
    source_name: &str,
    unit: &Unit,
    config: &DataConfig,
    skipped: &mut SkipReport,
) -> Result<Vec<String>, DataError> {
    let policy = config.on_invalid_utf8;
    match unit {
        Unit::Builtin { language, seed, bytes } => Ok(language.automaton().sample_documents(*seed, *bytes as usize)),
        Unit::Text(path) => {
            let raw = fs::read(path).map_err(|e| DataError::io(path, e))?;
            if raw.is_empty() {
                tracing::warn!("{source_name} source: {}: empty file skipped", path.display());
                skipped.empty_files += 1;
                return Ok(Vec::new());
            }
            match String::from_utf8(raw) {
                Ok(text) => Ok(split_long(text, config.max_document_bytes as usize)),
                Err(e) => {
                    let offset = e.utf8_error().valid_up_to();
                    invalid_utf8(source_name, &format!("{}", path.display()), offset, policy, skipped)?;
                    Ok(Vec::new())
                }
            }
        }
        Unit::Jsonl { path, field } => read_jsonl(source_name, path, field, policy, skipped),
        Unit::Parquet { path, column } => read_parquet(source_name, path, column, policy, skipped),
    }
}

fn invalid_utf8(
    source_name: &str,
    location: &str,
    offset: usize,
    policy: InvalidUtf8,
    skipped: &mut SkipReport,
) -> Result<(), DataError> {
    match policy {
        InvalidUtf8::Fail => Err(DataError::input(
            source_name,
            location,
            format!("invalid UTF-8 at byte {offset}; fix the text or set data.on_invalid_utf8 = \"skip\""),
        )),
        InvalidUtf8::Skip => {
            tracing::warn!("{source_name} source: {location}: invalid UTF-8 at byte {offset}, document skipped");
            skipped.invalid_utf8 += 1;
            Ok(())
        }
    }
}

/// Cuts a long text into documents of at most `max_bytes` at line ends (inside a line only when
/// one line is longer than that, then at a character boundary).
pub(crate) fn split_long(text: String, max_bytes: usize) -> Vec<String> {
    if text.len() <= max_bytes {
        return vec![text];
    }
    let mut docs = Vec::new();
    let mut rest = text.as_str();
    while rest.len() > max_bytes {
        let window = &rest[..floor_char_boundary(rest, max_bytes)];
        let cut = match window.rfind('\n') {
            Some(i) if i > 0 => i + 1,
            _ => window.len().max(rest.chars().next().map_or(1, char::len_utf8)),
        };
        docs.push(rest[..cut].to_string());
        rest = &rest[cut..];
    }
    if !rest.is_empty() {
        docs.push(rest.to_string());
    }
    docs
}

fn floor_char_boundary(s: &str, mut index: usize) -> usize {
    while index > 0 && !s.is_char_boundary(index) {
        index -= 1;
    }
    index
}

fn read_jsonl(
    source_name: &str,
    path: &Path,
    field: &str,
    policy: InvalidUtf8,
    skipped: &mut SkipReport,
) -> Result<Vec<String>, DataError> {
    let raw = fs::read(path).map_err(|e| DataError::io(path, e))?;
    if raw.is_empty() {
        tracing::warn!("{source_name} source: {}: empty file skipped", path.display());
        skipped.empty_files += 1;
        return Ok(Vec::new());
    }
    let mut docs = Vec::new();
    for (i, line) in raw.split(|&b| b == b'\n').enumerate() {
        let location = format!("{}:{}", path.display(), i + 1);
        let line = match std::str::from_utf8(line) {
            Ok(l) => l.trim(),
            Err(e) => {
                invalid_utf8(source_name, &location, e.valid_up_to(), policy, skipped)?;
                continue;
            }
        };
        if line.is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| DataError::input(source_name, &location, format!("not a JSON object: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| DataError::input(source_name, &location, "expected a JSON object per line"))?;
        match object.get(field) {
            Some(serde_json::Value::String(text)) => docs.push(text.clone()),
            Some(serde_json::Value::Null) => {}
            Some(other) => {
                return Err(DataError::input(
                    source_name,
                    &location,
                    format!("field \"{field}\" is not a string but {other}"),
                ))
            }
            None => {
                let keys: Vec<&str> = object.keys().map(|k| k.as_str()).collect();
                return Err(DataError::input(
                    source_name,
                    &location,
                    format!("no field \"{field}\" (fields: {}); set data.{source_name}.field", keys.join(", ")),
                ));
            }
        }
    }
    Ok(docs)
}

fn read_parquet(
    source_name: &str,
    path: &Path,
    column: &str,
    policy: InvalidUtf8,
    skipped: &mut SkipReport,
) -> Result<Vec<String>, DataError> {
    let location = path.display().to_string();
    let file = fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| DataError::input(source_name, &location, format!("not a readable Parquet file: {e}")))?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let index = schema.columns().iter().position(|c| c.path().string() == column).ok_or_else(|| {
        let names: Vec<String> = schema.columns().iter().map(|c| c.path().string()).collect();
        DataError::input(
            source_name,
            &location,
            format!("no column \"{column}\" (columns: {}); set data.{source_name}.column", names.join(", ")),
        )
    })?;
    let descr = schema.column(index);
    if descr.physical_type() != PhysicalType::BYTE_ARRAY || descr.max_rep_level() > 0 {
        return Err(DataError::input(
            source_name,
            &location,
            format!("column \"{column}\" is not a string column ({:?}); choose the text column", descr.physical_type()),
        ));
    }
    let mut docs = Vec::new();
    let mut value_index = 0u64;
    for g in 0..reader.num_row_groups() {
        let group = reader.get_row_group(g).map_err(|e| DataError::input(source_name, &location, e.to_string()))?;
        let ColumnReader::ByteArrayColumnReader(mut values_reader) =
            group.get_column_reader(index).map_err(|e| DataError::input(source_name, &location, e.to_string()))?
        else {
            return Err(DataError::input(
                source_name,
                &location,
                format!("column \"{column}\" is not a byte array column"),
            ));
        };
        let (mut values, mut defs) = (Vec::new(), Vec::new());
        loop {
            values.clear();
            defs.clear();
            let (records, _, _) = values_reader
                .read_records(4096, Some(&mut defs), None, &mut values)
                .map_err(|e| DataError::input(source_name, &location, format!("row group {g}: {e}")))?;
            if records == 0 {
                break;
            }
            for value in &values {
                match std::str::from_utf8(value.data()) {
                    Ok(text) => docs.push(text.to_string()),
                    Err(e) => invalid_utf8(
                        source_name,
                        &format!("{location} value {value_index}"),
                        e.valid_up_to(),
                        policy,
                        skipped,
                    )?,
                }
                value_index += 1;
            }
        }
    }
    Ok(docs)
}
