//! Generative retrieval over semantic IDs (`[generative]` of a run file): items get codes from their content
//! ([`m6rec_semantic`]), a [`CodeRec`](m6rec_model::CodeRec) reads each history as its items' codes and learns to generate the next item's
//! code, and recommendation is beam search constrained to the codes that exist.
//!
//! Evaluation stays full-ranking-equivalent: the beam's items, in beam order, are the ranking; every other item of
//! the catalog scores `-inf` (ranks after them, ties counted against the target), so a target outside the beam is a
//! miss. The split, the seen-item handling and the metrics are those of every other model.

use crate::batches::{training_spans, Span};
use crate::scorer::Scorer;
use crate::trainer::{copy_vars, restore_vars};
use crate::{Error, Result, RunConfig};
use m6rec_data::Split;
use m6rec_optim::{Optimizer, Schedule};
use m6rec_recommender::generative::{GenerativeModel, FILES};
use m6rec_recommender::saved;
use m6rec_semantic::{Beam, SemanticIds};
use m6rec_tensor::Mode;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;
use tch::{Device, Tensor};

pub use m6rec_recommender::generative::{GenerativeConfig, GENERATIVE_DIR};

/// The optimizer, schedule and generator of a [`Generative::fit`] call.
struct GenLoop {
    opt: Optimizer,
    schedule: Schedule,
    rng: ChaCha8Rng,
    step: u64,
    started: Instant,
}

/// One epoch of a generative run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenEpoch {
    /// 1-based.
    pub epoch: usize,
    /// Mean training loss (per code position).
    pub loss: f64,
    /// Validation NDCG@10 on the sampled users.
    pub valid_ndcg10: f64,
    /// Validation HR@10 on the sampled users.
    pub valid_hr10: f64,
    /// Training sequences per second.
    pub seqs_per_sec: f64,
    /// Real code tokens per second.
    pub tokens_per_sec: f64,
    /// Seconds since the run started.
    pub elapsed: f64,
}

/// What [`Generative::fit`] reports as it goes.
#[derive(Debug)]
pub enum Progress<'a> {
    /// A step of `epoch` finished: `done` of `total` batches.
    Step {
        /// 1-based epoch.
        epoch: usize,
        /// Batches done.
        done: usize,
        /// Batches in the epoch.
        total: usize,
        /// This step's loss.
        loss: f64,
    },
    /// An epoch finished.
    Epoch(&'a GenEpoch),
}

#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    run: RunConfig,
    n_items: usize,
    widths: Vec<usize>,
    history: Vec<GenEpoch>,
    best_epoch: usize,
    stop_reason: Option<String>,
    /// Where the loop stands (absent in checkpoints written before `--resume` existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resume: Option<ResumePoint>,
    /// The dataset directory it was trained on, when known (what `m6rec serve` opens without `--data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<std::path::PathBuf>,
}

/// Where a run's loop stands after an epoch: what `--resume` continues from. The current weights and the
/// optimizer's state are in `resume.safetensors` (`var.*`, `opt.*`); `model.safetensors` holds the best weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ResumePoint {
    /// Epochs done.
    epoch: usize,
    /// Optimizer steps done.
    step: u64,
    /// Epochs since the best validation.
    bad: usize,
    /// The best validation NDCG@10 so far.
    best_ndcg: Option<f64>,
    /// The shuffling generator's word position (decimal: a u128 does not fit a JSON number).
    rng_pos: String,
    /// Seconds of training before the pause (the time cap counts them).
    elapsed: f64,
    /// The run ended (early stop, epochs or time cap): nothing to resume.
    finished: bool,
}

/// The best validation NDCG@10 so far and that epoch's weights.
type Best = Option<(f64, Vec<(String, Tensor)>)>;

/// The state file `--resume` reads besides the checkpoint.
const RESUME_FILE: &str = "resume.safetensors";

/// The content semantic IDs are fitted on: every item's text embedding from the feature cache (`features`, default
/// `<data>.features`, built by `m6rec features --text-model`), `[n_items, dim]`, zero for items without text.
pub fn text_content(data: &Path, features: Option<&Path>, ds: &m6rec_data::Dataset) -> Result<Tensor> {
    let cache = features.map(Path::to_path_buf).unwrap_or_else(|| m6rec_features::default_cache_dir(data));
    let feats = m6rec_features::Features::load(&cache, ds)?;
    if feats.config.text.is_none() {
        return Err(Error::InvalidInput(format!(
            "{} has no text embeddings, and semantic IDs are fitted on them: run `m6rec features {} --text-model \
             .m6rec/models/all-MiniLM-L6-v2`",
            cache.display(),
            data.display()
        )));
    }
    let n = u32::try_from(ds.n_items())
        .map_err(|_| Error::InvalidInput("the catalog exceeds 32-bit item indices".into()))?;
    let all: Vec<u32> = (0..n).collect();
    Ok(feats.texts(&all)?)
}

/// A generative retrieval model being trained: the inference model ([`GenerativeModel`]: codes, trie, weights),
/// its run and its training history.
#[derive(Debug)]
pub struct Generative {
    run: RunConfig,
    inner: GenerativeModel,
    /// Epochs so far.
    pub history: Vec<GenEpoch>,
    /// Epoch of the best validation NDCG@10 (its weights are the model's after [`Generative::fit`]).
    pub best_epoch: usize,
    /// Why training stopped.
    pub stop_reason: Option<String>,
    /// Where a loaded run stands ([`Generative::fit_until`] continues from there).
    resume: Option<ResumePoint>,
    /// The dataset directory, recorded in the checkpoint ([`Generative::set_data_path`]).
    data: Option<std::path::PathBuf>,
}

impl Generative {
    /// A fresh model for a catalog whose items' content is `content` (`[n_items, d]`, catalog order): fits the
    /// semantic IDs, then creates the model (seeded with `run.train.seed`).
    pub fn init(run: RunConfig, content: &Tensor, device: Device) -> Result<Generative> {
        let gen = run.generative.clone().ok_or_else(|| Error::Config {
            path: "<run config>".into(),
            reason: "the run has no [generative] table".into(),
        })?;
        gen.validate().map_err(|reason| Error::Config { path: "[generative]".into(), reason })?;
        m6rec_tensor::seed(run.train.seed);
        let ids = SemanticIds::fit(content, &gen.semantic_ids).map_err(semantic)?;
        let inner = GenerativeModel::new(&run.model, gen, ids, device)?;
        Ok(Generative { run, inner, history: Vec::new(), best_epoch: 0, stop_reason: None, resume: None, data: None })
    }

    /// The codes.
    pub fn semantic_ids(&self) -> &SemanticIds {
        self.inner.semantic_ids()
    }

    /// The run configuration.
    pub fn config(&self) -> &RunConfig {
        &self.run
    }

    /// The inference model (what `m6rec serve` loads).
    pub fn model(&self) -> &GenerativeModel {
        &self.inner
    }

    /// Items the model can recommend (the catalog, and items added with [`Generative::add_items`]).
    pub fn n_items(&self) -> usize {
        self.inner.n_items()
    }

    /// Gives items added to the catalog codes from their content (`[m, d]`, the encoder of the fit): they are
    /// recommendable at once, with no training. Fails when their collision numbers exceed the reserve.
    pub fn add_items(&mut self, content: &Tensor) -> Result<Vec<Vec<u16>>> {
        Ok(self.inner.add_items(content)?)
    }

    /// Up to `beam` items for each history, best first (constrained beam search; each history is read once, the
    /// decoder runs per beam).
    pub fn beams(&self, histories: &[&[u32]], beam: usize) -> Result<Vec<Vec<Beam>>> {
        Ok(self.inner.beams(histories, beam)?)
    }

    /// A [`Scorer`] over the catalog: the beam's items score their beam log-probability, every other item `-inf`.
    pub fn scorer(&self) -> GenerativeScorer<'_> {
        GenerativeScorer { gen: self, beam: self.inner.config().beam }
    }

    /// Trains on `split` until `train.epochs`, early stopping (`train.patience`) or `train.max_seconds`; the best
    /// epoch's weights are kept and, with `out`, checkpointed after every epoch.
    pub fn fit(&mut self, split: &Split, out: Option<&Path>, progress: &mut dyn FnMut(Progress<'_>)) -> Result<()> {
        self.fit_until(split, out, None, progress)
    }

    /// [`Generative::fit`], pausing after epoch `until` (the checkpoint then holds what [`Generative::resume`]
    /// continues from). A model from [`Generative::resume`] continues where it stopped: the same batches, dropout
    /// masks and optimizer state as a run that never stopped.
    pub fn fit_until(
        &mut self,
        split: &Split,
        out: Option<&Path>,
        until: Option<usize>,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<()> {
        let t = self.run.train.clone();
        let spans = training_spans(split, self.inner.model().max_len(), t.windows);
        if spans.is_empty() {
            return Err(Error::NoData("no user has two training events".into()));
        }
        let steps_per_epoch = spans.len().div_ceil(t.batch_size.max(1)) as u64;
        let mut run = GenLoop {
            opt: Optimizer::new(self.inner.vs(), &self.run.optim),
            schedule: Schedule::from_config(
                &self.run.optim.schedule,
                t.warmup_steps,
                t.epochs as u64 * steps_per_epoch,
                steps_per_epoch,
            ),
            rng: ChaCha8Rng::seed_from_u64(t.seed),
            step: 0,
            started: Instant::now(),
        };
        // The validation sample: the same users every epoch (and after a resume).
        let mut valid_users: Vec<usize> = (0..split.n_users()).filter(|&u| split.valid(u).is_some()).collect();
        valid_users.shuffle(&mut run.rng);
        valid_users.truncate(self.inner.config().valid_users.max(1));
        let (first, mut best, mut bad) = match self.resume.take() {
            None => (1, None, 0),
            Some(point) => self.continue_from(&point, out, &mut run)?,
        };
        self.stop_reason = None;
        for epoch in first..=t.epochs {
            // Dropout masks from a generator seeded per epoch: a resumed run draws what an uninterrupted one would.
            m6rec_tensor::seed(t.seed.wrapping_add(epoch as u64));
            let (mut record, cut) = self.train_epoch(split, &spans, &mut run, epoch, progress)?;
            let (ndcg, hr) = self.validate(split, &valid_users, t.filter_history)?;
            (record.valid_ndcg10, record.valid_hr10) = (ndcg, hr);
            self.history.push(record.clone());
            progress(Progress::Epoch(&record));
            if best.as_ref().is_none_or(|(b, _)| ndcg > *b) {
                best = Some((ndcg, copy_vars(self.inner.vs())));
                self.best_epoch = epoch;
                bad = 0;
            } else {
                bad += 1;
            }
            if bad >= t.patience.max(1) && !cut {
                self.stop_reason = Some(format!("no better validation NDCG@10 for {bad} epochs"));
            }
            let finished = cut || self.stop_reason.is_some() || epoch == t.epochs;
            if let Some(dir) = out {
                let point = self.point(&run, epoch, bad, best.as_ref().map(|(b, _)| *b), finished);
                self.save_with(dir, best.as_ref().map(|(_, v)| v.as_slice()), Some((&point, &run)))?;
            }
            if finished {
                break;
            }
            if until == Some(epoch) {
                self.stop_reason = Some(format!("paused after epoch {epoch} (--until-epoch); --resume continues"));
                return Ok(());
            }
        }
        if self.stop_reason.is_none() {
            self.stop_reason = Some(format!("ran train.epochs = {}", t.epochs));
        }
        if let Some((_, vars)) = &best {
            restore_vars(self.inner.vs(), vars);
        }
        if let Some(dir) = out {
            let epoch = self.history.last().map_or(0, |e| e.epoch);
            let point = self.point(&run, epoch, bad, best.as_ref().map(|(b, _)| *b), true);
            self.save_with(dir, None, Some((&point, &run)))?;
        }
        Ok(())
    }

    fn point(&self, run: &GenLoop, epoch: usize, bad: usize, best_ndcg: Option<f64>, finished: bool) -> ResumePoint {
        ResumePoint {
            epoch,
            step: run.step,
            bad,
            best_ndcg,
            rng_pos: run.rng.get_word_pos().to_string(),
            elapsed: run.started.elapsed().as_secs_f64(),
            finished,
        }
    }

    /// Restores the loop of a paused run from `out`: the best weights (the model's now) are kept aside, the
    /// current ones, the optimizer's state, the step, the generator and the clock come back. Returns the first
    /// epoch to run, the best so far and the epochs since it.
    fn continue_from(
        &mut self,
        point: &ResumePoint,
        out: Option<&Path>,
        run: &mut GenLoop,
    ) -> Result<(usize, Best, usize)> {
        let dir = out.ok_or_else(|| Error::InvalidInput("a resumed run needs its checkpoint directory".into()))?;
        let bad_file = |reason: String| Error::Checkpoint { path: dir.to_path_buf(), reason };
        if point.finished {
            return Err(bad_file(format!(
                "the run finished after epoch {} ({}): nothing to resume",
                point.epoch,
                self.stop_reason.as_deref().unwrap_or("ended")
            )));
        }
        saved::verify_checksum(dir, RESUME_FILE)?;
        let state =
            Tensor::read_safetensors(dir.join(RESUME_FILE)).map_err(|e| bad_file(format!("{RESUME_FILE}: {e}")))?;
        let best = point.best_ndcg.map(|b| (b, copy_vars(self.inner.vs())));
        let part = |prefix: &str| -> Vec<(String, Tensor)> {
            state
                .iter()
                .filter_map(|(n, t)| n.strip_prefix(prefix).map(|k| (k.to_string(), t.shallow_clone())))
                .collect()
        };
        let vars = part("var.");
        if vars.len() != self.inner.vs().variables().len() {
            return Err(bad_file(format!(
                "{RESUME_FILE} holds {} variables, the model {}",
                vars.len(),
                self.inner.vs().variables().len()
            )));
        }
        restore_vars(self.inner.vs(), &vars);
        run.opt.load_state(&part("opt.")).map_err(|e| bad_file(format!("{RESUME_FILE}: {e}")))?;
        run.step = point.step;
        run.rng.set_word_pos(point.rng_pos.parse::<u128>().map_err(|e| bad_file(format!("rng_pos: {e}")))?);
        run.started = Instant::now()
            .checked_sub(std::time::Duration::from_secs_f64(point.elapsed.max(0.0)))
            .unwrap_or_else(Instant::now);
        Ok((point.epoch + 1, best, point.bad))
    }

    /// A paused generative run from its checkpoint directory, ready for [`Generative::fit_until`] with the same
    /// directory and split.
    pub fn resume(dir: &Path, device: Device) -> Result<Generative> {
        let g = Generative::load(dir, device)?;
        if g.resume.is_none() {
            return Err(Error::Checkpoint {
                path: dir.to_path_buf(),
                reason: "written before generative runs could resume: train it again".into(),
            });
        }
        Ok(g)
    }

    /// One epoch over `spans` (cut short by `train.max_seconds`: then the second value is true). The record's
    /// validation fields are left at 0.
    fn train_epoch(
        &mut self,
        split: &Split,
        spans: &[Span],
        run: &mut GenLoop,
        epoch: usize,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<(GenEpoch, bool)> {
        let t = &self.run.train;
        let (batch_size, max_seconds, clip_norm, lr) =
            (t.batch_size.max(1), t.max_seconds, t.clip_norm, self.run.optim.lr);
        let mut order = spans.to_vec();
        order.shuffle(&mut run.rng);
        // Rows of similar length together (buckets of 50 batches), then the batches shuffled.
        for chunk in order.chunks_mut(batch_size * 50) {
            chunk.sort_by_key(|s| s.end - s.start);
        }
        let mut batches: Vec<&[Span]> = order.chunks(batch_size).collect();
        batches.shuffle(&mut run.rng);
        let epoch_start = Instant::now();
        let (mut loss_sum, mut n_tokens, mut n_seqs, mut cut) = (0.0, 0usize, 0usize, false);
        let total = batches.len();
        for (i, batch) in batches.iter().enumerate() {
            let (items, real) = self.training_batch(split, batch)?;
            let loss = self.inner.model().loss(&items, Mode::Train);
            run.opt.zero_grad();
            loss.f_backward().map_err(|e| Error::Backward(e.to_string()))?;
            if clip_norm > 0.0 {
                m6rec_optim::clip_grad_norm(self.inner.vs(), clip_norm);
            }
            run.opt.step(run.schedule.lr(lr, run.step));
            run.step += 1;
            let l = loss.double_value(&[]);
            loss_sum += l;
            n_tokens += real;
            n_seqs += batch.len();
            progress(Progress::Step { epoch, done: i + 1, total, loss: l });
            if max_seconds > 0.0 && run.started.elapsed().as_secs_f64() >= max_seconds {
                self.stop_reason = Some(format!(
                    "reached train.max_seconds = {max_seconds} during epoch {epoch} (after {} of {total} batches)",
                    i + 1
                ));
                cut = true;
                loss_sum /= (i + 1) as f64;
                break;
            }
        }
        if !cut {
            loss_sum /= total.max(1) as f64;
        }
        let secs = epoch_start.elapsed().as_secs_f64().max(1e-9);
        let record = GenEpoch {
            epoch,
            loss: loss_sum,
            valid_ndcg10: 0.0,
            valid_hr10: 0.0,
            seqs_per_sec: n_seqs as f64 / secs,
            tokens_per_sec: n_tokens as f64 / secs,
            elapsed: run.started.elapsed().as_secs_f64(),
        };
        Ok((record, cut))
    }

    /// The batch's rows as items `[b, n + 1, code_len]` and the real code tokens predicted.
    fn training_batch(&self, split: &Split, batch: &[Span]) -> Result<(Tensor, usize)> {
        let rows: Vec<&[u32]> = batch.iter().map(|s| &split.train(s.user)[s.start..s.end]).collect();
        let real = rows.iter().map(|r| r.len().saturating_sub(1)).sum::<usize>() * self.inner.model().code_len();
        Ok((self.inner.item_rows(&rows)?, real))
    }

    /// NDCG@10 and HR@10 of the validation targets of `users`, from the beams.
    fn validate(&self, split: &Split, users: &[usize], filter_history: bool) -> Result<(f64, f64)> {
        let targets: Vec<_> = users.iter().filter_map(|&u| split.valid(u)).filter(|t| !t.history.is_empty()).collect();
        let (mut ndcg, mut hr) = (0.0, 0.0);
        for chunk in targets.chunks(128) {
            let histories: Vec<&[u32]> = chunk.iter().map(|t| t.history).collect();
            let beams = self.beams(&histories, self.inner.config().beam)?;
            for (t, b) in chunk.iter().zip(&beams) {
                let ranked = b.iter().map(|b| b.item).filter(|i| !filter_history || !t.history.contains(i));
                if let Some(r) = ranked.take(10).position(|i| i == t.item) {
                    hr += 1.0;
                    ndcg += 1.0 / ((r + 2) as f64).log2();
                }
            }
        }
        let n = targets.len().max(1) as f64;
        Ok((ndcg / n, hr / n))
    }

    fn save_with(
        &self,
        dir: &Path,
        best: Option<&[(String, Tensor)]>,
        loop_state: Option<(&ResumePoint, &GenLoop)>,
    ) -> Result<()> {
        let saved = Saved {
            run: self.run.clone(),
            n_items: self.inner.n_trained(),
            widths: self.inner.model().widths(),
            history: self.history.clone(),
            best_epoch: self.best_epoch,
            stop_reason: self.stop_reason.clone(),
            resume: loop_state.map(|(p, _)| p.clone()),
            data: self.data.clone(),
        };
        m6rec_tensor::atomic::write_dir(dir, GENERATIVE_DIR, |tmp| -> Result<()> {
            let json = serde_json::to_vec_pretty(&saved)
                .map_err(|e| Error::Checkpoint { path: dir.to_path_buf(), reason: e.to_string() })?;
            std::fs::write(tmp.join("generative.json"), json).map_err(crate::error::io(tmp))?;
            self.inner.write_files(tmp, best)?;
            let mut files = FILES.to_vec();
            if let Some((_, run)) = loop_state.filter(|(p, _)| !p.finished) {
                let mut state: Vec<(String, Tensor)> =
                    copy_vars(self.inner.vs()).into_iter().map(|(n, t)| (format!("var.{n}"), t)).collect();
                state.extend(run.opt.state().into_iter().map(|(n, t)| (format!("opt.{n}"), t)));
                Tensor::write_safetensors(&state, tmp.join(RESUME_FILE)).map_err(|e| Error::Checkpoint {
                    path: dir.to_path_buf(),
                    reason: format!("writing {RESUME_FILE}: {e}"),
                })?;
                files.push(RESUME_FILE);
            }
            saved::write_checksums(tmp, &files)?;
            Ok(())
        })
    }

    /// Writes the checkpoint directory (`generative.json`, `model.safetensors`, `semantic_ids.json`) atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.save_with(dir, None, None)
    }

    /// Records the dataset directory in the checkpoints this model writes (`m6rec train` gives its `--data`).
    pub fn set_data_path(&mut self, data: &Path) {
        self.data = Some(data.to_path_buf());
    }

    /// The dataset directory the checkpoint in `dir` records, if any.
    pub fn data_path(dir: &Path) -> Option<std::path::PathBuf> {
        let text = std::fs::read(dir.join("generative.json")).ok()?;
        serde_json::from_slice::<Saved>(&text).ok()?.data
    }

    /// Whether `dir` holds a generative checkpoint.
    pub fn is_checkpoint(dir: &Path) -> bool {
        GenerativeModel::is_checkpoint(dir)
    }

    /// Loads what [`Generative::save`] wrote: the inference model ([`GenerativeModel::load`]) with its run and
    /// training history.
    pub fn load(dir: &Path, device: Device) -> Result<Generative> {
        let bad = |reason: String| Error::Checkpoint { path: dir.to_path_buf(), reason };
        let inner = GenerativeModel::load(dir, device)?;
        let text = std::fs::read(dir.join("generative.json")).map_err(|e| bad(format!("generative.json: {e}")))?;
        let saved: Saved = serde_json::from_slice(&text).map_err(|e| bad(format!("generative.json: {e}")))?;
        Ok(Generative {
            run: saved.run,
            inner,
            history: saved.history,
            best_epoch: saved.best_epoch,
            stop_reason: saved.stop_reason,
            resume: saved.resume,
            data: saved.data,
        })
    }
}

/// [`Generative`] as a full-catalog [`Scorer`].
#[derive(Debug)]
pub struct GenerativeScorer<'a> {
    gen: &'a Generative,
    beam: usize,
}

impl GenerativeScorer<'_> {
    /// With another beam width.
    pub fn with_beam(self, beam: usize) -> Self {
        GenerativeScorer { beam, ..self }
    }
}

impl Scorer for GenerativeScorer<'_> {
    fn score(&self, histories: &[&[u32]]) -> Result<Tensor> {
        let beams = self.gen.beams(histories, self.beam)?;
        let n = self.gen.n_items();
        let mut scores = vec![f32::NEG_INFINITY; histories.len() * n];
        for (r, b) in beams.iter().enumerate() {
            for (rank, beam) in b.iter().enumerate() {
                // Beam order decides (log-probabilities may tie); the beam log-probability keeps magnitudes readable.
                let s = if beam.score.is_finite() { beam.score } else { -1e30 - rank as f32 };
                scores[r * n + beam.item as usize] = s;
            }
        }
        Ok(Tensor::from_slice(&scores).view([histories.len() as i64, n as i64]))
    }

    fn n_items(&self) -> usize {
        self.gen.n_items()
    }
}

fn semantic(e: m6rec_semantic::Error) -> Error {
    Error::Semantic(e)
}
