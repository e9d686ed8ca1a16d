//! The sweep config on the command line: loading and checking it, and creating or reopening its
//! sweep directory (shared by `plan`, `run`, `init` and `slurm`).

use crate::{Exit, EXIT_CONFIG};
use clap::Args;
use std::path::{Path, PathBuf};
use sweep_plan::Plan;
use sweep_store::Store;

/// The config a command reads, and where its sweep directory goes.
#[derive(Args)]
pub struct ConfigArgs {
    /// The sweep config (TOML).
    pub config: PathBuf,
    /// Apply `[profiles.NAME]` of the config on top of the rest.
    #[arg(long)]
    pub profile: Option<String>,
    /// Output root (overrides `[sweep] out`); the sweep goes to OUT/<name>.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Loads the config with its profile, checking the sections other crates own too.
pub fn load_plan(a: &ConfigArgs) -> anyhow::Result<Plan> {
    let plan = sweep_plan::load(&a.config, a.profile.as_deref())?;
    // Sections owned by other crates are checked here, before any work starts.
    plan.section::<sweep_data::DataConfig>()?;
    plan.section::<sweep_fit::FitConfig>()?;
    Ok(plan)
}

/// Creates or reopens the sweep directory, reporting what changed; refuses incompatible changes.
pub fn prepare(plan: &Plan, dir: &Path, force: bool) -> anyhow::Result<Store> {
    let (store, change) = match Store::prepare(dir, plan, force) {
        Ok(x) => x,
        Err(sweep_store::StoreError::Incompatible(msg)) => {
            eprintln!("error: {msg}");
            return Err(Exit(EXIT_CONFIG).into());
        }
        Err(e) => return Err(e.into()),
    };
    if change.created {
        tracing::info!("created {} with {} points", dir.display(), plan.points.len());
    } else {
        if !change.added.is_empty() {
            tracing::info!("{} new point(s) in the config: {}", change.added.len(), short_list(&change.added));
        }
        if !change.removed.is_empty() {
            tracing::warn!(
                "{} point(s) are no longer in the grid (their files stay): {}",
                change.removed.len(),
                short_list(&change.removed)
            );
        }
    }
    Ok(store)
}

fn short_list(ids: &[String]) -> String {
    let mut s = ids.iter().take(6).cloned().collect::<Vec<_>>().join(", ");
    if ids.len() > 6 {
        s.push_str(", ...");
    }
    s
}
