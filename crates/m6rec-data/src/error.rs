use std::path::PathBuf;

/// Errors of the data crate. Every variant names the file (and line or row) it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Filesystem failure.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Parquet or Arrow failure while reading or writing a table.
    #[error("{path}: {reason}")]
    Table {
        /// The Parquet file.
        path: PathBuf,
        /// What the Parquet/Arrow layer said.
        reason: String,
    },
    /// A required column is absent or has the wrong type.
    #[error("{path}: column `{column}` {reason}")]
    BadColumn {
        /// The Parquet file.
        path: PathBuf,
        /// The column name.
        column: &'static str,
        /// Missing, or the type found.
        reason: String,
    },
    /// A file's content is not what its format requires (at file level, not one bad line).
    #[error("{path}: {reason}")]
    BadFormat {
        /// The file.
        path: PathBuf,
        /// What is wrong and, where possible, how to fix it.
        reason: String,
    },
    /// The dataset was written by a newer (or unknown) version of the format.
    #[error("{path}: dataset format_version {found} is not supported (this build reads version {supported}); re-import the data with this m6rec")]
    UnsupportedVersion {
        /// `dataset.json`.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// An import produced no interactions.
    #[error("{path}: no interactions imported ({skipped} lines skipped); check the format name and the files")]
    Empty {
        /// The source.
        path: PathBuf,
        /// How many lines were skipped.
        skipped: usize,
    },
    /// A filter removed every event.
    #[error("{filter} removed every one of the {events} events; loosen it")]
    FilteredOut {
        /// The filter, as the flags that set it.
        filter: String,
        /// Events before filtering.
        events: usize,
    },
    /// An external item id that the dataset does not contain.
    #[error("unknown item `{0}` (not in the dataset's items.parquet)")]
    UnknownItem(String),
    /// An external user id that the dataset does not contain.
    #[error("unknown user `{0}` (not in the dataset's users.parquet)")]
    UnknownUser(String),
    /// A batch was built from invalid parts.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// Error from the tensor layer.
    #[error(transparent)]
    Tensor(#[from] m6rec_tensor::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}
