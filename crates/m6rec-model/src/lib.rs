//! The generative model of m6rec: a Transformer that reads a user's item sequence and scores the next item (causal
//! by default; bidirectional or prefix-LM attention and a mask token for the masked-item and prefix-LM tasks).
//!
//! # Brief overview
//! - [`SeqRecConfig`] (serde, part of the run's TOML) → [`SeqRec::init`] (validates, creates named variables) →
//!   [`SeqRec::forward_with`]: the one forward, tokens, an item table and an [`Attention`] in, one scoring state
//!   per position out (a candidate's score is `state · its table row`); [`SeqRec::forward`] is the causal one.
//! - [`CodeRec`]: the generative-retrieval model over semantic-ID tokens (`m6rec-semantic` makes the codes): it
//!   reads a history as its items' codes and generates the next item's code, token by token.
//! - The objective is its own layer, [`m6rec_objective`] ([`LossConfig`] is re-exported for `[model.loss]`); the
//!   recommender that puts the model, its item table and the objective together is `m6rec-recommender`.
//!
//! ```
//! use m6rec_model::{SeqRec, SeqRecConfig};
//! use m6rec_data::SeqBatch;
//! let vs = tch::nn::VarStore::new(tch::Device::Cpu);
//! let model = SeqRec::init(&(vs.root() / "model"), &SeqRecConfig { d_model: 16, ..Default::default() }, 10)?;
//! let batch = SeqBatch::for_prediction(&[&[1, 2]], 50, 10)?;
//! let tokens = model.fit_len(batch.tokens_tensor(tch::Device::Cpu)?);
//! let table = model.item_embeddings();
//! let states = model.forward(&tokens, &table, m6rec_tensor::Mode::Eval); // [1, 2, 16]
//! let scores = states.select(1, -1).matmul(&table.tr()); // the next item's score for every catalog item
//! assert_eq!(scores.size(), vec![1, 10]);
//! # Ok::<(), m6rec_model::Error>(())
//! ```
#![deny(missing_docs)]

mod coderec;
mod config;
mod error;
mod model;

pub use coderec::{CodeDecoder, CodeRec};
pub use config::{LossConfig, SeqRecConfig, TaskConfig};
pub use error::{Error, Result};
pub use m6rec_tensor::mask::Attention;
pub use model::SeqRec;
