//! What an item tower reads: per-modality inputs for every catalog item and which items have which modality (the
//! tower that reads them is [`crate::items`]).
//!
//! Text arrives as fixed vectors (frozen MiniLM embeddings from the feature cache); the tower's projection of it
//! trains. Images and audio arrive as pixels and log-mel spectrograms and pass through small CNNs that train with the
//! recommender. Running a CNN over the whole catalog at every step is too slow on a CPU, so the encoders' outputs for
//! every item are cached and recomputed in full every `refresh_every` steps; at each step only up to `grad_items` of
//! the batch's items are re-encoded with gradients and written over their cached rows (and the cache updated).

use crate::{Error, Result};
use m6rec_tensor::cnn::ConvNetConfig;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// A modality name in `[content] modalities`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModalityName {
    /// Text embeddings from the feature cache.
    Text,
    /// Images (pixels from the feature cache) through a trainable CNN.
    Image,
    /// Audio (log-mel spectrograms from the feature cache) through a trainable CNN.
    Audio,
}

impl ModalityName {
    /// Lower-case name, as in TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            ModalityName::Text => "text",
            ModalityName::Image => "image",
            ModalityName::Audio => "audio",
        }
    }
}

/// `[content]`: which modalities an item tower reads and how its image and audio encoders train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentConfig {
    /// Modalities in tower order. Default `["text"]`.
    #[serde(default = "dc::modalities")]
    pub modalities: Vec<ModalityName>,
    /// Shape of the image and audio CNNs.
    #[serde(default)]
    pub encoder: ConvNetConfig,
    /// Items per step re-encoded with gradients (images and audio). Default 128.
    #[serde(default = "dc::grad_items")]
    pub grad_items: usize,
    /// Steps between full recomputations of the cached image and audio embeddings. Default 50.
    #[serde(default = "dc::refresh_every")]
    pub refresh_every: u64,
    /// Text vectors are centred on their catalog's mean and scaled to unit length before the tower (see
    /// [`center_rows`]), so a model trained on one catalog reads another's text in the same frame: sentence
    /// embeddings of one domain share a large common direction that differs between domains. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub center_text: bool,
    /// Every score gains `s² · cos(text of the user's most recent item, text of the candidate)`, with `s` learned
    /// (`tower.sim_scale`, starting at 2): a "more like the last one" prior over frozen text vectors that means the
    /// same in every catalog, so it carries over to domains the model never trained on. The item table gets the
    /// scaled unit text vectors as extra columns (see `SeqRec::forward`). Needs `"text"`. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub similarity: bool,
    /// With `similarity`: `s` fixed at this value instead of learned (still saved as `tower.sim_scale`). A source
    /// domain where "more like the last one" matters little teaches a small `s`, and the transferred model then
    /// leans on what it learned about the source domain; a fixed `s` keeps the prior's weight. Default: learned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similarity_scale: Option<f64>,
}

mod dc {
    pub fn modalities() -> Vec<super::ModalityName> {
        vec![super::ModalityName::Text]
    }
    pub fn grad_items() -> usize {
        128
    }
    pub fn refresh_every() -> u64 {
        50
    }
}

impl Default for ContentConfig {
    fn default() -> Self {
        ContentConfig {
            modalities: dc::modalities(),
            encoder: ConvNetConfig::default(),
            grad_items: dc::grad_items(),
            refresh_every: dc::refresh_every(),
            center_text: false,
            similarity: false,
            similarity_scale: None,
        }
    }
}

impl ContentConfig {
    /// Checks the modality list and the step counts.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.modalities.is_empty() {
            return Err("content.modalities is empty; name at least one of \"text\", \"image\", \"audio\"".into());
        }
        for (i, m) in self.modalities.iter().enumerate() {
            if self.modalities[..i].contains(m) {
                return Err(format!("content.modalities names {:?} twice", m.as_str()));
            }
        }
        if self.grad_items == 0 || self.refresh_every == 0 {
            return Err("content.grad_items and content.refresh_every must be at least 1".into());
        }
        if self.similarity && !self.modalities.contains(&ModalityName::Text) {
            return Err("content.similarity compares items by their text: add \"text\" to content.modalities".into());
        }
        Ok(())
    }
}

/// One modality's input for every catalog item.
#[derive(Debug)]
pub enum Modality {
    /// Fixed vectors `[n_items, dim]` (zero rows where absent), for example frozen text embeddings.
    Vectors(Tensor),
    /// Decoded images `[n_rows, 3, h, w]` u8 with `row_of[item]` (`-1` = none), normalised with `mean`/`std` (per
    /// channel, on 0..1 values) before the CNN.
    Images {
        /// Pixels of the items that have an image.
        pixels: Tensor,
        /// Row of each item in `pixels`, or -1.
        row_of: Vec<i64>,
        /// Channel means.
        mean: [f64; 3],
        /// Channel standard deviations.
        std: [f64; 3],
    },
    /// Log-mel spectrograms `[n_rows, 1, n_mels, n_frames]` with `row_of[item]` (`-1` = none).
    Audio {
        /// Spectrograms of the items that have audio.
        log_mel: Tensor,
        /// Row of each item in `log_mel`, or -1.
        row_of: Vec<i64>,
    },
}

impl Modality {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Modality::Vectors(_) => "vectors",
            Modality::Images { .. } => "images",
            Modality::Audio { .. } => "audio",
        }
    }
}

/// Rows of `x` (`[n, dim]`) minus the mean of the rows where `present` (`[n]` bool) is true, each then scaled to
/// unit length; absent rows become zero.
pub fn center_rows(x: &Tensor, present: &Tensor) -> Tensor {
    center_with(x, present, &text_mean(x, present))
}

/// The mean `[1, dim]` of the rows of `x` where `present` is true (zeros when none is).
pub fn text_mean(x: &Tensor, present: &Tensor) -> Tensor {
    let mask = present.to_kind(Kind::Float).unsqueeze(-1); // [n, 1]
    let count = mask.sum(Kind::Float).clamp_min(1.0);
    (x.to_kind(Kind::Float) * &mask).sum_dim_intlist(0, true, Kind::Float) / count
}

/// [`center_rows`] with a given mean (items added to a catalog are centred on the catalog's mean).
pub fn center_with(x: &Tensor, present: &Tensor, mean: &Tensor) -> Tensor {
    let mask = present.to_kind(Kind::Float).unsqueeze(-1);
    let centred = (x.to_kind(Kind::Float) - mean) * &mask;
    let norm = centred.norm_scalaropt_dim(2.0, [-1], true).clamp_min(1e-8);
    centred / norm
}

/// Content of every catalog item, row `i` = item `i`: one [`Modality`] each and a `[n_items, M]` presence mask.
#[derive(Debug)]
pub struct ItemContent {
    pub(crate) modalities: Vec<Modality>,
    pub(crate) present: Tensor,
}

impl ItemContent {
    /// Fixed vectors only: checks that every input is `[n_items, dim]` and `present` is `[n_items, inputs.len()]`.
    pub fn new(inputs: Vec<Tensor>, present: Tensor, n_items: usize) -> Result<ItemContent> {
        ItemContent::from_modalities(inputs.into_iter().map(Modality::Vectors).collect(), present, n_items)
    }

    /// Any mix of modalities; checks every shape and row index against `n_items`.
    pub fn from_modalities(modalities: Vec<Modality>, present: Tensor, n_items: usize) -> Result<ItemContent> {
        let n = m6rec_tensor::dim::to_i64("n_items", n_items)?;
        let bad = |reason: String| Err(Error::Content(reason));
        if modalities.is_empty() {
            return bad("no modality given".into());
        }
        let mut out = Vec::with_capacity(modalities.len());
        for (i, m) in modalities.into_iter().enumerate() {
            let (data, row_of, rank) = match &m {
                Modality::Vectors(x) => {
                    if x.dim() != 2 || x.size()[0] != n || x.size()[1] < 1 {
                        return bad(format!("modality {i} is {:?}, expected [{n}, dim]", x.size()));
                    }
                    out.push(Modality::Vectors(x.to_kind(Kind::Float)));
                    continue;
                }
                Modality::Images { pixels, row_of, .. } => (pixels, row_of, 4),
                Modality::Audio { log_mel, row_of } => (log_mel, row_of, 4),
            };
            let rows = data.size().first().copied().unwrap_or(0);
            if data.dim() != rank || (m.name() == "images" && data.size()[1] != 3) {
                return bad(format!("modality {i} ({}) is {:?}", m.name(), data.size()));
            }
            if row_of.len() != n_items || row_of.iter().any(|&r| r < -1 || r >= rows) {
                return bad(format!(
                    "modality {i} ({}): {} row indices for {n} items, each must be -1 or in 0..{rows}",
                    m.name(),
                    row_of.len()
                ));
            }
            out.push(m);
        }
        let m = m6rec_tensor::dim::to_i64("modalities", out.len())?;
        if present.size() != [n, m] {
            return bad(format!("present is {:?}, expected [{n}, {m}]", present.size()));
        }
        Ok(ItemContent { modalities: out, present: present.to_kind(Kind::Bool) })
    }

    /// Number of modalities.
    pub fn len(&self) -> usize {
        self.modalities.len()
    }

    /// Whether there is no modality (never, after construction).
    pub fn is_empty(&self) -> bool {
        self.modalities.is_empty()
    }

    pub(crate) fn n_items(&self) -> i64 {
        self.present.size()[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Centring makes a catalog's text independent of a shift shared by all its items (what differs between
        /// domains), gives present rows unit length and zeroes absent rows.
        #[test]
        fn centred_rows_ignore_a_shared_shift(
            values in proptest::collection::vec(-3.0f32..3.0, 24),
            shift in proptest::collection::vec(-5.0f32..5.0, 4),
            present in proptest::collection::vec(any::<bool>(), 6),
        ) {
            let x = Tensor::from_slice(&values).view([6, 4]);
            let mask = Tensor::from_slice(&present.iter().map(|&p| i64::from(p)).collect::<Vec<_>>()).gt(0);
            // A row (almost) at the mean has no direction to keep: float error decides it.
            let m = mask.to_kind(Kind::Float).unsqueeze(-1);
            let mean = (&x * &m).sum_dim_intlist(0, true, Kind::Float) / m.sum(Kind::Float).clamp_min(1.0);
            let dist: Tensor = ((&x - mean) * &m).norm_scalaropt_dim(2.0, [-1], false) + (m.squeeze_dim(-1) * -1.0 + 1.0);
            prop_assume!(dist.min().double_value(&[]) > 0.05);
            let shifted = &x + Tensor::from_slice(&shift).view([1, 4]);
            let a = center_rows(&x, &mask);
            let b = center_rows(&shifted, &mask);
            prop_assert!(a.allclose(&b, 1e-4, 1e-4, false));
            let norms = Vec::<f32>::try_from(a.norm_scalaropt_dim(2.0, [-1], false)).unwrap_or_default();
            for (norm, &p) in norms.iter().zip(&present) {
                if !p {
                    prop_assert!(norm.abs() < 1e-6);
                } else {
                    prop_assert!((norm - 1.0).abs() < 1e-4);
                }
            }
        }
    }
}
