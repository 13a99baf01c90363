//! `m6rec run SRC --budget 10m`: from a raw log (or a dataset) to a trained, evaluated model in one command.
//!
//! The steps are the subcommands a user would type, run as child processes of this binary (each with its own
//! progress, errors and exit status): `import` unless SRC is already a dataset, `features` when items have media or
//! a text encoder is at hand, `train` with the automatic strategy within the budget, `eval` (metrics table, JSON and
//! chart), `report` (one HTML file); then the `m6rec serve` line for the model is printed. Everything goes under
//! `--out` (`run.json` records where).

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// An event log (CSV, TSV, JSON lines, Parquet), Amazon reviews, a research dataset folder or file, or a dataset
    /// directory from `m6rec import`.
    src: PathBuf,
    /// Training time budget (`90s`, `10m`, `1h`).
    #[arg(long, default_value = "10m")]
    budget: String,
    /// Folder for the dataset (`data/`), the model (`model/`) and the metrics (default: runs/<name of SRC>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Import format when SRC is not a dataset (default: from SRC: `amazon` for Amazon reviews, `events` for other
    /// tables, `recbole`, `movielens` or `unisrec` for their folders, `seqtext` for `.txt`).
    #[arg(long)]
    format: Option<String>,
    /// Text encoder for item text (default: `.m6rec/models/all-MiniLM-L6-v2` when it exists; `none`: no text).
    #[arg(long)]
    text_model: Option<PathBuf>,
    /// Device: cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Replace an earlier `m6rec run` in --out.
    #[arg(long)]
    force: bool,
    /// Flags for `m6rec import` (column names, item table, filters), after `--`: `-- --user uid --item sku`.
    #[arg(last = true)]
    import_args: Vec<String>,
}

/// The import format SRC looks like, or `None` when SRC is a dataset already.
fn detect(src: &Path) -> Result<Option<&'static str>> {
    if src.join("dataset.json").is_file() {
        return Ok(None);
    }
    if src.is_dir() {
        let has = |ext: &str| {
            std::fs::read_dir(src)
                .map(|d| d.filter_map(|e| e.ok()).any(|e| e.path().extension().is_some_and(|x| x == ext)))
                .unwrap_or(false)
        };
        return Ok(Some(if src.join("u.data").is_file() || src.join("ratings.dat").is_file() {
            "movielens"
        } else if has("inter") && has("text") {
            "unisrec"
        } else if has("inter") {
            "recbole"
        } else {
            bail!(
                "{}: a folder that is neither a dataset (dataset.json) nor MovieLens, RecBole or UniSRec files; \
                 name the file to import, or --format",
                src.display()
            )
        }));
    }
    let name = src.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if name.ends_with(".txt") {
        return Ok(Some("seqtext"));
    }
    let json = [".json", ".jsonl", ".json.gz", ".jsonl.gz"].iter().any(|e| name.ends_with(e));
    if json && m6rec_data::import::AmazonLayout::detect(src).is_ok() {
        return Ok(Some("amazon"));
    }
    if m6rec_data::import::TableFormat::from_path(src).is_some() {
        return Ok(Some("events"));
    }
    bail!("{}: cannot tell what this is from its name; name the import format with --format", src.display())
}

fn step(what: &str, args: &[String]) -> Result<()> {
    step_logged(what, args, None)
}

/// Runs `m6rec ARGS`; with `log`, its standard output is also copied, line by line, into that file.
fn step_logged(what: &str, args: &[String], log: Option<&Path>) -> Result<()> {
    use std::io::{BufRead, Write};
    let exe = std::env::current_exe().context("finding the m6rec binary")?;
    println!("\n== {what}: m6rec {}", args.join(" "));
    let mut cmd = Command::new(exe);
    cmd.args(args);
    let status = match log {
        None => cmd.status().with_context(|| format!("starting `m6rec {what}`"))?,
        Some(path) => {
            let mut file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
            let mut child =
                cmd.stdout(std::process::Stdio::piped()).spawn().with_context(|| format!("starting `m6rec {what}`"))?;
            if let Some(out) = child.stdout.take() {
                for line in std::io::BufReader::new(out).lines().map_while(std::io::Result::ok) {
                    println!("{line}");
                    writeln!(file, "{line}").with_context(|| format!("writing {}", path.display()))?;
                }
            }
            child.wait().with_context(|| format!("waiting for `m6rec {what}`"))?
        }
    };
    if !status.success() {
        bail!("`m6rec {what}` failed ({status}); its message is above");
    }
    Ok(())
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

pub fn run(a: &RunArgs, threads: usize) -> Result<()> {
    m6rec_train::strategy::parse_duration(&a.budget).map_err(|e| anyhow::anyhow!("--budget: {e}"))?;
    let format = match &a.format {
        Some(f) => Some(f.clone()),
        None => detect(&a.src)?.map(str::to_string),
    };
    let name = a.src.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
    let name = name.split('.').next().filter(|n| !n.is_empty()).unwrap_or("run").to_string();
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(&name));
    if out.exists() && !a.force && out.join("model").exists() {
        bail!("{} holds an earlier run; pass --force to replace it, or choose another --out", out.display());
    }
    if crate::common::contains(&out, &a.src) {
        bail!("--out {} contains the input {}; write the run somewhere else", out.display(), a.src.display());
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let threads = vec!["--threads".to_string(), threads.to_string()];
    let data = match &format {
        None => a.src.clone(),
        Some(f) => {
            let data = out.join("data");
            let mut args = vec!["import".into(), f.clone(), s(&a.src), "--out".into(), s(&data)];
            args.extend(a.import_args.iter().cloned());
            step("import", &[args, threads.clone()].concat())?;
            data
        }
    };
    let ds = m6rec_data::Dataset::load(&data).with_context(|| format!("loading {}", data.display()))?;
    let media = ds.items.iter().any(|it| it.image.is_some() || it.audio.is_some());
    let has_text = ds.items.iter().any(|it| it.text.as_deref().is_some_and(|t| !t.trim().is_empty()));
    let text_model = match &a.text_model {
        Some(p) if p.as_os_str() == "none" => None,
        Some(p) => Some(p.clone()),
        None => Some(PathBuf::from(".m6rec/models/all-MiniLM-L6-v2")).filter(|p| p.join("config.json").exists()),
    };
    if media || (has_text && text_model.is_some()) {
        let mut args = vec!["features".into(), s(&data)];
        if let Some(m) = text_model.as_ref().filter(|_| has_text) {
            args.extend(["--text-model".into(), s(m)]);
        }
        step("features", &[args, threads.clone()].concat())?;
    }
    let model = out.join("model");
    let mut train = vec!["train".into(), "--data".into(), s(&data), "--budget".into(), a.budget.clone()];
    train.extend(["--out".into(), s(&model), "--device".into(), a.device.clone(), "--force".into()]);
    step_logged("train", &[train, threads.clone()].concat(), Some(&out.join("train.log")))?;
    let (json, chart) = (out.join("metrics.json"), out.join("metrics.svg"));
    let mut eval = vec!["eval".into(), "--checkpoint".into(), s(&model), "--data".into(), s(&data)];
    eval.extend(["--json".into(), s(&json), "--plot".into(), s(&chart), "--device".into(), a.device.clone()]);
    step("eval", &[eval, threads.clone()].concat())?;
    let record = crate::report::RunRecord {
        data: data.clone(),
        model: model.clone(),
        metrics: json.clone(),
        chart: chart.clone(),
    };
    crate::report::write_record(&out, &record)?;
    step("report", &[vec!["report".into(), s(&out)], threads].concat())?;
    let html = out.join("report.html");
    println!(
        "\nrun finished: dataset {}, model {}, metrics {} and {}, report {}",
        s(&data),
        s(&model),
        s(&json),
        s(&chart),
        s(&html)
    );
    println!("serve it with:\n  m6rec serve --checkpoint {} --addr 127.0.0.1:8080", s(&model));
    Ok(())
}
