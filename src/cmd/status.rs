//! `sweep status`: done, running, pending and failed points of a sweep directory.

use crate::fmt;
use clap::Args;
use std::path::PathBuf;
use sweep_store::Store;

/// Arguments of `sweep status`.
#[derive(Args)]
pub struct StatusArgs {
    /// The sweep directory (`<out>/<name>`).
    pub dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `sweep status`.
pub fn run(a: StatusArgs) -> anyhow::Result<u8> {
    let store = Store::open(&a.dir)?;
    let s = store.status()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(0);
    }
    let c = &s.counts;
    println!(
        "sweep {:?} in {}: {} points: {} done, {} running, {} pending, {} failed",
        s.name,
        a.dir.display(),
        c.total,
        c.done,
        c.running,
        c.pending,
        c.failed
    );
    let mut t =
        fmt::Table::new(&["id", "model", "state", "step", "loss", "tok/s", "ETA", "owner / reason"], &[0, 1, 2, 7]);
    for p in &s.points {
        let state = match p.state {
            sweep_store::status::State::Pending if p.checkpoint_step.is_some() => "interrupted".to_string(),
            other => format!("{other:?}").to_lowercase(),
        };
        let who = match (&p.owner, &p.failure) {
            (Some(o), _) => format!("{} (pid {})", o.host, o.pid),
            (None, Some(f)) => f.chars().take(60).collect(),
            _ => String::new(),
        };
        t.row(vec![
            p.id.clone(),
            p.label.clone(),
            state,
            format!("{}/{}", p.step.unwrap_or(0), p.steps),
            p.loss.map(|l| format!("{l:.4}")).unwrap_or_else(|| "-".into()),
            p.tokens_per_second.map(fmt::si).unwrap_or_else(|| "-".into()),
            p.eta_seconds.map(fmt::duration).unwrap_or_else(|| "-".into()),
            who,
        ]);
    }
    print!("{}", t.render());
    println!("{}", report_line(&a.dir));
    Ok(0)
}

/// Where the sweep's report is (rewritten while `sweep run` runs), or how to write one.
fn report_line(dir: &std::path::Path) -> String {
    let page = dir.join("report").join("index.html");
    match std::fs::canonicalize(&page) {
        Ok(p) => format!("report: {} (open file://{})", page.display(), p.display()),
        Err(_) => format!(
            "report: none yet (`sweep run` writes {}; `sweep report {}` does now)",
            page.display(),
            dir.display()
        ),
    }
}
