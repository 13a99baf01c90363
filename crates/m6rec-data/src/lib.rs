//! The data layer of m6rec: one on-disk dataset format, importers into it, the leave-one-out split, and batches.
//!
//! # Brief overview
//! - [`Dataset`]: users, an item catalog and interactions; [`Dataset::save`] / [`Dataset::load`] read and write the
//!   versioned directory format (`dataset.json` + three Parquet tables, documented in `docs/formats.md`), atomically.
//! - [`import`]: any event log (CSV, TSV, JSON lines, Parquet) with an item table, Amazon reviews, MovieLens raw
//!   files, RecBole atomic files, SASRec-style sequence text and UniSRec folders, each with an
//!   [`import::ImportReport`] that lists skipped lines by file, line and reason.
//! - [`filter`]: exact duplicates, iterative k-core, a per-user history cap.
//! - [`media`]: item images and audio inside the dataset directory; paths that escape it are refused.
//! - [`Split`]: chronological leave-one-out with file order kept for equal timestamps.
//! - [`SeqBatch`]: padded sequences and next-item targets, built only by validating constructors.
//! - [`loader::prefetch`]: builds batches on a background thread so training never waits for data.
//! - [`synth`]: the generator of the embedded demo dataset.
//!
//! ```no_run
//! use m6rec_data::{import, Dataset, Split, SeqBatch};
//! let imported = import::import(import::Format::MovieLens, "ml-100k".as_ref())?;
//! imported.dataset.save("data/ml-100k".as_ref())?;
//! let ds = Dataset::load("data/ml-100k".as_ref())?;
//! let split = Split::leave_one_out(&ds.interactions, ds.n_users());
//! let batch = SeqBatch::for_training(&[split.train(0)], 50, ds.n_items())?;
//! # Ok::<(), m6rec_data::Error>(())
//! ```
#![deny(missing_docs)]

mod batch;
mod dataset;
mod error;
pub mod filter;
pub mod import;
pub mod loader;
pub mod media;
mod records;
mod split;
pub mod synth;
mod table;

pub use batch::{SeqBatch, IGNORE};
pub use dataset::{Dataset, Meta, DATASET_DIR, FORMAT_VERSION};
pub use error::{Error, Result};
pub use records::{Interactions, Item};
pub use split::{Split, Target, TimeCuts};
