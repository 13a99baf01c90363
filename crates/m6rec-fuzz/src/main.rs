//! `m6rec-fuzz`: runs the fuzz targets (see the crate docs). `cargo xtask fuzz` builds and runs it.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

#[global_allocator]
static ALLOC: m6rec_fuzz::alloc::Counting = m6rec_fuzz::alloc::Counting;

#[derive(Parser)]
#[command(about = "m6rec's fuzz targets, on stable Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Lists the targets.
    List,
    /// Fuzzes TARGET (or `all`, one after another) from its committed corpus.
    Run {
        target: String,
        /// Seconds per target.
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        /// Inputs per target at most.
        #[arg(long, default_value_t = u64::MAX)]
        inputs: u64,
        /// The run's seed (input i is a function of seed and i).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where findings are saved.
        #[arg(long, default_value = "target/fuzz/findings")]
        findings: PathBuf,
        /// Also write the reports as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Writes input INDEX of a run with SEED to OUT (an input that aborted the process, named in its message).
    Input {
        target: String,
        index: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Runs one saved input through TARGET, with its panic printed.
    Replay { target: String, input: PathBuf },
    /// Writes every target's seed inputs into OUT/<target>/ (the committed corpora: fixtures/fuzz).
    Seeds {
        #[arg(long, default_value = "fixtures/fuzz")]
        out: PathBuf,
    },
}

fn main() -> Result<()> {
    tch::set_num_threads(1);
    match Cli::parse().command {
        Command::List => {
            for t in m6rec_fuzz::targets::all() {
                println!("{:<20} {}", t.name, t.about);
            }
        }
        Command::Seeds { out } => write_seeds(&out)?,
        Command::Input { target, index, seed, out } => {
            let t = m6rec_fuzz::target(&target).map_err(anyhow::Error::msg)?;
            let mut corpus = m6rec_fuzz::load_corpus(&m6rec_fuzz::corpus_dir(t.name));
            if corpus.is_empty() {
                corpus = (t.seeds)();
            }
            let bytes = m6rec_fuzz::mutate::input(&corpus, t.dict, seed, index, m6rec_fuzz::MAX_INPUT_LEN);
            std::fs::write(&out, bytes).with_context(|| format!("writing {}", out.display()))?;
        }
        Command::Replay { target, input } => {
            let t = m6rec_fuzz::target(&target).map_err(anyhow::Error::msg)?;
            let bytes = std::fs::read(&input).with_context(|| format!("reading {}", input.display()))?;
            match m6rec_fuzz::replay(&t, &bytes) {
                Ok(()) => println!("accepted"),
                Err(e) => println!("refused: {e}"),
            }
        }
        Command::Run { target, seconds, inputs, seed, findings, json } => {
            run(&target, m6rec_fuzz::Budget { seconds, max_inputs: inputs }, seed, &findings, json.as_deref())?
        }
    }
    Ok(())
}

/// Fuzzes `target` (or all), printing a line per target and saving findings under `findings`.
fn run(target: &str, budget: m6rec_fuzz::Budget, seed: u64, findings: &Path, json: Option<&Path>) -> Result<()> {
    let targets = if target == "all" {
        m6rec_fuzz::targets::all()
    } else {
        vec![m6rec_fuzz::target(target).map_err(anyhow::Error::msg)?]
    };
    let mut reports = Vec::new();
    let mut failed = false;
    println!(
        "{:<20} {:>10} {:>9} {:>9} {:>8} {:>10} {:>12} {:>8}",
        "target", "inputs", "inputs/s", "accepted", "refused", "max peak", "slowest", "findings"
    );
    for t in &targets {
        let corpus = m6rec_fuzz::load_corpus(&m6rec_fuzz::corpus_dir(t.name));
        let r = m6rec_fuzz::run(t, &corpus, seed, budget, |r| {
            eprint!(
                "\r{}: {} inputs, {:.0}/s, {} findings   ",
                r.target,
                r.inputs,
                r.inputs as f64 / r.seconds.max(1e-9),
                r.n_findings
            );
        })
        .map_err(anyhow::Error::msg)?;
        eprint!("\r{:80}\r", "");
        println!(
            "{:<20} {:>10} {:>9.0} {:>9} {:>8} {:>9.1}M {:>6} @{:<5.0} {:>8}",
            r.target,
            r.inputs,
            r.inputs as f64 / r.seconds.max(1e-9),
            r.accepted,
            r.refused,
            r.max_peak as f64 / (1 << 20) as f64,
            r.slowest.0,
            r.slowest.1,
            r.n_findings
        );
        for f in &r.findings {
            std::fs::create_dir_all(findings).with_context(|| format!("creating {}", findings.display()))?;
            let p = findings.join(format!("{}-seed{}-input{}.bin", r.target, r.seed, f.index));
            std::fs::write(&p, &f.input).with_context(|| format!("writing {}", p.display()))?;
            println!(
                "  input {}: {} (saved as {}; replay: m6rec-fuzz replay {} {})",
                f.index,
                f.message,
                p.display(),
                r.target,
                p.display()
            );
        }
        failed |= r.n_findings > 0;
        reports.push(serde_json::json!({
            "target": r.target, "seed": r.seed, "inputs": r.inputs, "accepted": r.accepted, "refused": r.refused,
            "seconds": r.seconds, "max_peak_bytes": r.max_peak, "slowest_ms": r.slowest.1, "findings": r.n_findings,
        }));
    }
    if let Some(p) = json {
        std::fs::write(p, serde_json::to_string_pretty(&reports)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if failed {
        bail!("findings above");
    }
    Ok(())
}

fn write_seeds(out: &Path) -> Result<()> {
    for t in m6rec_fuzz::targets::all() {
        let dir = out.join(t.name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let seeds = (t.seeds)();
        if seeds.is_empty() {
            bail!("{}: no seeds could be made", t.name);
        }
        for (k, s) in seeds.iter().enumerate() {
            let p = dir.join(format!("seed-{k:02}.bin"));
            std::fs::write(&p, s).with_context(|| format!("writing {}", p.display()))?;
        }
        println!("{:<20} {} seeds, {} bytes", t.name, seeds.len(), seeds.iter().map(Vec::len).sum::<usize>());
    }
    Ok(())
}
