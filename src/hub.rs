//! Checkpoints from the Hugging Face hub, stored in the standard cache
//! (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
//!
//! Only the files a checkpoint needs are fetched: `config.json`, the tokenizer and generation
//! side files that exist, and `model.safetensors` or the shard index plus every shard it names.
//!
//! hf-hub speaks HTTP (metadata requests, byte streams, retries, tokens); the cache layout
//! (`blobs/<etag>`, `snapshots/<commit>/<file>`, `refs/<revision>`) is written here, because
//! hf-hub 1.0 joins the server's `ETag` and `X-Repo-Commit` headers into paths unchecked: a
//! hostile or intercepted endpoint could write anywhere. Every path part that comes from the
//! server or the user is checked first ([`check_etag`], [`check_commit`], [`check_revision`],
//! plain file names), so downloads write only under the cache root.
//!
//! Every request is bounded: a connect timeout, and an idle timeout for each wait on the
//! server (the answer to a request, and every gap between body bytes). Defaults 10 s and 30 s;
//! `HF_HUB_ETAG_TIMEOUT` and `HF_HUB_DOWNLOAD_TIMEOUT` (seconds, as in Python's
//! huggingface_hub) change them.
//!
//! Resume: weight files are streamed in ranged requests (`Range: bytes=a-b`) appended to
//! `blobs/<etag>.incomplete` as bytes arrive, so an interrupted or timed-out download (also one
//! left by Python's huggingface_hub, which uses the same name) continues where it stopped. A
//! resumed file whose ETag is a sha256 (every LFS file) is checked against it before it is moved
//! into place. Two unmask processes downloading the same file at once are not coordinated; the
//! second to finish fails its size check and can be rerun.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use hf_hub::repository::FileMetadataInfo;
use hf_hub::{HFClient, HFError, HFRepository, RepoTypeModel};
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
/// Largest side file (config, tokenizer …) accepted: a server announcing more is not a hub.
const SIDE_FILE_LIMIT: u64 = 512 << 20;
/// Waiting for a TCP (and TLS) connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Waiting for an answer, or for the next bytes of a body.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

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

    #[error("{host}: {what} timed out: nothing received for {secs} s; check the network or HF_ENDPOINT, or set {var} (seconds) to wait longer")]
    TimedOut {
        host: String,
        what: String,
        secs: f64,
        var: &'static str,
    },

    #[error("{url}: the server sent {header} `{value}`, expected {expected}; nothing was written (is HF_ENDPOINT a real hub?)")]
    Hostile {
        url: String,
        header: &'static str,
        value: String,
        expected: &'static str,
    },

    #[error("revision `{0}` is not a branch, tag or commit name (letters, digits, `-`, `_`, `.`, parts separated by `/`, no `..`, not absolute)")]
    BadRevision(String),

    #[error("{var}={value}: expected a number of seconds greater than 0")]
    BadTimeout { var: &'static str, value: String },
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
    /// Waiting for a connection; [`DEFAULT_CONNECT_TIMEOUT`] when absent.
    pub connect_timeout: Option<Duration>,
    /// Waiting for an answer or the next body bytes; [`DEFAULT_IDLE_TIMEOUT`] when absent.
    pub idle_timeout: Option<Duration>,
}

impl HubOptions {
    /// Options from the environment: hf-hub reads the endpoint, token and cache itself; this adds
    /// `HF_HUB_OFFLINE`, which hf-hub 1.0 does not read, and the timeouts
    /// (`HF_HUB_ETAG_TIMEOUT`: connecting, `HF_HUB_DOWNLOAD_TIMEOUT`: each wait for data).
    pub fn from_env() -> Result<Self> {
        let secs = |var: &'static str| -> Result<Option<Duration>> {
            match std::env::var(var) {
                Err(_) => Ok(None),
                Ok(v) => match v.trim().parse::<f64>() {
                    Ok(s) if s > 0.0 && s.is_finite() && s < 1e9 => {
                        Ok(Some(Duration::from_secs_f64(s)))
                    }
                    _ => Err(HubError::BadTimeout { var, value: v }.into()),
                },
            }
        };
        Ok(HubOptions {
            connect_timeout: secs("HF_HUB_ETAG_TIMEOUT")?,
            idle_timeout: secs("HF_HUB_DOWNLOAD_TIMEOUT")?,
            ..Self::from_env_offline()
        })
    }

    fn from_env_offline() -> Self {
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
    client: HFClient,
    /// Drives hf-hub's async requests; one thread, so no request outlives the call that made it.
    rt: tokio::runtime::Runtime,
    cache_dir: PathBuf,
    endpoint: String,
    /// `host:port` of the endpoint, for timeout messages.
    host: String,
    connect_timeout: Duration,
    idle_timeout: Duration,
    opts: HubOptions,
}

impl Hub {
    pub fn new(opts: HubOptions) -> Result<Self> {
        let connect_timeout = opts.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let idle_timeout = opts.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT);
        let http = |e: &dyn std::fmt::Display| HubError::Http {
            url: opts.endpoint.clone().unwrap_or_default(),
            problem: e.to_string(),
        };
        // hf-hub's own client has no timeouts; this one bounds connecting and every read.
        let agent = format!("unmask/{}; hf-hub/1.0", env!("CARGO_PKG_VERSION"));
        let reqwest_client = reqwest::Client::builder()
            .user_agent(agent)
            .connect_timeout(connect_timeout)
            .read_timeout(idle_timeout)
            .build()
            .map_err(|e| http(&e))?;
        let mut b = HFClient::builder()
            .client(reqwest_client)
            // Retries multiply every timeout; two are enough for a flaky network.
            .retry_max_attempts(2);
        if let Some(e) = &opts.endpoint {
            b = b.endpoint(e.clone());
        }
        if let Some(d) = &opts.cache_dir {
            b = b.cache_dir(d.clone());
        }
        if let Some(t) = &opts.token {
            b = b.token(t.clone());
        }
        let client = b.build().map_err(|e| http(&e))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| http(&e))?;
        let cache_dir = client.cache_dir().to_path_buf();
        let endpoint = client.endpoint().to_string();
        let host = endpoint
            .split_once("://")
            .map_or(endpoint.as_str(), |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or("")
            .to_string();
        Ok(Hub {
            client,
            rt,
            cache_dir,
            endpoint,
            host,
            connect_timeout,
            idle_timeout,
            opts,
        })
    }

    /// The hub cache folder in use.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    fn revision(&self) -> Result<String> {
        let rev = self.opts.revision.clone().unwrap_or_else(|| "main".into());
        check_revision(&rev)?;
        Ok(rev)
    }

    fn repo(&self, id: &str) -> Result<HFRepository<RepoTypeModel>> {
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
        if !is_hub_id(id) {
            return Err(HubError::NotAModel(id.to_string()).into());
        }
        let rev = self.revision()?;
        let repo = self.repo_folder(id);
        let commit = if is_commit(&rev) {
            Some(rev.clone())
        } else {
            std::fs::read_to_string(repo.join("refs").join(&rev))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|c| is_commit(c))
        };
        let Some(commit) = commit else {
            return Ok(Err("config.json".into()));
        };
        let folder = repo.join("snapshots").join(commit);
        let local = |f: &str| Some(folder.join(f)).filter(|p| p.exists());
        if local("config.json").is_none() {
            return Ok(Err("config.json".into()));
        }
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
        let rev = self.revision()?;
        let (config, commit) = self.fetch_small(&repo, id, &rev, "config.json", progress)?;
        let folder = config
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.repo_folder(id).join("snapshots").join(&commit));
        if !is_commit(&rev) {
            self.write_ref(id, &rev, &commit)?;
        }
        // Every later request names the commit config.json came from, so the files match even if
        // the branch moves meanwhile.
        for f in SIDE_FILES {
            if folder.join(f).exists() {
                continue;
            }
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
        let need = todo.iter().fold(0u64, |acc, m| {
            acc.saturating_add(m.file_size.saturating_sub(partial_len(&blobs, m)))
        });
        check_space(&self.cache_dir, need)?;
        for meta in todo {
            self.fetch_weight(&repo, id, &commit, &blobs, meta, progress)?;
            link(&blobs, &folder, &meta.filename, &meta.etag)?;
        }
        Ok(folder)
    }

    /// `models--org--name` inside the cache.
    fn repo_folder(&self, id: &str) -> PathBuf {
        self.cache_dir
            .join(format!("models--{}", id.replace('/', "--")))
    }

    fn url(&self, id: &str, rev: &str, file: &str) -> String {
        format!("{}/{id}/resolve/{rev}/{file}", self.endpoint)
    }

    /// `refs/<revision>` holds the commit the branch or tag pointed at.
    fn write_ref(&self, id: &str, rev: &str, commit: &str) -> Result<()> {
        let path = self.repo_folder(id).join("refs").join(rev);
        if std::fs::read_to_string(&path).is_ok_and(|s| s.trim() == commit) {
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        std::fs::write(&path, commit).map_err(|e| write_err(&path, e, &self.cache_dir))
    }

    /// Runs one request future to completion, or fails after `limit` with a message naming the
    /// host and what was awaited.
    fn bounded<T>(
        &self,
        limit: Duration,
        what: &str,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T> {
        self.rt
            .block_on(async { tokio::time::timeout(limit, fut).await })
            .map_err(|_| self.timed_out(what, limit))
    }

    fn timed_out(&self, what: &str, limit: Duration) -> Error {
        HubError::TimedOut {
            host: self.host.clone(),
            what: what.to_string(),
            secs: (limit.as_secs_f64() * 10.0).round() / 10.0,
            var: if limit == self.idle_timeout {
                "HF_HUB_DOWNLOAD_TIMEOUT"
            } else {
                "HF_HUB_ETAG_TIMEOUT and HF_HUB_DOWNLOAD_TIMEOUT"
            },
        }
        .into()
    }

    /// Size, ETag and commit of a file, with both checked before they can name a path.
    fn metadata(
        &self,
        repo: &HFRepository<RepoTypeModel>,
        id: &str,
        rev: &str,
        file: &str,
    ) -> Result<FileMetadataInfo> {
        let fut = repo.get_file_metadata().filepath(file).revision(rev).send();
        let meta = self
            .bounded(
                self.connect_timeout + self.idle_timeout,
                &format!("metadata of {file} (HEAD request)"),
                fut,
            )?
            .map_err(|e| self.map_err(e, id, rev, file))?;
        let url = self.url(id, rev, file);
        check_etag(&meta.etag, &url)?;
        check_commit(&meta.commit_hash, &url)?;
        Ok(meta)
    }

    /// Streams `range` of `file` (all of it when `None`) into `out`, at most `limit` bytes,
    /// calling `on_bytes` with the running count. Every wait for data is bounded by the idle
    /// timeout; bytes received before a failure stay in `out`.
    #[allow(clippy::too_many_arguments)]
    fn stream_into(
        &self,
        repo: &HFRepository<RepoTypeModel>,
        id: &str,
        rev: &str,
        file: &str,
        range: Option<std::ops::Range<u64>>,
        limit: u64,
        out: &mut std::fs::File,
        part: &Path,
        on_bytes: &mut dyn FnMut(u64),
    ) -> Result<u64> {
        let fut = repo
            .download_file_stream()
            .filename(file)
            .revision(rev.to_string())
            .maybe_range(range)
            .send();
        let (_, mut stream) = self
            .bounded(
                self.connect_timeout + self.idle_timeout,
                &format!("download of {file}"),
                fut,
            )?
            .map_err(|e| self.map_err(e, id, rev, file))?;
        let mut got = 0u64;
        loop {
            let what = format!("download of {file} (stalled after {got} bytes)");
            match self.bounded(self.idle_timeout, &what, stream.next())? {
                None => return Ok(got),
                Some(Err(e)) => return Err(self.map_err(e, id, rev, file)),
                Some(Ok(bytes)) => {
                    got = got.saturating_add(bytes.len() as u64);
                    if got > limit {
                        return Err(HubError::Http {
                            url: self.url(id, rev, file),
                            problem: format!(
                                "the server sent more than the {limit} bytes asked for"
                            ),
                        }
                        .into());
                    }
                    out.write_all(&bytes)
                        .map_err(|e| write_err(part, e, &self.cache_dir))?;
                    on_bytes(got);
                }
            }
        }
    }

    /// A small file: metadata, then the whole body into `blobs/<etag>`, linked from the snapshot.
    /// Returns the snapshot path and the commit.
    fn fetch_small(
        &self,
        repo: &HFRepository<RepoTypeModel>,
        id: &str,
        rev: &str,
        file: &str,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<(PathBuf, String)> {
        let meta = self.metadata(repo, id, rev, file)?;
        if meta.file_size > SIDE_FILE_LIMIT {
            return Err(HubError::Http {
                url: self.url(id, rev, file),
                problem: format!(
                    "announced {} bytes; side files over {} MiB are refused",
                    meta.file_size,
                    SIDE_FILE_LIMIT >> 20
                ),
            }
            .into());
        }
        let repo_dir = self.repo_folder(id);
        let blobs = repo_dir.join("blobs");
        let folder = repo_dir.join("snapshots").join(&meta.commit_hash);
        let blob = blobs.join(&meta.etag);
        if !blob.exists() {
            std::fs::create_dir_all(&blobs).map_err(|e| Error::io(&blobs, e))?;
            let part = blobs.join(format!("{}.incomplete", meta.etag));
            let mut out = std::fs::File::create(&part).map_err(|e| Error::io(&part, e))?;
            let got = self.stream_into(
                repo,
                id,
                &meta.commit_hash,
                file,
                None,
                SIDE_FILE_LIMIT,
                &mut out,
                &part,
                &mut |_| {},
            )?;
            out.sync_all().map_err(|e| Error::io(&part, e))?;
            drop(out);
            if is_sha256(&meta.etag) {
                verify_sha256(&part, &meta.etag)?;
            }
            std::fs::rename(&part, &blob).map_err(|e| Error::io(&blob, e))?;
            progress(&Progress {
                file: file.into(),
                bytes_done: got,
                bytes_total: got,
            });
        }
        link(&blobs, &folder, file, &meta.etag)?;
        Ok((folder.join(file), meta.commit_hash))
    }

    /// Sizes and ETags of the weight files: `model.safetensors`, or the index's shards.
    fn weight_list(
        &self,
        repo: &HFRepository<RepoTypeModel>,
        id: &str,
        commit: &str,
        folder: &Path,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<Vec<FileMetadataInfo>> {
        // A complete single-file checkpoint needs no request at all.
        if folder.join("model.safetensors").exists() {
            return Ok(Vec::new());
        }
        let index_path = folder.join("model.safetensors.index.json");
        if !index_path.exists() {
            match self.metadata(repo, id, commit, "model.safetensors") {
                Ok(m) => return Ok(vec![m]),
                Err(Error::Hub(HubError::NotFound { .. })) => {}
                Err(e) => return Err(e),
            }
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
        }
        let mut out = Vec::new();
        for shard in shard_names(&index_path)? {
            if folder.join(&shard).exists() {
                continue;
            }
            out.push(self.metadata(repo, id, commit, &shard)?);
        }
        // Servers that omit Content-Length: fall back to the index's total for the space check.
        if !out.is_empty() && out.iter().all(|m| m.file_size == 0) {
            if let Some(total) = index_total_size(&index_path) {
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
        repo: &HFRepository<RepoTypeModel>,
        id: &str,
        commit: &str,
        blobs: &Path,
        meta: &FileMetadataInfo,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<()> {
        let blob = blobs.join(&meta.etag);
        let size = meta.file_size;
        if blob.exists() {
            return Ok(());
        }
        std::fs::create_dir_all(blobs).map_err(|e| Error::io(blobs, e))?;
        let part = blobs.join(format!("{}.incomplete", meta.etag));
        if size == 0 {
            // A size we cannot range over: one plain request, bounded by the disk check's margin.
            let mut out = std::fs::File::create(&part).map_err(|e| Error::io(&part, e))?;
            let file = meta.filename.clone();
            self.stream_into(
                repo,
                id,
                commit,
                &meta.filename,
                None,
                free_bytes(blobs).unwrap_or(u64::MAX),
                &mut out,
                &part,
                &mut |n| {
                    progress(&Progress {
                        file: file.clone(),
                        bytes_done: n,
                        bytes_total: 0,
                    })
                },
            )?;
            out.sync_all().map_err(|e| Error::io(&part, e))?;
            drop(out);
            if is_sha256(&meta.etag) {
                verify_sha256(&part, &meta.etag)?;
            }
            return std::fs::rename(&part, &blob).map_err(|e| Error::io(&blob, e));
        }
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
            let end = done.saturating_add(chunk).min(size);
            let start = done;
            let file = meta.filename.clone();
            let got = self.stream_into(
                repo,
                id,
                commit,
                &meta.filename,
                Some(start..end),
                // A server that ignores the range sends the whole file from byte 0.
                if start == 0 { size } else { end - start },
                &mut out,
                &part,
                &mut |n| {
                    progress(&Progress {
                        file: file.clone(),
                        bytes_done: start + n,
                        bytes_total: size,
                    })
                },
            )?;
            if got == end - start || (start == 0 && got == size) {
                done = start + got;
            } else {
                return Err(HubError::Http {
                    url: self.url(id, commit, &meta.filename),
                    problem: format!("asked for bytes {start}..{end}, received {got}"),
                }
                .into());
            }
        }
        out.sync_all().map_err(|e| Error::io(&part, e))?;
        drop(out);
        if resumed && is_sha256(&meta.etag) {
            verify_sha256(&part, &meta.etag)?;
        }
        std::fs::rename(&part, &blob).map_err(|e| Error::io(&blob, e))?;
        Ok(())
    }

    fn map_err(&self, e: HFError, repo: &str, rev: &str, file: &str) -> Error {
        let url = self.url(repo, rev, file);
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
            HFError::Request { source, .. } if source.is_timeout() => {
                let limit = if source.is_connect() {
                    self.connect_timeout
                } else {
                    self.idle_timeout
                };
                let what = if source.is_connect() {
                    format!("connecting for {file}")
                } else {
                    format!("download of {file}")
                };
                return self.timed_out(&what, limit);
            }
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

use crate::model::weights::is_plain_file_name;
pub use crate::model::weights::shard_names;

/// Checks a revision (`main`, `v1.0`, `refs/pr/1`, a commit) before it names `refs/<revision>`.
pub fn check_revision(rev: &str) -> Result<()> {
    let ok = !rev.is_empty()
        && rev.len() <= 256
        && rev.split('/').all(|p| {
            !p.is_empty()
                && p != "."
                && p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        });
    if ok {
        Ok(())
    } else {
        Err(HubError::BadRevision(rev.to_string()).into())
    }
}

/// Checks an ETag before it names `blobs/<etag>`: letters, digits, `-` and `_` only (the hub
/// sends a git sha1 or a sha256 in hex).
pub fn check_etag(etag: &str, url: &str) -> Result<()> {
    let ok = !etag.is_empty()
        && etag.len() <= 128
        && etag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(HubError::Hostile {
            url: url.to_string(),
            header: "ETag",
            value: etag.chars().take(200).collect(),
            expected: "letters, digits, `-` or `_` (a hash)",
        }
        .into())
    }
}

/// Checks an `X-Repo-Commit` before it names `snapshots/<commit>`: 40 hex digits.
pub fn check_commit(commit: &str, url: &str) -> Result<()> {
    if is_commit(commit) {
        Ok(())
    } else {
        Err(HubError::Hostile {
            url: url.to_string(),
            header: "X-Repo-Commit",
            value: commit.chars().take(200).collect(),
            expected: "a commit hash (40 hex digits)",
        }
        .into())
    }
}

fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// Links `snapshots/<commit>/<file>` to `blobs/<etag>` (relative symlink, as the Python cache
/// does; a copy where symlinks are unavailable).
fn link(blobs: &Path, folder: &Path, file: &str, etag: &str) -> Result<()> {
    if !is_plain_file_name(file) {
        return Err(Error::Invalid(format!(
            "`{file}` is not a file name inside the snapshot folder"
        )));
    }
    let dest = folder.join(file);
    let parent = dest.parent().unwrap_or(folder);
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    if std::fs::symlink_metadata(&dest).is_ok() {
        if dest.exists() {
            return Ok(());
        }
        std::fs::remove_file(&dest).map_err(|e| Error::io(&dest, e))?;
    }
    #[cfg(unix)]
    {
        // snapshots/<commit>/<dirs…>/<file> → ../../<../ per dir>blobs/<etag>
        let _ = blobs;
        let up = "../".repeat(2 + file.matches('/').count());
        std::os::unix::fs::symlink(format!("{up}blobs/{etag}"), &dest)
            .map_err(|e| Error::io(&dest, e))
    }
    #[cfg(not(unix))]
    {
        std::fs::copy(blobs.join(etag), &dest)
            .map(|_| ())
            .map_err(|e| Error::io(&dest, e))
    }
}

fn verify_sha256(part: &Path, etag: &str) -> Result<()> {
    let sum = sha256_file(part)?;
    if sum.eq_ignore_ascii_case(etag) {
        return Ok(());
    }
    let _ = std::fs::remove_file(part);
    Err(HubError::BadContent {
        file: part.to_path_buf(),
        problem: format!(
            "downloaded data has sha256 {sum}, the hub says {etag}; removed, run the download again"
        ),
    }
    .into())
}

fn index_total_size(index: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(index).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("metadata")?.get("total_size")?.as_u64()
}

fn partial_len(blobs: &Path, meta: &FileMetadataInfo) -> u64 {
    std::fs::metadata(blobs.join(format!("{}.incomplete", meta.etag)))
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
    if need.saturating_add(DISK_MARGIN) > free {
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
