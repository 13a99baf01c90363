//! Compiles the C++ shim over PyTorch's c10d (`csrc/`) against the libtorch headers torch-sys found, and bakes
//! libtorch's directory into the test binaries (RUNPATH).
//!
//! Gloo's headers are not in the torch wheel: Debian's `libgloo-dev` provides them (`cargo xtask setup` installs it),
//! or point `M6REC_GLOO_INCLUDE` at a folder that holds `gloo/`.

use std::path::{Path, PathBuf};

fn gloo_include() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("M6REC_GLOO_INCLUDE") {
        return Some(PathBuf::from(dir));
    }
    // `cargo xtask setup` links a downloaded copy as `<workspace>/.m6rec/gloo` when it could not use apt-get.
    let linked = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.m6rec/gloo");
    [PathBuf::from("/usr/include"), PathBuf::from("/usr/local/include"), linked]
        .into_iter()
        .find(|d| d.join("gloo/config.h").is_file())
}

fn main() {
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-env-changed=M6REC_GLOO_INCLUDE");
    println!("cargo:rerun-if-env-changed=M6REC_CUDA_INCLUDE");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("m6rec-dist: torch-sys did not report libtorch's lib directory (DEP_TCH_LIBTORCH_LIB); run `cargo xtask setup`")
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    let include = Path::new(&lib).join("..").join("include");
    let Some(gloo) = gloo_include() else {
        panic!(
            "m6rec-dist: gloo's headers were not found (/usr/include/gloo/config.h). They are not part of the torch \
             wheel. Fix: `cargo xtask setup` (installs Debian's libgloo-dev), or `apt-get install libgloo-dev`, or set \
             M6REC_GLOO_INCLUDE to a folder that contains gloo/"
        )
    };
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .warnings(false)
        .flag_if_supported("-w")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("GLOG_USE_GLOG_EXPORT", None)
        .define("USE_C10D_GLOO", None)
        .define("USE_DISTRIBUTED", None)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include(&gloo)
        .file("csrc/c10d_shim.cpp");
    if std::env::var_os("CARGO_FEATURE_NCCL").is_some() {
        build.define("USE_C10D_NCCL", None).file("csrc/nccl_shim.cpp");
        if let Some(cuda) = std::env::var_os("M6REC_CUDA_INCLUDE") {
            for dir in std::env::split_paths(&cuda) {
                build.include(dir);
            }
        }
        // ProcessGroupNCCL lives in libtorch_cuda.so, c10::cuda in libc10_cuda.so: every binary linking this crate needs
        // them (link-lib, unlike link-arg, reaches dependents).
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
    build.compile("m6rec_c10d");
}
