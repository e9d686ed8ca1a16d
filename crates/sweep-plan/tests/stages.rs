//! Staged plans: the WSD and continual pre-training trees, their ids, costs and errors.

use std::path::Path;
use sweep_plan::config::Schedule;
use sweep_plan::{plan_text, Point, StageData};

/// 128 tokens per step: budgets of 100, 200 and 300 steps, 20% cooldowns.
const WSD: &str = r#"
[sweep]
name = "w"
trainer = "simulate"

[grid]
model = ["micro", "tiny"]
tokens = [12800, 25600, 38400]

[model]
context = 32

[train]
batch_size = 4
schedule = "wsd"
warmup_steps = 10
cooldown_fraction = 0.2
cooldown_shape = "linear"

[stages]
type = "wsd"

[profiles.independent]
stages = { type = "none" }
"#;

const CPT: &str = r#"
[sweep]
name = "c"
trainer = "simulate"

[grid]
model = ["micro", "tiny"]
mixture_ratio = [0.0, 0.5]
tokens = [6400, 12800]

[model]
context = 32

[train]
batch_size = 4
schedule = "cosine"

[stages]
type = "cpt"
base = { tokens = { micro = 25600, tiny = 51200 }, schedule = "constant" }
"#;

fn plan(text: &str, profile: Option<&str>) -> Vec<Point> {
    plan_text(Path::new("c.toml"), text, profile).unwrap_or_else(|e| panic!("{e}")).points
}

fn err(text: &str) -> String {
    plan_text(Path::new("c.toml"), text, None).unwrap_err().to_string()
}

#[test]
fn wsd_is_one_stable_run_per_model_and_a_cooldown_per_budget() {
    let points = plan(WSD, None);
    assert_eq!(points.len(), 2 + 6);
    let (trunks, branches) = points.split_at(2);
    for (t, label) in trunks.iter().zip(["micro", "tiny"]) {
        assert_eq!((t.label.as_str(), t.stage_name(), t.is_fitted()), (label, "stable", false));
        assert_eq!(t.train.steps, 240, "the stable run reaches the last cooldown's start");
        assert_eq!((t.train.schedule, t.train.warmup_steps), (Schedule::Constant, 10));
        assert_eq!(t.branch_steps(), &[80, 160, 240]);
        assert!(t.parent().is_none());
    }
    for (b, (label, total)) in branches.iter().zip([
        ("micro", 100u64),
        ("micro", 200),
        ("micro", 300),
        ("tiny", 100),
        ("tiny", 200),
        ("tiny", 300),
    ]) {
        let parent = b.parent().unwrap();
        let trunk = trunks.iter().find(|t| t.id == parent.id).unwrap();
        assert_eq!(
            (b.label.as_str(), trunk.label.as_str(), b.stage_name(), b.is_fitted()),
            (label, label, "cooldown", true)
        );
        assert_eq!(b.end_step(), total);
        assert_eq!(b.train.steps, total / 5, "20% cooldown");
        assert_eq!(parent.step, total - total / 5);
        assert_eq!(parent.data, StageData::Continue);
        assert_eq!(b.tokens, total * 128, "a branch's tokens are the total its model has seen");
        assert_eq!(b.own_tokens(), total / 5 * 128);
        assert_eq!(parent.tokens, parent.step * 128);
    }
    // Indices follow the order: parents first.
    assert!(points.iter().enumerate().all(|(i, p)| p.index == i));
}

#[test]
fn wsd_branches_follow_the_schedule_of_the_independent_runs_step_for_step() {
    let staged = plan(WSD, None);
    let independent = plan(WSD, Some("independent"));
    assert_eq!(independent.len(), 6);
    for run in &independent {
        assert!(run.stage.is_none() && run.parent().is_none());
        let branch = staged.iter().find(|p| p.label == run.label && p.tokens == run.tokens && p.is_fitted()).unwrap();
        let trunk = staged.iter().find(|p| Some(&p.id) == branch.parent().map(|b| &b.id)).unwrap();
        let start = branch.start_step();
        for s in 0..run.train.steps {
            let staged_lr = if s < start { trunk.train.lr_at(s) } else { branch.train.lr_at(s - start) };
            assert_eq!(staged_lr.to_bits(), run.train.lr_at(s).to_bits(), "{} step {s}", run.label);
        }
    }
}

#[test]
fn wsd_sweep_costs_what_haegele_et_al_count() {
    // Three budgets D, 2D, 3D with 20% cooldowns: stable 0.8 x 3D plus cooldowns 0.2 x 6D,
    // against 6D as independent runs: 0.6 (Haegele et al. 2024 report 0.53-0.60 of separate
    // runs for three budgets).
    let staged = plan(WSD, None);
    let own: f64 = staged.iter().map(|p| p.own_flops().six_nd).sum();
    let independent: f64 = staged.iter().filter(|p| p.is_fitted()).map(|p| p.flops.six_nd).sum();
    let alone: f64 = plan(WSD, Some("independent")).iter().map(|p| p.flops.six_nd).sum();
    assert!((independent - alone).abs() <= 1e-9 * alone, "the grid as independent runs: {independent} vs {alone}");
    assert!((own / independent - 0.6).abs() < 1e-12, "{}", own / independent);
}

#[test]
fn stable_run_ids_ignore_the_branches_and_children_hash_their_parent() {
    let staged = plan(WSD, None);
    // A budget whose cooldown starts inside the stable run: same stable run, one more branch.
    let more = plan(&WSD.replace("tokens = [12800, 25600, 38400]", "tokens = [12800, 19200, 25600, 38400]"), None);
    assert_eq!(staged[0].id, more[0].id);
    assert_eq!(more[0].branch_steps(), &[80, 120, 160, 240]);
    let ids = |ps: &[Point]| ps.iter().map(|p| p.id.clone()).collect::<std::collections::BTreeSet<_>>();
    assert!(ids(&staged).is_subset(&ids(&more)));
    // A longer stable run is another run, and its branches are other points.
    let longer = plan(&WSD.replace("38400]", "51200]"), None);
    assert_ne!(staged[0].id, longer[0].id);
    assert!(ids(&staged).intersection(&ids(&longer)).next().is_none());
}

#[test]
fn ids_of_configs_without_stages_are_unchanged() {
    // Ids computed by the version before staged points existed.
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/simulate.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert_eq!(plan(&text, None)[0].id, "5a4b3c85ffea");
    let wsd = "[sweep]\nname = \"t\"\ntrainer = \"simulate\"\n[grid]\nmodel = [\"tiny\"]\ntokens = [1e5]\n[train]\nbatch_size = 4\nschedule = \"wsd\"\n";
    assert_eq!(plan(wsd, None)[0].id, "304f9e8426e9");
}

#[test]
fn cpt_trains_one_base_per_model_and_continues_it_on_each_mixture() {
    let points = plan(CPT, None);
    assert_eq!(points.len(), 2 + 8);
    let (bases, children) = points.split_at(2);
    for (b, (label, tokens)) in bases.iter().zip([("micro", 25600u64), ("tiny", 51200)]) {
        assert_eq!((b.label.as_str(), b.stage_name(), b.is_fitted()), (label, "base", false));
        assert_eq!((b.tokens, b.mixture_ratio, b.train.schedule), (tokens, 0.0, Schedule::Constant));
        assert_eq!(b.branch_steps(), &[b.train.steps]);
    }
    for c in children {
        let parent = c.parent().unwrap();
        let base = bases.iter().find(|b| b.id == parent.id).unwrap();
        assert_eq!((c.label.as_str(), c.stage_name(), c.is_fitted()), (base.label.as_str(), "cpt", true));
        assert_eq!((parent.step, parent.tokens, parent.data), (base.train.steps, base.tokens, StageData::Switch));
        assert_eq!(c.tokens, base.tokens + c.own_tokens());
        assert!([6400, 12800].contains(&c.own_tokens()));
        assert_eq!(c.train.schedule, Schedule::Cosine, "the CPT stage keeps [train]'s schedule");
        assert_eq!(c.start_step(), base.train.steps);
    }
    // Per-parameter base tokens work too.
    let per_param = plan(&CPT.replace("tokens = { micro = 25600, tiny = 51200 }", "tokens_per_param = 10"), None);
    assert_eq!(per_param.iter().filter(|p| p.stage_name() == "base").count(), 2);
}

#[test]
fn stage_errors_say_what_to_change() {
    let e = err(&WSD.replace("schedule = \"wsd\"", "schedule = \"cosine\""));
    assert!(e.contains("c.toml:21:8: stages.type") && e.contains("set [train] schedule = \"wsd\""), "{e}");
    let e = err(&WSD.replace("warmup_steps = 10", "warmup_steps = 90"));
    assert!(e.contains("grid.tokens[0]") && e.contains("inside the stable run's warmup of 90 steps"), "{e}");
    let e = err(&WSD.replace("cooldown_fraction = 0.2", "cooldown_fraction = 1.0"));
    assert!(e.contains("train.cooldown_fraction") && e.contains("(0, 1)"), "{e}");
    let e = err(&WSD.replace("type = \"wsd\"", "type = \"wds\""));
    assert!(e.contains("stages.type") && e.contains("did you mean \"wsd\""), "{e}");
    let e = err(&CPT.replace("tiny = 51200", "tinny = 51200"));
    assert!(e.contains("stages.base.tokens") && e.contains("no base tokens for model \"tiny\""), "{e}");
    let e = err(&CPT.replace("base = { tokens = { micro = 25600, tiny = 51200 }, schedule = \"constant\" }", ""));
    assert!(e.contains("stages") && e.contains("[stages.base]"), "{e}");
    let e = err(&CPT.replace("schedule = \"constant\"", "mixture_ratio = 1.5"));
    assert!(e.contains("stages.base.mixture_ratio") && e.contains("outside [0, 1]"), "{e}");
    let e = err(&CPT.replace("type = \"cpt\"", "type = \"wsd\""));
    assert!(e.contains("stages.base") && e.contains("type = \"cpt\""), "{e}");
    let e = err(&CPT.replace("schedule = \"constant\"", "tokens_per_param = 3"));
    assert!(e.contains("stages.base.tokens_per_param") && e.contains("not both"), "{e}");
}

#[test]
fn cooldown_shapes_and_lengths() {
    // 100 steps of 128 tokens, peak 1, minimum 0.1: the cooldown's elapsed fraction after its
    // k-th step is k / cooldown, and the three shapes give 1 - sqrt(t), 1 - t, (1 + cos(pi t)) / 2
    // of the way from the minimum to the peak.
    let text = |shape: &str, length: &str| {
        format!("[sweep]\nname = \"s\"\ntrainer = \"simulate\"\n[grid]\nmodel = \"micro\"\ntokens = 12800\n[model]\ncontext = 32\n[train]\nbatch_size = 4\nlr = 1.0\nmin_lr_ratio = 0.1\nwarmup_steps = 0\nschedule = \"wsd\"\ncooldown_shape = \"{shape}\"\n{length}\n")
    };
    for (shape, at_quarter) in
        [("1-sqrt", 0.5), ("linear", 0.75), ("cosine", 0.5 * (1.0 + (std::f64::consts::PI / 4.0).cos()))]
    {
        let p = &plan(&text(shape, "cooldown_fraction = 0.2"), None)[0];
        let t = &p.train;
        assert_eq!((t.steps, t.cooldown_steps), (100, 20));
        assert_eq!(t.lr_at(79), 1.0, "{shape}: stable until the cooldown");
        let lr = t.lr_at(80 + 4); // 5 of 20 cooldown steps done: t = 1/4
        assert!((lr - (0.1 + 0.9 * at_quarter)).abs() < 1e-12, "{shape}: {lr}");
        assert!((t.lr_at(99) - 0.1).abs() < 1e-12, "{shape} ends at the minimum");
    }
    // The length in tokens: 3200 tokens are 25 steps.
    let p = &plan(&text("linear", "cooldown_tokens = 3200"), None)[0];
    assert_eq!(p.train.cooldown_steps, 25);
    let e = err(&text("linear", "cooldown_tokens = -1"));
    assert!(e.contains("train.cooldown_tokens") && e.contains("positive"), "{e}");
    let e = err(&text("sqrt", "cooldown_fraction = 0.2"));
    assert!(e.contains("train.cooldown_shape") && e.contains("1-sqrt"), "{e}");
}
