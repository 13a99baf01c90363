//! `m6rec train` and `m6rec eval` for runs with `[generative]`: semantic IDs from the text feature cache, the
//! code-token model, beam search (see `m6rec_train::generative`).

use crate::progress::plain;
use crate::table::metrics_table;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use m6rec_data::Dataset;
use m6rec_train::eval::{evaluate, EvalOptions, Stage, Targets};
use m6rec_train::generative::{text_content, Generative, Progress};
use m6rec_train::metrics::Metrics;
use m6rec_train::{Popularity, RunConfig};
use std::path::Path;
use std::time::Instant;

/// Where a generative run reads and writes.
pub(crate) struct Paths<'a> {
    pub data: &'a Path,
    pub features: Option<&'a Path>,
    pub out: &'a Path,
    pub force: bool,
}

pub(crate) fn train(
    cfg: RunConfig,
    ds: &Dataset,
    p: Paths<'_>,
    until: Option<usize>,
    device: tch::Device,
) -> Result<()> {
    if Generative::is_checkpoint(p.out) && !p.force {
        bail!("{} holds a generative run already: --resume continues it, --force replaces it", p.out.display());
    }
    let content = text_content(p.data, p.features, ds).context("reading the text embeddings for semantic IDs")?;
    let fit = Instant::now();
    let mut g = Generative::init(cfg, &content, device).context("fitting semantic IDs")?;
    if let Ok(data) = std::fs::canonicalize(p.data) {
        g.set_data_path(&data);
    }
    let ids = g.semantic_ids();
    let s = &ids.stats;
    println!(
        "semantic IDs ({}) for {} items in {:.1}s: {} levels x {} codes + a collision level (largest group {}, {:.1}% of items collide)",
        match ids.config.method {
            m6rec_semantic::Method::Kmeans => "residual k-means",
            m6rec_semantic::Method::Rqvae => "RQ-VAE",
        },
        ids.len(),
        fit.elapsed().as_secs_f64(),
        ids.config.levels,
        ids.config.codes,
        s.max_collisions,
        100.0 * s.collision_rate
    );
    for (l, level) in s.levels.iter().enumerate() {
        println!(
            "  level {}: perplexity {:.1}, {} codes used, {} dead, {} re-initialised, residual {:.3}",
            l + 1,
            level.perplexity,
            level.used,
            level.dead,
            level.reinitialised,
            level.residual
        );
    }
    fit_and_report(&mut g, ds, &p, until)
}

/// `m6rec train --resume` of a paused generative run in `p.out`.
pub(crate) fn resume(ds: &Dataset, p: Paths<'_>, until: Option<usize>, device: tch::Device) -> Result<()> {
    let mut g = Generative::resume(p.out, device).with_context(|| format!("resuming {}", p.out.display()))?;
    let done = g.history.last().map_or(0, |e| e.epoch);
    println!("resuming {} after epoch {done}", p.out.display());
    fit_and_report(&mut g, ds, &p, until)
}

fn fit_and_report(g: &mut Generative, ds: &Dataset, p: &Paths<'_>, until: Option<usize>) -> Result<()> {
    let split = g.config().split(&ds.interactions, ds.n_users(), ds.n_items());
    let t = g.config().train.clone();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} train [{bar:30}] {pos}/{len} steps {per_sec} ETA {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    plain(&bar, "train", "steps");
    let started = Instant::now();
    let res = g.fit_until(&split, Some(p.out), until, &mut |ev| match ev {
        Progress::Step { epoch, done, total, loss } => {
            if bar.length() == Some(0) {
                bar.set_length((t.epochs * total) as u64);
            }
            if done == 1 {
                bar.set_message(format!("epoch {epoch}/{}", t.epochs));
            }
            let _ = loss;
            bar.inc(1);
        }
        Progress::Epoch(e) => {
            let line = format!(
                "epoch {:>3}  loss {:.4}  valid NDCG@10 {:.4}  HR@10 {:.4}  {:.0} seq/s  {:.0} tok/s  {:.0}s",
                e.epoch, e.loss, e.valid_ndcg10, e.valid_hr10, e.seqs_per_sec, e.tokens_per_sec, e.elapsed
            );
            if bar.is_hidden() {
                println!("{line}");
            } else {
                bar.println(line);
            }
        }
    });
    bar.finish_and_clear();
    res.with_context(|| format!("training into {}", p.out.display()))?;
    let best = g.history.iter().find(|e| e.epoch == g.best_epoch).map_or(0.0, |e| e.valid_ndcg10);
    println!(
        "done in {:.1}s ({}): best validation NDCG@10 {best:.4} at epoch {} (sampled users)",
        started.elapsed().as_secs_f64(),
        g.stop_reason.as_deref().unwrap_or(""),
        g.best_epoch
    );
    println!("checkpoint: {}", p.out.display());
    Ok(())
}

/// Options of `m6rec eval` a generative checkpoint uses.
pub(crate) struct EvalPaths<'a> {
    pub checkpoint: &'a Path,
    pub ds: &'a Dataset,
    pub stage: Stage,
    pub filter_history: bool,
    pub no_baseline: bool,
    pub json: Option<&'a Path>,
}

pub(crate) fn eval(p: EvalPaths<'_>, device: tch::Device) -> Result<()> {
    let g = Generative::load(p.checkpoint, device).with_context(|| format!("loading {}", p.checkpoint.display()))?;
    let ds = p.ds;
    if g.n_items() < ds.n_items() {
        bail!(
            "{} has semantic IDs for {} items, the dataset {}: evaluate on the dataset it was trained on",
            p.checkpoint.display(),
            g.n_items(),
            ds.n_items()
        );
    }
    let split = g.config().split(&ds.interactions, ds.n_users(), ds.n_items());
    let opts = EvalOptions { filter_history: p.filter_history, batch_size: 256, targets: Targets::All };
    // With cold items (held out of training, codes from their content), also the cold and the warm targets apart.
    let groups: &[(Targets, &str)] = if split.n_cold() > 0 {
        &[(Targets::All, ""), (Targets::Cold, " (cold targets)"), (Targets::Warm, " (warm targets)")]
    } else {
        &[(Targets::All, "")]
    };
    let pop = match p.stage {
        Stage::Valid => Popularity::fit_train(&split, ds.n_items()),
        Stage::Test => Popularity::fit_before_test(&split, ds.n_items()),
    };
    let started = Instant::now();
    let mut rows: Vec<(String, Metrics)> = vec![("model".into(), evaluate(&g.scorer(), &split, p.stage, opts)?)];
    let secs = started.elapsed().as_secs_f64();
    if !p.no_baseline {
        rows.push(("popularity".into(), evaluate(&pop, &split, p.stage, opts)?));
    }
    for &(targets, label) in &groups[1..] {
        let opts = EvalOptions { targets, ..opts };
        rows.push((format!("model{label}"), evaluate(&g.scorer(), &split, p.stage, opts)?));
        if !p.no_baseline {
            rows.push((format!("popularity{label}"), evaluate(&pop, &split, p.stage, opts)?));
        }
    }
    if split.n_cold() > 0 {
        println!(
            "cold-start evaluation: {} items were held out of training; cold targets are rows marked so",
            split.n_cold()
        );
    }
    let beam = g.config().generative.as_ref().map_or(0, |c| c.beam);
    println!(
        "{:?} metrics on {} ({} users), generative retrieval (beam {beam}: items outside the beam are misses), \
         full catalog of {} items, history {}, split {} ({:.1}s, {:.0} users/s):",
        p.stage,
        ds.name,
        rows[0].1.n_users,
        ds.n_items(),
        if p.filter_history { "filtered" } else { "not filtered" },
        split.describe(),
        secs,
        rows[0].1.n_users as f64 / secs.max(1e-9)
    );
    let refs: Vec<(&str, &Metrics)> = rows.iter().map(|(n, m)| (n.as_str(), m)).collect();
    print!("{}", metrics_table(&refs));
    if let Some(path) = p.json {
        let obj: serde_json::Map<String, serde_json::Value> =
            rows.iter().map(|(n, m)| (n.to_string(), serde_json::to_value(&m.values).unwrap_or_default())).collect();
        m6rec_tensor::atomic::write_bytes(path, serde_json::to_string_pretty(&obj)?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
