//! Pretraining throughput against catalog size (`cargo xtask bench catalog`): training sequences per second of the
//! sequence model with a content tower (content_only over 384-wide text-like vectors, as MiniLM gives) and with a
//! plain id table, side by side, for generated catalogs of 1k, 10k and 100k items on the same users.
//!
//! `--loss sampled` trains with sampled softmax (1,024 uniform negatives plus the batch's targets), what a catalog of
//! 100k items calls for: a full softmax there computes 128 x 50 x 100k logits per step.
//!
//! Usage: bench-catalog [--sizes 1000,10000,100000] [--users 2000] [--threads 2] [--loss full|sampled] [--json PATH]

use anyhow::{Context, Result};
use m6rec_data::Split;
use m6rec_fusion::{FusionConfig, ItemTowerConfig, TowerMode};
use m6rec_train::checkpoint::DatasetFingerprint;
use m6rec_train::content::ItemContent;
use m6rec_train::{RunConfig, Silent, Trainer};
use serde_json::json;
use tch::{Device, Kind, Tensor};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn config(tower: bool, sampled: bool) -> RunConfig {
    let mut cfg = RunConfig::default();
    if sampled {
        cfg.model.loss = m6rec_model::LossConfig::SampledSoftmax { n_uniform: 1024, in_batch: true };
    }
    cfg.model.d_model = 64;
    cfg.model.max_len = 50;
    cfg.train.epochs = 1;
    cfg.train.batch_size = 128;
    cfg.train.warmup_steps = 10;
    cfg.item_tower =
        tower.then_some(ItemTowerConfig { mode: TowerMode::ContentOnly, fusion: FusionConfig::Mean, id_dropout: 0.0 });
    cfg
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let sizes: String = arg(&args, "--sizes", "1000,10000,100000".to_string());
    let users: usize = arg(&args, "--users", 2000);
    let threads: i32 = arg(&args, "--threads", 2);
    let loss: String = arg(&args, "--loss", "full".to_string());
    if loss != "full" && loss != "sampled" {
        anyhow::bail!("--loss takes full or sampled, got {loss:?}");
    }
    let sampled = loss == "sampled";
    let json_out: Option<String> = arg(&args, "--json", String::new()).into();
    tch::set_num_threads(threads);
    let mut rows = Vec::new();
    println!("{:>9} {:>16} {:>16} {:>7}", "items", "tower seq/s", "id-table seq/s", "ratio");
    for n in sizes.split(',').map(|s| s.trim().parse::<usize>()) {
        let n = n.context("--sizes takes comma-separated item counts")?;
        let split = Split::from_sequences(m6rec_benches::walk_sequences(n, users, 7));
        let fp = DatasetFingerprint { name: format!("gen-{n}"), n_items: n, items_hash: String::new(), path: None };
        let emb = Tensor::randn([n as i64, 384], (Kind::Float, Device::Cpu));
        let emb = &emb / emb.norm_scalaropt_dim(2, [1i64].as_slice(), true);
        let content = ItemContent::new(vec![emb], Tensor::ones([n as i64, 1], (Kind::Bool, Device::Cpu)), n)?;
        let rate = |tower: bool| -> Result<f64> {
            let mut t =
                Trainer::with_content(config(tower, sampled), fp.clone(), tower.then_some(&content), Device::Cpu)?;
            let state = t.fit(&split, None, &mut Silent)?;
            Ok(state.history.first().map_or(0.0, |r| r.seqs_per_sec))
        };
        let (tower, ids) = (rate(true)?, rate(false)?);
        println!("{n:>9} {tower:>16.1} {ids:>16.1} {:>6.2}x", tower / ids);
        rows.push(json!({"items": n, "tower_seqs_per_sec": tower, "id_table_seqs_per_sec": ids, "users": users, "loss": loss}));
    }
    if let Some(p) = json_out.filter(|p| !p.is_empty()) {
        std::fs::write(&p, serde_json::to_string_pretty(&json!({ "threads": threads, "rows": rows }))?)
            .with_context(|| format!("writing {p}"))?;
    }
    Ok(())
}
