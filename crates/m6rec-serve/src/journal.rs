//! What the service was told, persisted: an append-only JSON-lines journal (`journal.jsonl`, fsynced before a request
//! is acknowledged) and content-addressed media files (`media/<sha256>.<ext>`, written atomically first). On start
//! the journal is replayed; a torn last line (a crash mid-write, never acknowledged) is cut off.
//!
//! One process at a time: the journal holds an exclusive lock on `LOCK` in the state directory for as long as it is
//! open (released by the OS when the process ends, however it ends), so a second server on the same state refuses to
//! start instead of interleaving its appends. The directory and its files are private to their owner (0700 / 0600):
//! they hold users' histories.

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
    /// Held locked while the journal is open.
    _lock: File,
}

/// The lock file inside the state directory.
pub const LOCK: &str = "LOCK";

/// Creates (or opens) `path` readable and writable by its owner only.
fn private_file(path: &Path, opts: &mut OpenOptions) -> std::io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// Takes the state directory's lock, or says who holds it.
fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK);
    let mut file = private_file(&path, OpenOptions::new().create(true).truncate(false).read(true).write(true))
        .map_err(|e| state_err(&path, e))?;
    match file.try_lock() {
        Ok(()) => {
            // Who holds it, for the next one that asks (informational; the lock is what counts).
            let _ = file.set_len(0);
            let _ = writeln!(file, "{}", std::process::id());
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            let who = if holder.is_empty() { String::new() } else { format!(" (process {holder})") };
            Err(state_err(
                dir,
                format!(
                    "another m6rec serve{who} is using this state directory; stop it first, or give this server its own --state"
                ),
            ))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(state_err(&path, format!("locking: {e}"))),
    }
}

/// Every acknowledged record of the journal file at `path`, oldest first, read without opening the journal (no
/// lock, nothing written: a running server may hold it). A torn last line, never acknowledged, is left out.
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read(path).map_err(|e| state_err(path, e))?;
    Ok(parse(&text, path)?.0)
}

/// The records of a journal's bytes and the length of its complete lines: everything after the last newline was
/// never acknowledged (the line and its fsync come before the answer).
fn parse(text: &[u8], path: &Path) -> Result<(Vec<Record>, usize)> {
    let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut records = Vec::new();
    for (n, line) in text[..complete].split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let rec: Record = serde_json::from_slice(line).map_err(|e| {
            state_err(path, format!("line {}: {e}; the journal is damaged (restore it from a backup)", n + 1))
        })?;
        records.push(rec);
    }
    Ok((records, complete))
}

/// File name of the journal inside the state directory.
pub const JOURNAL: &str = "journal.jsonl";

fn state_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::State { path: path.to_path_buf(), reason: reason.to_string() }
}

impl Journal {
    /// Opens (creating) the journal in `dir` and returns every record in it, oldest first.
    pub fn open(dir: &Path) -> Result<(Journal, Vec<Record>)> {
        let fresh = !dir.exists();
        std::fs::create_dir_all(dir.join("media")).map_err(|e| state_err(dir, e))?;
        #[cfg(unix)]
        if fresh {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| state_err(dir, e))?;
        }
        let lock = lock(dir)?;
        let path = dir.join(JOURNAL);
        let text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(state_err(&path, e)),
        };
        let (records, complete) = parse(&text, &path)?;
        let file =
            private_file(&path, OpenOptions::new().create(true).append(true)).map_err(|e| state_err(&path, e))?;
        if complete < text.len() {
            file.set_len(complete as u64).map_err(|e| state_err(&path, e))?;
            file.sync_all().map_err(|e| state_err(&path, e))?;
        }
        Ok((Journal { dir: dir.to_path_buf(), file, _lock: lock }, records))
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
        drop(j);
        let (_, recs) = Journal::open(dir.path())?;
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[2], events("u4", &["d"]));
        Ok(())
    }

    /// Issue 19.13: a second journal on the same state directory is refused while the first is open, and the
    /// journal is private to its owner.
    #[test]
    fn one_process_at_a_time_and_private_files() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(|e| Error::Config(e.to_string()))?;
        let dir = tmp.path().join("state");
        let (mut j, _) = Journal::open(&dir)?;
        j.append(&[events("u1", &["a"])])?;
        let err = Journal::open(&dir).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains("another m6rec serve") && err.contains(&format!("process {}", std::process::id())),
            "{err}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&dir.join(JOURNAL)), 0o600);
        }
        drop(j);
        let (_, recs) = Journal::open(&dir)?;
        assert_eq!(recs, vec![events("u1", &["a"])]);
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
