//! What a checkpoint directory holds for a recommender: `config.json` (the part of the run it needs, and the catalog
//! it was trained on), `model.safetensors` (the best weights) and `checksums.json` (the SHA-256 of every weights file
//! as it was written). The trainer writes the rest (`m6rec-train`'s `checkpoint` module documents the whole layout).
//!
//! Weights are checked when they load: the file against its checksum ([`verify_checksum`]; checkpoints written before
//! checksums existed have none and skip this), then every floating-point variable for NaN and infinity. A corrupt or
//! diverged checkpoint is an error that names the file or the variables, never a model that answers with garbage.

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

/// The file of a checkpoint that holds its weights files' SHA-256 digests.
pub const CHECKSUMS: &str = "checksums.json";

/// `checksums.json`: hex SHA-256 of each weights file by file name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checksums {
    /// Always `sha256`.
    pub algorithm: String,
    /// File name → hex digest.
    pub files: std::collections::BTreeMap<String, String>,
}

fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `checksums.json` in `dir` for `files` (names inside `dir`), as a checkpoint is saved.
pub fn write_checksums(dir: &Path, files: &[&str]) -> Result<()> {
    let mut sums = Checksums { algorithm: "sha256".into(), files: Default::default() };
    for f in files {
        sums.files.insert((*f).to_string(), sha256_file(&dir.join(f))?);
    }
    let path = dir.join(CHECKSUMS);
    let text = serde_json::to_string_pretty(&sums)
        .map_err(|e| Error::Checkpoint { path: dir.to_path_buf(), reason: format!("{CHECKSUMS}: {e}") })?;
    std::fs::write(&path, text).map_err(io(&path))
}

/// Checks `file` in checkpoint `dir` against the digest `checksums.json` recorded when it was saved. A checkpoint
/// without `checksums.json` (written before they existed) passes; one that lists other files but not this one too.
pub fn verify_checksum(dir: &Path, file: &str) -> Result<()> {
    let sums_path = dir.join(CHECKSUMS);
    if !sums_path.exists() {
        return Ok(());
    }
    let sums: Checksums = read_json(dir, CHECKSUMS)?;
    if sums.algorithm != "sha256" {
        return Err(Error::Checkpoint {
            path: dir.to_path_buf(),
            reason: format!("{CHECKSUMS}: unknown algorithm {:?} (this build checks sha256)", sums.algorithm),
        });
    }
    let Some(expected) = sums.files.get(file) else { return Ok(()) };
    let actual = sha256_file(&dir.join(file))?;
    if &actual != expected {
        return Err(Error::Checkpoint {
            path: dir.to_path_buf(),
            reason: format!(
                "{file} is not the file that was saved (sha256 {actual}, {CHECKSUMS} says {expected}): it is corrupt; \
                 restore the checkpoint from a copy or train again"
            ),
        });
    }
    Ok(())
}

/// Errors when a floating-point variable of `vs` holds NaN or infinity (names the first few).
pub fn check_finite(vs: &nn::VarStore, dir: &Path, file: &str) -> Result<()> {
    let mut bad: Vec<String> = tch::no_grad(|| {
        vs.variables()
            .into_iter()
            .filter(|(_, t)| t.is_floating_point() && t.numel() > 0 && t.isfinite().all().int64_value(&[]) == 0)
            .map(|(name, _)| name)
            .collect()
    });
    if bad.is_empty() {
        return Ok(());
    }
    bad.sort();
    let n = bad.len();
    bad.truncate(5);
    Err(Error::Checkpoint {
        path: dir.to_path_buf(),
        reason: format!(
            "{file}: {n} variable(s) hold NaN or infinity ({}): the weights are corrupt or training diverged; \
             use an earlier checkpoint, or train again with a lower learning rate",
            bad.join(", ")
        ),
    })
}

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
    // A save killed between its two renames left the checkpoint under a hidden name: put it back first.
    m6rec_tensor::atomic::recover(dir, Some(CHECKPOINT_DIR));
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
    // Each size may be in range while their product is not (a catalog of 3e12 items once asked libtorch for 198 TB):
    // the parameters are counted before anything is allocated.
    let m = &cfg.run.model;
    let params = (|| {
        let items = i64::try_from(cfg.dataset.n_items).ok()?.checked_add(2)?;
        let table = items.checked_mul(m.d_model)?;
        let block = m
            .d_model
            .checked_mul(m.d_model)?
            .checked_mul(4)?
            .checked_add(m.d_model.checked_mul(m.d_ff())?.checked_mul(2)?)?;
        let blocks = block.checked_mul(m.n_layers)?;
        table.checked_add(blocks)?.checked_add(m.max_len.checked_mul(m.d_model)?)
    })();
    match params {
        Some(p) if p <= MAX_PARAMETERS => Ok(cfg),
        _ => Err(Error::Checkpoint {
            path: dir.to_path_buf(),
            reason: format!(
                "config.json describes a model of more than {MAX_PARAMETERS} parameters ({} items x d_model {}, {} layers): \
                 it is damaged, or not a checkpoint this machine could have written",
                cfg.dataset.n_items, m.d_model, m.n_layers
            ),
        }),
    }
}

/// Most parameters a checkpoint's config may describe: 2^32 (16 GiB of float32).
pub const MAX_PARAMETERS: i64 = 1 << 32;

/// Loads `file` (a safetensors file in `dir`) into `vs`, naming missing or mismatched variables.
pub fn load_weights(vs: &mut nn::VarStore, dir: &Path, file: &str) -> Result<()> {
    let path = dir.join(file);
    if !path.exists() {
        return Err(Error::Checkpoint { path: dir.to_path_buf(), reason: format!("{file} is missing") });
    }
    verify_checksum(dir, file)?;
    vs.load(&path).map_err(|e| Error::Checkpoint {
        path: dir.to_path_buf(),
        reason: format!(
            "{file} does not fit the model in config.json ({}); was it written with another config?",
            first_line(&e.to_string())
        ),
    })?;
    check_finite(vs, dir, file)
}

/// libtorch's messages carry C++ frames after their first line; users need the first.
fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// Copies every variable of checkpoint `dir`'s best weights whose name and shape match one in `vs` (fine-tuning
/// from a model pretrained on another catalog). Returns `(copied, skipped)` variable names; catalog-sized tables
/// (`model.item_emb`, `tower.id_emb`) are the usual skips.
pub fn init_from(vs: &nn::VarStore, dir: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let path = dir.join("model.safetensors");
    verify_checksum(dir, "model.safetensors")?;
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
