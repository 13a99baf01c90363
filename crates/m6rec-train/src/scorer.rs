//! Anything that scores the whole catalog for a batch of histories: the model, or the popularity baseline.
//! Evaluation and recommendation go through this one trait, so baselines share the code path.

use crate::Result;
use m6rec_data::Split;
use tch::{Kind, Tensor};

/// Scores every item as the next item of each history.
pub trait Scorer {
    /// # Shapes
    /// - returns `[histories.len(), n_items]` float (higher is better)
    fn score(&self, histories: &[&[u32]]) -> Result<Tensor>;
    /// Catalog size.
    fn n_items(&self) -> usize;
}

/// The recommender as a scorer (its item table computed once: [`m6rec_recommender::Recommender::scorer`]).
pub type ModelScorer<'a> = m6rec_recommender::CatalogScorer<'a>;

impl Scorer for ModelScorer<'_> {
    fn score(&self, histories: &[&[u32]]) -> Result<Tensor> {
        Ok(self.score_histories(histories)?)
    }
    /// The table's rows (it may be another catalog: zero-shot, or items added since training).
    fn n_items(&self) -> usize {
        self.rows()
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

    /// Counts over everything before the test targets ([`Split::before_test_counts`]: training events and the
    /// validation targets, or under a temporal split every event before the test cut).
    pub fn fit_before_test(split: &Split, n_items: usize) -> Popularity {
        Popularity::from_counts(&split.before_test_counts(n_items))
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
