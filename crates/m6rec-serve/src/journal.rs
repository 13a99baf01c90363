//! What the service was told, persisted: an append-only JSON-lines journal (`journal.jsonl`, fsynced before a request
//! is acknowledged) and content-addressed media files (`media/<sha256>.<ext>`, written atomically first). On start
//! the journal is replayed; a torn last line (a crash mid-write, never acknowledged) is cut off.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One acknowledged change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Record {
    /// Interactions appended to a user's history, oldest first.
    Events {
        /// The user.
        user_id: String,
        /// Item ids.
        items: Vec<String>,
    },
    /// Items added or updated.
    Items {
        /// Their content.
        items: Vec<StoredItem>,
    },
}

/// An item as persisted: media are file names under the journal's `media/` folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredItem {
    /// Item id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Domain.
    pub domain: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Image file name in `media/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Audio file name in `media/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<String>,
}

/// The journal of one state directory.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    file: File,
}

/// File name of the journal inside the state directory.
pub const JOURNAL: &str = "journal.jsonl";

fn state_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::State { path: path.to_path_buf(), reason: reason.to_string() }
}

impl Journal {
    /// Opens (creating) the journal in `dir` and returns every record in it, oldest first.
    pub fn open(dir: &Path) -> Result<(Journal, Vec<Record>)> {
        std::fs::create_dir_all(dir.join("media")).map_err(|e| state_err(dir, e))?;
        let path = dir.join(JOURNAL);
        let text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(state_err(&path, e)),
        };
        // Everything after the last newline was never acknowledged (the line and its fsync come before the answer).
        let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut records = Vec::new();
        for (n, line) in text[..complete].split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let rec: Record = serde_json::from_slice(line).map_err(|e| {
                state_err(&path, format!("line {}: {e}; the journal is damaged (restore it from a backup)", n + 1))
            })?;
            records.push(rec);
        }
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| state_err(&path, e))?;
        if complete < text.len() {
            file.set_len(complete as u64).map_err(|e| state_err(&path, e))?;
            file.sync_all().map_err(|e| state_err(&path, e))?;
        }
        Ok((Journal { dir: dir.to_path_buf(), file }, records))
    }

    /// Appends `records` and waits until they are on disk.
    pub fn append(&mut self, records: &[Record]) -> Result<()> {
        let path = self.dir.join(JOURNAL);
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r).map_err(|e| state_err(&path, e))?;
            buf.push(b'\n');
        }
        self.file.write_all(&buf).map_err(|e| state_err(&path, e))?;
        self.file.sync_data().map_err(|e| state_err(&path, e))
    }

    /// Stores media bytes under `media/` (atomically, by content hash) and returns the file name.
    pub fn save_media(&self, bytes: &[u8], ext: &str) -> Result<String> {
        let hash: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
        let name = format!("{hash}.{ext}");
        let path = self.media(&name);
        if !path.exists() {
            m6rec_tensor::atomic::write_bytes(&path, bytes).map_err(|e| state_err(&path, e))?;
        }
        Ok(name)
    }

    /// Path of a stored media file.
    pub fn media(&self, name: &str) -> PathBuf {
        self.dir.join("media").join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(u: &str, items: &[&str]) -> Record {
        Record::Events { user_id: u.into(), items: items.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn records_survive_a_reopen_and_a_torn_tail_is_cut() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Config(e.to_string()))?;
        {
            let (mut j, old) = Journal::open(dir.path())?;
            assert!(old.is_empty());
            j.append(&[events("u1", &["a", "b"])])?;
            j.append(&[events("u2", &["c"])])?;
        }
        // A crash in the middle of a write leaves half a line.
        let path = dir.path().join(JOURNAL);
        let mut f = OpenOptions::new().append(true).open(&path).map_err(|e| state_err(&path, e))?;
        f.write_all(b"{\"op\":\"events\",\"user_id\":\"u3\",\"it").map_err(|e| state_err(&path, e))?;
        drop(f);
        let (mut j, recs) = Journal::open(dir.path())?;
        assert_eq!(recs, vec![events("u1", &["a", "b"]), events("u2", &["c"])]);
        j.append(&[events("u4", &["d"])])?;
        let (_, recs) = Journal::open(dir.path())?;
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[2], events("u4", &["d"]));
        Ok(())
    }

    #[test]
    fn a_damaged_middle_line_is_an_error_naming_it() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Config(e.to_string()))?;
        std::fs::write(dir.path().join(JOURNAL), "{\"op\":\"events\",\"user_id\":\"u\",\"items\":[]}\nnot json\n{}\n")
            .map_err(|e| Error::Config(e.to_string()))?;
        let err = Journal::open(dir.path()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("line 2"), "{err}");
        Ok(())
    }

    #[test]
    fn media_are_stored_once_by_content() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Config(e.to_string()))?;
        let (j, _) = Journal::open(dir.path())?;
        let a = j.save_media(b"abc", "png")?;
        let b = j.save_media(b"abc", "png")?;
        assert_eq!(a, b);
        assert_eq!(std::fs::read(j.media(&a)).map_err(|e| Error::Config(e.to_string()))?, b"abc");
        Ok(())
    }
}
