//! m6rec's recipes, run as `cargo xtask <command>`. See <https://github.com/matklad/cargo-xtask/>.
//!
//! - `setup [--cuda]`: installs libtorch 2.13.0 from PyPI (idempotent) and links it where `.cargo/config.toml` expects it
//! - `build-cuda [--no-smoke]`: the CUDA libtorch, a `cuda` + `nccl` build, and a GPU smoke test when there is a GPU
//! - `doctor`: prints what was found
//! - `test [-- ARGS]`: setup, `cargo fmt --all -- --check` (without ARGS), then `cargo test --workspace` (without ARGS, stale build artifacts are pruned first)
//! - `demo [--data DIR]`: setup, then import, train, evaluate and recommend on the embedded demo data (or DIR)
//! - `download ml-100k|ml-1m`: fetches the official MovieLens archives, checksummed
//! - `bench quality --data DIR [--json PATH]`, `bench criterion`, `bench encoders [--json PATH]`, `bench catalog`,
//!   `bench serve`, `bench allreduce [--json PATH] [-- --mb 0.844,25]`: measurements

mod bench;
mod cuda;
mod download;
mod peers;
mod prune;
mod setup;
mod tidy;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "m6rec recipes")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install libtorch 2.13.0 (slim CPU build by default) into a per-user cache and link it into this checkout.
    Setup {
        /// Install the full CUDA-capable wheel (4.7 GB) instead of the slim CPU one.
        #[arg(long)]
        cuda: bool,
    },
    /// Install the CUDA-capable libtorch (4.7 GB), build `m6rec` with the `cuda` and `nccl` features, and run a GPU
    /// smoke test (one process vs data-parallel over NCCL) when a GPU is present.
    BuildCuda {
        /// Build only; skip the smoke test.
        #[arg(long)]
        no_smoke: bool,
    },
    /// Print the toolchain, libtorch and device this checkout uses.
    Doctor,
    /// Run the whole test suite (after setup): without arguments, first the gates: rustfmt, clippy -D warnings, the
    /// libraries' docs without warnings.
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Import, train, evaluate and recommend end to end (after setup).
    Demo {
        /// A dataset to use instead of the embedded demo: a MovieLens folder, a RecBole folder or a sequence file.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Run configuration (default: docs/configs/demo.toml, or docs/configs/movielens.toml for --data).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Download an official dataset archive (checksummed) and unpack it.
    Download {
        /// ml-100k or ml-1m.
        name: String,
        /// Folder to unpack into.
        #[arg(long, default_value = "data/raw")]
        out: PathBuf,
        /// Base URL replacing files.grouplens.org (a mirror, or a local server in tests).
        #[arg(long)]
        mirror: Option<String>,
    },
    /// Fuzz TARGET (or `all`) for N seconds from its committed corpus (`fixtures/fuzz/<target>`): panics and inputs
    /// over the memory bound are findings, saved under target/fuzz/findings. `cargo xtask fuzz list` names the
    /// targets; `-- replay TARGET FILE`, `-- input TARGET I -o FILE` and `-- seeds` reach the rest of `m6rec-fuzz`.
    Fuzz {
        /// A target, `all`, or `list`.
        target: String,
        /// Seconds per target.
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        /// Inputs per target at most.
        #[arg(long)]
        inputs: Option<u64>,
        /// The run's seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write the reports as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Other `m6rec-fuzz` commands, after `--` (then TARGET is ignored).
        #[arg(last = true)]
        extra: Vec<String>,
    },
    /// Kill `m6rec import`, `m6rec train` and `m6rec serve` with SIGKILL at random points, CYCLES times each, and
    /// check after every kill that the dataset or checkpoint loads (or is absent), nothing is left behind, and the
    /// service lost no acknowledged event (the suite runs 3 cycles of the same test).
    Crashtest {
        /// Kills of each command.
        #[arg(long, default_value_t = 100)]
        cycles: usize,
    },
    /// Measurements: `quality` (model vs popularity on a dataset), `criterion` (micro-benchmarks), `step` (where
    /// one training step's time goes, useful FLOP/s against the matmul roof), `catalog`
    /// (training throughput against catalog size, content tower vs id table), `encoders`
    /// (image/audio/text throughput against the Python pipelines), `serve` (HTTP latency under load from wrk) or
    /// `allreduce` (c10d all-reduce over loopback, 2 ranks: `-- --mb 0.844,25`) or `peers` (m6rec's automatic strategy
    /// against a plain PyTorch SASRec, same split, size and budget: `--data D --seconds 600`) or `import` (rows/s and
    /// peak memory importing a generated event log as CSV and Parquet: `-- --rows 10000000`) or `soak` (a steady
    /// client's latency and errors while ~1,000 hostile connections, slow, idle, oversized and bursty, hold the
    /// service, and its memory over time: `-- --seconds 300`).
    Bench(BenchArgs),
}

/// `cargo xtask bench`'s arguments.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// quality, criterion, encoders, catalog, step, serve, generative, soak, import, allreduce or peers.
    pub what: String,
    /// Dataset for `quality` (folder to import) and `step` (a dataset from `m6rec import`); for `encoders`, the
    /// shared data folder (default ../shared/data).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Threads for `encoders` and `peers`, on each side. Default 2.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Training budget of each side in `peers`, seconds. Default 600.
    #[arg(long, default_value_t = 600.0)]
    pub seconds: f64,
    /// Run configuration for `quality` and `step`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Also write the figures as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Passed to the `catalog`, `serve` and `allreduce` programs after `--`, for example
    /// `cargo xtask bench serve -- --sizes 10000,100000 --rate 200 --seconds 120`.
    #[arg(last = true)]
    pub extra: Vec<String>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The formatting gate of the whole-suite run: `cargo fmt --all -- --check`, installing rustfmt with rustup when the
/// toolchain lacks it. Fails with the command that fixes it.
fn fmt_gate(root: &std::path::Path) -> Result<()> {
    let has_fmt = cargo(root).args(["fmt", "--version"]).output().is_ok_and(|o| o.status.success());
    if !has_fmt {
        eprintln!("rustfmt is missing: rustup component add rustfmt");
        run_cmd(std::process::Command::new("rustup").args(["component", "add", "rustfmt"]))?;
    }
    run_cmd(cargo(root).args(["fmt", "--all", "--", "--check"]))
        .context("formatting differs from rustfmt's (diff above); run `cargo fmt --all` and commit the result")
}

/// `cargo clippy --workspace --all-targets -- -D warnings`, installing clippy when rustup lacks it.
fn clippy_gate(root: &std::path::Path) -> Result<()> {
    let has_clippy = cargo(root).args(["clippy", "--version"]).output().is_ok_and(|o| o.status.success());
    if !has_clippy {
        eprintln!("clippy is missing: rustup component add clippy");
        run_cmd(std::process::Command::new("rustup").args(["component", "add", "clippy"]))?;
    }
    run_cmd(cargo(root).args(["clippy", "--workspace", "--all-targets", "--quiet", "--", "-D", "warnings"]))
        .context("clippy found warnings (above); fix them, or allow one where it is wrong, with the reason")
}

/// The libraries' documentation builds without a warning (broken links, bad HTML, links to private items). The
/// binary's doc comments are its `--help` text, written for a terminal, so only libraries are checked.
fn doc_gate(root: &std::path::Path) -> Result<()> {
    let mut cmd = cargo(root);
    cmd.args(["doc", "--no-deps", "--workspace", "--lib", "--quiet"]).env("RUSTDOCFLAGS", "-Dwarnings");
    run_cmd(&mut cmd).context("the documentation has warnings (above); fix the links or the markup")
}

fn run(cli: Cli) -> Result<()> {
    let root = project_root();
    match cli.command {
        Cmd::Setup { cuda } => {
            setup::setup(&root, if cuda { setup::Variant::Cuda } else { setup::Variant::Cpu }).map(|_| ())
        }
        Cmd::BuildCuda { no_smoke } => cuda::build_cuda(&root, !no_smoke),
        Cmd::Doctor => setup::doctor(&root),
        Cmd::Test { args } => test(&root, &args),
        Cmd::Demo { data, config } => demo(&root, data.as_deref(), config.as_deref()),
        Cmd::Crashtest { cycles } => {
            setup::ensure(&root)?;
            let mut cmd = cargo(&root);
            cmd.args(["test", "-p", "m6rec-cli", "--test", "crash", "--", "--nocapture", "--test-threads", "1"]);
            run_cmd(cmd.env("M6REC_CRASH_CYCLES", cycles.to_string()))
        }
        Cmd::Fuzz { target, seconds, inputs, seed, json, extra } => {
            fuzz(&root, &target, seconds, inputs, seed, json.as_deref(), &extra)
        }
        Cmd::Download { name, out, mirror } => {
            let archive = download::Archive::named(&name)?;
            let dir = download::download(&archive, mirror.as_deref(), &root.join(out))?;
            println!("{} ready in {}", archive.name, dir.display());
            Ok(())
        }
        Cmd::Bench(b) => bench(&root, b),
    }
}

/// `cargo xtask test`: with no arguments the gates (fmt, clippy, doc), a build that drops stale artefacts, then every
/// test; with arguments, `cargo test --workspace` with them.
fn test(root: &Path, args: &[String]) -> Result<()> {
    setup::ensure(root)?;
    setup::ensure_browser()?;
    if args.is_empty() {
        fmt_gate(root)?;
        clippy_gate(root)?;
        doc_gate(root)?;
        // The whole workspace: build first, listing what the tree uses, and drop what it no longer uses.
        let (keep, dirs) = prune::build_and_list(cargo(root).args(["test", "--workspace", "--no-run"]))?;
        for deps in dirs {
            let pruned = prune::prune_deps(&deps, &keep)?;
            if pruned.files > 0 {
                eprintln!(
                    "pruned {} stale build artifacts ({:.1} GB) from {}",
                    pruned.files,
                    pruned.bytes as f64 / 1e9,
                    deps.display()
                );
            }
        }
    }
    let mut cmd = cargo(root);
    cmd.args(["test", "--workspace", "--no-fail-fast"]).args(args);
    run_cmd(&mut cmd)
}

/// `cargo xtask fuzz`: the fuzz binary over a target (or `all`, or `list`; `extra` replaces the arguments).
fn fuzz(
    root: &Path,
    target: &str,
    seconds: f64,
    inputs: Option<u64>,
    seed: u64,
    json: Option<&Path>,
    extra: &[String],
) -> Result<()> {
    setup::ensure(root)?;
    let mut cmd = cargo(root);
    cmd.args(["run", "--quiet", "-p", "m6rec-fuzz", "--"]);
    if !extra.is_empty() {
        cmd.args(extra);
    } else if target == "list" {
        cmd.arg("list");
    } else {
        cmd.args(["run", target, "--seconds", &seconds.to_string(), "--seed", &seed.to_string()]);
        if let Some(n) = inputs {
            cmd.args(["--inputs", &n.to_string()]);
        }
        if let Some(j) = json {
            cmd.arg("--json").arg(j);
        }
    }
    run_cmd(&mut cmd)
}

/// `cargo xtask bench WHAT`.
fn bench(root: &Path, b: BenchArgs) -> Result<()> {
    let BenchArgs { what, data, config, json, threads, seconds, extra } = b;
    match what.as_str() {
        "quality" => {
            let Some(data) = data else {
                bail!("`bench quality` needs --data DIR (for example ../shared/data/ml-100k)")
            };
            setup::ensure(root)?;
            bench::quality(root, &data, config.as_deref(), json.as_deref())
        }
        "criterion" => {
            setup::ensure(root)?;
            run_cmd(cargo(root).args(["bench", "-p", "m6rec-benches"]))
        }
        "encoders" => {
            setup::ensure(root)?;
            bench::encoders(root, data.as_deref(), threads, json.as_deref())
        }
        "peers" => {
            let Some(data) = data else {
                bail!("`bench peers` needs --data DIR (a dataset from `m6rec import`, or a folder to import)")
            };
            setup::ensure(root)?;
            peers::peers(root, &data, seconds, threads, json.as_deref())
        }
        "allreduce" => {
            setup::ensure(root)?;
            bench::allreduce(root, json.as_deref(), &extra)
        }
        "catalog" | "serve" | "step" | "import" | "soak" | "generative" => {
            setup::ensure(root)?;
            if what == "serve" {
                bench::ensure_wrk()?;
            }
            let bin = format!("bench-{what}");
            run_cmd(cargo(root).args(["build", "--quiet", "-p", "m6rec-benches", "--bin", &bin]))?;
            let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
            let mut cmd = std::process::Command::new(target.join("debug").join(&bin));
            if what == "catalog" || what == "step" || what == "generative" {
                cmd.args(["--threads", &threads.to_string()]);
            }
            if what == "step" {
                let data = data.as_ref().context("`bench step` needs --data DIR (a dataset from `m6rec import`)")?;
                cmd.arg("--data").arg(data);
                if let Some(c) = &config {
                    cmd.arg("--config").arg(c);
                }
            }
            if let Some(j) = &json {
                cmd.arg("--json").arg(j);
            }
            cmd.args(&extra);
            run_cmd(&mut cmd)
        }
        other => {
            bail!("unknown bench `{other}`: expected quality, criterion, encoders, catalog, step, serve, generative, soak, import, allreduce or peers")
        }
    }
}

/// The repository root.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// `cargo` (the one running us), in the project root.
pub fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root);
    cmd
}

/// Runs a command, echoing it, and fails with its exit status.
pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    );
    eprintln!("$ {shown}");
    let status = cmd.status().with_context(|| format!("starting `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Builds the CLI once and returns a command for the `m6rec` binary.
pub fn m6rec(root: &Path) -> Result<Command> {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if BUILT.get().is_none() {
        run_cmd(cargo(root).args(["build", "--quiet", "-p", "m6rec-cli"]))?;
        let _ = BUILT.set(());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let mut cmd = Command::new(target.join("debug").join("m6rec"));
    cmd.current_dir(root);
    Ok(cmd)
}

/// Guesses the import format of a path.
pub fn detect_format(data: &Path) -> Result<&'static str> {
    if data.is_file() {
        return Ok("seqtext");
    }
    if data.join("u.data").exists() || data.join("ratings.dat").exists() {
        return Ok("movielens");
    }
    let has_inter = std::fs::read_dir(data)
        .with_context(|| format!("reading {}", data.display()))?
        .filter_map(|e| e.ok())
        .any(|e| e.path().extension().is_some_and(|x| x == "inter"));
    if has_inter {
        return Ok("recbole");
    }
    bail!(
        "{}: not a MovieLens folder (u.data / ratings.dat), a RecBole folder (*.inter) or a sequence file",
        data.display()
    )
}

fn demo(root: &Path, data: Option<&Path>, config: Option<&Path>) -> Result<()> {
    setup::ensure(root)?;
    let (src, name) = match data {
        Some(d) => {
            (d.to_path_buf(), d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into()))
        }
        None => (root.join("fixtures/demo"), "demo".to_string()),
    };
    let format = detect_format(&src)?;
    let config = config.map(Path::to_path_buf).unwrap_or_else(|| {
        root.join(if data.is_some() { "docs/configs/movielens.toml" } else { "docs/configs/demo.toml" })
    });
    let run_dir = root.join("runs").join(&name);
    let (ds, ck) = (run_dir.join("data"), run_dir.join("model"));
    let p = |x: &Path| x.to_string_lossy().into_owned();
    if data.is_none() {
        // The embedded default is multimodal: generated images and audio clips, then the feature cache (MiniLM text).
        let media = run_dir.join("media");
        run_cmd(m6rec(root)?.args(["synth", "--media", "--media-only", "--out", &p(&media)]))?;
        let (images, audio) = (media.join("images"), media.join("audio"));
        run_cmd(m6rec(root)?.args(["import", format, &p(&src), "--out", &p(&ds)]).args([
            "--images",
            &p(&images),
            "--audio",
            &p(&audio),
        ]))?;
        let features = root.join("docs/configs/demo-features.toml");
        let text_model = root.join(".m6rec/models/all-MiniLM-L6-v2");
        run_cmd(m6rec(root)?.args(["features", &p(&ds), "--config", &p(&features), "--text-model", &p(&text_model)]))?;
    } else {
        run_cmd(m6rec(root)?.args(["import", format, &p(&src), "--out", &p(&ds)]))?;
    }
    run_cmd(m6rec(root)?.args(["train", "--data", &p(&ds), "--config", &p(&config), "--out", &p(&ck), "--force"]))?;
    let chart = run_dir.join("metrics.svg");
    run_cmd(m6rec(root)?.args(["eval", "--checkpoint", &p(&ck), "--data", &p(&ds), "--plot", &p(&chart)]))?;
    run_cmd(m6rec(root)?.args(["recommend", "--checkpoint", &p(&ck), "--data", &p(&ds), "--first", "3"]))?;
    println!(
        "\ndemo done: dataset {}, checkpoint {}; plots: {} (training curves), {} (metrics)",
        ds.display(),
        ck.display(),
        ck.join("curves.svg").display(),
        chart.display()
    );
    Ok(())
}
