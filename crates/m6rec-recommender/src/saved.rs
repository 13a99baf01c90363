//! What a checkpoint directory holds for a recommender: `config.json` (the part of the run it needs, and the catalog
//! it was trained on) and `model.safetensors` (the best weights). The trainer writes the rest (`m6rec-train`'s
//! `checkpoint` module documents the whole layout).

use crate::error::io;
use crate::{Error, RecommenderConfig, Result};
use m6rec_data::Dataset;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{nn, Tensor};

/// A checkpoint directory as m6rec writes it: only ever replaced by another (`.m6rec-checkpoint` marker; see
/// [`m6rec_tensor::atomic::DirKind`]).
pub const CHECKPOINT_DIR: m6rec_tensor::atomic::DirKind =
    m6rec_tensor::atomic::DirKind { name: "checkpoint", legacy: "state.json" };

/// Checkpoint format version written by this build.
pub const CHECKPOINT_VERSION: u32 = 1;

/// Identifies the catalog a model was trained on: its item ids, in order, define the output layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetFingerprint {
    /// Dataset name.
    pub name: String,
    /// Catalog size.
    pub n_items: usize,
    /// FNV-1a hash of the item ids in index order, hex.
    pub items_hash: String,
    /// Where the dataset was when the model was trained (absolute), so `m6rec serve` can find it without `--data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<std::path::PathBuf>,
}

impl DatasetFingerprint {
    /// Fingerprint of `ds`.
    pub fn of(ds: &Dataset) -> DatasetFingerprint {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for it in &ds.items {
            for b in it.id.bytes().chain(std::iter::once(0)) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        DatasetFingerprint { name: ds.name.clone(), n_items: ds.n_items(), items_hash: format!("{h:016x}"), path: None }
    }

    /// Errors unless `other` is the same catalog.
    pub fn check(&self, other: &DatasetFingerprint, ckpt: &Path) -> Result<()> {
        if self.n_items != other.n_items || self.items_hash != other.items_hash {
            return Err(Error::Checkpoint {
                path: ckpt.to_path_buf(),
                reason: format!(
                    "trained on dataset `{}` ({} items, hash {}), but this dataset is `{}` ({} items, hash {}); use the dataset the checkpoint was trained on",
                    self.name, self.n_items, self.items_hash, other.name, other.n_items, other.items_hash
                ),
            });
        }
        Ok(())
    }
}

/// The part of `config.json` a recommender reads: the format version, the run's model sections, and the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedConfig {
    /// [`CHECKPOINT_VERSION`].
    pub format_version: u32,
    /// The run's `[model]`, `[item_tower]`, `[content]` and `[domains]` (its other sections are the trainer's).
    pub run: RecommenderConfig,
    /// The training catalog.
    pub dataset: DatasetFingerprint,
}

/// Reads and deserialises `name` in checkpoint `dir`.
pub fn read_json<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> Result<T> {
    let path = dir.join(name);
    if !dir.is_dir() {
        return Err(Error::Checkpoint {
            path: dir.to_path_buf(),
            reason: "not found (train one with `m6rec train`)".into(),
        });
    }
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Checkpoint { path: dir.to_path_buf(), reason: format!("{name}: {e}") })
}

/// Checks a checkpoint's format version.
pub fn check_version(dir: &Path, version: u32) -> Result<()> {
    if version != CHECKPOINT_VERSION {
        return Err(Error::Checkpoint {
            path: dir.to_path_buf(),
            reason: format!("format_version {version} is not supported (this build reads {CHECKPOINT_VERSION})"),
        });
    }
    Ok(())
}

/// Reads `config.json`'s recommender part, checking the format version and every model field.
pub fn read_config(dir: &Path) -> Result<SavedConfig> {
    let cfg: SavedConfig = read_json(dir, "config.json")?;
    check_version(dir, cfg.format_version)?;
    cfg.run
        .validate()
        .map_err(|e| Error::Checkpoint { path: dir.to_path_buf(), reason: format!("config.json is invalid: {e}") })?;
    Ok(cfg)
}

/// Loads `file` (a safetensors file in `dir`) into `vs`, naming missing or mismatched variables.
pub fn load_weights(vs: &mut nn::VarStore, dir: &Path, file: &str) -> Result<()> {
    let path = dir.join(file);
    if !path.exists() {
        return Err(Error::Checkpoint { path: dir.to_path_buf(), reason: format!("{file} is missing") });
    }
    vs.load(&path).map_err(|e| Error::Checkpoint {
        path: dir.to_path_buf(),
        reason: format!("{file} does not fit the model in config.json ({e}); was it written with another config?"),
    })
}

/// Copies every variable of checkpoint `dir`'s best weights whose name and shape match one in `vs` (fine-tuning
/// from a model pretrained on another catalog). Returns `(copied, skipped)` variable names; catalog-sized tables
/// (`model.item_emb`, `tower.id_emb`) are the usual skips.
pub fn init_from(vs: &nn::VarStore, dir: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let path = dir.join("model.safetensors");
    let saved = Tensor::read_safetensors(&path)
        .map_err(|e| Error::Checkpoint { path: dir.to_path_buf(), reason: format!("model.safetensors: {e}") })?;
    let vars = vs.variables();
    let (mut copied, mut skipped) = (Vec::new(), Vec::new());
    tch::no_grad(|| {
        for (name, t) in saved {
            match vars.get(&name) {
                Some(v) if v.size() == t.size() => {
                    let mut v = v.shallow_clone();
                    v.copy_(&t.to_device(v.device()));
                    copied.push(name);
                }
                _ => skipped.push(name),
            }
        }
    });
    copied.sort();
    skipped.sort();
    Ok((copied, skipped))
}
