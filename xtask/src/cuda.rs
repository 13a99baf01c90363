//! `cargo xtask build-cuda`: the CUDA-capable libtorch, a build with the `cuda` and `nccl` features, and a GPU smoke
//! test when a GPU is present.

use crate::setup::{self, Variant};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Folders under the wheel's site-packages that hold `header` (`nvidia/<package>/include`).
fn include_dirs(site: &Path, header: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(site.join("nvidia")) else { return Vec::new() };
    let mut out: Vec<PathBuf> =
        entries.flatten().map(|e| e.path().join("include")).filter(|d| d.join(header).is_file()).collect();
    out.sort();
    out
}

/// Headers that `cuda_runtime.h` and `cuda_fp16.h` include but the torch wheel's dependencies lack, for torch 2.13's
/// CUDA 13.0: the compiler runtime (`crt/host_config.h`) and CCCL (`nv/target`). Installed beside the wheel.
const CUDA_HEADER_PACKAGES: [&str; 2] = ["nvidia-cuda-crt==13.0.88", "nvidia-cuda-cccl==13.0.85"];
const CUDA_HEADER_FILES: [&str; 2] = ["crt/host_config.h", "nv/target"];

/// The include path the `nccl` build needs: CUDA runtime and NCCL headers from the NVIDIA pip packages.
pub fn cuda_includes(torch_dir: &Path) -> Result<Vec<PathBuf>> {
    let site = torch_dir.parent().context("the torch folder has no parent")?;
    let mut dirs = Vec::new();
    for header in ["cuda_runtime_api.h", "nccl.h"] {
        let found = include_dirs(site, header);
        if found.is_empty() {
            bail!(
                "{header} not found under {}/nvidia/*/include: the CUDA wheel's NVIDIA packages are incomplete. \
                 Delete {} and run `cargo xtask build-cuda` again",
                site.display(),
                site.display()
            );
        }
        dirs.extend(found);
    }
    // Everything else the CUDA headers include (cuda_fp16.h, crt/, ...) sits in sibling packages.
    if let Ok(entries) = std::fs::read_dir(site.join("nvidia")) {
        dirs.extend(entries.flatten().map(|e| e.path().join("include")).filter(|d| d.is_dir()));
    }
    dirs.sort();
    dirs.dedup();
    let complete = |dirs: &[PathBuf]| CUDA_HEADER_FILES.iter().all(|f| dirs.iter().any(|d| d.join(f).is_file()));
    if !complete(&dirs) {
        let extra = setup::cache_root().join("cuda-headers-13.0");
        if !CUDA_HEADER_FILES.iter().all(|f| !include_dirs(&extra, f).is_empty()) {
            let mut args = vec!["--no-deps".to_string()];
            args.extend(CUDA_HEADER_PACKAGES.iter().map(|p| p.to_string()));
            setup::pip_install_into(&extra, &args, "CUDA 13.0 crt and CCCL headers")?;
        }
        for f in CUDA_HEADER_FILES {
            let found = include_dirs(&extra, f);
            if found.is_empty() {
                bail!("{f} not found in {} after installing {CUDA_HEADER_PACKAGES:?}", extra.display());
            }
            dirs.extend(found);
        }
        dirs.dedup();
    }
    Ok(dirs)
}

/// How many GPUs `nvidia-smi -L` lists (0 without a driver).
pub fn gpu_count() -> usize {
    Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.starts_with("GPU ")).count())
        .unwrap_or(0)
}

pub fn build_cuda(root: &Path, smoke: bool) -> Result<()> {
    let torch_dir = setup::setup(root, Variant::Cuda)?;
    let includes = cuda_includes(&torch_dir)?;
    let joined = std::env::join_paths(&includes).context("joining the CUDA include folders")?;
    crate::run_cmd(crate::cargo(root).env("M6REC_CUDA_INCLUDE", &joined).args([
        "build",
        "-p",
        "m6rec-cli",
        "--features",
        "nccl",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let bin = target.join("debug").join("m6rec");
    let gpus = gpu_count();
    if !smoke {
        println!("built {} with CUDA and NCCL", bin.display());
        return Ok(());
    }
    if gpus == 0 {
        println!(
            "built {} with CUDA and NCCL; no GPU here (nvidia-smi lists none), so the GPU smoke test did not run",
            bin.display()
        );
        return Ok(());
    }
    smoke_test(root, &bin, gpus)
}

fn smoke_test(root: &Path, bin: &Path, gpus: usize) -> Result<()> {
    let doctor = Command::new(bin).arg("doctor").output().context("running m6rec doctor")?;
    let text = String::from_utf8_lossy(&doctor.stdout);
    if !text.contains("cuda available: true") {
        bail!("the CUDA build does not see the GPU (m6rec doctor: {}); is libtorch_cuda.so linked?", text.trim());
    }
    let dir = std::env::temp_dir().join(format!("m6rec-cuda-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let p = |x: &Path| x.to_string_lossy().into_owned();
    let ds = dir.join("ds");
    crate::run_cmd(Command::new(bin).args(["import", "recbole", &p(&root.join("fixtures/demo")), "--out", &p(&ds)]))?;
    let cfg = dir.join("run.toml");
    std::fs::write(
        &cfg,
        "[model]\nd_model = 32\nn_layers = 1\nn_heads = 2\nmax_len = 20\ndropout = 0.0\n\
         [optim]\nalgorithm = \"sgd\"\nmomentum = 0.9\nlr = 0.2\n[train]\nbatch_size = 64\nepochs = 3\nseed = 3\n",
    )?;
    let train = |out: &Path, device: &str| {
        let mut c = Command::new(bin);
        c.args(["train", "--data", &p(&ds), "--config", &p(&cfg), "--out", &p(out), "--device", device, "--force"]);
        for v in ["RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"] {
            c.env_remove(v);
        }
        c
    };
    let single = dir.join("single");
    crate::run_cmd(&mut train(&single, "cuda:0"))?;
    // Data-parallel through NCCL: one rank per GPU (NCCL refuses two ranks on one GPU); with one GPU, a group of one
    // still runs the whole NCCL + DDP engine path.
    let world = gpus.min(2);
    let ddp = dir.join("ddp");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut children = Vec::new();
    for rank in 0..world {
        let mut c = train(&ddp, "auto");
        c.env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string());
        children.push(c.spawn().context("starting a rank")?);
    }
    for mut c in children {
        let status = c.wait()?;
        if !status.success() {
            bail!("a data-parallel rank on the GPU failed ({status})");
        }
    }
    let losses = |d: &Path| -> Result<Vec<f64>> {
        let s: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("state.json"))?)?;
        Ok(s["history"].as_array().into_iter().flatten().filter_map(|r| r["loss"].as_f64()).collect())
    };
    let (a, b) = (losses(&single)?, losses(&ddp)?);
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    println!("GPU smoke test: 1 process on cuda:0 vs {world} rank(s) over NCCL: epoch losses {a:?} vs {b:?}");
    if a.len() != b.len() || a.is_empty() || worst > 1e-3 {
        bail!("data-parallel training on the GPU differs from one process (largest epoch-loss difference {worst})");
    }
    println!("GPU smoke test passed (largest epoch-loss difference {worst:.2e})");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
