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
use m6rec_data::{Dataset, Split};
use m6rec_optim::ScheduleConfig;
use m6rec_train::checkpoint::{self, DatasetFingerprint};
use m6rec_train::Trainer;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::HashMap;
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
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    let journal = path.extension().is_some_and(|e| e == "jsonl");
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        if journal {
            let v: serde_json::Value = match serde_json::from_str(line) {
                Ok(v) => v,
                // A torn last line (the server died mid-write) is not an acknowledged event.
                Err(_) if n + 1 == text.lines().count() => break,
                Err(e) => bail!("{}: not a journal record: {e}", at()),
            };
            if v["op"] != "events" {
                continue;
            }
            let user = v["user_id"].as_str().with_context(|| format!("{}: events record without user_id", at()))?;
            let items = v["items"].as_array().with_context(|| format!("{}: events record without items", at()))?;
            for item in items {
                let item = item.as_str().with_context(|| format!("{}: item ids are strings", at()))?;
                out.push((user.to_string(), item.to_string()));
            }
        } else {
            let fields: Vec<&str> = line.split([',', '\t']).map(str::trim).collect();
            if fields.len() < 2 {
                bail!("{}: expected `user_id,item_id[,timestamp]`, got `{line}`", at());
            }
            if n == 0 && fields[0].to_ascii_lowercase().starts_with("user") {
                continue; // header
            }
            out.push((fields[0].to_string(), fields[1].to_string()));
        }
    }
    if out.is_empty() {
        bail!("{} holds no events", path.display());
    }
    Ok(out)
}

/// Appends `events` to `ds` (new users get new indices; each event is stamped with its user's latest timestamp,
/// so it sorts after everything the user did before and new events keep their file order). Returns the users with
/// new events, and refuses unknown items by name and line.
fn append(ds: &mut Dataset, events: &[(String, String)]) -> Result<Vec<u32>> {
    let items = ds.item_index();
    let mut users: HashMap<String, u32> = ds.users.iter().cloned().zip(0u32..).collect();
    let mut last_ts: HashMap<u32, i64> = HashMap::new();
    for (&u, &t) in ds.interactions.user.iter().zip(&ds.interactions.timestamp) {
        let e = last_ts.entry(u).or_insert(t);
        *e = (*e).max(t);
    }
    let mut resolved = Vec::with_capacity(events.len());
    for (n, (user, item)) in events.iter().enumerate() {
        let Some(&i) = items.get(item.as_str()) else {
            bail!(
                "event {} (user `{user}`): unknown item `{item}`; the catalog of {} has no such id (add the item to \
                 the dataset and train, or drop the event)",
                n + 1,
                ds.name
            );
        };
        resolved.push((user.clone(), i));
    }
    let mut touched = Vec::new();
    for (user, item) in resolved {
        let next = u32::try_from(users.len())?;
        let u = *users.entry(user.clone()).or_insert_with(|| {
            ds.users.push(user);
            next
        });
        if !touched.contains(&u) {
            touched.push(u);
        }
        let ts = last_ts.get(&u).copied().unwrap_or(0);
        ds.interactions.push(u, item, ts, None);
    }
    Ok(touched)
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
    let n_users_before = ds.n_users();
    let touched = append(&mut ds, &events).with_context(|| format!("in {}", a.events.display()))?;
    let out = a.out.clone().unwrap_or_else(|| {
        let name = a.from.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "ckpt".into());
        a.from.with_file_name(format!("{name}-updated"))
    });
    let out_data = PathBuf::from(format!("{}.data", out.display()));
    // The checkpoint and dataset read here are left untouched (the --help promise): refuse to write over them.
    for (written, read) in [(&out, &a.from), (&out, &data), (&out_data, &a.from), (&out_data, &data)] {
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
    ds.save(&out_data).with_context(|| format!("writing {}", out_data.display()))?;
    println!(
        "{} new events for {} users ({} new) appended: {} ({} interactions)",
        events.len(),
        touched.len(),
        ds.n_users() - n_users_before,
        out_data.display(),
        ds.interactions.len()
    );

    // The fine-tuning run: the checkpoint's config at a lower constant rate, no cold items, a few epochs.
    let mut cfg = ck.run.clone();
    cfg.optim.lr *= a.lr_scale;
    cfg.optim.schedule = ScheduleConfig::Constant;
    cfg.train.warmup_steps = 0;
    cfg.train.epochs = a.epochs.max(1);
    cfg.train.patience = 2;
    cfg.train.cold_items = 0.0;
    cfg.train.max_seconds = 0.0;
    cfg.train.windows = false;
    cfg.validate(Path::new("update"))?;
    let full = Split::leave_one_out(&ds.interactions, ds.n_users());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.train.seed);
    let mut seqs: Vec<Vec<u32>> = touched.iter().map(|&u| full.sequence(u as usize).to_vec()).collect();
    let mut older: Vec<usize> = (0..n_users_before).collect();
    older.shuffle(&mut rng);
    let n_replay = ((a.replay * touched.len() as f64).round() as usize).min(older.len());
    // Replay from the data the checkpoint was trained on: each sampled user's history before the new events.
    let old_split = {
        let mut before = ds.interactions.clone();
        let n_old = before.len() - events.len();
        before.user.truncate(n_old);
        before.item.truncate(n_old);
        before.timestamp.truncate(n_old);
        before.event.truncate(n_old);
        Split::leave_one_out(&before, n_users_before)
    };
    seqs.extend(older.iter().take(n_replay).map(|&u| old_split.sequence(u).to_vec()));
    let split = Split::from_sequences(seqs);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_journal_events_are_read_and_unknown_items_refused() -> Result<()> {
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

        let mut ds = Dataset {
            name: "t".into(),
            source: String::new(),
            users: vec!["u1".into()],
            items: ["i1", "i2"]
                .iter()
                .map(|id| m6rec_data::Item { id: id.to_string(), ..Default::default() })
                .collect(),
            interactions: Default::default(),
        };
        ds.interactions.push(0, 0, 7, None);
        let touched = append(&mut ds, &[("u9".into(), "i2".into()), ("u1".into(), "i2".into())])?;
        assert_eq!(touched, [1, 0]);
        assert_eq!(ds.users, ["u1", "u9"]);
        assert_eq!(ds.interactions.timestamp, [7, 0, 7]);
        let err = append(&mut ds, &[("u1".into(), "nope".into())]).unwrap_err().to_string();
        assert!(err.contains("unknown item `nope`") && err.contains("event 1"), "{err}");
        Ok(())
    }
}
