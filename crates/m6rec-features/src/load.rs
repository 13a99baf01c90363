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
    /// `[n_with_image, 3, size, size]` u8, decoded items only (see [`Features::images`]).
    pub pixels: Tensor,
    /// `[n_with_audio, 1, n_mels, n_frames]` f32 decibels, decoded items only (see [`Features::audio`]).
    pub log_mel: Tensor,
    /// Row of each item in `pixels`, `-1` when it has no decoded image.
    pub image_row: Vec<i64>,
    /// Row of each item in `log_mel`, `-1` when it has no decoded audio.
    pub audio_row: Vec<i64>,
    /// `[n_with_text, dim]` f32 embeddings from the frozen text encoder (`[0, 0]` when none was configured).
    pub text_emb: Tensor,
    /// Row of each item in `text_emb`, `-1` when it has none.
    pub text_row: Vec<i64>,
    /// `[n_items, 3]` bool: has text, has a decoded image, has decoded audio. Absent modalities must be masked out,
    /// not read as zeros.
    pub present: Tensor,
}

impl Features {
    /// Loads the cache built for `dataset`; an item list that differs (re-import, new items) is a stale cache.
    pub fn load(cache: &Path, dataset: &Dataset) -> Result<Features> {
        // A build killed between its two renames left the cache under a hidden name: put it back first.
        m6rec_tensor::atomic::recover(cache, Some(crate::build::FEATURES_DIR));
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
            tensors
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t)
                .ok_or_else(|| stale(format!("{file} has no `{name}`")))
        };
        let pixels = read("images.safetensors", "pixels")?;
        let log_mel = read("audio.safetensors", "log_mel")?;
        let n = m6rec_tensor::dim::to_i64("items", dataset.items.len())?;
        let rows = |pick: &dyn Fn(&crate::manifest::ItemEntry) -> Option<usize>| -> Vec<i64> {
            m.items.iter().map(|e| pick(e).and_then(|r| i64::try_from(r).ok()).unwrap_or(-1)).collect()
        };
        let image_row = rows(&|e| e.image.as_ref().and_then(|x| x.row));
        let audio_row = rows(&|e| e.audio.as_ref().and_then(|x| x.row));
        let text_row = rows(&|e| e.text.as_ref().and_then(|x| x.row));
        let text_emb = if m.config.text.is_some() {
            read("text.safetensors", "embeddings")?
        } else {
            Tensor::zeros([0, 0], tch::kind::FLOAT_CPU)
        };
        for (name, t, r) in
            [("images", &pixels, &image_row), ("audio", &log_mel, &audio_row), ("text", &text_emb, &text_row)]
        {
            let have = t.size().first().copied().unwrap_or(0);
            if r.iter().any(|&x| x >= have) {
                return Err(stale(format!("{name} tensor has {have} rows, the manifest points past them; rebuild")));
            }
        }
        let mut flags = Vec::with_capacity(dataset.items.len() * 3);
        for (e, it) in m.items.iter().zip(&dataset.items) {
            let has_text = match &m.config.text {
                Some(_) => e.text.as_ref().is_some_and(|x| x.row.is_some()),
                None => !crate::build::item_text(it).is_empty(),
            };
            flags.push(has_text);
            flags.push(e.image.as_ref().is_some_and(|x| x.row.is_some()));
            flags.push(e.audio.as_ref().is_some_and(|x| x.row.is_some()));
        }
        let present = Tensor::from_slice(&flags).view([n, 3]).to_kind(Kind::Bool);
        Ok(Features { config: m.config, pixels, log_mel, image_row, audio_row, text_emb, text_row, present })
    }

    /// Images of the given items (dense item indices), `[items.len(), 3, size, size]` u8, zero where absent; use
    /// `present` to mask those out.
    pub fn images(&self, items: &[u32]) -> Result<Tensor> {
        gather(&self.pixels, &self.image_row, items)
    }

    /// Spectrograms of the given items, `[items.len(), 1, n_mels, n_frames]`, zero where absent.
    pub fn audio(&self, items: &[u32]) -> Result<Tensor> {
        gather(&self.log_mel, &self.audio_row, items)
    }

    /// Text embeddings of the given items, `[items.len(), dim]`, zero where absent (or `[n, 0]` without a text encoder).
    pub fn texts(&self, items: &[u32]) -> Result<Tensor> {
        gather(&self.text_emb, &self.text_row, items)
    }
}

fn gather(table: &Tensor, row_of: &[i64], items: &[u32]) -> Result<Tensor> {
    let mut rows = Vec::with_capacity(items.len());
    for &i in items {
        let r = row_of
            .get(i as usize)
            .copied()
            .ok_or_else(|| Error::Config(format!("item index {i} is out of range ({} items)", row_of.len())))?;
        rows.push(r);
    }
    let mut shape = table.size();
    shape[0] = m6rec_tensor::dim::to_i64("items", items.len())?;
    if table.size()[0] == 0 {
        return Ok(Tensor::zeros(shape.as_slice(), (table.kind(), table.device())));
    }
    let idx = Tensor::from_slice(&rows);
    let present = idx.ge(0);
    let picked = table.index_select(0, &idx.clamp_min(0));
    let mut mask_shape = vec![shape[0]];
    mask_shape.extend(std::iter::repeat_n(1, shape.len() - 1));
    Ok(picked * present.view(mask_shape.as_slice()).to_kind(table.kind()))
}
