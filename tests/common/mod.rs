//! Helpers for end-to-end tests that run the real `sweep` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The built binary.
pub fn sweep() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sweep"));
    c.env_remove("SWEEP_LOG").env("CI", "true");
    c
}

/// A fresh directory under the target dir, removed first if left over.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a config file into `dir`.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs a command to completion, returning its output; panics with the output if it crashed.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("sweep runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "sweep panicked:\n{stderr}");
    out
}

/// stdout + stderr as text.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// result.json of every point, keyed by id, with fields that depend on wall time or owner removed.
pub fn results(sweep_dir: &Path) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut out = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(sweep_dir.join("points")).unwrap() {
        let e = e.unwrap();
        let r = e.path().join("result.json");
        if let Ok(bytes) = std::fs::read(&r) {
            let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let m = v.as_object_mut().unwrap();
            for k in ["owner", "host", "finished_unix", "wall_seconds_last_session"] {
                m.remove(k);
            }
            out.insert(e.file_name().to_string_lossy().into_owned(), v);
        }
    }
    out
}

/// metrics.jsonl of a point with wall-time fields removed.
pub fn metrics(point_dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(point_dir.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad metrics line {l:?}: {e}"));
            let m = v.as_object_mut().unwrap();
            m.remove("tokens_per_second");
            m.remove("mfu");
            v
        })
        .collect()
}

/// How many times each point was completed, from events.jsonl.
pub fn completions(sweep_dir: &Path) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    let text = std::fs::read_to_string(sweep_dir.join("events.jsonl")).unwrap_or_default();
    for l in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else { continue };
        if v["event"] == "completed" {
            *out.entry(v["point"].as_str().unwrap().to_string()).or_insert(0) += 1;
        }
        assert_ne!(v["event"], "duplicate", "a point was completed twice: {l}");
    }
    out
}

/// A small deterministic PRNG for test schedules (xorshift64*), seeded from the environment or time.
pub struct TestRng(pub u64);

impl TestRng {
    /// Seeded from SWEEP_TEST_SEED or the clock; the seed is printed for reproduction.
    pub fn from_env() -> Self {
        let seed = std::env::var("SWEEP_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        eprintln!("test schedule seed: SWEEP_TEST_SEED={seed}");
        TestRng(seed | 1)
    }
    /// Next number in [lo, hi).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        lo + self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % (hi - lo)
    }
}
