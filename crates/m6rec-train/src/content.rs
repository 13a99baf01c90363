//! What an item tower reads: per-modality inputs for every catalog item, and which items have which modality.

use crate::{Error, Result};
use m6rec_fusion::{ItemTower, ItemTowerConfig};
use m6rec_tensor::Mode;
use tch::{nn, Device, Kind, Tensor};

/// Content of every catalog item, row `i` = item `i`: one `[n_items, dim_m]` tensor per modality (for example cached
/// frozen text embeddings) and a `[n_items, M]` presence mask.
#[derive(Debug)]
pub struct ItemContent {
    inputs: Vec<Tensor>,
    present: Tensor,
}

impl ItemContent {
    /// Checks that every input has `n_items` rows and `present` is `[n_items, inputs.len()]`.
    pub fn new(inputs: Vec<Tensor>, present: Tensor, n_items: usize) -> Result<ItemContent> {
        let n = m6rec_tensor::dim::to_i64("n_items", n_items)?;
        let bad = |reason: String| Err(Error::NoData(format!("item content: {reason}")));
        if inputs.is_empty() {
            return bad("no modality given".into());
        }
        for (i, x) in inputs.iter().enumerate() {
            if x.dim() != 2 || x.size()[0] != n || x.size()[1] < 1 {
                return bad(format!("modality {i} is {:?}, expected [{n}, dim]", x.size()));
            }
        }
        let m = m6rec_tensor::dim::to_i64("modalities", inputs.len())?;
        if present.size() != [n, m] {
            return bad(format!("present is {:?}, expected [{n}, {m}]", present.size()));
        }
        let inputs = inputs.into_iter().map(|x| x.to_kind(Kind::Float)).collect();
        Ok(ItemContent { inputs, present: present.to_kind(Kind::Bool) })
    }

    /// Width of each modality's input.
    pub fn dims(&self) -> Vec<i64> {
        self.inputs.iter().map(|x| x.size()[1]).collect()
    }

    fn n_items(&self) -> i64 {
        self.present.size()[0]
    }

    fn to_device(&self, device: Device) -> ItemContent {
        ItemContent {
            inputs: self.inputs.iter().map(|x| x.to_device(device)).collect(),
            present: self.present.to_device(device),
        }
    }
}

/// An item tower with the content it reads: the item table of the sequence model.
#[derive(Debug)]
pub struct ContentItems {
    tower: ItemTower,
    content: ItemContent,
}

impl ContentItems {
    /// Creates the tower's variables under `vs` (`tower.*` in checkpoints) for `content` on `device`.
    pub fn new(vs: &nn::Path<'_>, cfg: &ItemTowerConfig, content: &ItemContent, d_model: i64) -> Result<ContentItems> {
        let tower = ItemTower::new(vs, cfg, &content.dims(), content.n_items(), d_model)
            .map_err(|e| Error::NoData(format!("item tower: {e}")))?;
        Ok(ContentItems { tower, content: content.to_device(vs.device()) })
    }

    /// The item table `[n_items, d_model]`, with gradients (training).
    pub fn table(&self, mode: Mode) -> Result<Tensor> {
        let items = Tensor::arange(self.content.n_items(), (Kind::Int64, self.content.present.device()));
        self.tower
            .forward(&items, &self.content.inputs, &self.content.present, mode)
            .map_err(|e| Error::NoData(format!("item tower: {e}")))
    }

    /// The item table without gradients, in batches (evaluation and serving).
    pub fn table_eval(&self) -> Result<Tensor> {
        let items = Tensor::arange(self.content.n_items(), (Kind::Int64, self.content.present.device()));
        self.tower
            .embed_all(&items, &self.content.inputs, &self.content.present, 4096)
            .map_err(|e| Error::NoData(format!("item tower: {e}")))
    }
}
