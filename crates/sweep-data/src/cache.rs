//! Writing cache entries so that concurrent workers never see (or leave) a half-written file:
//! everything is written under a unique temporary name, then linked or renamed into place.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::error::DataError;

/// A temporary path next to `path`, unique to this process and call.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{nanos}.{n}.tmp", std::process::id()))
}

/// Creates `dir` and its parents.
pub(crate) fn create_dir(dir: &Path) -> Result<(), DataError> {
    fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))
}

/// Writes `bytes` to `path` atomically (temporary file, flush, rename over any old version).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| DataError::io(path, e))
}

/// Moves the finished temporary file `tmp` to `path` unless another worker got there first
/// (then `tmp` is dropped and theirs is kept). Returns whether ours was kept.
pub(crate) fn publish(tmp: &Path, path: &Path) -> Result<bool, DataError> {
    let kept = match fs::hard_link(tmp, path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => {
            let _ = fs::remove_file(tmp);
            return Err(DataError::io(path, e));
        }
    };
    fs::remove_file(tmp).map_err(|e| DataError::io(tmp, e))?;
    Ok(kept)
}

/// Lower-case hexadecimal SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_keeps_the_first_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("entry.json");
        let a = temp_path(&path);
        fs::write(&a, "first").unwrap();
        assert!(publish(&a, &path).unwrap());
        let b = temp_path(&path);
        fs::write(&b, "second").unwrap();
        assert!(!publish(&b, &path).unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), "first");
        assert!(!a.exists() && !b.exists(), "temporary files are removed");
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
