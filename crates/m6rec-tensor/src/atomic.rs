//! Atomic writes: readers see the old file (or directory) or the new one, never a half-written one.
//!
//! Files are written to `.<name>.tmp-<pid>`, synced, then renamed over the target.
//! Directories are filled under `.<name>.tmp-<pid>/`, synced, and swapped in: on Linux with one atomic exchange
//! (`renameat2(RENAME_EXCHANGE)`), so there is no moment without `<name>`; elsewhere, or on a filesystem without it,
//! with two renames, where a crash between them leaves `<name>` missing and the old copy as `.<name>.old-<pid>`.
//!
//! **Crash leftovers are recovered, not left behind.** Every write first removes the temporary and old siblings of
//! its target that a process no longer alive left ([`recover`]); a target that is missing while a complete
//! temporary (its marker written) or an old copy survives is put back, newest complete first. Loaders call
//! [`recover`] before they read, so a crash between the two renames never reads as "not found".
//!
//! A directory is only ever replaced by one of its own [`DirKind`]: each written directory holds a marker file
//! (`.m6rec-<kind>`), and an existing `--out` without it (a user's folder, a dataset where a checkpoint goes, a
//! file) is refused with [`Error::NotOurs`] and left untouched.

use crate::{Error, Result};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

fn sibling(path: &Path, tag: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{tag}-{}", std::process::id()))
}

/// Whether process `pid` still runs (Linux: `/proc/<pid>`; elsewhere unknown, taken as running).
fn alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// The `.<name>.tmp-<pid>` and `.<name>.old-<pid>` siblings of `path` whose writer no longer runs:
/// `(temporaries, olds)`, each newest first.
fn stale_siblings(path: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    type Found = Vec<(Option<std::time::SystemTime>, PathBuf)>;
    let (mut tmps, mut olds): (Found, Found) = (Vec::new(), Vec::new());
    let newest_first = |mut v: Found| -> Vec<PathBuf> {
        v.sort_by_key(|e| std::cmp::Reverse(e.0));
        v.into_iter().map(|(_, p)| p).collect()
    };
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return (Vec::new(), Vec::new());
    };
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Ok(entries) = fs::read_dir(parent) else { return (Vec::new(), Vec::new()) };
    let (tmp_prefix, old_prefix) = (format!(".{name}.tmp-"), format!(".{name}.old-"));
    for e in entries.filter_map(|e| e.ok()) {
        let file = e.file_name().to_string_lossy().into_owned();
        let (list, pid) = if let Some(pid) = file.strip_prefix(&tmp_prefix) {
            (&mut tmps, pid)
        } else if let Some(pid) = file.strip_prefix(&old_prefix) {
            (&mut olds, pid)
        } else {
            continue;
        };
        if pid.parse::<u32>().is_ok_and(|pid| pid != std::process::id() && !alive(pid)) {
            let when = e.metadata().and_then(|m| m.modified()).ok();
            list.push((when, e.path()));
        }
    }
    (newest_first(tmps), newest_first(olds))
}

fn remove_any(p: &Path) {
    let _ = if p.is_dir() { fs::remove_dir_all(p) } else { fs::remove_file(p) };
}

/// Recovers `path` after a crash of the process that was writing it (see the module docs): when `path` is missing,
/// the newest complete temporary directory (one holding `kind`'s marker) or else the newest old copy becomes
/// `path`; every other leftover of a dead writer is removed. Returns whether `path` was put back. Best effort on
/// read-only places: what cannot be moved or removed stays as it was.
pub fn recover(path: &Path, kind: Option<DirKind>) -> bool {
    let (tmps, olds) = stale_siblings(path);
    let mut restored = false;
    if fs::symlink_metadata(path).is_err() {
        let complete = |p: &&PathBuf| kind.is_some_and(|k| p.join(k.marker()).is_file());
        let pick = tmps.iter().find(complete).or_else(|| olds.first());
        if let Some(from) = pick {
            restored = fs::rename(from, path).is_ok();
            if restored {
                sync_parent(path);
            }
        }
    }
    for p in tmps.iter().chain(&olds) {
        if p.exists() {
            remove_any(p);
        }
    }
    restored
}

/// Writes `path` atomically with `fill`, which gets a buffered writer.
///
/// The error type of `fill` is the caller's; I/O failures of the write itself come back as [`Error::Io`] through `E: From<Error>`.
pub fn write_file<E: From<Error>>(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    recover(path, None);
    let tmp = sibling(path, "tmp");
    let result = (|| -> std::result::Result<(), E> {
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let mut w = BufWriter::new(file);
        fill(&mut w)?;
        let file = w.into_inner().map_err(|e| io(&tmp)(e.into_error()))?;
        file.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, path).map_err(io(path))?;
        sync_parent(path);
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// What a directory from [`write_dir`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirKind {
    /// Short name (`dataset`, `checkpoint`); the marker file is `.m6rec-<name>`.
    pub name: &'static str,
    /// A file that identifies such a directory written before markers existed.
    pub legacy: &'static str,
}

impl DirKind {
    /// The marker file's name.
    pub fn marker(&self) -> String {
        format!(".m6rec-{}", self.name)
    }

    /// Whether `dir` may be replaced by a directory of this kind: it does not exist, is empty, or is one of this
    /// kind (its marker, or the legacy file and no other kind's marker).
    pub fn check_replaceable(&self, dir: &Path) -> Result<()> {
        let refuse = |reason: String| Err(Error::NotOurs { path: dir.to_path_buf(), reason });
        let meta = match fs::symlink_metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::Io { path: dir.to_path_buf(), source: e }),
            Ok(m) => m,
        };
        if !meta.is_dir() {
            return refuse(format!("it is not a directory; choose another path for the {}", self.name));
        }
        let names: Vec<String> = fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let other_marker = names.iter().find(|n| n.starts_with(".m6rec-") && **n != self.marker());
        if names.is_empty() || names.contains(&self.marker()) {
            return Ok(());
        }
        if other_marker.is_none() && names.iter().any(|n| n == self.legacy) {
            return Ok(());
        }
        let what = match other_marker {
            Some(m) => format!("it holds a {} written by m6rec", m.trim_start_matches(".m6rec-")),
            None => format!("it is not a {} written by m6rec (no {})", self.name, self.marker()),
        };
        refuse(format!("{what}; choose another path, or remove it first if you mean to replace it"))
    }
}

/// Writes a whole directory atomically: `fill` populates a fresh temporary directory, which then replaces `dir`.
///
/// `dir` must not exist, be empty, or be a directory of the same `kind` ([`DirKind::check_replaceable`]); the new
/// one gets the kind's marker.
pub fn write_dir<E: From<Error>>(
    dir: &Path,
    kind: DirKind,
    fill: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    recover(dir, Some(kind));
    kind.check_replaceable(dir)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let tmp = sibling(dir, "tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let result = (|| -> std::result::Result<(), E> {
        fill(&tmp)?;
        fs::write(tmp.join(kind.marker()), b"written by m6rec; replaced only by the same kind\n").map_err(io(&tmp))?;
        for entry in fs::read_dir(&tmp).map_err(io(&tmp))? {
            let p = entry.map_err(io(&tmp))?.path();
            if p.is_file() {
                File::open(&p).and_then(|f| f.sync_all()).map_err(io(&p))?;
            }
        }
        Ok(swap_in(&tmp, dir)?)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

fn swap_in(tmp: &Path, dir: &Path) -> Result<()> {
    #[cfg(target_os = "linux")]
    if dir.exists() {
        // One atomic step: `dir` is the new directory and `tmp` the old one, with no moment in between.
        let flags = rustix::fs::RenameFlags::EXCHANGE;
        if rustix::fs::renameat_with(rustix::fs::CWD, tmp, rustix::fs::CWD, dir, flags).is_ok() {
            sync_parent(dir);
            fs::remove_dir_all(tmp).map_err(io(tmp))?;
            return Ok(());
        }
        // No RENAME_EXCHANGE on this filesystem: the two renames below, which `recover` repairs.
    }
    if dir.exists() {
        let old = sibling(dir, "old");
        fs::rename(dir, &old).map_err(io(dir))?;
        fs::rename(tmp, dir).map_err(io(dir))?;
        fs::remove_dir_all(&old).map_err(io(&old))?;
    } else {
        fs::rename(tmp, dir).map_err(io(dir))?;
    }
    sync_parent(dir);
    Ok(())
}

fn sync_parent(path: &Path) {
    // Best effort: makes the rename itself durable on filesystems that need it.
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(f) = File::open(parent) {
            let _ = f.sync_all();
        }
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file(path, |w| w.write_all(bytes).map_err(io(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CK: DirKind = DirKind { name: "checkpoint", legacy: "state.json" };
    const DS: DirKind = DirKind { name: "dataset", legacy: "dataset.json" };

    /// Regression (issue 19, 2 and 10): `--out` naming a user's folder deleted its files; a file as `--out` was
    /// renamed away. Both are refused now and left as they were.
    #[test]
    fn only_a_directory_of_the_same_kind_is_replaced() {
        let root = tempfile::tempdir().unwrap();
        let user = root.path().join("notes");
        fs::create_dir(&user).unwrap();
        fs::write(user.join("u.data"), b"mine").unwrap();
        let err = write_dir(&user, DS, |t| write_bytes(&t.join("x"), b"1")).unwrap_err().to_string();
        assert!(err.contains("not a dataset written by m6rec") && err.contains("notes"), "{err}");
        assert_eq!(fs::read(user.join("u.data")).unwrap(), b"mine");
        let file = root.path().join("file.txt");
        fs::write(&file, b"keep").unwrap();
        let err = write_dir(&file, DS, |t| write_bytes(&t.join("x"), b"1")).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
        assert_eq!(fs::read(&file).unwrap(), b"keep");
        // A dataset is not replaced by a checkpoint, and the reverse.
        let ds = root.path().join("ds");
        write_dir(&ds, DS, |t| write_bytes(&t.join("dataset.json"), b"{}")).unwrap();
        let err = write_dir(&ds, CK, |t| write_bytes(&t.join("x"), b"1")).unwrap_err().to_string();
        assert!(err.contains("holds a dataset"), "{err}");
        assert!(ds.join("dataset.json").exists());
        // Same kind, an empty directory, and a directory written before markers existed are replaced.
        write_dir(&ds, DS, |t| write_bytes(&t.join("dataset.json"), b"{\"v\": 2}")).unwrap();
        let empty = root.path().join("empty");
        fs::create_dir(&empty).unwrap();
        write_dir(&empty, CK, |t| write_bytes(&t.join("state.json"), b"{}")).unwrap();
        let legacy = root.path().join("legacy");
        fs::create_dir(&legacy).unwrap();
        fs::write(legacy.join("state.json"), b"{}").unwrap();
        write_dir(&legacy, CK, |t| write_bytes(&t.join("state.json"), b"{\"new\": 1}")).unwrap();
        assert_eq!(fs::read(legacy.join("state.json")).unwrap(), b"{\"new\": 1}");
        assert!(legacy.join(CK.marker()).exists());
    }

    #[test]
    fn failed_fill_keeps_the_old_contents_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        write_bytes(&p, b"old").unwrap();
        let res: Result<()> = write_file(&p, |w| {
            w.write_all(b"partial").map_err(io(&p))?;
            Err(Error::BadDevice("boom".into()))
        });
        assert!(res.is_err());
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "temp file left behind");
    }

    /// Issue 19.11: what a writer killed at each point of a save leaves is recovered by the next write or load:
    /// stale temporaries and old copies are removed, and a target missing between the two renames comes back.
    #[test]
    fn crash_leftovers_are_cleaned_and_a_missing_target_is_put_back() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("ckpt");
        write_dir(&d, CK, |t| write_bytes(&t.join("v"), b"1")).unwrap();
        // A pid that is not running (pid_max on Linux is at most 2^22).
        let dead = 4_194_999u32;
        let leftover = |tag: &str, v: &[u8], marker: bool| {
            let p = root.path().join(format!(".ckpt.{tag}-{dead}"));
            fs::create_dir_all(&p).unwrap();
            fs::write(p.join("v"), v).unwrap();
            if marker {
                fs::write(p.join(CK.marker()), b"").unwrap();
            }
            p
        };
        // Killed while filling: a half-written temporary beside the intact target.
        let half = leftover("tmp", b"half", false);
        let file_tmp = root.path().join(format!(".notes.txt.tmp-{dead}"));
        fs::write(&file_tmp, b"x").unwrap();
        assert!(!recover(&d, Some(CK)));
        assert!(!half.exists() && fs::read(d.join("v")).unwrap() == b"1");
        write_bytes(&root.path().join("notes.txt"), b"n").unwrap();
        assert!(!file_tmp.exists());
        // Killed between the two renames: no target, the old copy and a complete temporary.
        fs::rename(&d, root.path().join(format!(".ckpt.old-{dead}"))).unwrap();
        leftover("tmp", b"2", true);
        assert!(recover(&d, Some(CK)));
        assert_eq!(fs::read(d.join("v")).unwrap(), b"2", "the complete new copy wins");
        // Only an old copy: it comes back.
        fs::rename(&d, root.path().join(format!(".ckpt.old-{dead}"))).unwrap();
        assert!(recover(&d, Some(CK)));
        assert_eq!(fs::read(d.join("v")).unwrap(), b"2");
        let names: Vec<String> =
            fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        let mut names = names;
        names.sort();
        assert_eq!(names, vec!["ckpt", "notes.txt"]);
        // A live writer's temporary (this process's) is never touched.
        let mine = root.path().join(format!(".ckpt.tmp-{}", std::process::id()));
        fs::create_dir(&mine).unwrap();
        recover(&d, Some(CK));
        assert!(mine.exists());
    }

    #[test]
    fn directories_are_replaced_whole() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("ckpt");
        write_dir(&d, CK, |t| write_bytes(&t.join("x"), b"1")).unwrap();
        write_dir(&d, CK, |t| write_bytes(&t.join("y"), b"2")).unwrap();
        assert!(!d.join("x").exists());
        assert_eq!(fs::read(d.join("y")).unwrap(), b"2");
        let failed: Result<()> = write_dir(&d, CK, |t| {
            write_bytes(&t.join("z"), b"3")?;
            Err(Error::BadDevice("boom".into()))
        });
        assert!(failed.is_err());
        assert!(d.join("y").exists() && !d.join("z").exists());
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1, "temp dir left behind");
    }
}
