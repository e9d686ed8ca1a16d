//! Lease files: which worker runs a point now. Claimed by an exclusive create, kept alive by a
//! heartbeat counter, taken over by rename when stale. Staleness is the counter not changing for
//! a while on the reader's own monotonic clock, never a comparison of timestamps across machines,
//! whose clocks need not agree.

use crate::fsio;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The content of a `lease` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// Unique token of the owning worker.
    pub owner: String,
    /// Host the owner runs on.
    pub host: String,
    /// Process id of the owner on that host.
    pub pid: u32,
    /// Heartbeat counter, incremented by the owner at every beat.
    pub counter: u64,
    /// Wall-clock time of the claim (informational only).
    pub claimed_unix: f64,
}

/// Identity of this worker.
#[derive(Debug, Clone)]
pub struct Owner {
    /// Unique token.
    pub token: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
}

impl Owner {
    /// An identity for this process; `label` distinguishes workers inside one process.
    pub fn this_process(label: &str) -> Owner {
        let host = fsio::hostname();
        let pid = std::process::id();
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        Owner { token: format!("{host}:{pid}:{label}:{nanos:08x}"), host, pid }
    }
}

/// Reads a lease; `Ok(None)` if there is none (or it vanished while being read).
pub fn read(path: &Path) -> io::Result<Option<LeaseInfo>> {
    match fsio::read_json::<LeaseInfo>(path) {
        Ok(v) => Ok(v),
        // A half-visible lease cannot exist (leases are linked into place); treat junk as absent.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(None),
        Err(e) => Err(e),
    }
}

/// Tries to claim the lease at `path`; `Ok(false)` if another worker holds it.
pub fn claim(path: &Path, owner: &Owner) -> io::Result<bool> {
    let info = LeaseInfo {
        owner: owner.token.clone(),
        host: owner.host.clone(),
        pid: owner.pid,
        counter: 0,
        claimed_unix: fsio::unix_now(),
    };
    fsio::create_exclusive(path, &serde_json::to_vec(&info).map_err(io::Error::other)?)
}

/// Result of a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// The lease is still ours and its counter advanced.
    Kept,
    /// Another worker holds the lease, or it is gone: stop the point at once.
    Lost,
}

/// Advances the heartbeat counter if the lease is still ours.
pub fn heartbeat(path: &Path, owner: &Owner) -> io::Result<Beat> {
    let Some(mut info) = read(path)? else { return Ok(Beat::Lost) };
    if info.owner != owner.token {
        return Ok(Beat::Lost);
    }
    info.counter += 1;
    fsio::write_json(path, &info)?;
    Ok(Beat::Kept)
}

/// Removes the lease if it is still ours.
pub fn release(path: &Path, owner: &Owner) -> io::Result<()> {
    if let Some(info) = read(path)? {
        if info.owner == owner.token {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Watches other workers' leases and says when one is stale.
#[derive(Debug)]
pub struct StaleWatch {
    seen: HashMap<PathBuf, (String, u64, Instant)>,
    stale_after: Duration,
    host: String,
}

impl StaleWatch {
    /// A watch that calls a lease stale after `stale_after` without a heartbeat.
    pub fn new(stale_after: Duration) -> Self {
        StaleWatch { seen: HashMap::new(), stale_after, host: fsio::hostname() }
    }

    /// Whether the lease `info` at `path` is stale: its owner is a dead process on this host, or
    /// its counter has not moved for `stale_after` on this reader's monotonic clock.
    pub fn is_stale(&mut self, path: &Path, info: &LeaseInfo) -> bool {
        if info.host == self.host && info.pid != std::process::id() && !fsio::pid_alive(info.pid) {
            return true;
        }
        let now = Instant::now();
        match self.seen.get(path) {
            Some((owner, counter, since)) if *owner == info.owner && *counter == info.counter => {
                now.duration_since(*since) >= self.stale_after
            }
            _ => {
                self.seen.insert(path.to_path_buf(), (info.owner.clone(), info.counter, now));
                false
            }
        }
    }
}

/// Takes over a stale lease: moves it aside (only one taker can win the rename) and claims anew.
pub fn take_over(path: &Path, stale: &LeaseInfo, owner: &Owner) -> io::Result<bool> {
    let aside = path.with_file_name(format!("lease.stale.{}", std::process::id()));
    match std::fs::rename(path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    let moved = read(&aside)?;
    let _ = std::fs::remove_file(&aside);
    if moved.as_ref().map(|m| &m.owner) != Some(&stale.owner) {
        // We moved a lease that was not the stale one (a fresh claim raced us): let its owner
        // notice the loss at its next beat rather than guess; we still claim below.
        tracing::warn!(lease = %path.display(), "took over a lease that changed owner while judged stale");
    }
    claim(path, owner)
}
