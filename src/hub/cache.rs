//! The hub cache on disk (`models--org--name/{blobs,snapshots,refs}`, as Python's
//! huggingface_hub lays it out): what is complete there, and the checks that keep every name a
//! server or user supplies inside it.

use std::path::{Path, PathBuf};

use hf_hub::repository::FileMetadataInfo;
use sha2::{Digest, Sha256};

use super::{is_hub_id, Hub, HubError, Need};
use crate::error::{Error, Result};
use crate::model::weights::is_plain_file_name;
pub use crate::model::weights::shard_names;

/// Free space kept beyond what the files need.
const DISK_MARGIN: u64 = 64 << 20;

impl Hub {
    /// The snapshot folder of `id` when what `need` asks for (config and tokenizer; with
    /// [`Need::Weights`] every weight file too) is in the cache for the revision; no network is
    /// used.
    pub fn cached(&self, id: &str, need: Need) -> Result<Option<PathBuf>> {
        Ok(self.cached_or_missing(id, need)?.ok())
    }

    /// `Ok(folder)` when complete in the cache, else `Err(first missing file)`.
    pub(super) fn cached_or_missing(
        &self,
        id: &str,
        need: Need,
    ) -> Result<std::result::Result<PathBuf, String>> {
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
        if need == Need::Metadata || local("model.safetensors").is_some() {
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

    /// `models--org--name` inside the cache.
    pub(super) fn repo_folder(&self, id: &str) -> PathBuf {
        self.cache_dir
            .join(format!("models--{}", id.replace('/', "--")))
    }

    /// `refs/<revision>` holds the commit the branch or tag pointed at.
    pub(super) fn write_ref(&self, id: &str, rev: &str, commit: &str) -> Result<()> {
        let path = self.repo_folder(id).join("refs").join(rev);
        if std::fs::read_to_string(&path).is_ok_and(|s| s.trim() == commit) {
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        std::fs::write(&path, commit).map_err(|e| write_err(&path, e, &self.cache_dir))
    }
}

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

pub(super) fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// Links `snapshots/<commit>/<file>` to `blobs/<etag>` (relative symlink, as the Python cache
/// does; a copy where symlinks are unavailable).
pub(super) fn link(blobs: &Path, folder: &Path, file: &str, etag: &str) -> Result<()> {
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

pub(super) fn verify_sha256(part: &Path, etag: &str) -> Result<()> {
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

pub(super) fn index_total_size(index: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(index).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("metadata")?.get("total_size")?.as_u64()
}

pub(super) fn partial_len(blobs: &Path, meta: &FileMetadataInfo) -> u64 {
    std::fs::metadata(blobs.join(format!("{}.incomplete", meta.etag)))
        .map(|m| m.len())
        .unwrap_or(0)
}

pub(super) fn is_sha256(etag: &str) -> bool {
    etag.len() == 64 && etag.chars().all(|c| c.is_ascii_hexdigit())
}

pub(super) fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(path, e))?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

pub(super) fn write_err(file: &Path, e: std::io::Error, folder: &Path) -> Error {
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
