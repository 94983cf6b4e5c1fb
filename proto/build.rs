//! Compiles the protos with a vendored protoc and writes the descriptor set for reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "imagesearch/v1/admin.proto",
        "imagesearch/v1/gallery.proto",
        "imagesearch/v1/info.proto",
        "imagesearch/v1/scoring.proto",
        "imagesearch/v1/search.proto",
        "imagesearch/v1/service.proto",
    ];
    // The directory too, so a new .proto file triggers a rebuild.
    println!("cargo:rerun-if-changed=imagesearch/v1");
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    // A vendored protoc: nothing to install on the build machine.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("imagesearch_descriptor.bin"))
        .compile_protos(&protos, &["."])?;
    Ok(())
}
