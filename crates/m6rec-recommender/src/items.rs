//! The item tower with the content it reads ([`ContentItems`]): the item table of a recommender that represents
//! items by content. Text arrives as fixed vectors (frozen MiniLM embeddings from the feature cache); the tower's
//! projection of it trains. Images and audio arrive as pixels and log-mel spectrograms and pass through small CNNs
//! that train with the recommender. Running a CNN over the whole catalog at every step is too slow on a CPU, so the
//! encoders' outputs for every item are cached and recomputed in full every `refresh_every` steps; at each step only
//! up to `grad_items` of the batch's items are re-encoded with gradients and written over their cached rows (and the
//! cache updated).

use crate::content::{ContentConfig, ItemContent, Modality};
use crate::{Error, Result};
use m6rec_audio::AudioEncoder;
use m6rec_fusion::{ItemTower, ItemTowerConfig};
use m6rec_image::ImageEncoder;
use m6rec_tensor::Mode;
use tch::{nn, Device, Kind, Tensor};

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
            return Err(Error::Content(
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
        let tower = ItemTower::new(vs, cfg, &dims, id_rows, d_model).map_err(|e| Error::Tower(e.to_string()))?;
        let similarity = if content_cfg.similarity {
            let found = slots.iter().enumerate().find_map(|(i, s)| match s {
                Slot::Fixed(x) => Some((i, Similarity::unit(x))),
                Slot::Encoded(_) => None,
            });
            let Some((slot, unit)) = found else {
                return Err(Error::Content(
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

    /// Makes the next training step refresh the cache in full and count `refresh_every` from there. The trainer calls
    /// it at the start of every epoch: the cache is then a function of the weights at the epoch's start, which a
    /// checkpoint holds, so a resumed run computes exactly what an uninterrupted one does.
    pub fn restart_refresh(&mut self) {
        self.steps = 0;
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
        let table =
            self.tower.forward(&items, &inputs, &self.present, Mode::Train).map_err(|e| Error::Tower(e.to_string()))?;
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
            return Err(Error::Content(format!(
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
                        return Err(Error::Content(format!(
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
                .map_err(|e| Error::Tower(e.to_string()))?;
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
        let table =
            self.tower.embed_all(&items, &inputs, &self.present, 4096).map_err(|e| Error::Tower(e.to_string()))?;
        Ok(match &self.similarity {
            Some(sim) => tch::no_grad(|| sim.extend(table, &sim.unit)),
            None => table,
        })
    }
}
