//! HTTP with the hub: metadata requests, bounded byte streams, ranged resumable weight
//! downloads; hf-hub drives the requests, every path they name is checked in [`super::cache`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use hf_hub::repository::FileMetadataInfo;
use hf_hub::{HFClient, HFError, HFRepository, RepoTypeModel};

use super::cache::{
    check_commit, check_etag, check_revision, check_space, free_bytes, index_total_size, is_commit,
    is_sha256, link, partial_len, shard_names, verify_sha256, write_err,
};
use super::{
    is_hub_id, HubError, HubOptions, Need, Progress, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    SIDE_FILES,
};
use crate::error::{Error, Result};

/// Bytes per ranged request for weight files: the unit of resume and of memory use.
const DEFAULT_CHUNK: u64 = 64 << 20;
/// Largest side file (config, tokenizer …) accepted: a server announcing more is not a hub.
const SIDE_FILE_LIMIT: u64 = 512 << 20;

/// A configured hub client.
pub struct Hub {
    pub(super) client: HFClient,
    /// Drives hf-hub's async requests; one thread, so no request outlives the call that made it.
    pub(super) rt: tokio::runtime::Runtime,
    pub(super) cache_dir: PathBuf,
    pub(super) endpoint: String,
    /// `host:port` of the endpoint, for timeout messages.
    pub(super) host: String,
    pub(super) connect_timeout: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) opts: HubOptions,
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

    pub(super) fn revision(&self) -> Result<String> {
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
    /// Downloads what `id` needs to load (or finds it cached) and returns the snapshot folder.
    pub fn download(&self, id: &str, progress: &mut dyn FnMut(&Progress)) -> Result<PathBuf> {
        self.fetch(id, Need::Weights, progress)
    }

    /// Downloads what `need` asks for of `id` (or finds it cached); returns the snapshot folder.
    pub fn fetch(
        &self,
        id: &str,
        need: Need,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<PathBuf> {
        if self.opts.offline {
            return match self.cached_or_missing(id, need)? {
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
        if need == Need::Metadata {
            // The index (when the weights are sharded) lets `inspect` check the tensor names.
            let index = "model.safetensors.index.json";
            if !folder.join(index).exists() && !folder.join("model.safetensors").exists() {
                match self.fetch_small(&repo, id, &commit, index, progress) {
                    Ok(_) | Err(Error::Hub(HubError::NotFound { .. })) => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(folder);
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

    fn url(&self, id: &str, rev: &str, file: &str) -> String {
        format!("{}/{id}/resolve/{rev}/{file}", self.endpoint)
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
