//! The error type of the model crate.

use std::path::PathBuf;

use crate::preprocess::ImageError;
use crate::tokenize::TextError;

/// Everything that can go wrong loading or running encoders and scorers.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: invalid manifest: {source}")]
    Manifest { path: PathBuf, source: serde_json::Error },
    #[error("{path}: sha256 mismatch: manifest says {expected}, file has {actual}")]
    Checksum { path: PathBuf, expected: String, actual: String },
    #[error("incompatible model: {0}")]
    Incompatible(String),
    #[error("bad image: {0}")]
    Image(#[from] ImageError),
    #[error("bad text: {0}")]
    Text(#[from] TextError),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl ModelError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io { path: path.into(), source }
    }
}
