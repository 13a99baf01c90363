//! Keeps the target directory bounded across test runs.
//!
//! Every change to a crate, a profile or a feature gives its compiled units new hashes; cargo never deletes the old
//! ones. A test build here is ~100 executables and rlibs per change, so a long-lived target directory (CI's cache,
//! a developer's checkout) grows by gigabytes per run until the disk is full. `cargo xtask test` first builds with
//! `--no-run --message-format=json`, which lists every artifact the current tree uses (fresh or rebuilt), and then
//! deletes the files in `<target>/debug/deps` whose unit hash is not among them.

use anyhow::{Context, Result};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What [`prune_deps`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub files: usize,
    pub bytes: u64,
}

/// Builds the test units with `cmd` (a `cargo test ... --no-run` command; `--message-format` is added here) and returns
/// the unit hashes of every artifact cargo reported, together with the target directory's `deps` folders they live in.
pub fn build_and_list(cmd: &mut Command) -> Result<(HashSet<String>, HashSet<PathBuf>)> {
    cmd.arg("--message-format=json-render-diagnostics").stdout(Stdio::piped());
    eprintln!("$ cargo test --workspace --no-run (building)");
    let output = cmd.spawn().context("starting cargo")?.wait_with_output().context("waiting for cargo")?;
    if !output.status.success() {
        anyhow::bail!("building the tests failed ({}); the errors are printed above", output.status);
    }
    let mut hashes = HashSet::new();
    let mut dirs = HashSet::new();
    for line in output.stdout.split(|&b| b == b'\n') {
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(line) else { continue };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let files = msg["filenames"].as_array().into_iter().flatten().chain(std::iter::once(&msg["executable"]));
        for file in files.filter_map(|f| f.as_str()) {
            let path = Path::new(file);
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if let Some(hash) = unit_hash(&name) {
                hashes.insert(hash.to_owned());
            }
            if let Some(parent) = path.parent().filter(|p| p.ends_with("deps")) {
                dirs.insert(parent.to_owned());
            }
        }
    }
    Ok((hashes, dirs))
}

/// The 16-hex-digit unit hash in a cargo artifact name (`libfoo-0123456789abcdef.rlib`, `foo-0123456789abcdef`,
/// `foo-0123456789abcdef.d`), if it has one.
pub fn unit_hash(name: &str) -> Option<&str> {
    let stem = name.split('.').next()?;
    let (_, hash) = stem.rsplit_once('-')?;
    (hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hash)
}

/// Deletes the files in `deps` that carry a unit hash not in `keep`. Files without a unit hash are left alone.
pub fn prune_deps(deps: &Path, keep: &HashSet<String>) -> Result<Pruned> {
    let mut pruned = Pruned::default();
    for entry in std::fs::read_dir(deps).with_context(|| format!("reading {}", deps.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(hash) = unit_hash(&name) else { continue };
        if keep.contains(hash) || !entry.file_type()?.is_file() {
            continue;
        }
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        std::fs::remove_file(entry.path()).with_context(|| format!("removing {}", entry.path().display()))?;
        pruned.files += 1;
        pruned.bytes += size;
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_hashes_are_read_from_every_artifact_kind() {
        assert_eq!(unit_hash("libm6rec_data-00c2772cfb8e1648.rlib"), Some("00c2772cfb8e1648"));
        assert_eq!(unit_hash("libm6rec_data-00c2772cfb8e1648.rmeta"), Some("00c2772cfb8e1648"));
        assert_eq!(unit_hash("cold_start-5c6850dda6e7d0e7"), Some("5c6850dda6e7d0e7"));
        assert_eq!(unit_hash("libserde_derive-0123456789abcdef.so"), Some("0123456789abcdef"));
        assert_eq!(unit_hash("m6rec"), None);
        assert_eq!(unit_hash("foo-bar"), None);
        assert_eq!(unit_hash("foo-0123456789abcdeg"), None);
    }

    #[test]
    fn only_files_of_unlisted_units_are_removed() -> Result<()> {
        let dir = tempfile::tempdir()?;
        for name in ["liba-00000000000000aa.rlib", "liba-00000000000000bb.rlib", "t-00000000000000bb", "README"] {
            std::fs::write(dir.path().join(name), b"12345")?;
        }
        let keep: HashSet<String> = ["00000000000000bb".to_owned()].into();
        let pruned = prune_deps(dir.path(), &keep)?;
        assert_eq!(pruned, Pruned { files: 1, bytes: 5 });
        let mut left: Vec<String> = std::fs::read_dir(dir.path())?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_>>()?;
        left.sort();
        assert_eq!(left, ["README", "liba-00000000000000bb.rlib", "t-00000000000000bb"]);
        Ok(())
    }
}
