//! Malformed configs each give a clear error naming the file, line and column, the key, and what
//! is allowed; none panics, and nothing is created.

mod common;
use common::*;

const GOOD: &str = r#"[sweep]
name = "bad"
trainer = "simulate"

[grid]
model = ["tiny", "mini"]
tokens = [1e5, 2e5]
mixture_ratio = [0.0, 0.5]
precision = ["fp32", "fp8-e4m3"]

[train]
batch_size = 8
"#;

/// (what is broken, the config text, fragments the message must contain).
fn cases() -> Vec<(&'static str, String, Vec<&'static str>)> {
    vec![
        ("TOML syntax error", GOOD.replace("name = \"bad\"", "name = \"bad"), vec!["bad.toml:2:", "TOML syntax"]),
        (
            "unknown top-level section",
            format!("{GOOD}\n[trian]\nlr = 1e-3\n"),
            vec!["trian", "unknown key", "did you mean \"train\""],
        ),
        (
            "unknown key in [train]",
            GOOD.replace("batch_size = 8", "bach_size = 8"),
            vec!["bad.toml:12:1", "train.bach_size", "did you mean \"batch_size\""],
        ),
        (
            "unknown grid axis",
            GOOD.replace("mixture_ratio =", "mixture_ratios ="),
            vec!["bad.toml:8:1", "grid.mixture_ratios", "did you mean \"mixture_ratio\""],
        ),
        (
            "ratio outside [0, 1]",
            GOOD.replace("[0.0, 0.5]", "[0.0, 1.3]"),
            vec!["bad.toml:8:23", "grid.mixture_ratio[1]", "1.3 is outside [0, 1]"],
        ),
        (
            "negative model size",
            GOOD.replace("[\"tiny\", \"mini\"]", "[\"tiny\", -5]"),
            vec!["bad.toml:6:18", "grid.model[1]", "positive"],
        ),
        ("zero tokens", GOOD.replace("[1e5, 2e5]", "[0, 2e5]"), vec!["bad.toml:7:11", "grid.tokens[0]", "positive"]),
        ("empty axis", GOOD.replace("[\"fp32\", \"fp8-e4m3\"]", "[]"), vec!["bad.toml:9:1", "grid.precision", "empty"]),
        (
            "unknown precision",
            GOOD.replace("fp8-e4m3", "fp7"),
            vec!["bad.toml:9:22", "grid.precision[1]", "unknown precision \"fp7\"", "e4m3"],
        ),
        ("exponent bits out of range", GOOD.replace("fp8-e4m3", "e9m2"), vec!["grid.precision[1]", "1..=8"]),
        (
            "wrong type",
            GOOD.replace("batch_size = 8", "batch_size = \"eight\""),
            vec!["train.batch_size", "wrong type"],
        ),
        (
            "duplicate axis value",
            GOOD.replace("[1e5, 2e5]", "[1e5, 100000]"),
            vec!["bad.toml:7:16", "grid.tokens[1]", "duplicate"],
        ),
        (
            "duplicate points",
            GOOD.replace("[\"tiny\", \"mini\"]", "[\"tiny\", { d_model = 64, n_layers = 2, n_heads = 2 }]"),
            vec!["grid.model", "same configuration"],
        ),
        ("unknown model size", GOOD.replace("\"mini\"", "\"mni\""), vec!["grid.model[1]", "did you mean \"mini\""]),
        ("missing sweep name", GOOD.replace("name = \"bad\"\n", ""), vec!["sweep", "missing required key `name`"]),
        (
            "unknown trainer",
            GOOD.replace("\"simulate\"", "\"simulat\""),
            vec!["bad.toml:3:11", "sweep.trainer", "did you mean \"simulate\""],
        ),
        (
            "missing model axis",
            GOOD.replace("model = [\"tiny\", \"mini\"]\n", ""),
            vec!["grid", "missing the `model` axis"],
        ),
        (
            "both tokens and tokens_per_param",
            GOOD.replace("tokens = [1e5, 2e5]", "tokens = [1e5]\ntokens_per_param = [20]"),
            vec!["grid.tokens_per_param", "already set"],
        ),
        (
            "zip lists of unequal length",
            format!(
                "{}\n[[grid.zip]]\nmodel = [\"tiny\", \"mini\"]\ntokens = [1e5]\n",
                GOOD.replace("model = [\"tiny\", \"mini\"]\ntokens = [1e5, 2e5]\n", "")
            ),
            vec!["grid.zip[0].tokens", "equal length"],
        ),
        (
            "vocabulary below the byte alphabet",
            format!("{}vocab_size = [100]\n", GOOD.replace("\n[train]\nbatch_size = 8\n", "")),
            vec!["grid.vocab_size[0]", "[256,"],
        ),
        (
            "bad device",
            GOOD.replace("trainer = \"simulate\"", "trainer = \"simulate\"\ndevice = \"gpu0\""),
            vec!["sweep.device", "cuda:N"],
        ),
        (
            "beta2 out of range",
            GOOD.replace("batch_size = 8", "batch_size = 8\nbeta2 = 1.5"),
            vec!["bad.toml:13:9", "train.beta2", "outside [0, 1)"],
        ),
        (
            "shape with indivisible heads",
            GOOD.replace("\"mini\"", "{ d_model = 100, n_layers = 2, n_heads = 3 }"),
            vec!["grid.model[1]", "not divisible"],
        ),
        (
            "isoflop without budgets",
            format!(
                "{}\n[[grid.isoflop]]\nmodel = [1e5, 1e6]\n",
                GOOD.replace("model = [\"tiny\", \"mini\"]\ntokens = [1e5, 2e5]\n", "")
            ),
            vec!["grid.isoflop[0]", "missing `budgets`"],
        ),
        (
            "lr table missing a size",
            GOOD.replace("batch_size = 8", "batch_size = 8\n[train.lr]\ntiny = 1e-3"),
            vec!["grid.model[1]", "no learning rate for model \"mini\""],
        ),
        (
            "misspelt key in a [data] source",
            format!("{GOOD}\n[data]\ngeneral = {{ type = \"files\", paht = [\"corpus\"] }}\n"),
            vec!["bad.toml:15:", "data.general.paht", "did you mean \"paths\""],
        ),
        (
            "misspelt key in [[fit.laws]]",
            format!("{GOOD}\n[[fit.laws]]\nname = \"chinchilla\"\nhuber_delt = 1e-3\n"),
            vec!["bad.toml:16:", "fit.laws[0].huber_delt", "did you mean \"huber_delta\""],
        ),
    ]
}

#[test]
fn malformed_configs_give_located_errors_without_panics() {
    let dir = scratch("config-errors");
    let cases = cases();
    assert!(cases.len() >= 15);
    for (what, text_cfg, wants) in &cases {
        let cfg = write_config(&dir, "bad.toml", text_cfg);
        for cmd in ["plan", "run"] {
            let out = run(sweep().arg(cmd).arg(&cfg).arg("--out").arg(dir.join("out")));
            let msg = text(&out);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{what} ({cmd}): expected exit 2, got {:?}:\n{msg}",
                out.status.code()
            );
            for w in wants {
                assert!(msg.contains(w), "{what} ({cmd}): message lacks {w:?}:\n{msg}");
            }
            assert!(msg.lines().count() <= 3, "{what}: the error should be short:\n{msg}");
        }
        assert!(!dir.join("out").exists(), "{what}: a bad config created the sweep directory");
    }
    // The good config plans.
    let cfg = write_config(&dir, "bad.toml", GOOD);
    assert!(run(sweep().arg("plan").arg(&cfg)).status.success());
}

#[test]
fn unknown_profile_and_missing_file() {
    let dir = scratch("config-profile");
    let cfg = write_config(&dir, "p.toml", &format!("{GOOD}\n[profiles.smoke]\ntrain = {{ batch_size = 2 }}\n"));
    let out = run(sweep().args(["plan", "--profile", "smok"]).arg(&cfg));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("did you mean \"smoke\""), "{}", text(&out));
    let out = run(sweep().args(["plan", "--profile", "smoke"]).arg(&cfg));
    assert!(out.status.success(), "{}", text(&out));
    // An error inside a profile is located in the profile.
    let cfg = write_config(&dir, "p.toml", &format!("{GOOD}\n[profiles.smoke]\ngrid = {{ mixture_ratio = [2.0] }}\n"));
    let out = run(sweep().args(["plan", "--profile", "smoke"]).arg(&cfg));
    assert!(text(&out).contains("p.toml:15:27"), "{}", text(&out));
    let out = run(sweep().arg("plan").arg(dir.join("nope.toml")));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("nope.toml: cannot read the config"), "{}", text(&out));
}
