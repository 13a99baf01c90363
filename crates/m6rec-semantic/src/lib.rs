//! Semantic IDs: each item named by a short code computed from its content, for generative retrieval (TIGER).
//!
//! # Brief overview
//! - [`SemanticIds::fit`]: residual k-means (RQ-k-means) over item content embeddings `[n, d]`: level 1 clusters
//!   the embeddings into `codes` centroids, level 2 clusters what level 1 left unexplained, and so on for `levels`
//!   levels (defaults 3 × 256, as in the literature). Empty clusters are re-initialised during the fit (to the rows
//!   the level explains worst) and counted. Items whose codes collide get one extra level that numbers them
//!   (`0, 1, …`), so every item's code is unique; [`Stats`] reports per-level perplexity, codes used, dead codes
//!   and the collision rate.
//! - With `method = "rqvae"` ([`RqVaeConfig`]), the residual levels quantise an MLP encoder's latent instead,
//!   trained with a decoder on reconstruction plus codebook and commitment losses (TIGER's RQ-VAE); the encoder is
//!   saved with the codes.
//! - [`SemanticIds::add`]: a new item's code from its content alone (nearest centroid level by level, the next free
//!   number at the extra level): retrievable without retraining.
//! - [`Trie`] of the codes that exist and [`beam_search`] constrained to it: a generative model proposes the next
//!   code token, the search never leaves the trie, so every beam it returns is an item ([`beam_search_batch`]:
//!   many queries, one model call per code position).
//! - [`SemanticIds::save`] / [`SemanticIds::load`]: one JSON file beside a checkpoint, written atomically.
//!
//! ```
//! use m6rec_semantic::{beam_search, SemanticIds, SemanticIdConfig};
//! use tch::{Device, Kind, Tensor};
//! tch::manual_seed(0);
//! let content = Tensor::randn([200, 16], (Kind::Float, Device::Cpu));
//! let ids = SemanticIds::fit(&content, &SemanticIdConfig { levels: 2, codes: 8, ..Default::default() })?;
//! assert_eq!(ids.code(0).len(), 3); // two levels and the collision level
//! let trie = ids.trie();
//! // A "model" that prefers low code numbers at every level; the beams are items, best first.
//! let top = beam_search(&trie, 5, |prefixes| Ok::<_, m6rec_semantic::Error>(
//!     prefixes.iter().map(|p| (0..trie.width(p.len())).map(|c| -(c as f32)).collect()).collect()))?;
//! assert_eq!(top.len(), 5);
//! # Ok::<(), m6rec_semantic::Error>(())
//! ```
#![deny(missing_docs)]

mod codes;
mod rqvae;
mod trie;

pub use codes::{LevelStats, Method, SemanticIdConfig, SemanticIds, Stats};
pub use rqvae::{Dense, Encoder, RqVaeConfig};
pub use trie::{beam_search, beam_search_batch, Beam, Trie};

/// What went wrong, and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The embeddings or the configuration cannot give codes.
    #[error("semantic IDs: {0}")]
    Invalid(String),
    /// The code file could not be read or written.
    #[error("semantic IDs file {path}: {reason}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// A libtorch call failed.
    #[error("semantic IDs: libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// The scoring function of a beam search failed.
    #[error("beam search: {0}")]
    Scoring(String),
}

impl From<m6rec_tensor::Error> for Error {
    fn from(e: m6rec_tensor::Error) -> Error {
        Error::Invalid(e.to_string())
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
