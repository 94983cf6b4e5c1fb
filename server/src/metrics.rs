//! Metric names (all under `imagesearch_`) and the Prometheus endpoint.

use std::net::SocketAddr;

pub const REQUESTS: &str = "imagesearch_requests_total";
pub const REQUEST_SECONDS: &str = "imagesearch_request_duration_seconds";
pub const QUEUE_SECONDS: &str = "imagesearch_queue_duration_seconds";
pub const INFERENCE_SECONDS: &str = "imagesearch_inference_duration_seconds";
pub const BATCH_SIZE: &str = "imagesearch_batch_size";
pub const QUEUE_DEPTH: &str = "imagesearch_queue_depth";
pub const QUEUE_REJECTED: &str = "imagesearch_queue_rejected_total";
pub const DROPPED: &str = "imagesearch_dropped_before_compute_total";
pub const CACHE: &str = "imagesearch_cache_lookups_total";
pub const GALLERY_PHOTOS: &str = "imagesearch_gallery_photos";
pub const WITHHELD: &str = "imagesearch_withheld_total";
pub const VERSIONS_READY: &str = "imagesearch_versions_ready";
pub const UNAUTHENTICATED: &str = "imagesearch_unauthenticated_total";
pub const REVIEWS: &str = "imagesearch_reviews_total";
pub const DECODE_REJECTED: &str = "imagesearch_decode_rejected_total";
pub const PHOTOS_WITHOUT_BYTES: &str = "imagesearch_search_photos_without_bytes_total";
pub const CONNECTIONS: &str = "imagesearch_connections";
/// Searches that fused a keyword ranking (keyword_weight > 0).
pub const KEYWORD_SEARCHES: &str = "imagesearch_keyword_searches_total";
/// 1 while a shared gallery's database answers this server's catch-up polls, 0 while it does not
/// (the server then serves its last known gallery and rollout).
pub const GALLERY_DATABASE_UP: &str = "imagesearch_gallery_database_up";

/// Starts the Prometheus exporter on its own port (HTTP `GET /metrics`).
pub fn install(listen: SocketAddr) -> Result<(), String> {
    let seconds = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0];
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()), seconds)
        .and_then(|b| {
            b.set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(BATCH_SIZE.into()),
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0],
            )
        })
        .and_then(|b| b.install())
        .map_err(|e| e.to_string())
}
