//! Atomic writes: readers see the old file (or directory) or the new one, never a half-written one.
//!
//! Files are written to `<name>.tmp-<pid>`, synced, then renamed over the target.
//! Directories are filled under `<name>.tmp-<pid>/`, synced, and swapped in with two renames;
//! if the process dies between them, the old directory survives as `<name>.old-<pid>`.

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

/// Writes `path` atomically with `fill`, which gets a buffered writer.
///
/// The error type of `fill` is the caller's; I/O failures of the write itself come back as [`Error::Io`] through `E: From<Error>`.
pub fn write_file<E: From<Error>>(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
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

/// Writes a whole directory atomically: `fill` populates a fresh temporary directory, which then replaces `dir`.
pub fn write_dir<E: From<Error>>(
    dir: &Path,
    fill: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
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

    #[test]
    fn directories_are_replaced_whole() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("ckpt");
        write_dir(&d, |t| write_bytes(&t.join("x"), b"1")).unwrap();
        write_dir(&d, |t| write_bytes(&t.join("y"), b"2")).unwrap();
        assert!(!d.join("x").exists());
        assert_eq!(fs::read(d.join("y")).unwrap(), b"2");
        let failed: Result<()> = write_dir(&d, |t| {
            write_bytes(&t.join("z"), b"3")?;
            Err(Error::BadDevice("boom".into()))
        });
        assert!(failed.is_err());
        assert!(d.join("y").exists() && !d.join("z").exists());
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1, "temp dir left behind");
    }
}
