//! `m6rec eval`: a checkpoint's metrics on the validation or test targets, against popularity.

use crate::common::load_dataset;
use crate::progress::spinner;
use crate::table::metrics_table;
use anyhow::{bail, Context, Result};
use clap::Args;
use m6rec_data::Dataset;
use m6rec_train::checkpoint::{self};
use m6rec_train::eval::{evaluate, EvalOptions, Stage, Targets};
use m6rec_train::metrics::Metrics;
use m6rec_train::Popularity;
use std::path::{Path, PathBuf};

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
    write_outputs(a, &ds.name, &rows)
}

/// The table, and with `--plot` / `--json` the chart and the metrics file.
fn write_outputs(a: &EvalArgs, dataset: &str, rows: &[(String, Metrics)]) -> Result<()> {
    let refs: Vec<(&str, &Metrics)> = rows.iter().map(|(n, m)| (n.as_str(), m)).collect();
    print!("{}", metrics_table(&refs));
    if let Some(p) = &a.plot {
        let title = format!(
            "{} on {dataset}, full ranking, history {}",
            a.stage,
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
