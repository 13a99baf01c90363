//! The trial runner of a strategy search (`m6rec tune`): a [`Study`] (crate `m6rec-search`) decides what to train,
//! and [`Runner`] trains each trial as a separate `m6rec train` process (so a crashing or diverging trial cannot take
//! the study down, and trials never share libtorch's global RNG), at most `concurrency` at a time, within the time
//! budget. `study.json` is rewritten atomically after every event; a study started again on the same folder continues,
//! rerunning only the trials that were running (from their last epoch checkpoint).
//!
//! Layout of the study folder: `study.json`, `trials/NNNN/` (`config.toml`, `ckpt/`, `summary.json`, `log.txt`), and
//! the results [`write_results`] makes: `trials.parquet`, `study.svg`, `best.toml`.

use crate::{Error, Result, RunConfig};
use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema};
use m6rec_search::{self as search, Dist, Job, Outcome, Status, Study, Trial};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a trial is run: `exe --threads T train --config|--resume ... --data D --device V [--features F]`.
#[derive(Debug, Clone)]
pub struct TrialCommand {
    /// The `m6rec` executable.
    pub exe: PathBuf,
    /// The dataset.
    pub data: PathBuf,
    /// Feature cache for configs with `[item_tower]`.
    pub features: Option<PathBuf>,
    /// `auto`, `cpu` or `cuda:N`.
    pub device: String,
    /// Threads of each trial.
    pub threads: usize,
}

/// What a [`Runner`] tells as it goes (a line per trial event, and the state after every look).
pub trait TuneObserver {
    /// A trial started, ended, failed, or the budget ran out.
    fn line(&mut self, _line: &str) {}
    /// Study seconds so far, and the study.
    fn tick(&mut self, _elapsed: f64, _study: &Study) {}
}

struct Running {
    job: Job,
    child: Child,
    started: Instant,
}

/// The study's trials as child processes: started while there is room and time, reaped as they end.
pub struct Runner<'a> {
    out: &'a Path,
    base: &'a toml::Table,
    cmd: TrialCommand,
    /// The study (continued from where it was).
    pub study: Study,
    /// Jobs to rerun first (interrupted by an earlier stop).
    queue: Vec<Job>,
    running: Vec<Running>,
    started: Instant,
    /// Study seconds before this run.
    elapsed0: f64,
    /// Seconds the study may take in all (0: no limit).
    budget: f64,
}

impl<'a> Runner<'a> {
    /// A runner over `study` in folder `out`, trials' configs from `base`; trials interrupted by an earlier stop are
    /// queued again (returned: how many).
    pub fn new(out: &'a Path, base: &'a toml::Table, mut study: Study, cmd: TrialCommand) -> (Runner<'a>, usize) {
        let resumed = study.requeue_running();
        let queue = study.running_jobs();
        let elapsed0 = study.elapsed_before;
        let budget = study.spec.study.budget_minutes * 60.0;
        let r = Runner { out, base, cmd, study, queue, running: Vec::new(), started: Instant::now(), elapsed0, budget };
        (r, resumed)
    }

    /// Study seconds over all runs.
    pub fn now(&self) -> f64 {
        self.elapsed0 + self.started.elapsed().as_secs_f64()
    }

    /// Runs trials until the study has no more jobs or the budget is spent; then saves the study and its results.
    pub fn run(&mut self, obs: &mut dyn TuneObserver) -> Result<()> {
        loop {
            self.start_trials(obs)?;
            if self.running.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            if self.budget > 0.0 && self.now() >= self.budget {
                self.stop_all(obs);
                break;
            }
            self.reap(obs)?;
            obs.tick(self.now(), &self.study);
        }
        self.study.elapsed_before = self.now();
        save(self.out, &self.study)?;
        write_results(self.out, &self.study, self.base)
    }

    /// Starts work while there is room and the study has jobs.
    fn start_trials(&mut self, obs: &mut dyn TuneObserver) -> Result<()> {
        let cfg = self.study.spec.study.clone();
        while self.running.len() < cfg.concurrency {
            let Some(job) = self.queue.pop().or_else(|| self.study.next_job()) else { break };
            let dir = trial_dir(self.out, job.trial);
            let resume = dir.join("ckpt").join("state.json").exists();
            if !resume {
                // A sampled combination the config refuses (say, d_model not divisible by n_heads) fails the trial.
                match trial_config(self.base, &self.study.trials[job.trial], cfg.max_epochs) {
                    Ok(c) => {
                        std::fs::create_dir_all(&dir).map_err(crate::error::io(&dir))?;
                        m6rec_tensor::atomic::write_bytes(&dir.join("config.toml"), c.to_toml().as_bytes())?;
                    }
                    Err(e) => {
                        obs.line(&format!("trial {:>4}: invalid config: {e}", job.trial));
                        let t = self.now();
                        self.study.fail(job.trial, format!("invalid config: {e}"), t);
                        save(self.out, &self.study)?;
                        continue;
                    }
                }
            }
            let child = spawn_trial(&self.cmd, &dir, job, resume)?;
            self.running.push(Running { job, child, started: Instant::now() });
            self.study.elapsed_before = self.now();
            save(self.out, &self.study)?;
        }
        Ok(())
    }

    /// The time budget is spent: every running trial is stopped (its last epoch checkpoint continues it later).
    fn stop_all(&mut self, obs: &mut dyn TuneObserver) {
        for r in &mut self.running {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
        obs.line(&format!(
            "time budget of {} min reached: {} running trial(s) stopped (a larger --budget-minutes continues them)",
            self.study.spec.study.budget_minutes,
            self.running.len()
        ));
        self.running.clear();
    }

    /// Records every trial that ended since the last look.
    fn reap(&mut self, obs: &mut dyn TuneObserver) -> Result<()> {
        let mut i = 0;
        while i < self.running.len() {
            let Some(status) = self.running[i]
                .child
                .try_wait()
                .map_err(|e| Error::Study(format!("waiting for trial {}: {e}", self.running[i].job.trial)))?
            else {
                i += 1;
                continue;
            };
            let r = self.running.swap_remove(i);
            let dir = trial_dir(self.out, r.job.trial);
            let t = self.now();
            match read_outcome(&dir, status.success()) {
                Ok(o) => {
                    self.study.complete_at(r.job.trial, o, t);
                    obs.line(&format!(
                        "trial {:>4}: valid NDCG@10 {:.4} after {} epochs ({:.0} s){}",
                        r.job.trial,
                        o.valid,
                        o.epochs,
                        r.started.elapsed().as_secs_f64(),
                        if o.finished && o.epochs < r.job.until_epoch { ", stopped early" } else { "" }
                    ));
                }
                Err(e) => {
                    obs.line(&format!("trial {:>4}: failed: {e}", r.job.trial));
                    self.study.fail(r.job.trial, e, t);
                }
            }
            self.study.elapsed_before = t;
            save(self.out, &self.study)?;
            write_results(self.out, &self.study, self.base)?;
        }
        Ok(())
    }
}

/// Starts one trial (killed with this process: the trial dies with the study, so a killed study never leaves trials
/// writing into folders a restarted study will reuse).
#[allow(unsafe_code)]
fn spawn_trial(c: &TrialCommand, dir: &Path, job: Job, resume: bool) -> Result<Child> {
    let summary = dir.join("summary.json");
    let _ = std::fs::remove_file(&summary);
    let mut cmd = Command::new(&c.exe);
    cmd.arg("--threads").arg(c.threads.to_string()).arg("train");
    if resume {
        cmd.arg("--resume");
    } else {
        cmd.arg("--config").arg(dir.join("config.toml"));
    }
    cmd.arg("--data")
        .arg(&c.data)
        .arg("--out")
        .arg(dir.join("ckpt"))
        .arg("--until-epoch")
        .arg(job.until_epoch.to_string())
        .arg("--summary-json")
        .arg(&summary)
        .arg("--device")
        .arg(&c.device);
    if let Some(f) = &c.features {
        cmd.arg("--features").arg(f);
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log.txt"))
        .map_err(crate::error::io(&dir.join("log.txt")))?;
    let log2 = log.try_clone().map_err(crate::error::io(&dir.join("log.txt")))?;
    cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
    // SAFETY: prctl only sets a flag of the child process, between fork and exec: the trial dies with the study, so a
    // killed study never leaves trials writing into folders a restarted study will reuse.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| Error::Study(format!("starting trial {} ({}): {e}", job.trial, c.exe.display())))
}

/// The trial's result from its summary, or its error from the end of its log.
pub fn read_outcome(dir: &Path, success: bool) -> Result<Outcome, String> {
    let summary = std::fs::read(dir.join("summary.json")).ok().and_then(|b| {
        let v: serde_json::Value = serde_json::from_slice(&b).ok()?;
        Some(Outcome {
            epochs: v["epochs"].as_u64()? as usize,
            valid: v["best_valid_ndcg@10"].as_f64()?,
            finished: v["finished"].as_bool().unwrap_or(false),
            seconds: v["train_seconds"].as_f64().unwrap_or(0.0),
        })
    });
    match (success, summary) {
        (true, Some(o)) => Ok(o),
        _ => {
            let log = std::fs::read_to_string(dir.join("log.txt")).unwrap_or_default();
            let error = log.lines().rev().find(|l| l.starts_with("error:")).unwrap_or("no error message; see log.txt");
            Err(format!("{} (log: {})", error.trim(), dir.join("log.txt").display()))
        }
    }
}

/// Writes `study.json` in `out` atomically.
pub fn save(out: &Path, study: &Study) -> Result<()> {
    let text = serde_json::to_vec_pretty(study).map_err(|e| Error::Study(format!("encoding the study: {e}")))?;
    m6rec_tensor::atomic::write_bytes(&out.join("study.json"), &text)?;
    Ok(())
}

/// `trials.parquet`, `study.svg` and `best.toml`, from the study as it stands.
pub fn write_results(out: &Path, study: &Study, base: &toml::Table) -> Result<()> {
    let trials = &study.trials;
    let last = |t: &Trial| t.last().copied();
    let status = |t: &Trial| match t.status {
        Status::Running { .. } => "running",
        Status::Paused => "paused",
        Status::Finished => "finished",
        Status::Failed => "failed",
    };
    let mut fields = vec![
        Field::new("trial", DataType::UInt32, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("epochs", DataType::UInt32, true),
        Field::new("valid_ndcg10", DataType::Float64, true),
        Field::new("train_seconds", DataType::Float64, true),
        Field::new("reported_minutes", DataType::Float64, false),
        Field::new("error", DataType::Utf8, true),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(trials.iter().map(|t| t.id as u32))),
        Arc::new(StringArray::from_iter_values(trials.iter().map(status))),
        Arc::new(UInt32Array::from_iter(trials.iter().map(|t| last(t).map(|o| o.epochs as u32)))),
        Arc::new(Float64Array::from_iter(trials.iter().map(|t| last(t).map(|o| o.valid)))),
        Arc::new(Float64Array::from_iter(trials.iter().map(|t| last(t).map(|o| o.seconds)))),
        Arc::new(Float64Array::from_iter_values(trials.iter().map(|t| t.reported_at / 60.0))),
        Arc::new(StringArray::from_iter(trials.iter().map(|t| t.error.as_deref()))),
    ];
    for (name, dist) in &study.spec.space {
        let value = |t: &Trial| t.params.get(name).cloned();
        if matches!(dist, Dist::Choice(_)) {
            fields.push(Field::new(name, DataType::Utf8, true));
            columns.push(Arc::new(StringArray::from_iter(trials.iter().map(|t| value(t).map(|v| plain(&v))))));
        } else {
            fields.push(Field::new(name, DataType::Float64, true));
            columns.push(Arc::new(Float64Array::from_iter(
                trials.iter().map(|t| value(t).and_then(|v| v.as_float().or(v.as_integer().map(|i| i as f64)))),
            )));
        }
    }
    let batch =
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| Error::Study(e.to_string()))?;
    let path = out.join("trials.parquet");
    let pq = |e: parquet::errors::ParquetError| Error::Study(format!("writing {}: {e}", path.display()));
    m6rec_tensor::atomic::write_file(&path, |w| -> Result<()> {
        let mut writer = parquet::arrow::ArrowWriter::try_new(w, batch.schema(), None).map_err(pq)?;
        writer.write(&batch).map_err(pq)?;
        writer.close().map_err(pq)?;
        Ok(())
    })?;

    let points: Vec<crate::TrialPoint> = trials
        .iter()
        .filter_map(|t| {
            last(t).map(|o| crate::TrialPoint {
                trial: t.id,
                minutes: t.reported_at / 60.0,
                valid: o.valid,
                epochs: o.epochs,
            })
        })
        .collect();
    crate::search_progress(&out.join("study.svg"), "NDCG@10", &points)?;
    if let Some(best) = study.best() {
        let cfg = trial_config(base, best, study.spec.study.max_epochs)
            .map_err(|reason| Error::Config { path: out.join("best.toml"), reason })?;
        let params: Vec<String> = best.params.iter().map(|(k, v)| format!("{k} = {}", plain(v))).collect();
        let text = format!(
            "# Best configuration of the study in {} (trial {}: validation NDCG@10 {:.4} after {} epochs).\n# {}\n{}",
            out.display(),
            best.id,
            best.last().map_or(f64::NAN, |o| o.valid),
            best.last().map_or(0, |o| o.epochs),
            params.join(", "),
            cfg.to_toml()
        );
        m6rec_tensor::atomic::write_bytes(&out.join("best.toml"), text.as_bytes())?;
    }
    Ok(())
}

/// A parameter value as the tables show it.
pub fn plain(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Float(f) => format!("{f:.4e}"),
        other => other.to_string(),
    }
}

/// The folder of trial `id`.
pub fn trial_dir(out: &Path, id: usize) -> PathBuf {
    out.join("trials").join(format!("{id:04}"))
}

/// The run config of a trial: the base with the trial's values written in, epochs set to the last rung.
pub fn trial_config(base: &toml::Table, trial: &Trial, max_epochs: usize) -> Result<RunConfig, String> {
    let mut table = base.clone();
    for (path, value) in &trial.params {
        search::set_path(&mut table, path, value.clone()).map_err(|e| e.to_string())?;
    }
    search::set_path(&mut table, "train.epochs", toml::Value::Integer(max_epochs as i64)).map_err(|e| e.to_string())?;
    let text = toml::to_string(&table).map_err(|e| e.to_string())?;
    RunConfig::from_toml(&text, Path::new("trial config")).map_err(|e| format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(params: &[(&str, toml::Value)]) -> Trial {
        Trial {
            id: 3,
            params: params.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            status: Status::Paused,
            results: Vec::new(),
            error: None,
            reported_at: 0.0,
        }
    }

    #[test]
    fn a_trial_config_is_the_base_with_its_values_and_the_last_rung_as_epochs() -> Result<()> {
        let base: toml::Table =
            toml::from_str("[model]\nd_model = 32\nn_heads = 2\n").map_err(|e| Error::Study(e.to_string()))?;
        let cfg = trial_config(&base, &trial(&[("optim.lr", toml::Value::Float(3e-3))]), 9).map_err(Error::Study)?;
        assert_eq!((cfg.model.d_model, cfg.optim.lr, cfg.train.epochs), (32, 3e-3, 9));
        let bad = trial_config(&base, &trial(&[("model.n_heads", toml::Value::Integer(5))]), 9);
        assert!(bad.is_err(), "d_model 32 does not split into 5 heads");
        Ok(())
    }

    #[test]
    fn an_outcome_comes_from_the_summary_or_the_error_from_the_log() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Study(e.to_string()))?;
        let d = dir.path();
        std::fs::write(d.join("log.txt"), "epoch 1\nerror: training diverged at epoch 2\n")
            .map_err(crate::error::io(d))?;
        let err = read_outcome(d, false).expect_err("no summary");
        assert!(err.starts_with("error: training diverged at epoch 2"), "{err}");
        let summary = r#"{"epochs": 4, "best_valid_ndcg@10": 0.21, "finished": true, "train_seconds": 12.5}"#;
        std::fs::write(d.join("summary.json"), summary).map_err(crate::error::io(d))?;
        let o = read_outcome(d, true).map_err(Error::Study)?;
        assert_eq!((o.epochs, o.valid, o.finished, o.seconds), (4, 0.21, true, 12.5));
        assert!(read_outcome(d, false).is_err(), "a failed process is a failure whatever its summary says");
        Ok(())
    }
}
