//! Checkpoints: a directory, written atomically as a whole.
//!
//! | file | content |
//! |---|---|
//! | `config.json` | `format_version`, the [`RunConfig`], and the [`DatasetFingerprint`] it was trained on |
//! | `model.safetensors` | best weights so far (by validation NDCG@10): what `eval` and `recommend` load |
//! | `last.safetensors` | weights after the last finished epoch (for `--resume`) |
//! | `optim.safetensors` | optimizer state (moments, weight average) and step (for `--resume`) |
//! | `state.json` | [`TrainState`]: epoch, step, early-stopping counters, per-epoch history |
//! | `checksums.json` | SHA-256 of the three weights files, verified when each loads |
//! | `curves.svg` | training loss and validation NDCG@10 per epoch |

use crate::config::RunConfig;
use crate::error::io;
use crate::state::TrainState;
use crate::{Error, Result};
use m6rec_recommender::content::ItemContent;
use m6rec_recommender::Recommender;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{nn, Device, Tensor};

pub use m6rec_recommender::saved::{init_from, load_weights, DatasetFingerprint, CHECKPOINT_DIR, CHECKPOINT_VERSION};

/// A trained model ready for scoring: the one recommender type.
pub type LoadedModel = Recommender;

/// `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointConfig {
    /// [`CHECKPOINT_VERSION`].
    pub format_version: u32,
    /// The run's configuration.
    pub run: RunConfig,
    /// The training catalog.
    pub dataset: DatasetFingerprint,
}

/// Everything written into a checkpoint directory.
pub(crate) struct CheckpointParts<'a> {
    pub config: &'a CheckpointConfig,
    pub best: &'a [(String, Tensor)],
    pub vs: &'a nn::VarStore,
    pub optim: &'a [(String, Tensor)],
    pub state: &'a TrainState,
    /// Further files (name, content) that belong with these weights, such as the training curves.
    pub files: &'a [(&'a str, String)],
}

pub(crate) fn save(dir: &Path, parts: &CheckpointParts<'_>) -> Result<()> {
    m6rec_tensor::atomic::write_dir(dir, CHECKPOINT_DIR, |tmp| -> Result<()> {
        write_json(&tmp.join("config.json"), parts.config)?;
        write_json(&tmp.join("state.json"), parts.state)?;
        let st = |p: &Path, t: &[(String, Tensor)]| {
            Tensor::write_safetensors(t, p)
                .map_err(|e| Error::Checkpoint { path: p.to_path_buf(), reason: e.to_string() })
        };
        st(&tmp.join("model.safetensors"), parts.best)?;
        let last: Vec<(String, Tensor)> = parts.vs.variables().into_iter().collect();
        st(&tmp.join("last.safetensors"), &last)?;
        st(&tmp.join("optim.safetensors"), parts.optim)?;
        m6rec_recommender::saved::write_checksums(
            tmp,
            &["model.safetensors", "last.safetensors", "optim.safetensors"],
        )?;
        for (name, content) in parts.files {
            std::fs::write(tmp.join(name), content).map_err(io(&tmp.join(name)))?;
        }
        Ok(())
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Checkpoint { path: path.to_path_buf(), reason: e.to_string() })?;
    std::fs::write(path, text).map_err(io(path))
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> Result<T> {
    Ok(m6rec_recommender::saved::read_json(dir, name)?)
}

/// Reads `config.json`, checking the format version.
pub fn load_config(dir: &Path) -> Result<CheckpointConfig> {
    let cfg: CheckpointConfig = read_json(dir, "config.json")?;
    m6rec_recommender::saved::check_version(dir, cfg.format_version)?;
    cfg.run
        .validate(&dir.join("config.json"))
        .map_err(|e| Error::Checkpoint { path: dir.to_path_buf(), reason: format!("config.json is invalid: {e}") })?;
    // The recommender's own checks too (among them the bound on the model's size, before anything is allocated).
    m6rec_recommender::saved::read_config(dir)?;
    Ok(cfg)
}

/// Loads the best weights of a checkpoint for inference on `device` (a run without `[item_tower]`).
pub fn load_model(dir: &Path, device: Device) -> Result<Recommender> {
    Ok(Recommender::load(dir, device, None)?)
}

/// Loads the best weights of a checkpoint whose items come from an item tower over `content` (the same content it
/// was trained with: the feature cache of its dataset).
pub fn load_model_with_content(dir: &Path, device: Device, content: Option<&ItemContent>) -> Result<Recommender> {
    Ok(Recommender::load(dir, device, content)?)
}

/// Loads a checkpoint to score **another catalog** with no training (zero-shot transfer; see
/// [`Recommender::load_zero_shot`]).
pub fn load_model_zero_shot(dir: &Path, device: Device, content: &ItemContent) -> Result<Recommender> {
    Ok(Recommender::load_zero_shot(dir, device, content)?)
}
