//! The run configuration: one TOML file with `[model]`, `[optim]`, `[train]` and optionally `[item_tower]` tables.

use crate::{Error, Result};
use m6rec_model::SeqRecConfig;
use m6rec_optim::OptimConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Everything a training run needs besides the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// `auto`: fields this file leaves out are chosen from the data, machine and budget
    /// ([`crate::strategy::resolve`]); `fixed` (the default for a file): they take their documented defaults.
    /// `m6rec train` without a config runs `auto`.
    #[serde(default, skip_serializing_if = "is_fixed")]
    pub strategy: crate::strategy::Strategy,
    /// The sequence model and its objective.
    #[serde(default)]
    pub model: SeqRecConfig,
    /// The optimizer.
    #[serde(default)]
    pub optim: OptimConfig,
    /// The loop.
    #[serde(default)]
    pub train: TrainConfig,
    /// Items from an item tower (content, id, or both; `[item_tower]`) instead of the model's own id table. Absent:
    /// the classic id embedding table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_tower: Option<m6rec_fusion::ItemTowerConfig>,
    /// What the item tower reads (`[content]`: modalities, image/audio encoder). Absent: text only, defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<crate::content::ContentConfig>,
    /// Several domains (`[domains]`): domain embeddings and per-domain sampling weights. Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domains: Option<crate::domains::DomainConfig>,
    /// Generative retrieval over semantic IDs (`[generative]`, [`crate::generative`]): the `[model]` sizes then
    /// describe the code-token model, and `[content]` text embeddings from the feature cache give the codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generative: Option<crate::generative::GenerativeConfig>,
}

/// Training-loop settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Sequences per step. Default 128. Ignored when `batch_tokens` is set.
    #[serde(default = "d::batch_size")]
    pub batch_size: usize,
    /// Positions per step (rows × the batch's padded length) instead of a fixed count of rows: a batch of short
    /// sequences then holds more of them, and every step does about the same work. 0 (the default) uses
    /// `batch_size`.
    #[serde(default, skip_serializing_if = "is_zero_usize")]
    pub batch_tokens: usize,
    /// Batch rows of similar length together: the shuffled rows are sorted by length within pools of 100 batches, cut
    /// into batches, and the batches shuffled, so padding stays a small part of the positions computed. Without
    /// `batch_tokens`, a batch then holds `batch_size` × the mean row length positions (as many steps an epoch as
    /// batches of `batch_size` rows, every target weighted alike). Default true.
    #[serde(default = "d::yes")]
    pub buckets: bool,
    /// Maximum epochs. Default 200.
    #[serde(default = "d::epochs")]
    pub epochs: usize,
    /// Stop after this many epochs without a better validation NDCG@10. Default 20.
    #[serde(default = "d::patience")]
    pub patience: usize,
    /// Validate every this many epochs. Default 1.
    #[serde(default = "d::one")]
    pub eval_every: usize,
    /// Linear warm-up steps of the learning rate. Default 100.
    #[serde(default = "d::warmup")]
    pub warmup_steps: u64,
    /// Clip gradients to this global norm (0 disables). Default 1.0.
    #[serde(default = "d::clip")]
    pub clip_norm: f64,
    /// Seed for initialisation, shuffling and dropout. Default 42.
    #[serde(default = "d::seed")]
    pub seed: u64,
    /// Whether validation (for early stopping) excludes items already in the history. Default false.
    #[serde(default)]
    pub filter_history: bool,
    /// Stop after this many seconds of training (0 = no limit), checked after every optimizer step: the epoch in
    /// progress ends there, is validated and checkpointed. Default 0.
    #[serde(default)]
    pub max_seconds: f64,
    /// With `max_seconds`: after epoch 2, replace `epochs` by what the measured epoch time fits (fewer than 60:
    /// those in 90% of the budget, so the cosine decay ends with it; else 200 and early stopping). The automatic
    /// strategy turns it on, since its epoch time is an estimate. One process only. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replan: bool,
    /// Train on every window of each long sequence, not only its most recent `max_len` items. Default true.
    #[serde(default = "d::yes")]
    pub windows: bool,
    /// Users per evaluation batch. Default 256.
    #[serde(default = "d::eval_batch")]
    pub eval_batch_size: usize,
    /// Cold-start evaluation: this fraction of the catalog (drawn from `seed`) is removed from training entirely and
    /// evaluated as targets no model has seen; `m6rec eval` then reports cold and warm targets apart. Default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cold_items: f64,
    /// How events are split into training, validation and test: chronological leave-one-out (the default), or
    /// `[train.split] kind = "temporal"` with `valid` and `test` fractions of the global timeline.
    #[serde(default, skip_serializing_if = "SplitConfig::is_leave_one_out")]
    pub split: SplitConfig,
}

/// `[train.split]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SplitConfig {
    /// Per user, the last event is the test target and the one before it the validation target.
    #[default]
    LeaveOneOut,
    /// A global time cut: the last `test` fraction of all events (by time) is the test period, the `valid` fraction
    /// before it the validation period; each user's first event in a period is their target there.
    Temporal {
        /// Fraction of events in the validation period. Default 0.1.
        #[serde(default = "d::tenth")]
        valid: f64,
        /// Fraction of events in the test period. Default 0.1.
        #[serde(default = "d::tenth")]
        test: f64,
    },
}

impl SplitConfig {
    fn is_leave_one_out(&self) -> bool {
        *self == SplitConfig::LeaveOneOut
    }
}

fn is_fixed(s: &crate::strategy::Strategy) -> bool {
    *s == crate::strategy::Strategy::Fixed
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

fn is_zero_usize(x: &usize) -> bool {
    *x == 0
}

mod d {
    pub fn batch_size() -> usize {
        128
    }
    pub fn epochs() -> usize {
        200
    }
    pub fn patience() -> usize {
        20
    }
    pub fn one() -> usize {
        1
    }
    pub fn warmup() -> u64 {
        100
    }
    pub fn clip() -> f64 {
        1.0
    }
    pub fn seed() -> u64 {
        42
    }
    pub fn yes() -> bool {
        true
    }
    pub fn eval_batch() -> usize {
        256
    }
    pub fn tenth() -> f64 {
        0.1
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            batch_size: d::batch_size(),
            batch_tokens: 0,
            buckets: true,
            epochs: d::epochs(),
            patience: d::patience(),
            eval_every: d::one(),
            warmup_steps: d::warmup(),
            clip_norm: d::clip(),
            seed: d::seed(),
            filter_history: false,
            max_seconds: 0.0,
            replan: false,
            windows: true,
            eval_batch_size: d::eval_batch(),
            cold_items: 0.0,
            split: SplitConfig::LeaveOneOut,
        }
    }
}

impl RunConfig {
    /// The split of a dataset's interactions under this run (`train.split`: leave-one-out or temporal): with
    /// `train.cold_items`, the cold items are held out of training ([`m6rec_data::Split::with_cold_items`]).
    pub fn split(&self, interactions: &m6rec_data::Interactions, n_users: usize, n_items: usize) -> m6rec_data::Split {
        use m6rec_data::{Split, TimeCuts};
        let split = match self.train.split {
            SplitConfig::LeaveOneOut => Split::leave_one_out(interactions, n_users),
            SplitConfig::Temporal { valid, test } => {
                Split::temporal(interactions, n_users, TimeCuts::by_fraction(interactions, valid, test))
            }
        };
        match self.train.cold_items {
            f if f > 0.0 => split.with_cold_items(&m6rec_data::Split::sample_cold_items(n_items, f, self.train.seed)),
            _ => split,
        }
    }

    /// Fills `[domains] vocab` from the items' domain names (sorted, distinct) when the run has `[domains]` and no
    /// vocabulary yet.
    pub fn fill_domain_vocab<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        if let Some(d) = &mut self.domains {
            if d.vocab.is_empty() {
                let set: std::collections::BTreeSet<&str> = names.into_iter().collect();
                d.vocab = set.into_iter().map(str::to_string).collect();
            }
        }
    }

    /// The sections that define the recommender (`[model]`, `[item_tower]`, `[content]`, `[domains]`).
    pub fn recommender(&self) -> m6rec_recommender::RecommenderConfig {
        m6rec_recommender::RecommenderConfig {
            model: self.model.clone(),
            item_tower: self.item_tower.clone(),
            content: self.content.clone(),
            domains: self.domains.clone(),
        }
    }

    /// `[content]` with defaults.
    pub fn content(&self) -> crate::content::ContentConfig {
        self.content.clone().unwrap_or_default()
    }

    /// Parses TOML text; `origin` names the source in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<RunConfig> {
        let cfg: RunConfig =
            toml::from_str(text).map_err(|e| Error::Config { path: origin.to_path_buf(), reason: e.to_string() })?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<RunConfig> {
        let text = std::fs::read_to_string(path).map_err(crate::error::io(path))?;
        RunConfig::from_toml(&text, path)
    }

    /// TOML text of this config (every field explicit).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks ranges of every section.
    pub fn validate(&self, origin: &Path) -> Result<()> {
        let bad = |reason: String| Err(Error::Config { path: origin.to_path_buf(), reason });
        if let Err(e) = self.model.validate() {
            return bad(e.to_string());
        }
        let t = &self.train;
        if t.batch_size == 0 || t.eval_batch_size == 0 || t.eval_every == 0 {
            return bad("train.batch_size, train.eval_batch_size and train.eval_every must be at least 1".into());
        }
        if t.batch_tokens > 0 && i64::try_from(t.batch_tokens).is_ok_and(|b| b < self.model.max_len) {
            return bad(format!(
                "train.batch_tokens is {}, less than one full row (model.max_len = {}); use at least max_len",
                t.batch_tokens, self.model.max_len
            ));
        }
        if let Some(Err(e)) = self.content.as_ref().map(|c| c.validate()) {
            return bad(e);
        }
        if let Some(Err(e)) = self.domains.as_ref().map(|c| c.validate()) {
            return bad(e);
        }
        if let Some(g) = &self.generative {
            if let Err(e) = g.validate() {
                return bad(e);
            }
            if self.item_tower.is_some() || self.domains.is_some() {
                return bad("[generative] reads items by their semantic IDs: it cannot be combined with [item_tower] or [domains]".into());
            }
        }
        if let SplitConfig::Temporal { valid, test } = t.split {
            if !(valid > 0.0 && test > 0.0 && valid + test < 1.0) {
                return bad(format!(
                    "train.split: valid {valid} and test {test} must be positive fractions with a sum below 1 (for \
                     example 0.1 and 0.1)"
                ));
            }
        }
        if !(0.0..1.0).contains(&t.cold_items) {
            return bad(format!("train.cold_items is {}, must be in [0, 1)", t.cold_items));
        }
        if let Err(e) = self.optim.validate() {
            return bad(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_unknown_fields_are_named() {
        let cfg = RunConfig::default();
        let back = RunConfig::from_toml(&cfg.to_toml(), Path::new("x.toml")).unwrap();
        assert_eq!(back, cfg);
        let err = RunConfig::from_toml("[model]\nd_modle = 3\n", Path::new("run.toml")).unwrap_err();
        assert!(err.to_string().contains("run.toml") && err.to_string().contains("d_modle"), "{err}");
        let err = RunConfig::from_toml("[model]\nn_heads = 3\n", Path::new("run.toml")).unwrap_err();
        assert!(err.to_string().contains("n_heads"), "{err}");
    }
}
