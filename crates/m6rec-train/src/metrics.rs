//! Ranking metrics over the full catalog: HR@K, NDCG@K and MRR@K for K in [`KS`].
//!
//! A target's rank is the number of items scored strictly higher plus the number of *other* items scored equally:
//! ties count against the target, so a constant scorer cannot look good.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// Cut-offs reported.
pub const KS: [usize; 4] = [5, 10, 20, 50];

/// Averages over users: keys `hr@K`, `ndcg@K`, `mrr@K`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Metrics {
    /// Users evaluated.
    pub n_users: usize,
    /// Metric name → mean value.
    pub values: BTreeMap<String, f64>,
}

impl Metrics {
    /// Metrics from 0-based ranks (one per user).
    pub fn from_ranks(ranks: &[usize]) -> Metrics {
        let mut acc = RankAccumulator::default();
        acc.extend(ranks);
        acc.finish()
    }

    /// `get("ndcg", 10)`; 0 when absent.
    pub fn get(&self, name: &str, k: usize) -> f64 {
        self.values.get(&format!("{name}@{k}")).copied().unwrap_or(0.0)
    }
}

/// Sums per-user metrics from ranks.
#[derive(Debug, Default, Clone)]
pub struct RankAccumulator {
    n: usize,
    sums: BTreeMap<String, f64>,
}

impl RankAccumulator {
    /// Adds users' 0-based ranks.
    pub fn extend(&mut self, ranks: &[usize]) {
        for &r in ranks {
            self.n += 1;
            for k in KS {
                let hit = r < k;
                *self.sums.entry(format!("hr@{k}")).or_default() += f64::from(u8::from(hit));
                *self.sums.entry(format!("ndcg@{k}")).or_default() +=
                    if hit { 1.0 / ((r + 2) as f64).log2() } else { 0.0 };
                *self.sums.entry(format!("mrr@{k}")).or_default() += if hit { 1.0 / (r + 1) as f64 } else { 0.0 };
            }
        }
    }

    /// Means.
    pub fn finish(self) -> Metrics {
        let n = self.n.max(1) as f64;
        Metrics { n_users: self.n, values: self.sums.into_iter().map(|(k, v)| (k, v / n)).collect() }
    }
}

/// 0-based ranks of `targets` in `scores` (ties pessimistic).
///
/// # Shapes
/// - `scores`: `[b_sz, n_items]` float; `targets`: `[b_sz]` int64
pub fn ranks(scores: &Tensor, targets: &Tensor) -> Vec<usize> {
    let t = scores.gather(1, &targets.unsqueeze(1), false); // [b, 1]
    let above = scores.gt_tensor(&t).sum_dim_intlist(1, false, Kind::Int64);
    let equal = scores.eq_tensor(&t).sum_dim_intlist(1, false, Kind::Int64) - 1;
    let r = (above + equal).to_device(tch::Device::Cpu);
    Vec::<i64>::try_from(&r).unwrap_or_default().into_iter().map(|x| usize::try_from(x).unwrap_or(usize::MAX)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_metrics() {
        // Ranks 0, 1 and 9 (and one miss at 60).
        let m = Metrics::from_ranks(&[0, 1, 9, 60]);
        assert_eq!(m.n_users, 4);
        assert!((m.get("hr", 5) - 0.5).abs() < 1e-12);
        assert!((m.get("hr", 10) - 0.75).abs() < 1e-12);
        let ndcg10 = (1.0 + 1.0 / 3f64.log2() + 1.0 / 11f64.log2()) / 4.0;
        assert!((m.get("ndcg", 10) - ndcg10).abs() < 1e-12);
        let mrr10 = (1.0 + 0.5 + 0.1) / 4.0;
        assert!((m.get("mrr", 10) - mrr10).abs() < 1e-12);
        assert!((m.get("hr", 50) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn ties_count_against_the_target() {
        let scores = Tensor::from_slice(&[1.0f32, 1.0, 1.0, 0.5, 3.0, 2.0, 1.0, 0.0]).view([2, 4]);
        let targets = Tensor::from_slice(&[1i64, 1]);
        assert_eq!(ranks(&scores, &targets), vec![2, 1]);
    }
}
