//! Bakes libtorch's directory into this crate's test binaries (RUNPATH), so they run without `LD_LIBRARY_PATH`.
//! torch-sys (`links = "tch"`) exports the directory as `DEP_TCH_LIBTORCH_LIB`; see README "Common errors".
fn main() {
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        // Nothing calls into libtorch_cuda.so directly, so --as-needed would drop it, and with it CUDA support
        // (`tch::Cuda::is_available()` false on a GPU). Keep it.
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
