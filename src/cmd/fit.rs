//! `sweep fit`: laws from a sweep directory's finished points, or from any CSV.

use anyhow::{bail, Context};
use clap::Args;
use std::path::{Path, PathBuf};
use sweep_fit::{FitConfig, Table};
use sweep_store::results::{CurveRow, ResultRow, SweepResults};
use sweep_store::Store;

/// Arguments of `sweep fit`.
#[derive(Args)]
pub struct FitArgs {
    /// The sweep directory (fits the laws of its config's [fit] section).
    #[arg(required_unless_present = "csv", conflicts_with = "csv")]
    pub dir: Option<PathBuf>,
    /// Fit a CSV of results from anywhere instead (columns N, D, loss by default).
    #[arg(long, requires = "law")]
    pub csv: Option<PathBuf>,
    /// The law to fit to the CSV: chinchilla, kaplan, dcpt_general, dcpt_domain, cmr, vocab,
    /// data_constrained, fp_quant, quant_degradation, chinchilla_approach2.
    #[arg(long)]
    pub law: Option<String>,
    /// Map a law variable to a CSV column: --map N=params --map loss=val_loss.
    #[arg(long = "map", value_name = "VAR=COLUMN")]
    pub maps: Vec<String>,
    /// Where laws.json goes (default: DIR/laws.json, or laws.json beside the CSV).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Bootstrap resamples for intervals (0 turns them off); overrides the config.
    #[arg(long)]
    pub bootstrap: Option<usize>,
}

fn parse_maps(maps: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    maps.iter()
        .map(|m| match m.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--map {m:?}: write VARIABLE=COLUMN, e.g. --map N=params"),
        })
        .collect()
}

/// Runs `sweep fit`.
pub fn run(a: FitArgs) -> anyhow::Result<u8> {
    if let Some(csv) = &a.csv {
        let law = a.law.as_deref().expect("clap requires --law with --csv");
        let mut config = FitConfig::for_law(law, &parse_maps(&a.maps)?)?;
        if let Some(b) = a.bootstrap {
            config.bootstrap.resamples = b;
        }
        let out = a.out.clone().unwrap_or_else(|| csv.with_file_name("laws.json"));
        let laws = sweep_fit::fit_csv(csv, &config, &out)?;
        print!("{}", sweep_fit::render_text(&laws));
        println!("wrote {}", out.display());
        return Ok(exit_code(&laws));
    }
    let dir = a.dir.as_ref().expect("clap requires DIR without --csv");
    if !a.maps.is_empty() || a.law.is_some() {
        bail!("--law and --map apply to --csv; for a sweep directory, name laws in the config's [fit] section");
    }
    let store = Store::open(dir)?;
    let config = sweep_config_fit(&store)?.with_context(|| {
        format!("{}: the sweep's config has no [fit] section; add one (e.g. [[fit.laws]] name = \"chinchilla\") or use --csv", dir.display())
    })?;
    let mut config = config;
    if let Some(b) = a.bootstrap {
        config.bootstrap.resamples = b;
    }
    let out = a.out.clone().unwrap_or_else(|| dir.join("laws.json"));
    let laws = fit_sweep(&store, &config, &out)?;
    print!("{}", sweep_fit::render_text(&laws));
    println!("wrote {}", out.display());
    if a.out.is_none() {
        match sweep_report::write_sweep_report(&store, &dir.join("report")) {
            Ok(r) => println!("wrote {}", r.dir.join("index.html").display()),
            Err(e) => eprintln!("warning: writing the report failed: {e:#}"),
        }
    }
    Ok(exit_code(&laws))
}

/// 0 when every law was fitted; otherwise the laws that were not are named and the exit code
/// is an error's (laws.json, with their errors, is written already).
fn exit_code(laws: &sweep_fit::LawsFile) -> u8 {
    let failed = laws.failed();
    for (name, why) in &failed {
        eprintln!("error: law {name} could not be fitted: {why}");
    }
    if failed.is_empty() {
        0
    } else {
        crate::EXIT_ERROR
    }
}

/// The [fit] section of the config a sweep directory was made from (profile applied), if any.
pub fn sweep_config_fit(store: &Store) -> anyhow::Result<Option<FitConfig>> {
    let m = store.manifest()?;
    let plan = sweep_plan::plan_text(Path::new(&m.config_path), &m.config_text, m.profile.as_deref())?;
    Ok(plan.section::<FitConfig>()?)
}

/// Fits the finished points of a sweep and writes laws.json atomically: every configured law,
/// fitted or with its error, and the points left out (failed, running, not run). Each law leaves
/// out the rows that lack a value it reads. Also writes the results table as DIR/results.csv,
/// and the finished parents of a staged sweep (not fitted) as DIR/parents.csv.
pub fn fit_sweep(store: &Store, config: &FitConfig, out: &Path) -> anyhow::Result<sweep_fit::LawsFile> {
    let results = SweepResults::read(store)?;
    let mut tables = vec![("results.csv", &results.rows)];
    if !results.parents.is_empty() {
        tables.push(("parents.csv", &results.parents));
    }
    for (name, rows) in tables {
        let path = store.dir.join(name);
        sweep_store::fsio::write_atomic(&path, SweepResults::csv(rows).as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let mut laws = if results.rows.is_empty() {
        let why = format!(
            "{}: no finished points to fit yet; run the sweep first (`sweep status {}` shows progress)",
            store.dir.display(),
            store.dir.display()
        );
        sweep_fit::run::all_failed(config, &why, &results.provenance())?
    } else {
        let table = Table::from_records(results.rows.iter().map(ResultRow::columns), results.provenance())?;
        let curves = Table::from_records(results.curves.iter().map(CurveRow::columns), results.curves_provenance())?;
        sweep_fit::fit_all_complete_rows(&table, Some(&curves), config)?
    };
    laws.left_out = results
        .unfinished
        .iter()
        .map(|u| sweep_fit::LeftOut {
            point: u.id.clone(),
            label: u.label.clone(),
            state: u.state.clone(),
            reason: u.reason.clone(),
        })
        .collect();
    sweep_fit::write_laws_json(out, &laws)?;
    Ok(laws)
}
