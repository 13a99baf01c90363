use std::path::PathBuf;

/// What can stop the feature cache (bad media never does: it is reported per item).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file of the cache could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The cache is missing, from another format version, or does not match the dataset.
    #[error("feature cache {path}: {reason}")]
    Stale {
        /// The cache directory.
        path: PathBuf,
        /// What is wrong, and the fix.
        reason: String,
    },
    /// A preprocessing configuration is invalid.
    #[error("feature config: {0}")]
    Config(String),
    /// The dataset could not be read.
    #[error(transparent)]
    Data(#[from] m6rec_data::Error),
    /// libtorch failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// A shared tensor helper failed.
    #[error(transparent)]
    Tensor(#[from] m6rec_tensor::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
