//! `manifest.json`: what the cache holds and how it was made.

use std::path::Path;

use m6rec_audio::MelConfig;
use m6rec_image::ImageConfig;

use crate::{Error, Result};

/// The cache's format version.
pub const FORMAT_VERSION: u32 = 1;

/// How media become tensors (the `[features]` table of a run's TOML; both parts have defaults).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureConfig {
    /// Image decoding and preprocessing.
    #[serde(default)]
    pub image: ImageConfig,
    /// Audio decoding and log-mel spectrogram.
    #[serde(default)]
    pub audio: MelConfig,
    /// Text embeddings from a frozen pretrained encoder (none when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextFeatureConfig>,
}

/// Which frozen encoder embeds item text (`title. text`) into the cache.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextFeatureConfig {
    /// A Hugging Face BERT-family folder (`config.json`, `model.safetensors`, `tokenizer.json`), for example
    /// `.m6rec/models/all-MiniLM-L6-v2`.
    pub model: std::path::PathBuf,
    /// Truncation length in tokens. Default 256.
    #[serde(default = "default_text_len")]
    pub max_len: usize,
    /// Texts per forward pass. Default 32.
    #[serde(default = "default_text_batch")]
    pub batch_size: usize,
}

fn default_text_len() -> usize {
    256
}
fn default_text_batch() -> usize {
    32
}

/// The outcome for one item and modality.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Entry {
    /// The item's media path, as in the dataset.
    pub path: String,
    /// SHA-256 of the file's bytes (absent when the file could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Decoded: its row in the modality's tensor (which holds decoded items only, in item order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<usize>,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ItemEntry {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Entry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<Entry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Entry>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Manifest {
    pub format_version: u32,
    pub config: FeatureConfig,
    /// One entry per dataset item, in the dataset's order (= tensor rows).
    pub items: Vec<ItemEntry>,
}

impl Manifest {
    pub(crate) fn read(cache: &Path) -> Result<Manifest> {
        let path = cache.join("manifest.json");
        let bytes = std::fs::read(&path).map_err(|e| Error::Stale {
            path: cache.to_path_buf(),
            reason: format!("cannot read manifest.json ({e}); build it with `m6rec features <dataset-dir>`"),
        })?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| Error::Stale {
            path: cache.to_path_buf(),
            reason: format!("manifest.json is not valid ({e}); rebuild it with `m6rec features <dataset-dir>`"),
        })?;
        if m.format_version != FORMAT_VERSION {
            return Err(Error::Stale {
                path: cache.to_path_buf(),
                reason: format!(
                    "format_version {} (this build reads {FORMAT_VERSION}); rebuild with `m6rec features`",
                    m.format_version
                ),
            });
        }
        Ok(m)
    }
}
