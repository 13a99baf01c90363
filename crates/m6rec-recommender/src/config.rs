//! [`RecommenderConfig`]: what a recommender is made of, as the run file and `config.json` spell it.

use crate::content::ContentConfig;
use crate::domains::DomainConfig;
use m6rec_fusion::ItemTowerConfig;
use m6rec_model::SeqRecConfig;
use serde::{Deserialize, Serialize};

/// The sections of a run that define the recommender: `[model]` (the sequence model and its objective, `[model.loss]`),
/// `[item_tower]`, `[content]`, `[domains]`. Unknown fields are ignored, so it reads the `run` of any checkpoint's
/// `config.json` (whose other sections belong to the trainer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RecommenderConfig {
    /// The sequence model and its objective.
    #[serde(default)]
    pub model: SeqRecConfig,
    /// Items from an item tower (content, id, or both) instead of the model's own id table. Absent: the classic id
    /// embedding table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_tower: Option<ItemTowerConfig>,
    /// What the item tower reads. Absent: text only, defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<ContentConfig>,
    /// Domain embeddings (and the trainer's per-domain sampling weights). Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domains: Option<DomainConfig>,
}

impl RecommenderConfig {
    /// `[content]` with defaults.
    pub fn content(&self) -> ContentConfig {
        self.content.clone().unwrap_or_default()
    }

    /// Checks every section.
    pub fn validate(&self) -> Result<(), String> {
        self.model.validate().map_err(|e| e.to_string())?;
        if let Some(c) = &self.content {
            c.validate()?;
        }
        if let Some(d) = &self.domains {
            d.validate()?;
        }
        Ok(())
    }
}
