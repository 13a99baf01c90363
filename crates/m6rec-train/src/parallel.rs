//! Data-parallel training: what the training loop needs from a process group.
//!
//! [`Trainer::set_data_parallel`](crate::Trainer::set_data_parallel) hands the loop a [`DataParallel`] group; with
//! the `distributed` feature, [`ddp::DdpGroup`](crate::ddp::DdpGroup) is one over PyTorch's c10d (Gloo) and its DDP
//! engine. The loop then:
//! - broadcasts every variable from rank 0 before the first step (fresh or resumed runs start equal);
//! - cuts every global batch of `train.batch_size` rows (the same shuffle on every rank, from the seed and the epoch)
//!   into one strided shard per rank, so the union of the shards is the batch a single process would take;
//! - scales each rank's loss by its share of the batch's targets, so the gradients the DDP engine averages equal the
//!   single-process gradient of the whole batch (exactly, for full softmax without dropout);
//! - sums the epoch's loss and throughput over ranks; validates, decides early stopping and writes checkpoints on
//!   rank 0 only, then sends its loop state to every rank, so all ranks stop together.

use crate::{Error, Result};
use tch::Tensor;

/// A process group as the training loop uses it. Every method is a collective unless said otherwise: all ranks call
/// it, in the same order.
pub trait DataParallel: Send {
    /// This rank, `0..world_size` (local).
    fn rank(&self) -> usize;
    /// Number of ranks (local).
    fn world_size(&self) -> usize;
    /// Copies rank 0's values into every rank's tensors, in place.
    fn broadcast(&self, tensors: &[&Tensor]) -> Result<()>;
    /// Rank 0's bytes on every rank (the argument is ignored elsewhere).
    fn broadcast_bytes(&self, bytes: &[u8]) -> Result<Vec<u8>>;
    /// Sums `t` over ranks, in place.
    fn all_reduce_sum(&self, t: &Tensor) -> Result<()>;
    /// From now on, a synchronised step's backward averages the gradients of these parameters over ranks.
    fn attach(&mut self, params: &[(String, Tensor)]) -> Result<()>;
    /// Before the forward pass of a step whose gradients must be averaged.
    fn before_forward(&self) -> Result<()>;
    /// After that forward pass, with the loss backward starts from.
    fn before_backward(&self, loss: &Tensor) -> Result<()>;
    /// Turns a failed backward (the gradient all-reduce runs inside it) into an error naming who failed (local,
    /// may wait a moment to watch the peers).
    fn explain(&self, what: &'static str, detail: String) -> Error;
    /// Tells the other ranks why this one stops (local, best effort).
    fn publish_failure(&self, message: &str);
}

/// Rows of a global batch that rank `rank` of `world` trains on: every `world`-th, from `rank`.
pub fn shard<T: Copy>(batch: &[T], rank: usize, world: usize) -> Vec<T> {
    batch.iter().skip(rank).step_by(world.max(1)).copied().collect()
}
