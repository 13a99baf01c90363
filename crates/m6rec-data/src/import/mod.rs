//! Importers from public formats into a [`Dataset`].
//!
//! Each importer returns an [`Imported`]: the dataset plus a [`ImportReport`] that lists every skipped line with its
//! file, line number and reason. A partly bad file is not an error; a file with nothing usable is ([`Error::Empty`]).

mod amazon;
mod events;
mod movielens;
mod recbole;
mod rows;
mod seqtext;
mod time;
mod unisrec;

pub use amazon::{import_amazon, AmazonLayout};
pub use events::{import_events, EventsSpec, ItemsSpec};
pub use movielens::import_movielens;
pub use recbole::import_recbole;
pub use rows::{Location, TableFormat};
pub use seqtext::import_seqtext;
pub use time::{parse_time_ms, TimeUnit};
pub use unisrec::import_unisrec;

use crate::error::io;
use crate::{Dataset, Interactions, Item};
use crate::{Error, Result};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The formats `m6rec import` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// MovieLens raw files: `u.data` + `u.item` (100k) or `ratings.dat` + `movies.dat` (1m).
    MovieLens,
    /// RecBole atomic files: `<name>.inter` and optionally `<name>.item`.
    RecBole,
    /// One line per user: `user item1 item2 ...` in chronological order (SASRec / S3-Rec).
    SeqText,
    /// UniSRec-processed Amazon data: `<name>.text`, `.item2index`, `.user2index`, `.{train,valid,test}.inter`.
    UniSRec,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "movielens" | "ml-100k" | "ml-1m" => Ok(Format::MovieLens),
            "recbole" | "atomic" => Ok(Format::RecBole),
            "seqtext" | "sasrec" => Ok(Format::SeqText),
            "unisrec" => Ok(Format::UniSRec),
            _ => Err(format!("unknown import format `{s}`: expected movielens, recbole, seqtext or unisrec")),
        }
    }
}

/// Imports `src` in `format`.
pub fn import(format: Format, src: &Path) -> Result<Imported> {
    match format {
        Format::MovieLens => import_movielens(src),
        Format::RecBole => import_recbole(src),
        Format::SeqText => import_seqtext(src),
        Format::UniSRec => import_unisrec(src),
    }
}

/// A line that was not imported.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// The source file.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// Why.
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportReport {
    /// Interactions imported.
    pub imported: usize,
    /// Items in the catalog.
    pub n_items: usize,
    /// Users.
    pub n_users: usize,
    /// Lines skipped, each with file, line and reason: the first [`MAX_LISTED`].
    pub skipped: Vec<Skipped>,
    /// Lines skipped beyond the first [`MAX_LISTED`]: counted, not listed (a small Parquet file can hold millions
    /// of empty rows; listing each once took 1.8 GB).
    pub skipped_unlisted: usize,
    /// Rows used in part: an item table's second row for an item, a media path that is missing or escapes its folder.
    pub warnings: Vec<Skipped>,
    /// Events rated below the minimum rating (not interactions, by the user's choice; not listed).
    pub below_min_rating: usize,
    /// Item table rows naming no item of the log (not listed).
    pub unused_item_rows: usize,
}

/// Most skipped lines (and most warnings) a report lists one by one; the rest are counted.
pub const MAX_LISTED: usize = 10_000;

impl ImportReport {
    /// Lines skipped in all, listed or not.
    pub fn skipped_total(&self) -> usize {
        self.skipped.len() + self.skipped_unlisted
    }
}

/// A dataset and the report of how it was made.
#[derive(Debug)]
pub struct Imported {
    /// The dataset.
    pub dataset: Dataset,
    /// The report.
    pub report: ImportReport,
    /// Media files to copy into the dataset directory when it is saved ([`Dataset::save_with_media`]).
    pub media: Vec<crate::media::MediaCopy>,
}

/// Why `id` cannot be a user or item id, if it cannot: empty, blank, or holding control characters (NUL, tabs,
/// line breaks). The service refuses such ids, so an import must not make them.
pub(crate) fn bad_id(id: &str) -> Option<String> {
    if id.trim().is_empty() {
        return Some(if id.is_empty() { "empty id".into() } else { "blank id".into() });
    }
    id.chars().find(|c| c.is_control()).map(|c| format!("id {id:?} holds the control character {c:?}"))
}

/// Interns external ids into dense indices while an importer reads, and collects skipped lines.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    users: Vec<String>,
    user_idx: HashMap<String, u32>,
    items: Vec<Item>,
    item_idx: HashMap<String, u32>,
    inter: Interactions,
    skipped: Vec<Skipped>,
    skipped_unlisted: usize,
}

impl Builder {
    pub(crate) fn user(&mut self, id: &str) -> u32 {
        if let Some(&i) = self.user_idx.get(id) {
            return i;
        }
        let i = self.users.len() as u32;
        self.users.push(id.to_string());
        self.user_idx.insert(id.to_string(), i);
        i
    }

    /// Dense index for `id`, adding a placeholder item (title = id) the first time.
    pub(crate) fn item(&mut self, id: &str, domain: &str) -> u32 {
        if let Some(&i) = self.item_idx.get(id) {
            return i;
        }
        let i = self.items.len() as u32;
        self.items.push(Item {
            id: id.to_string(),
            domain: domain.to_string(),
            title: id.to_string(),
            ..Item::default()
        });
        self.item_idx.insert(id.to_string(), i);
        i
    }

    pub(crate) fn item_mut(&mut self, idx: u32) -> &mut Item {
        &mut self.items[idx as usize]
    }

    pub(crate) fn known_item_count(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn known_item(&self, id: &str) -> Option<u32> {
        self.item_idx.get(id).copied()
    }

    pub(crate) fn event(&mut self, user: u32, item: u32, ts: i64, event: Option<String>) {
        self.inter.push(user, item, ts, event);
    }

    pub(crate) fn skip(&mut self, file: &Path, line: usize, reason: impl Into<String>) {
        if self.skipped.len() < MAX_LISTED {
            self.skipped.push(Skipped { file: file.to_path_buf(), line, reason: reason.into() });
        } else {
            self.skipped_unlisted += 1;
        }
    }

    /// Finishes the import; an import without interactions is an error.
    pub(crate) fn finish(self, name: &str, source: String, src: &Path) -> Result<Imported> {
        if self.inter.is_empty() {
            return Err(Error::Empty { path: src.to_path_buf(), skipped: self.skipped.len() + self.skipped_unlisted });
        }
        let report = ImportReport {
            imported: self.inter.len(),
            n_items: self.items.len(),
            n_users: self.users.len(),
            skipped: self.skipped,
            skipped_unlisted: self.skipped_unlisted,
            ..ImportReport::default()
        };
        let dataset =
            Dataset { name: name.to_string(), source, users: self.users, items: self.items, interactions: self.inter };
        Ok(Imported { dataset, report, media: Vec::new() })
    }
}

/// Reads a whole text file, naming it on failure.
/// A UTF-8 text file, without a leading byte-order mark (spreadsheet exports write one; it would become part of the
/// first header name). Invalid UTF-8 is named by line and column.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let mut text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let before = &e.as_bytes()[..at];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = at - before.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1) + 1;
        Error::BadFormat {
            path: path.to_path_buf(),
            reason: format!("not UTF-8 at line {line}, column {column} (byte {at}); re-export the file as UTF-8"),
        }
    })?;
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

/// Decodes ISO-8859-1 (every byte is the code point of the same value).
pub(crate) fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Parses a timestamp: an integer, or a float with no fractional part.
pub(crate) fn parse_ts(s: &str) -> std::result::Result<i64, String> {
    let s = s.trim();
    if let Ok(v) = s.parse::<i64>() {
        return Ok(v);
    }
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15 => Ok(v as i64),
        Ok(_) => Err(format!("timestamp `{s}` has a fractional part or is out of range (integers only)")),
        Err(_) => Err(format!("timestamp `{s}` is not a number")),
    }
}

pub(crate) fn dataset_name(src: &Path) -> String {
    src.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "dataset".into())
}

/// What [`join_text`] did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JoinReport {
    /// Items whose text was extended.
    pub joined: usize,
    /// Rows whose id is not an item of the dataset (listed as `line: id`, at most 10).
    pub unknown: Vec<String>,
    /// Number of rows with an unknown id.
    pub n_unknown: usize,
    /// Rows with an empty text cell.
    pub empty: usize,
}

/// Appends a column of a CSV file (RFC 4180, header row, any line ends) to the text of the items it names, for
/// example TMDB plot overviews (`movie_id`, `overview`) onto MovieLens items. Duplicate rows for an item are joined
/// once; rows for unknown ids are counted, not errors.
pub fn join_text(dataset: &mut Dataset, csv_path: &Path, id_column: &str, text_column: &str) -> Result<JoinReport> {
    let file = std::fs::File::open(csv_path).map_err(io(csv_path))?;
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(std::io::BufReader::new(file));
    let bad = |reason: String| Error::BadFormat { path: csv_path.to_path_buf(), reason: format!("header: {reason}") };
    let headers = reader.headers().map_err(|e| bad(e.to_string()))?.clone();
    let col = |name: &str| {
        headers.iter().position(|h| h.trim() == name).ok_or_else(|| {
            bad(format!(
                "no column `{name}` in the header (columns: {})",
                headers.iter().collect::<Vec<_>>().join(", ")
            ))
        })
    };
    let (id_col, text_col) = (col(id_column)?, col(text_column)?);
    let index: HashMap<String, usize> = dataset.items.iter().enumerate().map(|(i, it)| (it.id.clone(), i)).collect();
    let mut done = vec![false; dataset.items.len()];
    let mut report = JoinReport::default();
    for (n, row) in reader.records().enumerate() {
        let line = n + 2;
        let row =
            row.map_err(|e| Error::BadFormat { path: csv_path.to_path_buf(), reason: format!("line {line}: {e}") })?;
        let id = row.get(id_col).unwrap_or("").trim();
        let text = row.get(text_col).unwrap_or("").trim();
        let Some(&i) = index.get(id) else {
            report.n_unknown += 1;
            if report.unknown.len() < 10 {
                report.unknown.push(format!("line {line}: {id:?}"));
            }
            continue;
        };
        if text.is_empty() {
            report.empty += 1;
            continue;
        }
        if std::mem::replace(&mut done[i], true) {
            continue;
        }
        let item = &mut dataset.items[i];
        item.text = Some(match item.text.take() {
            Some(t) if !t.is_empty() => format!("{t}. {text}"),
            _ => text.to_string(),
        });
        report.joined += 1;
    }
    Ok(report)
}
