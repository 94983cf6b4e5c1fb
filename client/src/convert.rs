//! Conversions between the `imagesearch.v1` messages and the client's own types: requests are
//! built here and answers read here (`From` where nothing is decided), so the client's methods
//! only send and receive. The region check on answers is made here too: in a restricted
//! region, a photo the server flagged `restricted` never becomes a [`Slot::Photo`], whatever
//! the server did.

use std::time::Duration;

use imagesearch_proto::metadata::{INFERENCE_US, MODEL_VERSION, QUEUE_US};
use imagesearch_proto::{v1 as pb, DISCLAIMER};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::{ClientError, FoundPhoto, ImageRef, SearchOptions, SearchResults, ServerTimings, Slot};

/// One ScoreStream answer: the scores and timings, or the error of that one request.
pub(crate) type StreamOutcome = Result<(pb::ScoreResponse, ServerTimings), ClientError>;

impl From<ImageRef> for pb::Image {
    fn from(image: ImageRef) -> Self {
        let source = match image {
            ImageRef::Bytes(bytes) => pb::image::Source::Data(bytes),
            ImageRef::Gallery(id) => pb::image::Source::GalleryId(id),
        };
        pb::Image { source: Some(source) }
    }
}

/// The timings and version in an answer's metadata; a missing or malformed value reads as 0.
impl From<&MetadataMap> for ServerTimings {
    fn from(md: &MetadataMap) -> Self {
        let num = |key: &str| md.get(key).and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        ServerTimings {
            queue: Duration::from_micros(num(QUEUE_US)),
            inference: Duration::from_micros(num(INFERENCE_US)),
            version: u32::try_from(num(MODEL_VERSION)).unwrap_or(0),
        }
    }
}

/// A request that failed on a ScoreStream (the stream itself goes on).
impl From<pb::StreamError> for ClientError {
    fn from(e: pb::StreamError) -> Self {
        ClientError::Status(Status::new(Code::from(e.code), e.message))
    }
}

/// The routing of a request: the region as given ("" = unknown = restricted), a pinned version
/// (0 = the rollout decides) and the sticky rollout key.
fn routing(region: &str, version: u32, routing_key: &str) -> Option<pb::Routing> {
    Some(pb::Routing { region: region.to_string(), version, routing_key: routing_key.to_string() })
}

/// Builds a Score request.
pub fn score_request(pairs: Vec<(ImageRef, String)>, region: Option<&str>, version: u32, routing_key: &str) -> pb::ScoreRequest {
    pb::ScoreRequest {
        pairs: pairs.into_iter().map(|(image, text)| pb::Pair { image: Some(image.into()), text }).collect(),
        routing: routing(region.unwrap_or(""), version, routing_key),
    }
}

/// A Search request for `query` from `region` (already trimmed).
pub(crate) fn search_request(query: &str, region: &str, k: u32, opts: &SearchOptions) -> pb::SearchRequest {
    pb::SearchRequest {
        query: query.to_string(),
        k,
        routing: routing(region, opts.version, &opts.routing_key),
        include_photos: opts.include_photos,
        min_score: opts.min_score,
        page_token: opts.page_token.clone(),
        filter: opts.filter.clone(),
        keyword_weight: opts.keyword_weight,
    }
}

/// A GetPhoto request for gallery photo `id` from `region` (already trimmed).
pub(crate) fn get_photo_request(id: &str, region: &str) -> pb::GetPhotoRequest {
    pb::GetPhotoRequest { id: id.to_string(), routing: routing(region, 0, "") }
}

/// The slot shown in place of a photo that may not be shown.
pub(crate) fn withheld(rank: u32, score: f32) -> Slot {
    Slot::Withheld { rank, score, disclaimer: DISCLAIMER.to_string() }
}

/// A search hit as a slot: a photo only when it may be shown in the region.
fn slot(hit: pb::SearchHit, restricted_region: bool) -> Slot {
    match hit.content {
        Some(pb::search_hit::Content::Photo(p)) if !(restricted_region && p.restricted) => Slot::Photo(FoundPhoto {
            rank: hit.rank,
            id: p.id,
            score: hit.score,
            reference: p.reference,
            data: p.data,
            mime_type: p.mime_type,
        }),
        // A restricted photo, an explicit withholding, or an empty slot: nothing to show.
        _ => withheld(hit.rank, hit.score),
    }
}

/// Turns the server's answer into slots; in a restricted region, a photo flagged restricted
/// becomes a withheld slot whatever the server did, and a withheld query shows no photo even if
/// the server sent some.
pub fn to_results(resp: pb::SearchResponse, restricted_region: bool) -> SearchResults {
    let hits = if resp.query_withheld.is_some() { Vec::new() } else { resp.hits };
    let hits = hits.into_iter().map(|h| slot(h, restricted_region)).collect();
    let query_withheld = resp.query_withheld.map(|w| if w.disclaimer.is_empty() { DISCLAIMER.to_string() } else { w.disclaimer });
    SearchResults { hits, version: resp.version, query_withheld, gallery_size: resp.gallery_size, next_page_token: resp.next_page_token }
}

/// The photo of a GetPhoto answer, when it may be shown in the region: a photo flagged
/// restricted is withheld in a restricted region whatever the server sent.
pub(crate) fn shown_photo(resp: pb::GetPhotoResponse, restricted_region: bool) -> Option<pb::Photo> {
    match resp.content {
        Some(pb::get_photo_response::Content::Photo(p)) if !(restricted_region && p.restricted) => Some(p),
        _ => None,
    }
}

/// A ScoreStream answer: its request id and the outcome of that request.
pub(crate) fn stream_answer(msg: pb::ScoreStreamResponse) -> (u64, StreamOutcome) {
    let queue = Duration::from_micros(msg.queue_us);
    let inference = Duration::from_micros(msg.inference_us);
    let outcome = match msg.outcome {
        Some(pb::score_stream_response::Outcome::Result(r)) => {
            let timings = ServerTimings { queue, inference, version: r.version };
            Ok((r, timings))
        }
        Some(pb::score_stream_response::Outcome::Error(e)) => Err(ClientError::from(e)),
        None => Err(ClientError::Status(Status::internal("empty stream answer"))),
    };
    (msg.request_id, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn photo_hit(rank: u32, id: &str, restricted: bool) -> pb::SearchHit {
        pb::SearchHit {
            rank,
            score: 0.5,
            content: Some(pb::search_hit::Content::Photo(pb::Photo {
                id: id.into(),
                reference: format!("gallery:{id}"),
                data: vec![1, 2, 3],
                mime_type: "image/jpeg".into(),
                restricted,
            })),
        }
    }

    #[test]
    fn a_restricted_photo_never_reaches_a_restricted_region() {
        let resp = pb::SearchResponse {
            hits: vec![photo_hit(1, "dog.jpg", false), photo_hit(2, "child.jpg", true), pb::SearchHit { rank: 3, score: 0.1, content: None }],
            version: 3,
            query_withheld: None,
            gallery_size: 10,
            photos_without_bytes: 0,
            next_page_token: String::new(),
        };
        let r = to_results(resp.clone(), true);
        assert!(matches!(&r.hits[0], Slot::Photo(p) if p.id == "dog.jpg"));
        assert!(matches!(&r.hits[1], Slot::Withheld { disclaimer, .. } if disclaimer == DISCLAIMER));
        assert!(matches!(&r.hits[2], Slot::Withheld { .. }), "an empty slot shows nothing");
        // In an open region the flagged photo may be shown.
        let open = to_results(resp.clone(), false);
        assert!(matches!(&open.hits[1], Slot::Photo(p) if p.id == "child.jpg"));
        // A withheld query shows nothing, even if a misbehaving server sent photos with it.
        let mut withheld = resp;
        withheld.query_withheld = Some(pb::Withheld { disclaimer: String::new() });
        let r = to_results(withheld, true);
        assert!(r.hits.is_empty());
        assert_eq!(r.query_withheld.as_deref(), Some(DISCLAIMER));
    }

    #[test]
    fn get_photo_withholds_a_flagged_photo_in_a_restricted_region_only() {
        let Some(pb::search_hit::Content::Photo(p)) = photo_hit(1, "child.jpg", true).content else { unreachable!() };
        let answer = pb::GetPhotoResponse { content: Some(pb::get_photo_response::Content::Photo(p)) };
        assert!(shown_photo(answer.clone(), true).is_none());
        assert!(shown_photo(answer, false).is_some_and(|p| p.id == "child.jpg"));
        let withheld = pb::GetPhotoResponse { content: Some(pb::get_photo_response::Content::Withheld(pb::Withheld::default())) };
        assert!(shown_photo(withheld, false).is_none());
    }

    #[test]
    fn requests_carry_images_and_routing() {
        let r = score_request(vec![(ImageRef::Bytes(vec![9]), "a".into()), (ImageRef::Gallery("g".into()), "b".into())], Some("DE"), 2, "user-1");
        let sources: Vec<_> = r.pairs.iter().map(|p| p.image.clone().and_then(|i| i.source)).collect();
        assert_eq!(sources, vec![Some(pb::image::Source::Data(vec![9])), Some(pb::image::Source::GalleryId("g".into()))]);
        assert_eq!(r.routing, Some(pb::Routing { region: "DE".into(), version: 2, routing_key: "user-1".into() }));
        let filter = pb::SearchFilter { added_from_unix_ms: 7, ..Default::default() };
        let opts = SearchOptions {
            version: 4,
            routing_key: "k".into(),
            include_photos: true,
            min_score: 0.25,
            page_token: "ab".into(),
            filter: Some(filter.clone()),
            keyword_weight: 0.5,
        };
        let s = search_request("a dog", "US", 5, &opts);
        assert_eq!((s.k, s.include_photos, s.min_score, s.page_token.as_str(), s.keyword_weight), (5, true, 0.25, "ab", 0.5));
        assert_eq!(s.filter, Some(filter));
        assert_eq!(s.routing, Some(pb::Routing { region: "US".into(), version: 4, routing_key: "k".into() }));
        assert_eq!(get_photo_request("x", "").routing, Some(pb::Routing::default()));
    }

    #[test]
    fn timings_come_from_the_metadata_and_the_stream_answer() {
        let mut md = MetadataMap::new();
        md.insert(QUEUE_US, MetadataValue::from_static("1500"));
        md.insert(INFERENCE_US, MetadataValue::from_static("250"));
        md.insert(MODEL_VERSION, MetadataValue::from_static("7"));
        let t = ServerTimings::from(&md);
        assert_eq!((t.queue, t.inference, t.version), (Duration::from_micros(1500), Duration::from_micros(250), 7));
        let none = ServerTimings::from(&MetadataMap::new());
        assert_eq!((none.queue, none.version), (Duration::ZERO, 0));

        let ok = pb::ScoreStreamResponse {
            request_id: 4,
            outcome: Some(pb::score_stream_response::Outcome::Result(pb::ScoreResponse { scores: vec![0.5], version: 3 })),
            queue_us: 10,
            inference_us: 20,
        };
        let (id, outcome) = stream_answer(ok);
        let (resp, t) = outcome.unwrap();
        assert_eq!((id, resp.scores, t.version, t.queue, t.inference), (4, vec![0.5], 3, Duration::from_micros(10), Duration::from_micros(20)));
        let failed = pb::ScoreStreamResponse {
            request_id: 5,
            outcome: Some(pb::score_stream_response::Outcome::Error(pb::StreamError { code: Code::InvalidArgument as i32, message: "bad".into() })),
            queue_us: 0,
            inference_us: 0,
        };
        let (id, outcome) = stream_answer(failed);
        assert_eq!((id, outcome.unwrap_err().code()), (5, Some(Code::InvalidArgument)));
    }
}
