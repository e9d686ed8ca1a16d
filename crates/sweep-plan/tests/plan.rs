//! Planner behaviour: ids, profiles, grid designs, errors.

use std::path::Path;
use sweep_plan::plan_text;

const BASE: &str = r#"
[sweep]
name = "t"
trainer = "simulate"

[grid]
model = ["tiny", 1e6]
tokens = [1e5, 2e5]
mixture_ratio = [0.0, 0.5]

[train]
batch_size = 4
"#;

fn ids(text: &str, profile: Option<&str>) -> Vec<String> {
    plan_text(Path::new("c.toml"), text, profile).unwrap().points.iter().map(|p| p.id.clone()).collect()
}

#[test]
fn cartesian_product_in_order() {
    let plan = plan_text(Path::new("c.toml"), BASE, None).unwrap();
    assert_eq!(plan.points.len(), 8);
    assert_eq!(plan.points[0].label, "tiny");
    assert_eq!(plan.points[7].label, "1e6");
    assert_eq!(plan.points[1].mixture_ratio, 0.5);
}

#[test]
fn ids_ignore_key_order_comments_and_formatting() {
    let reordered = r#"
# a comment
[train]
batch_size    = 4   # same value

[grid]
mixture_ratio = [0.0, 0.50]
model = ["tiny", 1000000]
tokens = [100_000, 200000.0]

[sweep]
trainer = "simulate"
name = "t"
"#;
    assert_eq!(ids(BASE, None), ids(reordered, None));
}

#[test]
fn ids_change_with_training_values_only() {
    let base = ids(BASE, None);
    let lr = ids(&BASE.replace("batch_size = 4", "batch_size = 4\nlr = 1e-3"), None);
    assert!(base.iter().zip(&lr).all(|(a, b)| a != b));
    let seed = ids(&BASE.replace("trainer = \"simulate\"", "trainer = \"simulate\"\nseed = 7"), None);
    assert!(base.iter().zip(&seed).all(|(a, b)| a != b));
    // Wall time of the simulate trainer and the output root do not change what is computed.
    let wall = ids(&format!("{BASE}\n[simulate]\nseconds_per_point = 3\n"), None);
    assert_eq!(base, wall);
    let out = ids(&BASE.replace("name = \"t\"", "name = \"t\"\nout = \"elsewhere\""), None);
    assert_eq!(base, out);
}

#[test]
fn profile_overrides_values() {
    let text = format!("{BASE}\n[profiles.smoke.grid]\nmodel = [\"micro\"]\n[profiles.smoke.train]\nbatch_size = 2\n");
    let plan = plan_text(Path::new("c.toml"), &text, Some("smoke")).unwrap();
    assert_eq!(plan.points.len(), 4);
    assert!(plan.points.iter().all(|p| p.label == "micro" && p.train.batch_size == 2));
    // Unchanged keys keep their values.
    assert!(plan.points.iter().any(|p| p.mixture_ratio == 0.5));
    let err = plan_text(Path::new("c.toml"), &text, Some("smok")).unwrap_err();
    assert!(err.to_string().contains("did you mean \"smoke\""), "{err}");
}

#[test]
fn isoflop_places_tokens_on_budgets() {
    let text = r#"
[sweep]
name = "iso"
trainer = "simulate"
[grid]
mixture_ratio = [0.0]
[[grid.isoflop]]
budgets = [1e13, 1e14]
model = [1e5, 3e5, 1e6]
"#;
    let plan = plan_text(Path::new("c.toml"), text, None).unwrap();
    assert_eq!(plan.points.len(), 6);
    for p in &plan.points {
        let c = 6.0 * p.n() * p.tokens_requested;
        assert!((c / 1e13 - 1.0).abs() < 1e-9 || (c / 1e14 - 1.0).abs() < 1e-9, "C = {c}");
        // Tokens are rounded up to whole steps only.
        assert!(p.tokens as f64 >= p.tokens_requested);
        assert!((p.tokens as f64) < p.tokens_requested + (16 * 128) as f64);
        // Each point remembers the budget it was placed on, outside its id.
        let budget = p.isoflop_budget.expect("an IsoFLOP point records its budget");
        assert!((c / budget - 1.0).abs() < 1e-9, "C = {c}, budget {budget}");
    }
    // Points outside an IsoFLOP design have none, and their ids are what they were without it.
    let grid = plan_text(Path::new("c.toml"), BASE, None).unwrap();
    assert!(grid.points.iter().all(|p| p.isoflop_budget.is_none()));
    let mut p = plan.points[0].clone();
    let id = p.compute_id();
    p.isoflop_budget = None;
    assert_eq!(p.compute_id(), id, "the budget is not part of the id");
}

#[test]
fn unique_tokens_is_an_axis_that_keeps_other_ids() {
    let with = BASE.replace("mixture_ratio = [0.0, 0.5]", "mixture_ratio = [0.0, 0.5]\nunique_tokens = [5e4, 1e5]");
    let plan = plan_text(Path::new("c.toml"), &with, None).unwrap();
    assert_eq!(plan.points.len(), 16);
    let uniques: Vec<Option<u64>> = plan.points.iter().map(|p| p.unique_tokens).collect();
    assert_eq!(&uniques[..2], &[Some(50_000), Some(100_000)]);
    assert_ne!(plan.points[0].id, plan.points[1].id, "unique tokens change what a point trains");
    // Points without the axis hash what they hashed before it existed: the field is left out.
    for p in plan_text(Path::new("c.toml"), BASE, None).unwrap().points {
        assert!(p.unique_tokens.is_none());
        assert!(!p.hashed_text().contains("unique_tokens") && !p.hashed_text().contains("isoflop"));
    }
    // Fewer distinct tokens than one training window is an error at the value.
    let e = plan_text(
        Path::new("c.toml"),
        &BASE.replace("tokens = [1e5, 2e5]", "tokens = [1e5, 2e5]\nunique_tokens = [100]"),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("grid.unique_tokens[0]") && e.contains("fewer than one training window (context + 1 = 129)"),
        "{e}"
    );
}

#[test]
fn zip_varies_axes_together() {
    let text = r#"
[sweep]
name = "z"
trainer = "simulate"
[grid]
precision = ["fp32", "e4m3"]
[[grid.zip]]
model = ["tiny", "mini", "small"]
tokens_per_param = [10, 20, 40]
"#;
    let plan = plan_text(Path::new("c.toml"), text, None).unwrap();
    assert_eq!(plan.points.len(), 6);
    let small = plan.points.iter().find(|p| p.label == "small").unwrap();
    assert!((small.tokens_requested / small.n() - 40.0).abs() < 1e-9);
    let e4m3 = plan.points.iter().find(|p| p.precision.name == "e4m3").unwrap();
    assert_eq!((e4m3.precision.exp_bits, e4m3.precision.man_bits, e4m3.precision.bits), (Some(4), Some(3), 8));
    assert_eq!(e4m3.precision.targets.len(), 2);
}

#[test]
fn derived_sizes_and_lr_rules() {
    let text = r#"
[sweep]
name = "lr"
[grid]
model = [1e5, 1e6]
tokens = 1e6
[train]
lr = { base = 1e-3, ref_params = 1e6, exponent = -0.5 }
"#;
    let plan = plan_text(Path::new("c.toml"), text, None).unwrap();
    for p in &plan.points {
        let want = 1e-3 * (p.n() / 1e6).powf(-0.5);
        assert!((p.train.lr - want).abs() < 1e-15);
        assert!(p.flops.chinchilla > p.flops.six_nd * 0.5);
    }
    assert!(plan.points[0].n() < plan.points[1].n());
}

#[test]
fn schedule_shapes() {
    let text = r#"
[sweep]
name = "s"
[grid]
model = "tiny"
tokens = 1e5
[train]
batch_size = 1
schedule = "wsd"
warmup_steps = 10
cooldown_fraction = 0.2
min_lr_ratio = 0.0
lr = 1.0
"#;
    let p = &plan_text(Path::new("c.toml"), text, None).unwrap().points[0];
    let t = &p.train;
    assert_eq!(t.steps, (1e5f64 / 128.0).ceil() as u64);
    assert!((t.lr_at(0) - 0.1).abs() < 1e-12);
    assert_eq!(t.lr_at(10), 1.0);
    assert_eq!(t.lr_at(t.steps - t.cooldown_steps - 1), 1.0);
    assert!(t.lr_at(t.steps - 1).abs() < 1e-12);
    assert!(t.lr_at(t.steps - t.cooldown_steps / 2) < 1.0);
}

#[test]
fn every_section_suggests_the_nearest_key() {
    for (section, typo, fix) in [
        ("sweep", "sed = 1", "seed"),
        ("model", "head_dm = 32", "head_dim"),
        ("train", "warmup_step = 10", "warmup_steps"),
        ("precision", "roundng = \"nearest\"", "rounding"),
        ("simulate", "nois = 0.01", "noise"),
        ("simulate.general", "E = 1.7\nA = 400.0\nalpha = 0.3\nB = 400.0\nbeta = 0.3\ngama = 0.1", "gamma"),
    ] {
        let text = if section == "sweep" {
            BASE.replace("trainer = \"simulate\"", &format!("trainer = \"simulate\"\n{typo}"))
        } else if section == "train" {
            BASE.replace("batch_size = 4", &format!("batch_size = 4\n{typo}"))
        } else {
            format!("{BASE}\n[{section}]\n{typo}\n")
        };
        let err = plan_text(Path::new("c.toml"), &text, None).unwrap_err();
        let key = typo.lines().last().unwrap().split(' ').next().unwrap();
        assert_eq!(err.key, format!("{section}.{key}"), "{err}");
        assert!(err.location.is_some(), "{err}");
        assert!(err.message.contains(&format!("did you mean \"{fix}\"")), "{err}");
    }
}

/// A section another crate owns, read through the plan as sweep-data and sweep-fit read theirs.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Fit {
    #[allow(dead_code)]
    laws: Vec<String>,
    #[serde(default)]
    max_iters: u64,
}

impl sweep_io::config::Section for Fit {
    const KEY: &'static str = "fit";
    fn check(&self) -> Result<(), sweep_plan::KeyError> {
        if self.max_iters > 100 {
            return Err(sweep_plan::KeyError::new("fit.max_iters", "is above 100"));
        }
        Ok(())
    }
}

#[test]
fn sections_of_other_crates_are_read_with_located_errors() {
    let plan = plan_text(Path::new("c.toml"), BASE, None).unwrap();
    assert!(plan.section::<Fit>().unwrap().is_none());
    let text =
        format!("{BASE}\n[fit]\nlaws = [\"chinchilla\"]\nmax_iter = 3\n\n[profiles.big.fit]\nmax_iters = 1000\n");
    let err = plan_text(Path::new("c.toml"), &text, None).unwrap().section::<Fit>().unwrap_err();
    assert_eq!(err.location, Some((16, 12)), "{err}");
    assert!(err.to_string().starts_with("c.toml:16:12: fit.max_iter: unknown key"), "{err}");
    assert!(err.message.contains("did you mean \"max_iters\""), "{err}");
    // A value set by the profile is located in the profile.
    let text = text.replace("max_iter = 3\n", "");
    let err = plan_text(Path::new("c.toml"), &text, Some("big")).unwrap().section::<Fit>().unwrap_err();
    assert_eq!(err.to_string(), "c.toml:18:13: fit.max_iters: is above 100");
    let fit = plan_text(Path::new("c.toml"), &text, None).unwrap().section::<Fit>().unwrap().unwrap();
    assert_eq!(fit.max_iters, 0);
}

#[test]
fn precision_grid_values_seeds_and_their_errors() {
    use sweep_plan::config::QuantTarget;
    let grid =
        |extra: &str| BASE.replace("mixture_ratio = [0.0, 0.5]\n", &format!("mixture_ratio = [0.0, 0.5]\n{extra}\n"));
    let text = grid("seed = [0, 7]\nprecision = [\"mxfp4\", { weights = \"int4\", grad_output = \"fp8-e5m2\" }]")
        + "[precision]\namax_history = 8\n";
    let plan = plan_text(Path::new("c.toml"), &text, None).unwrap();
    assert_eq!(plan.points.len(), 8 * 2 * 2);
    let seeds: std::collections::BTreeSet<u64> = plan.points.iter().map(|p| p.seed).collect();
    assert_eq!(seeds.into_iter().collect::<Vec<_>>(), [0, 7], "the seed axis replaces [sweep] seed");
    let mx = &plan.points[0].precision;
    assert_eq!((mx.name.as_str(), mx.block_size, mx.exp_bits, mx.amax_history), ("mxfp4", 32.0, Some(2), None));
    let per = &plan.points.iter().find(|p| p.precision.name != "mxfp4").unwrap().precision;
    assert_eq!(per.name, "weights=int4,grad_output=e5m2");
    let targets: Vec<QuantTarget> = per.targets.iter().map(|(t, _)| *t).collect();
    assert_eq!(targets, [QuantTarget::Weights, QuantTarget::GradOutput], "only the value's targets");
    assert_eq!(
        (per.exp_bits, per.amax_history),
        (None, Some(8)),
        "mixed formats: no single split; per-tensor: delayed"
    );
    assert_eq!((per.target_bits(QuantTarget::Weights), per.target_bits(QuantTarget::Activations)), (4, 32));
    // Errors name the key and what to change.
    for (bad, want) in [
        ("precision = [{ wieghts = \"int4\" }]", "did you mean \"weights\""),
        ("precision = [\"mxfp5\"]", "unknown precision"),
        ("seed = [-1]", "non-negative integer seed"),
    ] {
        let err = plan_text(Path::new("c.toml"), &grid(bad), None).unwrap_err().to_string();
        assert!(err.contains(want) && err.contains("grid."), "{bad}: {err}");
    }
    let err = plan_text(Path::new("c.toml"), &format!("{BASE}[precision]\namax_history = 0\n"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("precision.amax_history") && err.contains("1..=1024"), "{err}");
}
