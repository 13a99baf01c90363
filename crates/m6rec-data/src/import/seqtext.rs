//! The one-line-per-user sequence format of the SASRec / S3-Rec papers: `user item1 item2 ...`, oldest first.
//! There are no timestamps: an event's position in its line is its time. A user on several lines continues on each
//! (the file's order is time): `u1 a b` then `u1 c d` is the sequence a b c d.

use super::{dataset_name, read_text, Builder, Imported};
use crate::Result;
use std::path::Path;

/// Imports a sequence text file (space- or tab-separated).
pub fn import_seqtext(src: &Path) -> Result<Imported> {
    let content = read_text(src)?;
    let name = src.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| dataset_name(src));
    let mut b = Builder::default();
    // Next position per user, so a user's later line continues their sequence instead of interleaving with it.
    let mut next: std::collections::HashMap<u32, i64> = std::collections::HashMap::new();
    for (i, line) in content.lines().enumerate() {
        let mut fields = line.split_whitespace();
        let Some(user) = fields.next() else { continue };
        let items: Vec<&str> = fields.collect();
        if items.is_empty() {
            b.skip(src, i + 1, format!("user `{user}` has no items"));
            continue;
        }
        let u = b.user(user);
        let start = next.entry(u).or_insert(0);
        for it in &items {
            let idx = b.item(it, &name);
            b.event(u, idx, *start, None);
            *start += 1;
        }
    }
    b.finish(&name, format!("seqtext import of {}", src.display()), src)
}
