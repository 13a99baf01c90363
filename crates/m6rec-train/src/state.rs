//! The training loop's saved state (`state.json`) and the observer hooks progress displays implement.

use m6rec_optim::Plateau;
use serde::{Deserialize, Serialize};

/// One epoch's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Validation NDCG@10, when validated this epoch.
    pub valid_ndcg10: Option<f64>,
    /// Validation HR@10, when validated this epoch.
    pub valid_hr10: Option<f64>,
    /// Training sequences per second this epoch.
    pub seqs_per_sec: f64,
    /// Real tokens (positions that carry a target) trained on per second this epoch.
    #[serde(default)]
    pub tokens_per_sec: f64,
    /// Share of the positions computed this epoch that were padding.
    #[serde(default)]
    pub padding: f64,
    /// Seconds since the run started (over all resumes).
    pub elapsed: f64,
}

/// Loop state, saved as `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainState {
    /// Epochs finished.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: u64,
    /// Best validation NDCG@10 so far.
    pub best_ndcg10: f64,
    /// Epoch that reached it.
    pub best_epoch: usize,
    /// Validations in a row without improvement.
    pub bad_evals: usize,
    /// Whether early stopping (or the epoch or time limit) ended the run.
    pub finished: bool,
    /// Why it ended.
    pub stop_reason: Option<String>,
    /// Training seconds so far.
    pub elapsed: f64,
    /// Per-epoch records.
    pub history: Vec<EpochRecord>,
    /// Reduce-on-plateau state (`[optim] schedule = { type = "plateau" }`).
    #[serde(default)]
    pub plateau: Plateau,
}

/// Hooks for progress display; every method has a no-op default.
pub trait Observer {
    /// An epoch of `n_batches` starts.
    fn epoch_start(&mut self, _epoch: usize, _n_batches: usize) {}
    /// A batch finished with this loss.
    fn batch_end(&mut self, _loss: f64, _n_seqs: usize) {}
    /// An epoch finished (validation included).
    fn epoch_end(&mut self, _record: &EpochRecord, _state: &TrainState) {}
    /// `train.replan` changed `train.epochs` to this, from the measured epoch time.
    fn on_replan(&mut self, _epochs: usize) {}
}

/// An observer that shows nothing.
#[derive(Debug, Default)]
pub struct Silent;
impl Observer for Silent {}
