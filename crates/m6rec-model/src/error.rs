/// Errors of the model crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range.
    #[error("invalid model config: `{field}` {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A libtorch operation failed on untrusted input.
    #[error("{op}: {source}")]
    Torch {
        /// What we were doing.
        op: &'static str,
        /// libtorch's error.
        #[source]
        source: tch::TchError,
    },
    /// Error from the data layer.
    #[error(transparent)]
    Data(#[from] m6rec_data::Error),
    /// Error from the tensor layer.
    #[error(transparent)]
    Tensor(#[from] m6rec_tensor::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
