//! Reading the cache for training and serving.

use std::path::Path;

use m6rec_data::Dataset;
use tch::{Kind, Tensor};

use crate::manifest::{FeatureConfig, Manifest};
use crate::{Error, Result};

/// Column of each modality in [`Features::present`].
pub const TEXT: i64 = 0;
/// See [`TEXT`].
pub const IMAGE: i64 = 1;
/// See [`TEXT`].
pub const AUDIO: i64 = 2;

/// Cached media tensors aligned with a dataset's items.
#[derive(Debug)]
pub struct Features {
    /// How they were made.
    pub config: FeatureConfig,
    /// `[n_items, 3, size, size]` u8; see `m6rec_image::batch` for normalisation.
    pub pixels: Tensor,
    /// `[n_items, 1, n_mels, n_frames]` f32 decibels.
    pub log_mel: Tensor,
    /// `[n_items, 3]` bool: has text, has a decoded image, has decoded audio. Absent modalities must be masked out,
    /// not read as zeros.
    pub present: Tensor,
}

impl Features {
    /// Loads the cache built for `dataset`; an item list that differs (re-import, new items) is a stale cache.
    pub fn load(cache: &Path, dataset: &Dataset) -> Result<Features> {
        let m = Manifest::read(cache)?;
        let stale = |reason: String| Error::Stale { path: cache.to_path_buf(), reason };
        if m.items.len() != dataset.items.len() || m.items.iter().zip(&dataset.items).any(|(e, it)| e.id != it.id) {
            return Err(stale(format!(
                "built for {} items, the dataset has {} (or in another order); run `m6rec features` again (unchanged media are reused)",
                m.items.len(),
                dataset.items.len()
            )));
        }
        let read = |file: &str, name: &str| -> Result<Tensor> {
            let path = cache.join(file);
            let tensors = Tensor::read_safetensors(&path).map_err(|e| stale(format!("{file}: {e}")))?;
            tensors.into_iter().find(|(n, _)| n == name).map(|(_, t)| t).ok_or_else(|| stale(format!("{file} has no `{name}`")))
        };
        let pixels = read("images.safetensors", "pixels")?;
        let log_mel = read("audio.safetensors", "log_mel")?;
        let n = m6rec_tensor::dim::to_i64("items", dataset.items.len())?;
        if pixels.size().first() != Some(&n) || log_mel.size().first() != Some(&n) {
            return Err(stale(format!("tensors have {:?} and {:?} rows, expected {n}", pixels.size(), log_mel.size())));
        }
        let mut flags = Vec::with_capacity(dataset.items.len() * 3);
        for (e, it) in m.items.iter().zip(&dataset.items) {
            let has_text = !it.title.trim().is_empty() || it.text.as_deref().is_some_and(|t| !t.trim().is_empty());
            flags.push(has_text);
            flags.push(e.image.as_ref().is_some_and(|x| x.ok));
            flags.push(e.audio.as_ref().is_some_and(|x| x.ok));
        }
        let present = Tensor::from_slice(&flags).view([n, 3]).to_kind(Kind::Bool);
        Ok(Features { config: m.config, pixels, log_mel, present })
    }
}
