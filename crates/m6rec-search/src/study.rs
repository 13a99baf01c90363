//! The study: schedulers (plain trials, ASHA), trials and their outcomes, saved as JSON after every event.

use crate::sampler::tpe;
use crate::{Dist, Sampler, SearchError, Value};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How much each configuration gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Scheduler {
    /// Every trial trains to `max_epochs` (or its own early stop).
    Fifo,
    /// Asynchronous successive halving (Li et al. 2020): trials start with `min_epochs`; the best `1/eta` at each rung
    /// are promoted to `eta` times the epochs, up to `max_epochs`.
    #[default]
    Asha,
}

/// `[study]`: how the search runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyConfig {
    /// Default random.
    #[serde(default)]
    pub sampler: Sampler,
    /// Default asha.
    #[serde(default)]
    pub scheduler: Scheduler,
    /// Trials to start at most (0: no limit, only the time budget). Default 0.
    #[serde(default)]
    pub max_trials: usize,
    /// Wall-clock budget of the whole study in minutes, over all resumes (0: no limit). Default 30.
    #[serde(default = "d::budget")]
    pub budget_minutes: f64,
    /// Trials running at once. Default 1.
    #[serde(default = "d::one")]
    pub concurrency: usize,
    /// Seed of the sampler. Default 0.
    #[serde(default)]
    pub seed: u64,
    /// Epochs of ASHA's first rung. Default 3.
    #[serde(default = "d::min_epochs")]
    pub min_epochs: usize,
    /// Epochs of the last rung (and of every fifo trial). Default 81.
    #[serde(default = "d::max_epochs")]
    pub max_epochs: usize,
    /// ASHA's reduction factor. Default 3.
    #[serde(default = "d::eta")]
    pub eta: usize,
    /// TPE: random trials before the model takes over. Default 8.
    #[serde(default = "d::startup")]
    pub startup: usize,
}

mod d {
    pub fn budget() -> f64 {
        30.0
    }
    pub fn one() -> usize {
        1
    }
    pub fn min_epochs() -> usize {
        3
    }
    pub fn max_epochs() -> usize {
        81
    }
    pub fn eta() -> usize {
        3
    }
    pub fn startup() -> usize {
        8
    }
}

impl Default for StudyConfig {
    fn default() -> Self {
        StudyConfig {
            sampler: Sampler::default(),
            scheduler: Scheduler::default(),
            max_trials: 0,
            budget_minutes: d::budget(),
            concurrency: 1,
            seed: 0,
            min_epochs: d::min_epochs(),
            max_epochs: d::max_epochs(),
            eta: d::eta(),
            startup: d::startup(),
        }
    }
}

/// A search-space file: `[study]` settings and `[space]`, a map from dotted run-config paths (`"optim.lr"`,
/// `"model.n_layers"`) to distributions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudySpec {
    /// How the search runs.
    #[serde(default)]
    pub study: StudyConfig,
    /// What it varies.
    pub space: BTreeMap<String, Dist>,
}

impl StudySpec {
    /// Checks every setting and distribution.
    pub fn validate(&self) -> Result<(), SearchError> {
        let s = &self.study;
        if s.concurrency == 0 || s.min_epochs == 0 || s.max_epochs < s.min_epochs || s.eta < 2 {
            return Err(SearchError::Spec(format!(
                "[study] needs concurrency >= 1, 1 <= min_epochs <= max_epochs and eta >= 2 (got concurrency {}, \
                 min_epochs {}, max_epochs {}, eta {})",
                s.concurrency, s.min_epochs, s.max_epochs, s.eta
            )));
        }
        if !(s.budget_minutes >= 0.0 && s.budget_minutes.is_finite()) {
            return Err(SearchError::Spec(format!("[study] budget_minutes is {}", s.budget_minutes)));
        }
        if s.budget_minutes == 0.0 && s.max_trials == 0 {
            return Err(SearchError::Spec("[study] needs a budget_minutes or a max_trials (both are 0)".into()));
        }
        if self.space.is_empty() {
            return Err(SearchError::Spec("[space] is empty: name at least one config field to search".into()));
        }
        for (name, dist) in &self.space {
            dist.validate(name)?;
        }
        Ok(())
    }

    /// Epoch budgets of the rungs: `min_epochs * eta^k` below `max_epochs`, then `max_epochs` (fifo: only that).
    pub fn rungs(&self) -> Vec<usize> {
        let s = &self.study;
        if s.scheduler == Scheduler::Fifo {
            return vec![s.max_epochs];
        }
        let mut out = Vec::new();
        let mut r = s.min_epochs;
        while r < s.max_epochs {
            out.push(r);
            r = r.saturating_mul(s.eta);
        }
        out.push(s.max_epochs);
        out
    }
}

/// Where a trial stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Status {
    /// Training until `until_epoch`.
    Running {
        /// The epoch it stops after.
        until_epoch: usize,
    },
    /// Stopped at a rung, waiting for a promotion that may never come.
    Paused,
    /// Reached the last rung or stopped early on its own.
    Finished,
    /// Its run failed (the error is kept).
    Failed,
}

/// One finished stretch of training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Epochs trained in all.
    pub epochs: usize,
    /// Best validation metric so far.
    pub valid: f64,
    /// Whether the run ended on its own (early stopping): nothing more to promote.
    pub finished: bool,
    /// Training seconds in all.
    pub seconds: f64,
}

/// One configuration and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// 0-based, also its folder name.
    pub id: usize,
    /// Sampled values by dotted path.
    pub params: BTreeMap<String, Value>,
    /// Where it stands.
    pub status: Status,
    /// Its result at each rung it completed, in order.
    pub results: Vec<Outcome>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Study seconds when its last result (or failure) came in.
    #[serde(default)]
    pub reported_at: f64,
}

impl Trial {
    /// Its latest result.
    pub fn last(&self) -> Option<&Outcome> {
        self.results.last()
    }
}

/// A unit of work: train `trial` until `until_epoch` (continuing its checkpoint when it has one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    /// Index into [`Study::trials`].
    pub trial: usize,
    /// The epoch to stop after.
    pub until_epoch: usize,
}

/// The whole search, saved as JSON after every event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Study {
    /// The space and settings it was started with.
    pub spec: StudySpec,
    /// Every trial started so far.
    pub trials: Vec<Trial>,
    /// Study seconds spent in earlier runs of the driver.
    #[serde(default)]
    pub elapsed_before: f64,
    /// Promotions issued, by `(trial, rung index)`; never issued twice.
    #[serde(default)]
    promoted: Vec<(usize, usize)>,
}

impl Study {
    /// A new study (the spec is validated).
    pub fn new(spec: StudySpec) -> Result<Study, SearchError> {
        spec.validate()?;
        Ok(Study { spec, trials: Vec::new(), elapsed_before: 0.0, promoted: Vec::new() })
    }

    /// After a restart: how many trials were running when the driver stopped. Their jobs ([`Study::running_jobs`])
    /// must be started again (from the trial's last checkpoint) before asking for new work.
    pub fn requeue_running(&mut self) -> usize {
        self.running().count()
    }

    /// Trials running now.
    pub fn running(&self) -> impl Iterator<Item = &Trial> {
        self.trials.iter().filter(|t| matches!(t.status, Status::Running { .. }))
    }

    /// Jobs of running trials (after [`Study::requeue_running`], what a restarted driver must start first).
    pub fn running_jobs(&self) -> Vec<Job> {
        self.trials
            .iter()
            .filter_map(|t| match t.status {
                Status::Running { until_epoch } => Some(Job { trial: t.id, until_epoch }),
                _ => None,
            })
            .collect()
    }

    fn rung_of(&self, epochs: usize) -> Option<usize> {
        self.spec.rungs().iter().position(|&r| r == epochs)
    }

    /// The next job, or `None` when nothing can start now (all trials are started and none can be promoted; the
    /// driver waits for running trials, then stops). A returned job's trial is marked running.
    pub fn next_job(&mut self) -> Option<Job> {
        if let Some(job) = self.promotion() {
            self.promoted.push((job.trial, self.rung_of(job.until_epoch).unwrap_or(0)));
            self.trials[job.trial].status = Status::Running { until_epoch: job.until_epoch };
            return Some(job);
        }
        let s = &self.spec.study;
        if s.max_trials > 0 && self.trials.len() >= s.max_trials {
            return None;
        }
        let id = self.trials.len();
        let params = self.sample(id);
        let until_epoch = self.spec.rungs()[0];
        self.trials.push(Trial {
            id,
            params,
            status: Status::Running { until_epoch },
            results: Vec::new(),
            error: None,
            reported_at: 0.0,
        });
        Some(Job { trial: id, until_epoch })
    }

    /// ASHA: the best paused trial at the highest rung whose top `1/eta` it belongs to.
    fn promotion(&self) -> Option<Job> {
        let rungs = self.spec.rungs();
        let eta = self.spec.study.eta;
        for k in (0..rungs.len().saturating_sub(1)).rev() {
            // Every trial that completed rung k (whatever it did after), ranked by its result there.
            let mut at: Vec<(usize, f64)> = self
                .trials
                .iter()
                .filter_map(|t| t.results.iter().find(|o| o.epochs == rungs[k]).map(|o| (t.id, o.valid)))
                .collect();
            at.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let top = at.len() / eta;
            for &(id, _) in at.iter().take(top) {
                let t = &self.trials[id];
                let waiting = t.status == Status::Paused && t.last().is_some_and(|o| o.epochs == rungs[k]);
                if waiting && !self.promoted.contains(&(id, k + 1)) {
                    return Some(Job { trial: id, until_epoch: rungs[k + 1] });
                }
            }
        }
        None
    }

    fn sample(&self, id: usize) -> BTreeMap<String, Value> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.spec.study.seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let scored: Vec<(&Trial, f64)> =
            self.trials.iter().filter_map(|t| t.last().map(|o| (t, o.valid))).filter(|(_, v)| v.is_finite()).collect();
        if self.spec.study.sampler == Sampler::Tpe && scored.len() >= self.spec.study.startup.max(2) {
            let params = tpe(&self.spec.space, &scored, &mut rng);
            // A configuration already tried teaches nothing new (TPE's argmax can repeat itself): draw at random.
            if !self.trials.iter().any(|t| t.params == params) {
                return params;
            }
        }
        self.spec.space.iter().map(|(k, d)| (k.clone(), d.sample(&mut rng))).collect()
    }

    /// Records a finished job: the trial pauses at its rung, or finishes (last rung, or it stopped on its own).
    pub fn complete(&mut self, trial: usize, outcome: Outcome) {
        self.complete_at(trial, outcome, 0.0);
    }

    /// [`Study::complete`] with the study time of the report.
    pub fn complete_at(&mut self, trial: usize, outcome: Outcome, now: f64) {
        let last_rung = self.spec.rungs().last().copied().unwrap_or(0);
        if let Some(t) = self.trials.get_mut(trial) {
            t.results.push(outcome);
            t.reported_at = now;
            t.status = if outcome.finished || outcome.epochs >= last_rung { Status::Finished } else { Status::Paused };
        }
    }

    /// Records a failed job with its error; the study goes on.
    pub fn fail(&mut self, trial: usize, error: String, now: f64) {
        if let Some(t) = self.trials.get_mut(trial) {
            t.status = Status::Failed;
            t.error = Some(error);
            t.reported_at = now;
        }
    }

    /// The trial with the best result at the highest rung any trial reached (results at fewer epochs are not
    /// comparable with longer ones).
    pub fn best(&self) -> Option<&Trial> {
        let scored = || self.trials.iter().filter_map(|t| t.last().filter(|o| o.valid.is_finite()).map(|o| (t, o)));
        let depth = scored().map(|(t, _)| t.results.len()).max()?;
        scored().filter(|(t, _)| t.results.len() == depth).max_by(|a, b| a.1.valid.total_cmp(&b.1.valid)).map(|x| x.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::set_path;
    use proptest::prelude::*;

    fn spec(text: &str) -> StudySpec {
        toml::from_str(text).expect("spec parses")
    }

    /// A smooth objective peaking at lr = 1e-3, d = 64; longer training helps all configs alike.
    fn objective(t: &Trial, epochs: usize) -> f64 {
        let lr = t.params["optim.lr"].as_float().unwrap_or(1.0);
        let d = t.params.get("model.d_model").and_then(|v| v.as_integer()).unwrap_or(64) as f64;
        1.0 - (lr.log10() + 3.0).powi(2) * 0.2 - ((d - 64.0) / 64.0).powi(2) * 0.1 + (epochs as f64).ln() * 0.01
    }

    fn drive(study: &mut Study) -> Vec<Job> {
        let mut jobs = Vec::new();
        while let Some(job) = study.next_job() {
            let v = objective(&study.trials[job.trial], job.until_epoch);
            study.complete(job.trial, Outcome { epochs: job.until_epoch, valid: v, finished: false, seconds: 1.0 });
            jobs.push(job);
        }
        jobs
    }

    const SPACE: &str = r#"
        [study]
        max_trials = 27
        min_epochs = 1
        max_epochs = 9
        [space]
        "optim.lr" = { log_uniform = [1e-5, 1e-1] }
        "model.d_model" = { choice = [16, 32, 64, 128] }
    "#;

    #[test]
    fn asha_promotes_the_top_third_at_each_rung() {
        let mut study = Study::new(spec(SPACE)).unwrap();
        assert_eq!(study.spec.rungs(), vec![1, 3, 9]);
        let jobs = drive(&mut study);
        let at = |e: usize| jobs.iter().filter(|j| j.until_epoch == e).count();
        // 27 trials at 1 epoch, at least 9 promoted to 3 and 3 to 9 (asynchronous: a trial is promoted as soon as it
        // ranks in the top third so far, so an early one can be promoted and later be overtaken).
        assert_eq!(at(1), 27);
        assert!((9..18).contains(&at(3)) && (3..9).contains(&at(9)), "{} {}", at(3), at(9));
        let finished = study.trials.iter().filter(|t| t.status == Status::Finished).count();
        assert_eq!(finished, at(9));
        let best = study.best().unwrap();
        assert_eq!(best.last().unwrap().epochs, 9);
        // The promoted trials are better than the median of rung 0.
        let mut r0: Vec<f64> = study.trials.iter().map(|t| t.results[0].valid).collect();
        r0.sort_by(f64::total_cmp);
        assert!(best.results[0].valid >= r0[r0.len() / 2]);
    }

    #[test]
    fn fifo_runs_every_trial_to_the_full_budget() {
        let mut s = spec(SPACE);
        s.study.scheduler = Scheduler::Fifo;
        s.study.max_trials = 5;
        let mut study = Study::new(s).unwrap();
        let jobs = drive(&mut study);
        assert_eq!(jobs.len(), 5);
        assert!(jobs.iter().all(|j| j.until_epoch == 9));
        assert!(study.trials.iter().all(|t| t.status == Status::Finished));
    }

    #[test]
    fn a_study_saved_mid_way_and_resumed_does_what_an_unbroken_one_does() {
        let mut whole = Study::new(spec(SPACE)).unwrap();
        let all = drive(&mut whole);
        let mut first = Study::new(spec(SPACE)).unwrap();
        let mut jobs = Vec::new();
        for _ in 0..10 {
            let job = first.next_job().unwrap();
            let v = objective(&first.trials[job.trial], job.until_epoch);
            first.complete(job.trial, Outcome { epochs: job.until_epoch, valid: v, finished: false, seconds: 1.0 });
            jobs.push(job);
        }
        // A job starts, then the process dies: the saved study has it running.
        let lost = first.next_job().unwrap();
        let text = serde_json::to_string(&first).unwrap();
        let mut second: Study = serde_json::from_str(&text).unwrap();
        assert_eq!(second.requeue_running(), 1);
        assert_eq!(second.running_jobs(), vec![lost]);
        let v = objective(&second.trials[lost.trial], lost.until_epoch);
        second.complete(lost.trial, Outcome { epochs: lost.until_epoch, valid: v, finished: false, seconds: 1.0 });
        jobs.push(lost);
        jobs.extend(drive(&mut second));
        assert_eq!(jobs, all);
        assert_eq!(second.trials, whole.trials);
    }

    #[test]
    fn failures_and_early_stops_are_final() {
        let mut s = spec(SPACE);
        s.study.max_trials = 6;
        let mut study = Study::new(s).unwrap();
        let mut n = 0;
        while let Some(job) = study.next_job() {
            n += 1;
            if job.trial % 2 == 0 {
                study.fail(job.trial, "d_model must divide".into(), 1.0);
            } else {
                study.complete(job.trial, Outcome { epochs: 1, valid: 0.5, finished: true, seconds: 1.0 });
            }
        }
        assert_eq!(n, 6, "nothing is promoted: every trial failed or stopped on its own");
        assert_eq!(study.trials.iter().filter(|t| t.status == Status::Failed).count(), 3);
        assert!(study.trials[0].error.as_deref().is_some_and(|e| e.contains("divide")));
    }

    #[test]
    fn tpe_concentrates_near_the_optimum() {
        let mut s = spec(SPACE);
        s.study.scheduler = Scheduler::Fifo;
        s.study.max_trials = 40;
        s.study.sampler = Sampler::Tpe;
        let mut tpe = Study::new(s.clone()).unwrap();
        drive(&mut tpe);
        s.study.sampler = Sampler::Random;
        let mut random = Study::new(s).unwrap();
        drive(&mut random);
        for (i, a) in tpe.trials.iter().enumerate() {
            assert!(tpe.trials[..i].iter().all(|b| b.params != a.params), "trial {i} repeats an earlier one");
        }
        let at_bound = tpe
            .trials
            .iter()
            .filter(|t| matches!(t.params["optim.lr"].as_float(), Some(x) if x == 1e-5 || x == 1e-1))
            .count();
        assert_eq!(at_bound, 0, "continuous values are not piled onto the bounds");
        let late_mean = |st: &Study| st.trials[20..].iter().map(|t| t.results[0].valid).sum::<f64>() / 20.0;
        assert!(late_mean(&tpe) > late_mean(&random), "{} vs {}", late_mean(&tpe), late_mean(&random));
    }

    #[test]
    fn bad_specs_are_named() {
        let e = Study::new(spec("[space]\nx = { log_uniform = [0.0, 1.0] }\n")).unwrap_err();
        assert!(e.to_string().contains("`x`"), "{e}");
        let e = Study::new(spec("[space]\n")).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        assert!(toml::from_str::<StudySpec>("[space]\nx = { normal = [0, 1] }\n").is_err());
    }

    #[test]
    fn paths_are_set_and_misuse_refused() {
        let mut t: toml::Table = toml::from_str("[model]\nd_model = 64\n[item_tower]\nmode = 'hybrid'\n").unwrap();
        set_path(&mut t, "model.d_model", Value::Integer(32)).unwrap();
        set_path(&mut t, "optim.lr", Value::Float(0.01)).unwrap();
        assert_eq!(t["model"]["d_model"].as_integer(), Some(32));
        assert_eq!(t["optim"]["lr"].as_float(), Some(0.01));
        assert!(set_path(&mut t, "model.d_model.x", Value::Integer(1)).is_err());
        assert!(set_path(&mut t, "item_tower", Value::Integer(1)).is_err());
        let loss: toml::Table = toml::from_str("type = 'sampled_softmax'\nn_uniform = 64").unwrap();
        set_path(&mut t, "item_tower", Value::Table(loss)).unwrap();
        assert_eq!(t["item_tower"]["n_uniform"].as_integer(), Some(64));
    }

    proptest! {
        #[test]
        fn draws_stay_in_their_ranges(seed in any::<u64>(), lo in 1e-6f64..1.0, span in 1.0f64..1e3, a in -50i64..50, w in 0i64..20) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let v = Dist::LogUniform([lo, lo * span]).sample(&mut rng).as_float().unwrap();
            prop_assert!(v >= lo * (1.0 - 1e-12) && v <= lo * span * (1.0 + 1e-12));
            let v = Dist::Uniform([lo, lo + span]).sample(&mut rng).as_float().unwrap();
            prop_assert!(v >= lo && v <= lo + span);
            let v = Dist::Int([a, a + w]).sample(&mut rng).as_integer().unwrap();
            prop_assert!(v >= a && v <= a + w);
        }
    }
}
