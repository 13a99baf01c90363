//! `cargo xtask bench peers`: m6rec's automatic strategy against a plain PyTorch SASRec (`scripts/bench/sasrec.py`,
//! full-softmax cross-entropy) on the same leave-one-out split, at the same model size, with the same time budget and
//! threads, one after the other: test NDCG@10 / HR@10 (history filtered and not), sequences and real tokens per
//! second, and validation NDCG@10 against wall time for both (`peers.svg`).

use crate::bench::read_json;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Runs the comparison; `data` is a dataset from `m6rec import` or a folder `cargo xtask bench quality` can import.
pub fn peers(root: &Path, data: &Path, seconds: f64, threads: usize, json_out: Option<&Path>) -> Result<()> {
    let name = data.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into());
    let work = root.join("target").join("bench-peers").join(&name);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let p = |x: &Path| x.to_string_lossy().into_owned();
    let ds: PathBuf = if data.join("dataset.json").is_file() {
        data.to_path_buf()
    } else {
        let format = crate::detect_format(data)?;
        let ds = work.join("data");
        crate::run_cmd(crate::m6rec(root)?.args(["import", format, &p(data), "--out", &p(&ds)]))?;
        ds
    };
    let (ours, config) = run_ours(root, &ds, &work, seconds, threads)?;
    let peer = run_peer(root, &ds, &work, &config, seconds, threads)?;

    let chart = work.join("peers.svg");
    std::fs::write(&chart, curves_svg(&[("m6rec", &ours["curve"]), ("PyTorch SASRec", &peer["curve"])]))
        .with_context(|| format!("writing {}", chart.display()))?;
    println!("\n{name}: {seconds:.0} s of training each on {threads} thread(s), same split and model size");
    println!(
        "{:<16} {:>8} {:>8} | {:>8} {:>8} (filtered) | {:>8} {:>9} {:>7} {:>6}",
        "", "NDCG@10", "HR@10", "NDCG@10", "HR@10", "seq/s", "tok/s", "padding", "epochs"
    );
    for (label, r) in [("m6rec", &ours), ("PyTorch SASRec", &peer)] {
        println!(
            "{label:<16} {:>8.4} {:>8.4} | {:>8.4} {:>8.4}            | {:>8.0} {:>9.0} {:>6.0}% {:>6}",
            f(&r["test"]["ndcg@10"]),
            f(&r["test"]["hr@10"]),
            f(&r["test_filtered"]["ndcg@10"]),
            f(&r["test_filtered"]["hr@10"]),
            f(&r["seqs_per_sec"]),
            f(&r["tokens_per_sec"]),
            100.0 * f(&r["padding"]),
            r["epochs"]
        );
    }
    let ratio = f(&ours["tokens_per_sec"]) / f(&peer["tokens_per_sec"]);
    println!("real tokens per second, m6rec / peer: {ratio:.2}x; validation NDCG@10 against time: {}", chart.display());
    if let Some(out) = json_out {
        let report = json!({"dataset": name, "seconds": seconds, "threads": threads, "m6rec": ours, "peer": peer, "tokens_per_sec_ratio": ratio});
        std::fs::write(out, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// m6rec's automatic strategy on `ds`: its report and the checkpoint's `config.json`.
fn run_ours(root: &Path, ds: &Path, work: &Path, seconds: f64, threads: usize) -> Result<(Value, Value)> {
    let p = |x: &Path| x.to_string_lossy().into_owned();
    let threads_s = threads.to_string();
    // m6rec, automatic strategy.
    let ck = work.join("m6rec");
    let summary = work.join("m6rec-train.json");
    eprintln!("== m6rec, automatic strategy, {seconds:.0} s on {threads} thread(s)");
    crate::run_cmd(crate::m6rec(root)?.args([
        "--threads",
        &threads_s,
        "train",
        "--data",
        &p(ds),
        "--budget",
        &format!("{seconds}s"),
        "--out",
        &p(&ck),
        "--summary-json",
        &p(&summary),
        "--force",
    ]))?;
    let evals = crate::bench::eval_both(root, &ck, ds, &work.join("m6rec-eval"), &["--threads", &threads_s], false)?;
    let config = read_json(&ck.join("config.json"))?;
    let state = read_json(&ck.join("state.json"))?;
    let history = state["history"].as_array().cloned().unwrap_or_default();
    let mean = |k: &str| {
        let v: Vec<f64> = history.iter().map(|e| f(&e[k])).filter(|x| x.is_finite()).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let ours = json!({
        "model": "m6rec, automatic strategy",
        "config": config["run"],
        "epochs": state["epoch"],
        "train_seconds": state["elapsed"],
        "seqs_per_sec": mean("seqs_per_sec"),
        "tokens_per_sec": mean("tokens_per_sec"),
        "padding": mean("padding"),
        "best_valid_ndcg10": state["best_ndcg10"],
        "curve": history.iter().map(|e| json!({"epoch": e["epoch"], "elapsed": e["elapsed"], "valid_ndcg10": e["valid_ndcg10"], "loss": e["loss"]})).collect::<Vec<_>>(),
        "test": {"ndcg@10": evals[0]["model"]["ndcg@10"], "hr@10": evals[0]["model"]["hr@10"]},
        "test_filtered": {"ndcg@10": evals[1]["model"]["ndcg@10"], "hr@10": evals[1]["model"]["hr@10"]},
    });
    Ok((ours, config))
}

/// The PyTorch SASRec on the same split (`bench-peers-split` writes it), size, lr and budget: its report.
fn run_peer(root: &Path, ds: &Path, work: &Path, config: &Value, seconds: f64, threads: usize) -> Result<Value> {
    let p = |x: &Path| x.to_string_lossy().into_owned();
    let threads_s = threads.to_string();
    let model = &config["run"]["model"];
    // The peer, same split, size and budget.
    let seqs = work.join("sequences.txt");
    crate::run_cmd(crate::cargo(root).args(["build", "--quiet", "-p", "m6rec-benches", "--bin", "bench-peers-split"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    crate::run_cmd(std::process::Command::new(target.join("debug").join("bench-peers-split")).args([
        "--data",
        &p(ds),
        "--out",
        &p(&seqs),
    ]))?;
    let python = crate::bench::bench_python()?;
    let peer_json = work.join("peer.json");
    let num = |v: &Value, default: f64| v.as_f64().unwrap_or(default).to_string();
    let train = &config["run"]["train"];
    eprintln!("== PyTorch SASRec (full-softmax cross-entropy), {seconds:.0} s on {threads} thread(s)");
    crate::run_cmd(
        std::process::Command::new(&python)
            .arg(root.join("scripts/bench/sasrec.py"))
            .args(["--sequences", &p(&seqs), "--json", &p(&peer_json)])
            .args(["--d", &num(&model["d_model"], 64.0), "--layers", &num(&model["n_layers"], 2.0)])
            .args(["--heads", &num(&model["n_heads"], 2.0), "--max-len", &num(&model["max_len"], 50.0)])
            .args(["--dropout", &num(&model["dropout"], 0.2), "--lr", &num(&config["run"]["optim"]["lr"], 1e-3)])
            .args(["--weight-decay", &num(&config["run"]["optim"]["weight_decay"], 0.01)])
            .args(["--batch", &num(&train["batch_size"], 128.0), "--warmup", &num(&train["warmup_steps"], 20.0)])
            .args(["--patience", &num(&train["patience"], 20.0), "--seed", &num(&train["seed"], 42.0)])
            .args(["--seconds", &seconds.to_string(), "--threads", &threads_s])
            .env("OMP_NUM_THREADS", &threads_s),
    )
    .context("the PyTorch peer failed")?;
    read_json(&peer_json)
}

/// A line chart of validation NDCG@10 (y) against seconds since the start of training (x), one line per run.
fn curves_svg(series: &[(&str, &Value)]) -> String {
    let (w, h, left, bottom, top, right) = (640.0, 360.0, 60.0, 40.0, 30.0, 150.0);
    let points: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|(_, c)| {
            c.as_array()
                .map(|a| {
                    a.iter()
                        .map(|e| (f(&e["elapsed"]), f(&e["valid_ndcg10"])))
                        .filter(|(x, y)| x.is_finite() && y.is_finite())
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    let xmax = points.iter().flatten().map(|p| p.0).fold(1.0, f64::max);
    let ymax = points.iter().flatten().map(|p| p.1).fold(1e-3, f64::max) * 1.1;
    let sx = |x: f64| left + x / xmax * (w - left - right);
    let sy = |y: f64| h - bottom - y / ymax * (h - bottom - top);
    let colours = ["#1f77b4", "#d62728"];
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"18\" font-size=\"14\">validation NDCG@10 against training time (s)</text>\n\
         <line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for i in 0..=4 {
        let (x, y) = (xmax * i as f64 / 4.0, ymax * i as f64 / 4.0);
        svg +=
            &format!("<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{x:.0}</text>\n", sx(x), h - bottom + 16.0);
        svg += &format!("<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{y:.3}</text>\n", left - 4.0, sy(y) + 4.0);
    }
    for (k, ((label, _), pts)) in series.iter().zip(&points).enumerate() {
        let c = colours[k % colours.len()];
        let path: Vec<String> = pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
        svg += &format!("<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>\n", path.join(" "));
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{c}\">{label}</text>\n",
            w - right + 10.0,
            top + 20.0 + 18.0 * k as f64
        );
    }
    svg + "</svg>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_has_one_line_per_run_and_scales_to_the_data() {
        let a = json!([{"elapsed": 10.0, "valid_ndcg10": 0.01}, {"elapsed": 20.0, "valid_ndcg10": 0.05}]);
        let b = json!([{"elapsed": 40.0, "valid_ndcg10": 0.02}, {"elapsed": 60.0, "valid_ndcg10": null}]);
        let svg = curves_svg(&[("m6rec", &a), ("peer", &b)]);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">m6rec<") && svg.contains(">peer<"));
        // The x axis ends at the longest run (40 s: the null point is dropped), the y axis above the best score.
        assert!(svg.contains(">40<"), "{svg}");
        assert!(svg.contains(">0.055<"), "{svg}");
    }
}
