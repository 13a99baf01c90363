//! The catalog the model thread keeps (ids, titles, domains, popularity), growing as items are added, and a
//! user's history.

use crate::error::ApiError;
use std::collections::HashMap;

/// Catalog metadata, growing as items are added.
pub(super) struct Catalog {
    pub(super) ids: Vec<String>,
    pub(super) titles: Vec<String>,
    pub(super) domain_of: Vec<i64>,
    pub(super) domain_names: Vec<String>,
    pub(super) index: HashMap<String, u32>,
    /// Rows of the training catalog (items below it may have id embeddings).
    pub(super) n_base: usize,
    /// Interactions per item (the popularity fallback for an empty history).
    pub(super) counts: Vec<f32>,
}

impl Catalog {
    pub(super) fn domain_idx(&mut self, name: &str) -> i64 {
        match self.domain_names.iter().position(|d| d == name) {
            Some(i) => m6rec_tensor::dim::as_i64(i),
            None => {
                self.domain_names.push(name.to_string());
                m6rec_tensor::dim::as_i64(self.domain_names.len() - 1)
            }
        }
    }

    pub(super) fn resolve(&self, ids: &[String], what: &str) -> Result<Vec<u32>, ApiError> {
        let mut out = Vec::with_capacity(ids.len());
        let mut unknown = Vec::new();
        for id in ids {
            match self.index.get(id.as_str()) {
                Some(&i) => out.push(i),
                None => unknown.push(id.as_str()),
            }
        }
        if !unknown.is_empty() {
            let shown: Vec<&str> = unknown.iter().take(5).copied().collect();
            return Err(ApiError::invalid(
                "unknown_item",
                format!(
                    "{what}: {} unknown item id(s), for example {:?}; add them with POST /v1/items first",
                    unknown.len(),
                    shown
                ),
            ));
        }
        Ok(out)
    }
}

pub(super) struct User {
    pub(super) history: Vec<u32>,
    pub(super) version: u64,
}
