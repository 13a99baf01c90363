use std::path::PathBuf;

/// Errors of the tensor crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A length or size does not fit the other integer type.
    #[error("{what}: value {value} does not fit in {target}")]
    DimOverflow {
        /// What was being converted.
        what: &'static str,
        /// The value, printed.
        value: String,
        /// The target type.
        target: &'static str,
    },
    /// A device string is not `auto`, `cpu` or `cuda:N`.
    #[error("unknown device `{0}`: expected auto, cpu or cuda:N")]
    BadDevice(String),
    /// CUDA was asked for but this libtorch has none.
    #[error("device `{0}` asked for, but libtorch reports no CUDA device (on a GPU machine, build with CUDA: `cargo xtask build-cuda`)")]
    NoCuda(String),
    /// [`crate::atomic::write_dir`] would replace something it did not write.
    #[error("refusing to replace {path}: {reason}")]
    NotOurs {
        /// The directory (or file) in the way.
        path: PathBuf,
        /// What it is, and what to do.
        reason: String,
    },
    /// Filesystem failure, with the path involved.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
