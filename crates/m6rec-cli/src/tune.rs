//! `m6rec tune`: automated strategy search over run-config fields.
//!
//! The study ([`m6rec_search::Study`]) decides what to train; this driver trains each trial as a separate
//! `m6rec train` process (so a crashing or diverging trial cannot take the study down, and trials never share
//! libtorch's global RNG), at most `concurrency` at a time, within the time budget. `study.json` is rewritten
//! atomically after every event; a killed study started again with the same `--out` continues, rerunning only the
//! trials that were running (from their last epoch checkpoint).
//!
//! Layout of `--out`: `study.json`, `base.toml` (the config the space's values go into), `trials/NNNN/` (`config.toml`,
//! `ckpt/`, `summary.json`, `log.txt`), and the results: `trials.parquet`, `study.svg`, `best.toml`.

use anyhow::{bail, Context, Result};
use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use m6rec_search::{self as search, Dist, Job, Outcome, Status, Study, StudySpec, Trial};
use m6rec_train::RunConfig;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct TuneArgs {
    /// Search space: TOML with `[study]` (sampler, scheduler, budget, ...) and `[space]` (dotted config paths to
    /// distributions), for example docs/configs/tune-movielens.toml.
    #[arg(long)]
    space: PathBuf,
    /// Dataset directory (from `m6rec import`).
    #[arg(long)]
    data: PathBuf,
    /// Base run configuration the sampled values are written into (default: the defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Study folder (default runs/tune-<dataset>). A study already there is continued.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override [study] budget_minutes (total over all resumes; 0: none).
    #[arg(long)]
    budget_minutes: Option<f64>,
    /// Override [study] concurrency (trials at once).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Override [study] max_trials (0: only the budget limits).
    #[arg(long)]
    max_trials: Option<usize>,
    /// Feature cache for configs with `[item_tower]` (passed to every trial).
    #[arg(long)]
    features: Option<PathBuf>,
    /// auto, cpu or cuda:N (for every trial).
    #[arg(long, default_value = "auto")]
    device: String,
    /// Skip the final test evaluation of the best trial.
    #[arg(long)]
    no_test: bool,
}

struct Running {
    job: Job,
    child: Child,
    started: Instant,
}

pub fn tune(a: &TuneArgs, threads: usize) -> Result<()> {
    let (mut study, base, out) = open_study(a)?;
    if let Some(b) = a.budget_minutes {
        study.spec.study.budget_minutes = b;
    }
    if let Some(c) = a.concurrency {
        study.spec.study.concurrency = c.max(1);
    }
    if let Some(m) = a.max_trials {
        study.spec.study.max_trials = m;
    }
    study.spec.validate()?;
    let cfg = study.spec.study.clone();
    // Every trial gets its share of the cores.
    let trial_threads = (threads / cfg.concurrency).max(1);
    let resumed = study.requeue_running();
    let queue: Vec<Job> = study.running_jobs();
    println!(
        "{} study over {} parameters in {} ({} sampler, {} scheduler, rungs {:?} epochs, {} at a time x {} \
         threads, budget {} min{}){}",
        if study.trials.is_empty() { "starting a" } else { "continuing the" },
        study.spec.space.len(),
        out.display(),
        format!("{:?}", cfg.sampler).to_lowercase(),
        format!("{:?}", cfg.scheduler).to_lowercase(),
        study.spec.rungs(),
        cfg.concurrency,
        trial_threads,
        cfg.budget_minutes,
        if cfg.max_trials > 0 { format!(", at most {} trials", cfg.max_trials) } else { String::new() },
        if resumed > 0 { format!("; rerunning {resumed} interrupted trial(s)") } else { String::new() },
    );
    let elapsed0 = study.elapsed_before;
    let budget = cfg.budget_minutes * 60.0;
    let mut d = Driver {
        a,
        out: &out,
        base: &base,
        bar: progress_bar(budget, elapsed0),
        study,
        queue,
        running: Vec::new(),
        started: Instant::now(),
        elapsed0,
        budget,
        trial_threads,
    };
    d.run()?;
    d.study.elapsed_before = d.now();
    save(&out, &d.study)?;
    write_results(&out, &d.study, &base)?;
    d.bar.finish_and_clear();
    report(a, &out, &d.study, trial_threads)
}

/// The study in `--out` (continued when it is there: same space and base config), the base config, and the folder.
fn open_study(a: &TuneArgs) -> Result<(Study, toml::Table, PathBuf)> {
    let text = std::fs::read_to_string(&a.space).with_context(|| format!("reading {}", a.space.display()))?;
    let mut spec: StudySpec =
        toml::from_str(&text).with_context(|| format!("parsing search space {}", a.space.display()))?;
    let base_text = match &a.config {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        None => String::new(),
    };
    let base: toml::Table = toml::from_str(&base_text)
        .with_context(|| format!("parsing {}", a.config.as_deref().unwrap_or(Path::new("<defaults>")).display()))?;
    let ds = m6rec_data::Dataset::load(&a.data).with_context(|| format!("loading dataset {}", a.data.display()))?;
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("tune-{}", ds.name)));
    std::fs::create_dir_all(out.join("trials")).with_context(|| format!("creating {}", out.display()))?;
    let study_path = out.join("study.json");
    if !study_path.exists() {
        m6rec_tensor::atomic::write_bytes(&out.join("base.toml"), base_text.as_bytes())?;
        let study = Study::new(spec.clone()).with_context(|| format!("in {}", a.space.display()))?;
        return Ok((study, base, out));
    }
    let study: Study = serde_json::from_slice(
        &std::fs::read(&study_path).with_context(|| format!("reading {}", study_path.display()))?,
    )
    .with_context(|| format!("parsing {}", study_path.display()))?;
    if study.spec.space != spec.space {
        bail!(
            "{} holds a study over another search space than {}; give another --out, or delete that folder to \
             start over",
            out.display(),
            a.space.display()
        );
    }
    let saved_base = std::fs::read_to_string(out.join("base.toml")).unwrap_or_default();
    if saved_base != base_text {
        bail!("{} was started from another base config than {:?}; give another --out", out.display(), a.config);
    }
    spec.study = study.spec.study.clone();
    Ok((study, base, out))
}

/// The study's trials as child processes: started while there is room and time, reaped as they end.
struct Driver<'a> {
    a: &'a TuneArgs,
    out: &'a Path,
    base: &'a toml::Table,
    bar: ProgressBar,
    study: Study,
    /// Jobs to rerun first (interrupted by an earlier stop).
    queue: Vec<Job>,
    running: Vec<Running>,
    started: Instant,
    /// Study seconds before this call.
    elapsed0: f64,
    /// Seconds the study may take in all (0: no limit).
    budget: f64,
    trial_threads: usize,
}

impl Driver<'_> {
    fn now(&self) -> f64 {
        self.elapsed0 + self.started.elapsed().as_secs_f64()
    }

    fn run(&mut self) -> Result<()> {
        loop {
            self.start_trials()?;
            if self.running.is_empty() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
            if self.budget > 0.0 && self.now() >= self.budget {
                self.stop_all();
                return Ok(());
            }
            self.reap()?;
            self.bar.set_position(self.now().min(self.budget.max(1.0)) as u64);
            self.bar.set_message(summary_line(&self.study));
        }
    }

    /// Starts work while there is room and the study has jobs.
    fn start_trials(&mut self) -> Result<()> {
        let cfg = self.study.spec.study.clone();
        while self.running.len() < cfg.concurrency {
            let Some(job) = self.queue.pop().or_else(|| self.study.next_job()) else { break };
            let dir = trial_dir(self.out, job.trial);
            let resume = dir.join("ckpt").join("state.json").exists();
            if !resume {
                // A sampled combination the config refuses (say, d_model not divisible by n_heads) fails the trial.
                match trial_config(self.base, &self.study.trials[job.trial], cfg.max_epochs) {
                    Ok(c) => {
                        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                        m6rec_tensor::atomic::write_bytes(&dir.join("config.toml"), c.to_toml().as_bytes())?;
                    }
                    Err(e) => {
                        say(&self.bar, format!("trial {:>4}: invalid config: {e}", job.trial));
                        let t = self.now();
                        self.study.fail(job.trial, format!("invalid config: {e}"), t);
                        save(self.out, &self.study)?;
                        continue;
                    }
                }
            }
            let child = spawn_trial(self.a, &dir, job, resume, self.trial_threads)?;
            self.running.push(Running { job, child, started: Instant::now() });
            self.study.elapsed_before = self.now();
            save(self.out, &self.study)?;
        }
        Ok(())
    }

    /// The time budget is spent: every running trial is stopped (its last epoch checkpoint continues it later).
    fn stop_all(&mut self) {
        for r in &mut self.running {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
        say(
            &self.bar,
            format!(
                "time budget of {} min reached: {} running trial(s) stopped (a larger --budget-minutes continues them)",
                self.study.spec.study.budget_minutes,
                self.running.len()
            ),
        );
        self.running.clear();
    }

    /// Records every trial that ended since the last look.
    fn reap(&mut self) -> Result<()> {
        let mut i = 0;
        while i < self.running.len() {
            let Some(status) = self.running[i].child.try_wait().context("waiting for a trial")? else {
                i += 1;
                continue;
            };
            let r = self.running.swap_remove(i);
            let dir = trial_dir(self.out, r.job.trial);
            let t = self.now();
            match read_outcome(&dir, status.success()) {
                Ok(o) => {
                    self.study.complete_at(r.job.trial, o, t);
                    say(
                        &self.bar,
                        format!(
                            "trial {:>4}: valid NDCG@10 {:.4} after {} epochs ({:.0} s){}",
                            r.job.trial,
                            o.valid,
                            o.epochs,
                            r.started.elapsed().as_secs_f64(),
                            if o.finished && o.epochs < r.job.until_epoch { ", stopped early" } else { "" }
                        ),
                    );
                }
                Err(e) => {
                    say(&self.bar, format!("trial {:>4}: failed: {e}", r.job.trial));
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

/// A line above the bar (printed even when the bar is hidden, as when the output is not a terminal).
fn say(bar: &ProgressBar, line: String) {
    bar.suspend(|| println!("{line}"));
}

fn progress_bar(budget: f64, elapsed0: f64) -> ProgressBar {
    let bar = ProgressBar::new(budget.max(1.0) as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} tune [{bar:30}] {pos}/{len} s of budget, ETA {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_position(elapsed0 as u64);
    bar.enable_steady_tick(Duration::from_millis(500));
    crate::progress::plain(&bar, "tune", "s of budget");
    bar
}

fn summary_line(study: &Study) -> String {
    let count = |f: fn(&Status) -> bool| study.trials.iter().filter(|t| f(&t.status)).count();
    let best = study
        .best()
        .and_then(|t| t.last().map(|o| format!("; best {:.4} (trial {}, {} epochs)", o.valid, t.id, o.epochs)))
        .unwrap_or_default();
    format!(
        "{} trials: {} running, {} failed{best}",
        study.trials.len(),
        count(|s| matches!(s, Status::Running { .. })),
        count(|s| *s == Status::Failed)
    )
}

fn trial_dir(out: &Path, id: usize) -> PathBuf {
    out.join("trials").join(format!("{id:04}"))
}

/// The run config of a trial: the base with the trial's values written in, epochs set to the last rung.
fn trial_config(base: &toml::Table, trial: &Trial, max_epochs: usize) -> Result<RunConfig, String> {
    let mut table = base.clone();
    for (path, value) in &trial.params {
        search::set_path(&mut table, path, value.clone()).map_err(|e| e.to_string())?;
    }
    search::set_path(&mut table, "train.epochs", toml::Value::Integer(max_epochs as i64)).map_err(|e| e.to_string())?;
    let text = toml::to_string(&table).map_err(|e| e.to_string())?;
    RunConfig::from_toml(&text, Path::new("trial config")).map_err(|e| format!("{e:#}"))
}

#[allow(unsafe_code)]
fn spawn_trial(a: &TuneArgs, dir: &Path, job: Job, resume: bool, threads: usize) -> Result<Child> {
    let summary = dir.join("summary.json");
    let _ = std::fs::remove_file(&summary);
    let exe = std::env::current_exe().context("finding the m6rec executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("--threads").arg(threads.to_string()).arg("train");
    if resume {
        cmd.arg("--resume");
    } else {
        cmd.arg("--config").arg(dir.join("config.toml"));
    }
    cmd.arg("--data")
        .arg(&a.data)
        .arg("--out")
        .arg(dir.join("ckpt"))
        .arg("--until-epoch")
        .arg(job.until_epoch.to_string())
        .arg("--summary-json")
        .arg(&summary)
        .arg("--device")
        .arg(&a.device);
    if let Some(f) = &a.features {
        cmd.arg("--features").arg(f);
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log.txt"))
        .with_context(|| format!("opening {}", dir.join("log.txt").display()))?;
    let log2 = log.try_clone()?;
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
    cmd.spawn().with_context(|| format!("starting trial {}", job.trial))
}

/// The trial's result from its summary, or its error from the end of its log.
fn read_outcome(dir: &Path, success: bool) -> Result<Outcome, String> {
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

fn save(out: &Path, study: &Study) -> Result<()> {
    let text = serde_json::to_vec_pretty(study)?;
    m6rec_tensor::atomic::write_bytes(&out.join("study.json"), &text)?;
    Ok(())
}

/// `trials.parquet`, `study.svg` and `best.toml`, from the study as it stands.
fn write_results(out: &Path, study: &Study, base: &toml::Table) -> Result<()> {
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
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    let path = out.join("trials.parquet");
    m6rec_tensor::atomic::write_file(&path, |w| -> Result<()> {
        let mut writer = parquet::arrow::ArrowWriter::try_new(w, batch.schema(), None)?;
        writer.write(&batch)?;
        writer.close()?;
        Ok(())
    })
    .with_context(|| format!("writing {}", path.display()))?;

    let points: Vec<m6rec_train::TrialPoint> = trials
        .iter()
        .filter_map(|t| {
            last(t).map(|o| m6rec_train::TrialPoint {
                trial: t.id,
                minutes: t.reported_at / 60.0,
                valid: o.valid,
                epochs: o.epochs,
            })
        })
        .collect();
    m6rec_train::search_progress(&out.join("study.svg"), "NDCG@10", &points)?;
    if let Some(best) = study.best() {
        let cfg = trial_config(base, best, study.spec.study.max_epochs).map_err(anyhow::Error::msg)?;
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

fn plain(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Float(f) => format!("{f:.4e}"),
        other => other.to_string(),
    }
}

/// Prints the best trials, then the best trial's test metrics (a separate `m6rec eval`).
fn report(a: &TuneArgs, out: &Path, study: &Study, threads: usize) -> Result<()> {
    let mut done: Vec<&Trial> = study.trials.iter().filter(|t| t.last().is_some()).collect();
    done.sort_by(|x, y| {
        (y.results.len(), y.last().map_or(f64::MIN, |o| o.valid))
            .partial_cmp(&(x.results.len(), x.last().map_or(f64::MIN, |o| o.valid)))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let failed = study.trials.iter().filter(|t| t.status == Status::Failed).count();
    println!(
        "{} trials in {:.1} min ({} with results, {} failed); best by validation NDCG@10 at the deepest rung:",
        study.trials.len(),
        study.elapsed_before / 60.0,
        done.len(),
        failed
    );
    let names: Vec<&String> = study.spec.space.keys().collect();
    println!(
        "{:>5}  {:>6}  {:>8}  {}",
        "trial",
        "epochs",
        "NDCG@10",
        names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join("  ")
    );
    for t in done.iter().take(10) {
        let o = t.last().copied().unwrap_or(Outcome { epochs: 0, valid: f64::NAN, finished: false, seconds: 0.0 });
        let vals: Vec<String> =
            names.iter().map(|n| t.params.get(*n).map(plain).unwrap_or_else(|| "-".into())).collect();
        println!("{:>5}  {:>6}  {:>8.4}  {}", t.id, o.epochs, o.valid, vals.join("  "));
    }
    println!(
        "results: {} (table), {} (plot), {} (best config)",
        out.join("trials.parquet").display(),
        out.join("study.svg").display(),
        out.join("best.toml").display()
    );
    let Some(best) = study.best() else {
        bail!("no trial finished with a result; see the logs under {}", out.join("trials").display())
    };
    if a.no_test {
        return Ok(());
    }
    let ckpt = trial_dir(out, best.id).join("ckpt");
    let json = out.join("best-test.json");
    println!("test metrics of the best trial ({}):", ckpt.display());
    let exe = std::env::current_exe().context("finding the m6rec executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("--threads").arg(threads.to_string()).args(["eval", "--checkpoint"]).arg(&ckpt);
    cmd.arg("--data").arg(&a.data).arg("--json").arg(&json).arg("--device").arg(&a.device);
    if let Some(f) = &a.features {
        cmd.arg("--features").arg(f);
    }
    let status = cmd.status().context("running m6rec eval on the best trial")?;
    if !status.success() {
        bail!("evaluating the best trial failed ({status})");
    }
    Ok(())
}
