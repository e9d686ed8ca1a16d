//! `sweep data ...`: print text of the built-in languages with their exact entropy, and prepare
//! the tokenizers and token shards a sweep's points need (once, in the sweep's shared cache).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use sweep_data::cli::{prepare_all, sample, SampleArgs};
use sweep_data::{DataConfig, Language};

/// `sweep data`.
#[derive(Args)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Print text of a built-in language (stdout) and its exact entropy (stderr).
    Sample(SampleCli),
    /// Build the tokenizer of every vocabulary size in the grid and the token shards of every
    /// source, in the sweep's data cache; print bytes per token, shard sizes and the cache.
    Prepare(PrepareCli),
}

#[derive(Args)]
struct SampleCli {
    /// The built-in language: prose or code.
    #[arg(long, default_value = "prose", value_parser = parse_language)]
    language: Language,
    /// About how many bytes of text (whole words).
    #[arg(long, default_value_t = 2000)]
    bytes: usize,
    /// Which text.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
struct PrepareCli {
    /// The sweep config (TOML): its `[data]` section and the grid's vocabulary sizes.
    #[arg(long)]
    config: PathBuf,
    /// Apply `[profiles.NAME]` of the config on top of the rest.
    #[arg(long)]
    profile: Option<String>,
    /// Output root (overrides `[sweep] out`); the cache goes to OUT/<name>/cache/data.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Prepare these vocabulary sizes instead of the grid's (comma-separated or repeated).
    #[arg(long = "vocab-size", value_delimiter = ',')]
    vocab_sizes: Vec<usize>,
    /// Use this data cache instead of the sweep's.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    no_progress: bool,
}

fn parse_language(name: &str) -> Result<Language, String> {
    name.parse().map_err(|e: sweep_data::DataError| e.to_string())
}

/// Runs a `sweep data` subcommand.
pub fn run(args: DataArgs) -> anyhow::Result<()> {
    match args.command {
        DataCommand::Sample(a) => {
            let args = SampleArgs { language: a.language, bytes: a.bytes, seed: a.seed };
            sample(&args, &mut std::io::stdout().lock(), &mut std::io::stderr().lock())?;
        }
        DataCommand::Prepare(a) => {
            let plan = sweep_plan::load(&a.config, a.profile.as_deref())?;
            let config = plan.section::<DataConfig>()?.unwrap_or_default();
            let mut vocab_sizes = a.vocab_sizes.clone();
            if vocab_sizes.is_empty() {
                vocab_sizes = plan.points.iter().map(|p| p.model.vocab_size as usize).collect();
                vocab_sizes.sort_unstable();
                vocab_sizes.dedup();
            }
            let cache_dir =
                a.cache_dir.clone().unwrap_or_else(|| plan.sweep_dir(a.out.as_deref()).join("cache").join("data"));
            let base_dir = a.config.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let show_progress = !a.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
            prepare_all(&config, &vocab_sizes, &cache_dir, base_dir, show_progress, &mut std::io::stdout().lock())?;
        }
    }
    Ok(())
}
