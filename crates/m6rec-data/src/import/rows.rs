//! Rows of a table file, whatever its format: CSV, TSV, JSON lines or Parquet, each optionally gzip-compressed
//! (`.gz`). Reading streams: a row's cells are read, handed over and dropped, so a log of any length is read in
//! constant memory.
//!
//! Only the columns asked for are read (a Parquet projection; in text formats the other fields are skipped). Cells are
//! text: numbers as written, JSON and Parquet lists joined with `, `, Parquet timestamps and dates as ISO-8601.

use crate::error::io;
use crate::{Error, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt16Type,
    UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// How a table file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    /// Comma-separated, header row, RFC 4180 quoting.
    Csv,
    /// Tab-separated, header row.
    Tsv,
    /// One JSON object per line (`.jsonl`, `.ndjson`, and `.json` when it is one object per line).
    JsonLines,
    /// Apache Parquet.
    Parquet,
}

impl TableFormat {
    /// The format a file name implies (`.csv`, `.tsv`/`.tab`, `.jsonl`/`.ndjson`/`.json`, `.parquet`/`.pq`), looking
    /// through a trailing `.gz`.
    pub fn from_path(path: &Path) -> Option<TableFormat> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        let ext = name.rsplit_once('.')?.1;
        match ext {
            "csv" => Some(TableFormat::Csv),
            "tsv" | "tab" => Some(TableFormat::Tsv),
            "jsonl" | "ndjson" | "json" => Some(TableFormat::JsonLines),
            "parquet" | "pq" => Some(TableFormat::Parquet),
            _ => None,
        }
    }
}

impl std::str::FromStr for TableFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "csv" => Ok(TableFormat::Csv),
            "tsv" | "tab" => Ok(TableFormat::Tsv),
            "jsonl" | "ndjson" | "json" | "json-lines" => Ok(TableFormat::JsonLines),
            "parquet" | "pq" => Ok(TableFormat::Parquet),
            _ => Err(format!("unknown table format `{s}`: expected csv, tsv, jsonl or parquet")),
        }
    }
}

/// Runs a step of the `parquet` crate, turning its panics on damaged files (`parquet` 60.1 panics on negative
/// column offsets and on a dictionary page that never came, found by `cargo xtask fuzz events-parquet`) into an
/// error naming the file.
fn guarded<T>(path: &Path, f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| Error::BadFormat {
        path: path.to_path_buf(),
        reason: "the Parquet reader failed on this file (damaged metadata or pages); re-export it".into(),
    })
}

/// Every page header of a Parquet file, read before any page's data: a data page may not declare more values than its
/// column chunk holds, nor a chunk more than `bound`. The reader reserves what a page declares before it decodes (a
/// fuzzed 1.2 kB file declared 1.6 billion values in one page, a 6.3 GB reservation), so this runs first.
fn check_pages(path: &Path, bound: u64) -> Result<()> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let table = |e: parquet::errors::ParquetError| Error::Table { path: path.to_path_buf(), reason: e.to_string() };
    let file = std::fs::File::open(path).map_err(io(path))?;
    let reader = SerializedFileReader::new(file).map_err(table)?;
    for (g, group) in reader.metadata().row_groups().iter().enumerate() {
        let pages_of = reader.get_row_group(g).map_err(table)?;
        for (c, chunk) in group.columns().iter().enumerate() {
            let values = u64::try_from(chunk.num_values()).unwrap_or(u64::MAX);
            let bad = |reason: String| Error::BadFormat {
                path: path.to_path_buf(),
                reason: format!(
                    "row group {g}, column {:?}: {reason}: the file is damaged",
                    chunk.column_path().string()
                ),
            };
            if values > bound {
                return Err(bad(format!("declares {} values", chunk.num_values())));
            }
            let mut pages = pages_of.get_column_page_reader(c).map_err(table)?;
            while let Some(page) = pages.peek_next_page().map_err(table)? {
                if let Some(n) = page.num_levels.filter(|&n| n as u64 > values) {
                    return Err(bad(format!("a page declares {n} values of the chunk's {values}")));
                }
                pages.skip_next_page().map_err(table)?;
            }
        }
    }
    Ok(())
}

/// Most rows a Parquet file may declare per byte of file (see `Rows::parquet`).
const MAX_PARQUET_ROWS_PER_BYTE: u64 = 80;

/// Where a row is in its file: a line (text formats, 1-based, the header being line 1) or a row (Parquet, 0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// A text line.
    Line(u64),
    /// A Parquet row.
    Row(u64),
}

impl Location {
    /// The number, for reports that hold one.
    pub fn number(self) -> u64 {
        match self {
            Location::Line(n) | Location::Row(n) => n,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(n) => write!(f, "line {n}"),
            Location::Row(n) => write!(f, "row {n}"),
        }
    }
}

/// A column asked for: its name and whether the table must have it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Want<'a> {
    pub name: &'a str,
    pub required: bool,
}

/// One row: the wanted columns' cells in the order asked (`None`: absent or null).
pub(crate) type Cells = Vec<Option<String>>;

/// Streams the rows of a table file.
pub(crate) struct Rows {
    inner: Inner,
}

enum Inner {
    Delimited {
        records: csv::StringRecordsIntoIter<Box<dyn Read>>,
        cols: Vec<Option<usize>>,
    },
    Json {
        lines: std::io::Lines<Box<dyn BufRead>>,
        line: u64,
        names: Vec<String>,
        first: Option<String>,
    },
    /// `reader` is dropped after its first error: a damaged file's reader may fail again and again without moving on
    /// (a fuzzed file once made one error per call, forever).
    Parquet {
        reader: Option<parquet::arrow::arrow_reader::ParquetRecordBatchReader>,
        batch: Option<Batch>,
        row: u64,
    },
}

struct Batch {
    columns: Vec<Option<ArrayRef>>,
    at: usize,
    len: usize,
}

pub(super) fn open_bytes(path: &Path) -> Result<Box<dyn Read>> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    let gz = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    Ok(if gz { Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))) } else { Box::new(file) })
}

fn missing(path: &Path, name: &str, found: &[String]) -> Error {
    Error::BadFormat {
        path: path.to_path_buf(),
        reason: format!(
            "no column `{name}` (the columns are: {})",
            if found.is_empty() { "none".to_string() } else { found.join(", ") }
        ),
    }
}

impl Rows {
    /// Opens `path` read as `format`, checking that every required wanted column exists.
    pub(crate) fn open(path: &Path, format: TableFormat, want: &[Want<'_>]) -> Result<Rows> {
        let inner = match format {
            TableFormat::Csv | TableFormat::Tsv => Self::delimited(path, format, want)?,
            TableFormat::JsonLines => Self::json(path, want)?,
            TableFormat::Parquet => Self::parquet(path, want)?,
        };
        Ok(Rows { inner })
    }

    fn delimited(path: &Path, format: TableFormat, want: &[Want<'_>]) -> Result<Inner> {
        let delimiter = if format == TableFormat::Tsv { b'\t' } else { b',' };
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .quoting(format == TableFormat::Csv)
            .from_reader(open_bytes(path)?);
        let headers = reader
            .headers()
            .map_err(|e| Error::BadFormat { path: path.to_path_buf(), reason: format!("line 1 (header): {e}") })?;
        // A spreadsheet's byte-order mark would become part of the first name.
        let names: Vec<String> = headers.iter().map(|h| h.trim_start_matches('\u{feff}').trim().to_string()).collect();
        let mut cols = Vec::with_capacity(want.len());
        for w in want {
            let c = names.iter().position(|n| n == w.name);
            if c.is_none() && w.required {
                return Err(missing(path, w.name, &names));
            }
            cols.push(c);
        }
        Ok(Inner::Delimited { records: reader.into_records(), cols })
    }

    fn json(path: &Path, want: &[Want<'_>]) -> Result<Inner> {
        let mut lines = (Box::new(BufReader::new(open_bytes(path)?)) as Box<dyn BufRead>).lines();
        // The first object names the fields; a required field it lacks is a wrong column name, not a bad row.
        let mut line = 0;
        let first = loop {
            match lines.next() {
                None => break None,
                Some(l) => {
                    line += 1;
                    let l = l.map_err(|e| read_error(path, Location::Line(line), e))?;
                    if !l.trim().is_empty() {
                        break Some(l);
                    }
                }
            }
        };
        if let Some(text) = &first {
            if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text) {
                let found: Vec<String> = map.keys().cloned().collect();
                if let Some(w) = want.iter().find(|w| w.required && !map.contains_key(w.name)) {
                    return Err(missing(path, w.name, &found));
                }
            }
        }
        let names = want.iter().map(|w| w.name.to_string()).collect();
        Ok(Inner::Json { lines, line: line.saturating_sub(1), names, first })
    }

    fn parquet(path: &Path, want: &[Want<'_>]) -> Result<Inner> {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        use parquet::arrow::ProjectionMask;
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz")) {
            return Err(Error::BadFormat {
                path: path.to_path_buf(),
                reason: "a gzipped Parquet file: Parquet compresses its columns itself; gunzip it first".into(),
            });
        }
        let file = std::fs::File::open(path).map_err(io(path))?;
        let table = |e: parquet::errors::ParquetError| Error::Table { path: path.to_path_buf(), reason: e.to_string() };
        let bytes = file.metadata().map_err(io(path))?.len();
        let builder = guarded(path, || ParquetRecordBatchReaderBuilder::try_new(file))?.map_err(table)?;
        // Work is bounded before it starts: run-length encoding lets a few bytes declare billions of empty rows
        // (a fuzzed 1.2 kB file kept a core busy for a quarter of an hour). No event log has a tenth of a bit per row.
        let declared: i64 = builder.metadata().row_groups().iter().map(|g| g.num_rows().max(0)).sum();
        let bound = MAX_PARQUET_ROWS_PER_BYTE.saturating_mul(bytes).saturating_add(1 << 16);
        if u64::try_from(declared).unwrap_or(u64::MAX) > bound {
            return Err(Error::BadFormat {
                path: path.to_path_buf(),
                reason: format!(
                    "declares {declared} rows in {bytes} bytes (more than {MAX_PARQUET_ROWS_PER_BYTE} rows per byte): \
                     the file is damaged, or not an event table"
                ),
            });
        }
        guarded(path, || check_pages(path, bound))??;
        let schema = builder.schema().clone();
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let mut roots = Vec::new();
        for w in want {
            match names.iter().position(|n| n == w.name) {
                Some(c) => roots.push(c),
                None if w.required => return Err(missing(path, w.name, &names)),
                None => {}
            }
        }
        roots.sort_unstable();
        roots.dedup();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let reader = guarded(path, || builder.with_projection(mask).with_batch_size(8192).build())?.map_err(table)?;
        Ok(Inner::Parquet { reader: Some(reader), batch: None, row: 0 })
    }

    /// The next row, `None` at the end. A row that cannot be read at all (a broken CSV quote, a line that is not a
    /// JSON object) is `Some(Err)` with its location, and reading can go on.
    pub(crate) fn next_row(&mut self, want: &[Want<'_>]) -> Option<Result<(Location, Cells), (Location, String)>> {
        match &mut self.inner {
            Inner::Delimited { records, cols } => {
                let record = records.next()?;
                Some(match record {
                    Ok(r) => {
                        let line = r.position().map_or(0, |p| p.line());
                        let cells = cols.iter().map(|c| c.and_then(|c| r.get(c)).map(str::to_string)).collect();
                        Ok((Location::Line(line), cells))
                    }
                    Err(e) => {
                        let line = e.position().map_or(0, |p| p.line());
                        Err((Location::Line(line), e.to_string()))
                    }
                })
            }
            Inner::Json { lines, line, names, first } => loop {
                let text = match first.take() {
                    Some(t) => t,
                    None => match lines.next()? {
                        Ok(t) => t,
                        Err(e) => {
                            *line += 1;
                            return Some(Err((Location::Line(*line), e.to_string())));
                        }
                    },
                };
                *line += 1;
                if text.trim().is_empty() {
                    continue;
                }
                let at = Location::Line(*line);
                return Some(match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(serde_json::Value::Object(map)) => {
                        Ok((at, names.iter().map(|n| map.get(n).and_then(json_text)).collect()))
                    }
                    Ok(_) => Err((at, "not a JSON object".to_string())),
                    Err(e) => Err((at, format!("not JSON: {e}"))),
                });
            },
            Inner::Parquet { reader, batch, row } => loop {
                if let Some(b) = batch {
                    if b.at < b.len {
                        let i = b.at;
                        b.at += 1;
                        let at = Location::Row(*row);
                        *row += 1;
                        let cells: std::result::Result<Cells, String> =
                            b.columns.iter().map(|c| c.as_ref().map_or(Ok(None), |c| arrow_text(c, i))).collect();
                        return Some(cells.map(|c| (at, c)).map_err(|e| (at, e)));
                    }
                }
                let next = {
                    let r = reader.as_mut()?;
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.next()))
                };
                let next = match next {
                    Ok(n) => n?,
                    Err(_) => {
                        *reader = None;
                        *batch = None;
                        let msg = "the Parquet reader failed on this file (damaged metadata or pages); the rest of the file is not read";
                        return Some(Err((Location::Row(*row), msg.to_string())));
                    }
                };
                match next {
                    Ok(rb) => *batch = Some(Batch::new(&rb, want)),
                    Err(e) => {
                        *reader = None;
                        *batch = None;
                        return Some(Err((Location::Row(*row), format!("{e}; the rest of the file is not read"))));
                    }
                }
            },
        }
    }
}

impl Batch {
    fn new(rb: &RecordBatch, want: &[Want<'_>]) -> Batch {
        let schema = rb.schema();
        let columns = want.iter().map(|w| schema.index_of(w.name).ok().map(|c| rb.column(c).clone())).collect();
        Batch { columns, at: 0, len: rb.num_rows() }
    }
}

fn read_error(path: &Path, at: Location, e: std::io::Error) -> Error {
    Error::BadFormat { path: path.to_path_buf(), reason: format!("{at}: {e}") }
}

/// A JSON value as a cell: strings as they are, numbers and booleans as written, arrays (nested too) joined with `, `,
/// objects as JSON; null and empty arrays are no value.
fn json_text(v: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().filter_map(json_text).filter(|s| !s.is_empty()).collect();
            (!parts.is_empty()).then(|| parts.join(", "))
        }
        Value::Object(_) => Some(v.to_string()),
    }
}

/// A list cell's values joined with `, ` (none when it holds no value).
fn list_text(list: &ArrayRef) -> std::result::Result<Option<String>, String> {
    let parts: Vec<String> =
        (0..list.len()).filter_map(|j| arrow_text(list, j).transpose()).collect::<std::result::Result<_, _>>()?;
    Ok((!parts.is_empty()).then(|| parts.join(", ")))
}

/// Cell `i` of an Arrow column as text; `Err` names a type this reader does not convert.
fn arrow_text(a: &ArrayRef, i: usize) -> std::result::Result<Option<String>, String> {
    if a.is_null(i) {
        return Ok(None);
    }
    macro_rules! prim {
        ($t:ty) => {
            a.as_primitive::<$t>().value(i).to_string()
        };
    }
    let iso = |ms: Option<chrono::DateTime<chrono::Utc>>| {
        ms.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)).ok_or("timestamp out of range".to_string())
    };
    let text = match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().value(i).to_string(),
        DataType::LargeUtf8 => a.as_string::<i64>().value(i).to_string(),
        DataType::Utf8View => a.as_string_view().value(i).to_string(),
        DataType::Boolean => a.as_boolean().value(i).to_string(),
        DataType::Int8 => prim!(Int8Type),
        DataType::Int16 => prim!(Int16Type),
        DataType::Int32 => prim!(Int32Type),
        DataType::Int64 => prim!(Int64Type),
        DataType::UInt8 => prim!(UInt8Type),
        DataType::UInt16 => prim!(UInt16Type),
        DataType::UInt32 => prim!(UInt32Type),
        DataType::UInt64 => prim!(UInt64Type),
        DataType::Float32 => prim!(Float32Type),
        DataType::Float64 => prim!(Float64Type),
        DataType::Timestamp(unit, _) => {
            let v = match unit {
                TimeUnit::Second => a.as_primitive::<TimestampSecondType>().value(i).checked_mul(1_000_000_000),
                TimeUnit::Millisecond => a.as_primitive::<TimestampMillisecondType>().value(i).checked_mul(1_000_000),
                TimeUnit::Microsecond => a.as_primitive::<TimestampMicrosecondType>().value(i).checked_mul(1_000),
                TimeUnit::Nanosecond => Some(a.as_primitive::<TimestampNanosecondType>().value(i)),
            };
            iso(v.map(chrono::DateTime::from_timestamp_nanos))?
        }
        DataType::Date32 => {
            let days = i64::from(a.as_primitive::<Date32Type>().value(i));
            iso(chrono::DateTime::from_timestamp(days * 86_400, 0))?
        }
        DataType::Date64 => iso(chrono::DateTime::from_timestamp_millis(a.as_primitive::<Date64Type>().value(i)))?,
        DataType::List(_) => return list_text(&a.as_list::<i32>().value(i)),
        DataType::LargeList(_) => return list_text(&a.as_list::<i64>().value(i)),
        DataType::Dictionary(_, _) => {
            let d = a.as_any_dictionary();
            let key = d.normalized_keys()[i];
            return arrow_text(d.values(), key);
        }
        other => return Err(format!("a column of type {other} cannot be read as text; cast it to string")),
    };
    Ok(Some(text))
}
