//! m6rec's feature cache: every item's media decoded once, in parallel, into tensors next to the dataset, so
//! training and serving never decode media.
//!
//! # Brief overview
//! - [`build`]: resolves each item's image and audio path inside the dataset directory, decodes new or changed files
//!   with rayon (files are identified by SHA-256, so a re-run reuses everything unchanged), and writes the cache
//!   directory atomically. Missing, corrupt or escaping media never stop the build: the item keeps its other
//!   modalities and the [`Report`] lists each bad file and why.
//! - [`Features::load`]: the cached tensors aligned with the dataset's items, plus a presence mask
//!   `[n_items, 3]` (text, image, audio) that tells fusion which modalities an item really has.
//!
//! Cache layout (`<dataset>.features/` by default, see [`default_cache_dir`]): `manifest.json` (format version,
//! preprocessing config, one entry per item and modality: path, SHA-256, tensor row or the reason there is none),
//! `images.safetensors` (`pixels`: u8 `[n_with_image, 3, size, size]`) and `audio.safetensors` (`log_mel`: f32
//! `[n_with_audio, 1, n_mels, n_frames]`): decoded items only, in item order.
//!
//! ```no_run
//! use m6rec_features::{build, default_cache_dir, Features, FeatureConfig};
//! let dir = std::path::Path::new("data/ml-100k");
//! let ds = m6rec_data::Dataset::load(dir)?;
//! let report = build(dir, &ds, &default_cache_dir(dir), &FeatureConfig::default(), &())?;
//! println!("{} posters decoded, {} failed", report.image.decoded, report.image.failed.len());
//! let feats = Features::load(&default_cache_dir(dir), &ds)?;
//! assert_eq!(feats.present.size(), vec![ds.n_items() as i64, 3]);
//! # Ok::<(), m6rec_features::Error>(())
//! ```
#![deny(missing_docs)]

mod build;
mod error;
mod load;
mod manifest;

pub use build::{build, item_text, BadMedia, ModalityReport, Progress, Report, FEATURES_DIR};
pub use error::{Error, Result};
pub use load::{Features, AUDIO, IMAGE, TEXT};
pub use manifest::{FeatureConfig, TextFeatureConfig};

/// The cache directory `m6rec features` uses by default: a sibling of the dataset directory, `<dataset>.features`,
/// so re-importing the dataset (which replaces its directory) keeps the cache, and unchanged media are reused.
pub fn default_cache_dir(dataset_dir: &std::path::Path) -> std::path::PathBuf {
    let name = dataset_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "dataset".into());
    dataset_dir.with_file_name(format!("{name}.features"))
}
