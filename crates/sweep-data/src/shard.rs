//! Packed token shards: the ids of a split's documents end to end (an end-of-text id between
//! documents when the tokenizer has one), little-endian `u16` when every id fits, else `u32`,
//! memory-mapped for reading.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::cache;
use crate::error::DataError;
use sweep_io::atomic::NamedTempFile;

/// How many bytes one token id takes in a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenWidth {
    /// Two bytes: every id is below 65536.
    U16,
    /// Four bytes.
    U32,
}

impl TokenWidth {
    /// The narrowest width that holds ids `0..id_count`.
    pub fn for_id_count(id_count: usize) -> Self {
        if id_count <= 1 << 16 {
            TokenWidth::U16
        } else {
            TokenWidth::U32
        }
    }

    /// Bytes per token.
    pub fn bytes(self) -> usize {
        match self {
            TokenWidth::U16 => 2,
            TokenWidth::U32 => 4,
        }
    }
}

/// A read-only, memory-mapped sequence of token ids.
#[derive(Debug, Clone)]
pub struct TokenShard {
    map: Option<Arc<Mmap>>,
    width: TokenWidth,
    len: usize,
    path: PathBuf,
}

impl TokenShard {
    /// Maps the shard at `path`; its size must be a whole number of `width` tokens.
    pub fn open(path: &Path, width: TokenWidth) -> Result<Self, DataError> {
        let file = fs::File::open(path).map_err(|e| DataError::io(path, e))?;
        let bytes = file.metadata().map_err(|e| DataError::io(path, e))?.len() as usize;
        if bytes % width.bytes() != 0 {
            return Err(DataError::Cache {
                path: path.to_path_buf(),
                message: format!("{bytes} bytes is not a whole number of {}-byte tokens", width.bytes()),
            });
        }
        // An empty file cannot be mapped; an empty shard needs no map.
        let map = if bytes == 0 {
            None
        } else {
            // SAFETY: shard files are written once under a temporary name and then linked into
            // place, never modified afterwards, so the mapped bytes do not change under us.
            Some(Arc::new(unsafe { Mmap::map(&file) }.map_err(|e| DataError::io(path, e))?))
        };
        Ok(Self { map, width, len: bytes / width.bytes(), path: path.to_path_buf() })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the shard has no tokens.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes per token in the file.
    pub fn width(&self) -> TokenWidth {
        self.width
    }

    /// The shard's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The id at `index` (panics beyond the end, like slice indexing).
    pub fn get(&self, index: usize) -> u32 {
        assert!(index < self.len, "token {index} beyond shard of {} tokens", self.len);
        let bytes = self.map.as_ref().expect("non-empty shard is mapped");
        match self.width {
            TokenWidth::U16 => u16::from_le_bytes([bytes[2 * index], bytes[2 * index + 1]]) as u32,
            TokenWidth::U32 => {
                let i = 4 * index;
                u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]])
            }
        }
    }

    /// Appends the ids `start..start + count` to `out`.
    pub fn extend_from(&self, start: usize, count: usize, out: &mut Vec<u32>) {
        assert!(start + count <= self.len, "tokens {start}..{} beyond shard of {}", start + count, self.len);
        if count == 0 {
            return;
        }
        let bytes = self.map.as_ref().expect("non-empty shard is mapped");
        let w = self.width.bytes();
        let slice = &bytes[start * w..(start + count) * w];
        match self.width {
            TokenWidth::U16 => out.extend(slice.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)),
            TokenWidth::U32 => out.extend(slice.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        }
    }

    /// All ids (copies the shard).
    pub fn to_vec(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.len);
        self.extend_from(0, self.len, &mut out);
        out
    }
}

/// Writes a shard under a temporary name; [`ShardWriter::finish`] moves it into place.
pub(crate) struct ShardWriter {
    out: BufWriter<NamedTempFile>,
    path: PathBuf,
    width: TokenWidth,
    tokens: u64,
}

impl ShardWriter {
    /// Starts writing the shard that will live at `path`.
    pub fn create(path: &Path, width: TokenWidth) -> Result<Self, DataError> {
        let tmp = cache::temp_file(path)?;
        Ok(Self { out: BufWriter::with_capacity(1 << 20, tmp), path: path.to_path_buf(), width, tokens: 0 })
    }

    /// Appends ids (each must fit the width; checked by the caller against the id count).
    pub fn write(&mut self, ids: &[u32]) -> Result<(), DataError> {
        let result = match self.width {
            TokenWidth::U16 => ids.iter().try_for_each(|&id| self.out.write_all(&(id as u16).to_le_bytes())),
            TokenWidth::U32 => ids.iter().try_for_each(|&id| self.out.write_all(&id.to_le_bytes())),
        };
        result.map_err(|e| DataError::io(self.out.get_ref().path(), e))?;
        self.tokens += ids.len() as u64;
        Ok(())
    }

    /// Tokens written so far.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Flushes, syncs and moves the shard into place (keeping another worker's identical copy if
    /// one got there first).
    pub fn finish(self) -> Result<(), DataError> {
        let tmp_path = self.out.get_ref().path().to_path_buf();
        let tmp = self.out.into_inner().map_err(|e| DataError::io(tmp_path, e.into_error()))?;
        cache::publish(tmp, &self.path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_round_trip_in_both_widths() {
        let dir = tempfile::tempdir().unwrap();
        for (width, ids) in
            [(TokenWidth::U16, vec![0u32, 1, 65535, 300]), (TokenWidth::U32, vec![0u32, 70000, 1 << 31, 5])]
        {
            let path = dir.path().join(format!("{width:?}.bin"));
            let mut w = ShardWriter::create(&path, width).unwrap();
            w.write(&ids[..2]).unwrap();
            w.write(&ids[2..]).unwrap();
            w.finish().unwrap();
            let shard = TokenShard::open(&path, width).unwrap();
            assert_eq!(shard.to_vec(), ids);
            assert_eq!(shard.get(2), ids[2]);
            assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, ids.len() * width.bytes());
        }
    }

    #[test]
    fn a_torn_shard_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("torn.bin");
        std::fs::write(&path, [1u8, 2, 3]).unwrap();
        let err = TokenShard::open(&path, TokenWidth::U16).unwrap_err().to_string();
        assert!(err.contains("not a whole number"), "{err}");
    }

    #[test]
    fn width_follows_the_id_count() {
        assert_eq!(TokenWidth::for_id_count(256), TokenWidth::U16);
        assert_eq!(TokenWidth::for_id_count(65536), TokenWidth::U16);
        assert_eq!(TokenWidth::for_id_count(65537), TokenWidth::U32);
    }
}
