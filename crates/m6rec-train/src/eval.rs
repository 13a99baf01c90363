//! Full-ranking evaluation over the whole catalog, on the validation or test targets of a [`Split`].

use crate::metrics::{ranks, Metrics, RankAccumulator};
use crate::scorer::Scorer;
use crate::{Error, Result};
use m6rec_data::{Split, Target};
use tch::Tensor;

/// Which held-out target to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Second-to-last item, history = training events.
    Valid,
    /// Last item, history = training events + validation item.
    Test,
}

/// Evaluation settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalOptions {
    /// Exclude items already in the user's history from the ranking (a repeated target then counts as a miss).
    pub filter_history: bool,
    /// Users per batch.
    pub batch_size: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions { filter_history: false, batch_size: 256 }
    }
}

/// Ranks each user's held-out item among all items and averages HR/NDCG/MRR@K.
pub fn evaluate(scorer: &dyn Scorer, split: &Split, stage: Stage, opts: EvalOptions) -> Result<Metrics> {
    let targets: Vec<Target<'_>> = (0..split.n_users())
        .filter_map(|u| match stage {
            Stage::Valid => split.valid(u),
            Stage::Test => split.test(u),
        })
        .filter(|t| !t.history.is_empty())
        .collect();
    if targets.is_empty() {
        return Err(Error::NoData(format!("no user has a {stage:?} target (users need at least 3 events)")));
    }
    let mut acc = RankAccumulator::default();
    for chunk in targets.chunks(opts.batch_size.max(1)) {
        let histories: Vec<&[u32]> = chunk.iter().map(|t| t.history).collect();
        let items: Vec<i64> = chunk.iter().map(|t| i64::from(t.item)).collect();
        let mut scores = scorer.score(&histories)?;
        let device = scores.device();
        if opts.filter_history {
            scores = mask_histories(scores, &histories);
        }
        acc.extend(&ranks(&scores, &Tensor::from_slice(&items).to_device(device)));
    }
    Ok(acc.finish())
}

/// Sets the scores of each row's history items to -inf.
pub fn mask_histories(scores: Tensor, histories: &[&[u32]]) -> Tensor {
    let (mut rows, mut cols) = (Vec::new(), Vec::new());
    for (r, h) in histories.iter().enumerate() {
        for &i in *h {
            rows.push(r as i64);
            cols.push(i64::from(i));
        }
    }
    let device = scores.device();
    let idx = [Some(Tensor::from_slice(&rows).to_device(device)), Some(Tensor::from_slice(&cols).to_device(device))];
    let neg = Tensor::from(f32::NEG_INFINITY).to_device(device);
    let mut scores = scores;
    let _ = scores.index_put_(&idx, &neg, false);
    scores
}
