//! `sweep data sample` and `sweep data prepare` through the real binary.

use std::process::Command;

fn sweep() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sweep"))
}

#[test]
fn data_sample_prints_text_and_the_exact_entropy() {
    let out = sweep().args(["data", "sample", "--language", "code", "--bytes", "500", "--seed", "3"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("use ") && text.len() >= 500, "{text}");
    let info = String::from_utf8(out.stderr).unwrap();
    assert!(info.contains("language code: exact entropy 0.32") && info.contains("nats/word"), "{info}");
    let out = sweep().args(["data", "sample", "--language", "poetry"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("allowed: prose, code"));
}

#[test]
fn data_prepare_builds_the_sweeps_cache_for_each_vocab_size() {
    let dir = tempfile_dir();
    let config = dir.join("sweep.toml");
    std::fs::write(
        &config,
        r#"
[sweep]
name = "datatest"
out = "runs"
trainer = "simulate"

[grid]
model = ["micro"]
tokens = [1e5]
vocab_size = [300, 600]

[data]
builtin_bytes = 150_000
validation_fraction = 0.2
tokenizer_sample_bytes = 60_000
"#,
    )
    .unwrap();
    // `[sweep] out` is relative to the working directory, like the other commands.
    let out =
        sweep().current_dir(&dir).args(["data", "prepare", "--no-progress", "--config"]).arg(&config).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("data cache: runs/datatest/cache/data"), "{stdout}");
    let cache = dir.join("runs/datatest/cache/data");
    for v in ["300", "600"] {
        assert!(stdout.lines().any(|l| l.split_whitespace().take(2).eq([v, "general"])), "{stdout}");
        assert!(stdout.lines().any(|l| l.split_whitespace().take(2).eq([v, "domain"])), "{stdout}");
    }
    assert_eq!(std::fs::read_dir(cache.join("tokenizers")).unwrap().count(), 2);

    std::fs::write(&config, std::fs::read_to_string(&config).unwrap().replace("builtin_bytes", "bultin_bytes"))
        .unwrap();
    let out = sweep().current_dir(&dir).args(["data", "prepare", "--config"]).arg(&config).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bultin_bytes"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn data_prepare_locates_errors_in_the_data_section() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("data-cli-errors-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("sweep.toml");
    let text = "[sweep]\nname = \"e\"\ntrainer = \"simulate\"\n[grid]\nmodel = [\"micro\"]\ntokens = [1e5]\n[data]\nvalidation_fraction = 2.0\n";
    std::fs::write(&config, text).unwrap();
    let out = sweep().current_dir(&dir).args(["data", "prepare", "--config"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a bad [data] is a config error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sweep.toml:8:23: data.validation_fraction: 2 is outside (0, 0.5]"), "{stderr}");
    assert!(!dir.join("runs").exists(), "nothing is prepared from a bad config");
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("data-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
