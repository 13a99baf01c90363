//! The optimizer layer of m6rec.
//!
//! # Brief overview
//! - [`OptimConfig`] → [`Optimizer::new`]: AdamW (default), Adam, SGD with (Nesterov) momentum, RMSprop, Adagrad,
//!   each as PyTorch defines it (tests compare with libtorch's own), with parameter groups (no decay on norms,
//!   biases and, by default, embeddings) and an optional exponential moving average of the weights
//!   ([`Optimizer::with_ema`]). State is ordinary named tensors ([`Optimizer::state`] / [`Optimizer::load_state`]),
//!   so a checkpoint saves it and a resumed run continues exactly.
//! - [`Schedule`]: constant, warm-up then constant, cosine, linear or step decay; [`Plateau`]: reduce on plateau.
//! - [`clip_grad_norm`]: clipping by global norm.
//!
//! Strategy search (spaces, samplers, ASHA, studies) is the `m6rec-search` crate, which needs no libtorch.
//!
//! Why not `tch::nn::Optimizer`: tch keeps libtorch's optimizer state inside libtorch with no way to read or write
//! it, so a resumed run would restart its moments from zero. The update rules here are a few tensor operations each.
//!
//! ```
//! use m6rec_optim::{OptimConfig, Optimizer, Schedule};
//! let vs = tch::nn::VarStore::new(tch::Device::Cpu);
//! let w = vs.root().randn("w", &[3], 0.0, 1.0);
//! let mut opt = Optimizer::new(&vs, &OptimConfig::default());
//! let loss = (&w * &w).sum(tch::Kind::Float);
//! opt.zero_grad();
//! loss.backward();
//! m6rec_optim::clip_grad_norm(&vs, 1.0);
//! opt.step(Schedule::WarmupCosine { warmup: 10, total: 100 }.lr(1e-3, 0));
//! ```
#![deny(missing_docs)]

mod optimizer;
mod schedule;

pub use optimizer::{clip_grad_norm, decays, Algorithm, OptimConfig, Optimizer, ScheduleConfig};
pub use schedule::{Plateau, Schedule};

/// Errors of the optimizer layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Saved optimizer state does not fit the model's parameters.
    #[error("optimizer state does not match the model: {0} (was the checkpoint made with another config?)")]
    StateMismatch(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
