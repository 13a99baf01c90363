use std::path::PathBuf;

/// What can go wrong loading, training or running a text encoder.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The `tokenizers` crate rejected a file or an input.
    #[error("tokenizer{}: {message}", .path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Tokenizer {
        /// The tokenizer file, when one was involved.
        path: Option<PathBuf>,
        /// The tokenizer's message.
        message: String,
    },
    /// A model folder lacks a file the encoder needs.
    #[error(
        "{dir}: missing {file} (a Hugging Face model folder has config.json, model.safetensors and tokenizer.json)"
    )]
    MissingFile {
        /// The model folder.
        dir: PathBuf,
        /// The missing file's name.
        file: &'static str,
    },
    /// `config.json` is not a BERT-family configuration we support.
    #[error("{path}: {message}")]
    BadConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A weight is missing from the checkpoint or has the wrong shape.
    #[error("{path}: weight {name}: {message}")]
    BadWeight {
        /// The weights file.
        path: PathBuf,
        /// The weight's name (as in our variable store).
        name: String,
        /// What is wrong.
        message: String,
    },
    /// An encoder configuration is inconsistent.
    #[error("text encoder config: {0}")]
    Config(String),
    /// libtorch failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// A shared tensor helper failed.
    #[error(transparent)]
    Tensor(#[from] m6rec_tensor::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
