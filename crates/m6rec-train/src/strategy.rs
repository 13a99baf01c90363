//! The automatic strategy: a run config chosen from the data, the machine and the time budget.
//!
//! [`Profile::of`] reads what matters about a dataset (users, items, events, the length distribution of histories,
//! the content a feature cache holds, domains); [`resolve`] turns it, a [`Machine`] and an optional budget into a
//! [`RunConfig`] and one [`Decision`] per choice, each with its reason. Fields the user set (the TOML table of their
//! run file, possibly empty) always win: the rules only fill what was left open. The resolved config has
//! `strategy = "fixed"` and every field explicit, so the checkpoint that stores it reproduces the run.
//!
//! The rules and the measurements behind them are in `docs/strategy.md`. In short:
//! - `max_len`: the 90th percentile of history lengths, in steps of 10, within 20..=50 on CPU (20..=200 on GPU);
//!   longer histories still train on all their items as extra windows (`train.windows`).
//! - `dropout`: 0.5 for sparse data (mean history under 20 items, the Amazon shape), 0.2 for dense (MovieLens).
//! - `loss`: full softmax (exact, and the stronger objective) unless fewer than 30 epochs of it fit the budget or
//!   the catalog is huge; then sampled softmax with in-batch and uniform negatives.
//! - width, depth, heads: 64 × 2 blocks × 2 heads (SASRec's size).
//! - batch: 128 rows' worth of real tokens per step in length buckets; learning rate 5e-3 for sparse data, 2e-3
//!   for dense; 20 warm-up steps; cosine decay over the epochs.
//! - epochs and patience: with a budget, the epochs that fit 90% of it at the estimated epoch time ([`epoch_flops`]
//!   over [`Machine::flops`]), so the decay ends with the budget; without one, 200 and early stopping.
//! - item tower: hybrid id + text with the text-similarity prior when at least half of the catalog has a text
//!   embedding in the feature cache; otherwise item ids only.

use crate::{Error, Result, RunConfig};
use m6rec_data::Dataset;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How a run config is completed: by its defaults (`fixed`, every field as written or defaulted) or by the automatic
/// strategy (`auto`: fields left out are chosen from the data, machine and budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Fields left out take their documented defaults.
    #[default]
    Fixed,
    /// Fields left out are decided by [`resolve`].
    Auto,
}

/// What the strategy reads from a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Users.
    pub users: usize,
    /// Items in the catalog.
    pub items: usize,
    /// Interactions.
    pub events: usize,
    /// Mean history length (events per user).
    pub len_mean: f64,
    /// Median history length.
    pub len_p50: usize,
    /// 90th percentile of history lengths.
    pub len_p90: usize,
    /// Longest history.
    pub len_max: usize,
    /// Items with a text embedding in the feature cache (0 without a cache).
    pub text_items: usize,
    /// Items with a decoded image in the feature cache.
    pub image_items: usize,
    /// Items with decoded audio in the feature cache.
    pub audio_items: usize,
    /// Distinct item domains.
    pub domains: usize,
}

impl Profile {
    /// The profile of a dataset; `content` gives the items with text, image and audio features (from the feature
    /// cache, `[0, 0, 0]` when there is none).
    pub fn of(ds: &Dataset, content: [usize; 3]) -> Profile {
        let mut per_user = vec![0usize; ds.n_users()];
        for &u in &ds.interactions.user {
            if let Some(c) = per_user.get_mut(u as usize) {
                *c += 1;
            }
        }
        per_user.retain(|&c| c > 0);
        per_user.sort_unstable();
        let pct = |p: f64| -> usize {
            match per_user.len() {
                0 => 0,
                n => per_user[((n - 1) as f64 * p).round() as usize],
            }
        };
        let mut domains: Vec<&str> = ds.items.iter().map(|i| i.domain.as_str()).collect();
        domains.sort_unstable();
        domains.dedup();
        Profile {
            users: ds.n_users(),
            items: ds.n_items(),
            events: ds.interactions.len(),
            len_mean: ds.interactions.len() as f64 / per_user.len().max(1) as f64,
            len_p50: pct(0.5),
            len_p90: pct(0.9),
            len_max: per_user.last().copied().unwrap_or(0),
            text_items: content[0],
            image_items: content[1],
            audio_items: content[2],
            domains: domains.len(),
        }
    }
}

/// The machine a run trains on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Machine {
    /// Compute threads (libtorch intra-op threads on CPU).
    pub threads: usize,
    /// Training on a CUDA device.
    pub cuda: bool,
    /// This machine's f32 matmul rate, FLOP/s, when measured ([`Machine::measure_roof`]).
    pub roof: Option<f64>,
}

impl Machine {
    /// Useful FLOP/s a training step reaches on this machine. On CPU 30% of the measured matmul roof (`cargo xtask
    /// bench step`: 25-40% on Toys; a Toys epoch of 11 s at a 146 GFLOP/s roof is 34%),
    /// or 25 GFLOP/s per thread when it was not measured;
    /// on a GPU a conservative 2 TFLOP/s (small models are launch-bound there; never measured here).
    pub fn flops(&self) -> f64 {
        match (self.cuda, self.roof) {
            (true, _) => 2e12,
            (false, Some(r)) if r.is_finite() && r > 0.0 => 0.3 * r,
            (false, _) => 25e9 * self.threads.max(1) as f64,
        }
    }

    /// The f32 matmul rate of `device` (FLOP/s): the best of five 1024³ products, about 0.1 s on 2 cores.
    pub fn measure_roof(device: tch::Device) -> f64 {
        let n = 1024i64;
        let a = tch::Tensor::randn([n, n], (tch::Kind::Float, device));
        let b = tch::Tensor::randn([n, n], (tch::Kind::Float, device));
        let mut best = f64::INFINITY;
        for _ in 0..6 {
            let t = std::time::Instant::now();
            let c = a.matmul(&b);
            let _ = c.double_value(&[0, 0]);
            best = best.min(t.elapsed().as_secs_f64());
        }
        2.0 * (n * n * n) as f64 / best.max(1e-9)
    }
}

/// One choice of the strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Dotted config path (`model.max_len`).
    pub field: String,
    /// The chosen value, as TOML.
    pub value: String,
    /// Why (or `set in the run config`).
    pub reason: String,
    /// Whether the user's run config set it (the rule was not applied).
    pub by_user: bool,
}

/// A resolved run: the complete config and the decisions that made it.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Complete, validated, `strategy = "fixed"`.
    pub config: RunConfig,
    /// One per decided field, in the order of the table.
    pub decisions: Vec<Decision>,
    /// Estimated seconds per epoch under the chosen config (cost model × [`Machine::flops`]).
    pub epoch_seconds: f64,
}

/// Training FLOPs of one epoch (forward and backward, 3× the forward's multiply-adds × 2) on real tokens: the
/// Transformer on every position, the item product and loss on every target.
pub fn epoch_flops(p: &Profile, d: i64, layers: i64, max_len: i64, negatives: Option<i64>) -> f64 {
    let d = d as f64;
    // Positions trained per epoch: every event but each user's last two (validation, test) and first (no target).
    let tokens = (p.events as f64 - 3.0 * p.users as f64).max(p.events as f64 * 0.1);
    let mean_len = p.len_mean.min(max_len as f64).max(1.0);
    // Per position: QKV + output (4d²), feed-forward (8d²), attention over the row (2·len·d), per layer.
    let block = layers as f64 * (12.0 * d * d + 2.0 * mean_len * d);
    let columns = negatives.map_or(p.items as f64, |n| n as f64);
    let item = columns * d;
    6.0 * tokens * (block + item)
}

/// Parses a duration: `90`, `90s`, `10m`, `1.5h`.
pub fn parse_duration(text: &str) -> std::result::Result<f64, String> {
    let t = text.trim();
    let (num, scale) = match t.chars().last() {
        Some('s') => (&t[..t.len() - 1], 1.0),
        Some('m') => (&t[..t.len() - 1], 60.0),
        Some('h') => (&t[..t.len() - 1], 3600.0),
        _ => (t, 1.0),
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v * scale),
        _ => Err(format!("{text:?} is not a duration: write seconds or a number with s, m or h (`90s`, `10m`, `1h`)")),
    }
}

const SECTIONS: [&str; 6] = ["model", "optim", "train", "item_tower", "content", "domains"];

/// Completes the user's run config (`user`: their TOML table; empty for none) by the rules of this module.
///
/// `budget` is the training time in seconds (also written as `train.max_seconds` unless the user set that). Every key
/// the user set keeps their value; a section they wrote as a whole table (`[item_tower]`) is merged key by key into
/// the strategy's, and a tagged value (`loss = { type = ... }`) is taken whole.
pub fn resolve(user: &toml::Table, p: &Profile, m: &Machine, budget: Option<f64>) -> Result<Resolved> {
    let origin = Path::new("automatic strategy");
    let bad = |reason: String| Error::Config { path: origin.to_path_buf(), reason };
    if let Some(k) = user.keys().find(|k| !SECTIONS.contains(&k.as_str()) && k.as_str() != "strategy") {
        return Err(bad(format!("unknown section `{k}` (expected one of {SECTIONS:?} or `strategy`)")));
    }
    if p.events == 0 || p.items == 0 {
        return Err(bad("the dataset has no interactions or no items: nothing to decide a strategy for".into()));
    }
    let mut draft = Draft { user, p, m, budget, auto: RunConfig::default(), why: Vec::new() };
    let max_len = draft.length();
    let (d_model, layers) = draft.size();
    let sparse = draft.regularisation();
    let negatives = draft.loss(d_model, layers, max_len);
    let epoch_seconds = epoch_flops(p, d_model, layers, max_len, negatives) / m.flops();
    draft.optimiser(sparse);
    draft.epochs(epoch_seconds);
    draft.item_tower();

    // The user's fields win.
    let table = with_users_fields(&draft.auto, user).map_err(bad)?;
    let text = toml::to_string(&table).map_err(|e| bad(e.to_string()))?;
    let config = RunConfig::from_toml(&text, origin)?;
    let negatives = match config.model.loss {
        m6rec_model::LossConfig::FullSoftmax => None,
        m6rec_model::LossConfig::SampledSoftmax { n_uniform, .. } => Some(n_uniform + 128),
    };
    let epoch_seconds =
        epoch_flops(p, config.model.d_model, config.model.n_layers, config.model.max_len, negatives) / m.flops();
    let decisions = std::mem::take(&mut draft.why)
        .into_iter()
        .map(|(field, reason)| {
            let (section, key) = field.split_once('.').unwrap_or((field.as_str(), ""));
            let by_user = if key.is_empty() { user.contains_key(section) } else { draft.set(section, key) };
            let value = lookup(&table, section, key);
            Decision { reason: if by_user { "set in the run config".into() } else { reason }, field, value, by_user }
        })
        .collect();
    Ok(Resolved { config, decisions, epoch_seconds })
}

/// The strategy's config as it is being decided, rule by rule, with each rule's reason.
struct Draft<'a> {
    user: &'a toml::Table,
    p: &'a Profile,
    m: &'a Machine,
    budget: Option<f64>,
    auto: RunConfig,
    /// (field, reason), in the order of the table.
    why: Vec<(String, String)>,
}

impl Draft<'_> {
    fn note(&mut self, field: &str, reason: String) {
        self.why.push((field.to_string(), reason));
    }

    /// Whether the user's config sets `[section] key`.
    fn set(&self, section: &str, key: &str) -> bool {
        self.user.get(section).and_then(toml::Value::as_table).is_some_and(|t| t.contains_key(key))
    }

    /// Length: cover most histories; the long tail trains as extra windows.
    fn length(&mut self) -> i64 {
        let (p, cuda) = (self.p, self.m.cuda);
        let cap = if cuda { 200 } else { 50 };
        let p90 = p.len_p90.max(1) as i64;
        let max_len = ((p90 + 9) / 10 * 10).clamp(20, cap);
        self.auto.model.max_len = max_len;
        self.note(
            "model.max_len",
            format!(
                "90% of histories have at most {} items (mean {:.1}, longest {}); {} caps it on {}; longer histories train as extra windows",
                p.len_p90,
                p.len_mean,
                p.len_max,
                cap,
                if cuda { "GPU" } else { "CPU" }
            ),
        );
        max_len
    }

    /// Width, depth, heads: SASRec's size.
    fn size(&mut self) -> (i64, i64) {
        let user = self.user;
        let d_model = if self.set("model", "d_model") { int(user, "model", "d_model").unwrap_or(64) } else { 64 };
        let layers = if self.set("model", "n_layers") { int(user, "model", "n_layers").unwrap_or(2) } else { 2 };
        self.auto.model.d_model = d_model;
        self.auto.model.n_layers = layers;
        self.auto.model.n_heads = if d_model % 2 == 0 { 2 } else { 1 };
        self.note(
            "model.d_model",
            "SASRec's width: wider did not pay within a 10-minute CPU budget (docs/strategy.md)".into(),
        );
        self.note("model.n_layers", "SASRec's depth".into());
        self.note("model.n_heads", "one head per 32 dimensions".into());
        (d_model, layers)
    }

    /// Regularisation: sparse data (short histories, the Amazon shape) needs more. Returns whether it is sparse.
    fn regularisation(&mut self) -> bool {
        let mean = self.p.len_mean;
        let sparse = mean < 20.0;
        self.auto.model.dropout = if sparse { 0.5 } else { 0.2 };
        self.note(
            "model.dropout",
            format!(
                "mean history {mean:.1} items: {} (below 20 items is the sparse, Amazon-like shape)",
                if sparse { "sparse" } else { "dense" }
            ),
        );
        sparse
    }

    /// Loss: full softmax unless its item product would dominate the budget. Returns the sampled columns per
    /// target (`None`: the whole catalog).
    fn loss(&mut self, d_model: i64, layers: i64, max_len: i64) -> Option<i64> {
        let (p, m, budget) = (self.p, self.m, self.budget);
        let budget_flops = budget.map(|b| b * m.flops());
        let full = epoch_flops(p, d_model, layers, max_len, None);
        let min_epochs = 30.0;
        let full_fits =
            budget_flops.is_none_or(|b| full * min_epochs <= b) && p.items <= if m.cuda { 2_000_000 } else { 200_000 };
        if full_fits {
            self.note(
                "model.loss",
                format!(
                    "full softmax: exact over {} items, {:.1} s per epoch estimated{}",
                    p.items,
                    full / m.flops(),
                    budget.map_or(String::new(), |b| format!(
                        ", about {:.0} epochs fit the budget",
                        b * m.flops() / full
                    ))
                ),
            );
            return None;
        }
        let n = 1024.min(p.items as i64 / 2).max(64);
        self.auto.model.loss = m6rec_model::LossConfig::SampledSoftmax { n_uniform: n, in_batch: true };
        self.note(
            "model.loss",
            format!(
                "sampled softmax, {n} uniform + in-batch negatives: a full softmax over {} items would fit fewer than {min_epochs:.0} epochs ({:.0} s each estimated)",
                p.items,
                full / m.flops()
            ),
        );
        Some(n + 128)
    }

    /// Batch and optimiser.
    fn optimiser(&mut self, sparse: bool) {
        self.auto.train.batch_size = 128;
        self.auto.train.buckets = true;
        self.note(
            "train.batch_size",
            "128 rows' worth of real tokens per step, in length buckets (padding under 10%)".into(),
        );
        self.auto.optim.lr = if sparse { 5e-3 } else { 2e-3 };
        let lr = self.auto.optim.lr;
        self.note(
            "optim.lr",
            format!(
                "{} data: {lr} (on Toys 5e-3 beat 2e-3 by 34% at 30 epochs; docs/strategy.md)",
                if sparse { "sparse" } else { "dense" },
            ),
        );
        self.auto.train.warmup_steps = 20;
        self.note("train.warmup_steps", "20 steps: AdamW's estimates settle quickly at this size".into());
    }

    /// Epochs and patience from the estimated epoch time.
    ///
    /// When the budget binds (fewer than 60 epochs fit), the cosine schedule spans the epochs that fit it (validation
    /// included, a tenth), so the rate has decayed when the time is up: on Toys the decayed tail added 9% NDCG@10.
    /// When more fit, early stopping ends the run first and the schedule stays long: on ML-100k a schedule fitted to
    /// 79 epochs stopped at 45 with test NDCG@10 0.0506, against 0.0547 for 200 epochs and patience 20.
    fn epochs(&mut self, epoch_seconds: f64) {
        let fit = self.budget.map(|b| 0.9 * b / epoch_seconds.max(1e-3));
        let binds = fit.filter(|&n| n < 60.0);
        self.auto.train.epochs = binds.map_or(200, |n| (n as usize).clamp(5, 200));
        self.auto.train.patience = binds.map_or(20, |n| ((n / 5.0) as usize).clamp(5, 20));
        self.note(
            "train.epochs",
            match (binds, fit) {
                (Some(n), _) => format!(
                    "{} epochs of {epoch_seconds:.1} s (estimated) fit 90% of the budget: the cosine decay ends there",
                    (n as usize).clamp(5, 200)
                ),
                (None, Some(n)) => format!(
                    "up to 200 with early stopping: about {n:.0} epochs of {epoch_seconds:.1} s fit the budget, more than the 60 early stopping needs"
                ),
                (None, None) => "up to 200, early stopping on validation NDCG@10 (no budget)".into(),
            },
        );
        let patience = self.auto.train.patience;
        self.note("train.patience", format!("{patience} epochs without a better validation NDCG@10"));
        if let Some(b) = self.budget {
            self.auto.train.max_seconds = b;
            self.auto.train.replan = true;
            self.note("train.max_seconds", format!("the budget, {b:.0} s, checked after every step"));
            self.note(
                "train.replan",
                "after epoch 2 the measured epoch time replaces the estimate in this rule (the estimate misses an item tower's cost)".into(),
            );
        }
        self.auto.train.windows = true;
    }

    /// Item tower over the content that exists.
    fn item_tower(&mut self) {
        let p = self.p;
        let text_share = p.text_items as f64 / p.items as f64;
        if text_share < 0.5 {
            let reason = match p.text_items {
                0 => {
                    "none (item ids): no text embeddings in a feature cache (`m6rec features DATA` builds them)".into()
                }
                n => format!("none (item ids): only {n} of {} items have a text embedding", p.items),
            };
            self.note("item_tower", reason);
            return;
        }
        self.auto.item_tower = Some(m6rec_fusion::ItemTowerConfig {
            mode: m6rec_fusion::TowerMode::Hybrid,
            fusion: m6rec_fusion::FusionConfig::Mean,
            id_dropout: 0.3,
        });
        self.auto.content = Some(crate::content::ContentConfig {
            modalities: vec![crate::content::ModalityName::Text],
            similarity: true,
            ..crate::content::ContentConfig::default()
        });
        self.note(
            "item_tower",
            format!(
                "hybrid id + text with the text-similarity prior: {:.0}% of the items have a text embedding",
                100.0 * text_share
            ),
        );
    }
}

/// The strategy's config as a TOML table with every field the user set put over it (sections merged key by key; a
/// whole `[item_tower]` the strategy did not choose, and tagged values, taken whole), marked `strategy = "fixed"`.
fn with_users_fields(auto: &RunConfig, user: &toml::Table) -> std::result::Result<toml::Table, String> {
    let mut table: toml::Table = toml::Table::try_from(auto).map_err(|e| e.to_string())?;
    for (section, value) in user {
        if section == "strategy" {
            continue;
        }
        match (table.get_mut(section).and_then(toml::Value::as_table_mut), value.as_table()) {
            (Some(mine), Some(theirs)) if section != "item_tower" || auto.item_tower.is_some() => {
                for (k, v) in theirs {
                    mine.insert(k.clone(), v.clone());
                }
            }
            _ => {
                table.insert(section.clone(), value.clone());
            }
        }
    }
    table.insert("strategy".into(), toml::Value::String("fixed".into()));
    Ok(table)
}

fn int(user: &toml::Table, section: &str, key: &str) -> Option<i64> {
    user.get(section)?.as_table()?.get(key)?.as_integer()
}

fn lookup(table: &toml::Table, section: &str, key: &str) -> String {
    let v = table.get(section);
    let v = if key.is_empty() { v } else { v.and_then(toml::Value::as_table).and_then(|t| t.get(key)) };
    match v {
        None => "none".into(),
        Some(toml::Value::Table(t)) => {
            let inline: Vec<String> = t.iter().map(|(k, v)| format!("{k} = {v}")).collect();
            format!("{{ {} }}", inline.join(", "))
        }
        Some(v) => v.to_string(),
    }
}

/// The decisions as a text table: field, value, reason (`*` marks fields the run config set).
pub fn table(decisions: &[Decision]) -> String {
    let w0 = decisions.iter().map(|d| d.field.len()).max().unwrap_or(5).max(5);
    let w1 = decisions.iter().map(|d| d.value.chars().count().min(40)).max().unwrap_or(5).max(5);
    let mut out = format!("{:<w0$}  {:<w1$}  reason\n", "field", "value");
    for d in decisions {
        let mut value: String = d.value.chars().take(40).collect();
        if d.by_user {
            value.push('*');
        }
        out.push_str(&format!("{:<w0$}  {:<w1$}  {}\n", d.field, value, d.reason));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A dataset of `users` users whose history lengths cycle through `lens`, over `items` items.
    fn dataset(users: usize, items: usize, lens: &[usize]) -> Dataset {
        let mut interactions = m6rec_data::Interactions::default();
        for u in 0..users {
            for t in 0..lens[u % lens.len()] {
                interactions.push(u as u32, ((u * 7 + t * 13) % items) as u32, t as i64, None);
            }
        }
        Dataset {
            name: "synthetic".into(),
            source: "test".into(),
            users: (0..users).map(|u| u.to_string()).collect(),
            items: (0..items)
                .map(|i| m6rec_data::Item {
                    id: i.to_string(),
                    domain: if i % 2 == 0 { "a".into() } else { "b".into() },
                    title: String::new(),
                    text: None,
                    image: None,
                    audio: None,
                })
                .collect(),
            interactions,
        }
    }

    const CPU: Machine = Machine { threads: 2, cuda: false, roof: None };

    fn decided(r: &Resolved, field: &str) -> String {
        r.decisions.iter().find(|d| d.field == field).map(|d| d.value.clone()).unwrap_or_default()
    }

    #[test]
    fn the_profile_reads_lengths_catalog_and_domains() {
        let ds = dataset(100, 50, &[5, 5, 5, 5, 5, 5, 5, 5, 40, 40]);
        let p = Profile::of(&ds, [10, 0, 0]);
        assert_eq!((p.users, p.items, p.events, p.domains), (100, 50, 1200, 2));
        assert_eq!((p.len_p50, p.len_p90, p.len_max), (5, 40, 40));
        assert!((p.len_mean - 12.0).abs() < 1e-9);
        assert_eq!(p.text_items, 10);
    }

    #[test]
    fn short_sparse_histories_over_a_small_catalog() {
        // The Amazon shape: 8-9 items per user, a 12k catalog, no content.
        let p = Profile::of(&dataset(2000, 12_000, &[5, 6, 8, 9, 12, 30]), [0; 3]);
        let r = resolve(&toml::Table::new(), &p, &CPU, Some(600.0)).unwrap();
        let c = &r.config;
        assert_eq!(c.strategy, super::Strategy::Fixed);
        assert_eq!(c.model.max_len, 30, "p90 of 30 rounded to 10s");
        assert_eq!(c.model.dropout, 0.5);
        assert_eq!(c.model.loss, m6rec_model::LossConfig::FullSoftmax);
        assert_eq!((c.model.d_model, c.model.n_layers, c.model.n_heads), (64, 2, 2));
        assert_eq!(c.optim.lr, 5e-3);
        assert_eq!(c.train.max_seconds, 600.0);
        // The schedule spans what fits the budget: 90% of it at the estimated epoch time.
        // A machine measured twice as fast fits twice the epochs.
        let fast = Machine { roof: Some(2.0 * CPU.flops() / 0.3), ..CPU };
        let r2 = resolve(&toml::Table::new(), &p, &fast, Some(600.0)).unwrap();
        assert!((r2.epoch_seconds * 2.0 - r.epoch_seconds).abs() < 1e-9);
    }

    #[test]
    fn a_binding_budget_fits_the_schedule_to_it_and_a_loose_one_leaves_it_to_early_stopping() {
        // The Toys shape: 10 minutes on 2 cores fit about 36 epochs.
        let p = Profile {
            users: 19_412,
            items: 11_924,
            events: 167_597,
            len_mean: 8.63,
            len_p50: 6,
            len_p90: 14,
            len_max: 550,
            text_items: 0,
            image_items: 0,
            audio_items: 0,
            domains: 1,
        };
        let r = resolve(&toml::Table::new(), &p, &CPU, Some(600.0)).unwrap();
        let fit = (0.9 * 600.0 / r.epoch_seconds) as usize;
        assert!(fit < 60, "{fit}");
        assert_eq!(r.config.train.epochs, fit, "{}", table(&r.decisions));
        assert_eq!(r.config.train.patience, (fit / 5).clamp(5, 20));
        // Ten times the budget: early stopping ends the run, the schedule stays long.
        let r = resolve(&toml::Table::new(), &p, &CPU, Some(6000.0)).unwrap();
        assert_eq!((r.config.train.epochs, r.config.train.patience), (200, 20), "{}", table(&r.decisions));
        assert_eq!(r.config.train.max_seconds, 6000.0);
        assert!(r.config.train.replan, "with a budget, the measured epoch time re-plans after epoch 2");
        assert!(r.config.train.buckets);
        assert!(r.config.item_tower.is_none());
        assert!(decided(&r, "item_tower") == "none", "{:?}", r.decisions);
    }

    #[test]
    fn long_dense_histories_are_capped_and_lightly_regularised() {
        let p = Profile::of(&dataset(300, 1500, &[40, 100, 300, 700]), [0; 3]);
        let r = resolve(&toml::Table::new(), &p, &CPU, None).unwrap();
        assert_eq!(r.config.model.max_len, 50, "CPU cap");
        assert_eq!(r.config.model.dropout, 0.2);
        assert_eq!(r.config.optim.lr, 2e-3);
        assert_eq!(r.config.train.max_seconds, 0.0, "no budget, no cap");
        assert!(!r.config.train.replan);
        assert_eq!(r.config.train.patience, 20);
        assert_eq!(r.config.train.epochs, 200, "no budget: early stopping decides");
        let gpu = resolve(&toml::Table::new(), &p, &Machine { threads: 2, cuda: true, roof: None }, None).unwrap();
        assert_eq!(gpu.config.model.max_len, 200, "GPU cap");
    }

    #[test]
    fn a_tiny_catalog_and_very_short_histories() {
        let p = Profile::of(&dataset(50, 10, &[3, 4]), [0; 3]);
        let r = resolve(&toml::Table::new(), &p, &CPU, Some(60.0)).unwrap();
        assert_eq!(r.config.model.max_len, 20, "never below 20");
        assert_eq!(r.config.model.loss, m6rec_model::LossConfig::FullSoftmax);
    }

    #[test]
    fn a_huge_catalog_gets_sampled_softmax_within_a_budget() {
        let p = Profile::of(&dataset(20_000, 2_000_000, &[8, 10, 12]), [0; 3]);
        let r = resolve(&toml::Table::new(), &p, &CPU, Some(600.0)).unwrap();
        assert_eq!(
            r.config.model.loss,
            m6rec_model::LossConfig::SampledSoftmax { n_uniform: 1024, in_batch: true },
            "{}",
            table(&r.decisions)
        );
        // Without a budget, still too large for a CPU full softmax.
        let r = resolve(&toml::Table::new(), &p, &CPU, None).unwrap();
        assert!(matches!(r.config.model.loss, m6rec_model::LossConfig::SampledSoftmax { .. }));
        // The same catalog with a generous budget on a GPU stays exact.
        let r =
            resolve(&toml::Table::new(), &p, &Machine { threads: 1, cuda: true, roof: None }, Some(36_000.0)).unwrap();
        assert_eq!(r.config.model.loss, m6rec_model::LossConfig::FullSoftmax);
    }

    #[test]
    fn text_for_most_items_chooses_a_hybrid_text_tower() {
        let ds = dataset(500, 400, &[6, 9]);
        let with = resolve(&toml::Table::new(), &Profile::of(&ds, [300, 0, 0]), &CPU, None).unwrap();
        let tower = with.config.item_tower.as_ref().expect("a tower");
        assert_eq!(tower.mode, m6rec_fusion::TowerMode::Hybrid);
        let content = with.config.content.as_ref().expect("content");
        assert_eq!(content.modalities, vec![crate::content::ModalityName::Text]);
        assert!(content.similarity);
        let few = resolve(&toml::Table::new(), &Profile::of(&ds, [100, 0, 0]), &CPU, None).unwrap();
        assert!(few.config.item_tower.is_none());
    }

    #[test]
    fn the_resolved_config_reproduces_itself() {
        let p = Profile::of(&dataset(500, 400, &[6, 9, 60]), [400, 0, 0]);
        let r = resolve(&toml::Table::new(), &p, &CPU, Some(300.0)).unwrap();
        let again = RunConfig::from_toml(&r.config.to_toml(), Path::new("x")).unwrap();
        assert_eq!(again, r.config);
        assert!(r.epoch_seconds > 0.0 && r.epoch_seconds.is_finite());
        assert!(table(&r.decisions).contains("model.max_len"));
    }

    #[test]
    fn unknown_sections_and_empty_data_are_refused() {
        let p = Profile::of(&dataset(10, 10, &[5]), [0; 3]);
        let user: toml::Table = toml::from_str("[modle]\nd_model = 3").unwrap();
        let err = resolve(&user, &p, &CPU, None).unwrap_err().to_string();
        assert!(err.contains("modle"), "{err}");
        let empty = Profile::of(&dataset(10, 10, &[0]), [0; 3]);
        assert!(resolve(&toml::Table::new(), &empty, &CPU, None).is_err());
        let user: toml::Table = toml::from_str("[model]\nd_modle = 3").unwrap();
        let err = resolve(&user, &p, &CPU, None).unwrap_err().to_string();
        assert!(err.contains("d_modle"), "{err}");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90").unwrap(), 90.0);
        assert_eq!(parse_duration("90s").unwrap(), 90.0);
        assert_eq!(parse_duration("10m").unwrap(), 600.0);
        assert_eq!(parse_duration("1.5h").unwrap(), 5400.0);
        for bad in ["", "m", "-3m", "ten", "nan", "0"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Whatever subset of fields the user sets, the resolved config carries exactly their values.
        #[test]
        fn a_user_set_field_is_never_overridden(
            max_len in proptest::option::of(1i64..300),
            dropout in proptest::option::of(0.0f64..0.9),
            d_model in proptest::option::of(prop_oneof![Just(16i64), Just(32), Just(96)]),
            lr in proptest::option::of(1e-5f64..1e-1),
            patience in proptest::option::of(1usize..50),
            max_seconds in proptest::option::of(1.0f64..1e4),
            sampled in proptest::option::of(1i64..4000),
            tower in any::<bool>(),
            mean_len in 2usize..200,
            items in 10usize..300_000,
            text in any::<bool>(),
        ) {
            let mut text_cfg = String::from("[model]\n");
            if let Some(v) = max_len { text_cfg += &format!("max_len = {v}\n"); }
            if let Some(v) = dropout { text_cfg += &format!("dropout = {v:?}\n"); }
            if let Some(v) = d_model { text_cfg += &format!("d_model = {v}\nn_heads = 1\n"); }
            if let Some(v) = sampled { text_cfg += &format!("loss = {{ type = \"sampled_softmax\", n_uniform = {v} }}\n"); }
            text_cfg += "[optim]\n";
            if let Some(v) = lr { text_cfg += &format!("lr = {v:?}\n"); }
            text_cfg += "[train]\n";
            if let Some(v) = patience { text_cfg += &format!("patience = {v}\n"); }
            if let Some(v) = max_seconds { text_cfg += &format!("max_seconds = {v:?}\n"); }
            if tower { text_cfg += "[item_tower]\nmode = \"id_only\"\n"; }
            let user: toml::Table = toml::from_str(&text_cfg).unwrap();
            let p = Profile {
                users: 1000, items, events: 1000 * mean_len, len_mean: mean_len as f64, len_p50: mean_len,
                len_p90: mean_len * 2, len_max: mean_len * 5, text_items: if text { items } else { 0 },
                image_items: 0, audio_items: 0, domains: 1,
            };
            let r = resolve(&user, &p, &CPU, Some(600.0)).unwrap();
            let c = &r.config;
            if let Some(v) = max_len { prop_assert_eq!(c.model.max_len, v); }
            if let Some(v) = dropout { prop_assert_eq!(c.model.dropout, v); }
            if let Some(v) = d_model { prop_assert_eq!((c.model.d_model, c.model.n_heads), (v, 1)); }
            if let Some(v) = sampled {
                prop_assert_eq!(&c.model.loss, &m6rec_model::LossConfig::SampledSoftmax { n_uniform: v, in_batch: true });
            }
            if let Some(v) = lr { prop_assert_eq!(c.optim.lr, v); }
            if let Some(v) = patience { prop_assert_eq!(c.train.patience, v); }
            prop_assert_eq!(c.train.max_seconds, max_seconds.unwrap_or(600.0));
            if tower {
                prop_assert_eq!(c.item_tower.as_ref().map(|t| t.mode), Some(m6rec_fusion::TowerMode::IdOnly));
            }
            for d in &r.decisions {
                let user_set = match d.field.as_str() {
                    "model.max_len" => max_len.is_some(),
                    "model.dropout" => dropout.is_some(),
                    "model.d_model" => d_model.is_some(),
                    "model.loss" => sampled.is_some(),
                    "optim.lr" => lr.is_some(),
                    "train.patience" => patience.is_some(),
                    "train.max_seconds" => max_seconds.is_some(),
                    "item_tower" => tower,
                    _ => d.by_user,
                };
                prop_assert_eq!(d.by_user, user_set, "{}", &d.field);
            }
        }
    }
}
