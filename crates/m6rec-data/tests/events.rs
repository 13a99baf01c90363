//! `import_events` and the Amazon preset: every layout of one generated log reads to the same dataset; bad rows are
//! reported by file and line; the item table fills only the log's items.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use m6rec_data::import::{import_amazon, import_events, EventsSpec, ItemsSpec, TableFormat, TimeUnit};
use m6rec_data::{Dataset, Split};
use proptest::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A generated event: user, item, seconds.
type Ev = (u32, u32, i64);

const BASE: i64 = 1_600_000_000;

fn time_text(t: i64, style: u8) -> String {
    let s = BASE + t;
    match style {
        0 => s.to_string(),
        1 => (s * 1000).to_string(),
        2 => chrono::DateTime::from_timestamp(s, 0).unwrap().to_rfc3339(),
        _ => chrono::DateTime::from_timestamp(s, 0).unwrap().format("%Y-%m-%d %H:%M:%S").to_string(),
    }
}

/// The log's columns in `order` (a permutation of user, item, time, and an unrelated `note` column).
fn columns(events: &[Ev], style: u8) -> Vec<(&'static str, Vec<String>)> {
    vec![
        ("user", events.iter().map(|e| format!("u{}", e.0)).collect()),
        ("item", events.iter().map(|e| format!("i{}", e.1)).collect()),
        ("when", events.iter().map(|e| time_text(e.2, style)).collect()),
        ("note", events.iter().map(|e| format!("a note, with \"quotes\" {}", e.1)).collect()),
    ]
}

fn write_log(dir: &Path, events: &[Ev], format: TableFormat, style: u8, order: &[usize], gz: bool) -> PathBuf {
    let cols = columns(events, style);
    let cols: Vec<&(&str, Vec<String>)> = order.iter().map(|&c| &cols[c]).collect();
    let ext = match format {
        TableFormat::Csv => "csv",
        TableFormat::Tsv => "tsv",
        TableFormat::JsonLines => "jsonl",
        TableFormat::Parquet => "parquet",
    };
    let mut bytes = Vec::new();
    match format {
        TableFormat::Csv | TableFormat::Tsv => {
            let sep = if format == TableFormat::Csv { b',' } else { b'\t' };
            let mut w = csv::WriterBuilder::new().delimiter(sep).from_writer(&mut bytes);
            w.write_record(cols.iter().map(|c| c.0)).unwrap();
            for r in 0..events.len() {
                let row: Vec<String> = cols.iter().map(|c| c.1[r].replace('\t', " ")).collect();
                w.write_record(&row).unwrap();
            }
            w.flush().unwrap();
        }
        TableFormat::JsonLines => {
            for r in 0..events.len() {
                let mut obj = serde_json::Map::new();
                for c in &cols {
                    // Numeric times as JSON numbers, as exports write them.
                    let v = match c.1[r].parse::<i64>() {
                        Ok(n) => serde_json::Value::from(n),
                        Err(_) => serde_json::Value::from(c.1[r].clone()),
                    };
                    obj.insert(c.0.to_string(), v);
                }
                writeln!(bytes, "{}", serde_json::Value::Object(obj)).unwrap();
            }
        }
        TableFormat::Parquet => {
            let arrays: Vec<(String, ArrayRef)> = cols
                .iter()
                .map(|c| {
                    let a: ArrayRef = match c.1.iter().map(|v| v.parse::<i64>()).collect::<Result<Vec<_>, _>>() {
                        Ok(ints) => Arc::new(Int64Array::from(ints)),
                        Err(_) => Arc::new(StringArray::from(c.1.clone())),
                    };
                    (c.0.to_string(), a)
                })
                .collect();
            let batch = RecordBatch::try_from_iter(arrays).unwrap();
            let mut w = parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
        }
    }
    // Parquet compresses inside; a gzipped Parquet file is refused (tested below).
    let (name, bytes) = if gz && format != TableFormat::Parquet {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&bytes).unwrap();
        (format!("log.{ext}.gz"), e.finish().unwrap())
    } else {
        (format!("log.{ext}"), bytes)
    };
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Each user's items in time order, equal times in file order: what any import of the log must give.
fn expected(events: &[Ev]) -> Vec<(String, Vec<String>)> {
    let mut users: Vec<u32> = events.iter().map(|e| e.0).collect();
    users.sort_unstable();
    users.dedup();
    users
        .into_iter()
        .map(|u| {
            let mut theirs: Vec<&Ev> = events.iter().filter(|e| e.0 == u).collect();
            theirs.sort_by_key(|e| e.2);
            (format!("u{u}"), theirs.iter().map(|e| format!("i{}", e.1)).collect())
        })
        .collect()
}

fn sequences(ds: &Dataset) -> Vec<(String, Vec<String>)> {
    let split = Split::leave_one_out(&ds.interactions, ds.n_users());
    let mut out: Vec<(String, Vec<String>)> = (0..ds.n_users())
        .map(|u| {
            let seq = split.sequence(u).iter().map(|&i| ds.items[i as usize].id.clone()).collect();
            (ds.users[u].clone(), seq)
        })
        .collect();
    out.sort();
    out
}

fn spec(path: &Path) -> EventsSpec {
    EventsSpec { user: "user".into(), item: "item".into(), time: Some("when".into()), ..EventsSpec::new(path) }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// CSV, TSV, JSON lines and Parquet, gzip or not, any column order, epoch seconds / milliseconds / ISO-8601
    /// times, duplicates and ties: one log, one dataset.
    #[test]
    fn every_layout_of_a_log_imports_to_the_same_sequences(
        events in prop::collection::vec((0u32..6, 0u32..10, 0i64..15), 1..80),
        format in 0usize..4,
        style in 0u8..4,
        order in Just(vec![0usize, 1, 2, 3]).prop_shuffle(),
        gz in any::<bool>(),
    ) {
        let format = [TableFormat::Csv, TableFormat::Tsv, TableFormat::JsonLines, TableFormat::Parquet][format];
        let tmp = tempfile::tempdir().unwrap();
        let path = write_log(tmp.path(), &events, format, style, &order, gz);
        let imported = import_events(&spec(&path), None).unwrap();
        prop_assert!(imported.report.skipped.is_empty(), "{:?}", imported.report.skipped);
        prop_assert_eq!(imported.dataset.interactions.len(), events.len(), "duplicates are kept");
        let mut want = expected(&events);
        want.sort();
        prop_assert_eq!(sequences(&imported.dataset), want);
        let first = imported.dataset.interactions.timestamp.iter().min().copied();
        prop_assert_eq!(first, events.iter().map(|e| BASE + e.2).min(), "times stored in seconds");
    }
}

#[test]
fn bad_rows_are_reported_by_line_and_value_and_the_rest_imports() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log.csv");
    std::fs::write(
        &log,
        "user,item,when\nu1,i1,2024-01-01\nu1,i2,not a time\n,i3,2024-01-02\nu2,i1,2024-01-03\nu2,i2,2024-01-04\n",
    )
    .unwrap();
    let imported = import_events(&spec(&log), None).unwrap();
    let skipped: Vec<String> = imported.report.skipped.iter().map(|s| s.to_string()).collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped[0].ends_with("log.csv:3: time `not a time` is neither epoch seconds/milliseconds nor an ISO-8601 date-time (2024-03-01T12:00:00Z) or date (2024-03-01)"), "{}", skipped[0]);
    assert!(skipped[1].ends_with("log.csv:4: user empty id"), "{}", skipped[1]);
    assert_eq!(imported.dataset.interactions.len(), 3);
}

#[test]
fn a_missing_column_names_the_columns_that_exist() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log.tsv");
    std::fs::write(&log, "uid\titem\twhen\nu1\ti1\t1\n").unwrap();
    let e = import_events(&spec(&log), None).unwrap_err().to_string();
    assert!(e.contains("no column `user`") && e.contains("uid, item, when"), "{e}");
    let json = tmp.path().join("log.jsonl");
    std::fs::write(&json, "{\"user\": \"u1\", \"item\": \"i1\", \"t\": 1}\n").unwrap();
    let e = import_events(&spec(&json), None).unwrap_err().to_string();
    assert!(e.contains("no column `when`") && e.contains("user") && e.contains(", t"), "{e}");
    let pq = tmp.path().join("log.parquet.gz");
    std::fs::write(&pq, "x").unwrap();
    let e = import_events(&spec(&pq), None).unwrap_err().to_string();
    assert!(e.contains("gunzip"), "{e}");
    let odd = tmp.path().join("log.xlsx");
    std::fs::write(&odd, "x").unwrap();
    let e = import_events(&spec(&odd), None).unwrap_err().to_string();
    assert!(e.contains("--log-format"), "{e}");
}

#[test]
fn the_item_table_fills_the_logs_items_and_reports_what_it_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("pics")).unwrap();
    std::fs::write(tmp.path().join("pics/one.png"), b"png").unwrap();
    let log = tmp.path().join("log.csv");
    std::fs::write(&log, "user,item,when\nu1,i1,1\nu1,i2,2\nu1,i9,3\nu2,i2,4\n").unwrap();
    let items = tmp.path().join("items.tsv");
    std::fs::write(
        &items,
        "item_id\tname\tgenre\tblurb\tpicture\ni1\tFirst\tpuzzle\tA box.\tpics/one.png\ni2\tSecond\t\tTwo.\tpics/none.png\n\
         i1\tAgain\tx\ty\t\ni7\tUnused\tz\tz\t\n",
    )
    .unwrap();
    let items_spec = ItemsSpec {
        title: Some("name".into()),
        text: vec!["genre".into(), "blurb".into()],
        image: Some("picture".into()),
        ..ItemsSpec::new(&items)
    };
    let imported = import_events(&spec(&log), Some(&items_spec)).unwrap();
    let ds = &imported.dataset;
    let ids: Vec<&str> = ds.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["i1", "i2"], "i9 has no row, i7 no event");
    assert_eq!(ds.items[0].title, "First");
    assert_eq!(ds.items[0].text.as_deref(), Some("puzzle. A box."));
    assert_eq!(ds.items[1].text.as_deref(), Some("Two."));
    assert_eq!(ds.items[0].image.as_deref(), Some("media/images/i1.png"));
    assert_eq!(ds.items[1].image, None);
    assert_eq!(imported.media.len(), 1);
    let skipped: Vec<String> = imported.report.skipped.iter().map(|s| s.to_string()).collect();
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].contains("log.csv:4: item `i9` is not in the item table"), "{}", skipped[0]);
    let warnings: Vec<String> = imported.report.warnings.iter().map(|s| s.to_string()).collect();
    assert!(warnings.iter().any(|w| w.contains("items.tsv:3") && w.contains("pics/none.png")), "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("items.tsv:4") && w.contains("second row")), "{warnings:?}");
    assert_eq!(imported.report.unused_item_rows, 1);
    // Saved with its media, and read back.
    let out = tmp.path().join("ds");
    ds.save_with_media(&out, &imported.media).unwrap();
    assert_eq!(std::fs::read(out.join("media/images/i1.png")).unwrap(), b"png");
    assert_eq!(Dataset::load(&out).unwrap(), *ds);
}

#[test]
fn ratings_below_the_bound_are_not_interactions() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log.csv");
    std::fs::write(&log, "user,item,when,stars\nu1,i1,1,5\nu1,i2,2,2\nu1,i3,3,4.5\nu2,i1,4,x\n").unwrap();
    let s = EventsSpec { rating: Some("stars".into()), min_rating: Some(4.0), ..spec(&log) };
    let imported = import_events(&s, None).unwrap();
    assert_eq!(imported.report.below_min_rating, 1);
    assert_eq!(imported.report.skipped.len(), 1, "the unparsable rating");
    assert!(imported.report.skipped[0].reason.contains("rating `x`"));
    assert_eq!(imported.dataset.interactions.len(), 2);
}

#[test]
fn without_a_time_column_file_order_is_time_order() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log.csv");
    std::fs::write(&log, "user,item\nu1,b\nu1,a\nu1,c\n").unwrap();
    let s = EventsSpec { time: None, time_unit: TimeUnit::Auto, ..spec(&log) };
    let ds = import_events(&s, None).unwrap().dataset;
    assert_eq!(sequences(&ds), vec![("u1".to_string(), vec!["b".to_string(), "a".into(), "c".into()])]);
}

fn write_gz(path: &Path, text: &str) {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(text.as_bytes()).unwrap();
    std::fs::write(path, e.finish().unwrap()).unwrap();
}

#[test]
fn amazon_reviews_in_both_layouts_import_with_their_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let y2018 = tmp.path().join("2018");
    std::fs::create_dir_all(&y2018).unwrap();
    write_gz(
        &y2018.join("Toys_and_Games_5.json.gz"),
        r#"{"overall": 5.0, "verified": true, "reviewerID": "A1", "asin": "B01", "reviewText": "fun", "unixReviewTime": 1441324800}
{"overall": 2.0, "reviewerID": "A1", "asin": "B02", "unixReviewTime": 1441324700}
{"overall": 4.0, "reviewerID": "A2", "asin": "B01", "unixReviewTime": 1441324900}
"#,
    );
    write_gz(
        &y2018.join("meta_Toys_and_Games.json.gz"),
        r#"{"asin": "B01", "title": "Blocks", "category": ["Toys & Games", "Building"], "brand": "Lego", "description": ["Bricks."]}
{"asin": "B02", "title": "Kite", "brand": "Sky"}
{"asin": "B99", "title": "Not reviewed"}
"#,
    );
    let a = import_amazon(&y2018.join("Toys_and_Games_5.json.gz"), None, None).unwrap();
    assert!(a.report.skipped.is_empty(), "{:?}", a.report.skipped);
    assert_eq!(sequences(&a.dataset)[0], ("A1".to_string(), vec!["B02".to_string(), "B01".into()]));
    let blocks = a.dataset.items.iter().find(|i| i.id == "B01").unwrap();
    assert_eq!(blocks.title, "Blocks");
    assert_eq!(blocks.text.as_deref(), Some("Toys & Games, Building. Lego. Bricks."));
    assert_eq!(a.report.unused_item_rows, 1);
    let rated = import_amazon(&y2018.join("Toys_and_Games_5.json.gz"), None, Some(4.0)).unwrap();
    assert_eq!(rated.dataset.interactions.len(), 2);

    let y2023 = tmp.path().join("2023");
    std::fs::create_dir_all(&y2023).unwrap();
    std::fs::write(
        y2023.join("Toys_and_Games.jsonl"),
        r#"{"rating": 5.0, "title": "ok", "asin": "C1v", "parent_asin": "C1", "user_id": "U1", "timestamp": 1588687728923}
{"rating": 3.0, "asin": "C2", "parent_asin": "C2", "user_id": "U1", "timestamp": 1588687728000}
"#,
    )
    .unwrap();
    let meta = y2023.join("meta.jsonl");
    std::fs::write(
        &meta,
        r#"{"parent_asin": "C1", "title": "Puzzle", "categories": ["Toys"], "store": "Acme", "features": ["500 pieces"], "description": []}
{"parent_asin": "C2", "title": "Ball"}
"#,
    )
    .unwrap();
    let b = import_amazon(&y2023.join("Toys_and_Games.jsonl"), Some(&meta), None).unwrap();
    assert_eq!(sequences(&b.dataset)[0].1, ["C2", "C1"], "milliseconds order the two");
    let puzzle = b.dataset.items.iter().find(|i| i.id == "C1").unwrap();
    assert_eq!(puzzle.text.as_deref(), Some("Toys. Acme. 500 pieces"));
    assert!(b.report.skipped.is_empty(), "{:?}", b.report.skipped);

    let other = tmp.path().join("other.jsonl");
    std::fs::write(&other, "{\"a\": 1}\n").unwrap();
    let e = import_amazon(&other, None, None).unwrap_err().to_string();
    assert!(e.contains("reviewerID") && e.contains("m6rec import events"), "{e}");
}

#[test]
fn recbole_item_files_may_name_images_and_audio() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("shop");
    std::fs::create_dir_all(src.join("media")).unwrap();
    std::fs::write(src.join("media/a.JPG"), b"jpg").unwrap();
    std::fs::write(src.join("media/b.wav"), b"wav").unwrap();
    std::fs::write(
        src.join("shop.inter"),
        "user_id:token\titem_id:token\ttimestamp:float\nu\ta\t1\nu\tb\t2\nu\tc\t3\n",
    )
    .unwrap();
    std::fs::write(
        src.join("shop.item"),
        "item_id:token\ttitle:token_seq\timage:token\taudio_path:token\na\tA\tmedia/a.JPG\t\nb\tB\t../../x.png\tmedia/b.wav\nc\tC\t\t\n",
    )
    .unwrap();
    let imported = m6rec_data::import::import_recbole(&src).unwrap();
    let items = &imported.dataset.items;
    assert_eq!(items[0].image.as_deref(), Some("media/images/a.jpg"));
    assert_eq!((items[1].image.as_deref(), items[1].audio.as_deref()), (None, Some("media/audio/b.wav")));
    assert_eq!(items[0].text, None, "media paths are not text");
    let w: Vec<String> = imported.report.warnings.iter().map(|s| s.to_string()).collect();
    assert!(w.len() == 1 && w[0].contains("shop.item:3") && w[0].contains("../../x.png"), "{w:?}");
    let out = tmp.path().join("ds");
    imported.dataset.save_with_media(&out, &imported.media).unwrap();
    assert_eq!(std::fs::read(out.join("media/audio/b.wav")).unwrap(), b"wav");
}
