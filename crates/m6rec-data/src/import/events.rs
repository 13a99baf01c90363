//! An event log and an optional item table in whatever a warehouse exports (CSV, TSV, JSON lines, Parquet; gzip
//! too), with the columns named by the user.
//!
//! The log is read first, streaming, keeping only ids and times; the item table after it, keeping only the items the
//! log names (a metadata dump of millions of products costs the memory of the few thousand used). Events are then
//! ordered by time, events at the same instant keeping file order, and times are stored in seconds.

use super::rows::{Cells, Rows, TableFormat, Want};
use super::time::{parse_time_ms, TimeUnit};
use super::{bad_id, dataset_name, Builder, Imported, Skipped};
use crate::media::{copy_for, MediaCopy, MediaKind};
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where the events are and which columns hold what.
#[derive(Debug, Clone, PartialEq)]
pub struct EventsSpec {
    /// The log file.
    pub path: PathBuf,
    /// Its layout; `None`: from the file name.
    pub format: Option<TableFormat>,
    /// Column of user ids.
    pub user: String,
    /// Column of item ids.
    pub item: String,
    /// Column of event times; `None`: the file's order is the time order.
    pub time: Option<String>,
    /// How numeric times are read.
    pub time_unit: TimeUnit,
    /// Column of event types (view, cart, buy), kept with each event.
    pub event: Option<String>,
    /// Column naming each event's item domain (the first value seen for an item is its domain).
    pub domain: Option<String>,
    /// Column of ratings, with [`EventsSpec::min_rating`].
    pub rating: Option<String>,
    /// Events rated below this are not interactions (for example 4 on a 1-5 scale).
    pub min_rating: Option<f64>,
}

impl EventsSpec {
    /// A spec with the usual column names `user_id`, `item_id`, `timestamp`.
    pub fn new(path: impl Into<PathBuf>) -> EventsSpec {
        EventsSpec {
            path: path.into(),
            format: None,
            user: "user_id".into(),
            item: "item_id".into(),
            time: Some("timestamp".into()),
            time_unit: TimeUnit::Auto,
            event: None,
            domain: None,
            rating: None,
            min_rating: None,
        }
    }
}

/// Where the item table is and which columns hold what.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemsSpec {
    /// The item table.
    pub path: PathBuf,
    /// Its layout; `None`: from the file name.
    pub format: Option<TableFormat>,
    /// Column of item ids (the log's item ids).
    pub id: String,
    /// Column of titles.
    pub title: Option<String>,
    /// Columns joined (with `. `) into the item's text.
    pub text: Vec<String>,
    /// Column of image paths, relative to [`ItemsSpec::media`].
    pub image: Option<String>,
    /// Column of audio paths, relative to [`ItemsSpec::media`].
    pub audio: Option<String>,
    /// Column of domains.
    pub domain: Option<String>,
    /// Folder the media paths are relative to (default: the item table's folder).
    pub media: Option<PathBuf>,
    /// Columns other than the id may be absent (presets for files whose fields vary); otherwise a missing column is
    /// an error naming the columns that exist.
    pub allow_missing_columns: bool,
}

impl ItemsSpec {
    /// A spec with the id column `item_id` and nothing else.
    pub fn new(path: impl Into<PathBuf>) -> ItemsSpec {
        ItemsSpec {
            path: path.into(),
            format: None,
            id: "item_id".into(),
            title: None,
            text: Vec::new(),
            image: None,
            audio: None,
            domain: None,
            media: None,
            allow_missing_columns: false,
        }
    }
}

fn format_of(path: &Path, format: Option<TableFormat>) -> Result<TableFormat> {
    format.or_else(|| TableFormat::from_path(path)).ok_or_else(|| Error::BadFormat {
        path: path.to_path_buf(),
        reason: "cannot tell the layout from the file name (expected .csv, .tsv, .jsonl, .json, .parquet, each \
                 optionally .gz); name it with --log-format / --items-format"
            .into(),
    })
}

/// The log as read: interned ids, and per event its time in milliseconds and its place in the file.
struct Log {
    b: Builder,
    time_ms: Vec<i64>,
    /// Line (text) or row (Parquet) number per event.
    at: Vec<u64>,
    below_rating: usize,
}

/// Imports the log `events` and, when given, the item table `items`. Rows that cannot be used are reported in
/// [`super::ImportReport::skipped`] with their file and line (or Parquet row); events of items the item table lacks
/// are among them.
pub fn import_events(events: &EventsSpec, items: Option<&ItemsSpec>) -> Result<Imported> {
    let name = dataset_name(&events.path);
    let name = name.split('.').next().filter(|s| !s.is_empty()).unwrap_or("dataset").to_string();
    let mut log = read_log(events, &name)?;
    let mut warnings = Vec::new();
    let mut media = Vec::new();
    let mut unused_rows = 0;
    let mut described = None;
    if let Some(spec) = items {
        let (found, unused) = read_items(&mut log.b, spec, &mut warnings, &mut media)?;
        unused_rows = unused;
        described = Some(found);
    }
    let Log { mut b, time_ms, at, below_rating } = log;
    // Events of items the item table lacks are skipped lines; the others are ordered by time (stable: equal times keep
    // file order) and each column is permuted in turn, so the import holds one column twice at most.
    let mut order: Vec<usize> = Vec::with_capacity(b.inter.len());
    for (e, &line) in at.iter().enumerate().take(b.inter.len()) {
        let item = b.inter.item[e];
        match (&described, items) {
            (Some(found), Some(spec)) if !found[item as usize] => {
                let id = &b.items[item as usize].id;
                let reason = format!("item `{id}` is not in the item table {}", spec.path.display());
                b.skip(&events.path, line as usize, reason);
            }
            _ => order.push(e),
        }
    }
    drop(at);
    let dropped = order.len() < b.inter.len();
    order.sort_by_key(|&e| time_ms[e]);
    let inter = std::mem::take(&mut b.inter);
    b.inter.user = permute(inter.user, &order);
    b.inter.item = permute(inter.item, &order);
    // Without a time column the stored time is the row's position, as in every importer.
    let seconds = events.time.is_some();
    b.inter.timestamp = order.iter().map(|&e| if seconds { time_ms[e].div_euclid(1000) } else { time_ms[e] }).collect();
    drop(time_ms);
    let mut event = inter.event;
    b.inter.event = order.iter().map(|&e| event[e].take()).collect();
    drop((event, order));
    b.skipped.sort_by_key(|s| s.line);
    let source = format!(
        "events import of {}{}",
        events.path.display(),
        items.map(|s| format!(" with items from {}", s.path.display())).unwrap_or_default()
    );
    let mut imported = b.finish(&name, source, &events.path)?;
    if dropped {
        // Users and items whose every event was skipped go too.
        let keep = vec![true; imported.dataset.interactions.len()];
        imported.dataset = crate::filter::compact(imported.dataset, &keep);
        let kept: std::collections::HashSet<&str> = imported.dataset.items.iter().map(|it| it.id.as_str()).collect();
        media.retain(|(item, _): &(String, MediaCopy)| kept.contains(item.as_str()));
    }
    imported.media = media.into_iter().map(|(_, c)| c).collect();
    let r = &mut imported.report;
    (r.n_users, r.n_items) = (imported.dataset.n_users(), imported.dataset.n_items());
    r.warnings = warnings;
    r.below_min_rating = below_rating;
    r.unused_item_rows = unused_rows;
    Ok(imported)
}

fn read_log<'a>(spec: &'a EventsSpec, name: &str) -> Result<Log> {
    let path = spec.path.as_path();
    let opt = |c: &'a Option<String>, required| c.as_deref().map(move |name| Want { name, required });
    let mut want = vec![Want { name: &spec.user, required: true }, Want { name: &spec.item, required: true }];
    let cols: Vec<Option<Want<'_>>> =
        vec![opt(&spec.time, true), opt(&spec.event, true), opt(&spec.domain, true), opt(&spec.rating, true)];
    let mut slot = [None; 4];
    for (k, w) in cols.into_iter().enumerate() {
        if let Some(w) = w {
            slot[k] = Some(want.len());
            want.push(w);
        }
    }
    if spec.min_rating.is_some() && spec.rating.is_none() {
        return Err(Error::BadFormat {
            path: path.to_path_buf(),
            reason: "--min-rating needs --rating, the column that holds the ratings".into(),
        });
    }
    let mut rows = Rows::open(path, format_of(path, spec.format)?, &want)?;
    let mut log = Log { b: Builder::default(), time_ms: Vec::new(), at: Vec::new(), below_rating: 0 };
    let mut n = 0i64;
    while let Some(row) = rows.next_row(&want) {
        let (at, cells) = match row {
            Ok(r) => r,
            Err((at, reason)) => {
                log.b.skip(path, at.number() as usize, reason);
                continue;
            }
        };
        n += 1;
        match event_of(spec, &cells, &slot, n) {
            Ok(Some(Event { user, item, ms, event, domain })) => {
                let u = log.b.user(user);
                let i = log.b.item(item, domain.unwrap_or(name));
                log.b.event(u, i, 0, event);
                log.time_ms.push(ms);
                log.at.push(at.number());
            }
            Ok(None) => log.below_rating += 1,
            Err(reason) => log.b.skip(path, at.number() as usize, reason),
        }
    }
    Ok(log)
}

/// A row that is an event.
struct Event<'c> {
    user: &'c str,
    item: &'c str,
    ms: i64,
    event: Option<String>,
    domain: Option<&'c str>,
}

/// One row as an event, `None` when rated below the bound, or why it is not one.
fn event_of<'c>(
    spec: &EventsSpec,
    c: &'c Cells,
    slot: &[Option<usize>; 4],
    n: i64,
) -> Result<Option<Event<'c>>, String> {
    let cell = |k: usize| slot[k].and_then(|s| c[s].as_deref());
    let id = |what: &str, v: &'c Option<String>| -> Result<&'c str, String> {
        let v = v.as_deref().ok_or_else(|| format!("no {what} id"))?;
        bad_id(v).map_or(Ok(v), |reason| Err(format!("{what} {reason}")))
    };
    let (user, item) = (id("user", &c[0])?, id("item", &c[1])?);
    let ms = match (slot[0], cell(0)) {
        (None, _) => n, // file order
        (Some(_), None) => return Err("no time".into()),
        (Some(_), Some(t)) => parse_time_ms(t, spec.time_unit)?,
    };
    if let (Some(min), Some(_)) = (spec.min_rating, slot[3]) {
        let text = cell(3).ok_or("no rating")?;
        let r: f64 = text.trim().parse().map_err(|_| format!("rating `{text}` is not a number"))?;
        if r < min {
            return Ok(None);
        }
    }
    let domain = cell(2).map(str::trim).filter(|d| !d.is_empty());
    Ok(Some(Event { user, item, ms, event: cell(1).map(str::to_string), domain }))
}

/// Fills the log's items from the item table; returns which items were found and how many rows named no item of the
/// log.
fn read_items(
    b: &mut Builder,
    spec: &ItemsSpec,
    warnings: &mut Vec<Skipped>,
    media: &mut Vec<(String, MediaCopy)>,
) -> Result<(Vec<bool>, usize)> {
    let path = spec.path.as_path();
    let mut want = vec![Want { name: &spec.id, required: true }];
    let required = !spec.allow_missing_columns;
    let title = spec.title.as_deref().map(|n| push(&mut want, n, required));
    let image = spec.image.as_deref().map(|n| push(&mut want, n, required));
    let audio = spec.audio.as_deref().map(|n| push(&mut want, n, required));
    let domain = spec.domain.as_deref().map(|n| push(&mut want, n, required));
    let text: Vec<usize> = spec.text.iter().map(|n| push(&mut want, n, required)).collect();
    let media_root = spec.media.clone().unwrap_or_else(|| path.parent().map(Path::to_path_buf).unwrap_or_default());
    let mut rows = Rows::open(path, format_of(path, spec.format)?, &want)?;
    let mut found = vec![false; b.items.len()];
    let mut unused = 0;
    let index: HashMap<String, u32> = b.item_idx.clone();
    while let Some(row) = rows.next_row(&want) {
        let (at, cells) = match row {
            Ok(r) => r,
            Err((at, reason)) => {
                push_warning(warnings, Skipped { file: path.to_path_buf(), line: at.number() as usize, reason });
                continue;
            }
        };
        let line = at.number() as usize;
        let Some(&idx) = cells[0].as_deref().map(str::trim).and_then(|id| index.get(id)) else {
            unused += 1;
            continue;
        };
        if std::mem::replace(&mut found[idx as usize], true) {
            let reason = "a second row for this item; the first is kept".to_string();
            push_warning(warnings, Skipped { file: path.to_path_buf(), line, reason });
            continue;
        }
        let cell = |k: Option<usize>| k.and_then(|k| cells[k].as_deref()).map(str::trim).filter(|s| !s.is_empty());
        let item = b.item_mut(idx);
        if let Some(t) = cell(title) {
            item.title = t.to_string();
        }
        if let Some(d) = cell(domain) {
            item.domain = d.to_string();
        }
        let parts: Vec<&str> = text.iter().filter_map(|&k| cell(Some(k))).collect();
        if !parts.is_empty() {
            item.text = Some(parts.join(". "));
        }
        let id = item.id.clone();
        for (kind, k) in [(MediaKind::Image, image), (MediaKind::Audio, audio)] {
            let Some(rel) = cell(k) else { continue };
            match copy_for(&media_root, rel, &id, kind) {
                Ok(copy) => {
                    kind.set(b.item_mut(idx), copy.to.clone());
                    media.push((id.clone(), copy));
                }
                Err(e) => {
                    let reason = format!("{kind:?} path: {e} (under {}); the item has none", media_root.display());
                    push_warning(warnings, Skipped { file: path.to_path_buf(), line, reason });
                }
            }
        }
    }
    Ok((found, unused))
}

/// `v` reordered by `order` (consumed, so that its memory goes as the new one is made).
fn permute<T: Copy>(v: Vec<T>, order: &[usize]) -> Vec<T> {
    order.iter().map(|&e| v[e]).collect()
}

fn push<'a>(want: &mut Vec<Want<'a>>, name: &'a str, required: bool) -> usize {
    want.push(Want { name, required });
    want.len() - 1
}

/// A warning, unless [`super::MAX_LISTED`] are listed already.
fn push_warning(warnings: &mut Vec<Skipped>, w: Skipped) {
    if warnings.len() < super::MAX_LISTED {
        warnings.push(w);
    }
}
