//! The imagesearch gRPC API (package `imagesearch.v1`), generated from `proto/imagesearch/v1`.

/// Generated messages and services.
pub mod v1 {
    tonic::include_proto!("imagesearch.v1");
}

/// Encoded file descriptor set of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("imagesearch_descriptor");
