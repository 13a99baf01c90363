//! Helpers the subcommands share: opening a dataset, and whether one path lies inside another.

use anyhow::{Context, Result};
use m6rec_data::Dataset;
use std::path::Path;

pub(crate) fn load_dataset(dir: &Path) -> Result<Dataset> {
    Dataset::load(dir).with_context(|| format!("loading dataset {}", dir.display()))
}

/// Whether `inner` is `outer` or inside it (both resolved as far as they exist).
pub(crate) fn contains(outer: &Path, inner: &Path) -> bool {
    let resolve = |p: &Path| {
        std::fs::canonicalize(p).unwrap_or_else(|_| std::env::current_dir().map(|d| d.join(p)).unwrap_or(p.into()))
    };
    resolve(inner).starts_with(resolve(outer))
}
