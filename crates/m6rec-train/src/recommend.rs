//! Top-k recommendation for one history (a known user's, or a new user's given as item ids).

use crate::eval::mask_histories;
use crate::scorer::Scorer;
use crate::{Error, Result};
use tch::Kind;

/// One recommended item.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// Dense item index.
    pub item: u32,
    /// Model score (higher is better).
    pub score: f32,
}

/// The `k` best items after `history`, skipping the history's own items when `exclude_seen`.
pub fn recommend(scorer: &dyn Scorer, history: &[u32], k: usize, exclude_seen: bool) -> Result<Vec<Recommendation>> {
    if history.is_empty() {
        return Err(Error::InvalidInput("the history is empty: give at least one item".into()));
    }
    let n = scorer.n_items();
    let mut scores = scorer.score(&[history])?;
    if exclude_seen {
        scores = mask_histories(scores, &[history]);
    }
    let k = k.min(n);
    let (vals, idx) = scores.select(0, 0).to_kind(Kind::Float).topk(k as i64, 0, true, true);
    let vals: Vec<f32> = Vec::<f32>::try_from(&vals).unwrap_or_default();
    let idx: Vec<i64> = Vec::<i64>::try_from(&idx).unwrap_or_default();
    Ok(idx
        .into_iter()
        .zip(vals)
        .filter(|(_, s)| s.is_finite())
        .map(|(i, score)| Recommendation { item: i as u32, score })
        .collect())
}
