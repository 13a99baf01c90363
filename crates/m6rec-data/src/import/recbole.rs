//! RecBole atomic files: a directory holding `<name>.inter` and optionally `<name>.item`.
//!
//! Headers name each field as `name:type` (`user_id:token`, `item_id:token`, `timestamp:float`, `title:token_seq`).
//! Items take their title from the first field whose name contains `title` (else the id), their domain from a
//! `domain` field (else the dataset name), their image and audio from `image` / `audio` fields (also `image_path`,
//! `audio_path`: paths relative to the `.item` file's folder, copied into the dataset; a missing or escaping path is
//! a warning and the item has none), and their text from the remaining `token_seq` fields.

use super::{dataset_name, parse_ts, read_text, Builder, Imported, Skipped};
use crate::media::{copy_for, MediaCopy, MediaKind};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Imports a RecBole atomic dataset directory (or the path of its `.inter` file).
pub fn import_recbole(src: &Path) -> Result<Imported> {
    let inter = find(src, "inter")?.ok_or_else(|| Error::BadFormat {
        path: src.to_path_buf(),
        reason: "no .inter file here; a RecBole atomic dataset is a folder with <name>.inter (and <name>.item)".into(),
    })?;
    let name = inter.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| dataset_name(src));
    let mut b = Builder::default();
    let mut media = Media::default();
    if let Some(item_path) = find(src, "item")? {
        read_items(&mut b, &item_path, &name, &mut media)?;
    }
    read_inter(&mut b, &inter, &name)?;
    let mut imported = b.finish(&name, format!("recbole import of {}", inter.display()), src)?;
    imported.media = media.copies;
    imported.report.warnings = media.warnings;
    Ok(imported)
}

/// Media files named in the `.item` file, and the paths that could not be used.
#[derive(Default)]
struct Media {
    copies: Vec<MediaCopy>,
    warnings: Vec<Skipped>,
}

fn media_col(h: &Header, kind: &str) -> Option<usize> {
    h.col(kind).or_else(|| h.col(&format!("{kind}_path")))
}

fn find(src: &Path, ext: &str) -> Result<Option<PathBuf>> {
    if src.is_file() {
        let p = src.with_extension(ext);
        return Ok(p.exists().then_some(p));
    }
    let entries = std::fs::read_dir(src).map_err(crate::error::io(src))?;
    let mut found: Vec<PathBuf> =
        entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == ext)).collect();
    found.sort();
    Ok(found.into_iter().next())
}

struct Header {
    names: Vec<String>,
    types: Vec<String>,
}

impl Header {
    fn parse(path: &Path, line: Option<&str>) -> Result<Header> {
        let line =
            line.ok_or_else(|| Error::BadFormat { path: path.to_path_buf(), reason: "empty file (no header)".into() })?;
        let mut names = Vec::new();
        let mut types = Vec::new();
        for field in line.split('\t') {
            let (n, t) = field.split_once(':').ok_or_else(|| Error::BadFormat {
                path: path.to_path_buf(),
                reason: format!("line 1: header field `{field}` is not `name:type`"),
            })?;
            names.push(n.trim().to_string());
            types.push(t.trim().to_string());
        }
        Ok(Header { names, types })
    }
    fn col(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }
    fn require(&self, path: &Path, name: &str) -> Result<usize> {
        self.col(name).ok_or_else(|| Error::BadFormat {
            path: path.to_path_buf(),
            reason: format!("line 1: header has no `{name}` field (found: {})", self.names.join(", ")),
        })
    }
}

/// Non-empty data lines (1-based line numbers) with the header's field count; the others are reported as skipped.
fn rows<'c>(b: &mut Builder, path: &Path, h: &Header, lines: std::str::Lines<'c>) -> Vec<(usize, Vec<&'c str>)> {
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        let line_no = i + 2;
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() == h.names.len() {
            out.push((line_no, f));
        } else {
            b.skip(path, line_no, format!("expected {} fields, found {}", h.names.len(), f.len()));
        }
    }
    out
}

fn read_items(b: &mut Builder, path: &Path, name: &str, media: &mut Media) -> Result<()> {
    let content = read_text(path)?;
    let mut lines = content.lines();
    let h = Header::parse(path, lines.next())?;
    let id_col = h.require(path, "item_id")?;
    let title_col = h.names.iter().position(|n| n.contains("title"));
    let domain_col = h.col("domain");
    let (image_col, audio_col) = (media_col(&h, "image"), media_col(&h, "audio"));
    let special = [Some(id_col), title_col, domain_col, image_col, audio_col];
    let text_cols: Vec<usize> =
        (0..h.names.len()).filter(|&c| !special.contains(&Some(c)) && h.types[c] == "token_seq").collect();
    let root = path.parent().map(Path::to_path_buf).unwrap_or_default();
    for (line_no, f) in rows(b, path, &h, lines) {
        if let Some(reason) = super::bad_id(f[id_col]) {
            b.skip(path, line_no, format!("item {reason}"));
            continue;
        }
        let domain = domain_col.map(|c| f[c]).filter(|d| !d.is_empty()).unwrap_or(name);
        let idx = b.item(f[id_col], domain);
        let item = b.item_mut(idx);
        if let Some(c) = title_col {
            item.title = f[c].to_string();
        }
        let text: Vec<String> =
            text_cols.iter().filter(|&&c| !f[c].is_empty()).map(|&c| format!("{}: {}", h.names[c], f[c])).collect();
        if !text.is_empty() {
            item.text = Some(text.join(". "));
        }
        for (kind, col) in [(MediaKind::Image, image_col), (MediaKind::Audio, audio_col)] {
            let Some(rel) = col.map(|c| f[c].trim()).filter(|r| !r.is_empty()) else { continue };
            match copy_for(&root, rel, f[id_col], kind) {
                Ok(copy) => {
                    kind.set(b.item_mut(idx), copy.to.clone());
                    media.copies.push(copy);
                }
                Err(e) => media.warnings.push(Skipped {
                    file: path.to_path_buf(),
                    line: line_no,
                    reason: format!("{kind:?} path: {e} (under {}); the item has none", root.display()),
                }),
            }
        }
    }
    Ok(())
}

fn read_inter(b: &mut Builder, path: &Path, name: &str) -> Result<()> {
    let content = read_text(path)?;
    let mut lines = content.lines();
    let h = Header::parse(path, lines.next())?;
    let (u_col, i_col) = (h.require(path, "user_id")?, h.require(path, "item_id")?);
    let ts_col = h.col("timestamp");
    let restrict = b.known_item_count() > 0;
    for (line_no, f) in rows(b, path, &h, lines) {
        if let Some(reason) = super::bad_id(f[u_col])
            .map(|r| format!("user {r}"))
            .or_else(|| super::bad_id(f[i_col]).map(|r| format!("item {r}")))
        {
            b.skip(path, line_no, reason);
            continue;
        }
        // Without a timestamp column the line order is the time order.
        let ts = match ts_col.map(|c| parse_ts(f[c])) {
            Some(Ok(t)) => t,
            Some(Err(reason)) => {
                b.skip(path, line_no, reason);
                continue;
            }
            None => line_no as i64,
        };
        let item = match (restrict, b.known_item(f[i_col])) {
            (_, Some(it)) => it,
            (true, None) => {
                b.skip(path, line_no, format!("item `{}` is not in the .item file", f[i_col]));
                continue;
            }
            (false, None) => b.item(f[i_col], name),
        };
        let user = b.user(f[u_col]);
        b.event(user, item, ts, None);
    }
    Ok(())
}
