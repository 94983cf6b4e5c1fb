//! The imagesearch gRPC API (package `imagesearch.v1`), generated from `proto/imagesearch/v1`,
//! and the parts of the contract that are not messages: metadata keys and the disclaimer text.

/// Generated messages and services.
pub mod v1 {
    tonic::include_proto!("imagesearch.v1");
}

/// Encoded file descriptor set of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("imagesearch_descriptor");

/// Shown in place of a photo or a query that may not be shown in the requester's region
/// (`Withheld.disclaimer`); a client that finds a withheld slot without text shows this.
pub const DISCLAIMER: &str = "This image is unavailable in your country in compliance with local laws";

/// gRPC metadata keys the server reads and writes.
/// The grpc.health.v1 service name that answers SERVING whenever the server process answers
/// gRPC (warm-up and drain included): what a liveness probe asks. Readiness asks "" instead.
pub const LIVENESS_SERVICE: &str = "liveness";

pub mod metadata {
    /// The caller's request id (at most 128 visible ASCII bytes), echoed back on every answer
    /// and error; the server makes one when the caller sends none.
    pub const REQUEST_ID: &str = "x-request-id";
    /// The scorer version that served the call (answers only).
    pub const MODEL_VERSION: &str = "x-model-version";
    /// Microseconds the call waited in batch queues (answers only).
    pub const QUEUE_US: &str = "x-queue-us";
    /// Microseconds the call spent in model forward passes (answers only).
    pub const INFERENCE_US: &str = "x-inference-us";
    /// The writer (gallery) or admin (model) credential: `authorization: Bearer <token>`.
    pub const AUTHORIZATION: &str = "authorization";
    /// On a refusal that waiting cures: how long the caller should wait before trying again, in
    /// whole milliseconds (gRPC's retry design, proposal A6, the server's pushback).
    pub const RETRY_PUSHBACK: &str = "grpc-retry-pushback-ms";
}
