//! `m6rec update`: incremental fine-tuning on new interactions.
//!
//! The new events (a CSV of `user_id,item_id`, or the `journal.jsonl` that `m6rec serve` keeps) are appended to the
//! checkpoint's dataset, which is written beside the new checkpoint (`<out>.data`, the catalog unchanged). The model
//! then trains for a few epochs, from the checkpoint's weights at a lower, constant learning rate, on the users that
//! have new events (their most recent window) mixed with a replay sample of older sequences, so what the model knew
//! before is not forgotten. Early stopping watches each trained user's second-to-last event, as `m6rec train` does.
//! Both the dataset and the checkpoint are written atomically; the old checkpoint is never touched.

use crate::progress::TrainProgress;
use anyhow::{bail, Context, Result};
use clap::Args;
use m6rec_data::Dataset;
use m6rec_serve::journal::Record;
use m6rec_train::checkpoint::{self, DatasetFingerprint};
use m6rec_train::update::{append_events, Update};
use m6rec_train::Trainer;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The checkpoint to update (left untouched).
    #[arg(long)]
    from: PathBuf,
    /// New interactions: a CSV `user_id,item_id[,timestamp]` (header optional), or a `journal.jsonl` of `m6rec serve`
    /// (its `events` records; items posted to the server must first be added to the dataset).
    #[arg(long)]
    events: PathBuf,
    /// The dataset the checkpoint was trained on (default: the path recorded in the checkpoint).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The updated checkpoint (default `<from>-updated`); the dataset with the new events goes to `<out>.data`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Epochs of fine-tuning at most (early stopping may end sooner).
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// The learning rate is the checkpoint's peak rate times this.
    #[arg(long, default_value_t = 0.3)]
    lr_scale: f64,
    /// Replay: older sequences mixed in, as a multiple of the number of users with new events.
    #[arg(long, default_value_t = 1.0)]
    replay: f64,
    /// Feature cache for checkpoints with an item tower (default: the original dataset's cache).
    #[arg(long)]
    features: Option<PathBuf>,
    /// auto, cpu or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
}

/// Parsed new events: (user id, item id), in file order.
fn read_events(path: &Path) -> Result<Vec<(String, String)>> {
    let out = if path.extension().is_some_and(|e| e == "jsonl") { journal_events(path)? } else { csv_events(path)? };
    if out.is_empty() {
        bail!("{} holds no events", path.display());
    }
    Ok(out)
}

/// The `events` records of a serve journal (read with the service's own reader; a torn last line is left out).
fn journal_events(path: &Path) -> Result<Vec<(String, String)>> {
    let records = m6rec_serve::journal::read_records(path)?;
    Ok(records
        .into_iter()
        .filter_map(|r| match r {
            Record::Events { user_id, items } => Some(items.into_iter().map(move |i| (user_id.clone(), i))),
            Record::Items { .. } => None,
        })
        .flatten()
        .collect())
}

/// `user_id,item_id[,timestamp]` lines (or tab-separated), an optional header.
fn csv_events(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split([',', '\t']).map(str::trim).collect();
        if fields.len() < 2 {
            bail!("{}:{}: expected `user_id,item_id[,timestamp]`, got `{line}`", path.display(), n + 1);
        }
        if n == 0 && fields[0].to_ascii_lowercase().starts_with("user") {
            continue; // header
        }
        out.push((fields[0].to_string(), fields[1].to_string()));
    }
    Ok(out)
}

pub fn update(a: &UpdateArgs) -> Result<()> {
    let device = m6rec_tensor::device::parse(&a.device)?;
    let ck = checkpoint::load_config(&a.from).with_context(|| format!("loading checkpoint {}", a.from.display()))?;
    let data = match (&a.data, &ck.dataset.path) {
        (Some(d), _) => d.clone(),
        (None, Some(p)) => p.clone(),
        (None, None) => bail!("{} does not record its dataset; pass --data DIR", a.from.display()),
    };
    let mut ds = Dataset::load(&data).with_context(|| format!("loading dataset {}", data.display()))?;
    ck.dataset.check(&DatasetFingerprint::of(&ds), &a.from)?;
    let events = read_events(&a.events)?;
    let (n_users_before, n_events_before) = (ds.n_users(), ds.interactions.len());
    let touched = append_events(&mut ds, &events).with_context(|| format!("in {}", a.events.display()))?;
    let (out, out_data) = outputs(a, &data)?;
    ds.save(&out_data).with_context(|| format!("writing {}", out_data.display()))?;
    println!(
        "{} new events for {} users ({} new) appended: {} ({} interactions)",
        events.len(),
        touched.len(),
        ds.n_users() - n_users_before,
        out_data.display(),
        ds.interactions.len()
    );
    let up = Update { epochs: a.epochs, lr_scale: a.lr_scale, replay: a.replay };
    let cfg = up.config(&ck.run)?;
    let (split, n_replay) = up.split(&ds, n_users_before, n_events_before, &touched, cfg.train.seed);
    println!(
        "fine-tuning {} from {}: {} users with new events + {} replayed, lr {:.2e} constant, up to {} epochs",
        ck.dataset.name,
        a.from.display(),
        touched.len(),
        n_replay,
        cfg.optim.lr,
        cfg.train.epochs
    );
    let mut fp = DatasetFingerprint::of(&ds);
    fp.path = std::fs::canonicalize(&out_data).ok();
    let content = match cfg.item_tower {
        Some(_) => Some(
            m6rec_train::open::item_content(&data, a.features.as_deref(), &ds, &cfg.recommender())
                .context("reading the item content for [item_tower]")?,
        ),
        None => None,
    };
    let mut trainer = Trainer::with_content(cfg.clone(), fp, content.as_ref(), device)?;
    trainer.init_from(&a.from).with_context(|| format!("loading weights from {}", a.from.display()))?;
    let domains: Vec<&str> = ds.items.iter().map(|it| it.domain.as_str()).collect();
    trainer.set_item_domains(&domains)?;
    let mut progress = TrainProgress::new(cfg.train.epochs, 0);
    let res = trainer.fit(&split, Some(&out), &mut progress);
    progress.finish();
    let state = res.with_context(|| format!("fine-tuning into {}", out.display()))?;
    println!(
        "updated checkpoint: {} (validation NDCG@10 of the trained users {:.4} at epoch {}; dataset {})",
        out.display(),
        state.best_ndcg10,
        state.best_epoch,
        out_data.display()
    );
    Ok(())
}

/// The new checkpoint (`--out`, default `<from>-updated`) and its dataset (`<out>.data`); neither may overwrite
/// what update reads (the --help promise), and each may only replace its own kind.
fn outputs(a: &UpdateArgs, data: &Path) -> Result<(PathBuf, PathBuf)> {
    let out = a.out.clone().unwrap_or_else(|| {
        let name = a.from.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "ckpt".into());
        a.from.with_file_name(format!("{name}-updated"))
    });
    let out_data = PathBuf::from(format!("{}.data", out.display()));
    for (written, read) in
        [(&out, &a.from), (&out, &data.to_path_buf()), (&out_data, &a.from), (&out_data, &data.to_path_buf())]
    {
        if crate::common::contains(written, read) || crate::common::contains(read, written) {
            bail!(
                "--out {} would overwrite {}, which update reads; choose another --out",
                out.display(),
                read.display()
            );
        }
    }
    m6rec_train::checkpoint::CHECKPOINT_DIR.check_replaceable(&out).context("--out")?;
    m6rec_data::DATASET_DIR.check_replaceable(&out_data).context("--out")?;
    Ok((out, out_data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_journal_events_are_read() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let csv = dir.path().join("e.csv");
        std::fs::write(&csv, "user_id,item_id\nu1,i2\nu9,i1\n")?;
        assert_eq!(read_events(&csv)?, [("u1".into(), "i2".into()), ("u9".into(), "i1".into())]);
        let j = dir.path().join("journal.jsonl");
        std::fs::write(
            &j,
            "{\"op\":\"items\",\"items\":[]}\n{\"op\":\"events\",\"user_id\":\"u1\",\"items\":[\"i1\",\"i2\"]}\n{\"op\":\"ev",
        )?;
        assert_eq!(read_events(&j)?, [("u1".into(), "i1".into()), ("u1".into(), "i2".into())]);

        Ok(())
    }
}
