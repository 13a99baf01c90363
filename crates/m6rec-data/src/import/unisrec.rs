//! UniSRec-processed Amazon datasets (`<name>.text`, `<name>.item2index`, `<name>.user2index`,
//! `<name>.{train,valid,test}.inter`), for example the "Scientific" dataset used by UniSRec, VQ-Rec and Recformer.
//!
//! The files hold leave-one-out rows, not sequences: `train.inter` has one row per earlier target, listed per user
//! from the latest position to the earliest, and histories are cut to the last 50 items. Full sequences are rebuilt
//! exactly: the earliest train row's history, each train row's target in turn, then the validation and test targets.
//! There are no timestamps; an event's position in its user's sequence is its timestamp, so the leave-one-out split
//! reproduces the files' validation and test targets.

use super::{read_text, Builder, Imported};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// `(history, target)` rows of one user.
type Rows = Vec<(Vec<u32>, u32)>;

/// An `id<TAB>index` file (no header) as `ids[index]`; bad lines are skipped and reported.
///
/// Indices are dense, so none can exceed the number of lines (one more allows 1-based files): a larger one is a bad
/// line, never an allocation of its size.
fn read_index(b: &mut Builder, path: &Path, what: &str) -> Result<Vec<Option<String>>> {
    let text = read_text(path)?;
    let n_lines = text.lines().count();
    let mut ids: Vec<Option<String>> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut f = line.split('\t');
        match (f.next(), f.next().and_then(|x| x.trim().parse::<usize>().ok())) {
            (Some(_), Some(idx)) if idx > n_lines => b.skip(
                path,
                n + 1,
                format!(
                    "index {idx} is out of range: the file has {n_lines} lines, so indices run from 0 to {n_lines}"
                ),
            ),
            (Some(id), Some(idx)) if !id.is_empty() => {
                if ids.len() <= idx {
                    ids.resize(idx + 1, None);
                }
                ids[idx] = Some(id.to_string());
            }
            _ => b.skip(path, n + 1, format!("expected `{what}<TAB>index`")),
        }
    }
    Ok(ids)
}

fn file(src: &Path, name: &str, ext: &str) -> PathBuf {
    src.join(format!("{name}.{ext}"))
}

/// Imports a UniSRec dataset folder; the dataset name is the prefix of its `.text` file.
pub fn import_unisrec(src: &Path) -> Result<Imported> {
    let name = std::fs::read_dir(src)
        .map_err(crate::error::io(src))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".text")).map(str::to_string))
        .next()
        .ok_or_else(|| Error::BadFormat {
            path: src.to_path_buf(),
            reason: "no <name>.text file: a UniSRec folder has <name>.text, .item2index, .user2index and .{train,valid,test}.inter".into(),
        })?;
    let domain = name.to_lowercase();
    let mut b = Builder::default();

    // Items in index order, so dense item i = UniSRec index i.
    let path = file(src, &name, "item2index");
    let asins = read_index(&mut b, &path, "ASIN")?;
    for (idx, asin) in asins.iter().enumerate() {
        let Some(asin) = asin else {
            return Err(Error::BadFormat { path, reason: format!("no item has index {idx} (indices must be 0..n)") });
        };
        b.item(asin, &domain);
    }
    read_item_texts(&mut b, &file(src, &name, "text"), &name)?;

    let users = read_index(&mut b, &file(src, &name, "user2index"), "user_id")?;

    let rows = read_inters(&mut b, src, &name, users.len(), asins.len())?;
    let [train, valid, test] = rows;
    for (u, id) in users.iter().enumerate() {
        let Some(id) = id else { continue };
        let mut seq: Vec<u32> = Vec::new();
        // Train rows are listed latest first: the earliest is the last one.
        let mut earlier: Vec<&(Vec<u32>, u32)> = train[u].iter().rev().collect();
        let first = earlier.first().map(|r| &r.0).or_else(|| valid[u].first().map(|r| &r.0));
        if let Some(h) = first {
            seq.extend(h);
        }
        for r in earlier.drain(..) {
            seq.push(r.1);
        }
        seq.extend(valid[u].first().map(|r| r.1));
        seq.extend(test[u].first().map(|r| r.1));
        if seq.is_empty() {
            continue;
        }
        let user = b.user(id);
        for (t, &item) in seq.iter().enumerate() {
            b.event(user, item, t as i64, None);
        }
    }
    b.finish(&name, format!("unisrec:{}", src.display()), src)
}

/// `<name>.text`: each known item's title (its first sentence) and text; other lines are skip records.
fn read_item_texts(b: &mut Builder, path: &Path, name: &str) -> Result<()> {
    for (n, line) in read_text(path)?.lines().enumerate().skip(1) {
        let Some((asin, text)) = line.split_once('\t') else {
            b.skip(path, n + 1, "expected `item_id<TAB>text`");
            continue;
        };
        let Some(i) = b.known_item(asin) else {
            b.skip(path, n + 1, format!("item {asin} is not in {name}.item2index"));
            continue;
        };
        let text = text.trim();
        let item = b.item_mut(i);
        item.title = text.split(". ").next().unwrap_or(text).trim_end_matches('.').to_string();
        item.text = Some(text.to_string());
    }
    Ok(())
}

/// `<name>.{train,valid,test}.inter`: (history, target) rows per user index, per file; rows out of range are skip
/// records.
fn read_inters(b: &mut Builder, src: &Path, name: &str, n_users: usize, n_items: usize) -> Result<[Vec<Rows>; 3]> {
    let mut rows: [Vec<Rows>; 3] = Default::default();
    for (k, part) in ["train", "valid", "test"].iter().enumerate() {
        let path = file(src, name, &format!("{part}.inter"));
        rows[k] = vec![Vec::new(); n_users];
        for (n, line) in read_text(&path)?.lines().enumerate().skip(1) {
            let f: Vec<&str> = line.split('\t').collect();
            let parsed = (|| {
                let u = f.first()?.trim().parse::<usize>().ok().filter(|&u| u < n_users)?;
                let hist: Option<Vec<u32>> = f.get(1)?.split_whitespace().map(|x| x.parse::<u32>().ok()).collect();
                let target = f.get(2)?.trim().parse::<u32>().ok()?;
                let hist = hist?;
                let ok = hist.iter().chain([&target]).all(|&i| (i as usize) < n_items);
                ok.then_some((u, hist, target))
            })();
            match parsed {
                Some((u, hist, target)) => rows[k][u].push((hist, target)),
                None => b.skip(&path, n + 1, "expected `user index<TAB>item indices<TAB>item index`, all in range"),
            }
        }
    }
    Ok(rows)
}
