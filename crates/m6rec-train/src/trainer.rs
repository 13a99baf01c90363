//! The training loop: shuffled epochs over users, the configured optimizer and schedule with warm-up, clipping and
//! optional gradient accumulation and weight averaging, validation NDCG@10 after each
//! epoch, early stopping, best-weights tracking, and an atomic checkpoint per epoch that `--resume` continues from.
//!
//! Reproducibility: libtorch is re-seeded with `seed + epoch` at the start of every epoch and the user order is a
//! ChaCha8 shuffle seeded the same way, so a resumed run takes exactly the steps an uninterrupted one would.
//! libtorch's generator is process-global: train one model per process (or take turns) for exact reproducibility.

use crate::checkpoint::{self, CheckpointConfig, CheckpointParts, DatasetFingerprint, CHECKPOINT_VERSION};
use crate::config::RunConfig;
use crate::content::ItemContent;
use crate::eval::{evaluate, EvalOptions, Stage};
use crate::parallel::{self, DataParallel};
use crate::scorer::ModelScorer;
use crate::{Error, Result};
use m6rec_data::{loader, SeqBatch, Split};
use m6rec_model::SeqRec;
use m6rec_optim::{Optimizer, Plateau, Schedule, ScheduleConfig};
use m6rec_recommender::Recommender;
use m6rec_tensor::Mode;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tch::{nn, Device, Tensor};

/// One epoch's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Validation NDCG@10, when validated this epoch.
    pub valid_ndcg10: Option<f64>,
    /// Validation HR@10, when validated this epoch.
    pub valid_hr10: Option<f64>,
    /// Training sequences per second this epoch.
    pub seqs_per_sec: f64,
    /// Real tokens (positions that carry a target) trained on per second this epoch.
    #[serde(default)]
    pub tokens_per_sec: f64,
    /// Share of the positions computed this epoch that were padding.
    #[serde(default)]
    pub padding: f64,
    /// Seconds since the run started (over all resumes).
    pub elapsed: f64,
}

/// Loop state, saved as `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainState {
    /// Epochs finished.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: u64,
    /// Best validation NDCG@10 so far.
    pub best_ndcg10: f64,
    /// Epoch that reached it.
    pub best_epoch: usize,
    /// Validations in a row without improvement.
    pub bad_evals: usize,
    /// Whether early stopping (or the epoch or time limit) ended the run.
    pub finished: bool,
    /// Why it ended.
    pub stop_reason: Option<String>,
    /// Training seconds so far.
    pub elapsed: f64,
    /// Per-epoch records.
    pub history: Vec<EpochRecord>,
    /// Reduce-on-plateau state (`[optim] schedule = { type = "plateau" }`).
    #[serde(default)]
    pub plateau: Plateau,
}

/// Hooks for progress display; every method has a no-op default.
pub trait Observer {
    /// An epoch of `n_batches` starts.
    fn epoch_start(&mut self, _epoch: usize, _n_batches: usize) {}
    /// A batch finished with this loss.
    fn batch_end(&mut self, _loss: f64, _n_seqs: usize) {}
    /// An epoch finished (validation included).
    fn epoch_end(&mut self, _record: &EpochRecord, _state: &TrainState) {}
    /// `train.replan` changed `train.epochs` to this, from the measured epoch time.
    fn on_replan(&mut self, _epochs: usize) {}
}

/// An observer that shows nothing.
#[derive(Debug, Default)]
pub struct Silent;
impl Observer for Silent {}

/// A model under training, with its optimizer and loop state.
pub struct Trainer {
    cfg: RunConfig,
    /// The model, its item table and objective, and the catalog it is for.
    rec: Recommender,
    /// Sampling weight of each item's domain (empty: all 1).
    item_weight: Vec<f64>,
    opt: Optimizer,
    state: TrainState,
    best: Vec<(String, Tensor)>,
    device: Device,
    /// Data-parallel group, when training over several processes.
    dp: Option<Box<dyn DataParallel>>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer").field("cfg", &self.cfg).field("state", &self.state).finish()
    }
}

/// A detached copy of every variable, sorted by name (the best weights kept in memory).
pub(crate) fn copy_vars(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

impl Trainer {
    /// A fresh model for the catalog described by `fingerprint`.
    pub fn new(cfg: RunConfig, fingerprint: DatasetFingerprint, device: Device) -> Result<Trainer> {
        Trainer::with_content(cfg, fingerprint, None, device)
    }

    /// A fresh model whose items come from an item tower over `content` when the run has `[item_tower]` (the
    /// content is then required; without `[item_tower]` it must be `None`).
    pub fn with_content(
        cfg: RunConfig,
        fingerprint: DatasetFingerprint,
        content: Option<&ItemContent>,
        device: Device,
    ) -> Result<Trainer> {
        cfg.validate(Path::new("<run config>"))?;
        m6rec_tensor::seed(cfg.train.seed);
        let rec = Recommender::init(cfg.recommender(), fingerprint, content, device)?;
        let vs = &rec.vs;
        let opt = Optimizer::new(vs, &cfg.optim);
        let best = copy_vars(vs);
        Ok(Trainer { cfg, rec, item_weight: Vec::new(), opt, state: TrainState::default(), best, device, dp: None })
    }

    /// Continues from a checkpoint directory written by [`Trainer::fit`], for the same dataset.
    pub fn resume(dir: &Path, fingerprint: &DatasetFingerprint, device: Device) -> Result<Trainer> {
        Trainer::resume_with_content(dir, fingerprint, None, device)
    }

    /// [`Trainer::resume`] for a run with an item tower (give the same content it was trained with).
    pub fn resume_with_content(
        dir: &Path,
        fingerprint: &DatasetFingerprint,
        content: Option<&ItemContent>,
        device: Device,
    ) -> Result<Trainer> {
        let ck = checkpoint::load_config(dir)?;
        ck.dataset.check(fingerprint, dir)?;
        let mut t = Trainer::with_content(ck.run, ck.dataset, content, device)?;
        checkpoint::load_weights(&mut t.rec.vs, dir, "model.safetensors")?;
        t.best = copy_vars(&t.rec.vs);
        checkpoint::load_weights(&mut t.rec.vs, dir, "last.safetensors")?;
        let p = dir.join("optim.safetensors");
        m6rec_recommender::saved::verify_checksum(dir, "optim.safetensors")?;
        let optim = Tensor::read_safetensors(&p)
            .map_err(|e| Error::Checkpoint { path: dir.to_path_buf(), reason: format!("optim.safetensors: {e}") })?;
        t.opt.load_state(&optim)?;
        t.state = checkpoint::read_json(dir, "state.json")?;
        Ok(t)
    }

    /// Starts from the weights of a model trained on another catalog (checkpoint `dir`): every variable whose name
    /// and shape match is copied (the sequence model, the tower's projections, fusion and encoders); catalog-sized
    /// tables keep their fresh initialisation. Returns `(copied, skipped)` names.
    pub fn init_from(&mut self, dir: &Path) -> Result<(Vec<String>, Vec<String>)> {
        let out = self.rec.init_from(dir)?;
        self.best = copy_vars(&self.rec.vs);
        Ok(out)
    }

    /// Parameter-efficient training: only the variables for which `train` is true keep their gradients; every other
    /// variable is frozen (the optimizer is rebuilt over what is left). Returns `(trainable, total)` elements.
    ///
    /// Variables the model never reads here: with an item tower, the sequence model's own id table (the tower gives
    /// the item vectors). They are frozen and not counted.
    pub fn freeze_except(&mut self, train: impl Fn(&str) -> bool) -> (i64, i64) {
        let (mut trainable, mut total) = (0, 0);
        for (name, var) in self.rec.vs.variables() {
            if self.rec.items.is_some() && name == "model.item_emb.weight" {
                let _ = var.shallow_clone().set_requires_grad(false);
                continue;
            }
            let n = var.numel() as i64;
            total += n;
            if train(&name) && var.requires_grad() {
                trainable += n;
            } else if var.requires_grad() {
                let _ = var.shallow_clone().set_requires_grad(false);
            }
        }
        self.opt = Optimizer::new(&self.rec.vs, &self.cfg.optim);
        (trainable, total)
    }

    /// Gives each catalog item's domain name (runs with `[domains]`: embeddings and sampling weights need them).
    pub fn set_item_domains(&mut self, names: &[&str]) -> Result<()> {
        if names.len() != self.rec.config.dataset.n_items {
            return Err(Error::NoData(format!(
                "{} item domains for a catalog of {} items",
                names.len(),
                self.rec.config.dataset.n_items
            )));
        }
        let Some(cfg) = &self.cfg.domains else { return Ok(()) };
        self.rec.set_item_domains(names);
        self.item_weight = names.iter().map(|n| cfg.weight(n)).collect();
        Ok(())
    }

    /// Trains data-parallel in `group` (see [`crate::parallel`]): call it on every rank, before [`Trainer::fit`].
    /// `train.batch_size` stays the global batch; each rank trains on its shard of it. Rank 0 validates, decides
    /// when to stop and writes the checkpoints; on other ranks the model after `fit` holds the last weights.
    pub fn set_data_parallel(&mut self, group: Box<dyn DataParallel>) {
        self.dp = Some(group);
    }

    /// Whether this process validates and writes checkpoints: rank 0, or a single process.
    pub fn is_leader(&self) -> bool {
        self.dp.as_ref().is_none_or(|g| g.rank() == 0)
    }

    /// The run configuration.
    pub fn config(&self) -> &RunConfig {
        &self.cfg
    }
    /// The loop state.
    pub fn state(&self) -> &TrainState {
        &self.state
    }
    /// The model (with the best weights once [`Trainer::fit`] returns).
    pub fn model(&self) -> &SeqRec {
        &self.rec.model
    }
    /// The recommender (with the best weights once [`Trainer::fit`] returns).
    pub fn recommender(&self) -> &Recommender {
        &self.rec
    }
    /// Device of the variables.
    pub fn device(&self) -> Device {
        self.device
    }
    /// A scorer over the current weights (the item tower's table is computed once, here).
    pub fn scorer(&self) -> Result<ModelScorer<'_>> {
        Ok(self.rec.scorer()?)
    }

    /// Trains until early stopping, `train.epochs` or `train.max_seconds`; checkpoints into `ckpt` after every
    /// epoch when given. On return the model holds the best weights.
    pub fn fit(&mut self, split: &Split, ckpt: Option<&Path>, obs: &mut dyn Observer) -> Result<&TrainState> {
        self.fit_until(split, ckpt, obs, usize::MAX)
    }

    /// Like [`Trainer::fit`], but returns after epoch `until_epoch` even if the run is not finished (the schedule
    /// still spans `train.epochs`), so a later [`Trainer::resume`] continues exactly where this left off.
    pub fn fit_until(
        &mut self,
        split: &Split,
        ckpt: Option<&Path>,
        obs: &mut dyn Observer,
        until_epoch: usize,
    ) -> Result<&TrainState> {
        if let Err(e) = self.fit_inner(split, ckpt, obs, until_epoch) {
            if let Some(g) = &self.dp {
                // The peers would otherwise only see a lost connection.
                g.publish_failure(&e.to_string());
            }
            return Err(e);
        }
        Ok(&self.state)
    }

    /// Makes every rank's variables rank 0's and attaches gradient averaging to the trainable ones.
    fn start_data_parallel(&mut self) -> Result<()> {
        let Some(g) = &mut self.dp else { return Ok(()) };
        let mut vars: Vec<(String, Tensor)> = self.rec.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        g.broadcast(&vars.iter().map(|(_, t)| t).collect::<Vec<_>>())?;
        let trainable: Vec<(String, Tensor)> = vars.into_iter().filter(|(_, t)| t.requires_grad()).collect();
        g.attach(&trainable)
    }

    fn fit_inner(
        &mut self,
        split: &Split,
        ckpt: Option<&Path>,
        obs: &mut dyn Observer,
        until_epoch: usize,
    ) -> Result<()> {
        let n_items = self.rec.config.dataset.n_items;
        let mut t = self.cfg.train.clone();
        let max_len = m6rec_tensor::dim::to_usize("max_len", self.cfg.model.max_len)?;
        let spans = training_spans(split, max_len, t.windows);
        if spans.is_empty() {
            return Err(Error::NoData("no user has 2 or more training events; nothing to train on".into()));
        }
        // Sequences shared with the loader thread (plain data, no tensors).
        let seqs: Arc<Vec<Vec<u32>>> = Arc::new((0..split.n_users()).map(|u| split.train(u).to_vec()).collect());
        if let Some(items) = &mut self.rec.items {
            // Items without training events (held out, or simply never interacted with) must not lean on an id
            // embedding that never trained.
            let seen: Vec<bool> = split.train_counts(n_items).iter().map(|&c| c > 0).collect();
            items.set_seen(&seen);
            let vars = self.rec.vs.variables();
            for (name, t) in &mut self.best {
                if name.ends_with("id_seen") {
                    if let Some(v) = vars.get(name.as_str()) {
                        *t = v.detach().copy();
                    }
                }
            }
        }
        // Cold-start runs: held-out items do not exist during training (they arrive later), so they are not softmax
        // candidates either; otherwise every step would push them down as negatives.
        let warm = (split.n_cold() > 0).then(|| {
            let idx: Vec<i64> = (0..n_items as u32).filter(|&i| !split.is_cold(i)).map(i64::from).collect();
            Tensor::from_slice(&idx).to_device(self.device)
        });
        // The schedule's length: epoch 1's batch count (with a token budget, later epochs differ by a few batches).
        let n_batches = epoch_batches(&spans, &seqs, &self.item_weight, &t, max_len, 1).len();
        let accumulate = self.cfg.optim.accumulate.max(1);
        let steps_per_epoch = n_batches.div_ceil(accumulate) as u64;
        let total_steps = t.epochs as u64 * steps_per_epoch;
        let mut schedule =
            Schedule::from_config(&self.cfg.optim.schedule, t.warmup_steps, total_steps, steps_per_epoch);
        let eval_opts =
            EvalOptions { filter_history: t.filter_history, batch_size: t.eval_batch_size, ..Default::default() };
        self.start_data_parallel()?;
        let (rank, world) = self.dp.as_ref().map_or((0, 1), |g| (g.rank(), g.world_size()));
        let started = Instant::now();
        let elapsed0 = self.state.elapsed;

        while !self.state.finished && self.state.epoch < t.epochs && self.state.epoch < until_epoch {
            let epoch = self.state.epoch + 1;
            // Dropout masks and sampled negatives differ between ranks (rank 0 draws what a single process would).
            m6rec_tensor::seed(t.seed.wrapping_add(epoch as u64).wrapping_add(rank as u64 * 1_000_003));
            if let Some(items) = self.rec.items.as_mut() {
                items.restart_refresh();
            }
            let planned = epoch_batches(&spans, &seqs, &self.item_weight, &t, max_len, epoch);
            let n_batches = planned.len();
            // Every rank plans the same batches and takes its shard of each, with the batch's number of targets (to
            // weight its share of the loss).
            let jobs: Vec<(Vec<Span>, usize)> = planned
                .iter()
                .map(|c| (parallel::shard(c, rank, world), c.iter().map(|s| (s.end - s.start - 1).min(max_len)).sum()))
                .collect();
            let seqs_ref = Arc::clone(&seqs);
            let batches = loader::prefetch(jobs, 4, move |(job, n_targets): &(Vec<Span>, usize)| {
                if job.is_empty() {
                    return Ok((None, *n_targets));
                }
                let rows: Vec<&[u32]> = job.iter().map(|s| &seqs_ref[s.user][s.start..s.end]).collect();
                SeqBatch::for_training(&rows, max_len, n_items).map(|b| (Some(b), *n_targets))
            });
            obs.epoch_start(epoch, n_batches);
            let epoch_start = Instant::now();
            let (mut loss_sum, mut n_seen, mut n_steps) = (0.0, 0usize, 0usize);
            let (mut n_real, mut n_computed) = (0usize, 0usize);
            // Set when the time cap ends this epoch early: the batches done, of how many.
            let mut cut: Option<(usize, usize)> = None;
            for (i, item) in batches.enumerate() {
                let (batch, n_targets) = item?;
                if i % accumulate == 0 {
                    self.opt.zero_grad();
                }
                let sync = (i + 1) % accumulate == 0 || i + 1 == n_batches;
                if sync {
                    if let Some(g) = &self.dp {
                        g.before_forward()?;
                    }
                }
                let (loss, share) = match &batch {
                    Some(batch) => {
                        let table = self.rec.step_table(&batch_items(batch))?;
                        let loss = self.rec.loss(batch, &table, warm.as_ref(), Mode::Train)?;
                        let local = batch.targets().iter().filter(|&&y| y >= 0).count();
                        (loss, local as f64 / n_targets.max(1) as f64)
                    }
                    // This rank's shard of a last, small batch is empty: it still takes part in the gradient average.
                    None => (self.zero_loss(), 0.0),
                };
                // The mean over this shard's targets, weighted by the shard's share of the batch's targets (times the
                // world size, which the gradient average divides by again): the whole batch's mean loss.
                let factor = if world > 1 { share * world as f64 } else { 1.0 } / accumulate as f64;
                let scaled = if factor == 1.0 { loss.shallow_clone() } else { &loss * factor };
                match (&self.dp, sync) {
                    (Some(g), true) => {
                        g.before_backward(&scaled)?;
                        scaled.f_backward().map_err(|e| g.explain("the gradient all-reduce", e.to_string()))?;
                    }
                    _ => scaled.f_backward().map_err(|e| Error::NoData(format!("backward failed: {e}")))?,
                }
                if sync {
                    if t.clip_norm > 0.0 {
                        m6rec_optim::clip_grad_norm(&self.rec.vs, t.clip_norm);
                    }
                    let peak = self.cfg.optim.lr * self.state.plateau.scale;
                    self.opt.step(schedule.lr(peak, self.state.step));
                    self.state.step += 1;
                }
                let l = loss.double_value(&[]);
                let rows = batch.as_ref().map_or(0, |b| b.b_sz());
                loss_sum += if world > 1 { l * share } else { l };
                n_steps += 1;
                n_seen += rows;
                if let Some(b) = &batch {
                    n_real += b.lengths().iter().sum::<usize>();
                    n_computed += b.b_sz() * b.seq_len();
                }
                obs.batch_end(l, rows);
                // The time cap is honoured after any optimizer step, not only at the end of an epoch. Ranks of a
                // data-parallel group would disagree on the moment, so they check at the epoch's end (below).
                let over = t.max_seconds > 0.0 && elapsed0 + started.elapsed().as_secs_f64() >= t.max_seconds;
                if sync && over && self.dp.is_none() && i + 1 < n_batches {
                    cut = Some((i + 1, n_batches));
                    break;
                }
            }
            if let Some(g) = &self.dp {
                // The epoch's loss (each rank summed its share of every batch's mean) and rows, over all ranks.
                let totals = Tensor::from_slice(&[loss_sum, n_seen as f64]);
                g.all_reduce_sum(&totals)?;
                loss_sum = totals.double_value(&[0]);
                n_seen = totals.double_value(&[1]).round() as usize;
            }
            let secs = epoch_start.elapsed().as_secs_f64();
            self.state.epoch = epoch;
            self.state.elapsed = elapsed0 + started.elapsed().as_secs_f64();
            let mut record = EpochRecord {
                epoch,
                loss: loss_sum / n_steps.max(1) as f64,
                valid_ndcg10: None,
                valid_hr10: None,
                seqs_per_sec: n_seen as f64 / secs.max(1e-9),
                tokens_per_sec: n_real as f64 / secs.max(1e-9),
                padding: 1.0 - n_real as f64 / n_computed.max(1) as f64,
                elapsed: self.state.elapsed,
            };
            if !record.loss.is_finite() {
                return Err(Error::NoData(format!(
                    "training diverged at epoch {epoch} (loss {}); lower optim.lr",
                    record.loss
                )));
            }
            if self.is_leader() && (epoch.is_multiple_of(t.eval_every) || epoch == t.epochs || cut.is_some()) {
                // With a moving average of the weights, validation (and the best weights kept) use the average.
                let m = self.opt.with_ema(|| evaluate(&self.scorer()?, split, Stage::Valid, eval_opts))?;
                let ndcg = m.get("ndcg", 10);
                if let ScheduleConfig::Plateau { factor, patience, min_lr } = self.cfg.optim.schedule {
                    self.state.plateau.observe(ndcg, factor, patience, self.cfg.optim.lr, min_lr);
                }
                record.valid_ndcg10 = Some(ndcg);
                record.valid_hr10 = Some(m.get("hr", 10));
                if ndcg > self.state.best_ndcg10 || self.state.best_epoch == 0 {
                    self.state.best_ndcg10 = ndcg;
                    self.state.best_epoch = epoch;
                    self.state.bad_evals = 0;
                    self.best = self.opt.with_ema(|| copy_vars(&self.rec.vs));
                } else {
                    self.state.bad_evals += 1;
                }
            }
            self.state.history.push(record.clone());
            // `train.replan`: after the second epoch the measured epoch time replaces the estimate the epochs were
            // planned with. Once only (a resume past it keeps the plan); one process only (ranks would disagree).
            if let Some(epochs) = (t.replan && epoch == 2 && self.dp.is_none() && cut.is_none())
                .then(|| replanned_epochs(t.max_seconds, self.state.elapsed / 2.0))
                .flatten()
                .filter(|&e| e != t.epochs)
            {
                let epochs = epochs.max(epoch + 1);
                t.epochs = epochs;
                self.cfg.train.epochs = epochs;
                schedule = Schedule::from_config(
                    &self.cfg.optim.schedule,
                    t.warmup_steps,
                    epochs as u64 * steps_per_epoch,
                    steps_per_epoch,
                );
                obs.on_replan(epochs);
            }
            if let Some((done, of)) = cut {
                self.stop(format!(
                    "reached train.max_seconds = {} during epoch {epoch} (after {done} of {of} batches)",
                    t.max_seconds
                ));
            } else if self.state.bad_evals >= t.patience {
                self.stop(format!("no better validation NDCG@10 for {} evaluations", t.patience));
            } else if self.state.epoch >= t.epochs {
                self.stop(format!("reached train.epochs = {}", t.epochs));
            } else if t.max_seconds > 0.0 && self.state.elapsed >= t.max_seconds {
                self.stop(format!("reached train.max_seconds = {}", t.max_seconds));
            }
            if let Some(dir) = ckpt.filter(|_| self.is_leader()) {
                self.save(dir)?;
            }
            if let Some(g) = &self.dp {
                // Rank 0 decided (validation, early stopping, time limit, plateau): every rank follows its state.
                let bytes = serde_json::to_vec(&self.state)
                    .map_err(|e| Error::Distributed(format!("encoding the loop state: {e}")))?;
                let theirs = g.broadcast_bytes(&bytes)?;
                self.state = serde_json::from_slice(&theirs)
                    .map_err(|e| Error::Distributed(format!("decoding rank 0's loop state: {e}")))?;
            }
            obs.epoch_end(&record, &self.state);
        }
        if self.is_leader() {
            self.restore_best();
        }
        Ok(())
    }

    /// A zero loss that still reaches every trainable variable (so each gets a zero gradient).
    fn zero_loss(&self) -> Tensor {
        self.rec
            .vs
            .trainable_variables()
            .iter()
            .fold(Tensor::zeros([], (tch::Kind::Float, self.device)), |total, v| total + v.sum(tch::Kind::Float) * 0.0)
    }

    fn stop(&mut self, reason: String) {
        self.state.finished = true;
        self.state.stop_reason = Some(reason);
    }

    /// Writes the checkpoint directory atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let config = CheckpointConfig {
            format_version: CHECKPOINT_VERSION,
            run: self.cfg.clone(),
            dataset: self.rec.config.dataset.clone(),
        };
        let optim = self.opt.state();
        checkpoint::save(
            dir,
            &CheckpointParts { config: &config, best: &self.best, vs: &self.rec.vs, optim: &optim, state: &self.state },
        )
    }

    fn restore_best(&mut self) {
        restore_vars(&self.rec.vs, &self.best);
    }
}

/// Copies `vars` (from [`copy_vars`]) back into the variables of `vs` with the same names.
pub(crate) fn restore_vars(vs: &nn::VarStore, vars: &[(String, Tensor)]) {
    let now = vs.variables();
    tch::no_grad(|| {
        for (name, t) in vars {
            if let Some(v) = now.get(name) {
                let mut v = v.shallow_clone();
                v.copy_(t);
            }
        }
    });
}

/// The epoch's rows under per-domain sampling weights: each span appears `floor(w)` times plus once more with
/// probability `w - floor(w)`, `w` being the weight of its newest item's domain. Without weights, `spans` as is.
fn weighted_spans(spans: &[Span], seqs: &[Vec<u32>], item_weight: &[f64], rng: &mut ChaCha8Rng) -> Vec<Span> {
    use rand::Rng;
    if item_weight.iter().all(|&w| w == 1.0) {
        return spans.to_vec();
    }
    let mut out = Vec::with_capacity(spans.len());
    for s in spans {
        let item = seqs[s.user][s.end - 1] as usize;
        let w = item_weight.get(item).copied().unwrap_or(1.0);
        let extra = usize::from(rng.random::<f64>() < w.fract());
        for _ in 0..(w.floor() as usize + extra) {
            out.push(*s);
        }
    }
    out
}

/// Pools of this many batches are sorted by length before they are cut (see [`plan_batches`]).
const POOL_BATCHES: usize = 100;

/// The epochs to plan for when epochs take `epoch_secs` and the run has `max_seconds` (0: no replanning): those that
/// fit 90% of the time when fewer than 60 do (the cosine decay then ends with the budget), else 200 and early
/// stopping (the automatic strategy's rule, `m6rec_train::strategy`).
fn replanned_epochs(max_seconds: f64, epoch_secs: f64) -> Option<usize> {
    if max_seconds <= 0.0 || epoch_secs.is_nan() || epoch_secs <= 0.0 {
        return None;
    }
    let fit = 0.9 * max_seconds / epoch_secs;
    Some(if fit < 60.0 { (fit as usize).clamp(5, 200) } else { 200 })
}

/// The batches of one epoch: rows weighted and shuffled by a generator seeded with `seed + epoch` (every rank and
/// every resume plans the same), then grouped by [`plan_batches`].
fn epoch_batches(
    spans: &[Span],
    seqs: &[Vec<u32>],
    item_weight: &[f64],
    t: &crate::config::TrainConfig,
    max_len: usize,
    epoch: usize,
) -> Vec<Vec<Span>> {
    let mut rng = ChaCha8Rng::seed_from_u64(t.seed.wrapping_add(epoch as u64));
    let mut order = weighted_spans(spans, seqs, item_weight, &mut rng);
    order.shuffle(&mut rng);
    plan_batches(&order, max_len, t.batch_size, t.batch_tokens, t.buckets, &mut rng)
}

/// Groups an epoch's shuffled rows into batches; every row lands in exactly one.
///
/// - `batch_tokens == 0`: batches of `batch_size` rows (with `buckets`: a budget of `batch_size` × the mean row
///   length positions); otherwise as many rows as fit `batch_tokens` positions (rows × the longest row's length, at
///   least one row).
/// - `buckets`: the rows are taken in pools of `POOL_BATCHES` batches, each pool sorted by length (longest first,
///   stable) and cut, and the batches of all pools shuffled with `rng`; rows of a batch then have similar lengths and
///   padding stays small: a batch at least half full also closes before a row that would make over a tenth of it
///   padding. Without it the rows are cut in order and `rng` is not used.
pub fn plan_batches(
    order: &[Span],
    max_len: usize,
    batch_size: usize,
    batch_tokens: usize,
    buckets: bool,
    rng: &mut ChaCha8Rng,
) -> Vec<Vec<Span>> {
    let len = |s: &Span| (s.end - s.start).saturating_sub(1).min(max_len).max(1);
    let batch_size = batch_size.max(1);
    // Sorted batches of `batch_size` rows would weight targets unequally (a batch of short rows averages its loss over
    // fewer targets), so buckets without a budget get the budget of an average batch: `batch_size` rows of the mean
    // length. The step count stays that of `batch_size` rows, and every target weighs the same, as in shuffled batches.
    let batch_tokens = match (buckets, batch_tokens, order.len()) {
        (true, 0, n) if n > 0 => {
            let mean = order.iter().map(len).sum::<usize>() as f64 / n as f64;
            ((batch_size as f64 * mean).round() as usize).max(max_len)
        }
        _ => batch_tokens,
    };
    let mut out = Vec::new();
    let cut = |rows: &[Span], out: &mut Vec<Vec<Span>>| {
        let (mut cur, mut widest, mut real) = (Vec::new(), 0usize, 0usize);
        for s in rows {
            let l = len(s);
            let w = widest.max(l);
            let full = match batch_tokens {
                0 => cur.len() >= batch_size,
                _ => (cur.len() + 1) * w > batch_tokens,
            };
            // Sorted rows (buckets always have a budget, see above): a batch at least half full closes before a row
            // that would make over a tenth of it padding, so a short row waits for the next batch.
            let half = cur.len() * widest * 2 >= batch_tokens;
            let padded = buckets && half && (real + l) * 10 < (cur.len() + 1) * w * 9;
            if !cur.is_empty() && (full || padded) {
                out.push(std::mem::take(&mut cur));
                (widest, real) = (0, 0);
            }
            widest = widest.max(l);
            real += l;
            cur.push(*s);
        }
        if !cur.is_empty() {
            out.push(cur);
        }
    };
    if !buckets {
        cut(order, &mut out);
        return out;
    }
    // A pool holds about POOL_BATCHES batches' worth of real positions.
    let mut start = 0;
    while start < order.len() {
        let (mut end, mut filled) = (start, 0);
        while end < order.len() && filled < POOL_BATCHES * batch_tokens {
            filled += len(&order[end]);
            end += 1;
        }
        let mut pool = order[start..end].to_vec();
        pool.sort_by_key(|s| std::cmp::Reverse(len(s)));
        cut(&pool, &mut out);
        start = end;
    }
    out.shuffle(rng);
    out
}

/// Items a training batch touches (input tokens and targets), as item indices.
fn batch_items(batch: &SeqBatch) -> Tensor {
    let items: Vec<i64> = batch
        .tokens()
        .iter()
        .filter(|&&t| t > 0)
        .map(|&t| t - 1)
        .chain(batch.targets().iter().copied().filter(|&y| y >= 0))
        .collect();
    Tensor::from_slice(&items)
}

/// A slice `start..end` of one user's training sequence, trained as one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Dense user index.
    pub user: usize,
    /// First event.
    pub start: usize,
    /// One past the last event.
    pub end: usize,
}

/// Rows of an epoch. Without `windows`, one row per user (the last `max_len + 1` events). With `windows`, each
/// sequence is cut from the end into rows of at most `max_len + 1` events that overlap by one, so every training
/// transition is in exactly one row.
pub fn training_spans(split: &Split, max_len: usize, windows: bool) -> Vec<Span> {
    let mut out = Vec::new();
    for user in 0..split.n_users() {
        let n = split.train(user).len();
        let mut end = n;
        while end >= 2 {
            let start = end.saturating_sub(max_len + 1);
            out.push(Span { user, start, end });
            if start == 0 || !windows {
                break;
            }
            end = start + 1;
        }
    }
    out
}

/// Default checkpoint directory for a dataset: `runs/<name>`.
pub fn default_run_dir(dataset_name: &str) -> PathBuf {
    PathBuf::from("runs").join(dataset_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replanning_fits_a_binding_budget_and_leaves_a_loose_one_to_early_stopping() {
        // Toys on 2 cores: 11 s epochs, 10 minutes → 49 epochs, the cosine ending with the budget.
        assert_eq!(replanned_epochs(600.0, 11.0), Some(49));
        // Scientific with a text tower was estimated at 1.5 s an epoch and took 7 s: 38 fit, not 200.
        assert_eq!(replanned_epochs(300.0, 7.0), Some(38));
        assert_eq!(replanned_epochs(300.0, 1.5), Some(200));
        assert_eq!(replanned_epochs(60.0, 30.0), Some(5), "never fewer than 5");
        assert_eq!(replanned_epochs(0.0, 3.0), None, "no budget, no replanning");
        assert_eq!(replanned_epochs(600.0, 0.0), None);
        assert_eq!(replanned_epochs(600.0, f64::NAN), None);
    }

    use proptest::prelude::*;

    /// Rows with lengths drawn like a 5-core Amazon catalog's: most users short, a long tail up to `max_len`.
    fn long_tailed_spans(n: usize, max_len: usize, seed: u64) -> Vec<Span> {
        use rand::Rng;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|user| {
                let mut len = 3;
                while len < max_len + 20 && rng.random::<f64>() < 0.8 {
                    len += 1;
                }
                Span { user, start: 0, end: len }
            })
            .collect()
    }

    fn padding_of(batches: &[Vec<Span>], max_len: usize) -> f64 {
        let len = |s: &Span| (s.end - s.start - 1).min(max_len);
        let real: usize = batches.iter().flatten().map(len).sum();
        let computed: usize = batches.iter().map(|b| b.len() * b.iter().map(len).max().unwrap_or(0)).sum();
        1.0 - real as f64 / computed as f64
    }

    proptest! {
        /// Whatever the sizes, every row of the epoch is in exactly one batch, and a token budget is never exceeded
        /// by a batch of more than one row.
        #[test]
        fn batches_keep_every_row_exactly_once(
            n in 0usize..400, max_len in 1usize..60, batch_size in 1usize..70, batch_tokens in 0usize..500,
            buckets in proptest::bool::ANY, seed in 0u64..1000,
        ) {
            let batch_tokens = if batch_tokens == 0 { 0 } else { batch_tokens.max(max_len) };
            let spans = long_tailed_spans(n, max_len, seed);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let batches = plan_batches(&spans, max_len, batch_size, batch_tokens, buckets, &mut rng);
            let len = |s: &Span| (s.end - s.start - 1).min(max_len);
            // Buckets without a budget: that of an average batch of `batch_size` rows.
            let budget = match (buckets, batch_tokens) {
                (true, 0) if n > 0 => {
                    let mean = spans.iter().map(len).sum::<usize>() as f64 / n as f64;
                    ((batch_size as f64 * mean).round() as usize).max(max_len)
                }
                _ => batch_tokens,
            };
            let mut users: Vec<usize> = batches.iter().flatten().map(|s| s.user).collect();
            users.sort_unstable();
            prop_assert_eq!(users, (0..n).collect::<Vec<_>>());
            for b in &batches {
                prop_assert!(!b.is_empty());
                if budget == 0 {
                    prop_assert!(b.len() <= batch_size);
                } else if b.len() > 1 {
                    let widest = b.iter().map(len).max().unwrap_or(0);
                    prop_assert!(b.len() * widest <= budget, "{} rows of {} > {}", b.len(), widest, budget);
                }
            }
        }
    }

    #[test]
    fn buckets_keep_padding_under_a_tenth_on_long_tailed_lengths() {
        let max_len = 50;
        let spans = long_tailed_spans(20_000, max_len, 7);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let plain = plan_batches(&spans, max_len, 128, 0, false, &mut rng);
        let by_rows = plan_batches(&spans, max_len, 128, 0, true, &mut rng);
        let by_tokens = plan_batches(&spans, max_len, 128, 2048, true, &mut rng);
        let (p0, p1, p2) =
            (padding_of(&plain, max_len), padding_of(&by_rows, max_len), padding_of(&by_tokens, max_len));
        assert!(p0 > 0.5, "the unsorted batches are mostly padding ({p0:.3}): the case this guards");
        assert!(p1 < 0.1 && p2 < 0.1, "padding with buckets: {p1:.3} (rows), {p2:.3} (tokens)");
        // Short sequences (3 to 8 training events, as on Amazon Scientific): a length boundary inside a batch of
        // 128 would pad a quarter of it; batches close there instead.
        let short: Vec<Span> = (0..8_000).map(|u| Span { user: u, start: 0, end: 4 + u * 7 % 6 }).collect();
        let short_batches = plan_batches(&short, max_len, 128, 0, true, &mut rng);
        let p3 = padding_of(&short_batches, max_len);
        assert!(p3 < 0.1, "padding on short sequences: {p3:.3}");
        // About as many steps as batches of 128 rows (a budget of 128 mean rows), plus one per length boundary.
        let steps = short_batches.len();
        assert!((8_000 / 128..8_000 / 128 + 12).contains(&steps), "{steps} batches");
        // Every batch holds about the same number of targets, so every target weighs about the same.
        let sizes: Vec<usize> = short_batches.iter().map(|b| b.iter().map(|s| s.end - s.start - 1).sum()).collect();
        let full = sizes.iter().filter(|&&t| t * 2 >= *sizes.iter().max().unwrap_or(&0)).count();
        assert!(full * 10 >= steps * 8, "most batches are at least half the largest: {sizes:?}");
        // Shuffled batches: the first batches are not all the longest rows.
        let first: Vec<usize> = by_rows.iter().take(8).map(|b| b[0].end - b[0].start).collect();
        assert!(first.iter().any(|&l| l < max_len), "{first:?}");
    }

    #[test]
    fn windows_cover_every_transition_once() {
        let split = Split::from_sequences(vec![(0..12).collect(), vec![1, 2, 3, 4], vec![7]]);
        // User 0 trains on events 0..10 (the last two are valid/test): windows of at most 4 events.
        let spans = training_spans(&split, 3, true);
        let user0: Vec<(usize, usize)> = spans.iter().filter(|s| s.user == 0).map(|s| (s.start, s.end)).collect();
        assert_eq!(user0, vec![(6, 10), (3, 7), (0, 4)]);
        let transitions: usize = user0.iter().map(|(a, b)| b - a - 1).sum();
        assert_eq!(transitions, 9);
        assert_eq!(spans.iter().filter(|s| s.user == 1).count(), 1);
        assert!(spans.iter().all(|s| s.user != 2));
        assert_eq!(training_spans(&split, 3, false).iter().filter(|s| s.user == 0).count(), 1);
    }
}
