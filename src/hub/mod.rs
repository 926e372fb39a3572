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
//!
//! The module has one file per job: [`resolve`] turns a `--model` argument into a folder,
//! [`download`] talks HTTP to the hub, [`cache`] owns the cache's file-system layout.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

pub mod cache;
pub mod download;
pub mod resolve;

pub use cache::{check_commit, check_etag, check_revision, check_space, free_bytes, shard_names};
pub use download::Hub;
pub use resolve::resolve_model;

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

/// What a caller needs of a checkpoint: it decides which files are fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// `config.json`, the tokenizer, the side files and the shard index: enough to inspect a
    /// checkpoint without its weights.
    Metadata,
    /// Everything above plus every weight file: enough to load the model.
    Weights,
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

impl From<HubError> for Error {
    fn from(e: HubError) -> Self {
        Error::Hub(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::weights::is_plain_file_name;
    use std::path::Path;

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
