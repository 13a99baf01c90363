//! The in-memory dataset and its on-disk form (see `docs/formats.md`).

use crate::error::io;
use crate::table;
use crate::{Error, Interactions, Item, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// A dataset directory as m6rec writes it: only ever replaced by another (`.m6rec-dataset` marker; see
/// [`m6rec_tensor::atomic::DirKind`]).
pub const DATASET_DIR: m6rec_tensor::atomic::DirKind =
    m6rec_tensor::atomic::DirKind { name: "dataset", legacy: "dataset.json" };

/// The on-disk format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// `dataset.json`: what the directory holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Always [`FORMAT_VERSION`] when written by this build.
    pub format_version: u32,
    /// Short name (`ml-100k`, `demo`).
    pub name: String,
    /// Where it was imported from and how.
    pub source: String,
    /// Counts, for a quick look without reading the tables.
    pub n_users: usize,
    /// Number of items.
    pub n_items: usize,
    /// Number of interactions.
    pub n_interactions: usize,
    /// Distinct item domains, sorted.
    pub domains: Vec<String>,
}

/// A whole dataset: users (id map), items (catalog and id map) and interactions.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Name and provenance.
    pub name: String,
    /// Provenance, free text.
    pub source: String,
    /// External user id per dense user index.
    pub users: Vec<String>,
    /// Catalog, indexed by dense item index.
    pub items: Vec<Item>,
    /// Events in source order.
    pub interactions: Interactions,
}

impl Dataset {
    /// Number of items in the catalog.
    pub fn n_items(&self) -> usize {
        self.items.len()
    }
    /// Number of users.
    pub fn n_users(&self) -> usize {
        self.users.len()
    }

    /// The dataset's metadata record.
    pub fn meta(&self) -> Meta {
        let mut domains: Vec<String> = self.items.iter().map(|i| i.domain.clone()).collect();
        domains.sort();
        domains.dedup();
        Meta {
            format_version: FORMAT_VERSION,
            name: self.name.clone(),
            source: self.source.clone(),
            n_users: self.n_users(),
            n_items: self.n_items(),
            n_interactions: self.interactions.len(),
            domains,
        }
    }

    /// Map from external item id to dense index.
    pub fn item_index(&self) -> HashMap<&str, u32> {
        self.items.iter().zip(0u32..).map(|(it, i)| (it.id.as_str(), i)).collect()
    }

    /// Dense index of an external item id.
    pub fn item_idx(&self, id: &str) -> Result<u32> {
        self.items
            .iter()
            .position(|it| it.id == id)
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| Error::UnknownItem(id.to_string()))
    }

    /// Dense index of an external user id.
    pub fn user_idx(&self, id: &str) -> Result<u32> {
        self.users
            .iter()
            .position(|u| u == id)
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| Error::UnknownUser(id.to_string()))
    }

    /// Writes `dir` atomically: `dataset.json`, `users.parquet`, `items.parquet`, `interactions.parquet`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.save_then(dir, |_| Ok(()))
    }

    /// [`Dataset::save`], letting `extra` add files to the new directory before it replaces the old one.
    pub(crate) fn save_then(&self, dir: &Path, extra: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        m6rec_tensor::atomic::write_dir(dir, DATASET_DIR, |tmp| -> Result<()> {
            extra(tmp)?;
            table::write_users(&tmp.join("users.parquet"), &self.users)?;
            table::write_items(&tmp.join("items.parquet"), &self.items)?;
            table::write_interactions(&tmp.join("interactions.parquet"), &self.interactions, &self.items)?;
            let json = serde_json::to_vec_pretty(&self.meta())
                .map_err(|e| Error::BadFormat { path: tmp.join("dataset.json"), reason: e.to_string() })?;
            let p = tmp.join("dataset.json");
            std::fs::write(&p, json).map_err(io(&p))
        })
    }

    /// Reads a dataset directory written by [`Dataset::save`], checking the format version and every id.
    pub fn load(dir: &Path) -> Result<Dataset> {
        // A save killed between its two renames left the dataset under a hidden name: put it back first.
        m6rec_tensor::atomic::recover(dir, Some(DATASET_DIR));
        let meta_path = dir.join("dataset.json");
        if !meta_path.exists() {
            return Err(Error::BadFormat {
                path: dir.to_path_buf(),
                reason: "not an m6rec dataset (no dataset.json); create one with `m6rec import`".into(),
            });
        }
        let bytes = std::fs::read(&meta_path).map_err(io(&meta_path))?;
        let meta: Meta = serde_json::from_slice(&bytes)
            .map_err(|e| Error::BadFormat { path: meta_path.clone(), reason: e.to_string() })?;
        if meta.format_version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                path: meta_path,
                found: meta.format_version,
                supported: FORMAT_VERSION,
            });
        }
        let users = table::read_users(&dir.join("users.parquet"))?;
        let items = table::read_items(&dir.join("items.parquet"))?;
        let inter_path = dir.join("interactions.parquet");
        let interactions = table::read_interactions(&inter_path)?;
        for (row, (&u, &i)) in interactions.user.iter().zip(&interactions.item).enumerate() {
            if u as usize >= users.len() || i as usize >= items.len() {
                return Err(Error::BadFormat {
                    path: inter_path,
                    reason: format!(
                        "row {row}: user {u} or item {i} out of range ({} users, {} items)",
                        users.len(),
                        items.len()
                    ),
                });
            }
        }
        Ok(Dataset { name: meta.name, source: meta.source, users, items, interactions })
    }
}
