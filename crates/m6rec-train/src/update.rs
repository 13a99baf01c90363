//! Incremental fine-tuning on new interactions (what `m6rec update` runs): the new events appended to the dataset,
//! the checkpoint's run config turned into a short fine-tuning run, and the rows it trains on, the users with new
//! events mixed with a replay sample of older sequences so that what the model knew is not forgotten.
//!
//! ```no_run
//! # fn main() -> m6rec_train::Result<()> {
//! use m6rec_train::update::{append_events, Update};
//! let mut ds = m6rec_data::Dataset::load("data/ml-100k".as_ref())?;
//! let ck = m6rec_train::checkpoint::load_config("runs/ml-100k".as_ref())?;
//! let n_users_before = ds.n_users();
//! let n_events_before = ds.interactions.len();
//! let touched = append_events(&mut ds, &[("u1".into(), "i7".into())])?;
//! let up = Update::default();
//! let cfg = up.config(&ck.run)?;
//! let (split, replayed) = up.split(&ds, n_users_before, n_events_before, &touched, cfg.train.seed);
//! # let _ = (split, replayed);
//! # Ok(())
//! # }
//! ```

use crate::{Error, Result, RunConfig};
use m6rec_data::{Dataset, Split};
use m6rec_optim::ScheduleConfig;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::HashMap;
use std::path::Path;

/// Appends `events` (user id, item id; file order) to `ds`: new users get new indices, and each event is stamped
/// with its user's latest timestamp, so it sorts after everything the user did before and new events keep their
/// order. Returns the users with new events (first appearance order). An unknown item is refused by its event
/// number, and `ds` is left as it was.
pub fn append_events(ds: &mut Dataset, events: &[(String, String)]) -> Result<Vec<u32>> {
    let items = ds.item_index();
    let mut resolved = Vec::with_capacity(events.len());
    for (n, (user, item)) in events.iter().enumerate() {
        let Some(&i) = items.get(item.as_str()) else {
            return Err(Error::InvalidInput(format!(
                "event {} (user `{user}`): unknown item `{item}`; the catalog of {} has no such id (add the item to \
                 the dataset and train, or drop the event)",
                n + 1,
                ds.name
            )));
        };
        resolved.push((user.clone(), i));
    }
    let mut users: HashMap<String, u32> = ds.users.iter().cloned().zip(0u32..).collect();
    let mut last_ts: HashMap<u32, i64> = HashMap::new();
    for (&u, &t) in ds.interactions.user.iter().zip(&ds.interactions.timestamp) {
        let e = last_ts.entry(u).or_insert(t);
        *e = (*e).max(t);
    }
    let mut touched = Vec::new();
    for (user, item) in resolved {
        let next = u32::try_from(users.len())
            .map_err(|_| Error::InvalidInput("more users than 32-bit indices hold".into()))?;
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

/// How a checkpoint is fine-tuned on new events.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Update {
    /// Epochs at most (early stopping may end sooner). Default 5.
    pub epochs: usize,
    /// The learning rate is the checkpoint's peak rate times this (constant). Default 0.3.
    pub lr_scale: f64,
    /// Older sequences replayed, as a multiple of the users with new events. Default 1.
    pub replay: f64,
}

impl Default for Update {
    fn default() -> Self {
        Update { epochs: 5, lr_scale: 0.3, replay: 1.0 }
    }
}

impl Update {
    /// The fine-tuning run: the checkpoint's config at a lower constant rate, no warm-up, no cold items, no time
    /// cap, one row per user, patience 2.
    pub fn config(&self, run: &RunConfig) -> Result<RunConfig> {
        let mut cfg = run.clone();
        cfg.optim.lr *= self.lr_scale;
        cfg.optim.schedule = ScheduleConfig::Constant;
        cfg.train.warmup_steps = 0;
        cfg.train.epochs = self.epochs.max(1);
        cfg.train.patience = 2;
        cfg.train.cold_items = 0.0;
        cfg.train.max_seconds = 0.0;
        cfg.train.windows = false;
        cfg.validate(Path::new("update"))?;
        Ok(cfg)
    }

    /// The rows to fine-tune on, as a split of their own: every `touched` user's whole sequence, then a seeded
    /// sample of the `n_users_before` older users, each with the history the checkpoint was trained on (the first
    /// `n_events_before` interactions). Returns the split and the number replayed.
    pub fn split(
        &self,
        ds: &Dataset,
        n_users_before: usize,
        n_events_before: usize,
        touched: &[u32],
        seed: u64,
    ) -> (Split, usize) {
        let full = Split::leave_one_out(&ds.interactions, ds.n_users());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut seqs: Vec<Vec<u32>> = touched.iter().map(|&u| full.sequence(u as usize).to_vec()).collect();
        let mut older: Vec<usize> = (0..n_users_before).collect();
        older.shuffle(&mut rng);
        let n_replay = ((self.replay * touched.len() as f64).round() as usize).min(older.len());
        let mut before = ds.interactions.clone();
        let n_old = n_events_before.min(before.len());
        before.user.truncate(n_old);
        before.item.truncate(n_old);
        before.timestamp.truncate(n_old);
        before.event.truncate(n_old);
        let old_split = Split::leave_one_out(&before, n_users_before);
        seqs.extend(older.iter().take(n_replay).map(|&u| old_split.sequence(u).to_vec()));
        (Split::from_sequences(seqs), n_replay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset() -> Dataset {
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
        ds
    }

    #[test]
    fn events_append_after_each_users_history_and_unknown_items_are_refused() -> Result<()> {
        let mut ds = dataset();
        let touched = append_events(&mut ds, &[("u9".into(), "i2".into()), ("u1".into(), "i2".into())])?;
        assert_eq!(touched, [1, 0]);
        assert_eq!(ds.users, ["u1", "u9"]);
        assert_eq!(ds.interactions.timestamp, [7, 0, 7]);
        let before = ds.clone();
        let err = append_events(&mut ds, &[("u1".into(), "i1".into()), ("u1".into(), "nope".into())])
            .expect_err("an unknown item")
            .to_string();
        assert!(err.contains("unknown item `nope`") && err.contains("event 2"), "{err}");
        assert_eq!(ds, before, "a refused batch appends nothing");
        Ok(())
    }

    #[test]
    fn replay_mixes_older_users_histories_as_the_checkpoint_saw_them() -> Result<()> {
        let mut ds = dataset();
        for (u, items) in [(1u32, [0u32, 1, 0]), (2, [1, 0, 1]), (3, [0, 0, 1])] {
            ds.users.push(format!("old{u}"));
            for (t, i) in items.into_iter().enumerate() {
                ds.interactions.push(u, i, t as i64, None);
            }
        }
        let (n_users, n_events) = (ds.n_users(), ds.interactions.len());
        let touched = append_events(&mut ds, &[("u1".into(), "i2".into()), ("new".into(), "i1".into())])?;
        let up = Update { replay: 1.0, ..Update::default() };
        let (split, replayed) = up.split(&ds, n_users, n_events, &touched, 3);
        assert_eq!(replayed, 2, "one older user per user with new events");
        assert_eq!(split.n_users(), 4);
        assert_eq!(split.sequence(0), [0, 1], "u1 with its new event");
        assert_eq!(split.sequence(1), [0], "the new user");
        for r in 2..4 {
            assert_eq!(split.sequence(r).len(), if split.sequence(r) == [0] { 1 } else { 3 }, "as trained on");
        }
        let cfg = up.config(&RunConfig::default())?;
        assert_eq!(cfg.optim.lr, RunConfig::default().optim.lr * 0.3);
        assert_eq!((cfg.train.epochs, cfg.train.patience, cfg.train.windows), (5, 2, false));
        Ok(())
    }
}
