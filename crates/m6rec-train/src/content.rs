//! What an item tower reads: per-modality inputs for every catalog item, which items have which modality, and the
//! trainable image and audio encoders with their catalog-embedding cache.
//!
//! Text arrives as fixed vectors (frozen MiniLM embeddings from the feature cache); the tower's projection of it
//! trains. Images and audio arrive as pixels and log-mel spectrograms and pass through small CNNs that train with the
//! recommender. Running a CNN over the whole catalog at every step is too slow on a CPU, so the encoders' outputs for
//! every item are cached and recomputed in full every `refresh_every` steps; at each step only up to `grad_items` of
//! the batch's items are re-encoded with gradients and written over their cached rows (and the cache updated).

use crate::{Error, Result};
use m6rec_audio::AudioEncoder;
use m6rec_fusion::{ItemTower, ItemTowerConfig};
use m6rec_image::ImageEncoder;
use m6rec_tensor::cnn::ConvNetConfig;
use m6rec_tensor::Mode;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

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
    /// scaled unit text vectors as extra columns (see `SeqRec::states_with`). Needs `"text"`. Default false.
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
    fn name(&self) -> &'static str {
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
    modalities: Vec<Modality>,
    present: Tensor,
}

impl ItemContent {
    /// Fixed vectors only: checks that every input is `[n_items, dim]` and `present` is `[n_items, inputs.len()]`.
    pub fn new(inputs: Vec<Tensor>, present: Tensor, n_items: usize) -> Result<ItemContent> {
        ItemContent::from_modalities(inputs.into_iter().map(Modality::Vectors).collect(), present, n_items)
    }

    /// Any mix of modalities; checks every shape and row index against `n_items`.
    pub fn from_modalities(modalities: Vec<Modality>, present: Tensor, n_items: usize) -> Result<ItemContent> {
        let n = m6rec_tensor::dim::to_i64("n_items", n_items)?;
        let bad = |reason: String| Err(Error::NoData(format!("item content: {reason}")));
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

    fn n_items(&self) -> i64 {
        self.present.size()[0]
    }
}

#[derive(Debug)]
enum Encoder {
    /// The CNN with the channel mean and std (`[1, 3, 1, 1]`) applied to 0..1 pixels.
    Image(ImageEncoder, Tensor, Tensor),
    Audio(AudioEncoder),
}

/// A trainable encoder, its inputs and its per-item output cache.
#[derive(Debug)]
struct Encoded {
    encoder: Encoder,
    data: Tensor,
    row_of: Vec<i64>,
    /// `[n_items, out_dim]`, detached; zero rows for items without the modality.
    cache: Tensor,
}

impl Encoder {
    /// Rows `rows` (`-1`: none, a zero output) of `data` through the encoder.
    fn run(&self, data: &Tensor, rows: &[i64]) -> Tensor {
        let rows = Tensor::from_slice(rows).to_device(data.device());
        let has = rows.ge(0).unsqueeze(-1).to_kind(Kind::Float);
        let x = data.index_select(0, &rows.clamp_min(0)).to_kind(Kind::Float);
        let out = match self {
            Encoder::Image(enc, mean, std) => enc.forward(&((x / 255.0 - mean) / std)),
            Encoder::Audio(enc) => enc.forward(&x),
        };
        out * has
    }
}

impl Encoded {
    /// Encodes `items` (`[k]` int64), with gradients when enabled; rows of items without the modality are 0.
    fn encode(&self, items: &Tensor) -> Tensor {
        let ids = Vec::<i64>::try_from(items.to_device(Device::Cpu)).unwrap_or_default();
        let rows: Vec<i64> = ids
            .iter()
            .map(|&i| usize::try_from(i).ok().and_then(|i| self.row_of.get(i)).copied().unwrap_or(-1))
            .collect();
        self.encoder.run(&self.data, &rows)
    }

    /// Every item's embedding, in batches, without gradients.
    fn encode_all(&self) -> Tensor {
        let n = self.cache.size()[0];
        let device = self.cache.device();
        tch::no_grad(|| {
            let mut parts = Vec::new();
            let mut start = 0;
            while start < n {
                let len = ENCODE_BATCH.min(n - start);
                parts.push(self.encode(&Tensor::arange_start(start, start + len, (Kind::Int64, device))));
                start += len;
            }
            if parts.is_empty() {
                self.cache.zeros_like()
            } else {
                Tensor::cat(&parts, 0)
            }
        })
    }
}

#[derive(Debug)]
enum Slot {
    Fixed(Tensor),
    Encoded(Encoded),
}

/// An item tower with the content it reads: the item table of the sequence model.
#[derive(Debug)]
pub struct ContentItems {
    tower: ItemTower,
    slots: Vec<Slot>,
    present: Tensor,
    grad_items: i64,
    refresh_every: u64,
    steps: u64,
    /// `content.similarity`: the text slot's index, unit text vectors `[n, dim]` (zero rows without text) and the
    /// learned scale `s`.
    similarity: Option<Similarity>,
}

#[derive(Debug)]
struct Similarity {
    slot: usize,
    unit: Tensor,
    scale: Tensor,
}

impl Similarity {
    fn unit(x: &Tensor) -> Tensor {
        let x = x.to_kind(Kind::Float);
        let norm = x.norm_scalaropt_dim(2.0, [-1], true);
        // Rows without text are zero and stay zero (no similarity to anything).
        &x / norm.clamp_min(1e-12)
    }

    /// `table` with `s · unit` appended as extra columns.
    fn extend(&self, table: Tensor, unit: &Tensor) -> Tensor {
        Tensor::cat(&[table, unit * &self.scale], 1)
    }
}

const ENCODE_BATCH: i64 = 256;

impl ContentItems {
    /// Creates the tower's variables under `vs` (`tower.*` in checkpoints; image and audio CNNs under
    /// `tower.enc.{m}.*`) for `content` on `device`.
    pub fn new(
        vs: &nn::Path<'_>,
        cfg: &ItemTowerConfig,
        content_cfg: &ContentConfig,
        content: &ItemContent,
        d_model: i64,
    ) -> Result<ContentItems> {
        ContentItems::build(vs, cfg, content_cfg, content, d_model, content.n_items())
    }

    /// A tower trained on another catalog of `trained_items` items, reading `content` of a new catalog (zero-shot
    /// transfer): its variables have the trained shapes, and no item of the new catalog gets an id embedding (call
    /// [`ContentItems::set_seen`] with nothing seen after loading the weights).
    pub fn for_new_catalog(
        vs: &nn::Path<'_>,
        cfg: &ItemTowerConfig,
        content_cfg: &ContentConfig,
        content: &ItemContent,
        d_model: i64,
        trained_items: i64,
    ) -> Result<ContentItems> {
        if cfg.mode == m6rec_fusion::TowerMode::IdOnly {
            return Err(Error::NoData(
                "an id_only item tower cannot represent another catalog's items; zero-shot transfer needs content_only or hybrid".into(),
            ));
        }
        ContentItems::build(vs, cfg, content_cfg, content, d_model, trained_items)
    }

    fn build(
        vs: &nn::Path<'_>,
        cfg: &ItemTowerConfig,
        content_cfg: &ContentConfig,
        content: &ItemContent,
        d_model: i64,
        id_rows: i64,
    ) -> Result<ContentItems> {
        let device = vs.device();
        let n = content.n_items();
        let out_dim = content_cfg.encoder.out_dim;
        let mut dims = Vec::with_capacity(content.len());
        let mut slots = Vec::with_capacity(content.len());
        for (i, m) in content.modalities.iter().enumerate() {
            let path = vs / "enc" / i;
            let (encoder, data, row_of) = match m {
                Modality::Vectors(x) => {
                    dims.push(x.size()[1]);
                    slots.push(Slot::Fixed(x.to_device(device)));
                    continue;
                }
                Modality::Images { pixels, row_of, mean, std } => {
                    let m =
                        Tensor::from_slice(mean.as_slice()).to_kind(Kind::Float).to_device(device).view([1, 3, 1, 1]);
                    let s =
                        Tensor::from_slice(std.as_slice()).to_kind(Kind::Float).to_device(device).view([1, 3, 1, 1]);
                    (Encoder::Image(ImageEncoder::new(&path, &content_cfg.encoder), m, s), pixels, row_of)
                }
                Modality::Audio { log_mel, row_of } => {
                    (Encoder::Audio(AudioEncoder::new(&path, &content_cfg.encoder)), log_mel, row_of)
                }
            };
            dims.push(out_dim);
            let cache = Tensor::zeros([n, out_dim], (Kind::Float, device));
            slots.push(Slot::Encoded(Encoded { encoder, data: data.to_device(device), row_of: row_of.clone(), cache }));
        }
        let tower =
            ItemTower::new(vs, cfg, &dims, id_rows, d_model).map_err(|e| Error::NoData(format!("item tower: {e}")))?;
        let similarity = if content_cfg.similarity {
            let found = slots.iter().enumerate().find_map(|(i, s)| match s {
                Slot::Fixed(x) => Some((i, Similarity::unit(x))),
                Slot::Encoded(_) => None,
            });
            let Some((slot, unit)) = found else {
                return Err(Error::NoData(
                    "content.similarity compares items by their text, and this content has no text vectors".into(),
                ));
            };
            let scale = match content_cfg.similarity_scale {
                Some(v) => {
                    let mut t = vs.ones_no_train("sim_scale", &[1]);
                    let _ = tch::no_grad(|| t.fill_(v));
                    t
                }
                None => vs.var("sim_scale", &[1], nn::Init::Const(2.0)),
            };
            Some(Similarity { slot, unit, scale })
        } else {
            None
        };
        Ok(ContentItems {
            similarity,
            tower,
            slots,
            present: content.present.to_device(device),
            grad_items: m6rec_tensor::dim::to_i64("content.grad_items", content_cfg.grad_items)?,
            refresh_every: content_cfg.refresh_every,
            steps: 0,
        })
    }

    fn n_items(&self) -> i64 {
        self.present.size()[0]
    }

    fn encoders(&mut self) -> impl Iterator<Item = &mut Encoded> {
        self.slots.iter_mut().filter_map(|s| match s {
            Slot::Encoded(e) => Some(e),
            Slot::Fixed(_) => None,
        })
    }

    /// Marks the items seen in training (see [`ItemTower::set_seen`]): in hybrid mode the others are represented by
    /// their content alone.
    pub fn set_seen(&mut self, seen: &[bool]) {
        self.tower.set_seen(seen);
    }

    /// Whether any modality goes through a trainable encoder (images, audio).
    pub fn has_encoders(&self) -> bool {
        self.slots.iter().any(|s| matches!(s, Slot::Encoded(_)))
    }

    /// Recomputes every encoder's cached embeddings over the whole catalog (no gradients).
    pub fn refresh(&mut self) {
        for e in self.encoders() {
            e.cache = e.encode_all();
        }
    }

    /// The item table `[n_items, d_model]` (plus the text columns with `similarity`) for one training step, with
    /// gradients. `batch_items` are the items the step's batch uses (any shape, repeats allowed): up to `grad_items`
    /// of them are re-encoded with gradients and the rest read the cache, which is refreshed in full every
    /// `refresh_every` steps.
    pub fn table_for_step(&mut self, batch_items: &Tensor) -> Result<Tensor> {
        let device = self.present.device();
        if self.has_encoders() && self.steps.is_multiple_of(self.refresh_every) {
            self.refresh();
        }
        self.steps += 1;
        let grad = if self.has_encoders() {
            let unique = batch_items.to_device(device).view([-1]).unique_dim(0, false, false, false).0;
            let k = unique.size()[0];
            if k > self.grad_items {
                unique.index_select(0, &Tensor::randperm(k, (Kind::Int64, device)).narrow(0, 0, self.grad_items))
            } else {
                unique
            }
        } else {
            Tensor::zeros([0], (Kind::Int64, device))
        };
        let mut inputs = Vec::with_capacity(self.slots.len());
        for slot in &mut self.slots {
            match slot {
                Slot::Fixed(x) => inputs.push(x.shallow_clone()),
                Slot::Encoded(e) if grad.size()[0] > 0 => {
                    let fresh = e.encode(&grad);
                    let x = e.cache.index_put(&[Some(grad.shallow_clone())], &fresh, false);
                    // Keep what this step computed: between full refreshes the cache moves with the encoder.
                    e.cache = x.detach();
                    inputs.push(x);
                }
                Slot::Encoded(e) => inputs.push(e.cache.shallow_clone()),
            }
        }
        let items = Tensor::arange(self.n_items(), (Kind::Int64, device));
        let table = self
            .tower
            .forward(&items, &inputs, &self.present, Mode::Train)
            .map_err(|e| Error::NoData(format!("item tower: {e}")))?;
        Ok(match &self.similarity {
            Some(sim) => sim.extend(table, &sim.unit),
            None => table,
        })
    }

    /// Embeddings `[n, d_model]` of items outside the table (added after training, for serving): `content` holds
    /// their modalities in this tower's order (vectors for text, pixels or log-mels with row indices for images and
    /// audio); `ids[i]` is the item's row in the training catalog when it has one (an update of a known item keeps
    /// its id embedding in hybrid mode), or `-1`.
    pub fn embed_new(&self, content: &ItemContent, ids: &[i64]) -> Result<Tensor> {
        let n = content.n_items();
        if content.len() != self.slots.len() || usize::try_from(n).ok() != Some(ids.len()) {
            return Err(Error::NoData(format!(
                "new items: {} modalities for {} ids, the tower reads {} modalities",
                content.len(),
                ids.len(),
                self.slots.len()
            )));
        }
        let device = self.present.device();
        tch::no_grad(|| {
            let mut inputs = Vec::with_capacity(self.slots.len());
            for (i, (slot, m)) in self.slots.iter().zip(&content.modalities).enumerate() {
                inputs.push(match (slot, m) {
                    (Slot::Fixed(_), Modality::Vectors(x)) => x.to_device(device),
                    (Slot::Encoded(e), Modality::Images { pixels, row_of, .. })
                        if matches!(e.encoder, Encoder::Image(..)) =>
                    {
                        e.encoder.run(&pixels.to_device(device), row_of)
                    }
                    (Slot::Encoded(e), Modality::Audio { log_mel, row_of })
                        if matches!(e.encoder, Encoder::Audio(..)) =>
                    {
                        e.encoder.run(&log_mel.to_device(device), row_of)
                    }
                    (_, m) => {
                        return Err(Error::NoData(format!(
                            "new items: modality {i} is {}, not what the tower reads there",
                            m.name()
                        )))
                    }
                });
            }
            let items = Tensor::from_slice(ids).to_device(device);
            let table = self
                .tower
                .embed_all(&items, &inputs, &content.present.to_device(device), ENCODE_BATCH)
                .map_err(|e| Error::NoData(format!("item tower: {e}")))?;
            Ok(match &self.similarity {
                Some(sim) => {
                    let unit = inputs.get(sim.slot).map(Similarity::unit).unwrap_or_else(|| sim.unit.narrow(0, 0, 0));
                    sim.extend(table, &unit)
                }
                None => table,
            })
        })
    }

    /// The item table without gradients, every encoder run fresh over the catalog (evaluation and serving).
    pub fn table_eval(&self) -> Result<Tensor> {
        let items = Tensor::arange(self.n_items(), (Kind::Int64, self.present.device()));
        let inputs: Vec<Tensor> = self
            .slots
            .iter()
            .map(|s| match s {
                Slot::Fixed(x) => x.shallow_clone(),
                Slot::Encoded(e) => e.encode_all(),
            })
            .collect();
        let table = self
            .tower
            .embed_all(&items, &inputs, &self.present, 4096)
            .map_err(|e| Error::NoData(format!("item tower: {e}")))?;
        Ok(match &self.similarity {
            Some(sim) => tch::no_grad(|| sim.extend(table, &sim.unit)),
            None => table,
        })
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
