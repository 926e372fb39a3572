//! Checkpoints from the Hugging Face hub, stored in the standard cache
//! (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`) through `hf-hub`.
//!
//! Only the files a checkpoint needs are fetched: `config.json`, the tokenizer and generation
//! side files that exist, and `model.safetensors` or the shard index plus every shard it names.
//!
//! Resume: hf-hub 1.0 writes `blobs/<etag>.incomplete` from byte 0 on every attempt. Weight files
//! are therefore fetched here in ranged requests (`Range: bytes=a-b`, through hf-hub's
//! `download_file_to_bytes(range)`), appended to that same `.incomplete` file, so an interrupted
//! download (also one left by Python's huggingface_hub, which uses the same name) continues where
//! it stopped. A resumed file whose ETag is a sha256 (every LFS file) is checked against it before
//! it is moved into place. hf-hub then links the finished blob into `snapshots/<commit>/`.
//! Two unmask processes downloading the same file at once are not coordinated (hf-hub's lock is
//! not taken for ranged fetches); the second to finish fails its size check and can be rerun.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hf_hub::progress::{DownloadEvent, ProgressEvent, ProgressHandler};
use hf_hub::repository::FileMetadataInfo;
use hf_hub::{HFClient, HFClientSync, HFError, HFRepositorySync, RepoTypeModel};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Metadata files fetched when the repository has them.
pub const SIDE_FILES: &[&str] = &[
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// Bytes per ranged request for weight files: the unit of resume and of memory use.
const DEFAULT_CHUNK: u64 = 64 << 20;
/// Free space kept beyond what the files need.
const DISK_MARGIN: u64 = 64 << 20;

/// How far a download has come, reported per file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Repository path of the file, e.g. `model-00001-of-00004.safetensors`.
    pub file: String,
    pub bytes_done: u64,
    /// 0 when the server did not say.
    pub bytes_total: u64,
}

/// What can go wrong talking to the hub; each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("`{0}` is not a model folder, `embedded`, a preset name (see `unmask models`) or a hub id of the form org/name")]
    NotAModel(String),

    #[error("{repo}: HF_HUB_OFFLINE is set and {missing} is not in the cache ({cache}); unset HF_HUB_OFFLINE or download it first with `unmask download {repo}`")]
    OfflineNotCached {
        repo: String,
        missing: String,
        cache: PathBuf,
    },

    #[error("cannot reach {url}: {problem}; check the network (or HF_ENDPOINT), or set HF_HUB_OFFLINE=1 to use only models already in {cache}")]
    Unreachable {
        url: String,
        problem: String,
        cache: PathBuf,
    },

    #[error("{url}: access denied (HTTP {status}); {repo} is gated or private: accept its terms on the hub, then set HF_TOKEN to a token with read access")]
    Unauthorized {
        repo: String,
        url: String,
        status: u16,
    },

    #[error("{repo}: {file} not found at revision `{revision}` ({url}); check the hub id (org/name) and --revision")]
    NotFound {
        repo: String,
        file: String,
        revision: String,
        url: String,
    },

    #[error("not enough disk space in {folder}: {need_mib} MiB needed, {free_mib} MiB free; free some space or point HF_HOME at a larger disk")]
    DiskFull {
        folder: PathBuf,
        need_mib: u64,
        free_mib: u64,
    },

    #[error("{file}: {problem}")]
    BadContent { file: PathBuf, problem: String },

    #[error("{url}: {problem}")]
    Http { url: String, problem: String },
}

/// Where and how to talk to the hub. `None` fields fall back to hf-hub's environment handling
/// (`HF_ENDPOINT`, `HF_TOKEN` or the token file, `HF_HUB_CACHE`/`HF_HOME`).
#[derive(Clone, Debug, Default)]
pub struct HubOptions {
    pub endpoint: Option<String>,
    pub cache_dir: Option<PathBuf>,
    pub token: Option<String>,
    /// Never touch the network (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Branch, tag or commit; `main` when absent.
    pub revision: Option<String>,
    /// Bytes per ranged request for weight files; 64 MiB when absent.
    pub chunk_bytes: Option<u64>,
}

impl HubOptions {
    /// Options from the environment: hf-hub reads the endpoint, token and cache itself; this adds
    /// `HF_HUB_OFFLINE`, which hf-hub 1.0 does not read.
    pub fn from_env() -> Self {
        let offline = std::env::var("HF_HUB_OFFLINE")
            .map(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "1" | "true" | "yes" | "on"
                )
            })
            .unwrap_or(false);
        HubOptions {
            offline,
            ..HubOptions::default()
        }
    }
}

/// Whether `s` has the shape of a hub id, `org/name`.
pub fn is_hub_id(s: &str) -> bool {
    let ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    match s.split_once('/') {
        Some((org, name)) => ok(org) && ok(name) && !name.contains('/'),
        None => false,
    }
}

/// Resolves a `--model` argument: an existing folder, `embedded`, a preset key, or a hub id
/// (opened from the cache without network when complete there, else downloaded).
pub fn resolve_model(
    arg: &str,
    opts: &HubOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<PathBuf> {
    if arg == "embedded" {
        return Ok(crate::model::embedded_dir());
    }
    let path = Path::new(arg);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let id = match crate::presets::find(arg) {
        Some(p) => p.hub_id.to_string(),
        None if is_hub_id(arg) => arg.to_string(),
        None => return Err(HubError::NotAModel(arg.to_string()).into()),
    };
    let hub = Hub::new(opts.clone())?;
    match hub.cached(&id)? {
        Some(dir) => Ok(dir),
        None => hub.download(&id, progress),
    }
}

/// A configured hub client.
pub struct Hub {
    client: HFClientSync,
    cache_dir: PathBuf,
    endpoint: String,
    opts: HubOptions,
}

impl Hub {
    pub fn new(opts: HubOptions) -> Result<Self> {
        let mut b = HFClient::builder();
        if let Some(e) = &opts.endpoint {
            b = b.endpoint(e.clone());
        }
        if let Some(d) = &opts.cache_dir {
            b = b.cache_dir(d.clone());
        }
        if let Some(t) = &opts.token {
            b = b.token(t.clone());
        }
        let client = b.build().map_err(|e| HubError::Http {
            url: opts.endpoint.clone().unwrap_or_default(),
            problem: e.to_string(),
        })?;
        let cache_dir = client.cache_dir().to_path_buf();
        let endpoint = client.endpoint().to_string();
        let client = HFClientSync::from_inner(client).map_err(|e| HubError::Http {
            url: endpoint.clone(),
            problem: e.to_string(),
        })?;
        Ok(Hub {
            client,
            cache_dir,
            endpoint,
            opts,
        })
    }

    /// The hub cache folder in use.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    fn revision(&self) -> String {
        self.opts.revision.clone().unwrap_or_else(|| "main".into())
    }

    fn repo(&self, id: &str) -> Result<HFRepositorySync<RepoTypeModel>> {
        if !is_hub_id(id) {
            return Err(HubError::NotAModel(id.to_string()).into());
        }
        let (org, name) = hf_hub::split_id(id);
        Ok(self.client.model(org, name))
    }

    /// The snapshot folder of `id` when config, tokenizer and every weight file are in the cache
    /// for the revision; no network is used.
    pub fn cached(&self, id: &str) -> Result<Option<PathBuf>> {
        Ok(self.cached_or_missing(id)?.ok())
    }

    /// `Ok(folder)` when complete in the cache, else `Err(first missing file)`.
    fn cached_or_missing(&self, id: &str) -> Result<std::result::Result<PathBuf, String>> {
        let repo = self.repo(id)?;
        let rev = self.revision();
        let local = |f: &str| {
            repo.download_file()
                .filename(f)
                .revision(rev.clone())
                .local_files_only(true)
                .send()
                .ok()
        };
        let Some(config) = local("config.json") else {
            return Ok(Err("config.json".into()));
        };
        let Some(folder) = config.parent().map(Path::to_path_buf) else {
            return Ok(Err("config.json".into()));
        };
        if local("tokenizer.json").is_none() && local("vocab.json").is_none() {
            return Ok(Err("tokenizer.json".into()));
        }
        if local("model.safetensors").is_some() {
            return Ok(Ok(folder));
        }
        let Some(index) = local("model.safetensors.index.json") else {
            return Ok(Err("model.safetensors".into()));
        };
        for shard in shard_names(&index)? {
            if local(&shard).is_none() {
                return Ok(Err(shard));
            }
        }
        Ok(Ok(folder))
    }

    /// Downloads what `id` needs (or finds it cached) and returns the snapshot folder.
    pub fn download(&self, id: &str, progress: &mut dyn FnMut(&Progress)) -> Result<PathBuf> {
        if self.opts.offline {
            return match self.cached_or_missing(id)? {
                Ok(dir) => Ok(dir),
                Err(missing) => Err(HubError::OfflineNotCached {
                    repo: id.into(),
                    missing,
                    cache: self.cache_dir.clone(),
                }
                .into()),
            };
        }
        let repo = self.repo(id)?;
        let rev = self.revision();
        let config = self.fetch_small(&repo, id, &rev, "config.json", progress)?;
        let folder =
            config
                .parent()
                .map(Path::to_path_buf)
                .ok_or_else(|| HubError::BadContent {
                    file: config.clone(),
                    problem: "no snapshot folder".into(),
                })?;
        // Every later request names the commit config.json came from, so the files match even if
        // the branch moves meanwhile; hf-hub answers those from the cache without a request.
        let commit = folder
            .file_name()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or(rev);
        for f in SIDE_FILES {
            match self.fetch_small(&repo, id, &commit, f, progress) {
                Ok(_) => {}
                Err(Error::Hub(HubError::NotFound { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        let weights = self.weight_list(&repo, id, &commit, &folder, progress)?;
        let todo: Vec<&FileMetadataInfo> = weights
            .iter()
            .filter(|m| !folder.join(&m.filename).exists())
            .collect();
        let blobs = self.repo_folder(id).join("blobs");
        let need: u64 = todo
            .iter()
            .map(|m| m.file_size.saturating_sub(partial_len(&blobs, m)))
            .sum();
        check_space(&self.cache_dir, need)?;
        for meta in todo {
            self.fetch_weight(&repo, id, &commit, &blobs, meta, progress)?;
            self.fetch_small(&repo, id, &commit, &meta.filename, &mut |_| {})?;
        }
        Ok(folder)
    }

    /// `models--org--name` inside the cache.
    fn repo_folder(&self, id: &str) -> PathBuf {
        self.cache_dir
            .join(format!("models--{}", id.replace('/', "--")))
    }

    /// A small file through hf-hub's own cache download.
    fn fetch_small(
        &self,
        repo: &HFRepositorySync<RepoTypeModel>,
        id: &str,
        rev: &str,
        file: &str,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<PathBuf> {
        let path = repo
            .download_file()
            .filename(file)
            .revision(rev.to_string())
            .send()
            .map_err(|e| self.map_err(e, id, rev, file))?;
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        progress(&Progress {
            file: file.into(),
            bytes_done: size,
            bytes_total: size,
        });
        Ok(path)
    }

    /// Sizes and ETags of the weight files: `model.safetensors`, or the index's shards.
    fn weight_list(
        &self,
        repo: &HFRepositorySync<RepoTypeModel>,
        id: &str,
        commit: &str,
        folder: &Path,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<Vec<FileMetadataInfo>> {
        let meta = |f: &str| {
            repo.get_file_metadata()
                .filepath(f)
                .revision(commit)
                .send()
                .map_err(|e| self.map_err(e, id, commit, f))
        };
        // A complete single-file checkpoint needs no request at all.
        if folder.join("model.safetensors").exists() {
            return Ok(Vec::new());
        }
        if !folder.join("model.safetensors.index.json").exists() {
            match meta("model.safetensors") {
                Ok(m) => return Ok(vec![m]),
                Err(Error::Hub(HubError::NotFound { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        let index =
            match self.fetch_small(repo, id, commit, "model.safetensors.index.json", progress) {
                Err(Error::Hub(HubError::NotFound {
                    repo,
                    revision,
                    url,
                    ..
                })) => {
                    return Err(HubError::NotFound {
                        repo,
                        file: "model.safetensors (or model.safetensors.index.json)".into(),
                        revision,
                        url,
                    }
                    .into())
                }
                r => r?,
            };
        let mut out = Vec::new();
        for shard in shard_names(&index)? {
            if folder.join(&shard).exists() {
                continue;
            }
            out.push(meta(&shard)?);
        }
        // Servers that omit Content-Length: fall back to the index's total for the space check.
        if !out.is_empty() && out.iter().all(|m| m.file_size == 0) {
            if let Some(total) = index_total_size(&index) {
                let n = out.len() as u64;
                for m in &mut out {
                    m.file_size = total / n;
                }
            }
        }
        Ok(out)
    }

    /// A weight file in ranged requests appended to `blobs/<etag>.incomplete`, resumable.
    fn fetch_weight(
        &self,
        repo: &HFRepositorySync<RepoTypeModel>,
        id: &str,
        commit: &str,
        blobs: &Path,
        meta: &FileMetadataInfo,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<()> {
        let blob = blobs.join(&meta.etag);
        let size = meta.file_size;
        if blob.exists() || size == 0 {
            // Already whole, or a size we cannot range over: hf-hub's plain download does it.
            return Ok(());
        }
        std::fs::create_dir_all(blobs).map_err(|e| Error::io(blobs, e))?;
        let part = PathBuf::from(format!("{}.incomplete", blob.display()));
        let mut done = partial_len(blobs, meta);
        if done > size {
            std::fs::remove_file(&part).map_err(|e| Error::io(&part, e))?;
            done = 0;
        }
        let resumed = done > 0;
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)
            .map_err(|e| Error::io(&part, e))?;
        let chunk = self.opts.chunk_bytes.unwrap_or(DEFAULT_CHUNK).max(1);
        progress(&Progress {
            file: meta.filename.clone(),
            bytes_done: done,
            bytes_total: size,
        });
        while done < size {
            let end = (done + chunk).min(size);
            let counter = Arc::new(AtomicU64::new(0));
            let handler = Counter(counter.clone());
            let bytes = with_ticks(
                || {
                    repo.download_file_to_bytes()
                        .filename(meta.filename.clone())
                        .revision(commit.to_string())
                        .range(done..end)
                        .progress(handler)
                        .send()
                },
                &mut || {
                    let now = done + counter.load(Ordering::Relaxed).min(end - done);
                    progress(&Progress {
                        file: meta.filename.clone(),
                        bytes_done: now,
                        bytes_total: size,
                    })
                },
            )
            .map_err(|e| self.map_err(e, id, commit, &meta.filename))?;
            let got = bytes.len() as u64;
            if got == end - done {
                out.write_all(&bytes)
                    .map_err(|e| write_err(&part, e, blobs))?;
                done = end;
            } else if got == size {
                // The server ignored the range and sent the whole file.
                out.set_len(0).map_err(|e| Error::io(&part, e))?;
                out.write_all(&bytes)
                    .map_err(|e| write_err(&part, e, blobs))?;
                done = size;
            } else {
                return Err(HubError::Http {
                    url: format!("{}/{id}/resolve/{commit}/{}", self.endpoint, meta.filename),
                    problem: format!("asked for bytes {done}..{end}, received {got}"),
                }
                .into());
            }
            progress(&Progress {
                file: meta.filename.clone(),
                bytes_done: done,
                bytes_total: size,
            });
        }
        out.sync_all().map_err(|e| Error::io(&part, e))?;
        drop(out);
        if resumed && is_sha256(&meta.etag) {
            let sum = sha256_file(&part)?;
            if sum != meta.etag {
                let _ = std::fs::remove_file(&part);
                return Err(HubError::BadContent {
                    file: part,
                    problem: format!("resumed download has sha256 {sum}, the hub says {}; removed, run the download again", meta.etag),
                }
                .into());
            }
        }
        std::fs::rename(&part, &blob).map_err(|e| Error::io(&blob, e))?;
        Ok(())
    }

    fn map_err(&self, e: HFError, repo: &str, rev: &str, file: &str) -> Error {
        let url = format!("{}/{repo}/resolve/{rev}/{file}", self.endpoint);
        let not_found = || HubError::NotFound {
            repo: repo.into(),
            file: file.into(),
            revision: rev.into(),
            url: url.clone(),
        };
        let err = match e {
            HFError::AuthRequired { context } | HFError::Forbidden { context } => {
                // The hub answers 401 for a repository that does not exist when no token is sent.
                if context.error_code.as_deref() == Some("RepoNotFound") {
                    HubError::NotFound {
                        repo: repo.into(),
                        file: format!("{file} (the repository does not exist, or is private: then set HF_TOKEN)"),
                        revision: rev.into(),
                        url: context.url.clone(),
                    }
                } else {
                    HubError::Unauthorized {
                        repo: repo.into(),
                        url: context.url.clone(),
                        status: context.status.as_u16(),
                    }
                }
            }
            HFError::RepoNotFound { .. }
            | HFError::EntryNotFound { .. }
            | HFError::RevisionNotFound { .. } => not_found(),
            HFError::Request { source, url: u } => HubError::Unreachable {
                url: u.unwrap_or(url),
                problem: error_chain(&source),
                cache: self.cache_dir.clone(),
            },
            HFError::LocalEntryNotFound { .. } => HubError::OfflineNotCached {
                repo: repo.into(),
                missing: file.into(),
                cache: self.cache_dir.clone(),
            },
            HFError::Io(io) => return write_err(&self.cache_dir, io, &self.cache_dir),
            other => HubError::Http {
                url,
                problem: other.to_string(),
            },
        };
        err.into()
    }
}

impl From<HubError> for Error {
    fn from(e: HubError) -> Self {
        Error::Hub(e)
    }
}

/// Feeds hf-hub's per-chunk byte count to a counter the caller's thread can read.
struct Counter(Arc<AtomicU64>);

impl ProgressHandler for Counter {
    fn on_progress(&self, event: &ProgressEvent) {
        match event {
            ProgressEvent::Download(DownloadEvent::Progress { files }) => {
                if let Some(f) = files.last() {
                    self.0.store(f.bytes_completed, Ordering::Relaxed);
                }
            }
            ProgressEvent::Download(DownloadEvent::AggregateProgress {
                bytes_completed, ..
            }) => {
                self.0.store(*bytes_completed, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// Runs `work` on a scoped thread, calling `tick` about five times a second until it returns, so
/// a progress callback that need not be `Send` still sees bytes arrive.
fn with_ticks<T: Send>(work: impl FnOnce() -> T + Send, tick: &mut dyn FnMut()) -> T {
    std::thread::scope(|s| {
        let h = s.spawn(work);
        while !h.is_finished() {
            std::thread::park_timeout(Duration::from_millis(200));
            tick();
        }
        match h.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

#[cfg(test)]
use crate::model::weights::is_plain_file_name;
pub use crate::model::weights::shard_names;

fn index_total_size(index: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(index).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("metadata")?.get("total_size")?.as_u64()
}

fn partial_len(blobs: &Path, meta: &FileMetadataInfo) -> u64 {
    std::fs::metadata(format!("{}.incomplete", blobs.join(&meta.etag).display()))
        .map(|m| m.len())
        .unwrap_or(0)
}

fn is_sha256(etag: &str) -> bool {
    etag.len() == 64 && etag.chars().all(|c| c.is_ascii_hexdigit())
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(path, e))?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn write_err(file: &Path, e: std::io::Error, folder: &Path) -> Error {
    if e.kind() == std::io::ErrorKind::StorageFull {
        let free = free_bytes(folder).unwrap_or(0);
        return HubError::DiskFull {
            folder: folder.to_path_buf(),
            need_mib: 0,
            free_mib: free >> 20,
        }
        .into();
    }
    Error::io(file, e)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Fails when the disk holding `folder` has less than `need` bytes (plus a margin) free.
pub fn check_space(folder: &Path, need: u64) -> Result<()> {
    if need == 0 {
        return Ok(());
    }
    let Some(free) = free_bytes(folder) else {
        return Ok(());
    };
    if need + DISK_MARGIN > free {
        return Err(HubError::DiskFull {
            folder: folder.to_path_buf(),
            need_mib: need.div_ceil(1 << 20),
            free_mib: free >> 20,
        }
        .into());
    }
    Ok(())
}

/// Free bytes on the file system of `folder` (or its nearest existing ancestor); `None` where the
/// system cannot say.
pub fn free_bytes(folder: &Path) -> Option<u64> {
    let existing = folder.ancestors().find(|p| p.exists())?;
    fs4::available_space(existing).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids() {
        assert!(is_hub_id("JetLM/SDAR-1.7B-Chat"));
        assert!(is_hub_id("fredzzp/open-dcoder-0.5B"));
        assert!(!is_hub_id("embedded"));
        assert!(!is_hub_id("a/b/c"));
        assert!(!is_hub_id("../x"));
        assert!(!is_hub_id("/abs"));
    }

    #[test]
    fn shard_names_stay_inside() {
        assert!(is_plain_file_name("model-00001-of-00002.safetensors"));
        assert!(is_plain_file_name("sub/model.safetensors"));
        assert!(!is_plain_file_name("../evil"));
        assert!(!is_plain_file_name("/etc/passwd"));
        assert!(!is_plain_file_name("a//b"));
    }

    #[test]
    fn space_check_names_the_folder() {
        let err = check_space(Path::new("/"), u64::MAX / 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not enough disk space in /"), "{err}");
    }
}
