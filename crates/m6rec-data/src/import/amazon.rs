//! Amazon reviews, the shape of most e-commerce research data: a reviews file and a metadata file, both JSON lines
//! (gzip or not), in the 2018 layout (McAuley et al.: `reviewerID`, `asin`, `unixReviewTime`, `overall`; metadata
//! `asin`, `title`, `category`, `brand`, `description`) or the 2023 one (Hou et al.: `user_id`, `parent_asin`,
//! `timestamp` in milliseconds, `rating`; metadata `parent_asin`, `title`, `categories`, `store`, `features`,
//! `description`). One review is one interaction; the item text is the categories, brand and description.
//!
//! This is [`import_events`] with the columns named; the layout is read from the reviews file's first record.

use super::events::{import_events, EventsSpec, ItemsSpec};
use super::rows::TableFormat;
use super::time::TimeUnit;
use super::Imported;
use crate::error::io;
use crate::{Error, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// Which release a reviews file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmazonLayout {
    /// The 2014 and 2018 releases (`reviewerID`, `asin`, `unixReviewTime`).
    V2018,
    /// The 2023 release (`user_id`, `parent_asin`, `timestamp` in ms).
    V2023,
}

impl AmazonLayout {
    /// The layout of a reviews file, from its first record.
    pub fn detect(reviews: &Path) -> Result<AmazonLayout> {
        let first = BufReader::new(super::rows::open_bytes(reviews)?)
            .lines()
            .map_while(std::result::Result::ok)
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default();
        let has = |key: &str| first.contains(&format!("\"{key}\""));
        if has("reviewerID") && has("asin") {
            Ok(AmazonLayout::V2018)
        } else if has("user_id") && (has("parent_asin") || has("asin")) {
            Ok(AmazonLayout::V2023)
        } else {
            let head: String = first.chars().take(120).collect();
            Err(Error::BadFormat {
                path: reviews.to_path_buf(),
                reason: format!(
                    "not Amazon reviews JSON lines: the first record has neither `reviewerID`+`asin` (2018) nor \
                     `user_id`+`parent_asin` (2023): {head}; for another log use `m6rec import events`"
                ),
            })
        }
    }

    fn events(self, reviews: &Path, min_rating: Option<f64>) -> EventsSpec {
        let (user, item, time, rating, unit) = match self {
            AmazonLayout::V2018 => ("reviewerID", "asin", "unixReviewTime", "overall", TimeUnit::Seconds),
            AmazonLayout::V2023 => ("user_id", "parent_asin", "timestamp", "rating", TimeUnit::Milliseconds),
        };
        EventsSpec {
            format: Some(TableFormat::JsonLines),
            user: user.into(),
            item: item.into(),
            time: Some(time.into()),
            time_unit: unit,
            rating: min_rating.map(|_| rating.into()),
            min_rating,
            ..EventsSpec::new(reviews)
        }
    }

    fn items(self, meta: &Path) -> ItemsSpec {
        let (id, text): (&str, &[&str]) = match self {
            AmazonLayout::V2018 => ("asin", &["category", "brand", "description"]),
            AmazonLayout::V2023 => ("parent_asin", &["categories", "store", "features", "description"]),
        };
        ItemsSpec {
            format: Some(TableFormat::JsonLines),
            id: id.into(),
            title: Some("title".into()),
            text: text.iter().map(|s| s.to_string()).collect(),
            allow_missing_columns: true,
            ..ItemsSpec::new(meta)
        }
    }
}

/// Imports Amazon reviews and, when found, their metadata: `meta` if given, else the one `meta_*` file beside the
/// reviews. Every review is an interaction unless `min_rating` drops the lower-rated ones.
pub fn import_amazon(reviews: &Path, meta: Option<&Path>, min_rating: Option<f64>) -> Result<Imported> {
    let layout = AmazonLayout::detect(reviews)?;
    let meta = match meta {
        Some(m) => Some(m.to_path_buf()),
        None => find_meta(reviews)?,
    };
    let mut imported =
        import_events(&layout.events(reviews, min_rating), meta.as_deref().map(|m| layout.items(m)).as_ref())?;
    imported.dataset.source = format!("amazon ({layout:?}) {}", imported.dataset.source);
    Ok(imported)
}

/// The single `meta_*` file in the reviews' folder, if there is one; several are an error asking to name one.
fn find_meta(reviews: &Path) -> Result<Option<PathBuf>> {
    let dir = reviews.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("meta_")))
        .collect();
    found.sort();
    match found.len() {
        0 | 1 => Ok(found.pop()),
        _ => Err(Error::BadFormat {
            path: dir.to_path_buf(),
            reason: format!(
                "several metadata files ({}); name the one for these reviews with --items",
                found.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
        }),
    }
}
