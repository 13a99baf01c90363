//! Generative retrieval against catalog size (`cargo xtask bench generative`): for generated catalogs of 1k, 10k and
//! 100k items, fits semantic IDs (residual k-means, 3 x 256 and a collision level) on 384-wide text-like content
//! (vectors around 500 centres, unit length, as MiniLM gives), builds the code-token model (d_model 64, 2 layers,
//! max_len 50, random weights: beam search costs the same whatever the weights), and measures
//! - the output layer's size (the code-token table the decoder scores against) next to the id table a next-item
//!   model of the same width needs, and the process's resident memory;
//! - beam-search latency of one request (a 30-item history, batch of 1: p50 / p99 over `--requests`) and throughput
//!   of batches of 64 users, at each beam width of `--beams`.
//!
//! Usage: bench-generative [--sizes 1000,10000,100000] [--beams 10,20] [--requests 200] [--threads 2] [--json PATH]

use anyhow::{Context, Result};
use m6rec_benches::rss_mib;
use m6rec_model::SeqRecConfig;
use m6rec_recommender::generative::{output_rows, GenerativeConfig, GenerativeModel};
use m6rec_semantic::{SemanticIdConfig, SemanticIds};
use serde_json::{json, Value};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn list(args: &[String], name: &str, default: &str) -> Result<Vec<usize>> {
    arg(args, name, default.to_string())
        .split(',')
        .map(|s| s.trim().parse::<usize>().with_context(|| format!("{name}: {s:?} is not a number")))
        .collect()
}

/// `[n, 384]` unit vectors around 500 centres.
fn content(n: i64) -> Tensor {
    tch::manual_seed(3);
    let centres = Tensor::randn([500, 384], (Kind::Float, Device::Cpu));
    let pick = Tensor::randint(500, [n], (Kind::Int64, Device::Cpu));
    let x = centres.index_select(0, &pick) + Tensor::randn([n, 384], (Kind::Float, Device::Cpu)) * 0.6;
    &x / x.norm_scalaropt_dim(2.0, [1], true)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0.0)
}

/// Histories of 30 items, deterministic.
fn histories(n: usize, count: usize) -> Vec<Vec<u32>> {
    (0..count).map(|u| (0..30).map(|t| ((u * 7919 + t * 104_729) % n) as u32).collect()).collect()
}

fn beam_row(g: &GenerativeModel, n: usize, beam: usize, requests: usize) -> Result<Value> {
    let single = histories(n, requests);
    let _ = g.beams(&[&single[0]], beam)?; // warm-up
    let mut ms = Vec::with_capacity(requests);
    for h in &single {
        let t = Instant::now();
        let b = g.beams(&[h], beam)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(b[0].len() <= beam, "a beam of {beam} returned {} items", b[0].len());
    }
    ms.sort_by(f64::total_cmp);
    let batch = histories(n, 64 * 8);
    let rows: Vec<&[u32]> = batch.iter().map(Vec::as_slice).collect();
    let t = Instant::now();
    for chunk in rows.chunks(64) {
        g.beams(chunk, beam)?;
    }
    let users_per_s = rows.len() as f64 / t.elapsed().as_secs_f64();
    Ok(json!({
        "beam": beam,
        "p50_ms": percentile(&ms, 0.5),
        "p99_ms": percentile(&ms, 0.99),
        "users_per_s_batch64": users_per_s,
    }))
}

fn size_row(n: usize, beams: &[usize], requests: usize) -> Result<Value> {
    let rss_before = rss_mib();
    let x = content(i64::try_from(n)?);
    let t = Instant::now();
    let ids = SemanticIds::fit(&x, &SemanticIdConfig::default())?;
    let fit_s = t.elapsed().as_secs_f64();
    drop(x);
    let model = SeqRecConfig { d_model: 64, n_layers: 2, n_heads: 2, max_len: 50, dropout: 0.0, ..Default::default() };
    let gen = GenerativeConfig::default();
    let out_rows = output_rows(&ids, gen.reserve);
    let stats = ids.stats.clone();
    let g = GenerativeModel::new(&model, gen, ids, Device::Cpu)?;
    let params: i64 = g.vs().trainable_variables().iter().map(Tensor::numel).map(|v| v as i64).sum();
    let d = model.d_model as usize;
    let mut rows = Vec::new();
    for &beam in beams {
        rows.push(beam_row(&g, n, beam, requests)?);
    }
    let row = json!({
        "items": n,
        "fit_seconds": fit_s,
        "collision_rate": stats.collision_rate,
        "max_collisions": stats.max_collisions,
        "perplexity": stats.levels.iter().map(|l| l.perplexity).collect::<Vec<_>>(),
        "output_rows": out_rows,
        "output_bytes": out_rows * d * 4,
        "id_table_bytes": (n + 1) * d * 4,
        "model_parameters": params,
        "rss_mib": rss_mib(),
        "rss_added_mib": rss_mib() - rss_before,
        "beams": rows,
    });
    Ok(row)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let sizes = list(&args, "--sizes", "1000,10000,100000")?;
    let beams = list(&args, "--beams", "10,20")?;
    let requests: usize = arg(&args, "--requests", 200).max(1);
    tch::set_num_threads(arg(&args, "--threads", 2));
    let mut out = Vec::new();
    println!(
        "{:>8} {:>7} {:>9} {:>12} {:>12} {:>8}  beam: p50 / p99 ms, users/s (batches of 64)",
        "items", "fit s", "collide", "output KiB", "id table KiB", "RSS MiB"
    );
    for &n in &sizes {
        let row = size_row(n, &beams, requests)?;
        let kib = |k: &str| row[k].as_f64().unwrap_or(0.0) / 1024.0;
        let per_beam: Vec<String> = row["beams"]
            .as_array()
            .map(|b| {
                b.iter()
                    .map(|r| {
                        format!(
                            "{}: {:.2} / {:.2}, {:.0}",
                            r["beam"],
                            r["p50_ms"].as_f64().unwrap_or(0.0),
                            r["p99_ms"].as_f64().unwrap_or(0.0),
                            r["users_per_s_batch64"].as_f64().unwrap_or(0.0)
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "{:>8} {:>7.1} {:>8.1}% {:>12.0} {:>12.0} {:>8.0}  {}",
            n,
            row["fit_seconds"].as_f64().unwrap_or(0.0),
            100.0 * row["collision_rate"].as_f64().unwrap_or(0.0),
            kib("output_bytes"),
            kib("id_table_bytes"),
            row["rss_mib"].as_f64().unwrap_or(0.0),
            per_beam.join("; ")
        );
        out.push(row);
    }
    if let Some(path) = args.iter().position(|a| a == "--json").and_then(|i| args.get(i + 1)) {
        let text = serde_json::to_string_pretty(&json!({ "threads": arg(&args, "--threads", 2), "sizes": out }))?;
        std::fs::write(path, text).with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}
