//! Crash-safe writes: a file (or directory) is written under a temporary name beside its target,
//! synced, and renamed into place, then the directory is synced, so a reader (or a restart after
//! a crash) sees the old version or the new one whole, never a part.
//!
//! Temporary names are `.<target name>.<random>.tmp` in the target's directory: hidden, and on
//! the same file system, so the rename is atomic. A crash can leave one behind; the next write
//! does not need it and cleanup can match the leading dot.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

pub use tempfile::NamedTempFile;

/// Writes `bytes` to `path` atomically, replacing any previous content.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = temp_file_beside(path)?;
    tmp.write_all(bytes)?;
    persist(tmp, path)
}

/// Writes `bytes` to `path` whole (a temporary file renamed into place, so a reader never sees a
/// part) without syncing to disk: for views rebuilt from the durable files at any time (the
/// report), which a crash may leave at their previous version but never torn.
pub fn write_unsynced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = temp_file_beside(path)?;
    tmp.write_all(bytes)?;
    if let Err(e) = tmp.persist(path) {
        // As in `persist`: an NFS rename can report a failure that happened.
        if !is_same_file(e.file.as_file(), path) {
            return Err(e.error);
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` only if nothing is there yet: returns false, and leaves the file as
/// it was, when it already existed. For leases and results, which must never be overwritten.
pub fn create_new(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    let mut tmp = temp_file_beside(path)?;
    tmp.write_all(bytes)?;
    persist_new(tmp, path)
}

/// An empty temporary file beside `path`, for callers that write it themselves (through a
/// library that takes a path, say) and then [`persist`] or [`persist_new`] it. Dropped unpersisted,
/// it is removed.
pub fn temp_file_beside(path: &Path) -> io::Result<NamedTempFile> {
    let prefix = format!(".{}.", file_name(path)?);
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        // tempfile creates files readable by their owner only; results are shared like any file
        // `File::create` makes (the umask still applies).
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir_of(path))
}

/// Syncs `tmp` and renames it to `path`, replacing what is there, then syncs the directory.
pub fn persist(tmp: NamedTempFile, path: &Path) -> io::Result<()> {
    tmp.as_file().sync_all()?;
    if let Err(e) = tmp.persist(path) {
        // On NFS a rename can report failure although it happened (a retried request finds its
        // source gone): trust the file system when our file is what is at `path` now.
        if !is_same_file(e.file.as_file(), path) {
            return Err(e.error);
        }
    }
    sync_dir(dir_of(path));
    Ok(())
}

/// Syncs `tmp` and moves it to `path` unless something is already there: returns false (and
/// removes `tmp`) when `path` existed.
pub fn persist_new(tmp: NamedTempFile, path: &Path) -> io::Result<bool> {
    tmp.as_file().sync_all()?;
    match tmp.persist_noclobber(path) {
        Ok(_) => {
            sync_dir(dir_of(path));
            Ok(true)
        }
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e.error),
    }
}

/// Builds the directory `path` atomically: `fill` writes files into a fresh temporary directory
/// beside it, which is synced and renamed to `path` (replacing an old one). If `fill` fails, the
/// temporary directory is removed and `path` is left as it was.
pub fn write_dir(path: &Path, fill: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
    let prefix = format!(".{}.", file_name(path)?);
    let parent = dir_of(path);
    let tmp = tempfile::Builder::new().prefix(&prefix).suffix(".tmp").tempdir_in(parent)?;
    fill(tmp.path())?;
    for entry in fs::read_dir(tmp.path())? {
        fs::File::open(entry?.path())?.sync_all()?;
    }
    sync_dir(tmp.path());
    if path.exists() {
        fs::remove_dir_all(path)?;
    }
    fs::rename(tmp.path(), path)?;
    // Renamed away: nothing is left for the guard to clean up.
    let _ = tmp.keep();
    sync_dir(parent);
    Ok(())
}

/// The directory `path` lives in (`.` for a bare file name).
fn dir_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

fn file_name(path: &Path) -> io::Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{} names no file", path.display())))
}

/// Syncs a directory so that a rename in it is durable; some file systems refuse, which is
/// harmless.
fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(unix)]
fn is_same_file(file: &fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn is_same_file(_file: &fs::File, _path: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn write_replaces_and_create_new_never_does() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("result.json");
        assert!(create_new(&p, b"first").unwrap());
        assert!(!create_new(&p, b"second").unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"first");
        write(&p, b"third").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"third");
        assert_eq!(names(dir.path()), ["result.json"], "no temporary files are left behind");
    }

    #[cfg(unix)]
    #[test]
    fn files_get_the_permissions_of_a_plain_create() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        fs::File::create(&plain).unwrap();
        let atomic = dir.path().join("atomic");
        write(&atomic, b"x").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&atomic), mode(&plain));
        write_dir(&dir.path().join("d"), |_| Ok(())).unwrap();
        fs::create_dir(dir.path().join("plain-dir")).unwrap();
        assert_eq!(mode(&dir.path().join("d")), mode(&dir.path().join("plain-dir")));
    }

    #[test]
    fn a_temporary_file_written_by_path_is_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.safetensors");
        let tmp = temp_file_beside(&p).unwrap();
        assert!(tmp.path().file_name().unwrap().to_string_lossy().starts_with(".model.safetensors."));
        fs::write(tmp.path(), b"weights").unwrap();
        persist(tmp, &p).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"weights");
        let dropped = temp_file_beside(&p).unwrap();
        drop(dropped);
        assert_eq!(names(dir.path()), ["model.safetensors"]);
    }

    #[test]
    fn directories_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("step-10");
        write_dir(&ckpt, |d| fs::write(d.join("a"), b"1")).unwrap();
        write_dir(&ckpt, |d| fs::write(d.join("b"), b"2")).unwrap();
        assert_eq!(names(&ckpt), ["b"]);
        let failed = write_dir(&ckpt, |d| {
            fs::write(d.join("c"), b"3")?;
            Err(io::Error::other("disk full"))
        });
        assert!(failed.is_err());
        assert_eq!(names(&ckpt), ["b"], "a failed fill leaves the old directory");
        assert_eq!(names(dir.path()), ["step-10"], "and no temporary directory");
    }

    #[test]
    fn a_bare_file_name_writes_in_the_working_directory() {
        assert_eq!(dir_of(Path::new("laws.json")), Path::new("."));
        assert!(write(Path::new("/"), b"x").is_err());
    }
}
