//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use sweep_data::{DataConfig, HubSettings, PrepareOptions};

/// Writes a snappy-compressed Parquet file with a string column `text_column` and an id column.
pub fn write_parquet(path: &Path, text_column: &str, texts: &[&[u8]]) {
    let schema = format!("message doc {{ required binary {text_column} (UTF8); required int64 id; }}");
    let schema = Arc::new(parse_message_type(&schema).unwrap());
    let props = Arc::new(WriterProperties::builder().set_compression(Compression::SNAPPY).build());
    let file = std::fs::File::create(path).unwrap();
    let mut writer = SerializedFileWriter::new(file, schema, props).unwrap();
    // Two row groups, to read across them.
    for half in texts.chunks(texts.len().div_ceil(2).max(1)) {
        let mut group = writer.next_row_group().unwrap();
        let mut column = group.next_column().unwrap().unwrap();
        let values: Vec<ByteArray> = half.iter().map(|t| ByteArray::from(t.to_vec())).collect();
        column.typed::<ByteArrayType>().write_batch(&values, None, None).unwrap();
        column.close().unwrap();
        let mut column = group.next_column().unwrap().unwrap();
        let ids: Vec<i64> = (0..half.len() as i64).collect();
        column.typed::<Int64Type>().write_batch(&ids, None, None).unwrap();
        column.close().unwrap();
        group.close().unwrap();
    }
    writer.close().unwrap();
}

/// A `[data]` table parsed from TOML text.
pub fn config(text: &str) -> DataConfig {
    DataConfig::from_toml(toml::from_str(text).unwrap()).unwrap()
}

/// Options for a test: its own cache and hub cache, no progress bars, no network.
pub fn options(vocab_size: usize, cache: &Path, base: &Path) -> PrepareOptions {
    PrepareOptions {
        vocab_size,
        cache_dir: cache.to_path_buf(),
        base_dir: base.to_path_buf(),
        hub: HubSettings {
            endpoint: "http://127.0.0.1:9".into(),
            cache_dir: cache.join("hf-hub"),
            offline: true,
            show_progress: false,
        },
        show_progress: false,
    }
}

/// Documents of realistic prose-like text: paragraphs of generated sentences.
pub fn documents(count: usize, seed: u64) -> Vec<String> {
    sweep_data::Language::Prose.automaton().sample_documents(seed, count * 1500).into_iter().take(count).collect()
}
