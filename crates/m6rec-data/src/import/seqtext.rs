//! The one-line-per-user sequence format of the SASRec / S3-Rec papers: `user item1 item2 ...`, oldest first.
//! There are no timestamps: an event's position in its line is its time.

use super::{dataset_name, read_text, Builder, Imported};
use crate::Result;
use std::path::Path;

/// Imports a sequence text file (space- or tab-separated).
pub fn import_seqtext(src: &Path) -> Result<Imported> {
    let content = read_text(src)?;
    let name = src.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| dataset_name(src));
    let mut b = Builder::default();
    for (i, line) in content.lines().enumerate() {
        let mut fields = line.split_whitespace();
        let Some(user) = fields.next() else { continue };
        let items: Vec<&str> = fields.collect();
        if items.is_empty() {
            b.skip(src, i + 1, format!("user `{user}` has no items"));
            continue;
        }
        let u = b.user(user);
        for (pos, it) in items.iter().enumerate() {
            let idx = b.item(it, &name);
            b.event(u, idx, pos as i64, None);
        }
    }
    b.finish(&name, format!("seqtext import of {}", src.display()), src)
}
