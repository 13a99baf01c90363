//! Several domains in one model: a learned embedding per domain added to every item's representation (the
//! sequence model sees which domain each item of a history comes from, and scores are domain-aware), and
//! per-domain sampling weights that set how much of each domain an epoch mixes in.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// `[domains]` of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    /// Add a learned domain embedding to every item. Default true.
    #[serde(default = "yes")]
    pub embed: bool,
    /// Sampling weight per domain name: each training row (a window of a user's sequence, counted in the domain of
    /// its newest item) is drawn `weight` times per epoch on average (0.5: half of them, 2: twice). Missing
    /// domains weigh 1.
    #[serde(default)]
    pub weights: BTreeMap<String, f64>,
    /// Known domain names, embedding row `i + 1` each (row 0 stands for any domain not listed, for example a new
    /// domain in zero-shot transfer). Filled from the training data when empty; saved with the checkpoint.
    #[serde(default)]
    pub vocab: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Default for DomainConfig {
    fn default() -> Self {
        DomainConfig { embed: true, weights: BTreeMap::new(), vocab: Vec::new() }
    }
}

impl DomainConfig {
    /// Checks the weights.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (d, &w) in &self.weights {
            if !(w >= 0.0 && w.is_finite()) {
                return Err(format!("domains.weights.{d} is {w}, must be a finite number >= 0"));
            }
        }
        Ok(())
    }

    /// Index of each name in the vocabulary (`vocab` row + 1), or 0 for unknown domains.
    pub fn index(&self, names: &[&str]) -> Vec<i64> {
        names.iter().map(|n| self.vocab.iter().position(|v| v == n).map_or(0, |i| i as i64 + 1)).collect()
    }

    /// The sampling weight of a domain (1 when not listed).
    pub fn weight(&self, name: &str) -> f64 {
        self.weights.get(name).copied().unwrap_or(1.0)
    }
}

/// Domain embeddings (`domain_emb.weight`, `[vocab + 1, d_model]`) and each item's domain index.
#[derive(Debug)]
pub struct DomainEmbedding {
    emb: nn::Embedding,
    item_domain: Option<Tensor>,
}

impl DomainEmbedding {
    /// Creates the table under `vs` for `n_known` domains.
    pub fn new(vs: &nn::Path<'_>, n_known: usize, d_model: i64) -> Result<DomainEmbedding> {
        let n = m6rec_tensor::dim::to_i64("domains", n_known + 1)?;
        let init = nn::EmbeddingConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: 0.02 }, ..Default::default() };
        Ok(DomainEmbedding { emb: nn::embedding(vs / "domain_emb", n, d_model, init), item_domain: None })
    }

    /// Sets each catalog item's domain index (from [`DomainConfig::index`]).
    pub fn set_items(&mut self, idx: &[i64], device: tch::Device) {
        self.item_domain = Some(Tensor::from_slice(idx).to_device(device));
    }

    /// `rows + domain embedding of domain index idx[i]` for rows outside the catalog (items added while serving).
    pub fn add_indexed(&self, rows: &Tensor, idx: &[i64]) -> Tensor {
        let idx = Tensor::from_slice(idx).to_device(rows.device());
        rows + widen(self.emb.forward(&idx).to_kind(Kind::Float), rows)
    }

    /// `table + domain embedding of each row's item` (`table`: `[n_items, d]`).
    pub fn add(&self, table: &Tensor) -> Result<Tensor> {
        let idx = self.item_domain.as_ref().ok_or_else(|| {
            Error::Domains("the run has [domains] but the items' domains were not given (set_item_domains)".into())
        })?;
        if idx.size()[0] != table.size()[0] {
            return Err(Error::Domains(format!(
                "{} item domains for an item table of {} rows",
                idx.size()[0],
                table.size()[0]
            )));
        }
        Ok(table + widen(self.emb.forward(idx).to_kind(Kind::Float), table))
    }
}

/// `emb` (`[n, d]`) padded with zero columns to `like`'s width: a table may carry similarity features after its
/// `d_model` columns (`content.similarity`), which the domain does not change.
fn widen(emb: Tensor, like: &Tensor) -> Tensor {
    let (d, w) = (emb.size()[1], like.size()[1]);
    if w > d {
        emb.constant_pad_nd([0, w - d])
    } else {
        emb
    }
}
