//! Conversions between `imagesearch.v1` messages and the server's own types
//! ([`crate::types`]): every message the server reads is parsed here (`TryFrom` where a message
//! can be malformed) and every answer is built here (`From`). Handlers call nothing else to
//! touch a message's fields.

use imagesearch_proto::v1 as pb;
use imagesearch_proto::DISCLAIMER;

use crate::error::ServeError;
use crate::filter::{Condition, PhotoFilter};
use crate::rollout::Rollout;
use crate::types::*;

impl From<Option<pb::Routing>> for Routing {
    fn from(r: Option<pb::Routing>) -> Self {
        r.map(|r| Routing { region: r.region, version: r.version, routing_key: r.routing_key }).unwrap_or_default()
    }
}

/// A Score pair's image: bytes or a gallery id (a pair without one is refused, naming it).
fn image_ref(i: usize, image: Option<pb::Image>) -> Result<ImageRef, ServeError> {
    match image.and_then(|im| im.source) {
        Some(pb::image::Source::Data(bytes)) => Ok(ImageRef::Bytes(bytes)),
        Some(pb::image::Source::GalleryId(id)) => Ok(ImageRef::Gallery(id)),
        None => Err(ServeError::InvalidArgument(format!("pair {i}: no image (send bytes or a gallery_id)"))),
    }
}

impl TryFrom<pb::ScoreRequest> for ScoreQuery {
    type Error = ServeError;
    fn try_from(r: pb::ScoreRequest) -> Result<Self, ServeError> {
        let pairs = r
            .pairs
            .into_iter()
            .enumerate()
            .map(|(i, p)| Ok(Pair { image: image_ref(i, p.image)?, text: p.text }))
            .collect::<Result<_, ServeError>>()?;
        Ok(ScoreQuery { pairs, routing: r.routing.into() })
    }
}

impl From<pb::SearchRequest> for SearchQuery {
    fn from(r: pb::SearchRequest) -> Self {
        SearchQuery {
            query: r.query,
            k: r.k,
            include_photos: r.include_photos,
            routing: r.routing.into(),
            min_score: r.min_score,
            page_token: r.page_token,
            filter: r.filter.map(PhotoFilter::from).unwrap_or_default(),
            keyword_weight: r.keyword_weight,
        }
    }
}

impl From<pb::SearchFilter> for PhotoFilter {
    fn from(f: pb::SearchFilter) -> Self {
        PhotoFilter {
            conditions: f.attributes.into_iter().map(|c| Condition { key: c.key, any_of: c.any_of }).collect(),
            added_from_ms: (f.added_from_unix_ms != 0).then_some(f.added_from_unix_ms),
            added_before_ms: (f.added_before_unix_ms != 0).then_some(f.added_before_unix_ms),
        }
    }
}

impl From<pb::AddPhotoRequest> for PhotoUpload {
    fn from(r: pb::AddPhotoRequest) -> Self {
        PhotoUpload { id: r.id, data: r.data, captions: r.captions, attributes: r.attributes.into_iter().collect() }
    }
}

impl From<pb::ReviewPhotoRequest> for ReviewRequest {
    fn from(r: pb::ReviewPhotoRequest) -> Self {
        ReviewRequest { id: r.id, restricted: r.restricted, reviewer: r.reviewer, note: r.note }
    }
}

impl TryFrom<pb::SetRolloutRequest> for Rollout {
    type Error = ServeError;
    fn try_from(r: pb::SetRolloutRequest) -> Result<Self, ServeError> {
        let r = r.rollout.ok_or_else(|| ServeError::InvalidArgument("rollout missing".into()))?;
        Ok(Rollout { stable: r.stable, canary: r.canary, canary_percent: r.canary_percent })
    }
}

/// A Score answer of `version`.
pub fn score_response(scores: Vec<f32>, version: u32) -> pb::ScoreResponse {
    pb::ScoreResponse { scores, version }
}

fn withheld() -> pb::Withheld {
    pb::Withheld { disclaimer: DISCLAIMER.to_string() }
}

impl From<ShownPhoto> for pb::Photo {
    fn from(p: ShownPhoto) -> Self {
        pb::Photo { reference: format!("gallery:{}", p.id), id: p.id, data: p.data, mime_type: p.mime_type, restricted: p.restricted }
    }
}

impl From<Shown> for pb::search_hit::Content {
    fn from(s: Shown) -> Self {
        match s {
            Shown::Photo(p) => pb::search_hit::Content::Photo(p.into()),
            Shown::Withheld => pb::search_hit::Content::Withheld(withheld()),
        }
    }
}

impl From<Shown> for pb::GetPhotoResponse {
    fn from(s: Shown) -> Self {
        let content = match s {
            Shown::Photo(p) => pb::get_photo_response::Content::Photo(p.into()),
            Shown::Withheld => pb::get_photo_response::Content::Withheld(withheld()),
        };
        pb::GetPhotoResponse { content: Some(content) }
    }
}

/// A Search answer of `version`.
pub fn search_response(a: SearchAnswer, version: u32) -> pb::SearchResponse {
    pb::SearchResponse {
        hits: a
            .hits
            .into_iter()
            .map(|h| pb::SearchHit { rank: h.rank, score: h.score, content: Some(h.shown.into()) })
            .collect(),
        version,
        query_withheld: a.query_withheld.then(withheld),
        gallery_size: a.gallery_size,
        photos_without_bytes: a.photos_without_bytes,
        next_page_token: a.next_page_token,
    }
}

impl From<Added> for pb::AddPhotosResponse {
    fn from(a: Added) -> Self {
        pb::AddPhotosResponse {
            added: a.added,
            replaced: a.replaced,
            restricted: a.restricted,
            rejected: a.rejected.into_iter().map(|r| pb::RejectedPhoto { id: r.id, reason: r.reason }).collect(),
        }
    }
}

impl From<Removed> for pb::RemovePhotosResponse {
    fn from(r: Removed) -> Self {
        pb::RemovePhotosResponse { removed: r.removed, not_found: r.not_found }
    }
}

impl From<Reviewed> for pb::ReviewPhotoResponse {
    fn from(r: Reviewed) -> Self {
        pb::ReviewPhotoResponse { changed: r.changed, flag: r.flag.name().to_string() }
    }
}

impl From<GalleryStats> for pb::GalleryStatsResponse {
    fn from(s: GalleryStats) -> Self {
        pb::GalleryStatsResponse {
            photos: s.photos,
            restricted: s.restricted,
            restricted_by_captions: s.restricted_by_captions,
            restricted_by_detector: s.restricted_by_detector,
            restricted_unverified: s.restricted_unverified,
            restricted_by_review: s.restricted_by_review,
            cleared_by_review: s.cleared_by_review,
            photo_bytes: s.photo_bytes,
            log_bytes: s.log_bytes,
        }
    }
}

impl From<Rollout> for pb::Rollout {
    fn from(r: Rollout) -> Self {
        pb::Rollout { stable: r.stable, canary: r.canary, canary_percent: r.canary_percent }
    }
}

impl From<VersionPhase> for pb::VersionState {
    fn from(p: VersionPhase) -> Self {
        match p {
            VersionPhase::Available => pb::VersionState::Available,
            VersionPhase::Loading => pb::VersionState::Loading,
            VersionPhase::Ready => pb::VersionState::Ready,
            VersionPhase::Failed => pb::VersionState::Failed,
        }
    }
}

impl From<VersionStatus> for pb::VersionStatus {
    fn from(s: VersionStatus) -> Self {
        pb::VersionStatus {
            version: s.version,
            state: pb::VersionState::from(s.phase) as i32,
            manifest_json: s.manifest_json,
            error: s.error,
            role: s.role.to_string(),
        }
    }
}

impl From<Limits> for pb::Limits {
    fn from(l: Limits) -> Self {
        pb::Limits {
            max_pairs_per_request: l.max_pairs_per_request,
            max_batch_size: l.max_batch_size,
            max_queue_delay_us: l.max_queue_delay_us,
            queue_capacity: l.queue_capacity,
            max_message_bytes: l.max_message_bytes,
            max_text_chars: l.max_text_chars,
            max_image_bytes: l.max_image_bytes,
            max_image_pixels: l.max_image_pixels,
            max_k: l.max_k,
            max_stream_in_flight: l.max_stream_in_flight,
            max_request_pixels: l.max_request_pixels,
            max_answer_photo_bytes: l.max_answer_photo_bytes,
            decode_workers: l.decode_workers,
            decode_queue: l.decode_queue,
            max_search_depth: l.max_search_depth,
            max_photo_attributes: l.max_photo_attributes,
            max_filter_conditions: l.max_filter_conditions,
            max_concurrent_requests: l.max_concurrent_requests,
            max_queue_time_ms: l.max_queue_time_ms,
            image_max_batch_size: l.image_max_batch_size,
            image_instances: l.image_instances,
            text_instances: l.text_instances,
        }
    }
}

impl From<ServerInfo> for pb::InfoResponse {
    fn from(i: ServerInfo) -> Self {
        let (image_encoder, text_encoder) = (i.image_encoder, i.text_encoder);
        pb::InfoResponse {
            build_version: i.build_version.to_string(),
            git_commit: i.git_commit.to_string(),
            device: i.device,
            versions: i
                .versions
                .into_iter()
                .map(|v| pb::ScorerVersion {
                    version: v.version,
                    created: v.created,
                    image_encoder: image_encoder.clone(),
                    text_encoder: text_encoder.clone(),
                    metrics_json: v.metrics_json,
                    has_child_detector: v.has_child_detector,
                })
                .collect(),
            limits: Some(i.limits.into()),
            rollout: Some(i.rollout.into()),
            restricted_regions: i.restricted_regions,
            image_views: i.image_views,
            index_views: i.index_views,
            text_encoder_device: i.text_encoder_device,
        }
    }
}

/// A ScoreStream answer: the outcome of one request of the stream, with its timings.
pub fn stream_response(
    request_id: u64,
    outcome: Result<(Vec<f32>, u32, crate::encoders::Timings), ServeError>,
) -> pb::ScoreStreamResponse {
    use pb::score_stream_response::Outcome;
    match outcome {
        Ok((scores, version, t)) => pb::ScoreStreamResponse {
            request_id,
            outcome: Some(Outcome::Result(score_response(scores, version))),
            queue_us: t.queue.as_micros() as u64,
            inference_us: t.inference.as_micros() as u64,
        },
        Err(e) => pb::ScoreStreamResponse {
            request_id,
            outcome: Some(Outcome::Error(pb::StreamError { code: e.code() as i32, message: e.to_string() })),
            queue_us: 0,
            inference_us: 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_without_an_image_is_refused_by_index() {
        let req = pb::ScoreRequest {
            pairs: vec![
                pb::Pair { image: Some(pb::Image { source: Some(pb::image::Source::GalleryId("a".into())) }), text: "t".into() },
                pb::Pair { image: None, text: "t".into() },
            ],
            routing: None,
        };
        let err = ScoreQuery::try_from(req).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.to_string().starts_with("pair 1: no image"), "{err}");
    }

    #[test]
    fn withheld_slots_and_queries_carry_the_disclaimer() {
        let answer = SearchAnswer {
            hits: vec![
                Hit { rank: 1, score: 0.9, shown: Shown::Withheld },
                Hit {
                    rank: 2,
                    score: 0.5,
                    shown: Shown::Photo(ShownPhoto { id: "p".into(), data: vec![1], mime_type: "image/png".into(), restricted: false }),
                },
            ],
            query_withheld: false,
            gallery_size: 2,
            photos_without_bytes: 0,
            next_page_token: String::new(),
        };
        let r = search_response(answer, 3);
        assert_eq!(r.version, 3);
        assert!(matches!(&r.hits[0].content, Some(pb::search_hit::Content::Withheld(w)) if w.disclaimer == DISCLAIMER));
        assert!(matches!(&r.hits[1].content, Some(pb::search_hit::Content::Photo(p)) if p.reference == "gallery:p"));
        let q = search_response(SearchAnswer { query_withheld: true, ..Default::default() }, 1);
        assert_eq!(q.query_withheld.unwrap().disclaimer, DISCLAIMER);
    }

    #[test]
    fn a_missing_routing_is_the_restricted_default() {
        let r = Routing::from(None);
        assert!(r.region.is_empty() && r.version == 0 && r.routing_key.is_empty());
        assert!(Rollout::try_from(pb::SetRolloutRequest { rollout: None }).is_err());
    }
}
