// Shared build script for every crate whose binaries link libtorch (included by their build.rs).
//
// torch-sys exports the libtorch lib dir as DEP_TCH_LIBTORCH_LIB to crates that depend on it
// directly. Two link fixes (docs/architecture.md, "Measured facts about libtorch/tch"):
//  1. an rpath, so binaries and tests run without LD_LIBRARY_PATH;
//  2. libtorch_cuda kept despite rustc's --as-needed, so CUDA is found on a GPU machine.
pub fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
