//! `m6rec`: import data, cache media features, train, evaluate and recommend. Run `m6rec --help`.
//!
//! Errors print their whole chain (`error: <what>: <where>: <cause>`) and exit with code 2.

mod adapt;
mod common;
mod eval;
mod features;
mod generative;
mod import;
mod progress;
mod recommend;
mod report;
mod run;
mod serve;
mod synth;
mod table;
mod train;
mod tune;
mod update;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Generative pretrained recommendation: import, train, evaluate, recommend.
#[derive(Debug, Parser)]
#[command(name = "m6rec", version, about)]
struct Cli {
    /// Compute threads for libtorch and data preparation (default: OMP_NUM_THREADS when set, as torchrun sets it
    /// for each rank; else all cores). 1 to 1024.
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum Command {
    /// Import data into an m6rec dataset directory: any event log (CSV, TSV, JSON lines, Parquet) with an item
    /// table, Amazon reviews, or a research format (movielens, recbole, seqtext, unisrec).
    Import(import::ImportArgs),
    /// From a raw log (or a dataset) to a trained, evaluated model in one command: import, features, train with the
    /// automatic strategy within --budget, eval; prints the `m6rec serve` line.
    Run(run::RunArgs),
    /// One self-contained HTML report of a run: dataset profile, config, training curves, test metrics against
    /// popularity, example recommendations with titles and thumbnails.
    Report(report::ReportArgs),
    /// Decode every item's image and audio once, in parallel, into a feature cache beside the dataset.
    Features(features::FeaturesArgs),
    /// Train the sequence model with chronological leave-one-out validation and early stopping.
    Train(train::TrainArgs),
    /// Evaluate a checkpoint (and the popularity baseline) with full ranking on the test or validation targets.
    Eval(eval::EvalArgs),
    /// Top-k recommendations for a known user or for a new user's history.
    Recommend(recommend::RecommendArgs),
    /// Search training strategies: trials of `m6rec train` over a search space (random or TPE; ASHA), within a time
    /// budget, resumable; writes a results table, a plot and the best config.
    Tune(tune::TuneArgs),
    /// Adapt a pretrained model to a new domain: soft prompts on the frozen model (parameter-efficient), full
    /// fine-tuning, or from scratch, for comparison.
    Adapt(adapt::AdaptArgs),
    /// Fine-tune a checkpoint on new interactions (a CSV, or the journal of `m6rec serve`) with replay of older data;
    /// writes a new checkpoint and dataset beside the old ones.
    Update(update::UpdateArgs),
    /// Serve recommendations over HTTP (JSON; OpenAPI at /openapi.json); items and events posted live are persisted.
    Serve(serve::ServeArgs),
    /// Write the generated demo dataset (RecBole atomic files) that `fixtures/demo` holds.
    Synth {
        /// Output folder.
        #[arg(short, long)]
        out: PathBuf,
        /// Also write each item's image (`images/<id>.png`) and audio clip (`audio/<id>.wav`), whose content names
        /// the item's series and part; import them with `--images`/`--audio`.
        #[arg(long)]
        media: bool,
        /// Write only the media (the interactions and items are committed in `fixtures/demo`).
        #[arg(long, requires = "media")]
        media_only: bool,
    },
    /// Print what this build links: libtorch version, CUDA, threads.
    Doctor,
}

/// Keeps freed memory in glibc's heap instead of returning it to the OS after every large tensor.
///
/// libtorch allocates and frees multi-megabyte buffers at every step; glibc serves those with `mmap`/`munmap`, and the
/// page faults that follow cost about a fifth of training time on CPU (measured: 470 vs 590 sequences/s on ml-100k).
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; it is called once, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

/// Logging is the binary's decision too: the libraries' `tracing` events (a journal record skipped at replay, a
/// reload refused, the top-k index tuned) go to stderr at the level `M6REC_LOG` names (`error`, `warn`, `info`, the
/// default, `debug`, `trace`).
fn init_logging() {
    use std::io::IsTerminal;
    let level = std::env::var("M6REC_LOG")
        .ok()
        .and_then(|v| v.trim().parse::<tracing_subscriber::filter::LevelFilter>().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_max_level(level)
        .with_target(false)
        .try_init();
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    init_logging();
    let omp = std::env::var("OMP_NUM_THREADS").ok().and_then(|v| v.trim().parse::<usize>().ok());
    let threads = cli
        .threads
        .map(usize::from)
        .or(omp)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
        .clamp(1, 1024);
    // Threads are the binary's decision (STYLE rule 12): libtorch's pool and rayon's pool, once.
    tch::set_num_threads(i32::try_from(threads).unwrap_or(1));
    let _ = rayon::ThreadPoolBuilder::new().num_threads(threads).build_global();
    let res = match cli.command {
        Command::Import(a) => import::import(&a),
        Command::Run(a) => run::run(&a, threads),
        Command::Report(a) => report::report(&a),
        Command::Features(a) => features::features(&a),
        Command::Train(a) => train::train(&a),
        Command::Eval(a) => eval::eval(&a),
        Command::Recommend(a) => recommend::recommend(&a),
        Command::Serve(a) => serve::serve(&a),
        Command::Tune(a) => tune::tune(&a, threads),
        Command::Update(a) => update::update(&a),
        Command::Adapt(a) => adapt::adapt(&a),
        Command::Synth { out, media, media_only } => synth::synth(&out, media, media_only),
        Command::Doctor => synth::doctor(threads),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
