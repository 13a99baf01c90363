//! The generative model of m6rec: a causal Transformer that reads a user's item sequence and scores the next item.
//!
//! # Brief overview
//! - [`SeqRecConfig`] (serde, part of the run's TOML) → [`SeqRec::init`] (validates, creates named variables) →
//!   [`SeqRec::forward`] (hidden states) / [`SeqRec::score_next`] (catalog scores) / [`SeqRec::loss`] (objective).
//! - [`LossConfig`]: full-softmax cross-entropy at every position, or sampled softmax (uniform and in-batch negatives,
//!   `log Q` corrected) for catalogs too big for a full softmax. The functions are in [`loss`].
//!
//! ```
//! use m6rec_model::{SeqRec, SeqRecConfig};
//! use m6rec_data::SeqBatch;
//! let vs = tch::nn::VarStore::new(tch::Device::Cpu);
//! let model = SeqRec::init(&(vs.root() / "model"), &SeqRecConfig { d_model: 16, ..Default::default() }, 10)?;
//! let batch = SeqBatch::for_training(&[&[1, 2, 3]], 50, 10)?;
//! let loss = model.loss(&batch, tch::Device::Cpu, m6rec_tensor::Mode::Train)?;
//! let scores = model.score_next(&SeqBatch::for_prediction(&[&[1, 2]], 50, 10)?, tch::Device::Cpu)?;
//! assert_eq!(scores.size(), vec![1, 10]);
//! # Ok::<(), m6rec_model::Error>(())
//! ```
#![deny(missing_docs)]

mod config;
mod error;
pub mod loss;
mod model;

pub use config::{LossConfig, SeqRecConfig};
pub use error::{Error, Result};
pub use model::SeqRec;
