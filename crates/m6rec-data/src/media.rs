//! Item media (images, audio) inside a dataset directory: attaching files at import, resolving paths safely.
//!
//! An item's `image` / `audio` field holds a path relative to the dataset directory, for example
//! `media/images/42.jpg`. [`resolve`] is the only way to turn it into a file path: a path that is absolute, climbs
//! out with `..`, or leads outside through a symlink is rejected, so a dataset cannot make m6rec read `/etc/passwd`.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use crate::{Dataset, Error, Result};

/// Which modality a media file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Pictures: jpg, jpeg, png, webp, gif.
    Image,
    /// Sound: ogg, mp3, flac, wav.
    Audio,
}

impl MediaKind {
    /// File extensions recognised for this kind (lower case).
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            MediaKind::Image => &["jpg", "jpeg", "png", "webp", "gif"],
            MediaKind::Audio => &["ogg", "mp3", "flac", "wav"],
        }
    }

    /// The folder under the dataset directory that imported files go to.
    pub fn folder(self) -> &'static str {
        match self {
            MediaKind::Image => "media/images",
            MediaKind::Audio => "media/audio",
        }
    }
}

/// Why a media path cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaPathError {
    /// Absolute paths are not allowed (datasets must be relocatable and self-contained).
    #[error("{0:?} is absolute; media paths are relative to the dataset directory")]
    Absolute(String),
    /// `..` or another component that leaves the dataset directory.
    #[error("{0:?} leaves the dataset directory")]
    Escapes(String),
    /// The path exists but a symlink takes it outside the dataset directory.
    #[error("{0:?} resolves outside the dataset directory (symlink)")]
    SymlinkEscapes(String),
    /// Nothing at that path.
    #[error("{0:?} does not exist in the dataset directory")]
    Missing(String),
    /// Something that is not a regular file (a FIFO would block its reader forever; a device, a directory).
    #[error("{0:?} is not a regular file (a FIFO, device or directory)")]
    NotAFile(String),
}

/// Resolves an item's media path inside `dataset_dir`, refusing anything that escapes it.
pub fn resolve(dataset_dir: &Path, rel: &str) -> std::result::Result<PathBuf, MediaPathError> {
    let p = Path::new(rel);
    if p.is_absolute() || rel.starts_with('/') || rel.starts_with('\\') {
        return Err(MediaPathError::Absolute(rel.to_string()));
    }
    if rel.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(MediaPathError::Escapes(rel.to_string()));
    }
    let full = dataset_dir.join(p);
    let canon = full.canonicalize().map_err(|_| MediaPathError::Missing(rel.to_string()))?;
    let root = dataset_dir.canonicalize().map_err(|_| MediaPathError::Missing(rel.to_string()))?;
    if !canon.starts_with(&root) {
        return Err(MediaPathError::SymlinkEscapes(rel.to_string()));
    }
    if !std::fs::metadata(&canon).is_ok_and(|m| m.is_file()) {
        return Err(MediaPathError::NotAFile(rel.to_string()));
    }
    Ok(canon)
}

/// A media file to copy into the dataset directory when it is saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaCopy {
    /// Source file.
    pub from: PathBuf,
    /// Destination, relative to the dataset directory (also written into the item's field).
    pub to: String,
}

/// Attaches media named after item ids (`<item id>.<ext>`, for example `posters/42.jpg`) from `src_dir` to the
/// dataset's items, returning the copies that [`Dataset::save_with_media`] makes and the number of items without a
/// file. Files that match no item are ignored.
pub fn attach(dataset: &mut Dataset, kind: MediaKind, src_dir: &Path) -> Result<(Vec<MediaCopy>, usize)> {
    let entries = std::fs::read_dir(src_dir).map_err(|source| Error::Io { path: src_dir.to_path_buf(), source })?;
    let mut by_stem: HashMap<String, PathBuf> = HashMap::new();
    for entry in entries {
        let path = entry.map_err(|source| Error::Io { path: src_dir.to_path_buf(), source })?.path();
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        if !ext.is_some_and(|e| kind.extensions().contains(&e.as_str())) || !path.is_file() {
            continue;
        }
        if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
            // Deterministic choice when one id has several files: the lexicographically first name.
            let keep = by_stem.get(stem).is_none_or(|old| path < *old);
            if keep {
                by_stem.insert(stem.to_string(), path);
            }
        }
    }
    let mut copies = Vec::new();
    let mut without = 0;
    for item in &mut dataset.items {
        let Some(from) = by_stem.get(&item.id) else {
            without += 1;
            continue;
        };
        let ext = from.extension().and_then(|e| e.to_str()).unwrap_or("bin").to_ascii_lowercase();
        // Named after the id, not the file: two ids never share a copy (`a#b` and `a_b` once did).
        let to = format!("{}/{}.{ext}", kind.folder(), portable_stem(&item.id));
        match kind {
            MediaKind::Image => item.image = Some(to.clone()),
            MediaKind::Audio => item.audio = Some(to.clone()),
        }
        copies.push(MediaCopy { from: from.clone(), to });
    }
    Ok((copies, without))
}

/// The copy of the file at `rel` (under `root`, refused when it escapes it) that becomes `id`'s media of `kind`:
/// `media/<kind>/<id>.<ext>`, the id made portable (and made distinct by a hash when characters were replaced).
pub(crate) fn copy_for(
    root: &Path,
    rel: &str,
    id: &str,
    kind: MediaKind,
) -> std::result::Result<MediaCopy, MediaPathError> {
    let from = resolve(root, rel)?;
    let ext = from.extension().and_then(|e| e.to_str()).unwrap_or("bin").to_ascii_lowercase();
    Ok(MediaCopy { from, to: format!("{}/{}.{ext}", kind.folder(), portable_stem(id)) })
}

/// An id as a portable file stem: itself when it is only ASCII letters, digits, `-` and `_`; otherwise those kept,
/// the rest `_`, and a hash of the whole id appended, so that distinct ids never share a name.
fn portable_stem(id: &str) -> String {
    let plain: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() || "-_".contains(c) { c } else { '_' }).collect();
    if plain == id && !id.is_empty() {
        return plain;
    }
    // FNV-1a: the same name on every build.
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{plain}-{h:016x}")
}

impl MediaKind {
    /// Sets `item`'s path of this kind.
    pub(crate) fn set(self, item: &mut crate::Item, path: String) {
        match self {
            MediaKind::Image => item.image = Some(path),
            MediaKind::Audio => item.audio = Some(path),
        }
    }
}

impl Dataset {
    /// [`Dataset::save`], also copying media files into the new directory (hard links where the filesystem allows).
    pub fn save_with_media(&self, dir: &Path, copies: &[MediaCopy]) -> Result<()> {
        self.save_then(dir, |tmp| {
            for c in copies {
                let dest = tmp.join(&c.to);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|source| Error::Io { path: parent.to_path_buf(), source })?;
                }
                // Never into an existing file: a copy onto a hard link would write into the user's own file.
                match std::fs::hard_link(&c.from, &dest) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        return Err(Error::Io {
                            path: dest.clone(),
                            source: std::io::Error::new(
                                e.kind(),
                                format!(
                                    "two media files would both be copied to {} (the second: {})",
                                    c.to,
                                    c.from.display()
                                ),
                            ),
                        })
                    }
                    Err(_) => {
                        // Another filesystem: a fresh file, created here and nowhere else.
                        let mut out = std::fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .open(&dest)
                            .map_err(|source| Error::Io { path: dest.clone(), source })?;
                        let mut src = std::fs::File::open(&c.from)
                            .map_err(|source| Error::Io { path: c.from.clone(), source })?;
                        std::io::copy(&mut src, &mut out).map_err(|source| Error::Io { path: dest.clone(), source })?;
                    }
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Issue 19.3: ids that once sanitised to one name (`a#b`, `a_b`) get copies of their own, and saving never
    /// writes into the user's files.
    #[test]
    fn ids_that_look_alike_get_their_own_copies_and_sources_are_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let posters = tmp.path().join("posters");
        std::fs::create_dir(&posters).unwrap();
        std::fs::write(posters.join("a#b.png"), b"first").unwrap();
        std::fs::write(posters.join("a_b.png"), b"second").unwrap();
        let item = |id: &str| crate::Item { id: id.into(), domain: "d".into(), title: id.into(), ..Default::default() };
        let mut ds = Dataset {
            name: "t".into(),
            source: String::new(),
            users: vec!["u".into()],
            items: vec![item("a#b"), item("a_b")],
            interactions: crate::Interactions {
                user: vec![0, 0],
                item: vec![0, 1],
                timestamp: vec![1, 2],
                event: vec![None, None],
            },
        };
        let (copies, without) = attach(&mut ds, MediaKind::Image, &posters).unwrap();
        assert_eq!((copies.len(), without), (2, 0));
        assert_ne!(copies[0].to, copies[1].to);
        let out = tmp.path().join("ds");
        ds.save_with_media(&out, &copies).unwrap();
        let back = Dataset::load(&out).unwrap();
        let read = |i: usize| std::fs::read(out.join(back.items[i].image.as_deref().unwrap())).unwrap();
        assert_eq!((read(0), read(1)), (b"first".to_vec(), b"second".to_vec()));
        assert_eq!(std::fs::read(posters.join("a#b.png")).unwrap(), b"first");
        assert_eq!(std::fs::read(posters.join("a_b.png")).unwrap(), b"second");
        // Two copies onto one name are refused, not written through.
        let clash = vec![copies[0].clone(), MediaCopy { from: copies[1].from.clone(), to: copies[0].to.clone() }];
        let err = ds.save_with_media(&tmp.path().join("clash"), &clash).unwrap_err().to_string();
        assert!(err.contains("two media files would both be copied"), "{err}");
        assert_eq!(std::fs::read(posters.join("a#b.png")).unwrap(), b"first");
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_or_a_folder_is_not_a_media_file() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("dir.png")).unwrap();
        assert!(std::process::Command::new("mkfifo").arg(tmp.path().join("pipe.png")).status().unwrap().success());
        for name in ["dir.png", "pipe.png"] {
            assert_eq!(resolve(tmp.path(), name), Err(MediaPathError::NotAFile(name.into())));
        }
    }

    #[test]
    fn resolves_inside_and_refuses_outside() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("media")).unwrap();
        std::fs::write(tmp.path().join("media/a.jpg"), b"x").unwrap();
        assert!(resolve(tmp.path(), "media/a.jpg").unwrap().ends_with("media/a.jpg"));
        assert!(resolve(tmp.path(), "./media/a.jpg").is_ok());
        assert!(matches!(resolve(tmp.path(), "/etc/passwd"), Err(MediaPathError::Absolute(_))));
        assert!(matches!(resolve(tmp.path(), "media/../../x"), Err(MediaPathError::Escapes(_))));
        assert!(matches!(resolve(tmp.path(), ""), Err(MediaPathError::Escapes(_))));
        assert!(matches!(resolve(tmp.path(), "media/b.jpg"), Err(MediaPathError::Missing(_))));
    }

    proptest! {
        /// Any path with a `..` component is refused, whatever surrounds it and whether or not it exists.
        #[test]
        fn parent_components_are_always_refused(pre in "[a-z]{0,5}", post in "[a-z./]{0,8}") {
            let tmp = tempfile::tempdir().unwrap();
            let rel = if pre.is_empty() { format!("../{post}") } else { format!("{pre}/../../{post}") };
            prop_assert!(resolve(tmp.path(), &rel).is_err());
        }
    }
}
