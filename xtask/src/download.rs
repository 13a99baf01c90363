//! Downloads of official dataset archives, verified by checksum before anything is unpacked.
//!
//! The archive streams to `<out>/.<name>.zip.part` while its MD5 is computed (GroupLens publishes MD5 sums); on a
//! mismatch the part file is deleted and nothing is unpacked. Unpacking goes to a temporary folder that is renamed
//! into place only after every listed file's SHA-256 matches, so `<out>/<name>` is either complete or absent.

use anyhow::{bail, Context, Result};
use md5::{Digest, Md5};
use sha2::Sha256;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const GROUPLENS: &str = "https://files.grouplens.org/datasets/movielens/";

/// A downloadable archive.
#[derive(Debug, Clone)]
pub struct Archive {
    /// Folder name inside the zip and under `out`.
    pub name: String,
    /// File name under the base URL.
    pub file: String,
    /// MD5 of the archive, lowercase hex.
    pub md5: String,
    /// `(path inside the folder, SHA-256)` of files checked after unpacking.
    pub files: Vec<(String, String)>,
}

impl Archive {
    /// The archives we know.
    pub fn named(name: &str) -> Result<Archive> {
        let s = |x: &str| x.to_string();
        match name {
            // MD5 as published by GroupLens next to the archive; SHA-256 of the unpacked files as in shared/data/ml-100k/SOURCE.md.
            "ml-100k" => Ok(Archive {
                name: s("ml-100k"),
                file: s("ml-100k.zip"),
                md5: s("0e33842e24a9c977be4e0107933c0723"),
                files: vec![
                    (s("u.data"), s("06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490")),
                    (s("u.item"), s("553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701")),
                ],
            }),
            "ml-1m" => Ok(Archive {
                name: s("ml-1m"),
                file: s("ml-1m.zip"),
                md5: s("c4d9eecfca2ab87c1945afe126590906"),
                files: vec![],
            }),
            other => bail!("unknown dataset `{other}`: expected ml-100k or ml-1m"),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads, verifies and unpacks `archive` into `out/<name>`; returns that folder. Does nothing if it is already
/// there and verifies.
pub fn download(archive: &Archive, mirror: Option<&str>, out: &Path) -> Result<PathBuf> {
    let dest = out.join(&archive.name);
    if dest.is_dir() && verify_files(archive, &dest).is_ok() {
        eprintln!("{} already present and verified", dest.display());
        return Ok(dest);
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let base = mirror.unwrap_or(GROUPLENS);
    let url = format!("{}/{}", base.trim_end_matches('/'), archive.file);
    let part = out.join(format!(".{}.part", archive.file));
    let result = fetch(&url, &part).and_then(|md5| {
        if md5 != archive.md5 {
            bail!("{url}: checksum mismatch (MD5 {md5}, expected {}); the download was corrupted or the file changed upstream", archive.md5)
        }
        unpack(archive, &part, out)
    });
    let _ = std::fs::remove_file(&part);
    result.map(|()| dest)
}

/// Downloads `url` to `dest` (through `dest.part`, renamed only when its MD5 is `md5`).
pub fn fetch_verified(url: &str, dest: &Path, md5: &str) -> Result<()> {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    let part = dest.with_file_name(name);
    let got = fetch(url, &part);
    let result = got.and_then(|sum| {
        if sum != md5 {
            bail!("{url}: checksum mismatch (MD5 {sum}, expected {md5}); the download was corrupted or the file changed upstream")
        }
        std::fs::rename(&part, dest).with_context(|| format!("moving {} into place", dest.display()))
    });
    let _ = std::fs::remove_file(&part);
    result
}

fn fetch(url: &str, part: &Path) -> Result<String> {
    eprintln!("downloading {url}");
    let resp = ureq::get(url).timeout(std::time::Duration::from_secs(600)).call().map_err(|e| match e {
        ureq::Error::Status(code, _) => anyhow::anyhow!("{url}: server answered HTTP {code}"),
        other => anyhow::anyhow!("{url}: {other} (no network? use --mirror to point at a copy)"),
    })?;
    let total: Option<u64> = resp.header("content-length").and_then(|v| v.parse().ok());
    let mut reader = resp.into_reader();
    let mut file = std::fs::File::create(part).with_context(|| format!("creating {}", part.display()))?;
    let mut md5 = Md5::new();
    let (mut buf, mut got, mut last_report) = (vec![0u8; 1 << 16], 0u64, 0u64);
    loop {
        let n = reader.read(&mut buf).with_context(|| format!("{url}: reading the response"))?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        file.write_all(&buf[..n]).with_context(|| format!("writing {}", part.display()))?;
        got += n as u64;
        if got - last_report >= 1 << 20 {
            last_report = got;
            match total {
                Some(t) => eprint!("\r  {:.1} / {:.1} MB", got as f64 / 1e6, t as f64 / 1e6),
                None => eprint!("\r  {:.1} MB", got as f64 / 1e6),
            }
        }
    }
    eprintln!("\r  {:.1} MB received", got as f64 / 1e6);
    file.sync_all().with_context(|| format!("syncing {}", part.display()))?;
    Ok(hex(&md5.finalize()))
}

fn unpack(archive: &Archive, zip_path: &Path, out: &Path) -> Result<()> {
    let tmp = out.join(format!(".{}.tmp", archive.name));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    let file = std::fs::File::open(zip_path).with_context(|| format!("opening {}", zip_path.display()))?;
    let mut zip = zip::ZipArchive::new(file).with_context(|| format!("{}: not a zip archive", zip_path.display()))?;
    // `extract` refuses entries that would escape the target folder.
    zip.extract(&tmp).with_context(|| format!("unpacking {}", zip_path.display()))?;
    let inner = tmp.join(&archive.name);
    if !inner.is_dir() {
        let _ = std::fs::remove_dir_all(&tmp);
        bail!("{}: the archive has no `{}/` folder", zip_path.display(), archive.name);
    }
    if let Err(e) = verify_files(archive, &inner) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let dest = out.join(&archive.name);
    if dest.exists() {
        std::fs::remove_dir_all(&dest).with_context(|| format!("replacing {}", dest.display()))?;
    }
    std::fs::rename(&inner, &dest).with_context(|| format!("moving into {}", dest.display()))?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

fn verify_files(archive: &Archive, dir: &Path) -> Result<()> {
    for (name, sha) in &archive.files {
        let p = dir.join(name);
        let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        let got = hex(&Sha256::digest(&bytes));
        if &got != sha {
            bail!("{}: SHA-256 {got}, expected {sha}", p.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;

    /// A zip holding `name/u.data` with `content`.
    fn make_zip(name: &str, content: &[u8]) -> Vec<u8> {
        let mut cur = std::io::Cursor::new(Vec::new());
        {
            let mut w = zip::ZipWriter::new(&mut cur);
            let opts = zip::write::SimpleFileOptions::default();
            w.start_file(format!("{name}/u.data"), opts).unwrap();
            w.write_all(content).unwrap();
            w.finish().unwrap();
        }
        cur.into_inner()
    }

    /// Serves `body` for `GET /<file>` and 404 otherwise, on 127.0.0.1, for `n` requests.
    fn serve(file: &'static str, body: Vec<u8>, n: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(n) {
                let mut stream = stream.unwrap();
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                        break;
                    }
                }
                let ok = request_line.starts_with(&format!("GET /{file} "));
                let (status, body) = if ok { ("200 OK", body.clone()) } else { ("404 Not Found", b"no".to_vec()) };
                let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                stream.write_all(head.as_bytes()).unwrap();
                stream.write_all(&body).unwrap();
            }
        });
        format!("http://{addr}")
    }

    fn archive(body: &[u8], content: &[u8]) -> Archive {
        Archive {
            name: "ml-test".into(),
            file: "ml-test.zip".into(),
            md5: hex(&Md5::digest(body)),
            files: vec![("u.data".into(), hex(&Sha256::digest(content)))],
        }
    }

    #[test]
    fn downloads_verifies_and_unpacks_from_a_local_server() {
        let content = b"1\t2\t5\t881250949\n";
        let body = make_zip("ml-test", content);
        let a = archive(&body, content);
        let url = serve("ml-test.zip", body, 1);
        let out = std::env::temp_dir().join(format!("m6rec-dl-ok-{}", std::process::id()));
        let dir = download(&a, Some(&url), &out).unwrap();
        assert_eq!(std::fs::read(dir.join("u.data")).unwrap(), content);
        // Idempotent: a second call verifies and does not fetch (the server is gone).
        assert!(download(&a, Some(&url), &out).is_ok());
        let leftovers: Vec<_> =
            std::fs::read_dir(&out).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
        std::fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn a_bad_checksum_or_missing_file_leaves_nothing_behind() {
        let content = b"x";
        let body = make_zip("ml-test", content);
        let mut a = archive(&body, content);
        a.md5 = "00000000000000000000000000000000".into();
        let url = serve("ml-test.zip", body, 2);
        let out = std::env::temp_dir().join(format!("m6rec-dl-bad-{}", std::process::id()));
        let err = download(&a, Some(&url), &out).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        a.file = "missing.zip".into();
        let err = download(&a, Some(&url), &out).unwrap_err().to_string();
        assert!(err.contains("HTTP 404"), "{err}");
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "partial files left");
        std::fs::remove_dir_all(&out).unwrap();
    }
}
