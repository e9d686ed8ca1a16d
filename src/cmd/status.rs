//! `sweep status`: done, running, pending and failed points of a sweep directory; in a staged
//! sweep, each point's stage and parent, and the points waiting for a parent's checkpoint.

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
    let waiting =
        if c.waiting > 0 { format!(" ({} waiting for a parent's checkpoint)", c.waiting) } else { String::new() };
    println!(
        "sweep {:?} in {}: {} points: {} done, {} running, {} pending{waiting}, {} failed",
        s.name,
        a.dir.display(),
        c.total,
        c.done,
        c.running,
        c.pending,
        c.failed
    );
    let staged = s.points.iter().any(|p| p.stage.is_some());
    let mut header = vec!["id", "model", "state", "step", "loss", "tok/s", "ETA", "owner / reason"];
    if staged {
        header.splice(2..2, ["stage", "parent (step)"]);
    }
    let left: Vec<usize> = if staged { vec![0, 1, 2, 3, 4, 9] } else { vec![0, 1, 2, 7] };
    let mut t = fmt::Table::new(&header, &left);
    for p in &s.points {
        let state = match p.state {
            sweep_store::status::State::Pending if p.waiting_for_parent => "waiting".to_string(),
            sweep_store::status::State::Pending if p.checkpoint_step.is_some() => "interrupted".to_string(),
            other => format!("{other:?}").to_lowercase(),
        };
        let who = match (&p.owner, &p.failure, &p.parent) {
            (Some(o), _, _) => format!("{} (pid {})", o.host, o.pid),
            (None, Some(f), _) => f.chars().take(60).collect(),
            (None, None, Some((id, step))) if p.waiting_for_parent => {
                format!("waits for {id}'s checkpoint at step {step}")
            }
            _ => String::new(),
        };
        let mut cells = vec![p.id.clone(), p.label.clone()];
        if staged {
            cells.push(p.stage.clone().unwrap_or_default());
            cells.push(p.parent.as_ref().map(|(id, step)| format!("{id} ({step})")).unwrap_or_else(|| "-".into()));
        }
        cells.extend([
            state,
            format!("{}/{}", p.step.or(p.parent.as_ref().map(|b| b.1)).unwrap_or(0), p.steps),
            p.loss.map(|l| format!("{l:.4}")).unwrap_or_else(|| "-".into()),
            p.tokens_per_second.map(fmt::si).unwrap_or_else(|| "-".into()),
            p.eta_seconds.map(fmt::duration).unwrap_or_else(|| "-".into()),
            who,
        ]);
        t.row(cells);
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
