//! Writes a dataset's users' sequences, ordered as m6rec's leave-one-out split orders them (by time, equal
//! timestamps in file order), for the peer of `cargo xtask bench peers` (`scripts/bench/sasrec.py`) to train and
//! evaluate on exactly the split m6rec uses.
//!
//! Output: a text file, first line the number of items, then one line per user: 0-based item indices, oldest first,
//! separated by spaces (an empty line for a user without events).
//!
//! Usage: bench-peers-split --data DIR --out FILE

use anyhow::{Context, Result};
use std::io::Write;
use std::path::PathBuf;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
            .with_context(|| format!("usage: bench-peers-split --data DIR --out FILE (missing {name})"))
    };
    let (data, out) = (get("--data")?, get("--out")?);
    let ds = m6rec_data::Dataset::load(&data).with_context(|| format!("loading {}", data.display()))?;
    let split = m6rec_data::Split::leave_one_out(&ds.interactions, ds.n_users());
    let mut text = format!("{}\n", ds.n_items());
    for u in 0..split.n_users() {
        let line: Vec<String> = split.sequence(u).iter().map(u32::to_string).collect();
        text.push_str(&line.join(" "));
        text.push('\n');
    }
    let mut f = std::fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?;
    f.write_all(text.as_bytes()).with_context(|| format!("writing {}", out.display()))?;
    println!("{} users, {} items -> {}", split.n_users(), ds.n_items(), out.display());
    Ok(())
}
