//! `m6rec train`: a run config (or the automatic strategy), a dataset, a checkpoint directory; resumable,
//! data-parallel under torchrun.

use crate::common::{contains, load_dataset};
use crate::progress::TrainProgress;
use anyhow::{bail, Context, Result};
use clap::Args;
use m6rec_data::{Dataset, Split};
use m6rec_train::checkpoint::{self, DatasetFingerprint};
use m6rec_train::{RunConfig, Trainer};
use std::path::{Path, PathBuf};
use std::time::Instant;

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
    let device = training_device(a, launch.as_ref())?;
    let leader = launch.as_ref().is_none_or(|l| l.rank == 0);
    // The config is read first: a typo there should not wait for the data to load.
    let (cfg, user_table) = read_run_config(a)?;
    let ds = load_dataset(&a.data)?;
    let cfg = match (cfg, user_table) {
        (_, Some(table)) if !a.resume => Some(auto_strategy(a, &ds, &table, device, leader, launch.is_some())?),
        (cfg, _) => cfg,
    };
    let out = a.out.clone().unwrap_or_else(|| m6rec_train::default_run_dir(&ds.name));
    let generative_resume = a.resume && m6rec_train::generative::Generative::is_checkpoint(&out);
    if generative_resume || cfg.as_ref().is_some_and(|c| c.generative.is_some()) {
        if launch.is_some() || a.init_from.is_some() {
            bail!("--init-from and data-parallel training are not supported for [generative] runs yet");
        }
        let paths =
            crate::generative::Paths { data: &a.data, features: a.features.as_deref(), out: &out, force: a.force };
        if generative_resume {
            return crate::generative::resume(&ds, paths, a.until_epoch, device);
        }
        let mut cfg = cfg.clone().context("a generative run needs its config")?;
        check_new_out(a, &out, false)?;
        apply_train_flags(a, &mut cfg)?;
        return crate::generative::train(cfg, &ds, paths, a.until_epoch, device);
    }
    if !a.resume {
        check_new_out(a, &out, true)?;
    }
    let mut trainer = open_trainer(a, cfg, &ds, &out, device)?;
    let domains: Vec<&str> = ds.items.iter().map(|it| it.domain.as_str()).collect();
    trainer.set_item_domains(&domains)?;
    let cfg = trainer.config().clone();
    if let Some(l) = &launch {
        join_group(&mut trainer, a, l, device, leader)?;
    }
    let split = cfg.split(&ds.interactions, ds.n_users(), ds.n_items());
    let until = a.until_epoch.unwrap_or(usize::MAX);
    if !leader {
        // Workers train their shard quietly; rank 0 reports, validates and writes the checkpoint.
        trainer
            .fit_until(&split, Some(&out), &mut m6rec_train::Silent, until)
            .with_context(|| format!("training (rank {})", launch.as_ref().map_or(0, |l| l.rank)))?;
        return Ok(());
    }
    print_plan(&ds, &cfg, &split);
    let mut progress = TrainProgress::new(cfg.train.epochs, trainer.state().epoch);
    let started = Instant::now();
    let res = trainer.fit_until(&split, Some(&out), &mut progress, until);
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
        write_summary(p, state)?;
    }
    Ok(())
}

/// `--device`, or under torchrun with `auto` and CUDA present, the rank's local GPU.
fn training_device(a: &TrainArgs, launch: Option<&m6rec_train::ddp::Launch>) -> Result<tch::Device> {
    let device = match launch {
        Some(l) if a.device == "auto" && tch::Cuda::is_available() => tch::Device::Cuda(l.local_rank),
        _ => m6rec_tensor::device::parse(&a.device)?,
    };
    if launch.is_some() && device.is_cuda() && !cfg!(feature = "nccl") {
        anyhow::bail!(
            "data-parallel training on {device:?} needs NCCL, which this build lacks: build with `cargo xtask build-cuda` \
             (feature `nccl`), or pass --device cpu to train over Gloo"
        );
    }
    Ok(device)
}

/// A new run's `--out`: not inside the dataset, and (`checkpoint`: a checkpoint directory) replaceable, and not a
/// run already unless `--force`.
fn check_new_out(a: &TrainArgs, out: &Path, checkpoint: bool) -> Result<()> {
    if contains(out, &a.data) {
        anyhow::bail!("--out {} contains the dataset {}: choose another --out", out.display(), a.data.display());
    }
    if !checkpoint {
        return Ok(());
    }
    m6rec_train::checkpoint::CHECKPOINT_DIR.check_replaceable(out).context("--out")?;
    if out.join("state.json").is_file() && !a.force {
        anyhow::bail!(
            "{} holds a training run already: --resume continues it, --force replaces it (its best model too)",
            out.display()
        );
    }
    Ok(())
}

/// The trainer: resumed from `out`, or fresh from `cfg` and the flags (with `--init-from`'s weights).
fn open_trainer(
    a: &TrainArgs,
    cfg: Option<RunConfig>,
    ds: &Dataset,
    out: &Path,
    device: tch::Device,
) -> Result<Trainer> {
    let mut fp = DatasetFingerprint::of(ds);
    fp.path = std::fs::canonicalize(&a.data).ok();
    let tower_run = if a.resume {
        checkpoint::load_config(out).ok().map(|c| c.run).filter(|r| r.item_tower.is_some())
    } else {
        cfg.clone().filter(|c| c.item_tower.is_some())
    };
    let content = match &tower_run {
        Some(run) => Some(
            m6rec_train::open::item_content(&a.data, a.features.as_deref(), ds, &run.recommender())
                .context("reading the item content for [item_tower]")?,
        ),
        None => None,
    };
    if a.resume {
        return Trainer::resume_with_content(out, &fp, content.as_ref(), device)
            .with_context(|| format!("resuming from {}", out.display()));
    }
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
    Ok(t)
}

/// Joins the data-parallel group torchrun launched (Gloo for CPU tensors, NCCL for CUDA ones).
fn join_group(
    trainer: &mut Trainer,
    a: &TrainArgs,
    l: &m6rec_train::ddp::Launch,
    device: tch::Device,
    leader: bool,
) -> Result<()> {
    use m6rec_train::ddp::{DdpGroup, Options, ReducerOptions};
    let cfg = trainer.config();
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
    Ok(())
}

fn print_plan(ds: &Dataset, cfg: &RunConfig, split: &Split) {
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
}

/// `--summary-json`: what the run took and reached.
fn write_summary(p: &Path, state: &m6rec_train::TrainState) -> Result<()> {
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
        .with_context(|| format!("writing {}", p.display()))
}
