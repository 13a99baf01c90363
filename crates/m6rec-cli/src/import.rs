//! `m6rec import`: research formats, any event log (CSV, TSV, JSON lines, Parquet), Amazon reviews; then media,
//! extra item text and the filters, and the dataset written atomically.

use crate::common::contains;
use crate::progress::spinner;
use anyhow::{bail, Context, Result};
use clap::Args;
use m6rec_data::filter::{FilterReport, Filters};
use m6rec_data::import::{EventsSpec, Format, ImportReport, Imported, ItemsSpec, TableFormat, TimeUnit};
use std::path::{Path, PathBuf};

/// What `FORMAT` names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Source {
    /// A research format.
    Research(Format),
    /// An event log; the layout from the file name, or forced by the alias used (`csv`, `tsv`, `jsonl`, `parquet`).
    Events(Option<TableFormat>),
    /// Amazon reviews JSON lines.
    Amazon,
}

fn parse_source(s: &str) -> std::result::Result<Source, String> {
    match s {
        "events" | "log" => Ok(Source::Events(None)),
        "amazon" => Ok(Source::Amazon),
        "csv" | "tsv" | "jsonl" | "ndjson" | "parquet" => Ok(Source::Events(s.parse().ok())),
        _ => s.parse().map(Source::Research).map_err(|_| {
            format!(
                "unknown import format `{s}`: expected events (any CSV, TSV, JSON-lines or Parquet event log), \
                 amazon, movielens, recbole, seqtext or unisrec"
            )
        }),
    }
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Source format: `events` (an event log: CSV, TSV, JSON lines or Parquet, by extension, gzip too; columns named
    /// by --user/--item/--time), `amazon` (Amazon reviews JSON lines, 2018 or 2023, with their `meta_*` file),
    /// movielens (ml-100k/ml-1m folder), recbole (atomic files folder), seqtext (file), unisrec (UniSRec-processed
    /// Amazon folder, for example Scientific).
    #[arg(value_parser = parse_source)]
    format: Source,
    /// Source folder or file.
    src: PathBuf,
    /// Dataset directory to write (replaced atomically).
    #[arg(short, long)]
    out: PathBuf,
    /// Print every skipped line (default: the first 10).
    #[arg(long)]
    all_skipped: bool,
    /// Folder of item images named `<item id>.<jpg|jpeg|png|webp|gif>` (for example the TMDB posters); copied into
    /// the dataset's `media/images/`.
    #[arg(long)]
    images: Option<PathBuf>,
    /// Folder of item audio clips named `<item id>.<ogg|mp3|flac|wav>`; copied into the dataset's `media/audio/`.
    #[arg(long)]
    audio: Option<PathBuf>,
    /// A CSV file (header row) whose `--text-column` is appended to the text of the item named in `--id-column`,
    /// for example TMDB plot overviews: `--item-text items_tmdb.csv --id-column movie_id --text-column overview`.
    #[arg(long)]
    item_text: Option<PathBuf>,
    /// Column of `--item-text` holding item ids.
    #[arg(long, default_value = "item_id", requires = "item_text")]
    id_column: String,
    /// Column of `--item-text` holding the text.
    #[arg(long, default_value = "text", requires = "item_text")]
    text_column: String,
    /// Set every item's domain (for example `movies`), for datasets that will be mixed with others.
    #[arg(long)]
    domain: Option<String>,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    items: ItemArgs,
    #[command(flatten)]
    filters: FilterArgs,
}

/// The event log's columns (`events`).
#[derive(Debug, Args)]
#[command(next_help_heading = "Event log (events)")]
struct LogArgs {
    /// Column of user ids [default: user_id].
    #[arg(long)]
    user: Option<String>,
    /// Column of item ids [default: item_id].
    #[arg(long)]
    item: Option<String>,
    /// Column of event times: epoch seconds or milliseconds, ISO-8601 date-times or dates [default: timestamp].
    #[arg(long, conflicts_with = "file_order")]
    time: Option<String>,
    /// No time column: the file's order is each user's order.
    #[arg(long)]
    file_order: bool,
    /// How numeric times are read: auto (seconds below 10^11, else milliseconds), s or ms.
    #[arg(long)]
    time_unit: Option<TimeUnit>,
    /// Column of event types (view, cart, buy), kept with each event.
    #[arg(long)]
    event: Option<String>,
    /// Column naming each event's item domain.
    #[arg(long)]
    domain_column: Option<String>,
    /// Column of ratings (with --min-rating).
    #[arg(long, requires = "min_rating")]
    rating: Option<String>,
    /// Keep only events rated at least this (for amazon: the `overall`/`rating` field).
    #[arg(long)]
    min_rating: Option<f64>,
    /// The log's layout when its extension does not say: csv, tsv, jsonl or parquet.
    #[arg(long)]
    log_format: Option<TableFormat>,
}

/// The item table (`events`, `amazon`).
#[derive(Debug, Args)]
#[command(next_help_heading = "Item table (events, amazon)")]
struct ItemArgs {
    /// Item table: CSV, TSV, JSON lines or Parquet (amazon: the metadata file; default: the `meta_*` file beside the
    /// reviews).
    #[arg(long)]
    items: Option<PathBuf>,
    /// Its layout when the extension does not say.
    #[arg(long, requires = "items")]
    items_format: Option<TableFormat>,
    /// Column of item ids in the item table [default: item_id].
    #[arg(long, requires = "items")]
    item_id: Option<String>,
    /// Column of titles.
    #[arg(long, requires = "items")]
    title: Option<String>,
    /// Columns joined into the item text (repeat, or separate with commas).
    #[arg(long, requires = "items", value_delimiter = ',')]
    text: Vec<String>,
    /// Column of image paths (relative to --media).
    #[arg(long, requires = "items")]
    image_column: Option<String>,
    /// Column of audio paths (relative to --media).
    #[arg(long, requires = "items")]
    audio_column: Option<String>,
    /// Column of item domains.
    #[arg(long, requires = "items")]
    item_domain: Option<String>,
    /// Folder the media paths are relative to [default: the item table's folder].
    #[arg(long, requires = "items")]
    media: Option<PathBuf>,
}

/// Filters, for every format.
#[derive(Debug, Args)]
#[command(next_help_heading = "Filters (every format)")]
struct FilterArgs {
    /// Drop exact duplicate events (same user, item, time and event type); the first is kept.
    #[arg(long)]
    drop_duplicates: bool,
    /// Iterative k-core: users with fewer events are removed (with --min-item-events, until both hold).
    #[arg(long, default_value_t = 0)]
    min_user_events: usize,
    /// Iterative k-core: items with fewer events are removed.
    #[arg(long, default_value_t = 0)]
    min_item_events: usize,
    /// Keep only each user's most recent N events.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_history: Option<u64>,
}

impl FilterArgs {
    fn filters(&self) -> Filters {
        Filters {
            drop_duplicates: self.drop_duplicates,
            min_user_events: self.min_user_events,
            min_item_events: self.min_item_events,
            max_history: self.max_history.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        }
    }
}

impl ImportArgs {
    /// The flags of one source given to another, refused before any work.
    fn check_flags(&self) -> Result<()> {
        let l = &self.log;
        let log_flags = [
            ("--user", l.user.is_some()),
            ("--item", l.item.is_some()),
            ("--time", l.time.is_some()),
            ("--file-order", l.file_order),
            ("--time-unit", l.time_unit.is_some()),
            ("--event", l.event.is_some()),
            ("--domain-column", l.domain_column.is_some()),
            ("--rating", l.rating.is_some()),
            ("--log-format", l.log_format.is_some()),
        ];
        let is_events = matches!(self.format, Source::Events(_));
        let is_amazon = self.format == Source::Amazon;
        let given: Vec<&str> = log_flags.iter().filter(|f| f.1).map(|f| f.0).collect();
        if !is_events && !given.is_empty() {
            bail!("{} name columns of an event log: they apply to `m6rec import events` only", given.join(", "));
        }
        if !is_events && !is_amazon && (self.items.items.is_some() || l.min_rating.is_some()) {
            bail!("--items and --min-rating apply to `m6rec import events` and `m6rec import amazon` only");
        }
        if is_events && l.min_rating.is_some() && l.rating.is_none() {
            bail!("--min-rating needs --rating, the column that holds the ratings");
        }
        Ok(())
    }

    fn events_spec(&self, forced: Option<TableFormat>) -> EventsSpec {
        let l = &self.log;
        let d = EventsSpec::new(&self.src);
        EventsSpec {
            format: l.log_format.or(forced),
            user: l.user.clone().unwrap_or(d.user),
            item: l.item.clone().unwrap_or(d.item),
            time: if l.file_order { None } else { l.time.clone().or(d.time) },
            time_unit: l.time_unit.unwrap_or_default(),
            event: l.event.clone(),
            domain: l.domain_column.clone(),
            rating: l.rating.clone(),
            min_rating: l.min_rating,
            ..d
        }
    }

    fn items_spec(&self) -> Option<ItemsSpec> {
        let i = &self.items;
        let path = i.items.as_ref()?;
        let d = ItemsSpec::new(path);
        Some(ItemsSpec {
            format: i.items_format,
            id: i.item_id.clone().unwrap_or(d.id.clone()),
            title: i.title.clone(),
            text: i.text.iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect(),
            image: i.image_column.clone(),
            audio: i.audio_column.clone(),
            domain: i.item_domain.clone(),
            media: i.media.clone(),
            ..d
        })
    }

    fn read(&self) -> Result<Imported> {
        let src = self.src.as_path();
        match self.format {
            Source::Research(f) => m6rec_data::import::import(f, src)
                .with_context(|| format!("importing {f:?} data from {}", src.display())),
            Source::Events(forced) => {
                m6rec_data::import::import_events(&self.events_spec(forced), self.items_spec().as_ref()).with_context(
                    || {
                        format!(
                            "importing the event log {} (its columns are named with --user, --item, --time and, for \
                             the item table, --item-id, --title, --text; see `m6rec import --help`)",
                            src.display()
                        )
                    },
                )
            }
            Source::Amazon => m6rec_data::import::import_amazon(src, self.items.items.as_deref(), self.log.min_rating)
                .with_context(|| format!("importing Amazon reviews from {}", src.display())),
        }
    }
}

pub fn import(a: &ImportArgs) -> Result<()> {
    use m6rec_data::media::{attach, MediaKind};
    a.check_flags()?;
    let (src, out) = (a.src.as_path(), a.out.as_path());
    // Refused before any work: an --out that holds the input, or anything but an earlier dataset.
    let inputs = [Some(src), a.images.as_deref(), a.audio.as_deref(), a.item_text.as_deref(), a.items.items.as_deref()];
    for input in inputs.into_iter().flatten() {
        if contains(out, input) {
            bail!(
                "--out {} contains the input {}: the import would replace it; write the dataset somewhere else",
                out.display(),
                input.display()
            );
        }
    }
    m6rec_data::DATASET_DIR.check_replaceable(out).context("--out")?;
    let bar = spinner(format!("importing {}", src.display()));
    let mut imported = a.read()?;
    let mut lines = Vec::new();
    if let Some(domain) = &a.domain {
        for it in &mut imported.dataset.items {
            it.domain.clone_from(domain);
        }
    }
    let filters = a.filters.filters();
    let filtered = if filters == Filters::default() {
        None
    } else {
        let (ds, report) = m6rec_data::filter::apply(imported.dataset, &filters)
            .with_context(|| format!("filtering the events imported from {}", src.display()))?;
        imported.dataset = ds;
        Some(report)
    };
    if let Some(csv) = &a.item_text {
        let r = m6rec_data::import::join_text(&mut imported.dataset, csv, &a.id_column, &a.text_column)
            .with_context(|| format!("joining item text from {}", csv.display()))?;
        lines.push(format!(
            "item text: {} items extended from {} ({} rows with empty text, {} rows for unknown ids{})",
            r.joined,
            csv.display(),
            r.empty,
            r.n_unknown,
            if r.unknown.is_empty() { String::new() } else { format!(": {}", r.unknown.join(", ")) }
        ));
    }
    let mut copies = std::mem::take(&mut imported.media);
    for (kind, dir) in [(MediaKind::Image, a.images.as_deref()), (MediaKind::Audio, a.audio.as_deref())] {
        let Some(dir) = dir else { continue };
        let (c, without) = attach(&mut imported.dataset, kind, dir)
            .with_context(|| format!("attaching {kind:?} files from {}", dir.display()))?;
        lines.push(format!("{kind:?} files: {} items have one, {without} have none (from {})", c.len(), dir.display()));
        copies.extend(c);
    }
    let copies = referenced(&imported.dataset, copies);
    imported.dataset.save_with_media(out, &copies).with_context(|| format!("writing dataset {}", out.display()))?;
    bar.finish_and_clear();
    for line in lines {
        println!("{line}");
    }
    print_report(&imported, filtered.as_ref(), src, out, a.all_skipped);
    Ok(())
}

/// The copies some item still names (filters drop items; a media folder replaces a column's file), one per
/// destination, the later winning.
fn referenced(
    ds: &m6rec_data::Dataset,
    copies: Vec<m6rec_data::media::MediaCopy>,
) -> Vec<m6rec_data::media::MediaCopy> {
    let named: std::collections::HashSet<&str> =
        ds.items.iter().flat_map(|it| [it.image.as_deref(), it.audio.as_deref()]).flatten().collect();
    let mut by_dest = std::collections::BTreeMap::new();
    for c in copies {
        if named.contains(c.to.as_str()) {
            by_dest.insert(c.to.clone(), c);
        }
    }
    by_dest.into_values().collect()
}

fn print_report(imported: &Imported, filtered: Option<&FilterReport>, src: &Path, out: &Path, all: bool) {
    let r: &ImportReport = &imported.report;
    let ds = &imported.dataset;
    println!(
        "imported {} interactions ({} users, {} items) from {} into {}",
        ds.interactions.len(),
        ds.n_users(),
        ds.n_items(),
        src.display(),
        out.display()
    );
    if r.below_min_rating > 0 {
        println!("  {} events rated below --min-rating were not interactions", r.below_min_rating);
    }
    if r.unused_item_rows > 0 {
        println!("  {} item table rows name no item of the log (not imported)", r.unused_item_rows);
    }
    if let Some(f) = filtered {
        println!(
            "  filters: {} duplicates dropped; k-core removed {} events in {} rounds; history cap removed {}; \
             {} users and {} items left without events removed",
            f.duplicates, f.kcore_events, f.kcore_rounds, f.history_events, f.users_removed, f.items_removed
        );
    }
    for (what, list) in [("skipped", &r.skipped), ("used in part", &r.warnings)] {
        if list.is_empty() {
            continue;
        }
        println!("{what}: {} lines:", list.len());
        let shown = if all { list.len() } else { 10 };
        for s in list.iter().take(shown) {
            println!("  {s}");
        }
        if list.len() > shown {
            println!("  ... and {} more (--all-skipped lists them all)", list.len() - shown);
        }
    }
    if r.skipped_unlisted > 0 {
        println!(
            "  ... and {} more skipped lines, counted but not listed (a report lists the first {})",
            r.skipped_unlisted,
            m6rec_data::import::MAX_LISTED
        );
    }
}
