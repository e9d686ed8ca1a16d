//! `sweep fit`: laws from a sweep directory's finished points, or from any CSV.

use anyhow::{bail, Context};
use clap::Args;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use sweep_fit::{FitConfig, Table};
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
    /// fp_quant, quant_degradation, chinchilla_approach2.
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
        return Ok(0);
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
        match crate::cmd_report::write_sweep_report(&store, &dir.join("report")) {
            Ok(r) => println!("wrote {}", r.dir.join("index.html").display()),
            Err(e) => eprintln!("warning: writing the report failed: {e:#}"),
        }
    }
    Ok(0)
}

/// The [fit] section of the config a sweep directory was made from (profile applied), if any.
pub fn sweep_config_fit(store: &Store) -> anyhow::Result<Option<FitConfig>> {
    let m = store.manifest()?;
    let plan = sweep_plan::plan_text(Path::new(&m.config_path), &m.config_text, m.profile.as_deref())?;
    Ok(plan.section::<FitConfig>()?)
}

/// Fits the finished points of a sweep and writes laws.json atomically.
pub fn fit_sweep(store: &Store, config: &FitConfig, out: &Path) -> anyhow::Result<sweep_fit::LawsFile> {
    let (table, curves) = results_tables(store)?;
    let table = keep_complete_rows(table, &needed_columns(config))?;
    let laws = sweep_fit::fit_all(&table, Some(&curves), config)?;
    sweep_fit::write_laws_json(out, &laws)?;
    Ok(laws)
}

/// The results table (one row per finished point) and the learning-curve table (one row per
/// logged evaluation) of a sweep directory.
pub fn results_tables(store: &Store) -> anyhow::Result<(Table, Table)> {
    let mut rows: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut curves: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    let mut runs = 0usize;
    for id in store.point_ids()? {
        let d = store.point(&id);
        let Some(result) = d.read_result()? else { continue };
        let p = d.read_point()?;
        let f = &result["final"];
        let n = p.counts.non_embedding_params as f64;
        let bytes_per_token = num(&f["bytes_per_token"]["general"]);
        let mut push = |k: &'static str, v: f64| rows.entry(k).or_default().push(v);
        push("N", n);
        push("N_total", p.counts.total_params as f64);
        push("N_emb", p.counts.embedding_params as f64);
        push("D", p.tokens as f64);
        push("C", p.flops.six_nd);
        push("r", p.mixture_ratio);
        push("V", p.model.vocab_size as f64);
        push("N_nv", n);
        push("N_v", (p.model.vocab_size * p.model.d_model) as f64);
        push("H", p.tokens as f64 * bytes_per_token);
        push("exp_bits", p.precision.exp_bits.map(|e| e as f64).unwrap_or(f64::NAN));
        push("man_bits", p.precision.man_bits.map(|m| m as f64).unwrap_or(f64::NAN));
        push("block_size", p.precision.block_size);
        push("bits", p.precision.bits as f64);
        push("loss", num(&f["loss"]));
        push("loss_general", num(&f["val_loss"]["general"]));
        push("loss_domain", num(&f["val_loss"]["domain"]));
        push("loss_bpb", num(&f["val_bpb"]["general"]));
        for m in d.read_metrics()? {
            let Some(l) = m["val_loss"]["general"].as_f64() else { continue };
            let mut c = |k: &'static str, v: f64| curves.entry(k).or_default().push(v);
            c("run", runs as f64);
            c("N", n);
            c("D", num(&m["tokens"]));
            c("C", num(&m["flops"]));
            c("loss", l);
        }
        runs += 1;
    }
    if runs == 0 {
        bail!(
            "{}: no finished points to fit yet; run the sweep first (`sweep status {}` shows progress)",
            store.dir.display(),
            store.dir.display()
        );
    }
    let provenance = format!("sweep directory {} ({runs} finished points)", store.dir.display());
    let table = Table::from_columns(rows.into_iter().map(|(k, v)| (k.to_string(), v)).collect(), provenance.clone())?;
    let curves = Table::from_columns(
        curves.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        format!("{provenance}, learning curves"),
    )?;
    Ok((table, curves))
}

/// The table columns the configured laws read (variables and responses, after `map`).
fn needed_columns(config: &FitConfig) -> Vec<String> {
    let mut cols = Vec::new();
    for law in &config.laws {
        let (vars, response) = match (&law.variables, &law.response) {
            (Some(v), Some(r)) => (v.clone(), r.clone()),
            _ => match sweep_fit::laws::builtin_law(&law.name) {
                Ok(l) => (l.variables(), l.response()),
                Err(_) => continue,
            },
        };
        for v in vars.into_iter().chain(std::iter::once(response)) {
            cols.push(law.map.get(&v).cloned().unwrap_or(v));
        }
    }
    cols
}

/// Drops points that lack a value a law needs (integer formats have no exponent bits, a sweep
/// without a domain source has no domain loss), saying how many.
fn keep_complete_rows(table: Table, needed: &[String]) -> anyhow::Result<Table> {
    let n = table.columns.values().next().map(|c| c.len()).unwrap_or(0);
    let keep: Vec<usize> =
        (0..n).filter(|&i| needed.iter().all(|c| table.columns.get(c).is_none_or(|col| col[i].is_finite()))).collect();
    if keep.len() == n {
        return Ok(table);
    }
    let missing: Vec<&String> =
        needed.iter().filter(|c| table.columns.get(*c).is_some_and(|col| col.iter().any(|x| !x.is_finite()))).collect();
    tracing::warn!("{} of {n} points lack {:?} and are left out of the fit", n - keep.len(), missing);
    let columns = table.columns.into_iter().map(|(k, v)| (k, keep.iter().map(|&i| v[i]).collect())).collect();
    Ok(Table::from_columns(columns, table.provenance)?)
}
