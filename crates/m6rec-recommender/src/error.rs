use std::path::PathBuf;

/// Errors of the recommender layer.
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
    /// A checkpoint is missing a file, is corrupt, or belongs to another dataset or config.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint directory.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A recommender config is invalid.
    #[error("invalid recommender config: {0}")]
    InvalidConfig(String),
    /// Item content does not fit the catalog or the tower (shapes, modalities, a missing feature cache).
    #[error("item content: {0}")]
    Content(String),
    /// The item tower refused its inputs.
    #[error("item tower: {0}")]
    Tower(String),
    /// Domain names or embeddings do not fit the catalog.
    #[error("domains: {0}")]
    Domains(String),
    /// The model represents items by id only and cannot embed items it was not trained on.
    #[error("this model has no item tower (id embeddings only): it cannot embed new items; train with [item_tower] mode = \"content_only\" or \"hybrid\"")]
    NoItemTower,
    /// Error from the model layer.
    #[error(transparent)]
    Model(#[from] m6rec_model::Error),
    /// Error from the data layer.
    #[error(transparent)]
    Data(#[from] m6rec_data::Error),
    /// Error from the feature cache.
    #[error(transparent)]
    Features(#[from] m6rec_features::Error),
    /// Error from the semantic IDs (codes, their file, beam search).
    #[error(transparent)]
    Semantic(#[from] m6rec_semantic::Error),
    /// libtorch failed on a tensor operation.
    #[error("libtorch: {0}")]
    Torch(String),
    /// Error from the tensor layer.
    #[error(transparent)]
    Tensor(#[from] m6rec_tensor::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}
