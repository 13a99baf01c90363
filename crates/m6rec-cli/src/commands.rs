//! The subcommands. Each adds context (what it was doing, with which path) to the library errors.

use crate::progress::{spinner, TrainProgress};
use crate::table::metrics_table;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use m6rec_data::{Dataset, Split};
use m6rec_train::checkpoint::{self, DatasetFingerprint};
use m6rec_train::eval::{evaluate, EvalOptions, Stage, Targets};
use m6rec_train::metrics::Metrics;
use m6rec_train::{recommend, Popularity, RunConfig, Trainer};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn load_dataset(dir: &Path) -> Result<Dataset> {
    Dataset::load(dir).with_context(|| format!("loading dataset {}", dir.display()))
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Dataset directory (from `m6rec import`).
    #[arg(long)]
    data: PathBuf,
    /// Run configuration (TOML with [model], [optim], [train]). Absent: the automatic strategy decides everything
    /// from the data, the machine and --budget; with `strategy = "auto"` in the file it decides what the file leaves
    /// out.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Training time budget (`90s`, `10m`, `1h`): the automatic strategy plans for it and stops there (sets
    /// train.max_seconds).
    #[arg(long, value_parser = m6rec_train::strategy::parse_duration, conflicts_with = "max_seconds")]
    budget: Option<f64>,
    /// `auto` or `fixed`: overrides the config's `strategy` (`fixed` without a config: every field its default).
    #[arg(long, value_parser = ["auto", "fixed"])]
    strategy: Option<String>,
    /// Checkpoint directory (default: runs/<dataset name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run saved in --out.
    #[arg(long)]
    resume: bool,
    /// Replace the run saved in --out (without it, training into an existing run is refused).
    #[arg(long, conflicts_with = "resume")]
    force: bool,
    /// Override train.epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Override train.max_seconds.
    #[arg(long)]
    max_seconds: Option<f64>,
    /// Override train.seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override train.split: `leave-one-out` (per user, the last event is the test target) or `temporal` (a global
    /// time cut: the last 10% of events by time are the test period, the 10% before it validation; set the fractions
    /// in `[train.split]`).
    #[arg(long, value_parser = ["leave-one-out", "temporal"])]
    split: Option<String>,
    /// Override train.cold_items: hold this fraction of the catalog out of training for cold-start evaluation.
    #[arg(long)]
    cold_items: Option<f64>,
    /// Fine-tune: start from this checkpoint's weights (pretrained on any catalog; variables whose shapes depend on
    /// the catalog start fresh). Its run configuration is used unless --config is given.
    #[arg(long, conflicts_with = "resume")]
    init_from: Option<PathBuf>,
    /// Write a JSON summary (seconds, peak memory, epochs, best validation NDCG@10, whether the run ended).
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// Return after this epoch even if the run is not over (the learning-rate schedule still spans train.epochs);
    /// `--resume` continues exactly from there. `m6rec tune` trains its trials rung by rung this way.
    #[arg(long)]
    until_epoch: Option<usize>,
    /// Feature cache for runs with `[item_tower]` (default `<data>.features`, from `m6rec features --text-model`).
    #[arg(long)]
    features: Option<PathBuf>,
    /// auto, cpu or cuda:N. Under torchrun, auto means cuda:LOCAL_RANK when GPUs are present.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Data-parallel runs (launched by torchrun, or with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set): seconds
    /// to wait for every rank to arrive, and for a collective to complete, before giving up with an error that
    /// names the missing rank.
    #[arg(long, default_value_t = 300.0)]
    dist_timeout: f64,
}

/// Whether `inner` is `outer` or inside it (both resolved as far as they exist).
pub(crate) fn contains(outer: &Path, inner: &Path) -> bool {
    let resolve = |p: &Path| {
        std::fs::canonicalize(p).unwrap_or_else(|_| std::env::current_dir().map(|d| d.join(p)).unwrap_or(p.into()))
    };
    resolve(inner).starts_with(resolve(outer))
}

/// The run config as given: a complete one (a `fixed` file, or the `--init-from` checkpoint's), or, for the
/// automatic strategy, the user's TOML table (empty without a file) for [`auto_strategy`] to complete.
fn read_run_config(a: &TrainArgs) -> Result<(Option<RunConfig>, Option<toml::Table>)> {
    let auto_flag = a.strategy.as_deref().map(|s| s == "auto");
    match (&a.config, &a.init_from) {
        (Some(p), _) => {
            let cfg = RunConfig::load(p).with_context(|| format!("reading run config {}", p.display()))?;
            let auto = auto_flag.unwrap_or(cfg.strategy == m6rec_train::strategy::Strategy::Auto);
            if !auto {
                return Ok((Some(cfg), None));
            }
            let text = std::fs::read_to_string(p).with_context(|| format!("reading run config {}", p.display()))?;
            let table: toml::Table =
                toml::from_str(&text).with_context(|| format!("reading run config {}", p.display()))?;
            Ok((None, Some(table)))
        }
        (None, Some(ck)) => Ok((
            Some(checkpoint::load_config(ck).with_context(|| format!("loading checkpoint {}", ck.display()))?.run),
            None,
        )),
        (None, None) if auto_flag == Some(false) => Ok((Some(RunConfig::default()), None)),
        (None, None) => Ok((None, Some(toml::Table::new()))),
    }
}

/// Completes the user's table by the automatic strategy and prints its decisions.
fn auto_strategy(
    a: &TrainArgs,
    ds: &m6rec_data::Dataset,
    table: &toml::Table,
    device: tch::Device,
    leader: bool,
    data_parallel: bool,
) -> Result<RunConfig> {
    use m6rec_train::strategy;
    let cache = a.features.clone().unwrap_or_else(|| m6rec_features::default_cache_dir(&a.data));
    let (content, cache_note) = match m6rec_features::Features::load(&cache, ds) {
        Ok(f) => {
            let n = |rows: &[i64]| rows.iter().filter(|&&r| r >= 0).count();
            ([n(&f.text_row), n(&f.image_row), n(&f.audio_row)], None)
        }
        Err(e) if cache.exists() => ([0; 3], Some(format!("feature cache not used: {e}"))),
        Err(_) => ([0; 3], None),
    };
    let profile = strategy::Profile::of(ds, content);
    let machine = strategy::Machine {
        threads: usize::try_from(tch::get_num_threads()).unwrap_or(1).max(1),
        cuda: device.is_cuda(),
        // Data-parallel ranks must decide alike: a measured rate differs from rank to rank, the constant does not.
        roof: (!data_parallel).then(|| strategy::Machine::measure_roof(device)),
    };
    let budget = a.budget.or(a.max_seconds).or_else(|| {
        let v = table.get("train").and_then(|t| t.get("max_seconds"))?;
        v.as_float().or_else(|| v.as_integer().map(|i| i as f64)).filter(|&s| s > 0.0)
    });
    let origin = a.config.as_ref().map_or("no --config".to_string(), |p| p.display().to_string());
    let resolved = strategy::resolve(table, &profile, &machine, budget)
        .with_context(|| format!("the automatic strategy for {} ({origin})", a.data.display()))?;
    if leader {
        println!(
            "automatic strategy for {} users, {} items, {} events (histories: mean {:.1}, p90 {}), {} on {} thread(s) ({}), {}:",
            profile.users,
            profile.items,
            profile.events,
            profile.len_mean,
            profile.len_p90,
            if machine.cuda { "GPU" } else { "CPU" },
            machine.threads,
            machine.roof.map_or("matmul rate not measured under data parallelism".into(), |r| format!(
                "{:.0} GFLOP/s matmul",
                r / 1e9
            )),
            budget.map_or("no time budget".into(), |b| format!("budget {b:.0} s"))
        );
        if let Some(n) = cache_note {
            println!("  {n}");
        }
        for line in strategy::table(&resolved.decisions).lines() {
            println!("  {line}");
        }
        println!("  (* set in the run config; estimated {:.1} s per epoch)", resolved.epoch_seconds);
    }
    Ok(resolved.config)
}

/// Peak resident memory of this process in MB (Linux `VmHWM`), if known.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024.0)
}

/// The `[train]` overrides of `m6rec train`'s flags: --epochs, --max-seconds / --budget, --seed, --split,
/// --cold-items.
fn apply_train_flags(a: &TrainArgs, cfg: &mut RunConfig) -> Result<()> {
    if let Some(e) = a.epochs {
        cfg.train.epochs = e;
    }
    if let Some(s) = a.max_seconds.or(a.budget) {
        cfg.train.max_seconds = s;
    }
    if let Some(s) = a.seed {
        cfg.train.seed = s;
    }
    if let Some(kind) = a.split.as_deref() {
        cfg.train.split = match kind {
            "temporal" => match cfg.train.split {
                t @ m6rec_train::SplitConfig::Temporal { .. } => t,
                _ => m6rec_train::SplitConfig::Temporal { valid: 0.1, test: 0.1 },
            },
            _ => m6rec_train::SplitConfig::LeaveOneOut,
        };
    }
    if let Some(c) = a.cold_items {
        cfg.train.cold_items = c;
        cfg.validate(Path::new("--cold-items"))?;
    }
    Ok(())
}

pub fn train(a: &TrainArgs) -> Result<()> {
    let launch = m6rec_train::ddp::Launch::from_env()
        .context("reading the data-parallel launch variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)")?;
    let device = match &launch {
        Some(l) if a.device == "auto" && tch::Cuda::is_available() => tch::Device::Cuda(l.local_rank),
        _ => m6rec_tensor::device::parse(&a.device)?,
    };
    if launch.is_some() && device.is_cuda() && !cfg!(feature = "nccl") {
        anyhow::bail!(
            "data-parallel training on {device:?} needs NCCL, which this build lacks: build with `cargo xtask build-cuda` \
             (feature `nccl`), or pass --device cpu to train over Gloo"
        );
    }
    let leader = launch.as_ref().is_none_or(|l| l.rank == 0);
    // The config is read first: a typo there should not wait for the data to load.
    let (cfg, user_table) = read_run_config(a)?;
    let ds = load_dataset(&a.data)?;
    let cfg = match (cfg, user_table) {
        (_, Some(table)) if !a.resume => Some(auto_strategy(a, &ds, &table, device, leader, launch.is_some())?),
        (cfg, _) => cfg,
    };
    let out = a.out.clone().unwrap_or_else(|| m6rec_train::default_run_dir(&ds.name));
    if let Some(mut cfg) = cfg.clone().filter(|c| c.generative.is_some()) {
        if a.resume || launch.is_some() || a.init_from.is_some() || a.until_epoch.is_some() {
            bail!("--resume, --init-from, --until-epoch and data-parallel training are not supported for [generative] runs yet");
        }
        if contains(&out, &a.data) {
            bail!("--out {} contains the dataset {}: choose another --out", out.display(), a.data.display());
        }
        apply_train_flags(a, &mut cfg)?;
        let paths =
            crate::generative::Paths { data: &a.data, features: a.features.as_deref(), out: &out, force: a.force };
        return crate::generative::train(cfg, &ds, paths, device);
    }
    if !a.resume {
        if contains(&out, &a.data) {
            anyhow::bail!("--out {} contains the dataset {}: choose another --out", out.display(), a.data.display());
        }
        m6rec_train::checkpoint::CHECKPOINT_DIR.check_replaceable(&out).context("--out")?;
        if out.join("state.json").is_file() && !a.force {
            anyhow::bail!(
                "{} holds a training run already: --resume continues it, --force replaces it (its best model too)",
                out.display()
            );
        }
    }
    let mut fp = DatasetFingerprint::of(&ds);
    fp.path = std::fs::canonicalize(&a.data).ok();
    let tower_run = if a.resume {
        checkpoint::load_config(&out).ok().map(|c| c.run).filter(|r| r.item_tower.is_some())
    } else {
        cfg.clone().filter(|c| c.item_tower.is_some())
    };
    let content = match &tower_run {
        Some(run) => Some(
            m6rec_train::open::item_content(&a.data, a.features.as_deref(), &ds, &run.recommender())
                .context("reading the item content for [item_tower]")?,
        ),
        None => None,
    };
    let mut trainer = if a.resume {
        Trainer::resume_with_content(&out, &fp, content.as_ref(), device)
            .with_context(|| format!("resuming from {}", out.display()))?
    } else {
        let mut cfg = cfg.unwrap_or_default();
        apply_train_flags(a, &mut cfg)?;
        cfg.fill_domain_vocab(ds.items.iter().map(|it| it.domain.as_str()));
        let mut t = Trainer::with_content(cfg, fp, content.as_ref(), device)?;
        if let Some(ck) = &a.init_from {
            let (copied, skipped) =
                t.init_from(ck).with_context(|| format!("initialising from checkpoint {}", ck.display()))?;
            println!(
                "fine-tuning from {}: {} tensors copied, {} left fresh ({})",
                ck.display(),
                copied.len(),
                skipped.len(),
                skipped.join(", ")
            );
        }
        t
    };
    let domains: Vec<&str> = ds.items.iter().map(|it| it.domain.as_str()).collect();
    trainer.set_item_domains(&domains)?;
    let cfg = trainer.config().clone();
    if let Some(l) = &launch {
        use m6rec_train::ddp::{DdpGroup, Options, ReducerOptions};
        let opts = Options {
            timeout: std::time::Duration::from_secs_f64(a.dist_timeout.max(1.0)),
            // CUDA tensors go over NCCL (feature `nccl`), CPU tensors over Gloo.
            cuda_device: match device {
                tch::Device::Cuda(i) => Some(i),
                _ => None,
            },
            ..Options::default()
        };
        // With an item tower the sequence model's own id table gets no gradient: the DDP engine must look for
        // parameters a step leaves unused.
        let reducer = ReducerOptions { find_unused_parameters: cfg.item_tower.is_some(), ..ReducerOptions::default() };
        let group = DdpGroup::join(l, &opts, reducer)
            .with_context(|| format!("joining the data-parallel group as rank {} of {}", l.rank, l.world_size))?;
        if leader {
            println!(
                "data-parallel: {} ranks over {} ({}:{}), global batch {} (about {} rows per rank)",
                l.world_size,
                if device.is_cuda() { "NCCL" } else { "Gloo" },
                l.master_addr,
                l.master_port,
                cfg.train.batch_size,
                cfg.train.batch_size.div_ceil(l.world_size)
            );
        }
        trainer.set_data_parallel(Box::new(group));
    }
    if !leader {
        // Workers train their shard quietly; rank 0 reports, validates and writes the checkpoint.
        let split = cfg.split(&ds.interactions, ds.n_users(), ds.n_items());
        trainer
            .fit_until(&split, Some(&out), &mut m6rec_train::Silent, a.until_epoch.unwrap_or(usize::MAX))
            .with_context(|| format!("training (rank {})", launch.as_ref().map_or(0, |l| l.rank)))?;
        return Ok(());
    }
    let split = cfg.split(&ds.interactions, ds.n_users(), ds.n_items());
    if split.n_cold() > 0 {
        println!(
            "cold-start run: {} items ({:.0}% of the catalog) are held out of training",
            split.n_cold(),
            100.0 * cfg.train.cold_items
        );
    }
    println!(
        "training on {} ({} users, {} items, {} events): d_model {} x {} layers, max_len {}, {:?}, up to {} epochs",
        ds.name,
        ds.n_users(),
        ds.n_items(),
        ds.interactions.len(),
        cfg.model.d_model,
        cfg.model.n_layers,
        cfg.model.max_len,
        cfg.model.loss,
        cfg.train.epochs
    );
    let mut progress = TrainProgress::new(cfg.train.epochs, trainer.state().epoch);
    let started = Instant::now();
    let res = trainer.fit_until(&split, Some(&out), &mut progress, a.until_epoch.unwrap_or(usize::MAX));
    progress.finish();
    let state = res.with_context(|| format!("training into {}", out.display()))?;
    println!(
        "done in {:.1}s ({}): best validation NDCG@10 {:.4} at epoch {}",
        started.elapsed().as_secs_f64(),
        state.stop_reason.as_deref().unwrap_or("paused at --until-epoch; --resume continues"),
        state.best_ndcg10,
        state.best_epoch
    );
    println!("checkpoint: {}  (training curves: {})", out.display(), out.join("curves.svg").display());
    if let Some(p) = &a.summary_json {
        let summary = serde_json::json!({
            "train_seconds": state.elapsed,
            "peak_rss_mb": peak_rss_mb(),
            "epochs": state.epoch,
            "best_epoch": state.best_epoch,
            "best_valid_ndcg@10": state.best_ndcg10,
            "stop_reason": state.stop_reason,
            "finished": state.finished,
        });
        m6rec_tensor::atomic::write_bytes(p, serde_json::to_string_pretty(&summary)?.as_bytes())
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Checkpoint directory (from `m6rec train`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Dataset directory the checkpoint was trained on.
    #[arg(long)]
    data: PathBuf,
    /// Which held-out target: test or valid.
    #[arg(long, default_value = "test", value_parser = ["test", "valid"])]
    stage: String,
    /// Exclude items already in the user's history from the ranking.
    #[arg(long)]
    filter_history: bool,
    /// Skip the popularity baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Also write the metrics as JSON (one object per model).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also draw the metrics as a bar chart (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// auto, cpu or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Feature cache for checkpoints with an item tower (default `<data>.features`).
    #[arg(long)]
    features: Option<PathBuf>,
    /// Zero-shot transfer: `--data` is another catalog (a domain never seen in training), scored from its items'
    /// content with no training. Needs a model pretrained with a content_only or hybrid item tower.
    #[arg(long)]
    zero_shot: bool,
}

/// The device, the dataset and a checkpoint trained on it (refusing a checkpoint of another catalog).
pub(crate) fn open_model(
    device: &str,
    data: &Path,
    ckpt: &Path,
    features: Option<&Path>,
) -> Result<(tch::Device, Dataset, checkpoint::LoadedModel)> {
    let device = m6rec_tensor::device::parse(device)?;
    let (ds, loaded) = m6rec_train::open::open_model(device, data, ckpt, features)
        .with_context(|| format!("loading checkpoint {} for dataset {}", ckpt.display(), data.display()))?;
    Ok((device, ds, loaded))
}

/// A checkpoint pretrained on another catalog, reading this dataset's items through its content tower.
fn open_zero_shot(
    device: &str,
    data: &Path,
    ckpt: &Path,
    features: Option<&Path>,
) -> Result<(tch::Device, Dataset, checkpoint::LoadedModel)> {
    let device = m6rec_tensor::device::parse(device)?;
    let (ds, loaded) = m6rec_train::open::open_zero_shot(device, data, ckpt, features).with_context(|| {
        format!("loading checkpoint {} for zero-shot transfer to {}", ckpt.display(), data.display())
    })?;
    println!(
        "zero-shot: a model trained on {} ({} items) scores {} ({} items) from content alone, with no training on it",
        loaded.config.dataset.name,
        loaded.config.dataset.n_items,
        ds.name,
        ds.n_items()
    );
    Ok((device, ds, loaded))
}

pub fn eval(a: &EvalArgs) -> Result<()> {
    if m6rec_train::generative::Generative::is_checkpoint(&a.checkpoint) {
        if a.zero_shot {
            bail!("--zero-shot needs a content item tower; a generative checkpoint reads items by their semantic IDs");
        }
        let ds = load_dataset(&a.data)?;
        let p = crate::generative::EvalPaths {
            checkpoint: &a.checkpoint,
            ds: &ds,
            stage: if a.stage == "valid" { Stage::Valid } else { Stage::Test },
            filter_history: a.filter_history,
            no_baseline: a.no_baseline,
            json: a.json.as_deref(),
        };
        return crate::generative::eval(p, m6rec_tensor::device::parse(&a.device)?);
    }
    let (_device, ds, loaded) = if a.zero_shot {
        open_zero_shot(&a.device, &a.data, &a.checkpoint, a.features.as_deref())?
    } else {
        open_model(&a.device, &a.data, &a.checkpoint, a.features.as_deref())?
    };
    // The split (cold items, seed) is the trainer's part of the checkpoint's config.
    let run =
        checkpoint::load_config(&a.checkpoint).with_context(|| format!("loading {}", a.checkpoint.display()))?.run;
    let split = run.split(&ds.interactions, ds.n_users(), ds.n_items());
    let stage = if a.stage == "valid" { Stage::Valid } else { Stage::Test };
    let opts = EvalOptions { filter_history: a.filter_history, batch_size: 256, targets: Targets::All };
    // With cold items, every scorer is also measured on the targets it never saw in training, and on the rest.
    let groups: &[(Targets, &str)] = if split.n_cold() > 0 {
        &[(Targets::All, ""), (Targets::Cold, " (cold targets)"), (Targets::Warm, " (warm targets)")]
    } else {
        &[(Targets::All, "")]
    };
    let bar = spinner(format!("ranking all {} items for every user", ds.n_items()));
    let scorer = loaded.scorer()?;
    let pop = match stage {
        Stage::Valid => Popularity::fit_train(&split, ds.n_items()),
        Stage::Test => Popularity::fit_before_test(&split, ds.n_items()),
    };
    let mut rows: Vec<(String, Metrics)> = Vec::new();
    for &(targets, label) in groups {
        let opts = EvalOptions { targets, ..opts };
        rows.push((format!("model{label}"), evaluate(&scorer, &split, stage, opts)?));
        if !a.no_baseline {
            rows.push((format!("popularity{label}"), evaluate(&pop, &split, stage, opts)?));
        }
    }
    bar.finish_and_clear();
    if split.n_cold() > 0 {
        println!(
            "cold-start evaluation: {} items were held out of training; cold targets are rows marked so",
            split.n_cold()
        );
    }
    println!(
        "{} metrics on {} ({} users), full ranking over {} items, history {}, split {}:",
        a.stage,
        ds.name,
        rows[0].1.n_users,
        ds.n_items(),
        if a.filter_history { "filtered" } else { "not filtered" },
        split.describe()
    );
    let refs: Vec<(&str, &Metrics)> = rows.iter().map(|(n, m)| (n.as_str(), m)).collect();
    print!("{}", metrics_table(&refs));
    if let Some(p) = &a.plot {
        let title = format!(
            "{} on {}, full ranking, history {}",
            a.stage,
            ds.name,
            if a.filter_history { "filtered" } else { "not filtered" }
        );
        m6rec_train::metrics_chart(p, &title, &refs).with_context(|| format!("drawing {}", p.display()))?;
        println!("chart: {}", p.display());
    }
    if let Some(p) = &a.json {
        let obj: serde_json::Map<String, serde_json::Value> =
            rows.iter().map(|(n, m)| (n.to_string(), serde_json::to_value(&m.values).unwrap_or_default())).collect();
        let text = serde_json::to_string_pretty(&obj)?;
        m6rec_tensor::atomic::write_bytes(p, text.as_bytes()).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct RecommendArgs {
    /// Checkpoint directory.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Dataset directory (for the catalog and known users' histories).
    #[arg(long)]
    data: PathBuf,
    /// A known user's id: recommend after their whole history.
    #[arg(long, conflicts_with_all = ["history", "first"], required_unless_present_any = ["history", "first"])]
    user: Option<String>,
    /// Recommend for the first N users of the dataset (a quick look).
    #[arg(long, conflicts_with = "history")]
    first: Option<usize>,
    /// A new user's history: comma-separated item ids, oldest first.
    #[arg(long, value_delimiter = ',')]
    history: Option<Vec<String>>,
    /// How many items.
    #[arg(short, default_value_t = 10)]
    k: usize,
    /// Allow items already in the history.
    #[arg(long)]
    include_seen: bool,
    /// auto, cpu or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Feature cache for checkpoints with an item tower (default `<data>.features`).
    #[arg(long)]
    features: Option<PathBuf>,
}

pub fn recommend(a: &RecommendArgs) -> Result<()> {
    if m6rec_train::generative::Generative::is_checkpoint(&a.checkpoint) {
        let ds = load_dataset(&a.data)?;
        let g = m6rec_train::generative::Generative::load(&a.checkpoint, m6rec_tensor::device::parse(&a.device)?)
            .with_context(|| format!("loading {}", a.checkpoint.display()))?;
        if g.n_items() < ds.n_items() {
            bail!(
                "{} has semantic IDs for {} items, the dataset {}",
                a.checkpoint.display(),
                g.n_items(),
                ds.n_items()
            );
        }
        // Seen items are dropped after the search: a wider beam keeps k left.
        let beam = g.config().generative.as_ref().map_or(20, |c| c.beam).max(2 * a.k);
        return recommend_with(&ds, &g.scorer().with_beam(beam), a);
    }
    let (_device, ds, loaded) = open_model(&a.device, &a.data, &a.checkpoint, a.features.as_deref())?;
    recommend_with(&ds, &loaded.scorer()?, a)
}

fn recommend_with(ds: &Dataset, scorer: &dyn m6rec_train::Scorer, a: &RecommendArgs) -> Result<()> {
    if let Some(n) = a.first {
        let split = Split::leave_one_out(&ds.interactions, ds.n_users());
        for u in 0..n.min(ds.n_users()) {
            show(ds, scorer, &format!("user {}", ds.users[u]), split.sequence(u), a)?;
        }
        return Ok(());
    }
    let history: Vec<u32> = match (&a.user, &a.history) {
        (Some(user), _) => {
            let u = ds.user_idx(user)?;
            let split = Split::leave_one_out(&ds.interactions, ds.n_users());
            split.sequence(u as usize).to_vec()
        }
        (None, Some(items)) => {
            let index = ds.item_index();
            items
                .iter()
                .map(|id| {
                    index.get(id.trim()).copied().ok_or_else(|| m6rec_data::Error::UnknownItem(id.trim().to_string()))
                })
                .collect::<Result<_, _>>()
                .context("reading --history")?
        }
        (None, None) => bail!("give --user ID or --history ITEM,ITEM,..."),
    };
    let who = a.user.as_ref().map(|u| format!("user {u}")).unwrap_or_else(|| "the given history".into());
    show(ds, scorer, &who, &history, a)
}

fn show(ds: &Dataset, scorer: &dyn m6rec_train::Scorer, who: &str, history: &[u32], a: &RecommendArgs) -> Result<()> {
    let recs = recommend::recommend(scorer, history, a.k, !a.include_seen)?;
    let last: Vec<&str> = history.iter().rev().take(3).map(|&i| ds.items[i as usize].title.as_str()).collect();
    println!("top {} for {who} ({} items, most recent first: {}):", recs.len(), history.len(), last.join(" | "));
    for (rank, r) in recs.iter().enumerate() {
        let it = &ds.items[r.item as usize];
        println!("{:>3}. {:<10} {:>8.3}  {}  [{}]", rank + 1, it.id, r.score, it.title, it.domain);
    }
    Ok(())
}

pub fn synth(out: &Path, media: bool, media_only: bool) -> Result<()> {
    use m6rec_data::synth;
    let cfg = synth::SynthConfig::demo();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    if !media_only {
        let (inter, items) = synth::generate(&cfg);
        for (name, text) in [("demo.inter", inter), ("demo.item", items)] {
            let p = out.join(name);
            m6rec_tensor::atomic::write_bytes(&p, text.as_bytes())
                .with_context(|| format!("writing {}", p.display()))?;
        }
        println!("wrote {}/demo.inter and demo.item", out.display());
    }
    if media {
        let (images, audio) = (out.join("images"), out.join("audio"));
        for d in [&images, &audio] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let n = synth::n_items(&cfg);
        (0..n).into_par_iter().try_for_each(|idx| -> Result<()> {
            let side = synth::IMAGE_SIDE;
            let img = image::RgbImage::from_raw(side, side, synth::item_image(&cfg, idx))
                .ok_or_else(|| anyhow!("item {idx}: image buffer of the wrong size"))?;
            let mut png = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
            let p = images.join(format!("i{idx}.png"));
            m6rec_tensor::atomic::write_bytes(&p, &png).with_context(|| format!("writing {}", p.display()))?;

            let spec = hound::WavSpec {
                channels: 1,
                sample_rate: synth::AUDIO_RATE,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            };
            let mut wav = std::io::Cursor::new(Vec::new());
            let mut w = hound::WavWriter::new(&mut wav, spec)?;
            for x in synth::item_audio(&cfg, idx) {
                w.write_sample((x.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16)?;
            }
            w.finalize()?;
            let p = audio.join(format!("i{idx}.wav"));
            m6rec_tensor::atomic::write_bytes(&p, wav.get_ref()).with_context(|| format!("writing {}", p.display()))
        })?;
        println!("wrote {n} images to {} and {n} clips to {}", images.display(), audio.display());
    }
    Ok(())
}

pub fn doctor(threads: usize) -> Result<()> {
    let t = tch::Tensor::from_slice(&[1.0f32, 2.0]).sum(tch::Kind::Float).double_value(&[]);
    println!("libtorch: linked and working (1 + 2 = {t})");
    println!("cuda available: {} ({} devices)", tch::Cuda::is_available(), tch::Cuda::device_count());
    println!("threads: {threads} (libtorch reports {})", tch::get_num_threads());
    Ok(())
}

#[derive(Debug, Args)]
pub struct FeaturesArgs {
    /// Dataset directory (from `m6rec import`).
    data: PathBuf,
    /// Cache directory (default: `<dataset>.features`, beside the dataset).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// TOML with a `[features]` table (`[features.image]` size, resize, mean, std; `[features.audio]` sample_rate,
    /// n_fft, hop, n_mels, seconds, top_db); defaults when absent.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also embed each item's text (`title. text`) with this frozen Hugging Face encoder folder, for example
    /// `.m6rec/models/all-MiniLM-L6-v2` (overrides `[features.text]`).
    #[arg(long)]
    text_model: Option<PathBuf>,
    /// Print every bad file (default: the first 10 per modality).
    #[arg(long)]
    all_failed: bool,
}

#[derive(Debug, Default, serde::Deserialize)]
struct FeaturesFile {
    #[serde(default)]
    features: m6rec_features::FeatureConfig,
}

pub fn features(a: &FeaturesArgs) -> Result<()> {
    let ds = load_dataset(&a.data)?;
    let cfg = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str::<FeaturesFile>(&text).with_context(|| format!("parsing {}", p.display()))?.features
        }
        None => m6rec_features::FeatureConfig::default(),
    };
    let mut cfg = cfg;
    if let Some(model) = &a.text_model {
        let keep = cfg.text.take();
        cfg.text = Some(m6rec_features::TextFeatureConfig {
            model: model.clone(),
            max_len: keep.as_ref().map_or(256, |t| t.max_len),
            batch_size: keep.as_ref().map_or(32, |t| t.batch_size),
        });
    }
    let cache = a.cache.clone().unwrap_or_else(|| m6rec_features::default_cache_dir(&a.data));
    if contains(&cache, &a.data) {
        anyhow::bail!(
            "the cache {} contains the dataset {}: choose another --cache",
            cache.display(),
            a.data.display()
        );
    }
    m6rec_features::FEATURES_DIR.check_replaceable(&cache).context("the feature cache")?;
    let start = Instant::now();
    let progress = crate::progress::FeatureProgress::new();
    let report = m6rec_features::build(&a.data, &ds, &cache, &cfg, &progress)
        .with_context(|| format!("building the feature cache {} for {}", cache.display(), a.data.display()))?;
    let secs = start.elapsed().as_secs_f64();
    for (name, r) in [("images", &report.image), ("audio", &report.audio)] {
        println!(
            "{name:<6} {} of {} items have a file: {} decoded, {} unchanged (reused), {} unusable",
            r.with_media,
            ds.n_items(),
            r.decoded,
            r.reused,
            r.failed.len()
        );
        let shown = if a.all_failed { r.failed.len() } else { 10 };
        for b in r.failed.iter().take(shown) {
            println!("  {b}");
        }
        if r.failed.len() > shown {
            println!("  ... and {} more (--all-failed lists them all)", r.failed.len() - shown);
        }
    }
    if cfg.text.is_some() {
        let t = &report.text;
        println!(
            "text   {} of {} items have text: {} embedded, {} unchanged (reused)",
            t.with_media,
            ds.n_items(),
            t.decoded,
            t.reused
        );
    }
    println!("wrote {} in {secs:.1}s", cache.display());
    Ok(())
}
