//! `m6rec serve`: the HTTP service (m6rec-serve) with signals: SIGTERM or Ctrl-C stop it gracefully, SIGHUP reloads
//! the checkpoint.

use anyhow::{anyhow, Context, Result};
use clap::Args;
use m6rec_serve::index::{HnswParams, IndexKind, IvfParams};
use m6rec_serve::{Limits, ModelSource, ServeConfig, Service};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Checkpoint directory (reloaded in place on SIGHUP or POST /v1/admin/reload).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Dataset the checkpoint was trained on (default: the path recorded in the checkpoint).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Feature cache for checkpoints with an item tower (default `<data>.features`).
    #[arg(long)]
    features: Option<PathBuf>,
    /// Journal and media of items and events posted while serving (default `<checkpoint>.serve-state`).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Folder that `image_path` / `audio_path` of POST /v1/items are relative to (default: paths refused).
    #[arg(long)]
    media_root: Option<PathBuf>,
    /// Text encoder for new items' text (default: the one the feature cache was built with).
    #[arg(long)]
    text_model: Option<PathBuf>,
    /// auto, cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Top-k index: exact (score every item), ivf (k-means cells, the best-scoring ones scanned; tuned at start to
    /// --ivf-recall), hnsw (graph; measure its recall with `cargo xtask bench serve` first) or auto (ivf from
    /// --ivf-min-items items, exact below).
    #[arg(long, default_value = "auto")]
    index: String,
    /// Catalog size from which `--index auto` uses IVF.
    #[arg(long, default_value_t = 200_000)]
    ivf_min_items: usize,
    /// IVF cells (0: 4·√items).
    #[arg(long, default_value_t = 0)]
    ivf_lists: usize,
    /// IVF cells scanned per query, before tuning.
    #[arg(long, default_value_t = 8)]
    ivf_probe: usize,
    /// Recall@10 against exact top-k, over known users' states, that the IVF probe is raised to reach at start-up
    /// and on reload (0: no tuning, keep --ivf-probe).
    #[arg(long, default_value_t = 0.97)]
    ivf_recall: f64,
    /// HNSW search breadth (higher: better recall, slower).
    #[arg(long, default_value_t = 96)]
    ef_search: usize,
    /// Most recommendation requests per forward pass.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Microseconds the model thread waits for more requests to join a batch.
    #[arg(long, default_value_t = 1000)]
    max_wait_us: u64,
    /// Largest k.
    #[arg(long, default_value_t = 1000)]
    max_k: usize,
    /// Longest explicit history accepted.
    #[arg(long, default_value_t = 10_000)]
    max_history: usize,
    /// Largest request body, in MiB (1 to 4096).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_body_mib: u64,
    /// Longest title + text of one posted item, in KiB (1 to 4096).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_item_text_kib: u64,
    /// Most text tokens one POST /v1/items may ask the encoder for (after truncation); more is refused with 413.
    #[arg(long, default_value_t = 32_768, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    max_item_tokens: u64,
    /// Items per encoder forward when new items are embedded (1 to 4096).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=4096))]
    embed_batch: u64,
    /// Bearer token for /v1/admin/* (reload); without one those routes answer 403. Prefer the environment variable:
    /// a flag shows in the process list.
    #[arg(long, env = "M6REC_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Seconds a connection has to send a request head, and that an idle keep-alive connection stays open (1 to 3600).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_timeout_s: u64,
    /// Open connections at most (more are closed at accept; keep it under `ulimit -n`).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    /// Seconds a request (its body included) may take (1 to 3600).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout_s: u64,
}

pub fn serve(a: &ServeArgs) -> Result<()> {
    let device = m6rec_tensor::device::parse(&a.device)?;
    let data = match &a.data {
        Some(d) => d.clone(),
        None if m6rec_train::generative::Generative::is_checkpoint(&a.checkpoint) => {
            m6rec_train::generative::Generative::data_path(&a.checkpoint).ok_or_else(|| {
                anyhow!(
                    "generative checkpoint {} does not record its dataset's path; give --data DIR",
                    a.checkpoint.display()
                )
            })?
        }
        None => m6rec_train::checkpoint::load_config(&a.checkpoint)
            .with_context(|| format!("loading checkpoint {}", a.checkpoint.display()))?
            .dataset
            .path
            .ok_or_else(|| {
                anyhow!("checkpoint {} does not record its dataset's path; give --data DIR", a.checkpoint.display())
            })?,
    };
    let state = a.state.clone().unwrap_or_else(|| {
        let mut s = a.checkpoint.clone().into_os_string();
        s.push(".serve-state");
        PathBuf::from(s)
    });
    if a.admin_token.as_deref().is_some_and(|t| t.len() < 16) {
        anyhow::bail!("--admin-token (M6REC_ADMIN_TOKEN) is shorter than 16 characters; use a long random one (`openssl rand -hex 32`)");
    }
    let cfg = ServeConfig {
        source: model_source(a, device, &data)?,
        state_dir: state.clone(),
        media_root: a.media_root.clone(),
        limits: limits(a),
        admin_token: a.admin_token.clone(),
    };
    let svc = Service::open(cfg).with_context(|| {
        format!("starting the service for checkpoint {} and dataset {}", a.checkpoint.display(), data.display())
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(a, svc, &state))
}

/// What the service loads: the checkpoint, its dataset and content, and the top-k index the flags choose.
fn model_source(a: &ServeArgs, device: tch::Device, data: &std::path::Path) -> Result<ModelSource> {
    let hnsw = HnswParams { ef_search: a.ef_search, ..HnswParams::default() };
    if !(0.0..=1.0).contains(&a.ivf_recall) {
        anyhow::bail!("--ivf-recall {}: expected a recall between 0 (no tuning) and 1", a.ivf_recall);
    }
    let ivf = IvfParams {
        lists: a.ivf_lists,
        probe: a.ivf_probe,
        target_recall: (a.ivf_recall > 0.0).then_some(a.ivf_recall),
    };
    Ok(ModelSource {
        checkpoint: a.checkpoint.clone(),
        data: data.to_path_buf(),
        features: a.features.clone(),
        text_model: a.text_model.clone(),
        device,
        index: match a.index.as_str() {
            "exact" => IndexKind::Exact,
            "ivf" => IndexKind::Ivf(ivf),
            "hnsw" => IndexKind::Hnsw(hnsw),
            "auto" => IndexKind::Auto { min_items: a.ivf_min_items, params: ivf },
            other => anyhow::bail!("--index {other}: expected exact, ivf, hnsw or auto"),
        },
    })
}

/// The request limits from the flags (sizes past this platform's `usize` saturate: the flags' own ranges bound them).
fn limits(a: &ServeArgs) -> Limits {
    let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    Limits {
        max_k: a.max_k,
        max_history: a.max_history,
        max_body: size(a.max_body_mib << 20),
        request_timeout: Duration::from_secs(a.timeout_s),
        header_timeout: Duration::from_secs(a.header_timeout_s),
        max_connections: size(a.max_connections),
        max_batch: a.max_batch,
        max_wait: Duration::from_micros(a.max_wait_us),
        max_item_text: size(a.max_item_text_kib << 10),
        max_item_tokens: size(a.max_item_tokens),
        embed_batch: size(a.embed_batch),
        ..Limits::default()
    }
}

/// Listens on `--addr` and serves until SIGTERM or Ctrl-C; SIGHUP reloads the checkpoint.
async fn run(a: &ServeArgs, svc: std::sync::Arc<Service>, state: &std::path::Path) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(&a.addr)
        .await
        .with_context(|| format!("listening on {} (is the port taken? pick another with --addr)", a.addr))?;
    eprintln!(
        "serving {} on http://{} (state {}); API: GET /openapi.json",
        a.checkpoint.display(),
        listener.local_addr().map(|x| x.to_string()).unwrap_or_else(|_| a.addr.clone()),
        state.display()
    );
    let reloader = svc.clone();
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            match reloader.reload(None).await {
                Ok(r) => eprintln!("SIGHUP: now serving generation {} from {}", r.model_generation, r.checkpoint),
                Err(e) => eprintln!("SIGHUP: reload failed, still serving the previous model: {}", e.message),
            }
        }
    });
    svc.serve(listener, shutdown_signal()).await.context("serving")?;
    eprintln!("stopped; everything acknowledged is in the journal");
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
    eprintln!("shutting down: finishing in-flight requests");
}
