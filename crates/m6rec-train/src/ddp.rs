//! [`DataParallel`] over PyTorch's c10d: a Gloo process group from the torchrun environment and PyTorch's DDP
//! engine (`c10d::Reducer`: bucketed gradient all-reduce overlapped with backward). Feature `distributed`.

use crate::parallel::DataParallel;
use crate::{Error, Result};
pub use m6rec_dist::{Group, Launch, Options, ReducerOptions};
use tch::Tensor;

/// A joined process group, plus the DDP engine once [`DataParallel::attach`] has run.
#[derive(Debug)]
pub struct DdpGroup {
    group: Group,
    reducer: Option<m6rec_dist::Reducer>,
    opts: ReducerOptions,
}

fn dist(e: m6rec_dist::Error) -> Error {
    Error::Distributed(e.to_string())
}

impl DdpGroup {
    /// Joins the group `launch` describes (every rank must call this; it waits for all of them or the timeout).
    pub fn join(launch: &Launch, opts: &Options, reducer: ReducerOptions) -> Result<DdpGroup> {
        let group = Group::join(launch, opts).map_err(dist)?;
        Ok(DdpGroup { group, reducer: None, opts: reducer })
    }

    /// The process group.
    pub fn group(&self) -> &Group {
        &self.group
    }
}

impl DataParallel for DdpGroup {
    fn rank(&self) -> usize {
        self.group.rank()
    }
    fn world_size(&self) -> usize {
        self.group.world_size()
    }
    fn broadcast(&self, tensors: &[&Tensor]) -> Result<()> {
        self.group.broadcast(tensors, 0).map_err(dist)
    }
    fn broadcast_bytes(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        self.group.broadcast_bytes(bytes, 0).map_err(dist)
    }
    fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
        self.group.all_reduce(t, m6rec_dist::ReduceOp::Sum).map_err(dist)
    }
    fn attach(&mut self, params: &[(String, Tensor)]) -> Result<()> {
        if self.reducer.is_none() {
            self.reducer = Some(self.group.reducer(params, &self.opts).map_err(dist)?);
        }
        Ok(())
    }
    fn before_forward(&self) -> Result<()> {
        match &self.reducer {
            Some(r) => r.prepare_forward().map_err(dist),
            None => Err(Error::Distributed("before_forward called before attach".into())),
        }
    }
    fn before_backward(&self, loss: &Tensor) -> Result<()> {
        match &self.reducer {
            Some(r) => r.prepare_backward(&[loss]).map_err(dist),
            None => Err(Error::Distributed("before_backward called before attach".into())),
        }
    }
    fn explain(&self, what: &'static str, detail: String) -> Error {
        dist(self.group.failure(what, detail))
    }
    fn publish_failure(&self, message: &str) {
        self.group.publish_failure(message);
    }
}
