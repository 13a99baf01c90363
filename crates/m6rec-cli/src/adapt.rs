//! `m6rec adapt`: adapt a pretrained model to a new domain (catalog), parameter-efficiently or not.
//!
//! - `prompt` (M6-Rec's option tuning): the pretrained model is frozen; only soft prompts read before every sequence
//!   (and, with `--lora R`, low-rank updates of its attention and feed-forward layers) are trained, together with
//!   whatever the new catalog needs that the pretrained model cannot provide (tables
//!   sized by the catalog, which `init_from` leaves fresh; none for a content-only item tower).
//! - `full`: every weight starts from the pretrained model and trains (what `m6rec train --init-from` does).
//! - `scratch`: the same config trained from random weights, for comparison.
//!
//! The fraction of trained parameters is printed. The run is an ordinary checkpoint: `m6rec eval` reads it.

use crate::progress::TrainProgress;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use m6rec_train::adapt::{self, Adapt, Started};
use m6rec_train::checkpoint::{self, DatasetFingerprint};
use m6rec_train::Trainer;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// Train soft prompts only (plus catalog-sized tables the new domain needs).
    Prompt,
    /// Fine-tune every weight.
    Full,
    /// Train from scratch (same config).
    Scratch,
}

#[derive(Debug, Args)]
pub struct AdaptArgs {
    /// The pretrained checkpoint.
    #[arg(long)]
    from: PathBuf,
    /// The new domain's dataset (from `m6rec import`).
    #[arg(long)]
    data: PathBuf,
    /// Output checkpoint (default runs/<dataset>-<method>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// How to adapt.
    #[arg(long, value_enum, default_value = "prompt")]
    method: Method,
    /// Soft prompts (method prompt; 0 with --lora: LoRA only).
    #[arg(long, default_value_t = 8)]
    prompts: i64,
    /// Method prompt: also LoRA updates of this rank in every attention and feed-forward layer (trained; the base
    /// weights stay frozen).
    #[arg(long, default_value_t = 0)]
    lora: i64,
    /// Method prompt: also train the variables whose names start with this prefix (repeatable), for example
    /// `tower.` (the item tower's modality projections) or `model.ln_` (LayerNorms).
    #[arg(long, value_name = "PREFIX")]
    also: Vec<String>,
    /// Learning rate (default: the pretrained run's; prompts usually want more, e.g. 1e-2).
    #[arg(long)]
    lr: Option<f64>,
    /// Override train.epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Override train.max_seconds.
    #[arg(long)]
    max_seconds: Option<f64>,
    /// Feature cache of the new dataset, for item-tower models (default `<data>.features`).
    #[arg(long)]
    features: Option<PathBuf>,
    /// auto, cpu or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
}

pub fn adapt(a: &AdaptArgs) -> Result<()> {
    let device = m6rec_tensor::device::parse(&a.device)?;
    let ck = checkpoint::load_config(&a.from).with_context(|| format!("loading checkpoint {}", a.from.display()))?;
    let ds = m6rec_data::Dataset::load(&a.data).with_context(|| format!("loading dataset {}", a.data.display()))?;
    let method = match a.method {
        Method::Prompt if a.prompts < 0 || a.lora < 0 || a.prompts + a.lora == 0 => {
            bail!("--method prompt needs --prompts N or --lora R (or both) above 0")
        }
        Method::Prompt => adapt::Method::Prompt { prompts: a.prompts, lora: a.lora, also: a.also.clone() },
        Method::Full => adapt::Method::Full,
        Method::Scratch => adapt::Method::Scratch,
    };
    let run = Adapt { method, lr: a.lr, epochs: a.epochs, max_seconds: a.max_seconds };
    let cfg = run.config(&ck.run, ds.items.iter().map(|it| it.domain.as_str()))?;
    let method = format!("{:?}", a.method).to_lowercase();
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-{method}", ds.name)));
    let mut fp = DatasetFingerprint::of(&ds);
    fp.path = std::fs::canonicalize(&a.data).ok();
    let content = match cfg.item_tower {
        Some(_) => Some(
            m6rec_train::open::item_content(&a.data, a.features.as_deref(), &ds, &cfg.recommender())
                .context("reading the new domain's item content for [item_tower]")?,
        ),
        None => None,
    };
    let mut trainer = Trainer::with_content(cfg.clone(), fp, content.as_ref(), device)?;
    let started =
        run.start(&mut trainer, &a.from).with_context(|| format!("initialising from {}", a.from.display()))?;
    print_start(a, &started);
    let domains: Vec<&str> = ds.items.iter().map(|it| it.domain.as_str()).collect();
    trainer.set_item_domains(&domains)?;
    let split = cfg.split(&ds.interactions, ds.n_users(), ds.n_items());
    println!(
        "adapting to {} ({} users, {} items) by {method}, up to {} epochs",
        ds.name,
        ds.n_users(),
        ds.n_items(),
        cfg.train.epochs
    );
    let mut progress = TrainProgress::new(cfg.train.epochs, 0);
    let res = trainer.fit(&split, Some(&out), &mut progress);
    progress.finish();
    let state = res.with_context(|| format!("training into {}", out.display()))?;
    println!(
        "done ({}): best validation NDCG@10 {:.4} at epoch {}; checkpoint {} (m6rec eval --checkpoint {} --data {})",
        state.stop_reason.as_deref().unwrap_or("stopped"),
        state.best_ndcg10,
        state.best_epoch,
        out.display(),
        out.display(),
        a.data.display()
    );
    Ok(())
}

fn print_start(a: &AdaptArgs, s: &Started) {
    if a.method == Method::Scratch {
        return;
    }
    println!(
        "from {}: {} tensors copied, {} fresh ({})",
        a.from.display(),
        s.copied.len(),
        s.fresh.len(),
        s.fresh.join(", ")
    );
    if let Some((trainable, total)) = s.trainable {
        println!(
            "prompt tuning: {trainable} of {total} parameters trained ({:.2}%): {} prompts{}{}{}",
            100.0 * trainable as f64 / total.max(1) as f64,
            a.prompts,
            if a.lora > 0 { format!(", LoRA rank {}", a.lora) } else { String::new() },
            if a.also.is_empty() { String::new() } else { format!(" + {}", a.also.join(", ")) },
            if s.fresh.len() > 1 { " and the tables the new catalog needs" } else { "" }
        );
    }
}
