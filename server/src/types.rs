//! The server's own request and answer types: what [`crate::app::App`] takes and gives back,
//! free of the wire. [`crate::convert`] maps them to and from `imagesearch.v1` messages.

use crate::filter::PhotoFilter;
use crate::rollout::Rollout;
use crate::wal::Flag;

/// Where a request comes from and which version it asks for.
#[derive(Clone, Debug, Default)]
pub struct Routing {
    /// ISO 3166-1 alpha-2 region of the requester, as sent (empty: none given, restricted).
    pub region: String,
    /// A pinned scorer version; 0 = the rollout picks.
    pub version: u32,
    /// The key the rollout buckets on (a user id, say).
    pub routing_key: String,
}

/// The image of a Score pair.
#[derive(Clone, Debug)]
pub enum ImageRef {
    /// Encoded photo bytes (JPEG, PNG or WebP).
    Bytes(Vec<u8>),
    /// A photo of the gallery, by id.
    Gallery(String),
}

/// One (image, text) pair to score.
#[derive(Clone, Debug)]
pub struct Pair {
    pub image: ImageRef,
    pub text: String,
}

/// A Score call.
#[derive(Clone, Debug, Default)]
pub struct ScoreQuery {
    pub pairs: Vec<Pair>,
    pub routing: Routing,
}

/// A Search call.
#[derive(Clone, Debug, Default)]
pub struct SearchQuery {
    pub query: String,
    pub k: u32,
    /// Send photo bytes with the hits (up to the answer's byte budget).
    pub include_photos: bool,
    pub routing: Routing,
    /// Hits scoring below this are left out (0 = no floor).
    pub min_score: f32,
    /// Continue after the page that gave this token ("" = first page).
    pub page_token: String,
    /// Only photos passing it are ranked (unchecked as received).
    pub filter: PhotoFilter,
    /// Weight in [0, 1] of the keyword ranking fused with the vector ranking (0 = vectors only).
    pub keyword_weight: f32,
}

/// A gallery photo as its requester may see it.
#[derive(Clone, Debug)]
pub struct ShownPhoto {
    pub id: String,
    /// The photo's bytes; empty when not asked for or past the answer's byte budget.
    pub data: Vec<u8>,
    pub mime_type: String,
    /// Whether the law restricts this photo in restricted regions.
    pub restricted: bool,
}

/// A photo, or the disclaimer in its place.
#[derive(Clone, Debug)]
pub enum Shown {
    Photo(ShownPhoto),
    /// Withheld in the requester's region; the answer carries the disclaimer.
    Withheld,
}

/// One ranked hit of a search.
#[derive(Clone, Debug)]
pub struct Hit {
    /// 1-based.
    pub rank: u32,
    /// Calibrated score in [0, 1].
    pub score: f32,
    pub shown: Shown,
}

/// A Search answer.
#[derive(Clone, Debug, Default)]
pub struct SearchAnswer {
    pub hits: Vec<Hit>,
    /// The query itself describes a child and the region is restricted: no hits.
    pub query_withheld: bool,
    pub gallery_size: u64,
    /// Photos asked for with bytes that came as references only (byte budget spent).
    pub photos_without_bytes: u32,
    /// The next page's token, when more hits follow ("" = last page).
    pub next_page_token: String,
}

/// A photo of an AddPhotos stream.
#[derive(Clone, Debug, Default)]
pub struct PhotoUpload {
    pub id: String,
    pub data: Vec<u8>,
    pub captions: Vec<String>,
    /// The uploader's attributes, as sent (checked by the add).
    pub attributes: Vec<(String, String)>,
}

/// A photo an add refused, and why (its id quoted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub id: String,
    pub reason: String,
}

/// What an AddPhotos stream stored.
#[derive(Clone, Debug, Default)]
pub struct Added {
    pub added: u32,
    pub replaced: u32,
    /// Of the stored photos, those the law restricts.
    pub restricted: u32,
    pub rejected: Vec<Rejected>,
}

/// What a removal did.
#[derive(Clone, Debug, Default)]
pub struct Removed {
    pub removed: u32,
    /// Ids that were not in the gallery (quoted).
    pub not_found: Vec<String>,
}

/// A reviewer's decision on a photo.
#[derive(Clone, Debug, Default)]
pub struct ReviewRequest {
    pub id: String,
    pub restricted: bool,
    pub reviewer: String,
    pub note: String,
}

/// What a review changed.
#[derive(Clone, Debug)]
pub struct Reviewed {
    /// Photos whose flag changed (the reviewed one and every photo with the same bytes; quoted).
    pub changed: Vec<String>,
    /// The reviewed photo's flag now.
    pub flag: Flag,
}

/// Gallery counts, by the law's flags.
#[derive(Clone, Debug, Default)]
pub struct GalleryStats {
    pub photos: u64,
    pub restricted: u64,
    pub restricted_by_captions: u64,
    pub restricted_by_detector: u64,
    pub restricted_unverified: u64,
    pub restricted_by_review: u64,
    pub cleared_by_review: u64,
    pub photo_bytes: u64,
    pub log_bytes: u64,
}

/// Where a scorer version stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionPhase {
    /// In the repository, not loaded.
    Available,
    Loading,
    Ready,
    Failed,
}

/// A scorer version's status.
#[derive(Clone, Debug)]
pub struct VersionStatus {
    pub version: u32,
    pub phase: VersionPhase,
    pub manifest_json: String,
    /// Why a load failed.
    pub error: String,
    /// "stable", "canary" or "".
    pub role: &'static str,
}

/// A ready version, for Info.
#[derive(Clone, Debug)]
pub struct VersionInfo {
    pub version: u32,
    pub created: String,
    pub metrics_json: String,
    pub has_child_detector: bool,
}

/// The server's limits, for Info.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_pairs_per_request: u32,
    pub max_batch_size: u32,
    pub max_queue_delay_us: u64,
    pub queue_capacity: u32,
    pub max_message_bytes: u64,
    pub max_text_chars: u32,
    pub max_image_bytes: u64,
    pub max_image_pixels: u64,
    pub max_k: u32,
    pub max_stream_in_flight: u32,
    pub max_request_pixels: u64,
    pub max_answer_photo_bytes: u64,
    pub decode_workers: u32,
    pub decode_queue: u32,
    pub max_search_depth: u32,
    pub max_photo_attributes: u32,
    pub max_filter_conditions: u32,
    pub max_concurrent_requests: u32,
    pub max_queue_time_ms: u64,
    pub image_max_batch_size: u32,
    pub image_instances: u32,
    pub text_instances: u32,
}

/// What Info tells.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub build_version: &'static str,
    pub git_commit: &'static str,
    pub device: String,
    pub image_encoder: String,
    pub text_encoder: String,
    pub versions: Vec<VersionInfo>,
    pub limits: Limits,
    pub rollout: Rollout,
    pub restricted_regions: Vec<String>,
    pub image_views: String,
    pub index_views: String,
    pub text_encoder_device: String,
}
