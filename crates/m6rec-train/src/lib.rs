//! Training, evaluation and recommendation for m6rec.
//!
//! # Brief overview
//! - [`RunConfig`]: the TOML run file (`[model]`, `[optim]`, `[train]`).
//! - [`Trainer`]: [`Trainer::new`] or [`Trainer::resume`] → [`Trainer::fit`] with an [`Observer`] for progress;
//!   early stopping on validation NDCG@10; an atomic [`checkpoint`] directory after every epoch.
//! - [`eval::evaluate`]: full ranking over the whole catalog (HR/NDCG/MRR@5/10/20/50, [`metrics`]) for any
//!   [`Scorer`]: the model ([`ModelScorer`]) or the [`Popularity`] baseline, through the same code.
//! - [`strategy`]: the automatic strategy, a run config decided from the data, machine and budget.
//! - [`recommend::recommend`]: top-k for a history.
//! - [`parallel`]: data-parallel training over several processes ([`parallel::DataParallel`]; with the
//!   `distributed` feature, `ddp::DdpGroup` over PyTorch's c10d, launched by torchrun).
//! - The model itself is [`Recommender`] (`m6rec-recommender`, re-exported with its [`content`], [`domains`] and
//!   [`open`] modules): the trainer holds one, and so does everything that scores.
//!
//! ```no_run
//! use m6rec_train::{checkpoint::DatasetFingerprint, RunConfig, Silent, Trainer};
//! let ds = m6rec_data::Dataset::load("data/demo".as_ref())?;
//! let split = m6rec_data::Split::leave_one_out(&ds.interactions, ds.n_users());
//! let mut trainer = Trainer::new(RunConfig::default(), DatasetFingerprint::of(&ds), tch::Device::Cpu)?;
//! trainer.fit(&split, Some("runs/demo".as_ref()), &mut Silent)?;
//! # Ok::<(), m6rec_train::Error>(())
//! ```
#![deny(missing_docs)]

pub mod adapt;
mod batches;
pub mod checkpoint;
mod config;
#[cfg(feature = "distributed")]
pub mod ddp;
mod error;
pub mod eval;
pub mod generative;
pub mod metrics;
pub mod parallel;
mod plot;
pub mod recommend;
mod scorer;
mod state;
pub mod strategy;
mod trainer;
pub mod tune;
pub mod update;

pub use batches::{plan_batches, training_spans, Span};
pub use config::{RunConfig, SplitConfig, TrainConfig};
pub use error::{Error, Result};
pub use m6rec_recommender::{content, domains, open, Recommender};
pub use plot::{metrics_chart, search_progress, training_curves, TrialPoint};
pub use scorer::{ModelScorer, Popularity, Scorer};
pub use state::{EpochRecord, Observer, Silent, TrainState};
pub use trainer::{default_run_dir, Trainer};
