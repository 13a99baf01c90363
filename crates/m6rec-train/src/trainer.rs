//! The training loop: shuffled epochs over users, the configured optimizer and schedule with warm-up, clipping and
//! optional gradient accumulation and weight averaging, validation NDCG@10 after each
//! epoch, early stopping, best-weights tracking, and an atomic checkpoint per epoch that `--resume` continues from.
//!
//! Reproducibility: libtorch is re-seeded with `seed + epoch` at the start of every epoch and the user order is a
//! ChaCha8 shuffle seeded the same way, so a resumed run takes exactly the steps an uninterrupted one would.
//! libtorch's generator is process-global: train one model per process (or take turns) for exact reproducibility.

use crate::batches::{batch_items, epoch_batches, training_spans, Span};
use crate::checkpoint::{self, CheckpointConfig, CheckpointParts, DatasetFingerprint, CHECKPOINT_VERSION};
use crate::config::{RunConfig, TrainConfig};
use crate::content::ItemContent;
use crate::eval::{evaluate, EvalOptions, Stage};
use crate::parallel::{self, DataParallel};
use crate::scorer::ModelScorer;
use crate::state::{EpochRecord, Observer, TrainState};
use crate::{Error, Result};
use m6rec_data::{loader, SeqBatch, Split};
use m6rec_model::SeqRec;
use m6rec_optim::{Optimizer, Schedule, ScheduleConfig};
use m6rec_recommender::Recommender;
use m6rec_tensor::Mode;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tch::{nn, Device, Tensor};

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
            return Err(Error::InvalidInput(format!(
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
        let mut plan = self.plan_fit(split)?;
        while !self.state.finished && self.state.epoch < plan.t.epochs && self.state.epoch < until_epoch {
            let epoch = self.state.epoch + 1;
            let totals = self.train_epoch(&plan, epoch, obs)?;
            self.state.epoch = epoch;
            self.state.elapsed = plan.elapsed();
            let mut record = totals.record(epoch, self.state.elapsed);
            if !record.loss.is_finite() {
                return Err(Error::Diverged { epoch, loss: record.loss });
            }
            if self.is_leader()
                && (epoch.is_multiple_of(plan.t.eval_every) || epoch == plan.t.epochs || totals.cut.is_some())
            {
                self.validate(split, plan.eval_opts, &mut record)?;
            }
            self.state.history.push(record.clone());
            if totals.cut.is_none() {
                self.replan(&mut plan, epoch, obs);
            }
            self.decide_stop(&plan.t, epoch, totals.cut);
            if let Some(dir) = ckpt.filter(|_| self.is_leader()) {
                self.save(dir)?;
            }
            self.follow_leader()?;
            obs.epoch_end(&record, &self.state);
        }
        if self.is_leader() {
            self.restore_best();
        }
        Ok(())
    }

    /// Everything an epoch needs that stays fixed over the run (but the epochs `train.replan` may change), then
    /// the data-parallel start.
    fn plan_fit(&mut self, split: &Split) -> Result<FitPlan> {
        let n_items = self.rec.config.dataset.n_items;
        let t = self.cfg.train.clone();
        let max_len = m6rec_tensor::dim::to_usize("max_len", self.cfg.model.max_len)?;
        let spans = training_spans(split, max_len, t.windows);
        if spans.is_empty() {
            return Err(Error::NoData("no user has 2 or more training events; nothing to train on".into()));
        }
        // Sequences shared with the loader thread (plain data, no tensors).
        let seqs: Arc<Vec<Vec<u32>>> = Arc::new((0..split.n_users()).map(|u| split.train(u).to_vec()).collect());
        self.mark_seen_items(split);
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
        let schedule = Schedule::from_config(&self.cfg.optim.schedule, t.warmup_steps, total_steps, steps_per_epoch);
        let eval_opts =
            EvalOptions { filter_history: t.filter_history, batch_size: t.eval_batch_size, ..Default::default() };
        self.start_data_parallel()?;
        let (rank, world) = self.dp.as_ref().map_or((0, 1), |g| (g.rank(), g.world_size()));
        Ok(FitPlan {
            t,
            max_len,
            n_items,
            spans,
            seqs,
            warm,
            accumulate,
            steps_per_epoch,
            schedule,
            eval_opts,
            rank,
            world,
            started: Instant::now(),
            elapsed0: self.state.elapsed,
        })
    }

    /// Items without training events (held out, or simply never interacted with) must not lean on an id embedding
    /// that never trained: the item tower is told which items training saw (and the best weights kept follow).
    fn mark_seen_items(&mut self, split: &Split) {
        let n_items = self.rec.config.dataset.n_items;
        let Some(items) = &mut self.rec.items else { return };
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

    /// One pass over the epoch's batches (cut short by the time cap after an optimizer step).
    fn train_epoch(&mut self, plan: &FitPlan, epoch: usize, obs: &mut dyn Observer) -> Result<EpochTotals> {
        let t = &plan.t;
        // Dropout masks and sampled negatives differ between ranks (rank 0 draws what a single process would).
        m6rec_tensor::seed(t.seed.wrapping_add(epoch as u64).wrapping_add(plan.rank as u64 * 1_000_003));
        if let Some(items) = self.rec.items.as_mut() {
            items.restart_refresh();
        }
        let planned = epoch_batches(&plan.spans, &plan.seqs, &self.item_weight, t, plan.max_len, epoch);
        let n_batches = planned.len();
        let batches = plan.prefetch(&planned);
        obs.epoch_start(epoch, n_batches);
        let epoch_start = Instant::now();
        let mut totals = EpochTotals::default();
        for (i, item) in batches.enumerate() {
            let (batch, n_targets) = item?;
            let sync = (i + 1) % plan.accumulate == 0 || i + 1 == n_batches;
            let (l, share) = self.step(plan, i, sync, batch.as_ref(), n_targets)?;
            totals.add(l, share, plan.world, batch.as_ref());
            obs.batch_end(l, batch.as_ref().map_or(0, |b| b.b_sz()));
            // The time cap is honoured after any optimizer step, not only at the end of an epoch. Ranks of a
            // data-parallel group would disagree on the moment, so they check at the epoch's end.
            let over = t.max_seconds > 0.0 && plan.elapsed() >= t.max_seconds;
            if sync && over && self.dp.is_none() && i + 1 < n_batches {
                totals.cut = Some((i + 1, n_batches));
                break;
            }
        }
        if let Some(g) = &self.dp {
            // The epoch's loss (each rank summed its share of every batch's mean) and rows, over all ranks.
            let sums = Tensor::from_slice(&[totals.loss_sum, totals.n_seen as f64]);
            g.all_reduce_sum(&sums)?;
            totals.loss_sum = sums.double_value(&[0]);
            totals.n_seen = sums.double_value(&[1]).round() as usize;
        }
        totals.secs = epoch_start.elapsed().as_secs_f64();
        Ok(totals)
    }

    /// Forward and backward of batch `i` (this rank's shard, `None` when empty) and, on `sync`, the optimizer step.
    /// Returns the batch's loss and this shard's share of its `n_targets` targets.
    fn step(
        &mut self,
        plan: &FitPlan,
        i: usize,
        sync: bool,
        batch: Option<&SeqBatch>,
        n_targets: usize,
    ) -> Result<(f64, f64)> {
        if i.is_multiple_of(plan.accumulate) {
            self.opt.zero_grad();
        }
        if sync {
            if let Some(g) = &self.dp {
                g.before_forward()?;
            }
        }
        let (loss, share) = match batch {
            Some(batch) => {
                let table = self.rec.step_table(&batch_items(batch))?;
                let loss = self.rec.loss(batch, &table, plan.warm.as_ref(), Mode::Train)?;
                let local = batch.targets().iter().filter(|&&y| y >= 0).count();
                (loss, local as f64 / n_targets.max(1) as f64)
            }
            // This rank's shard of a last, small batch is empty: it still takes part in the gradient average.
            None => (self.zero_loss(), 0.0),
        };
        // The mean over this shard's targets, weighted by the shard's share of the batch's targets (times the world
        // size, which the gradient average divides by again): the whole batch's mean loss.
        let factor = if plan.world > 1 { share * plan.world as f64 } else { 1.0 } / plan.accumulate as f64;
        let scaled = if factor == 1.0 { loss.shallow_clone() } else { &loss * factor };
        match (&self.dp, sync) {
            (Some(g), true) => {
                g.before_backward(&scaled)?;
                scaled.f_backward().map_err(|e| g.explain("the gradient all-reduce", e.to_string()))?;
            }
            _ => scaled.f_backward().map_err(|e| Error::Backward(e.to_string()))?,
        }
        if sync {
            if plan.t.clip_norm > 0.0 {
                m6rec_optim::clip_grad_norm(&self.rec.vs, plan.t.clip_norm);
            }
            let peak = self.cfg.optim.lr * self.state.plateau.scale;
            self.opt.step(plan.schedule.lr(peak, self.state.step));
            self.state.step += 1;
        }
        Ok((loss.double_value(&[]), share))
    }

    /// Validation NDCG@10 and HR@10 into `record`; the plateau schedule, early-stopping counters and best weights
    /// follow it. With a moving average of the weights, validation (and the best weights kept) use the average.
    fn validate(&mut self, split: &Split, opts: EvalOptions, record: &mut EpochRecord) -> Result<()> {
        let m = self.opt.with_ema(|| evaluate(&self.scorer()?, split, Stage::Valid, opts))?;
        let ndcg = m.get("ndcg", 10);
        if let ScheduleConfig::Plateau { factor, patience, min_lr } = self.cfg.optim.schedule {
            self.state.plateau.observe(ndcg, factor, patience, self.cfg.optim.lr, min_lr);
        }
        record.valid_ndcg10 = Some(ndcg);
        record.valid_hr10 = Some(m.get("hr", 10));
        if ndcg > self.state.best_ndcg10 || self.state.best_epoch == 0 {
            self.state.best_ndcg10 = ndcg;
            self.state.best_epoch = record.epoch;
            self.state.bad_evals = 0;
            self.best = self.opt.with_ema(|| copy_vars(&self.rec.vs));
        } else {
            self.state.bad_evals += 1;
        }
        Ok(())
    }

    /// `train.replan`: after the second epoch the measured epoch time replaces the estimate the epochs were planned
    /// with. Once only (a resume past it keeps the plan); one process only (ranks would disagree).
    fn replan(&mut self, plan: &mut FitPlan, epoch: usize, obs: &mut dyn Observer) {
        let t = &plan.t;
        let Some(epochs) = (t.replan && epoch == 2 && self.dp.is_none())
            .then(|| replanned_epochs(t.max_seconds, self.state.elapsed / 2.0))
            .flatten()
            .filter(|&e| e != t.epochs)
        else {
            return;
        };
        let epochs = epochs.max(epoch + 1);
        plan.t.epochs = epochs;
        self.cfg.train.epochs = epochs;
        plan.schedule = Schedule::from_config(
            &self.cfg.optim.schedule,
            plan.t.warmup_steps,
            epochs as u64 * plan.steps_per_epoch,
            plan.steps_per_epoch,
        );
        obs.on_replan(epochs);
    }

    /// Ends the run when the time cap cut this epoch, early stopping, the epochs or the time cap say so.
    fn decide_stop(&mut self, t: &TrainConfig, epoch: usize, cut: Option<(usize, usize)>) {
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
    }

    /// Data-parallel: rank 0 decided (validation, early stopping, time limit, plateau); every rank takes its state.
    fn follow_leader(&mut self) -> Result<()> {
        let Some(g) = &self.dp else { return Ok(()) };
        let bytes =
            serde_json::to_vec(&self.state).map_err(|e| Error::Distributed(format!("encoding the loop state: {e}")))?;
        let theirs = g.broadcast_bytes(&bytes)?;
        self.state = serde_json::from_slice(&theirs)
            .map_err(|e| Error::Distributed(format!("decoding rank 0's loop state: {e}")))?;
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
        // The curves are a picture of `state.json`: when they cannot be drawn, the checkpoint goes without them.
        let files: Vec<(&str, String)> = match crate::plot::training_curves_svg(&self.state.history) {
            Ok(svg) => vec![("curves.svg", svg)],
            Err(e) => {
                tracing::warn!(
                    "{}: training curves not drawn ({e}); the checkpoint is saved without them",
                    dir.display()
                );
                Vec::new()
            }
        };
        let parts = CheckpointParts {
            config: &config,
            best: &self.best,
            vs: &self.rec.vs,
            optim: &optim,
            state: &self.state,
            files: &files,
        };
        checkpoint::save(dir, &parts)
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

/// What [`Trainer::fit`] fixes before its first epoch.
struct FitPlan {
    /// `[train]`, with the epochs `train.replan` may change.
    t: TrainConfig,
    max_len: usize,
    n_items: usize,
    spans: Vec<Span>,
    /// Users' training sequences, shared with the loader thread (plain data, no tensors).
    seqs: Arc<Vec<Vec<u32>>>,
    /// The softmax candidates of a cold-start run (items held out of training are not).
    warm: Option<Tensor>,
    accumulate: usize,
    steps_per_epoch: u64,
    schedule: Schedule,
    eval_opts: EvalOptions,
    rank: usize,
    world: usize,
    started: Instant,
    /// Training seconds before this call (a resumed run).
    elapsed0: f64,
}

/// A batch built by the loader: this rank's shard (`None` when empty) and the whole batch's target count.
type Built = m6rec_data::Result<(Option<SeqBatch>, usize)>;

impl FitPlan {
    /// Training seconds over all resumes.
    fn elapsed(&self) -> f64 {
        self.elapsed0 + self.started.elapsed().as_secs_f64()
    }

    /// The epoch's batches, built ahead on the loader thread. Every rank plans the same batches and takes its
    /// shard of each, with the batch's number of targets (to weight its share of the loss).
    fn prefetch(&self, planned: &[Vec<Span>]) -> loader::Prefetch<Built> {
        let (max_len, n_items) = (self.max_len, self.n_items);
        let jobs: Vec<(Vec<Span>, usize)> = planned
            .iter()
            .map(|c| {
                let n_targets = c.iter().map(|s| (s.end - s.start - 1).min(max_len)).sum();
                (parallel::shard(c, self.rank, self.world), n_targets)
            })
            .collect();
        let seqs = Arc::clone(&self.seqs);
        loader::prefetch(jobs, 4, move |(job, n_targets): &(Vec<Span>, usize)| {
            if job.is_empty() {
                return Ok((None, *n_targets));
            }
            let rows: Vec<&[u32]> = job.iter().map(|s| &seqs[s.user][s.start..s.end]).collect();
            SeqBatch::for_training(&rows, max_len, n_items).map(|b| (Some(b), *n_targets))
        })
    }
}

/// Sums over one epoch's batches.
#[derive(Default)]
struct EpochTotals {
    loss_sum: f64,
    n_seen: usize,
    n_steps: usize,
    /// Positions that carry a target, and positions computed.
    n_real: usize,
    n_computed: usize,
    secs: f64,
    /// Set when the time cap ended the epoch early: the batches done, of how many.
    cut: Option<(usize, usize)>,
}

impl EpochTotals {
    fn add(&mut self, loss: f64, share: f64, world: usize, batch: Option<&SeqBatch>) {
        self.loss_sum += if world > 1 { loss * share } else { loss };
        self.n_steps += 1;
        if let Some(b) = batch {
            self.n_seen += b.b_sz();
            self.n_real += b.lengths().iter().sum::<usize>();
            self.n_computed += b.b_sz() * b.seq_len();
        }
    }

    fn record(&self, epoch: usize, elapsed: f64) -> EpochRecord {
        let secs = self.secs.max(1e-9);
        EpochRecord {
            epoch,
            loss: self.loss_sum / self.n_steps.max(1) as f64,
            valid_ndcg10: None,
            valid_hr10: None,
            seqs_per_sec: self.n_seen as f64 / secs,
            tokens_per_sec: self.n_real as f64 / secs,
            padding: 1.0 - self.n_real as f64 / self.n_computed.max(1) as f64,
            elapsed,
        }
    }
}

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
}
