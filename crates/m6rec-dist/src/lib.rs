//! Data-parallel collectives for tch tensors over PyTorch's own distributed engine (c10d).
//!
//! PyTorch's `TCPStore`, `ProcessGroupGloo` and the C++ DDP gradient engine (`c10d::Reducer`: bucketed gradient
//! all-reduce overlapped with backward) are compiled into `libtorch_cpu.so`, which tch already links; a small C++
//! shim (`csrc/`) reaches them. This crate gives them a safe Rust surface:
//!
//! - [`Launch::from_env`] reads the torchrun environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`,
//!   `MASTER_PORT`, `TORCHELASTIC_USE_AGENT_STORE`, `TORCHELASTIC_RESTART_COUNT`, `GLOO_SOCKET_IFNAME`), so any
//!   launcher or scheduler that sets those variables works.
//! - [`Group::join`] rendezvous with the other ranks; [`Group::broadcast`], [`Group::all_reduce`],
//!   [`Group::all_gather`], [`Group::barrier`] on CPU tensors.
//! - [`Group::reducer`] attaches PyTorch's DDP engine to a model's parameters: after
//!   [`Reducer::prepare_forward`] / [`Reducer::prepare_backward`], `loss.backward()` leaves every rank with the
//!   gradients averaged over ranks.
//! - Failures name who failed: every rank publishes a heartbeat in the store, and a collective that fails (a peer
//!   died, or sent nothing within the timeout) becomes [`Error::LostRanks`] with the ranks whose heartbeat stopped,
//!   or [`Error::PeerFailed`] with the message a rank published before giving up ([`Group::publish_failure`]).
//!
//! ```no_run
//! # fn main() -> Result<(), m6rec_dist::Error> {
//! use m6rec_dist::{Group, Launch, Options};
//! let launch = Launch::from_env()?.unwrap_or_else(|| Launch::single(29500));
//! let group = Group::join(&launch, &Options::default())?;
//! let t = tch::Tensor::from_slice(&[launch.rank as f32]);
//! group.all_reduce(&t, m6rec_dist::ReduceOp::Sum)?;
//! # Ok(()) }
//! ```
//!
//! The NCCL backend (CUDA tensors) is behind the `nccl` feature and needs the CUDA libtorch.

mod ffi;

use std::time::Duration;
use tch::{Kind, Tensor};

/// What went wrong, and with whom.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A launch variable is missing or malformed.
    #[error("{var}={value:?}: {reason}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// Why it is not usable.
        reason: String,
    },
    /// The group could not form.
    #[error(
        "rank {rank} of {world}: could not form the process group at {addr} within {timeout_s:.0} s: {detail}. Start \
         every rank with the same MASTER_ADDR/MASTER_PORT/WORLD_SIZE (torchrun does), check that the port is free, \
         or raise the timeout"
    )]
    Rendezvous {
        /// This rank.
        rank: usize,
        /// Expected ranks.
        world: usize,
        /// `MASTER_ADDR:MASTER_PORT`.
        addr: String,
        /// The rendezvous timeout.
        timeout_s: f64,
        /// PyTorch's message.
        detail: String,
    },
    /// Peers stopped responding (died, or hung past the timeout).
    #[error("rank {rank}: lost rank{} {} during {op}: {detail}", if lost.len() > 1 { "s" } else { "" }, join(lost))]
    LostRanks {
        /// This rank.
        rank: usize,
        /// The ranks that stopped.
        lost: Vec<usize>,
        /// The operation that failed.
        op: &'static str,
        /// PyTorch's message.
        detail: String,
    },
    /// A peer reported its own failure before leaving.
    #[error("rank {rank}: rank {peer} failed: {message}")]
    PeerFailed {
        /// This rank.
        rank: usize,
        /// The rank that failed.
        peer: usize,
        /// Its message.
        message: String,
    },
    /// This build cannot do what was asked.
    #[error("{0}")]
    Unsupported(String),
    /// A collective failed for another reason (shapes, dtypes, timeout without a lost peer).
    #[error("rank {rank}: {op} failed: {detail}")]
    Collective {
        /// This rank.
        rank: usize,
        /// The operation.
        op: &'static str,
        /// PyTorch's message.
        detail: String,
    },
}

fn join(ranks: &[usize]) -> String {
    ranks.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where this process sits in the job, as torchrun describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Global rank, `0..world_size`.
    pub rank: usize,
    /// Number of processes.
    pub world_size: usize,
    /// Rank on this machine (which GPU to use).
    pub local_rank: usize,
    /// Host of the rendezvous store.
    pub master_addr: String,
    /// Its port.
    pub master_port: u16,
    /// Whether a launcher agent hosts the store (torchrun): then every rank is a client.
    pub agent_store: bool,
    /// torchrun's restart count (namespaces the store keys so a restarted group does not read stale ones).
    pub restart: u32,
    /// `GLOO_SOCKET_IFNAME`: the network interface gloo binds to.
    pub ifname: Option<String>,
}

fn var(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn parse<T: std::str::FromStr>(name: &'static str, value: &str, what: &str) -> Result<T> {
    value.trim().parse().map_err(|_| Error::Env {
        var: name,
        value: value.to_string(),
        reason: format!("expected {what}"),
    })
}

impl Launch {
    /// The launch described by the environment, or `None` when `WORLD_SIZE` is not set (a plain single process).
    pub fn from_env() -> Result<Option<Launch>> {
        let Some(world) = var("WORLD_SIZE") else { return Ok(None) };
        let world_size: usize = parse("WORLD_SIZE", &world, "a number of processes >= 1")?;
        if world_size == 0 {
            return Err(Error::Env { var: "WORLD_SIZE", value: world, reason: "must be at least 1".into() });
        }
        let need = |name: &'static str| {
            var(name).ok_or_else(|| Error::Env {
                var: name,
                value: String::new(),
                reason: "must be set when WORLD_SIZE is (torchrun sets RANK, MASTER_ADDR and MASTER_PORT)".into(),
            })
        };
        let rank_s = need("RANK")?;
        let rank: usize = parse("RANK", &rank_s, "a rank number")?;
        if rank >= world_size {
            return Err(Error::Env {
                var: "RANK",
                value: rank_s,
                reason: format!("must be below WORLD_SIZE={world_size}"),
            });
        }
        let local_rank = match var("LOCAL_RANK") {
            Some(v) => parse("LOCAL_RANK", &v, "a rank number")?,
            None => rank,
        };
        let master_addr = need("MASTER_ADDR")?;
        let port_s = need("MASTER_PORT")?;
        let master_port: u16 = parse("MASTER_PORT", &port_s, "a TCP port (1-65535)")?;
        let agent_store =
            var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        let restart = match var("TORCHELASTIC_RESTART_COUNT") {
            Some(v) => parse("TORCHELASTIC_RESTART_COUNT", &v, "a number")?,
            None => 0,
        };
        Ok(Some(Launch {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
            agent_store,
            restart,
            ifname: var("GLOO_SOCKET_IFNAME"),
        }))
    }

    /// A group of one on 127.0.0.1 (tests; a program that always joins a group).
    pub fn single(port: u16) -> Launch {
        Launch {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            agent_store: false,
            restart: 0,
            ifname: None,
        }
    }

    fn loopback(&self) -> bool {
        let a = self.master_addr.as_str();
        a == "localhost" || a.starts_with("127.") || a == "::1"
    }
}

/// How the group behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Rendezvous and collective timeout: a peer that has not arrived, or sent nothing, by then is an error.
    pub timeout: Duration,
    /// Heartbeat period; a peer is declared lost when its heartbeat has not moved for three periods.
    pub heartbeat: Duration,
    /// Also form an NCCL group for CUDA tensors on this device (feature `nccl`); CPU tensors stay on Gloo.
    pub cuda_device: Option<usize>,
}

impl Default for Options {
    fn default() -> Options {
        Options { timeout: Duration::from_secs(300), heartbeat: Duration::from_millis(500), cuda_device: None }
    }
}

/// Reduction for [`Group::all_reduce`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Sum (gloo has no average: divide by the world size).
    Sum,
    /// Maximum.
    Max,
    /// Minimum.
    Min,
    /// Product.
    Product,
}

/// Bucketing of the DDP engine ([`Group::reducer`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ReducerOptions {
    /// Bucket size in bytes (PyTorch's default: 25 MB).
    pub bucket_bytes: i64,
    /// A smaller first bucket, so the last layers' gradients leave early (PyTorch's default: 1 MB).
    pub first_bucket_bytes: i64,
    /// Some parameters may get no gradient in a step (PyTorch's `find_unused_parameters`): the engine then walks the
    /// autograd graph from the outputs given to [`Reducer::prepare_backward`] each step.
    pub find_unused_parameters: bool,
}

impl Default for ReducerOptions {
    fn default() -> ReducerOptions {
        ReducerOptions { bucket_bytes: 25 << 20, first_bucket_bytes: 1 << 20, find_unused_parameters: false }
    }
}

/// A process group: this rank's membership in the job.
pub struct Group {
    raw: ffi::Group,
    launch: Launch,
    opts: Options,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("launch", &self.launch).field("opts", &self.opts).finish()
    }
}

impl Group {
    /// Joins the group (blocks until every rank has arrived, or the timeout). Rank 0 hosts the store unless a
    /// launcher agent does; gloo binds to 127.0.0.1 when the master address is a loopback one.
    pub fn join(launch: &Launch, opts: &Options) -> Result<Group> {
        let prefix = format!("m6rec/{}/", launch.restart);
        let bind = if launch.loopback() { "127.0.0.1" } else { "" };
        let args = ffi::GroupArgs {
            master_addr: &launch.master_addr,
            port: launch.master_port,
            rank: launch.rank,
            world: launch.world_size,
            host_store: launch.rank == 0 && !launch.agent_store,
            timeout_ms: opts.timeout.as_millis().min(i64::MAX as u128) as i64,
            prefix: &prefix,
            bind,
            ifname: launch.ifname.as_deref().unwrap_or(""),
            heartbeat_ms: opts.heartbeat.as_millis().clamp(10, 60_000) as i64,
        };
        let raw = ffi::Group::new(&args).map_err(|detail| Error::Rendezvous {
            rank: launch.rank,
            world: launch.world_size,
            addr: format!("{}:{}", launch.master_addr, launch.master_port),
            timeout_s: opts.timeout.as_secs_f64(),
            detail: detail.trim_end_matches('.').to_string(),
        })?;
        let group = Group { raw, launch: launch.clone(), opts: opts.clone() };
        if let Some(device) = opts.cuda_device {
            group.add_nccl(device)?;
        }
        Ok(group)
    }

    #[cfg(feature = "nccl")]
    fn add_nccl(&self, device: usize) -> Result<()> {
        self.raw.add_nccl(device).map_err(|detail| Error::Rendezvous {
            rank: self.rank(),
            world: self.world_size(),
            addr: format!("{}:{} (NCCL on cuda:{device})", self.launch.master_addr, self.launch.master_port),
            timeout_s: self.opts.timeout.as_secs_f64(),
            detail,
        })
    }

    #[cfg(not(feature = "nccl"))]
    fn add_nccl(&self, device: usize) -> Result<()> {
        Err(Error::Unsupported(format!(
            "collectives on cuda:{device} need NCCL, which this build lacks: build with the `nccl` feature \
             (`cargo xtask build-cuda`), or train on the CPU over Gloo"
        )))
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.launch.rank
    }

    /// Number of ranks.
    pub fn world_size(&self) -> usize {
        self.launch.world_size
    }

    /// The launch this group was formed from.
    pub fn launch(&self) -> &Launch {
        &self.launch
    }

    /// Copies `root`'s values into every rank's `tensors`, in place (coalesced into few messages).
    pub fn broadcast(&self, tensors: &[&Tensor], root: usize) -> Result<()> {
        self.raw.broadcast(tensors, root).map_err(|e| self.failure("broadcast", e))
    }

    /// Reduces `t` over ranks, in place.
    pub fn all_reduce(&self, t: &Tensor, op: ReduceOp) -> Result<()> {
        let code = match op {
            ReduceOp::Sum => 0,
            ReduceOp::Max => 1,
            ReduceOp::Min => 2,
            ReduceOp::Product => 3,
        };
        self.raw.all_reduce(t, code).map_err(|e| self.failure("all-reduce", e))
    }

    /// Every rank's `t`, in rank order.
    pub fn all_gather(&self, t: &Tensor) -> Result<Vec<Tensor>> {
        let outs: Vec<Tensor> = (0..self.world_size()).map(|_| t.empty_like()).collect();
        let refs: Vec<&Tensor> = outs.iter().collect();
        self.raw.all_gather(t, &refs).map_err(|e| self.failure("all-gather", e))?;
        Ok(outs)
    }

    /// Waits for every rank.
    pub fn barrier(&self) -> Result<()> {
        self.raw.barrier().map_err(|e| self.failure("barrier", e))
    }

    /// `bytes` from `root` on every rank (`bytes` is ignored elsewhere): a length, then the payload.
    pub fn broadcast_bytes(&self, bytes: &[u8], root: usize) -> Result<Vec<u8>> {
        let len = Tensor::from_slice(&[bytes.len() as i64]);
        self.broadcast(&[&len], root)?;
        let n = len.int64_value(&[0]).max(0) as usize;
        let buf = if self.rank() == root {
            Tensor::from_slice(bytes)
        } else {
            Tensor::zeros([n as i64], (Kind::Uint8, tch::Device::Cpu))
        };
        self.broadcast(&[&buf], root)?;
        let mut out = vec![0u8; n];
        buf.copy_data(&mut out, n);
        Ok(out)
    }

    /// Attaches PyTorch's DDP engine to `params` (name, leaf tensor that requires grad; the same list in the same
    /// order on every rank).
    pub fn reducer(&self, params: &[(String, Tensor)], opts: &ReducerOptions) -> Result<Reducer> {
        let tensors: Vec<&Tensor> = params.iter().map(|(_, t)| t).collect();
        let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
        let raw = self
            .raw
            .reducer(&tensors, &names, opts.bucket_bytes, opts.first_bucket_bytes, opts.find_unused_parameters)
            .map_err(|detail| Error::Collective { rank: self.rank(), op: "creating the DDP reducer", detail })?;
        Ok(Reducer { raw, rank: self.rank() })
    }

    /// Tells the other ranks why this one is about to give up; they report it instead of a lost connection.
    pub fn publish_failure(&self, message: &str) {
        // Best effort: the store may be gone already.
        let _ = self.raw.publish_error(message);
    }

    /// Turns a failed collective's message into an error naming the rank(s) responsible, when they can be told:
    /// a rank that published a failure, else ranks whose heartbeat stopped (watched for three periods), else the
    /// store's host when the store itself is gone.
    pub fn failure(&self, op: &'static str, detail: String) -> Error {
        let rank = self.rank();
        let world = self.world_size();
        let peers = || (0..world).filter(move |&r| r != rank);
        let published =
            |g: &Group| peers().find_map(|r| g.raw.peer_error(r).ok().filter(|m| !m.is_empty()).map(|m| (r, m)));
        if let Some((peer, message)) = published(self) {
            return Error::PeerFailed { rank, peer, message };
        }
        let store_gone = |detail: String| {
            if self.launch.agent_store || rank == 0 {
                Error::Collective { rank, op, detail: format!("{detail} (and the rendezvous store is unreachable)") }
            } else {
                Error::LostRanks {
                    rank,
                    lost: vec![0],
                    op,
                    detail: format!("{detail} (rank 0 hosted the store, which is gone)"),
                }
            }
        };
        let Ok(before) = self.raw.heartbeats(world) else { return store_gone(detail) };
        std::thread::sleep(self.opts.heartbeat * 3 + Duration::from_millis(100));
        // A rank that failed cleanly publishes its reason on the way out: prefer it to "lost".
        if let Some((peer, message)) = published(self) {
            return Error::PeerFailed { rank, peer, message };
        }
        let Ok(after) = self.raw.heartbeats(world) else { return store_gone(detail) };
        let lost: Vec<usize> = peers().filter(|&r| after[r] == before[r]).collect();
        if lost.is_empty() {
            Error::Collective { rank, op, detail }
        } else {
            Error::LostRanks { rank, lost, op, detail: format!("{detail} (its heartbeat stopped)") }
        }
    }
}

/// A rendezvous store hosted outside any group, as torchrun's agent hosts one: ranks launched with
/// `TORCHELASTIC_USE_AGENT_STORE=True` and `MASTER_PORT` = [`StoreHost::port`] all join as clients. Stops when dropped.
pub struct StoreHost {
    raw: ffi::StoreHost,
}

impl std::fmt::Debug for StoreHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHost").field("port", &self.port()).finish()
    }
}

impl StoreHost {
    /// Listens on `addr:port` (port 0: a free one).
    pub fn start(addr: &str, port: u16, timeout: Duration) -> Result<StoreHost> {
        let raw =
            ffi::StoreHost::new(addr, port, timeout.as_millis().min(i64::MAX as u128) as i64).map_err(|detail| {
                Error::Rendezvous {
                    rank: 0,
                    world: 0,
                    addr: format!("{addr}:{port}"),
                    timeout_s: timeout.as_secs_f64(),
                    detail,
                }
            })?;
        Ok(StoreHost { raw })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.raw.port()
    }
}

/// PyTorch's DDP gradient engine over a model's parameters ([`Group::reducer`]).
pub struct Reducer {
    raw: ffi::Reducer,
    rank: usize,
}

impl std::fmt::Debug for Reducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reducer").field("rank", &self.rank).finish()
    }
}

impl Reducer {
    /// Before the forward pass of a step whose gradients are to be averaged (every rank, every such step). Skip
    /// it (and [`Reducer::prepare_backward`]) on micro-batches that only accumulate gradients locally.
    pub fn prepare_forward(&self) -> Result<()> {
        self.raw.prepare_forward().map_err(|detail| Error::Collective {
            rank: self.rank,
            op: "preparing the forward pass",
            detail,
        })
    }

    /// After the forward pass, with the tensors backward starts from; the next `backward()` then averages the
    /// gradients over ranks (bucket by bucket, while backward still runs). Errors of the all-reduce itself surface
    /// from `backward` (use `Tensor::f_backward` and [`Group::failure`]).
    pub fn prepare_backward(&self, outputs: &[&Tensor]) -> Result<()> {
        self.raw.prepare_backward(outputs).map_err(|detail| Error::Collective {
            rank: self.rank,
            op: "preparing the backward pass",
            detail,
        })
    }
}
