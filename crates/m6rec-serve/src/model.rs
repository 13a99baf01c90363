//! A loaded checkpoint as the service uses it: the item table (catalog plus items added since), the frozen text
//! encoder for new items' text, and the per-user state cache.

use crate::error::{ApiError, Result};
use m6rec_recommender::content::{ItemContent, Modality, ModalityName};
use m6rec_recommender::generative::GenerativeModel;
use m6rec_recommender::Recommender;
use std::collections::HashMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

/// An item decoded and ready to embed (media already preprocessed, off the model thread).
#[derive(Debug, Clone)]
pub struct Prepared {
    /// `title. text`, as the feature cache embeds it.
    pub text: String,
    /// Preprocessed image.
    pub pixels: Option<m6rec_image::Pixels>,
    /// Log-mel spectrogram.
    pub mel: Option<m6rec_audio::LogMel>,
    /// Domain name.
    pub domain: String,
}

/// Where a model comes from.
#[derive(Debug, Clone)]
pub struct ModelSource {
    /// Checkpoint directory.
    pub checkpoint: PathBuf,
    /// Dataset directory it was trained on.
    pub data: PathBuf,
    /// Feature cache (default: beside the dataset).
    pub features: Option<PathBuf>,
    /// Text encoder folder for new items' text (default: the one the feature cache was built with).
    pub text_model: Option<PathBuf>,
    /// Device.
    pub device: Device,
    /// Top-k index over the item table.
    pub index: crate::index::IndexKind,
}

/// An embedding model: scores are dot products of a user state with the item table.
pub struct Embedding {
    /// The checkpoint.
    pub loaded: Recommender,
    /// `[rows, d_model]`: the training catalog, then items added since (in catalog order).
    pub table: Tensor,
    /// Top-k over `table` (exact or HNSW).
    pub index: crate::index::ItemIndex,
    /// Cached user states by user id: (history version, `[d_model]`).
    pub cache: HashMap<String, (u64, Tensor)>,
}

impl Embedding {
    /// Longest history the model reads.
    pub fn max_len(&self) -> usize {
        usize::try_from(self.loaded.config.run.model.max_len).unwrap_or(1)
    }

    /// Rows of the item table.
    pub fn rows(&self) -> usize {
        m6rec_tensor::dim::as_usize(self.table.size()[0])
    }

    /// Tunes an approximate index that has a target recall ([`crate::index::ItemIndex::tune`]) on the states of up to
    /// 500 of the dataset's users (every second one by id from the second: the half that `Service::index_recall` does
    /// not measure on), here on the loading thread so that a reload does not stall the model thread; says on stderr
    /// what it chose.
    fn tune_index(&mut self, ds: &m6rec_data::Dataset) {
        if !self.index.is_approximate() {
            return;
        }
        let split = m6rec_data::Split::leave_one_out(&ds.interactions, ds.n_users());
        let mut users: Vec<(&String, &[u32])> =
            ds.users.iter().enumerate().map(|(u, id)| (id, split.sequence(u))).filter(|(_, h)| !h.is_empty()).collect();
        users.sort_by(|a, b| a.0.cmp(b.0));
        let hist: Vec<&[u32]> = users.into_iter().skip(1).step_by(2).take(500).map(|(_, h)| h).collect();
        if hist.is_empty() {
            return;
        }
        let states = m6rec_data::SeqBatch::for_prediction(&hist, self.max_len(), self.rows())
            .map_err(|e| e.to_string())
            .and_then(|batch| tch::no_grad(|| self.loaded.user_states(&batch, &self.table)).map_err(|e| e.to_string()));
        match states {
            Ok(states) => {
                if let Some(recall) = self.index.tune(&states.to_device(Device::Cpu), 10) {
                    let why = if self.index.is_approximate() {
                        ""
                    } else {
                        " (IVF needed more than a third of its cells to reach its target recall)"
                    };
                    tracing::info!(
                        "top-k index: {}{why}; recall@10 {recall:.3} over {} users' states",
                        self.index.describe(),
                        hist.len()
                    );
                }
            }
            Err(e) => tracing::warn!("top-k index: not tuned ({e}); {}", self.index.describe()),
        }
    }
}

/// What kind of model is served.
pub enum Backend {
    /// A user state against the item table ([`Recommender`]).
    Embedding(Box<Embedding>),
    /// Generative retrieval over semantic IDs: the ranking is a constrained beam search; new items get codes from
    /// their text.
    Generative(Box<GenerativeModel>),
}

/// The model side of the service.
pub struct Model {
    /// The model.
    pub backend: Backend,
    /// Load counter.
    pub generation: u64,
    /// Its checkpoint directory.
    pub checkpoint: PathBuf,
    text: Option<(tch::nn::VarStore, m6rec_text::TextEncoder)>,
    text_mean: Option<Tensor>,
    /// How the feature cache was built (models that read content): how new items' media are preprocessed.
    pub features: Option<m6rec_features::FeatureConfig>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("generation", &self.generation).field("checkpoint", &self.checkpoint).finish()
    }
}

fn not_embedding() -> ApiError {
    ApiError::invalid(
        "not_an_embedding_model",
        "the served model is generative (semantic IDs and beam search): it has no item table or top-k index",
    )
}

impl Model {
    /// Loads the checkpoint (an embedding or a generative one) with its dataset and feature cache, and the text
    /// encoder when the model reads text.
    pub fn load(src: &ModelSource, generation: u64) -> Result<(Model, m6rec_data::Dataset)> {
        if GenerativeModel::is_checkpoint(&src.checkpoint) {
            return Self::load_generative(src, generation);
        }
        let (ds, loaded) =
            m6rec_recommender::open::open_model(src.device, &src.data, &src.checkpoint, src.features.as_deref())?;
        let table = loaded.item_table()?;
        let index = crate::index::ItemIndex::build(&table.to_device(Device::Cpu), src.index);
        let mut emb = Embedding { loaded, table, index, cache: HashMap::new() };
        emb.tune_index(&ds);
        let run = emb.loaded.config.run.clone();
        let mut model = Model {
            backend: Backend::Embedding(Box::new(emb)),
            generation,
            checkpoint: src.checkpoint.clone(),
            text: None,
            text_mean: None,
            features: None,
        };
        if run.item_tower.is_none() {
            return Ok((model, ds));
        }
        let feats = Self::feature_cache(src, &ds)?;
        model.features = Some(feats.config.clone());
        if run.content().modalities.contains(&ModalityName::Text) {
            model.text = Self::text_encoder(src, &feats)?;
            if run.content().center_text {
                let all: Vec<u32> = (0..u32::try_from(ds.n_items()).unwrap_or(u32::MAX)).collect();
                let x = feats.texts(&all).map_err(m6rec_recommender::Error::from)?;
                let present = feats.present.select(1, m6rec_features::TEXT);
                model.text_mean = Some(m6rec_recommender::content::text_mean(&x, &present));
            }
        }
        Ok((model, ds))
    }

    /// A generative checkpoint: the model, its codes, and the text encoder its codes' content came from.
    fn load_generative(src: &ModelSource, generation: u64) -> Result<(Model, m6rec_data::Dataset)> {
        let ds = m6rec_data::Dataset::load(&src.data).map_err(m6rec_recommender::Error::from)?;
        let gen = GenerativeModel::load(&src.checkpoint, src.device)?;
        if gen.n_trained() != ds.n_items() {
            return Err(crate::Error::Config(format!(
                "checkpoint {} was trained on {} items, the dataset {} has {}: serve it with the dataset it was \
                 trained on",
                src.checkpoint.display(),
                gen.n_trained(),
                src.data.display(),
                ds.n_items()
            )));
        }
        let feats = Self::feature_cache(src, &ds)?;
        let text = Self::text_encoder(src, &feats)?;
        let model = Model {
            backend: Backend::Generative(Box::new(gen)),
            generation,
            checkpoint: src.checkpoint.clone(),
            text,
            text_mean: None,
            features: Some(feats.config.clone()),
        };
        Ok((model, ds))
    }

    fn feature_cache(src: &ModelSource, ds: &m6rec_data::Dataset) -> Result<m6rec_features::Features> {
        let cache = src.features.clone().unwrap_or_else(|| m6rec_features::default_cache_dir(&src.data));
        Ok(m6rec_features::Features::load(&cache, ds).map_err(m6rec_recommender::Error::from)?)
    }

    /// The text encoder the feature cache was built with (or `src.text_model`), for new items' text.
    fn text_encoder(
        src: &ModelSource,
        feats: &m6rec_features::Features,
    ) -> Result<Option<(tch::nn::VarStore, m6rec_text::TextEncoder)>> {
        let tcfg = feats.config.text.clone();
        let Some(dir) = src.text_model.clone().or_else(|| tcfg.as_ref().map(|t| t.model.clone())) else {
            return Ok(None);
        };
        let max_len = tcfg.map_or(256, |t| t.max_len);
        let vs = tch::nn::VarStore::new(src.device);
        let enc = m6rec_text::TextEncoder::pretrained(&vs.root(), &dir, max_len, true).map_err(|e| {
            crate::Error::Config(format!(
                "text encoder {} (for new items' text): {e}; give --text-model DIR",
                dir.display()
            ))
        })?;
        Ok(Some((vs, enc)))
    }

    /// The embedding model, or why this request needs one.
    pub fn emb(&self) -> std::result::Result<&Embedding, ApiError> {
        match &self.backend {
            Backend::Embedding(e) => Ok(e),
            Backend::Generative(_) => Err(not_embedding()),
        }
    }

    /// See [`Model::emb`].
    pub fn emb_mut(&mut self) -> std::result::Result<&mut Embedding, ApiError> {
        match &mut self.backend {
            Backend::Embedding(e) => Ok(e),
            Backend::Generative(_) => Err(not_embedding()),
        }
    }

    /// The top-k index in words.
    pub fn describe_index(&self) -> String {
        match &self.backend {
            Backend::Embedding(e) => e.index.describe(),
            Backend::Generative(g) => format!("constrained beam search (beam {})", g.config().beam),
        }
    }

    /// Longest history the model reads.
    pub fn max_len(&self) -> usize {
        match &self.backend {
            Backend::Embedding(e) => e.max_len(),
            Backend::Generative(g) => g.model().max_len(),
        }
    }

    /// Items the model ranks: rows of the item table, or items with a code.
    pub fn rows(&self) -> usize {
        match &self.backend {
            Backend::Embedding(e) => e.rows(),
            Backend::Generative(g) => g.n_items(),
        }
    }

    /// Where the model's variables live.
    pub fn device(&self) -> Device {
        match &self.backend {
            Backend::Embedding(e) => e.loaded.vs.device(),
            Backend::Generative(g) => g.vs().device(),
        }
    }

    /// The text encoder's tokenizer, when new items' text is encoded.
    pub fn tokenizer(&self) -> Option<m6rec_text::TextTokenizer> {
        self.text.as_ref().map(|(_, enc)| enc.tokenizer().clone())
    }

    /// Checks that this model can take new items (an item tower, or a generative model with its text encoder);
    /// what `POST /v1/items` needs.
    pub fn can_embed(&self) -> std::result::Result<(), ApiError> {
        match &self.backend {
            Backend::Embedding(e) if e.loaded.items.is_none() => Err(ApiError::invalid(
                "no_item_tower",
                "this model represents items by id only and cannot embed new items; serve a checkpoint trained with [item_tower] mode = \"content_only\" or \"hybrid\"",
            )),
            Backend::Generative(_) if self.text.is_none() => Err(ApiError::invalid(
                "no_text_encoder",
                "new items get their semantic IDs from their text, and no text encoder is loaded; restart with --text-model DIR",
            )),
            _ => Ok(()),
        }
    }

    /// The content semantic IDs are computed from: each item's text embedding (`[n, d]`, zero without text), as the
    /// feature cache holds it.
    pub fn code_content(&self, items: &[Prepared]) -> std::result::Result<Tensor, ApiError> {
        self.can_embed()?;
        let n = i64::try_from(items.len()).map_err(|e| ApiError::internal(e.to_string()))?;
        let (Modality::Vectors(x), has) = self.text_modality(items, n)? else {
            return Err(ApiError::internal("text came back as another modality"));
        };
        let mask = Tensor::from_slice(&has.iter().map(|&h| f32::from(u8::from(h))).collect::<Vec<_>>());
        Ok(x.to_device(Device::Cpu).to_kind(Kind::Float) * mask.unsqueeze(1))
    }

    /// Embeddings `[n, d_model]` of `items`; `ids[i]` is the item's training-catalog row, or -1.
    pub fn embed(&self, items: &[Prepared], ids: &[i64]) -> std::result::Result<Tensor, ApiError> {
        self.can_embed()?;
        let loaded = &self.emb()?.loaded;
        let n = i64::try_from(items.len()).map_err(|e| ApiError::internal(e.to_string()))?;
        let run = &loaded.config.run;
        let mut modalities = Vec::new();
        let mut present: Vec<Vec<bool>> = Vec::new();
        for name in run.content().modalities {
            let (modality, has) = match name {
                ModalityName::Text => self.text_modality(items, n)?,
                ModalityName::Image => self.image_modality(items)?,
                ModalityName::Audio => self.audio_modality(items)?,
            };
            modalities.push(modality);
            present.push(has);
        }
        let m = i64::try_from(present.len()).map_err(|e| ApiError::internal(e.to_string()))?;
        let flags: Vec<i64> = (0..items.len()).flat_map(|i| present.iter().map(move |col| i64::from(col[i]))).collect();
        let present = Tensor::from_slice(&flags).view([n, m]).gt(0);
        let content = ItemContent::from_modalities(modalities, present, items.len())
            .map_err(|e| ApiError::internal(format!("new items: {e}")))?;
        let domains: Vec<&str> = items.iter().map(|p| p.domain.as_str()).collect();
        loaded.embed_new_items(&content, ids, &domains).map_err(|e| ApiError::internal(e.to_string()))
    }

    /// The items' texts through the text encoder (centred like the training cache), and which items have text.
    fn text_modality(&self, items: &[Prepared], n: i64) -> std::result::Result<(Modality, Vec<bool>), ApiError> {
        let has: Vec<bool> = items.iter().map(|p| !p.text.trim().is_empty()).collect();
        let x = match &self.text {
            Some((_, enc)) => {
                let texts: Vec<&str> = items.iter().map(|p| p.text.as_str()).collect();
                enc.encode(&texts, self.device(), m6rec_tensor::Mode::Eval)
                    .map_err(|e| ApiError::internal(format!("text encoder: {e}")))?
                    .to_kind(Kind::Float)
            }
            None if has.iter().any(|&h| h) => {
                return Err(ApiError::invalid(
                    "no_text_encoder",
                    "the model reads text but no text encoder is loaded; restart with --text-model DIR",
                ))
            }
            None => Tensor::zeros([n, 1], (Kind::Float, Device::Cpu)),
        };
        let x = match &self.text_mean {
            Some(mean) => {
                let mask = Tensor::from_slice(&has.iter().map(|&h| i64::from(h)).collect::<Vec<_>>())
                    .gt(0)
                    .to_device(x.device());
                m6rec_recommender::content::center_with(&x, &mask, &mean.to_device(x.device()))
            }
            None => x,
        };
        Ok((Modality::Vectors(x), has))
    }

    /// The items' preprocessed images (one blank row when none has one), and which items have one.
    fn image_modality(&self, items: &[Prepared]) -> std::result::Result<(Modality, Vec<bool>), ApiError> {
        let (rows, row_of) = stack_rows(items.iter().map(|p| p.pixels.as_ref()));
        let pixels = if rows.is_empty() {
            // No item has an image: one blank row keeps the encoder's input shape; every row_of is -1.
            let side = self.features.as_ref().map_or(1, |f| i64::from(f.image.size));
            Tensor::zeros([1, 3, side, side], (Kind::Uint8, Device::Cpu))
        } else {
            let size = i64::from(rows[0].size);
            let mut flat = Vec::new();
            for p in &rows {
                if p.size != rows[0].size {
                    return Err(ApiError::internal("images of different sizes after preprocessing"));
                }
                flat.extend_from_slice(&p.chw);
            }
            Tensor::from_slice(&flat).view([-1, 3, size, size])
        };
        let has = row_of.iter().map(|&r| r >= 0).collect();
        let (mean, std) = self.image_norm();
        Ok((Modality::Images { pixels, row_of, mean, std }, has))
    }

    /// The items' log-mel spectrograms (one blank row when none has audio), and which items have audio.
    fn audio_modality(&self, items: &[Prepared]) -> std::result::Result<(Modality, Vec<bool>), ApiError> {
        let (rows, row_of) = stack_rows(items.iter().map(|p| p.mel.as_ref()));
        let log_mel = if rows.is_empty() {
            let (mels, frames) = self.features.as_ref().map_or((1, 1), |f| {
                (i64::try_from(f.audio.n_mels).unwrap_or(1), i64::try_from(f.audio.n_frames()).unwrap_or(1))
            });
            Tensor::zeros([1, 1, mels, frames], (Kind::Float, Device::Cpu))
        } else {
            m6rec_audio::batch(&rows).map_err(|e| ApiError::internal(format!("audio: {e}")))?
        };
        let has = row_of.iter().map(|&r| r >= 0).collect();
        Ok((Modality::Audio { log_mel, row_of }, has))
    }

    fn image_norm(&self) -> ([f64; 3], [f64; 3]) {
        match &self.features {
            Some(f) => (f.image.mean.map(f64::from), f.image.std.map(f64::from)),
            None => (m6rec_image::IMAGENET_MEAN.map(f64::from), m6rec_image::IMAGENET_STD.map(f64::from)),
        }
    }
}

fn stack_rows<'a, T>(items: impl Iterator<Item = Option<&'a T>>) -> (Vec<&'a T>, Vec<i64>) {
    let mut rows = Vec::new();
    let mut row_of = Vec::new();
    for it in items {
        match it {
            Some(x) => {
                row_of.push(i64::try_from(rows.len()).unwrap_or(-1));
                rows.push(x);
            }
            None => row_of.push(-1),
        }
    }
    (rows, row_of)
}
