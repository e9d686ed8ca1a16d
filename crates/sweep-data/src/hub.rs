//! Files from the Hugging Face Hub through `hf-hub`, in the standard cache layout, honouring
//! `HF_HOME`, `HF_HUB_CACHE`, `HF_ENDPOINT` and `HF_HUB_OFFLINE`; offline (or when the hub cannot
//! be reached) files come from the cache alone.

use std::fs;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Repo, RepoType};

use crate::error::DataError;

/// Where the hub is and where its cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSettings {
    /// Base URL, `https://huggingface.co` unless `HF_ENDPOINT` says otherwise.
    pub endpoint: String,
    /// The hub cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// Never contact the hub; use only the cache (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Show download progress bars.
    pub show_progress: bool,
}

impl HubSettings {
    /// Settings from the environment, as the Hugging Face libraries read them.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let cache_dir = var("HF_HUB_CACHE").map(PathBuf::from).unwrap_or_else(|| {
            var("HF_HOME")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|h| Path::new(&h).join(".cache/huggingface")))
                .unwrap_or_else(|| PathBuf::from(".cache/huggingface"))
                .join("hub")
        });
        let offline = var("HF_HUB_OFFLINE")
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        Self {
            endpoint: var("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".to_string()),
            cache_dir,
            offline,
            show_progress: false,
        }
    }
}

/// The files of a dataset revision matched by the patterns, all present in the local cache.
#[derive(Debug, Clone)]
pub(crate) struct HubSnapshot {
    /// The commit the revision resolved to.
    pub commit: String,
    /// Repository paths of the matched files, sorted.
    pub files: Vec<String>,
    /// `<cache>/datasets--org--name/snapshots/<commit>`.
    pub snapshot_dir: PathBuf,
}

impl HubSnapshot {
    /// Local paths of the matched files.
    pub fn local_paths(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.files.iter().map(|f| self.snapshot_dir.join(f))
    }
}

fn repo_dir(settings: &HubSettings, repo: &Repo) -> PathBuf {
    settings.cache_dir.join(repo.folder_name())
}

fn is_commit(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commit a revision points to in the cache, if any.
fn cached_commit(settings: &HubSettings, repo: &Repo, revision: &str) -> Option<String> {
    if is_commit(revision) {
        return Some(revision.to_string());
    }
    let path = repo_dir(settings, repo).join("refs").join(revision);
    fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn matches_any(patterns: &[glob::Pattern], file: &str) -> bool {
    let options = glob::MatchOptions { require_literal_separator: true, ..Default::default() };
    patterns.iter().any(|p| p.matches_with(file, options))
}

fn compile(patterns: &[String]) -> Vec<glob::Pattern> {
    // Patterns were checked when the configuration was read.
    patterns.iter().filter_map(|p| glob::Pattern::new(p).ok()).collect()
}

/// Why the hub could not be used, or `None` when the error is an answer (404, 401, ...) that
/// the cache must not paper over.
fn unreachable_reason(error: &ApiError) -> Option<String> {
    match error {
        ApiError::RequestError(e) => match e.as_ref() {
            ureq::Error::Transport(t) => Some(t.to_string()),
            ureq::Error::Status(..) => None,
        },
        ApiError::IoError(e) => Some(e.to_string()),
        _ => None,
    }
}

fn hub_error(repo: &str, revision: &str, message: String) -> DataError {
    DataError::Hub { repo: repo.to_string(), revision: revision.to_string(), message }
}

fn api(settings: &HubSettings) -> Result<hf_hub::api::sync::Api, ApiError> {
    // A token for private or gated repositories, as the Hugging Face libraries read it.
    let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
    let builder = ApiBuilder::new();
    let builder = if token.is_some() { builder.with_token(token) } else { builder };
    builder
        .with_endpoint(settings.endpoint.trim_end_matches('/').to_string())
        .with_cache_dir(settings.cache_dir.clone())
        .with_progress(settings.show_progress)
        .build()
}

/// The dataset files matching `patterns` at `revision`, downloaded into the cache if needed.
pub(crate) fn dataset_files(
    settings: &HubSettings,
    repo_id: &str,
    revision: &str,
    patterns: &[String],
) -> Result<HubSnapshot, DataError> {
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Dataset, revision.to_string());
    let compiled = compile(patterns);
    if settings.offline {
        return from_cache(settings, &repo, repo_id, revision, &compiled, "HF_HUB_OFFLINE is set");
    }
    let api = api(settings).map_err(|e| hub_error(repo_id, revision, format!("cannot start the hub client: {e}")))?;
    let repo_api = api.repo(repo.clone());
    let info = match repo_api.info() {
        Ok(info) => info,
        Err(e) => {
            return match unreachable_reason(&e) {
                Some(reason) => {
                    let why = format!("cannot reach {} ({reason})", settings.endpoint);
                    let snapshot = from_cache(settings, &repo, repo_id, revision, &compiled, &why)?;
                    tracing::warn!("hub {repo_id}: {why}; using the cached commit {}", snapshot.commit);
                    Ok(snapshot)
                }
                None => Err(hub_error(
                    repo_id,
                    revision,
                    format!("{e}; check the repository id and revision (and HF_TOKEN for private repositories)"),
                )),
            };
        }
    };
    let mut files: Vec<String> =
        info.siblings.iter().map(|s| s.rfilename.clone()).filter(|f| matches_any(&compiled, f)).collect();
    files.sort();
    if files.is_empty() {
        let listing: Vec<&str> = info.siblings.iter().take(20).map(|s| s.rfilename.as_str()).collect();
        return Err(hub_error(
            repo_id,
            revision,
            format!("no file matches {patterns:?} (the repository has: {}); change `files`", listing.join(", ")),
        ));
    }
    let snapshot_dir = repo_dir(settings, &repo).join("snapshots").join(&info.sha);
    for file in &files {
        if snapshot_dir.join(file).exists() {
            continue;
        }
        let local =
            repo_api.download(file).map_err(|e| hub_error(repo_id, revision, format!("downloading {file}: {e}")))?;
        if local != snapshot_dir.join(file) {
            // The file endpoint answered for another commit than the revision's metadata (the
            // branch moved between the two requests): fail rather than mix commits.
            return Err(hub_error(
                repo_id,
                revision,
                format!("{file} came from another commit than {}; retry", info.sha),
            ));
        }
    }
    write_ref(settings, &repo, revision, &info.sha)?;
    Ok(HubSnapshot { commit: info.sha, files, snapshot_dir })
}

/// Points `refs/<revision>` at `commit` (as the hub libraries do), via a temporary file.
fn write_ref(settings: &HubSettings, repo: &Repo, revision: &str, commit: &str) -> Result<(), DataError> {
    if is_commit(revision) {
        return Ok(());
    }
    let path = repo_dir(settings, repo).join("refs").join(revision);
    crate::cache::write_atomic(&path, commit.as_bytes())
}

fn from_cache(
    settings: &HubSettings,
    repo: &Repo,
    repo_id: &str,
    revision: &str,
    patterns: &[glob::Pattern],
    why: &str,
) -> Result<HubSnapshot, DataError> {
    let dir = repo_dir(settings, repo);
    let no_copy = |detail: &str| {
        hub_error(
            repo_id,
            revision,
            format!(
                "{why}, and the cache {} has {detail}; connect to the hub once (or set HF_ENDPOINT to a mirror) to fill the cache, or point HF_HOME at a cache that has it",
                settings.cache_dir.display()
            ),
        )
    };
    let commit = cached_commit(settings, repo, revision).ok_or_else(|| no_copy("no copy of this revision"))?;
    let snapshot_dir = dir.join("snapshots").join(&commit);
    let mut files = Vec::new();
    list_relative(&snapshot_dir, &snapshot_dir, &mut files);
    files.retain(|f| matches_any(patterns, f));
    files.sort();
    if files.is_empty() {
        return Err(no_copy("no cached file matching the patterns"));
    }
    Ok(HubSnapshot { commit, files, snapshot_dir })
}

fn list_relative(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            list_relative(root, &path, out);
        } else if path.exists() {
            if let Ok(rel) = path.strip_prefix(root) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
}

/// One file of a model repository (e.g. `tokenizer.json`), from the cache or downloaded.
pub(crate) fn model_file(
    settings: &HubSettings,
    repo_id: &str,
    revision: &str,
    file: &str,
) -> Result<PathBuf, DataError> {
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string());
    let cached = || {
        cached_commit(settings, &repo, revision)
            .map(|c| repo_dir(settings, &repo).join("snapshots").join(c).join(file))
            .filter(|p| p.exists())
    };
    let no_copy = |why: String| {
        hub_error(
            repo_id,
            revision,
            format!(
                "{why}, and the cache {} has no {file}; connect to the hub once (or set HF_ENDPOINT to a mirror) to fill the cache",
                settings.cache_dir.display()
            ),
        )
    };
    if settings.offline {
        return cached().ok_or_else(|| no_copy("HF_HUB_OFFLINE is set".into()));
    }
    let api = api(settings).map_err(|e| hub_error(repo_id, revision, format!("cannot start the hub client: {e}")))?;
    // Like the hub libraries: a file already cached for this revision is used as it is.
    match api.repo(repo.clone()).get(file) {
        Ok(path) => Ok(path),
        Err(e) => match unreachable_reason(&e) {
            Some(reason) => {
                let why = format!("cannot reach {} ({reason})", settings.endpoint);
                let path = cached().ok_or_else(|| no_copy(why.clone()))?;
                tracing::warn!("hub {repo_id}: {why}; using the cached {file}");
                Ok(path)
            }
            None => Err(hub_error(repo_id, revision, format!("{file}: {e}; check the repository id and revision"))),
        },
    }
}
