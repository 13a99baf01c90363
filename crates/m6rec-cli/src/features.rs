//! `m6rec features`: the feature cache of a dataset (text, image and audio embeddings).

use crate::common::{contains, load_dataset};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Args)]
pub struct FeaturesArgs {
    /// Dataset directory (from `m6rec import`).
    data: PathBuf,
    /// Cache directory (default: `<dataset>.features`, beside the dataset).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// TOML with a `[features]` table (`[features.image]` size, resize, mean, std; `[features.audio]` sample_rate,
    /// n_fft, hop, n_mels, seconds, top_db); defaults when absent.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also embed each item's text (`title. text`) with this frozen Hugging Face encoder folder, for example
    /// `.m6rec/models/all-MiniLM-L6-v2` (overrides `[features.text]`).
    #[arg(long)]
    text_model: Option<PathBuf>,
    /// Print every bad file (default: the first 10 per modality).
    #[arg(long)]
    all_failed: bool,
}

#[derive(Debug, Default, serde::Deserialize)]
struct FeaturesFile {
    #[serde(default)]
    features: m6rec_features::FeatureConfig,
}

pub fn features(a: &FeaturesArgs) -> Result<()> {
    let ds = load_dataset(&a.data)?;
    let cfg = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str::<FeaturesFile>(&text).with_context(|| format!("parsing {}", p.display()))?.features
        }
        None => m6rec_features::FeatureConfig::default(),
    };
    let mut cfg = cfg;
    if let Some(model) = &a.text_model {
        let keep = cfg.text.take();
        cfg.text = Some(m6rec_features::TextFeatureConfig {
            model: model.clone(),
            max_len: keep.as_ref().map_or(256, |t| t.max_len),
            batch_size: keep.as_ref().map_or(32, |t| t.batch_size),
        });
    }
    let cache = a.cache.clone().unwrap_or_else(|| m6rec_features::default_cache_dir(&a.data));
    if contains(&cache, &a.data) {
        anyhow::bail!(
            "the cache {} contains the dataset {}: choose another --cache",
            cache.display(),
            a.data.display()
        );
    }
    m6rec_features::FEATURES_DIR.check_replaceable(&cache).context("the feature cache")?;
    let start = Instant::now();
    let progress = crate::progress::FeatureProgress::new();
    let report = m6rec_features::build(&a.data, &ds, &cache, &cfg, &progress)
        .with_context(|| format!("building the feature cache {} for {}", cache.display(), a.data.display()))?;
    let secs = start.elapsed().as_secs_f64();
    for (name, r) in [("images", &report.image), ("audio", &report.audio)] {
        println!(
            "{name:<6} {} of {} items have a file: {} decoded, {} unchanged (reused), {} unusable",
            r.with_media,
            ds.n_items(),
            r.decoded,
            r.reused,
            r.failed.len()
        );
        let shown = if a.all_failed { r.failed.len() } else { 10 };
        for b in r.failed.iter().take(shown) {
            println!("  {b}");
        }
        if r.failed.len() > shown {
            println!("  ... and {} more (--all-failed lists them all)", r.failed.len() - shown);
        }
    }
    if cfg.text.is_some() {
        let t = &report.text;
        println!(
            "text   {} of {} items have text: {} embedded, {} unchanged (reused)",
            t.with_media,
            ds.n_items(),
            t.decoded,
            t.reused
        );
    }
    println!("wrote {} in {secs:.1}s", cache.display());
    Ok(())
}
