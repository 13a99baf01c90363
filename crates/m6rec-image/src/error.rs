use std::path::PathBuf;

/// What can go wrong decoding or encoding images.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The bytes are not an image we can decode (unknown format, corrupt data, too large).
    #[error("cannot decode image{}: {message}", .path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Decode {
        /// The file, when there is one.
        path: Option<PathBuf>,
        /// What the decoder said.
        message: String,
    },
    /// A configuration is out of range.
    #[error("image config: {0}")]
    Config(String),
    /// Images of different sizes in one batch.
    #[error("image {index} is {got}x{got} pixels, the batch's first is {want}x{want}")]
    Shape {
        /// Position in the batch.
        index: usize,
        /// Its side.
        got: u32,
        /// The first one's side.
        want: u32,
    },
    /// libtorch failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// A shared tensor helper failed.
    #[error(transparent)]
    Tensor(#[from] m6rec_tensor::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
