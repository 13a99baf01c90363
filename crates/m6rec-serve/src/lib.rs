//! m6rec's HTTP recommendation service.
//!
//! # Brief overview
//! - [`Service::open`] loads a checkpoint with its dataset and feature cache, replays the state directory's
//!   [`journal`] (items and events acknowledged before a restart) and starts the model thread.
//! - [`Service::router`] is the axum router: `POST /v1/recommend`, `POST /v1/items`, `POST /v1/events`,
//!   `POST /v1/admin/reload`, `GET /healthz`, `GET /metrics`, `GET /openapi.json` (the [`api`] bodies).
//! - [`Service::serve`] runs it on a listener until a shutdown future resolves, then lets in-flight requests finish.
//!
//! One thread owns the model, the catalog and every history; handlers send it jobs over a bounded channel, and
//! recommendation requests that arrive together share one forward pass (dynamic batching, [`Limits::max_wait`]).
//! Every change is fsynced to the journal before it is acknowledged.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use m6rec_serve::{ModelSource, ServeConfig, Service};
//! let source = ModelSource {
//!     checkpoint: "runs/demo".into(),
//!     data: "data/demo".into(),
//!     features: None,
//!     text_model: None,
//!     device: tch::Device::Cpu,
//!     index: m6rec_serve::index::IndexKind::default(),
//! };
//! let svc = Service::open(ServeConfig::new(source, "runs/demo-serve".into()))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! svc.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod api;
mod engine;
mod error;
mod http;
/// Top-k over the item table: the [`m6rec_index`] crate.
pub use m6rec_index as index;
pub mod journal;
mod metrics;
mod model;
mod prepare;

pub use error::{ApiError, Error, Result};
pub use metrics::Metrics;
pub use model::{ModelSource, Prepared};

use crate::engine::{Engine, Job};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bounds on what one request may ask and how the service batches.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest `k`. Default 1000.
    pub max_k: usize,
    /// Longest explicit `history` (and most events per request). Default 10,000.
    pub max_history: usize,
    /// Most items per `POST /v1/items`. Default 1000.
    pub max_items: usize,
    /// Longest title + text of one posted item, in bytes (longer: 413 before any work). Default 64 KiB.
    pub max_item_text: usize,
    /// Most text tokens one `POST /v1/items` may ask the encoder for, counted after truncation before any encoder
    /// work (more: 413). Default 32,768 (about 15 s of all-MiniLM-L6-v2 on 2 cores).
    pub max_item_tokens: usize,
    /// Items per encoder forward when new items are embedded; recommendations queued meanwhile are answered between
    /// two such batches. Default 8.
    pub embed_batch: usize,
    /// Largest request body in bytes. Default 16 MiB.
    pub max_body: usize,
    /// A request (body included) must finish within this. Default 30 s.
    pub request_timeout: Duration,
    /// A connection must send a whole request head within this, and an idle keep-alive connection is closed after
    /// it. Default 10 s.
    pub header_timeout: Duration,
    /// Open connections at most; more are closed as they are accepted. Default 1024.
    pub max_connections: usize,
    /// Most recommendation requests per forward pass. Default 64.
    pub max_batch: usize,
    /// How long the model thread waits for more requests to join a batch. Default 1 ms.
    pub max_wait: Duration,
    /// Jobs queued for the model thread before requests get 503. Default 4096.
    pub queue: usize,
    /// Cached user states (the cache is emptied when full). Default 100,000.
    pub user_cache: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_k: 1000,
            max_history: 10_000,
            max_items: 1000,
            max_item_text: 64 << 10,
            max_item_tokens: 32_768,
            embed_batch: 8,
            max_body: 16 << 20,
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_batch: 64,
            max_wait: Duration::from_millis(1),
            queue: 4096,
            user_cache: 100_000,
        }
    }
}

/// What [`Service::open`] needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The model.
    pub source: ModelSource,
    /// Journal and media of items and events added while serving (created if missing).
    pub state_dir: PathBuf,
    /// Folder that `image_path` / `audio_path` in `POST /v1/items` are relative to; none: paths are refused.
    pub media_root: Option<PathBuf>,
    /// Request bounds and batching.
    pub limits: Limits,
    /// The bearer token `/v1/admin/*` routes require (`Authorization: Bearer TOKEN`); none: those routes answer 403.
    pub admin_token: Option<String>,
}

impl ServeConfig {
    /// Default limits, no media root.
    pub fn new(source: ModelSource, state_dir: PathBuf) -> ServeConfig {
        ServeConfig { source, state_dir, media_root: None, limits: Limits::default(), admin_token: None }
    }
}

/// What a client may see of an internal error: the first line, without libtorch's "Exception raised from ..." tail,
/// with every word that looks like a file path replaced by `<path>`, at most 300 characters.
pub fn public_message(message: &str) -> String {
    let first = message.lines().next().unwrap_or("");
    let first = first.split(" Exception raised from ").next().unwrap_or(first);
    let words: Vec<String> = first
        .split(' ')
        .map(|w| {
            let core = w.trim_matches(|c: char| !c.is_alphanumeric() && c != '/' && c != '.' && c != '_' && c != '-');
            if core.contains('/') || core.contains('\\') {
                w.replace(core, "<path>")
            } else {
                w.to_string()
            }
        })
        .collect();
    let out = words.join(" ");
    match out.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &out[..i]),
        None => out,
    }
}

/// A running service: the model thread and what the handlers share.
pub struct Service {
    tx: crossbeam_channel::Sender<Job>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    cfg: ServeConfig,
    metrics: Arc<Metrics>,
    decoders: prepare::Decoders,
    default_domain: String,
    generation: AtomicU64,
    reload_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("cfg", &self.cfg).finish()
    }
}

impl Service {
    /// Loads the model, replays the journal in `cfg.state_dir` and starts the model thread.
    pub fn open(cfg: ServeConfig) -> Result<Arc<Service>> {
        if cfg.limits.max_batch == 0 || cfg.limits.max_k == 0 || cfg.limits.queue == 0 {
            return Err(Error::Config("limits: max_batch, max_k and queue must be at least 1".into()));
        }
        let (model, ds) = model::Model::load(&cfg.source, 1)?;
        let decoders = prepare::Decoders::new(
            model.features.as_ref(),
            model.tokenizer(),
            cfg.limits.max_item_text,
            cfg.limits.max_body,
        );
        let default_domain = ds.items.first().map(|it| it.domain.clone()).unwrap_or_default();
        let (journal, records) = journal::Journal::open(&cfg.state_dir)?;
        let media_dir = cfg.state_dir.join("media");
        let metrics = Arc::new(Metrics::new());
        metrics.generation.set(1);
        let mut engine = Engine::new(model, &ds, journal, cfg.limits.clone(), metrics.clone());
        let n = records.len();
        let applied = engine.replay(records, |s| decoders.stored_item(s, |name| media_dir.join(name)));
        if n > 0 {
            tracing::info!("state {}: replayed {applied} of {n} journal records", cfg.state_dir.display());
        }
        let (tx, rx) = crossbeam_channel::bounded(cfg.limits.queue);
        let thread = std::thread::Builder::new()
            .name("m6rec-model".into())
            .spawn(move || engine.run(rx))
            .map_err(|e| Error::Config(format!("starting the model thread: {e}")))?;
        Ok(Arc::new(Service {
            tx,
            thread: Mutex::new(Some(thread)),
            cfg,
            metrics,
            decoders,
            default_domain,
            generation: AtomicU64::new(1),
            reload_lock: tokio::sync::Mutex::new(()),
        }))
    }

    /// The metrics this service records.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The HTTP API.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        http::router(self.clone())
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting, lets in-flight requests finish and stops
    /// the model thread. Everything acknowledged is already on disk.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use hyper_util::rt::{TokioIo, TokioTimer};
        let app = self.router();
        let limits = self.cfg.limits.clone();
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                a = listener.accept() => a,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the connections there are, try again soon.
                    self.metrics.accept_errors.inc();
                    if self.metrics.accept_errors.get() % 1000 == 1 {
                        tracing::warn!("accepting a connection: {e} (retrying; see m6rec_accept_errors_total)");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                self.metrics.connections_refused.inc();
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
            let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                let _ = conn.await;
                drop(slot);
            });
        }
        drop(listener);
        // Requests in flight finish (each is bounded by request_timeout); connections still reading a head are
        // closed by the header timeout. Whatever is left after both is dropped.
        let grace = limits.request_timeout.max(limits.header_timeout) + Duration::from_secs(1);
        if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
            tracing::warn!("shutdown: connections still open after {grace:?}; closing them");
        }
        self.stop();
        Ok(())
    }

    /// Asks the model thread to stop after the jobs already queued and waits for it (when no other handle to the
    /// service remains; otherwise it stops when the last one is dropped).
    fn stop(self: Arc<Self>) {
        if let Ok(svc) = Arc::try_unwrap(self) {
            let thread = svc.thread.lock().ok().and_then(|mut t| t.take());
            drop(svc.tx);
            if let Some(t) = thread {
                let _ = t.join();
            }
        }
    }

    /// Loads `checkpoint` (default: the one served, re-read) beside the current model, then swaps it in: requests
    /// queued before the swap finish on the old model. The checkpoint must be trained on the same catalog.
    pub async fn reload(&self, checkpoint: Option<PathBuf>) -> std::result::Result<api::ReloadResponse, ApiError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let generation = self.generation.load(Ordering::SeqCst) + 1;
        let mut source = self.cfg.source.clone();
        if let Some(c) = checkpoint {
            source.checkpoint = c;
        }
        let loaded = tokio::task::spawn_blocking(move || model::Model::load(&source, generation))
            .await
            .map_err(|e| ApiError::internal(format!("loading the checkpoint: {e}")))?
            .map_err(|e| {
                // The whole message (paths, libtorch's native frames) is for the operator's log; the client gets
                // its first line with paths left out.
                tracing::error!("reload failed, still serving the previous model: {e}");
                ApiError::invalid(
                    "bad_checkpoint",
                    format!(
                        "{}; still serving the previous model (the server's log has the details)",
                        public_message(&e.to_string())
                    ),
                )
            })?;
        let answer = self.ask(|reply| Job::Swap(Box::new(loaded.0), reply)).await?;
        self.generation.store(generation, Ordering::SeqCst);
        Ok(answer)
    }

    /// Recall@`k` of the served top-k index against exact ranking, over the states of up to `users` known users
    /// (every second one by id: the half an IVF index is not tuned on; 1.0 for the exact index): what an approximate
    /// index gives up.
    pub async fn index_recall(&self, users: usize, k: usize) -> std::result::Result<f64, ApiError> {
        Ok(self.index_report(users, k).await?.0)
    }

    /// [`Service::index_recall`] and what the index is, in words ("exact", "IVF, 2000 cells, probe 32", ...).
    pub async fn index_report(&self, users: usize, k: usize) -> std::result::Result<(f64, String), ApiError> {
        self.ask(|reply| Job::Recall(users, k, reply)).await
    }

    async fn ask<T>(&self, job: impl FnOnce(engine::Reply<T>) -> Job) -> std::result::Result<T, ApiError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx.try_send(job(tx)).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => {
                ApiError::unavailable("the model queue is full; retry with backoff")
            }
            crossbeam_channel::TrySendError::Disconnected(_) => ApiError::unavailable("the model thread has stopped"),
        })?;
        rx.await.map_err(|_| ApiError::internal("the model thread dropped the request"))?
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn public_messages_drop_native_frames_and_paths() {
        let native = "loading the model: checkpoint /home/me/ck: model.safetensors does not fit (shape mismatch for \
                      model.item_emb.weight, expected [360, 48] got [360, 32] Exception raised from load at \
                      /pytorch/torch/csrc/api/src/serialize.cpp:91 (most recent call first):\nframe #0: 0x7f00 in /lib/libc10.so";
        let m = super::public_message(native);
        assert!(!m.contains('/') && !m.contains("frame") && !m.contains("Exception"), "{m}");
        assert!(m.starts_with("loading the model: checkpoint <path>: model.safetensors does not fit"), "{m}");
        assert!(m.contains("expected [360, 48] got [360, 32]"), "{m}");
        assert!(super::public_message(&"x".repeat(1000)).len() <= 303);
    }
}
