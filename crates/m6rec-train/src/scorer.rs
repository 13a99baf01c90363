//! Anything that scores the whole catalog for a batch of histories: the model, or the popularity baseline.
//! Evaluation and recommendation go through this one trait, so baselines share the code path.

use crate::Result;
use m6rec_data::{SeqBatch, Split};
use m6rec_model::SeqRec;
use tch::{Device, Kind, Tensor};

/// Scores every item as the next item of each history.
pub trait Scorer {
    /// # Shapes
    /// - returns `[histories.len(), n_items]` float (higher is better)
    fn score(&self, histories: &[&[u32]]) -> Result<Tensor>;
    /// Catalog size.
    fn n_items(&self) -> usize;
}

/// The sequence model as a scorer.
#[derive(Debug)]
pub struct ModelScorer<'a> {
    model: &'a SeqRec,
    table: Option<Tensor>,
    device: Device,
}

impl<'a> ModelScorer<'a> {
    /// Wraps a model whose variables live on `device`.
    pub fn new(model: &'a SeqRec, device: Device) -> Self {
        ModelScorer { model, table: None, device }
    }

    /// Wraps a model that reads its items from an external table (an item tower's output, `[n_items, d_model]`).
    pub fn with_table(model: &'a SeqRec, table: Tensor, device: Device) -> Self {
        ModelScorer { model, table: Some(table), device }
    }
}

impl Scorer for ModelScorer<'_> {
    fn score(&self, histories: &[&[u32]]) -> Result<Tensor> {
        let max_len = m6rec_tensor::dim::to_usize("max_len", self.model.config().max_len)?;
        let batch = SeqBatch::for_prediction(histories, max_len, self.n_items())?;
        Ok(tch::no_grad(|| match &self.table {
            Some(table) => self.model.score_next_with(&batch, table, self.device),
            None => self.model.score_next(&batch, self.device),
        })?)
    }
    /// The table's rows when there is one (it may be another catalog: zero-shot, or items added since training).
    fn n_items(&self) -> usize {
        let n = self.table.as_ref().map_or(self.model.n_items(), |t| t.size()[0]);
        usize::try_from(n).unwrap_or(0)
    }
}

/// Most-popular baseline: every user gets the same ranking by interaction count.
#[derive(Debug)]
pub struct Popularity {
    counts: Tensor,
    n_items: usize,
}

impl Popularity {
    /// Counts over training events (what any model may see before validation).
    pub fn fit_train(split: &Split, n_items: usize) -> Popularity {
        Popularity::from_counts(&split.train_counts(n_items))
    }

    /// Counts over everything before each user's test target (training events and validation targets).
    pub fn fit_before_test(split: &Split, n_items: usize) -> Popularity {
        let mut counts = split.train_counts(n_items);
        for u in 0..split.n_users() {
            if let Some(v) = split.valid(u) {
                if let Some(c) = counts.get_mut(v.item as usize) {
                    *c += 1;
                }
            }
        }
        Popularity::from_counts(&counts)
    }

    /// From raw counts.
    pub fn from_counts(counts: &[u64]) -> Popularity {
        let f: Vec<f32> = counts.iter().map(|&c| c as f32).collect();
        Popularity { counts: Tensor::from_slice(&f), n_items: counts.len() }
    }
}

impl Scorer for Popularity {
    fn score(&self, histories: &[&[u32]]) -> Result<Tensor> {
        let b = m6rec_tensor::dim::to_i64("batch", histories.len())?;
        Ok(self.counts.unsqueeze(0).repeat([b, 1]).to_kind(Kind::Float))
    }
    fn n_items(&self) -> usize {
        self.n_items
    }
}

/// A scorer for a model whose item table may come from an item tower and may carry domain embeddings.
pub(crate) fn scorer_for<'a>(
    model: &'a SeqRec,
    items: Option<&crate::content::ContentItems>,
    domains: Option<&crate::domains::DomainEmbedding>,
    device: Device,
) -> crate::Result<ModelScorer<'a>> {
    tch::no_grad(|| {
        let table = match (items, domains) {
            (None, None) => return Ok(ModelScorer::new(model, device)),
            (Some(items), _) => items.table_eval()?,
            (None, Some(_)) => model.item_embeddings().detach(),
        };
        let table = match domains {
            Some(d) => d.add(&table)?,
            None => table,
        };
        Ok(ModelScorer::with_table(model, table, device))
    })
}
