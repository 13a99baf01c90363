//! `m6rec tune`: automated strategy search over run-config fields.
//!
//! The study ([`m6rec_search::Study`]) decides what to train and [`m6rec_train::tune::Runner`] runs the trials as
//! `m6rec train` processes within the budget (resumable: a study started again with the same `--out` continues);
//! this file reads the arguments and the study folder, shows the progress and prints the results.
//!
//! Layout of `--out`: `study.json`, `base.toml` (the config the space's values go into), `trials/NNNN/` (`config.toml`,
//! `ckpt/`, `summary.json`, `log.txt`), and the results: `trials.parquet`, `study.svg`, `best.toml`.

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use m6rec_search::{Outcome, Status, Study, StudySpec, Trial};
use m6rec_train::tune::{plain, trial_dir, Runner, TrialCommand, TuneObserver};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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
    let exe = std::env::current_exe().context("finding the m6rec executable")?;
    let cmd = TrialCommand {
        exe,
        data: a.data.clone(),
        features: a.features.clone(),
        device: a.device.clone(),
        threads: trial_threads,
    };
    let started_empty = study.trials.is_empty();
    let (mut runner, resumed) = Runner::new(&out, &base, study, cmd);
    let study = &runner.study;
    println!(
        "{} study over {} parameters in {} ({} sampler, {} scheduler, rungs {:?} epochs, {} at a time x {} \
         threads, budget {} min{}){}",
        if started_empty { "starting a" } else { "continuing the" },
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
    let mut bar = Bar(progress_bar(cfg.budget_minutes * 60.0, runner.study.elapsed_before), cfg.budget_minutes * 60.0);
    runner.run(&mut bar)?;
    bar.0.finish_and_clear();
    report(a, &out, &runner.study, trial_threads)
}

/// The progress bar as the runner's observer: trial lines above it, the budget spent and a summary on it.
struct Bar(ProgressBar, f64);

impl TuneObserver for Bar {
    fn line(&mut self, line: &str) {
        say(&self.0, line.to_string());
    }
    fn tick(&mut self, elapsed: f64, study: &Study) {
        self.0.set_position(elapsed.min(self.1.max(1.0)) as u64);
        self.0.set_message(summary_line(study));
    }
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
