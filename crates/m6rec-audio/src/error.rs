use std::path::PathBuf;

/// What can go wrong decoding or encoding audio.
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
    /// The bytes are not audio we can decode (unknown container, unsupported codec, corrupt stream).
    #[error("cannot decode audio{}: {message}", .path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Decode {
        /// The file, when there is one.
        path: Option<PathBuf>,
        /// What the decoder said.
        message: String,
    },
    /// The stream decoded to no samples at all.
    #[error("audio{} contains no samples", .0.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Empty(Option<PathBuf>),
    /// A configuration is out of range.
    #[error("audio config: {0}")]
    Config(String),
    /// Spectrograms of different shapes in one batch.
    #[error("spectrogram {index} is {got:?}, the batch's first is {want:?}")]
    Shape {
        /// Position in the batch.
        index: usize,
        /// Its `(n_mels, n_frames)`.
        got: (usize, usize),
        /// The first one's.
        want: (usize, usize),
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
