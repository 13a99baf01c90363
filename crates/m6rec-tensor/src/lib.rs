//! tch glue shared by every m6rec layer.
//!
//! # Brief overview
//! - [`Mode`]: `Train` or `Eval`, passed to every `forward` instead of a bare `bool`.
//! - [`dim`]: checked conversions between Rust lengths (`usize`) and tch sizes (`i64`).
//! - [`mask`]: attention masks (causal + key padding) as boolean tensors.
//! - [`atomic`]: write a file or a whole directory so that readers see the old or the new version, never half of one.
//! - [`block`]: the pre-norm Transformer block used by the sequence model and the text encoder.
//! - [`cnn`]: the small convolutional encoder used by the image and audio towers.
//! - [`device`]: parse `auto|cpu|cuda:N` into a [`tch::Device`].
//! - [`seed`]: seed libtorch's generators.
//!
//! ```
//! use m6rec_tensor::{mask, Mode};
//! let valid = tch::Tensor::from_slice(&[false, true, true]).view([1, 3]);
//! let allowed = mask::causal_with_padding(&valid); // [1, 1, 3, 3]
//! assert_eq!(allowed.size(), vec![1, 1, 3, 3]);
//! assert!(Mode::Train.is_train());
//! ```
#![deny(missing_docs)]

pub mod atomic;
pub mod block;
pub mod cnn;
pub mod device;
pub mod dim;
mod error;
pub mod mask;

pub use error::{Error, Result};

/// Whether a forward pass trains (dropout active) or evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Dropout and other stochastic layers are active.
    Train,
    /// Deterministic inference.
    Eval,
}

impl Mode {
    /// tch's `train: bool` flag.
    pub fn is_train(self) -> bool {
        matches!(self, Mode::Train)
    }
}

/// Seeds libtorch's CPU (and, when present, CUDA) generators.
pub fn seed(seed: u64) {
    // libtorch takes an i64; the bit pattern is what matters, so wrap instead of failing.
    tch::manual_seed(i64::from_ne_bytes(seed.to_ne_bytes()));
}
