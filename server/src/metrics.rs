//! Metric names (all under `imagesearch_`) and the Prometheus endpoint.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

pub const REQUESTS: &str = "imagesearch_requests_total";
pub const REQUEST_SECONDS: &str = "imagesearch_request_duration_seconds";
pub const QUEUE_SECONDS: &str = "imagesearch_queue_duration_seconds";
pub const INFERENCE_SECONDS: &str = "imagesearch_inference_duration_seconds";
pub const BATCH_SIZE: &str = "imagesearch_batch_size";
pub const QUEUE_DEPTH: &str = "imagesearch_queue_depth";
/// The bound of a model's queue (with [`QUEUE_DEPTH`], how full it is).
pub const QUEUE_CAPACITY: &str = "imagesearch_queue_capacity";
pub const QUEUE_REJECTED: &str = "imagesearch_queue_rejected_total";
pub const DROPPED: &str = "imagesearch_dropped_before_compute_total";
pub const CACHE: &str = "imagesearch_cache_lookups_total";
pub const GALLERY_PHOTOS: &str = "imagesearch_gallery_photos";
pub const WITHHELD: &str = "imagesearch_withheld_total";
pub const VERSIONS_READY: &str = "imagesearch_versions_ready";
pub const UNAUTHENTICATED: &str = "imagesearch_unauthenticated_total";
pub const REVIEWS: &str = "imagesearch_reviews_total";
pub const DECODE_REJECTED: &str = "imagesearch_decode_rejected_total";
/// Calls refused at the front door because their method's in-flight limit was reached.
pub const CALLS_REJECTED: &str = "imagesearch_calls_rejected_total";
pub const PHOTOS_WITHOUT_BYTES: &str = "imagesearch_search_photos_without_bytes_total";
pub const CONNECTIONS: &str = "imagesearch_connections";
/// Searches that fused a keyword ranking (keyword_weight > 0).
pub const KEYWORD_SEARCHES: &str = "imagesearch_keyword_searches_total";
/// 1 while a shared gallery's database answers this server's catch-up polls, 0 while it does not
/// (the server then serves its last known gallery and rollout).
pub const GALLERY_DATABASE_UP: &str = "imagesearch_gallery_database_up";

/// The canary's share of routing keys in percent (0 without a canary).
pub const ROLLOUT_CANARY_PERCENT: &str = "imagesearch_rollout_canary_percent";

/// The rollout in force as the request metrics label it: stable version in the high half,
/// canary in the low half (0 = none).
static ROLLOUT: AtomicU64 = AtomicU64::new(0);

/// Records the rollout in force, so request metrics carry each version's role.
pub fn set_rollout(stable: u32, canary: u32, canary_percent: u32) {
    ROLLOUT.store((u64::from(stable) << 32) | u64::from(canary), Ordering::Relaxed);
    metrics::gauge!(ROLLOUT_CANARY_PERCENT).set(if canary == 0 { 0.0 } else { f64::from(canary_percent) });
}

/// The `role` label of a request served by `version`: "stable", "canary" or "" (pinned to
/// another version, or no version).
pub fn role(version: u32) -> &'static str {
    let r = ROLLOUT.load(Ordering::Relaxed);
    let (stable, canary) = ((r >> 32) as u32, r as u32);
    match version {
        0 => "",
        v if v == stable => "stable",
        v if v == canary => "canary",
        _ => "",
    }
}

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
