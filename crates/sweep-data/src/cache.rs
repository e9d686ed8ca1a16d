//! Writing cache entries so that concurrent workers never see (or leave) a half-written file,
//! through sweep-io's atomic writes: a reference is replaced, while a shard, a tokenizer or shard
//! metadata keeps the first finished copy (two workers that build one produce the same bytes).

use std::fs;
use std::path::Path;

use sha2::{Digest, Sha256};
use sweep_io::atomic::{self, NamedTempFile};

use crate::error::DataError;

/// Creates `dir` and its parents.
pub(crate) fn create_dir(dir: &Path) -> Result<(), DataError> {
    fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))
}

/// Writes `bytes` to `path` atomically, replacing any old version (creates the directory).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    atomic::write(path, bytes).map_err(|e| DataError::io(path, e))
}

/// Writes `bytes` to `path` unless another worker got there first (then theirs is kept).
/// Returns whether ours was kept.
pub(crate) fn write_first(path: &Path, bytes: &[u8]) -> Result<bool, DataError> {
    atomic::create_new(path, bytes).map_err(|e| DataError::io(path, e))
}

/// A temporary file beside `path` for an entry written in pieces; [`publish`] it when done.
pub(crate) fn temp_file(path: &Path) -> Result<NamedTempFile, DataError> {
    atomic::temp_file_beside(path).map_err(|e| DataError::io(path, e))
}

/// Moves the finished temporary file to `path` unless another worker got there first (then
/// ours is dropped and theirs is kept). Returns whether ours was kept.
pub(crate) fn publish(tmp: NamedTempFile, path: &Path) -> Result<bool, DataError> {
    atomic::persist_new(tmp, path).map_err(|e| DataError::io(path, e))
}

/// Lower-case hexadecimal SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn publish_keeps_the_first_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("entry.json");
        let mut a = temp_file(&path).unwrap();
        a.write_all(b"first").unwrap();
        assert!(publish(a, &path).unwrap());
        let mut b = temp_file(&path).unwrap();
        b.write_all(b"second").unwrap();
        assert!(!publish(b, &path).unwrap());
        assert!(!write_first(&path, b"third").unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), "first");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "temporary files are removed");
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/ref");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(fs::read_dir(dir.path().join("sub")).unwrap().count(), 1);
    }
}
