//! The item tower: what an item is (its modality embeddings, fused) plus, optionally, who it is (an id embedding).

use m6rec_tensor::Mode;
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use crate::fusion::{Error, Fusion, FusionConfig, Result};

/// How items are represented (the `mode` of `[item_tower]` in a run's TOML).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TowerMode {
    /// An id embedding only (the classic sequential recommender; cannot represent unseen items).
    IdOnly,
    /// Content only (inductive: any item with at least one modality has an embedding, trained or not).
    ContentOnly,
    /// Content plus an id embedding for items seen in training; unseen items fall back to content.
    Hybrid,
}

/// Shape of an [`ItemTower`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemTowerConfig {
    /// Id, content or both. Default hybrid.
    #[serde(default = "default_mode")]
    pub mode: TowerMode,
    /// How modality embeddings are combined. Default gated.
    #[serde(default = "default_fusion")]
    pub fusion: FusionConfig,
    /// Hybrid mode, training only: the probability that an item's id embedding is dropped, so the content path must
    /// represent the item on its own (as it will for unseen items). Default 0.3.
    #[serde(default = "default_id_dropout")]
    pub id_dropout: f64,
}

fn default_mode() -> TowerMode {
    TowerMode::Hybrid
}
fn default_fusion() -> FusionConfig {
    FusionConfig::Gated
}
fn default_id_dropout() -> f64 {
    0.3
}

impl Default for ItemTowerConfig {
    fn default() -> Self {
        ItemTowerConfig { mode: default_mode(), fusion: default_fusion(), id_dropout: default_id_dropout() }
    }
}

/// Item embeddings of width `d_model` from modality embeddings (each of its own width) and item indices.
///
/// Variables: `proj.{m}.*` (one linear map per modality to `d_model`), `fusion.*`, `id_emb.weight` (`[n_items, d]`,
/// id and hybrid modes).
#[derive(Debug)]
pub struct ItemTower {
    mode: TowerMode,
    proj: Vec<nn::Linear>,
    fusion: Option<Fusion>,
    id_emb: Option<nn::Embedding>,
    /// Hybrid mode: 1 for items whose id embedding was trained, 0 for items never seen in training (a buffer, saved
    /// with the weights as `id_seen`).
    seen: Option<Tensor>,
    id_dropout: f64,
    n_items: i64,
    d_model: i64,
}

impl ItemTower {
    /// Creates the tower for `n_items` known items and modalities of widths `modality_dims` (for example
    /// `[384, 64, 64]` for MiniLM text, image CNN, audio CNN).
    pub fn new(
        vs: &nn::Path<'_>,
        cfg: &ItemTowerConfig,
        modality_dims: &[i64],
        n_items: i64,
        d_model: i64,
    ) -> Result<ItemTower> {
        let content = cfg.mode != TowerMode::IdOnly;
        if content && modality_dims.is_empty() {
            return Err(Error::Config(format!("{:?} needs at least one modality", cfg.mode)));
        }
        if !(0.0..1.0).contains(&cfg.id_dropout) {
            return Err(Error::Config(format!("id_dropout must be in [0, 1), got {}", cfg.id_dropout)));
        }
        if d_model < 1 || n_items < 0 || modality_dims.iter().any(|&d| d < 1) {
            return Err(Error::Config(format!(
                "need d_model >= 1 and positive widths, got {d_model}, {modality_dims:?}"
            )));
        }
        let (proj, fusion) = if content {
            let m = i64::try_from(modality_dims.len()).map_err(|e| Error::Config(e.to_string()))?;
            let proj = modality_dims
                .iter()
                .enumerate()
                .map(|(i, &d)| nn::linear(vs / "proj" / i, d, d_model, Default::default()))
                .collect();
            (proj, Some(Fusion::new(&(vs / "fusion"), &cfg.fusion, m, d_model)?))
        } else {
            (Vec::new(), None)
        };
        let id_emb = (cfg.mode != TowerMode::ContentOnly).then(|| {
            let init =
                nn::EmbeddingConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: 0.02 }, ..Default::default() };
            nn::embedding(vs / "id_emb", n_items.max(1), d_model, init)
        });
        let id_dropout = if cfg.mode == TowerMode::Hybrid { cfg.id_dropout } else { 0.0 };
        let seen = (cfg.mode == TowerMode::Hybrid).then(|| vs.ones_no_train("id_seen", &[n_items.max(1)]));
        Ok(ItemTower { mode: cfg.mode, proj, fusion, id_emb, seen, id_dropout, n_items, d_model })
    }

    /// Hybrid mode: marks which items were seen in training (`seen[i]`); the others get no id embedding, as items
    /// added after training do, so items held out of training are represented by their content alone. Other modes
    /// ignore it. Missing entries count as unseen.
    pub fn set_seen(&mut self, seen: &[bool]) {
        if let Some(buf) = &mut self.seen {
            let n = m6rec_tensor::dim::as_usize(self.n_items);
            let v: Vec<f32> =
                (0..n.max(1)).map(|i| f32::from(u8::from(seen.get(i).copied().unwrap_or(false)))).collect();
            tch::no_grad(|| buf.copy_(&Tensor::from_slice(&v).to_device(buf.device())));
        }
    }

    /// The representation mode.
    pub fn mode(&self) -> TowerMode {
        self.mode
    }

    /// Output width.
    pub fn d_model(&self) -> i64 {
        self.d_model
    }

    /// Embeds items.
    ///
    /// # Shapes
    /// - `items`: `[n]` int64 item indices; indices `>= n_items` (or `< 0`) are items unseen in training: they get
    ///   no id embedding (an error in id-only mode)
    /// - `modalities`: one `[n, dim_m]` tensor per modality (ignored in id-only mode); `present`: `[n, M]` bool
    /// - returns `[n, d_model]`
    pub fn forward(&self, items: &Tensor, modalities: &[Tensor], present: &Tensor, mode: Mode) -> Result<Tensor> {
        let n = items.size().first().copied().unwrap_or(0);
        let known = items.ge(0).logical_and(&items.lt(self.n_items)); // [n]
        let ids = self.id_emb.as_ref().map(|emb| {
            let safe = items.where_self(&known, &items.zeros_like());
            let mut keep = known.to_kind(Kind::Float);
            if let Some(seen) = &self.seen {
                keep *= seen.index_select(0, &safe);
            }
            if mode.is_train() && self.id_dropout > 0.0 {
                // Dropped ids are zeroed, not rescaled: at inference an item has its id embedding or none.
                keep *= Tensor::rand([n], (Kind::Float, items.device())).ge(self.id_dropout).to_kind(Kind::Float);
            }
            emb.forward(&safe) * keep.unsqueeze(-1)
        });
        let content = match &self.fusion {
            None => None,
            Some(fusion) => {
                if modalities.len() != self.proj.len() {
                    return Err(Error::Shape(format!(
                        "{} modality tensors given, the tower has {}",
                        modalities.len(),
                        self.proj.len()
                    )));
                }
                let mut projected = Vec::with_capacity(modalities.len());
                for (i, (x, p)) in modalities.iter().zip(&self.proj).enumerate() {
                    if x.size().first() != Some(&n) {
                        return Err(Error::Shape(format!("modality {i} has {:?} rows, {n} items given", x.size())));
                    }
                    projected.push(x.to_kind(Kind::Float).apply(p));
                }
                Some(fusion.forward(&Tensor::stack(&projected, 1), present, mode)?)
            }
        };
        match (ids, content) {
            (Some(ids), None) => {
                if known.all().int64_value(&[]) == 0 {
                    return Err(Error::Shape(format!(
                        "id-only tower got items outside 0..{} (unseen items need content: use content_only or hybrid)",
                        self.n_items
                    )));
                }
                Ok(ids)
            }
            (None, Some(content)) => Ok(content),
            (Some(ids), Some(content)) => Ok(ids + content),
            (None, None) => Err(Error::Config("a tower with neither ids nor content".into())),
        }
    }

    /// Embeds many items in batches of `batch_size` (the catalog, for scoring), rows in input order. `modalities` and
    /// `present` hold every item's rows; nothing is kept for gradients.
    pub fn embed_all(
        &self,
        items: &Tensor,
        modalities: &[Tensor],
        present: &Tensor,
        batch_size: i64,
    ) -> Result<Tensor> {
        let n = items.size().first().copied().unwrap_or(0);
        let step = batch_size.max(1);
        tch::no_grad(|| {
            let mut parts = Vec::new();
            let mut start = 0;
            while start < n {
                let len = step.min(n - start);
                let slice: Vec<Tensor> = modalities.iter().map(|m| m.narrow(0, start, len)).collect();
                parts.push(self.forward(
                    &items.narrow(0, start, len),
                    &slice,
                    &present.narrow(0, start, len),
                    Mode::Eval,
                )?);
                start += len;
            }
            if parts.is_empty() {
                return Ok(Tensor::zeros([0, self.d_model], (Kind::Float, items.device())));
            }
            Ok(Tensor::cat(&parts, 0))
        })
    }
}
