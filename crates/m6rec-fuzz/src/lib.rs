//! m6rec's fuzzing campaign, on stable Rust: every importer, the image and audio decoders, the feature-cache,
//! checkpoint and journal loaders, and the HTTP request bodies ([`targets::all`]).
//!
//! A run mutates a committed seed corpus (`fixtures/fuzz/<target>/`, written by `m6rec-fuzz seeds`) with the
//! AFL-style mutations of [`mutate`] (no coverage feedback: stable Rust has no sanitizer coverage), feeds each
//! input to the target, and records a **finding** when the target panics or one input makes Rust code hold more
//! than [`MAX_INPUT_PEAK`] bytes at once (measured by the [`alloc::Counting`] allocator, which also aborts on any
//! single request over [`alloc::MAX_ONE_ALLOCATION`], naming the input). An `Err` is a clean refusal and is fine.
//! Input `i` of a run is a pure function of `(seed, i)`, so a finding is reproduced from its number, and its bytes
//! are saved.
//!
//! `cargo xtask fuzz TARGET --seconds N` runs one target (`all` for every one); the test suite runs each briefly.

pub mod alloc;
pub mod mutate;
pub mod targets;

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Most bytes Rust code may hold at once for one input, above what it held before: 256 MiB.
pub const MAX_INPUT_PEAK: usize = 256 << 20;
/// Longest input a run makes: 64 KiB.
pub const MAX_INPUT_LEN: usize = 64 << 10;

/// When a run stops: after `seconds`, or after `max_inputs`, whichever comes first.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Inputs.
    pub max_inputs: u64,
}

/// A panic or an input over the memory bound.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The input's number in its run.
    pub index: u64,
    /// What happened.
    pub message: String,
    /// The input.
    pub input: Vec<u8>,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The target.
    pub target: String,
    /// The run's seed.
    pub seed: u64,
    /// Inputs run.
    pub inputs: u64,
    /// Inputs the target accepted (`Ok`).
    pub accepted: u64,
    /// Inputs the target refused with an error.
    pub refused: u64,
    /// Seconds taken.
    pub seconds: f64,
    /// The largest per-input peak (bytes above the baseline).
    pub max_peak: usize,
    /// The slowest input: (index, milliseconds).
    pub slowest: (u64, f64),
    /// Panics and inputs over the memory bound (at most 20 kept).
    pub findings: Vec<Finding>,
    /// Findings in all.
    pub n_findings: u64,
}

/// The committed corpus folder of a target.
pub fn corpus_dir(target: &str) -> PathBuf {
    m6rec_testkit::workspace_root().join("fixtures").join("fuzz").join(target)
}

/// The files of a corpus folder, in name order (none when it does not exist).
pub fn load_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    files.into_iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

thread_local! {
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Runs `target` over mutations of `corpus` (its seeds when empty) until `budget` is spent; `progress` sees the
/// report now and then. Panics inside the target are caught (and not printed).
pub fn run(
    target: &targets::Target,
    corpus: &[Vec<u8>],
    seed: u64,
    budget: Budget,
    mut progress: impl FnMut(&Report),
) -> Result<Report, String> {
    let corpus: Vec<Vec<u8>> = if corpus.is_empty() { (target.seeds)() } else { corpus.to_vec() };
    if corpus.is_empty() {
        return Err(format!("{}: no seed inputs", target.name));
    }
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut runner = (target.make)(scratch.path()).map_err(|e| format!("{}: preparing: {e}", target.name))?;
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        LAST_PANIC.with(|p| *p.borrow_mut() = format!("{msg}{at}"));
    }));
    let mut r = Report { target: target.name.to_string(), seed, ..Report::default() };
    let start = Instant::now();
    let mut last_progress = Instant::now();
    while r.inputs < budget.max_inputs && start.elapsed().as_secs_f64() < budget.seconds {
        let i = r.inputs;
        let input = mutate::input(&corpus, target.dict, seed, i, MAX_INPUT_LEN);
        alloc::set_current(i);
        let base = alloc::reset_peak();
        let t0 = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| runner(&input)));
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let grown = alloc::peak().saturating_sub(base);
        r.max_peak = r.max_peak.max(grown);
        if ms > r.slowest.1 {
            r.slowest = (i, ms);
        }
        let mut finding = |message: String| {
            r.n_findings += 1;
            if r.findings.len() < 20 {
                r.findings.push(Finding { index: i, message, input: input.clone() });
            }
        };
        match outcome {
            Ok(Ok(())) => r.accepted += 1,
            Ok(Err(_)) => r.refused += 1,
            Err(_) => finding(format!("panic: {}", LAST_PANIC.with(|p| p.borrow().clone()))),
        }
        if grown > MAX_INPUT_PEAK {
            finding(format!("held {grown} bytes at its peak (bound {MAX_INPUT_PEAK})"));
        }
        r.inputs += 1;
        if last_progress.elapsed().as_secs_f64() > 2.0 {
            r.seconds = start.elapsed().as_secs_f64();
            progress(&r);
            last_progress = Instant::now();
        }
    }
    std::panic::set_hook(previous_hook);
    alloc::set_current(u64::MAX);
    r.seconds = start.elapsed().as_secs_f64();
    Ok(r)
}

/// Runs one input through `target` (a finding's bytes), with panics printed as usual.
pub fn replay(target: &targets::Target, input: &[u8]) -> Result<(), String> {
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut runner = (target.make)(scratch.path())?;
    runner(input)
}

/// The target named `name`.
pub fn target(name: &str) -> Result<targets::Target, String> {
    let all = targets::all();
    let names: Vec<&str> = all.iter().map(|t| t.name).collect::<Vec<_>>();
    let list = names.join(", ");
    all.into_iter().find(|t| t.name == name).ok_or_else(|| format!("no fuzz target {name:?}; the targets: {list}"))
}
