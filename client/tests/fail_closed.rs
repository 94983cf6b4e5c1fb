//! The client against a fake server that misbehaves: it still never hands out a restricted
//! photo in a restricted region, refuses child queries there without sending them, and retries
//! exactly what it should.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use imagesearch_client::{Client, ClientConfig, ClientError, ImageRef, RetryPolicy, Slot};
use imagesearch_compliance::RegionPolicy;
use imagesearch_proto::{v1 as pb, DISCLAIMER};
use pb::image_search_server::{ImageSearch, ImageSearchServer};
use tonic::{Code, Request, Response, Status, Streaming};

/// Ignores the law: answers every query, sends restricted photos everywhere. Its Score fails
/// with UNAVAILABLE `fail_first` times (or always), and with INVALID_ARGUMENT for the text
/// "bad"; each Score answer takes at least `score_delay`.
#[derive(Default)]
struct Misbehaving {
    searches: AtomicUsize,
    scores: AtomicUsize,
    fail_first: usize,
    always_unavailable: bool,
    score_delay: Duration,
}

fn photo(id: &str, restricted: bool) -> pb::SearchHit {
    pb::SearchHit {
        rank: 0,
        score: 0.5,
        content: Some(pb::search_hit::Content::Photo(pb::Photo {
            id: id.into(),
            reference: format!("gallery:{id}"),
            data: b"jpeg".to_vec(),
            mime_type: "image/jpeg".into(),
            restricted,
        })),
    }
}

type Out = Pin<Box<dyn futures_core::Stream<Item = Result<pb::ScoreStreamResponse, Status>> + Send>>;

struct Fake(Arc<Misbehaving>);

#[tonic::async_trait]
impl ImageSearch for Fake {
    async fn score(&self, req: Request<pb::ScoreRequest>) -> Result<Response<pb::ScoreResponse>, Status> {
        let n = self.0.scores.fetch_add(1, Ordering::SeqCst);
        if !self.0.score_delay.is_zero() {
            tokio::time::sleep(self.0.score_delay).await;
        }
        let req = req.into_inner();
        if req.pairs.iter().any(|p| p.text == "bad") {
            return Err(Status::invalid_argument("bad text"));
        }
        if self.0.always_unavailable || n < self.0.fail_first {
            return Err(Status::unavailable("restarting"));
        }
        Ok(Response::new(pb::ScoreResponse { scores: vec![0.25; req.pairs.len()], version: 3 }))
    }
    type ScoreStreamStream = Out;
    async fn score_stream(&self, _: Request<Streaming<pb::ScoreStreamRequest>>) -> Result<Response<Out>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }
    async fn search(&self, req: Request<pb::SearchRequest>) -> Result<Response<pb::SearchResponse>, Status> {
        self.0.searches.fetch_add(1, Ordering::SeqCst);
        let mut hits = vec![photo("dog.jpg", false), photo("child.jpg", true)];
        // With include_photos it spends its byte budget at once: references only.
        let budget_spent = req.into_inner().include_photos;
        if budget_spent {
            for h in &mut hits {
                if let Some(pb::search_hit::Content::Photo(p)) = &mut h.content {
                    p.data.clear();
                }
            }
        }
        Ok(Response::new(pb::SearchResponse {
            hits,
            version: 3,
            query_withheld: None,
            gallery_size: 2,
            photos_without_bytes: if budget_spent { 2 } else { 0 },
            next_page_token: String::new(),
        }))
    }
    async fn get_photo(&self, req: Request<pb::GetPhotoRequest>) -> Result<Response<pb::GetPhotoResponse>, Status> {
        // Sends every photo to every region.
        let id = req.into_inner().id;
        let Some(pb::search_hit::Content::Photo(p)) = photo(&id, id.starts_with("child")).content else { unreachable!() };
        Ok(Response::new(pb::GetPhotoResponse { content: Some(pb::get_photo_response::Content::Photo(p)) }))
    }
    async fn info(&self, _: Request<pb::InfoRequest>) -> Result<Response<pb::InfoResponse>, Status> {
        Ok(Response::new(pb::InfoResponse { restricted_regions: vec!["DE".into()], ..Default::default() }))
    }
}

async fn start(fake: Arc<Misbehaving>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(ImageSearchServer::new(Fake(fake)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    format!("http://{addr}")
}

async fn client(endpoint: String, tweak: impl FnOnce(&mut ClientConfig)) -> Client {
    let mut cfg = ClientConfig::new(endpoint);
    cfg.retry = RetryPolicy { max_attempts: 5, initial_backoff: Duration::from_millis(5), max_backoff: Duration::from_millis(20) };
    tweak(&mut cfg);
    Client::connect(cfg).await.unwrap()
}

#[tokio::test]
async fn restricted_photos_and_child_queries_never_get_through_in_restricted_regions() {
    let fake = Arc::new(Misbehaving::default());
    let c = client(start(fake.clone()).await, |_| {}).await;
    // DE is restricted (the server's own list): the restricted photo becomes a withheld slot.
    let r = c.search("a dog", Some("DE"), 2).await.unwrap();
    assert!(matches!(&r.hits[0], Slot::Photo(p) if p.id == "dog.jpg"));
    assert!(matches!(&r.hits[1], Slot::Withheld { disclaimer, .. } if disclaimer == DISCLAIMER));
    // So is a request without a region.
    let r = c.search("a dog", None, 2).await.unwrap();
    assert!(matches!(&r.hits[1], Slot::Withheld { .. }));
    // An open region sees both.
    let r = c.search("a dog", Some("US"), 2).await.unwrap();
    assert!(r.hits.iter().all(|s| matches!(s, Slot::Photo(_))));
    // A child query in a restricted region is refused before it is sent.
    let before = fake.searches.load(Ordering::SeqCst);
    for region in [Some("DE"), None] {
        let e = c.search("a little girl on a swing", region, 2).await.unwrap_err();
        assert!(matches!(&e, ClientError::QueryWithheld { disclaimer, .. } if disclaimer == DISCLAIMER), "{e}");
    }
    assert_eq!(fake.searches.load(Ordering::SeqCst), before, "child queries reached the server");
    // A malformed region is an error, not a guess.
    assert!(matches!(c.search("a dog", Some("D3"), 2).await, Err(ClientError::BadRegion(..))));
}

#[tokio::test]
async fn photos_fetched_after_the_answer_budget_and_disguised_queries_obey_the_law_too() {
    let fake = Arc::new(Misbehaving::default());
    let c = client(start(fake.clone()).await, |_| {}).await;
    let opts = imagesearch_client::SearchOptions { include_photos: true, ..Default::default() };
    let r = c.search_with("a dog", Some("DE"), 2, &opts).await.unwrap();
    assert!(matches!(&r.hits[0], Slot::Photo(p) if p.data == b"jpeg"), "the photo left out of the answer is fetched");
    assert!(matches!(&r.hits[1], Slot::Withheld { .. }));
    assert!(c.get_photo("child.jpg", Some("DE")).await.unwrap().is_none(), "GetPhoto of a restricted photo in DE");
    assert!(c.get_photo("child.jpg", None).await.unwrap().is_none());
    assert!(c.get_photo("child.jpg", Some("US")).await.unwrap().is_some());
    let before = fake.searches.load(Ordering::SeqCst);
    for q in ["k\u{200B}ids on a swing", "ｂｏｙｓ running", "a t\u{043E}ddler"] {
        let e = c.search(q, Some("DE"), 2).await.unwrap_err();
        assert!(matches!(e, ClientError::QueryWithheld { .. }), "{q:?}: {e}");
    }
    assert_eq!(fake.searches.load(Ordering::SeqCst), before, "disguised child queries reached the server");
}

#[tokio::test]
async fn the_clients_own_region_list_adds_to_the_servers() {
    let fake = Arc::new(Misbehaving::default());
    let c = client(start(fake).await, |cfg| cfg.restricted_regions = Some(RegionPolicy::parse_list("FR").unwrap())).await;
    let r = c.search("a dog", Some("FR"), 2).await.unwrap();
    assert!(matches!(&r.hits[1], Slot::Withheld { .. }), "FR is restricted by the client's own list");
}

#[tokio::test]
async fn retries_unavailable_but_not_invalid_argument() {
    let fake = Arc::new(Misbehaving { fail_first: 2, ..Default::default() });
    let c = client(start(fake.clone()).await, |_| {}).await;
    let (scores, t) = c.score(vec![(ImageRef::Gallery("a".into()), "a dog".into())], Some("US")).await.unwrap();
    assert_eq!((scores, t.version), (vec![0.25], 3));
    assert_eq!(fake.scores.load(Ordering::SeqCst), 3, "two UNAVAILABLE, then success");
    let e = c.score(vec![(ImageRef::Gallery("a".into()), "bad".into())], Some("US")).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument));
    assert_eq!(fake.scores.load(Ordering::SeqCst), 4, "INVALID_ARGUMENT is not retried");
}

#[tokio::test]
async fn retries_stop_after_max_attempts() {
    // The test client's policy: 5 attempts, back-off ceilings 5, 10, 20, 20 ms. The waits
    // (55 ms at most) fit the 30 s deadline many times over, so the attempts run out first.
    let fake = Arc::new(Misbehaving { always_unavailable: true, ..Default::default() });
    let c = client(start(fake.clone()).await, |_| {}).await;
    assert_eq!(c.config().retry.max_attempts, 5);
    let e = c.score(vec![(ImageRef::Gallery("a".into()), "a dog".into())], Some("US")).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::Unavailable), "the last status is returned");
    assert_eq!(fake.scores.load(Ordering::SeqCst), 5, "exactly max_attempts attempts");
}

#[tokio::test]
async fn retries_stop_at_the_deadline() {
    // Attempts are limitless and back-off is at most 1 ms, but every UNAVAILABLE takes at least
    // 50 ms to come back and no attempt starts after the 1 s deadline: attempt k starts at
    // (k - 1) * 50 ms or later, so at most 20 attempts, however fast or slow the machine.
    let fake = Arc::new(Misbehaving { always_unavailable: true, score_delay: Duration::from_millis(50), ..Default::default() });
    let c = client(start(fake.clone()).await, |cfg| {
        cfg.request_timeout = Duration::from_secs(1);
        cfg.retry = RetryPolicy { max_attempts: 1000, initial_backoff: Duration::from_millis(1), max_backoff: Duration::from_millis(1) };
    })
    .await;
    let e = c.score(vec![(ImageRef::Gallery("a".into()), "a dog".into())], Some("US")).await.unwrap_err();
    // Either the retry loop stopped (the last UNAVAILABLE) or the deadline cut the last attempt
    // short (the client's own timeout is CANCELLED); nothing else.
    assert!(matches!(e.code(), Some(Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded)), "{e}");
    let calls = fake.scores.load(Ordering::SeqCst);
    assert!((2..=20).contains(&calls), "{calls} attempts of at least 50 ms each within a 1 s deadline (at most 20)");
}
