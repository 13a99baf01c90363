//! Arrow/Parquet reading and writing of the three tables. Column names and types are the format (docs/formats.md).

use crate::error::io;
use crate::records::{Interactions, Item};
use crate::{Error, Result};
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

fn table_err(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |reason| Error::Table { path: path.to_path_buf(), reason }
}

fn write(path: &Path, fields: Vec<Field>, columns: Vec<ArrayRef>) -> Result<()> {
    let err = table_err(path);
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| err(e.to_string()))?;
    let file = File::create(path).map_err(io(path))?;
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut w = ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| err(e.to_string()))?;
    w.write(&batch).map_err(|e| err(e.to_string()))?;
    w.close().map_err(|e| err(e.to_string()))?;
    Ok(())
}

fn read(path: &Path) -> Result<Vec<RecordBatch>> {
    let err = table_err(path);
    let file = File::open(path).map_err(io(path))?;
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(file).and_then(|b| b.build()).map_err(|e| err(e.to_string()))?;
    reader.map(|b| b.map_err(|e| err(e.to_string()))).collect()
}

fn column<'a, T: 'static>(path: &Path, batch: &'a RecordBatch, name: &'static str, ty: &str) -> Result<&'a T> {
    let col = batch.column_by_name(name).ok_or_else(|| Error::BadColumn {
        path: path.to_path_buf(),
        column: name,
        reason: "is missing".into(),
    })?;
    col.as_any().downcast_ref::<T>().ok_or_else(|| Error::BadColumn {
        path: path.to_path_buf(),
        column: name,
        reason: format!("has type {}, expected {ty}", col.data_type()),
    })
}

fn opt_strings(col: Option<&StringArray>, n: usize) -> Vec<Option<String>> {
    match col {
        Some(c) => (0..n).map(|i| c.is_valid(i).then(|| c.value(i).to_string())).collect(),
        None => vec![None; n],
    }
}

fn req_strings(path: &Path, c: &StringArray, column: &'static str) -> Result<Vec<String>> {
    (0..c.len())
        .map(|i| {
            if c.is_valid(i) {
                Ok(c.value(i).to_string())
            } else {
                Err(Error::BadColumn { path: path.to_path_buf(), column, reason: format!("is null at row {i}") })
            }
        })
        .collect()
}

/// `users.parquet`: `user_idx: u32` (0..n, row order), `user_id: utf8`.
pub(crate) fn write_users(path: &Path, users: &[String]) -> Result<()> {
    let idx: Vec<u32> = (0..users.len()).map(|i| i as u32).collect();
    write(
        path,
        vec![Field::new("user_idx", DataType::UInt32, false), Field::new("user_id", DataType::Utf8, false)],
        vec![Arc::new(UInt32Array::from(idx)), Arc::new(StringArray::from_iter_values(users))],
    )
}

pub(crate) fn read_users(path: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for b in read(path)? {
        check_dense(path, column::<UInt32Array>(path, &b, "user_idx", "uint32")?, out.len())?;
        out.extend(req_strings(path, column::<StringArray>(path, &b, "user_id", "utf8")?, "user_id")?);
    }
    Ok(out)
}

fn check_dense(path: &Path, idx: &UInt32Array, offset: usize) -> Result<()> {
    for (row, v) in idx.values().iter().enumerate() {
        if *v as usize != offset + row {
            return Err(Error::BadFormat {
                path: path.to_path_buf(),
                reason: format!(
                    "row {}: index {v} out of order (indices must be 0, 1, 2, ... in row order)",
                    offset + row
                ),
            });
        }
    }
    Ok(())
}

/// `items.parquet`: `item_idx: u32`, `item_id`, `domain`, `title: utf8`, `text`, `image`, `audio: utf8?`.
pub(crate) fn write_items(path: &Path, items: &[Item]) -> Result<()> {
    let idx: Vec<u32> = (0..items.len()).map(|i| i as u32).collect();
    let s = |f: fn(&Item) -> Option<&str>| -> ArrayRef { Arc::new(items.iter().map(f).collect::<StringArray>()) };
    write(
        path,
        vec![
            Field::new("item_idx", DataType::UInt32, false),
            Field::new("item_id", DataType::Utf8, false),
            Field::new("domain", DataType::Utf8, false),
            Field::new("title", DataType::Utf8, false),
            Field::new("text", DataType::Utf8, true),
            Field::new("image", DataType::Utf8, true),
            Field::new("audio", DataType::Utf8, true),
        ],
        vec![
            Arc::new(UInt32Array::from(idx)),
            s(|i| Some(&i.id)),
            s(|i| Some(&i.domain)),
            s(|i| Some(&i.title)),
            s(|i| i.text.as_deref()),
            s(|i| i.image.as_deref()),
            s(|i| i.audio.as_deref()),
        ],
    )
}

pub(crate) fn read_items(path: &Path) -> Result<Vec<Item>> {
    let mut out = Vec::new();
    for b in read(path)? {
        let n = b.num_rows();
        check_dense(path, column::<UInt32Array>(path, &b, "item_idx", "uint32")?, out.len())?;
        let ids = req_strings(path, column::<StringArray>(path, &b, "item_id", "utf8")?, "item_id")?;
        let domains = req_strings(path, column::<StringArray>(path, &b, "domain", "utf8")?, "domain")?;
        let titles = req_strings(path, column::<StringArray>(path, &b, "title", "utf8")?, "title")?;
        let opt = |name: &'static str| -> Result<Vec<Option<String>>> {
            let c = match b.column_by_name(name) {
                Some(_) => Some(column::<StringArray>(path, &b, name, "utf8")?),
                None => None,
            };
            Ok(opt_strings(c, n))
        };
        let (text, image, audio) = (opt("text")?, opt("image")?, opt("audio")?);
        for i in 0..n {
            out.push(Item {
                id: ids[i].clone(),
                domain: domains[i].clone(),
                title: titles[i].clone(),
                text: text[i].clone(),
                image: image[i].clone(),
                audio: audio[i].clone(),
            });
        }
    }
    Ok(out)
}

/// `interactions.parquet`: `user_idx, item_idx: u32`, `timestamp: i64`, `domain: utf8` (the item's), `event: utf8?`.
pub(crate) fn write_interactions(path: &Path, inter: &Interactions, items: &[Item]) -> Result<()> {
    let domains: StringArray = inter.item.iter().map(|&i| items.get(i as usize).map(|it| it.domain.as_str())).collect();
    write(
        path,
        vec![
            Field::new("user_idx", DataType::UInt32, false),
            Field::new("item_idx", DataType::UInt32, false),
            Field::new("timestamp", DataType::Int64, false),
            Field::new("domain", DataType::Utf8, true),
            Field::new("event", DataType::Utf8, true),
        ],
        vec![
            Arc::new(UInt32Array::from(inter.user.clone())),
            Arc::new(UInt32Array::from(inter.item.clone())),
            Arc::new(Int64Array::from(inter.timestamp.clone())),
            Arc::new(domains),
            Arc::new(inter.event.iter().map(|e| e.as_deref()).collect::<StringArray>()),
        ],
    )
}

pub(crate) fn read_interactions(path: &Path) -> Result<Interactions> {
    let mut out = Interactions::default();
    for b in read(path)? {
        let n = b.num_rows();
        out.user.extend_from_slice(column::<UInt32Array>(path, &b, "user_idx", "uint32")?.values());
        out.item.extend_from_slice(column::<UInt32Array>(path, &b, "item_idx", "uint32")?.values());
        out.timestamp.extend_from_slice(column::<Int64Array>(path, &b, "timestamp", "int64")?.values());
        let ev = match b.column_by_name("event") {
            Some(_) => Some(column::<StringArray>(path, &b, "event", "utf8")?),
            None => None,
        };
        out.event.extend(opt_strings(ev, n));
    }
    Ok(out)
}
