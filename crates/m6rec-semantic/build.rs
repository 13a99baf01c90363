//! Bakes libtorch's directory into this crate's test binaries (RUNPATH), so they run without `LD_LIBRARY_PATH`.
//! torch-sys (`links = "tch"`) exports the directory as `DEP_TCH_LIBTORCH_LIB`; see README "Common errors".
fn main() {
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
