//! The recommender of m6rec as one type: a sequence model, its item table and its objective.
//!
//! # Brief overview
//! - [`Recommender`]: [`m6rec_model::SeqRec`] + an item table (the model's id embeddings, or an item tower over
//!   content, [`items::ContentItems`], in `content_only` or `hybrid` mode) + [`domains`] + the objective
//!   ([`m6rec_objective`]). `init` / `load` / `load_zero_shot`; the table (`item_table`, `step_table`), the states
//!   (`user_states`), the scores (`score_next`), the loss, new items (`embed_new_items`). Trainer and service hold
//!   one; nobody assembles one by hand.
//! - [`RecommenderConfig`]: the run sections that define it (`[model]`, `[item_tower]`, `[content]`, `[domains]`).
//! - [`content`]: what an item tower reads ([`content::ItemContent`], per modality) and `[content]`.
//! - [`saved`]: `config.json`'s recommender part, the catalog [`saved::DatasetFingerprint`], weights.
//! - [`generative`]: generative retrieval over semantic IDs at inference ([`generative::GenerativeModel`]: load,
//!   beams, new items' codes from content).
//! - [`open`]: a checkpoint with its dataset and feature cache, ready to score (eval, recommend, serve).
//!
//! ```
//! use m6rec_recommender::{saved::DatasetFingerprint, Recommender, RecommenderConfig};
//! use m6rec_data::SeqBatch;
//! let mut cfg = RecommenderConfig::default();
//! cfg.model.d_model = 16;
//! let catalog = DatasetFingerprint { name: "toy".into(), n_items: 10, items_hash: "0".into(), path: None };
//! let rec = Recommender::init(cfg, catalog, None, tch::Device::Cpu)?;
//! let table = rec.item_table()?;
//! let loss = rec.loss(&SeqBatch::for_training(&[&[1, 2, 3]], 50, 10)?, &table, None, m6rec_tensor::Mode::Eval)?;
//! let scores = rec.score_next(&SeqBatch::for_prediction(&[&[1, 2]], 50, 10)?, &table)?;
//! assert_eq!(scores.size(), vec![1, 10]);
//! assert!(loss.double_value(&[]) > 0.0);
//! # Ok::<(), m6rec_recommender::Error>(())
//! ```
#![deny(missing_docs)]

mod config;
pub mod content;
pub mod domains;
mod error;
pub mod generative;
pub mod items;
pub mod open;
mod recommender;
pub mod saved;

pub use config::RecommenderConfig;
pub use error::{Error, Result};
pub use recommender::{CatalogScorer, Recommender};
