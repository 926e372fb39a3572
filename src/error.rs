//! The library's error type: every variant names the file, tensor or field it is about.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Not a `source`: the message already holds the OS error, and `{:#}` would print it twice.
    #[error("{file}: {err}")]
    Io { file: PathBuf, err: std::io::Error },

    #[error("{file}: not valid JSON: {problem}")]
    Parse { file: PathBuf, problem: String },

    #[error("{file}: field `{field}`: {problem}")]
    ConfigField {
        file: PathBuf,
        field: String,
        problem: String,
    },

    #[error("{file}: unsupported architecture ({found}); supported: {supported}")]
    UnknownArchitecture {
        file: PathBuf,
        found: String,
        supported: String,
    },

    #[error("{file}: not a readable safetensors file: {problem}")]
    Safetensors { file: PathBuf, problem: String },

    #[error(
        "{folder}: no weights found (expected model.safetensors or model.safetensors.index.json)"
    )]
    NoWeights { folder: PathBuf },

    #[error("tensor `{name}` is missing from the checkpoint ({files})")]
    MissingTensor { name: String, files: String },

    #[error("{file}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    TensorShape {
        file: PathBuf,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },

    #[error("{file}: tensor `{name}` has dtype {found}, expected f32, f16 or bf16")]
    TensorDtype {
        file: PathBuf,
        name: String,
        found: String,
    },

    #[error("{file}: {problem}")]
    Tokenizer { file: PathBuf, problem: String },

    #[error("{0}")]
    Invalid(String),

    #[error("generation cancelled")]
    Cancelled,

    #[error("{file}, line {line}: {problem}")]
    Trace {
        file: PathBuf,
        line: usize,
        problem: String,
    },

    #[error(transparent)]
    Hub(crate::hub::HubError),

    #[error("model computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub fn io(file: &Path, source: std::io::Error) -> Self {
        Error::Io {
            file: file.to_path_buf(),
            err: source,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
