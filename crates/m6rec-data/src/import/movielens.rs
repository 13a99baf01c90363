//! MovieLens raw files: 100k (`u.data`, `u.item`) and 1m (`ratings.dat`, `movies.dat`).

use super::{dataset_name, latin1, parse_ts, Builder, Imported};
use crate::error::io;
use crate::{Error, Result};
use std::path::Path;

const GENRES: [&str; 19] = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

/// Imports a MovieLens directory. Every rating is a positive interaction (the peers' protocol); the rating is kept
/// as the event type (`rating:4`). Items listed in the catalog but never rated are kept in the catalog.
pub fn import_movielens(src: &Path) -> Result<Imported> {
    let mut b = Builder::default();
    if src.join("u.data").exists() {
        read_catalog(&mut b, &src.join("u.item"), '|', |f| {
            let genres: Vec<&str> =
                f.get(5..).unwrap_or(&[]).iter().zip(GENRES).filter(|(v, _)| **v == "1").map(|(_, g)| g).collect();
            let date = f.get(2).copied().unwrap_or("");
            (f.len() >= 24).then(|| {
                format!("Genres: {}. Released: {}.", genres.join(", "), if date.is_empty() { "unknown" } else { date })
            })
        })?;
        read_ratings(&mut b, &src.join("u.data"), "\t")?;
    } else if src.join("ratings.dat").exists() {
        read_catalog(&mut b, &src.join("movies.dat"), ':', |f| {
            (f.len() == 3).then(|| format!("Genres: {}.", f[2].replace('|', ", ")))
        })?;
        read_ratings(&mut b, &src.join("ratings.dat"), "::")?;
    } else {
        return Err(Error::BadFormat {
            path: src.to_path_buf(),
            reason: "no u.data (ml-100k) or ratings.dat (ml-1m) here; point at the unzipped MovieLens folder".into(),
        });
    }
    b.finish(&dataset_name(src), format!("movielens import of {}", src.display()), src)
}

fn read_catalog(b: &mut Builder, path: &Path, sep: char, text: impl Fn(&[&str]) -> Option<String>) -> Result<()> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    // MovieLens catalogs are ISO-8859-1, not UTF-8.
    let content = latin1(&bytes);
    for (i, line) in content.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = if sep == ':' { line.split("::").collect() } else { line.split(sep).collect() };
        let Some(t) = text(&fields) else {
            b.skip(path, i + 1, format!("expected the catalog's field count, found {} fields", fields.len()));
            continue;
        };
        let id = fields[0].trim();
        if let Some(reason) = super::bad_id(id) {
            b.skip(path, i + 1, format!("item {reason}"));
            continue;
        }
        let idx = b.item(id, "movies");
        let item = b.item_mut(idx);
        item.title = fields[1].to_string();
        item.text = Some(t);
    }
    Ok(())
}

fn read_ratings(b: &mut Builder, path: &Path, sep: &str) -> Result<()> {
    let content = super::read_text(path)?;
    for (i, line) in content.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(sep).collect();
        if f.len() != 4 {
            b.skip(path, i + 1, format!("expected 4 fields (user, item, rating, timestamp), found {}", f.len()));
            continue;
        }
        let ts = match parse_ts(f[3]) {
            Ok(t) => t,
            Err(reason) => {
                b.skip(path, i + 1, reason);
                continue;
            }
        };
        let item = match b.known_item(f[1].trim()) {
            Some(it) => it,
            None => {
                b.skip(path, i + 1, format!("item `{}` is not in the catalog", f[1].trim()));
                continue;
            }
        };
        if let Some(reason) = super::bad_id(f[0].trim()) {
            b.skip(path, i + 1, format!("user {reason}"));
            continue;
        }
        let user = b.user(f[0].trim());
        b.event(user, item, ts, Some(format!("rating:{}", f[2].trim())));
    }
    Ok(())
}
