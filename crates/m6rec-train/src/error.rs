use std::path::PathBuf;

/// Errors of the training layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Filesystem failure.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A config file could not be parsed or is invalid.
    #[error("{path}: {reason}")]
    Config {
        /// The file (or `<inline>`).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint is missing a file, is corrupt, or belongs to another dataset or config.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint directory.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// Nothing to train or evaluate on (no user with two training events, no target in the chosen group).
    #[error("{0}")]
    NoData(String),
    /// An argument does not fit the model or its catalog (an empty history, a list of the wrong length, an item
    /// without a semantic ID).
    #[error("{0}")]
    InvalidInput(String),
    /// The training loss stopped being finite.
    #[error("training diverged at epoch {epoch} (loss {loss}); lower optim.lr")]
    Diverged {
        /// 1-based epoch.
        epoch: usize,
        /// The epoch's mean loss.
        loss: f64,
    },
    /// A libtorch call failed (reading a tensor back, an unexpected shape).
    #[error("libtorch: {0}")]
    Torch(String),
    /// A strategy search could not start, watch or record a trial.
    #[error("strategy search: {0}")]
    Study(String),
    /// libtorch's backward pass failed.
    #[error("backward pass failed: {0}")]
    Backward(String),
    /// Error from the data layer.
    #[error(transparent)]
    Data(#[from] m6rec_data::Error),
    /// Error from the model layer.
    #[error(transparent)]
    Model(#[from] m6rec_model::Error),
    /// Error from the recommender (loading, item content, tower, domains).
    #[error(transparent)]
    Recommender(#[from] m6rec_recommender::Error),
    /// Error from the optimizer layer.
    #[error(transparent)]
    Optim(#[from] m6rec_optim::Error),
    /// Error from the feature cache.
    #[error(transparent)]
    Features(#[from] m6rec_features::Error),
    /// Data-parallel training failed: a peer was lost or failed, or a collective did.
    #[error("data-parallel training: {0}")]
    Distributed(String),
    /// Semantic IDs or beam search failed.
    #[error(transparent)]
    Semantic(m6rec_semantic::Error),
    /// Error from the tensor layer.
    #[error(transparent)]
    Tensor(#[from] m6rec_tensor::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}
