//! Checkpoints: a directory, written atomically as a whole.
//!
//! | file | content |
//! |---|---|
//! | `config.json` | `format_version`, the [`RunConfig`], and the [`DatasetFingerprint`] it was trained on |
//! | `model.safetensors` | best weights so far (by validation NDCG@10): what `eval` and `recommend` load |
//! | `last.safetensors` | weights after the last finished epoch (for `--resume`) |
//! | `optim.safetensors` | optimizer state (moments, weight average) and step (for `--resume`) |
//! | `state.json` | [`TrainState`]: epoch, step, early-stopping counters, per-epoch history |
//! | `curves.svg` | training loss and validation NDCG@10 per epoch |

use crate::config::RunConfig;
use crate::error::io;
use crate::trainer::TrainState;
use crate::{Error, Result};
use m6rec_data::Dataset;
use m6rec_model::SeqRec;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{nn, Device, Tensor};

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
        crate::plot::training_curves(&tmp.join("curves.svg"), &parts.state.history)?;
        Ok(())
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Checkpoint { path: path.to_path_buf(), reason: e.to_string() })?;
    std::fs::write(path, text).map_err(io(path))
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> Result<T> {
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

/// Reads `config.json`, checking the format version.
pub fn load_config(dir: &Path) -> Result<CheckpointConfig> {
    let cfg: CheckpointConfig = read_json(dir, "config.json")?;
    if cfg.format_version != CHECKPOINT_VERSION {
        return Err(Error::Checkpoint {
            path: dir.to_path_buf(),
            reason: format!(
                "format_version {} is not supported (this build reads {CHECKPOINT_VERSION})",
                cfg.format_version
            ),
        });
    }
    cfg.run
        .validate(&dir.join("config.json"))
        .map_err(|e| Error::Checkpoint { path: dir.to_path_buf(), reason: format!("config.json is invalid: {e}") })?;
    Ok(cfg)
}

/// Loads `file` (a safetensors file in `dir`) into `vs`, naming missing or mismatched variables.
pub(crate) fn load_weights(vs: &mut nn::VarStore, dir: &Path, file: &str) -> Result<()> {
    let path = dir.join(file);
    if !path.exists() {
        return Err(Error::Checkpoint { path: dir.to_path_buf(), reason: format!("{file} is missing") });
    }
    vs.load(&path).map_err(|e| Error::Checkpoint {
        path: dir.to_path_buf(),
        reason: format!("{file} does not fit the model in config.json ({e}); was it written with another config?"),
    })
}

/// A trained model ready for scoring.
#[derive(Debug)]
pub struct LoadedModel {
    /// `config.json`.
    pub config: CheckpointConfig,
    /// Owns the variables.
    pub vs: nn::VarStore,
    /// The model.
    pub model: SeqRec,
    /// The item tower and its content, for runs with `[item_tower]`.
    pub items: Option<crate::content::ContentItems>,
    /// Domain embeddings, for runs with `[domains]` (give the items' domains with [`LoadedModel::set_item_domains`]).
    pub domains: Option<crate::domains::DomainEmbedding>,
}

impl LoadedModel {
    /// A scorer over the whole catalog (the item tower's table is computed once, here).
    pub fn scorer(&self) -> Result<crate::ModelScorer<'_>> {
        crate::scorer::scorer_for(&self.model, self.items.as_ref(), self.domains.as_ref(), self.vs.device())
    }

    /// The item table `[n_items, d_model]` the model scores against (item tower output or id embeddings, plus
    /// domain embeddings), without gradients.
    pub fn item_table(&self) -> Result<Tensor> {
        tch::no_grad(|| {
            let table = match &self.items {
                Some(items) => items.table_eval()?,
                None => self.model.item_embeddings().detach(),
            };
            match &self.domains {
                Some(d) => d.add(&table),
                None => Ok(table),
            }
        })
    }

    /// Embeddings `[n, d_model]` of items added after training (see [`crate::content::ContentItems::embed_new`]), in
    /// domains `domains` (one name per item). An error for a model without an item tower: ids alone cannot
    /// represent a new item.
    pub fn embed_new_items(
        &self,
        content: &crate::content::ItemContent,
        ids: &[i64],
        domains: &[&str],
    ) -> Result<Tensor> {
        let Some(items) = &self.items else {
            return Err(Error::NoData(
                "this model has no item tower (id embeddings only): it cannot embed new items; train with [item_tower] mode = \"content_only\" or \"hybrid\"".into(),
            ));
        };
        let rows = items.embed_new(content, ids)?;
        Ok(match (&self.domains, &self.config.run.domains) {
            (Some(d), Some(cfg)) => tch::no_grad(|| d.add_indexed(&rows, &cfg.index(domains))),
            _ => rows,
        })
    }

    /// Gives each catalog item's domain name; domains the model was not trained on share the "unknown" embedding.
    pub fn set_item_domains(&mut self, names: &[&str]) {
        if let (Some(d), Some(cfg)) = (&mut self.domains, &self.config.run.domains) {
            d.set_items(&cfg.index(names), self.vs.device());
        }
    }
}

/// Loads the best weights of a checkpoint for inference on `device` (a run without `[item_tower]`).
pub fn load_model(dir: &Path, device: Device) -> Result<LoadedModel> {
    load_model_with_content(dir, device, None)
}

/// Loads the best weights of a checkpoint whose items come from an item tower over `content` (the same content it
/// was trained with: the feature cache of its dataset).
pub fn load_model_with_content(
    dir: &Path,
    device: Device,
    content: Option<&crate::content::ItemContent>,
) -> Result<LoadedModel> {
    let config = load_config(dir)?;
    let mut vs = nn::VarStore::new(device);
    let model = SeqRec::init(&(vs.root() / "model"), &config.run.model, config.dataset.n_items)?;
    let items = match (&config.run.item_tower, content) {
        (Some(tower), Some(content)) => Some(crate::content::ContentItems::new(
            &(vs.root() / "tower"),
            tower,
            &config.run.content(),
            content,
            config.run.model.d_model,
        )?),
        (Some(_), None) => {
            return Err(Error::Checkpoint {
                path: dir.to_path_buf(),
                reason:
                    "this model reads items through an item tower: give it the dataset's feature cache (--features)"
                        .into(),
            })
        }
        (None, _) => None,
    };
    let domains = domain_embedding(&vs, &config)?;
    load_weights(&mut vs, dir, "model.safetensors")?;
    Ok(LoadedModel { config, vs, model, items, domains })
}

/// Loads a checkpoint to score **another catalog** with no training (zero-shot transfer): the run must read items
/// through a content tower (`content_only`, or `hybrid`, whose id embeddings are then unused), and `content` is the
/// new catalog's content, with the modalities the run was trained on. Checks nothing about the dataset fingerprint.
pub fn load_model_zero_shot(dir: &Path, device: Device, content: &crate::content::ItemContent) -> Result<LoadedModel> {
    let config = load_config(dir)?;
    let Some(tower) = &config.run.item_tower else {
        return Err(Error::Checkpoint {
            path: dir.to_path_buf(),
            reason: "this model has an id table and no item tower: it cannot score items it was not trained on; pretrain with [item_tower] mode = \"content_only\" or \"hybrid\"".into(),
        });
    };
    let mut vs = nn::VarStore::new(device);
    let model = SeqRec::init(&(vs.root() / "model"), &config.run.model, config.dataset.n_items)?;
    let trained = m6rec_tensor::dim::to_i64("n_items", config.dataset.n_items)?;
    let mut items = crate::content::ContentItems::for_new_catalog(
        &(vs.root() / "tower"),
        tower,
        &config.run.content(),
        content,
        config.run.model.d_model,
        trained,
    )?;
    let domains = domain_embedding(&vs, &config)?;
    load_weights(&mut vs, dir, "model.safetensors")?;
    items.set_seen(&[]);
    Ok(LoadedModel { config, vs, model, items: Some(items), domains })
}

fn domain_embedding(vs: &nn::VarStore, config: &CheckpointConfig) -> Result<Option<crate::domains::DomainEmbedding>> {
    match &config.run.domains {
        Some(d) if d.embed => Ok(Some(crate::domains::DomainEmbedding::new(
            &(vs.root() / "domains"),
            d.vocab.len(),
            config.run.model.d_model,
        )?)),
        _ => Ok(None),
    }
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
