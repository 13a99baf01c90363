//! `cargo xtask bench quality`: popularity vs the model on one dataset, with the field's protocol
//! (chronological leave-one-out, full ranking over the catalog), history filtered and not.

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};
use std::path::Path;

fn read_json(p: &Path) -> Result<Value> {
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
    ]))?;
    let mut evals = Vec::new();
    for filtered in [false, true] {
        let out = work.join(if filtered { "eval-filtered.json" } else { "eval.json" });
        let mut cmd = crate::m6rec(root)?;
        let chart = out.with_extension("svg");
        cmd.args(["eval", "--checkpoint", &p(&ck), "--data", &p(&ds), "--json", &p(&out), "--plot", &p(&chart)]);
        if filtered {
            cmd.arg("--filter-history");
        }
        crate::run_cmd(&mut cmd)?;
        evals.push(read_json(&out)?);
    }
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
