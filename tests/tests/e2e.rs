//! The real server, client library and CLI over loopback, on tiny scorer versions trained by
//! the real trainer on a subset of the real data: every RPC, every client-caused error,
//! the law in restricted and open regions, restarts and `kill -9`, and
//! reflection through tonic's client and an independent one (Python's grpcio-reflection).
//!
//! The tests that only read share one server ([`shared`]); those that change a gallery, a
//! rollout or the server's flags start their own.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use imagesearch_client::{score_request, ClientError, ImageRef, SearchOptions, SearchResults, Slot};
use imagesearch_proto::metadata::{AUTHORIZATION, INFERENCE_US, REQUEST_ID};
use imagesearch_proto::v1 as pb;
use imagesearch_proto::DISCLAIMER;
use imagesearch_tests::{bin, captioned_photos, png_header_claiming, test_photos, trained_repository, venv_python, Server, ADMIN_TOKEN, WRITER_TOKEN};
use tonic::Code;
use imagesearch_tests::{add_requests, status_code as code};

/// Two tiny versions (1 and 2), trained once for the whole test binary.
fn repo() -> PathBuf {
    static REPO: OnceLock<tempfile::TempDir> = OnceLock::new();
    REPO.get_or_init(|| trained_repository(2)).path().join("models")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}



/// The ids of the photos a search shows.
fn shown_ids(r: &SearchResults) -> HashSet<String> {
    r.hits.iter().filter_map(|s| match s { Slot::Photo(p) => Some(p.id.clone()), Slot::Withheld { .. } => None }).collect()
}

fn ids(photos: &[(String, Vec<u8>)]) -> HashSet<String> {
    photos.iter().map(|(id, _)| id.clone()).collect()
}

/// The services every reflection API must list.
const SERVICES: [&str; 4] = ["imagesearch.v1.ImageSearch", "imagesearch.v1.Gallery", "imagesearch.v1.ModelAdmin", "grpc.health.v1.Health"];

/// Limits of the shared server, off their defaults, so that `Info` shows the flags are read.
const SHARED_FLAGS: [&str; 12] = [
    "--max-batch-size", "16", "--queue-capacity", "128", "--max-pairs-per-request", "8", "--max-text-chars", "300",
    "--max-image-pixels", "30000000", "--max-k", "50",
];

/// One server for the tests that only read: versions 1 and 2 in the repository (2 serves, the
/// newest by default), restricted regions DE and FR, and a gallery of 10 photos: 6 test photos
/// without captions, 2 whose captions describe a child, 2 whose captions do not. No test
/// changes its gallery or its rollout.
struct Shared {
    server: Server,
    /// The 6 photos without captions.
    photos: Vec<(String, Vec<u8>)>,
    /// The 2 photos whose captions describe a child.
    kids: Vec<(String, Vec<u8>, Vec<String>)>,
    /// Every photo of the gallery, by id and bytes.
    gallery: Vec<(String, Vec<u8>)>,
    _data: tempfile::TempDir,
}

/// The shared server, started (and its gallery filled) by the first test that asks for it. Call
/// it outside a runtime: it runs one of its own while it starts the server.
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let data = tempfile::tempdir().unwrap();
        let mut server = Server::start(&repo(), &data.path().join("srv"), &SHARED_FLAGS);
        let photos = test_photos(6);
        let (kids, adults) = captioned_photos(2);
        assert_eq!((kids.len(), adults.len()), (2, 2), "captioned photos of the data subset");
        let mut adds = add_requests(&photos);
        for (id, data, caps) in kids.iter().chain(adults.iter()) {
            adds.push(pb::AddPhotoRequest { id: id.clone(), data: data.clone(), captions: caps.clone(), ..Default::default() });
        }
        let gallery: Vec<(String, Vec<u8>)> = adds.iter().map(|a| (a.id.clone(), a.data.clone())).collect();
        rt().block_on(async {
            let c = server.ready_client().await;
            let added = c.add_photos(adds).await.unwrap();
            assert_eq!((added.added, added.replaced, added.rejected.len()), (10, 0, 0), "{added:?}");
        });
        // A static is never dropped: the server is killed (and its files removed) when this
        // test binary exits.
        server.stop_when_this_process_exits(&[data.path()]);
        Shared { server, photos, kids, gallery, _data: data }
    })
}

#[test]
fn info_names_the_device_the_newest_version_the_regions_and_the_configured_limits() {
    let s = shared();
    rt().block_on(async {
        let info = s.server.client().await.info().await.unwrap();
        assert_eq!(info.device, "cpu");
        assert_eq!((info.image_views.as_str(), info.index_views.as_str(), info.text_encoder_device.as_str()), ("original", "both", "cpu"));
        assert_eq!(info.versions.iter().map(|v| v.version).collect::<Vec<_>>(), vec![2], "newest version by default");
        assert_eq!(info.restricted_regions, vec!["DE", "FR"]);
        let l = info.limits.unwrap();
        assert_eq!(
            (l.max_batch_size, l.queue_capacity, l.max_pairs_per_request, l.max_text_chars, l.max_image_pixels, l.max_k),
            (16, 128, 8, 300, 30_000_000, 50),
            "{l:?}"
        );
    });
}

#[test]
fn gallery_stats_count_the_photos_and_each_kind_of_restriction() {
    let s = shared();
    rt().block_on(async {
        let stats = s.server.client().await.gallery_stats().await.unwrap();
        assert_eq!(stats.photos, 10, "{stats:?}");
        // Two photos have captions with a child word; the version's query detector reads every
        // caption too and may restrict more (it fails closed), never fewer.
        assert!((2..=4).contains(&stats.restricted_by_captions), "{stats:?}");
        assert_eq!(
            stats.restricted,
            stats.restricted_by_captions + stats.restricted_by_detector + stats.restricted_unverified + stats.restricted_by_review,
            "restricted is the sum of its kinds: {stats:?}"
        );
        assert_eq!((stats.restricted_by_review, stats.cleared_by_review), (0, 0), "no review was made: {stats:?}");
    });
}

#[test]
fn scores_are_probabilities_named_by_their_version_and_the_same_by_bytes_by_id_and_from_the_cache() {
    let s = shared();
    let photos = &s.photos;
    rt().block_on(async {
        let c = s.server.client().await;
        let (scores, t) = c
            .score(vec![(ImageRef::Bytes(photos[0].1.clone()), "a dog runs on grass".into()), (ImageRef::Gallery(photos[1].0.clone()), "a man on a bike".into())], Some("US"))
            .await
            .unwrap();
        assert_eq!(scores.len(), 2);
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)), "{scores:?}");
        assert_eq!(t.version, 2);
        // The same photo named by its gallery id scores as its bytes do.
        let (by_id, _) = c.score(vec![(ImageRef::Gallery(photos[0].0.clone()), "a dog runs on grass".into())], Some("US")).await.unwrap();
        // (The gallery encoded it in a batch of several photos, Score alone: the encoder's float
        // results differ in the last digits, and a steep calibration slope carries that into
        // the fourth decimal of the score.)
        assert!((by_id[0] - scores[0]).abs() < 1e-3, "{} by id, {} by bytes", by_id[0], scores[0]);
        // The same pair scored again (now from the cache) gives the same score.
        let (again, _) = c.score(vec![(ImageRef::Bytes(photos[0].1.clone()), "a dog runs on grass".into())], Some("US")).await.unwrap();
        assert!((again[0] - scores[0]).abs() < 1e-5, "{} again, {} first", again[0], scores[0]);
    });
}

#[test]
fn score_stream_gives_each_request_its_own_answer() {
    let s = shared();
    rt().block_on(async {
        let c = s.server.client().await;
        // Requests of 1 to 4 pairs: an answer given to another request has the wrong length,
        // whatever the scores.
        let reqs: Vec<pb::ScoreRequest> = (0..12usize)
            .map(|i| {
                let pairs = (0..=i % 4).map(|j| (ImageRef::Gallery(s.photos[(i + j) % 6].0.clone()), format!("photo number {i}, pair {j}"))).collect();
                score_request(pairs, Some("US"), 0, "")
            })
            .collect();
        let answers = c.score_stream(reqs.clone(), 4).await.unwrap();
        assert_eq!(answers.len(), 12);
        for (i, a) in answers.iter().enumerate() {
            let a = a.as_ref().unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(a.scores.len(), i % 4 + 1, "answer {i} has the length of another request's");
            let (single, _) = c.score_request(reqs[i].clone()).await.unwrap();
            for (x, y) in a.scores.iter().zip(&single.scores) {
                assert!((x - y).abs() < 1e-5, "answer {i}: {x} in the stream, {y} alone");
            }
        }
    });
}

#[test]
fn an_open_region_sees_every_photo_with_its_bytes_ranked_best_first() {
    let s = shared();
    rt().block_on(async {
        let c = s.server.client().await;
        let opts = SearchOptions { include_photos: true, ..Default::default() };
        let open = c.search_with("a person outdoors", Some("US"), 10, &opts).await.unwrap();
        assert_eq!((open.hits.len(), open.version, open.gallery_size), (10, 2, 10));
        assert_eq!(shown_ids(&open), ids(&s.gallery), "open regions see every photo");
        for (i, slot) in open.hits.iter().enumerate() {
            let Slot::Photo(p) = slot else { panic!("withheld in an open region: {slot:?}") };
            assert_eq!(p.rank as usize, i + 1);
            assert_eq!(p.reference, format!("gallery:{}", p.id));
            let want = &s.gallery.iter().find(|(id, _)| *id == p.id).unwrap().1;
            assert!(p.data == *want, "{}: {} bytes sent, {} stored", p.id, p.data.len(), want.len());
        }
        let scores: Vec<f32> = open.hits.iter().map(|s| match s { Slot::Photo(p) => p.score, Slot::Withheld { score, .. } => *score }).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "ranked best first: {scores:?}");
    });
}

#[test]
fn restricted_and_missing_regions_see_the_disclaimer_in_place_of_each_restricted_photo() {
    let s = shared();
    rt().block_on(async {
        let c = s.server.client().await;
        let restricted = c.gallery_stats().await.unwrap().restricted;
        assert!(restricted >= 2, "the two photos whose captions describe a child are restricted ({restricted})");
        // DE, no region (fail closed) and FR written loosely.
        for region in [Some("DE"), None, Some(" fr ")] {
            let r = c.search("a person outdoors", region, 10).await.unwrap();
            assert_eq!(r.hits.len(), 10, "{region:?}");
            let shown = shown_ids(&r);
            for (kid, _, _) in &s.kids {
                assert!(!shown.contains(kid), "child photo {kid} shown in {region:?}");
            }
            let disclaimers: Vec<&str> =
                r.hits.iter().filter_map(|h| match h { Slot::Withheld { disclaimer, .. } => Some(disclaimer.as_str()), Slot::Photo(_) => None }).collect();
            assert_eq!(disclaimers.len() as u64, restricted, "{region:?}: every restricted photo, and only those, withheld");
            assert!(disclaimers.iter().all(|d| *d == DISCLAIMER), "{region:?}: {disclaimers:?}");
        }
    });
}

#[test]
fn the_server_itself_withholds_a_child_query_unless_the_region_is_open() {
    let s = shared();
    rt().block_on(async {
        // A raw call, past the client's own check.
        let mut raw = pb::image_search_client::ImageSearchClient::connect(s.server.endpoint()).await.unwrap();
        let child_query = |region: Option<&str>| pb::SearchRequest {
            query: "a little girl in a pink dress".into(),
            k: 5,
            routing: region.map(|r| pb::Routing { region: r.into(), ..Default::default() }),
            ..Default::default()
        };
        let r = raw.search(child_query(Some("DE"))).await.unwrap();
        for key in [INFERENCE_US, REQUEST_ID] {
            assert!(r.metadata().get(key).is_some(), "{key} missing on the answer");
        }
        let r = r.into_inner();
        assert!(r.hits.is_empty(), "{r:?}");
        assert_eq!(r.query_withheld.unwrap().disclaimer, DISCLAIMER);
        let none = raw.search(child_query(None)).await.unwrap().into_inner();
        assert!(none.hits.is_empty() && none.query_withheld.is_some_and(|w| w.disclaimer == DISCLAIMER), "a missing region is restricted");
        let us = raw.search(child_query(Some("US"))).await.unwrap().into_inner();
        assert!(us.query_withheld.is_none(), "{us:?}");
        assert_eq!(us.hits.len(), 5, "an open region answers child queries");
    });
}

#[test]
fn child_texts_are_refused_by_the_client_before_sending_and_by_the_server_when_scored() {
    let s = shared();
    rt().block_on(async {
        let c = s.server.client().await;
        match c.search("two kids on a slide", Some("DE"), 3).await {
            Err(ClientError::QueryWithheld { disclaimer, .. }) => assert_eq!(disclaimer, DISCLAIMER),
            other => panic!("the client sent a child query in DE: {other:?}"),
        }
        let e = c.score(vec![(ImageRef::Gallery(s.photos[0].0.clone()), "a boy with a ball".into())], Some("DE")).await.unwrap_err();
        assert_eq!(code(&e), Code::PermissionDenied, "{e}");
        assert!(e.to_string().contains("describes a child"), "{e}");
    });
}

#[test]
fn get_photo_withholds_a_child_photo_in_a_restricted_region_and_sends_it_flagged_to_an_open_one() {
    let s = shared();
    rt().block_on(async {
        let mut raw = pb::image_search_client::ImageSearchClient::connect(s.server.endpoint()).await.unwrap();
        let get = |id: &str, region: &str| pb::GetPhotoRequest { id: id.into(), routing: Some(pb::Routing { region: region.into(), ..Default::default() }) };
        let (kid_id, kid_bytes, _) = &s.kids[0];
        let de = raw.get_photo(get(kid_id, "DE")).await.unwrap().into_inner();
        assert!(matches!(&de.content, Some(pb::get_photo_response::Content::Withheld(w)) if w.disclaimer == DISCLAIMER), "{de:?}");
        let us = raw.get_photo(get(kid_id, "US")).await.unwrap().into_inner();
        let Some(pb::get_photo_response::Content::Photo(p)) = us.content else { panic!("{kid_id} not sent to US") };
        assert_eq!((p.id.as_str(), p.restricted), (kid_id.as_str(), true));
        assert!(p.data == *kid_bytes, "{kid_id}: other bytes sent");
    });
}

#[test]
fn health_reports_the_server_and_each_service_serving() {
    let s = shared();
    rt().block_on(async {
        let c = s.server.client().await;
        for service in ["", "imagesearch.v1.ImageSearch", "imagesearch.v1.Gallery"] {
            assert_eq!(c.health(service).await.unwrap(), 1, "{service:?} is not SERVING");
        }
    });
}

/// The services a server lists through reflection API `$api` (`v1` or `v1alpha`), asked with
/// tonic's reflection client.
macro_rules! reflection_services {
    ($api:ident, $endpoint:expr) => {{
        use tonic_reflection::pb::$api::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$api::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$api::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::$api::ServerReflectionRequest;
        let channel = tonic::transport::Endpoint::from_shared($endpoint).unwrap().connect().await.unwrap();
        let mut client = ServerReflectionClient::new(channel);
        let req = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
        let mut answers = client.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
        let answer = answers.message().await.unwrap().expect("no reflection answer");
        match answer.message_response {
            Some(MessageResponse::ListServicesResponse(l)) => l.service.into_iter().map(|s| s.name).collect::<Vec<String>>(),
            other => panic!("unexpected {} reflection answer {other:?}", stringify!($api)),
        }
    }};
}

#[test]
fn reflection_lists_every_service_through_v1_and_v1alpha() {
    let s = shared();
    rt().block_on(async {
        let v1 = reflection_services!(v1, s.server.endpoint());
        let v1alpha = reflection_services!(v1alpha, s.server.endpoint());
        for (api, listed) in [("v1", v1), ("v1alpha", v1alpha)] {
            for service in SERVICES {
                assert!(listed.iter().any(|l| l == service), "{service} not listed through {api}: {listed:?}");
            }
        }
    });
}

/// An independent implementation: Python's grpcio-reflection client (`tests/python/reflect.py`,
/// run by the venv's Python, which `scripts/setup.sh` gives grpcio and grpcio-reflection).
#[test]
fn reflection_serves_an_independent_client_through_v1_and_v1alpha() {
    let s = shared();
    let python = venv_python();
    assert!(python.is_file(), "{} missing: run scripts/setup.sh (or set IMAGESEARCH_PYTHON)", python.display());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/reflect.py");
    for api in ["v1alpha", "v1"] {
        let out = std::process::Command::new(&python)
            .arg(&script)
            .arg(format!("127.0.0.1:{}", s.server.port))
            .arg(api)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "reflect.py {api} failed ({}; no grpcio-reflection in the venv? run scripts/setup.sh):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("reflect.py {api}: {e}:\n{}", String::from_utf8_lossy(&out.stdout)));
        let strings = |key: &str| -> Vec<String> {
            v[key].as_array().unwrap_or_else(|| panic!("{api}: no {key} in {v}")).iter().map(|x| x.as_str().unwrap().to_string()).collect()
        };
        let listed = strings("services");
        for service in SERVICES {
            assert!(listed.iter().any(|l| l == service), "{service} not listed through {api}: {listed:?}");
        }
        assert_eq!(v["file"], "imagesearch/v1/service.proto", "{api}: the file defining imagesearch.v1.ImageSearch: {v}");
        let methods = strings("methods");
        for method in ["Score", "ScoreStream", "Search", "GetPhoto", "Info"] {
            assert!(methods.iter().any(|m| m == method), "{api}: ImageSearch.{method} not described: {methods:?}");
        }
    }
}

#[test]
fn adding_replacing_and_removing_photos_changes_what_search_finds_and_sigterm_stops_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(&repo(), &data.path().join("srv"), &[]);
    let photos = test_photos(4);
    rt().block_on(async {
        let c = server.ready_client().await;
        let added = c.add_photos(add_requests(&photos)).await.unwrap();
        assert_eq!((added.added, added.replaced, added.rejected.len()), (4, 0, 0), "{added:?}");
        let again = c.add_photos(add_requests(&photos[..1])).await.unwrap();
        assert_eq!((again.added, again.replaced), (0, 1), "the same id again replaces: {again:?}");
        let r = c.remove_photos(vec![photos[3].0.clone(), "no-such.jpg".into()]).await.unwrap();
        assert_eq!((r.removed, r.not_found), (1, vec!["no-such.jpg".to_string()]));
        assert_eq!(c.gallery_stats().await.unwrap().photos, 3);
        let after = c.search("a person outdoors", Some("US"), 20).await.unwrap();
        assert_eq!(after.hits.len(), 3);
        assert_eq!(shown_ids(&after), ids(&photos[..3]));
        assert_eq!(code(&c.get_photo(&photos[3].0, Some("US")).await.unwrap_err()), Code::NotFound);
    });
    // Graceful stop on SIGTERM.
    let status = server.terminate();
    assert!(status.success(), "{status}");
}

#[test]
fn every_bad_input_gets_a_precise_status_and_the_server_keeps_serving() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(&repo(), &data.path().join("srv"), &["--max-pairs-per-request", "4", "--max-text-chars", "200"]);
    rt().block_on(async {
        let c = server.ready_client().await;
        let photo = test_photos(1).remove(0).1;
        let score = |img: Vec<u8>, text: &str| vec![(ImageRef::Bytes(img), text.to_string())];
        let cases: Vec<(&str, Result<(Vec<f32>, imagesearch_client::ServerTimings), ClientError>, Code, &str)> = vec![
            ("corrupt", c.score(score(b"not an image at all".to_vec(), "a dog"), Some("US")).await, Code::InvalidArgument, "not recognised"),
            ("truncated", c.score(score(photo[..photo.len() / 3].to_vec(), "a dog"), Some("US")).await, Code::InvalidArgument, "corrupt or truncated"),
            ("bomb", c.score(score(png_header_claiming(50_000, 50_000), "a dog"), Some("US")).await, Code::InvalidArgument, "50000x50000"),
            ("empty image", c.score(score(vec![], "a dog"), Some("US")).await, Code::InvalidArgument, "empty"),
            ("empty text", c.score(score(photo.clone(), "   "), Some("US")).await, Code::InvalidArgument, "empty"),
            ("long text", c.score(score(photo.clone(), &"word ".repeat(100)), Some("US")).await, Code::InvalidArgument, "200"),
            ("bad region", c.score(score(photo.clone(), "a dog"), Some("DEU")).await, Code::InvalidArgument, "DEU"),
            ("no pairs", c.score(vec![], Some("US")).await, Code::InvalidArgument, "no pairs"),
            ("too many pairs", c.score((0..5).map(|_| (ImageRef::Bytes(photo.clone()), "a dog".to_string())).collect(), Some("US")).await, Code::InvalidArgument, "limit of 4"),
            ("unknown gallery id", c.score(vec![(ImageRef::Gallery("nope.jpg".into()), "a dog".into())], Some("US")).await, Code::NotFound, "nope.jpg"),
        ];
        for (name, result, want, says) in cases {
            let e = result.expect_err(name);
            assert_eq!(code(&e), want, "{name}: {e}");
            assert!(e.to_string().contains(says), "{name}: '{e}' does not say '{says}'");
            c.info().await.expect("still serving");
        }
        // Unknown version: NOT_FOUND.
        let e = c.score_request(score_request(score(photo.clone(), "a dog"), Some("US"), 99, "")).await.unwrap_err();
        assert_eq!(code(&e), Code::NotFound);
        // Search: bad k, bad region.
        let mut raw = pb::image_search_client::ImageSearchClient::connect(server.endpoint()).await.unwrap();
        let s = raw.search(pb::SearchRequest { query: "a dog".into(), k: 0, routing: None, ..Default::default() }).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument);
        let s = raw
            .search(pb::SearchRequest { query: "a dog".into(), k: 3, routing: Some(pb::Routing { region: "Germany".into(), ..Default::default() }), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument);
        // Gallery: a corrupt photo is rejected by name, the good one stored.
        let r = c
            .add_photos(vec![
                pb::AddPhotoRequest { id: "good.jpg".into(), data: photo.clone(), captions: vec![], ..Default::default() },
                pb::AddPhotoRequest { id: "bad.jpg".into(), data: b"garbage".to_vec(), captions: vec![], ..Default::default() },
                pb::AddPhotoRequest { id: "bomb.png".into(), data: png_header_claiming(50_000, 50_000), captions: vec![], ..Default::default() },
            ])
            .await
            .unwrap();
        assert_eq!(r.added, 1);
        let rejected: Vec<&str> = r.rejected.iter().map(|x| x.id.as_str()).collect();
        assert_eq!(rejected.len(), 2, "{r:?}");
        assert!(rejected.contains(&"bad.jpg") && rejected.contains(&"bomb.png"));
        // Admin without a token, with a wrong one.
        let mut admin = pb::model_admin_client::ModelAdminClient::connect(server.endpoint()).await.unwrap();
        assert_eq!(admin.list_versions(pb::ListVersionsRequest {}).await.unwrap_err().code(), Code::Unauthenticated);
        let mut req = tonic::Request::new(pb::ListVersionsRequest {});
        req.metadata_mut().insert(AUTHORIZATION, "Bearer wrong".parse().unwrap());
        assert_eq!(admin.list_versions(req).await.unwrap_err().code(), Code::Unauthenticated);
        assert_eq!(c.list_versions().await.unwrap().len(), 2, "the admin token from the client works: both versions listed");
        c.info().await.expect("still serving");
    });
}

/// Photo files the server keeps in its data directory (`gallery/photos/<sha256>`; temporary files left
/// out): the bytes of every stored photo, and of photos staged by an add not yet acknowledged.
fn photo_files(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("gallery").join("photos"))
        .map(|d| d.filter_map(Result::ok).filter(|e| !e.file_name().to_string_lossy().contains('.')).count())
        .unwrap_or(0)
}

/// How many different contents the photos have.
fn contents(photos: &[(String, Vec<u8>)]) -> usize {
    photos.iter().map(|(_, bytes)| bytes.as_slice()).collect::<HashSet<_>>().len()
}

#[test]
fn the_gallery_survives_restarts_and_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("srv");
    let photos = test_photos(12);
    let live = &photos[1..6];
    let mut server = Server::start(&repo(), &dir, &[]);
    rt().block_on(async {
        let c = server.ready_client().await;
        assert_eq!(c.add_photos(add_requests(&photos[..6])).await.unwrap().added, 6);
        assert_eq!(c.remove_photos(vec![photos[0].0.clone()]).await.unwrap().removed, 1);
        // Version 1 is not loaded: refused, nothing saved.
        assert_eq!(code(&c.set_rollout(2, 1, 50).await.unwrap_err()), Code::FailedPrecondition);
    });
    // Acknowledged writes survive kill -9.
    server.kill9();
    let mut server = Server::start(&repo(), &dir, &[]);
    rt().block_on(async {
        let c = server.ready_client().await;
        assert_eq!(c.gallery_stats().await.unwrap().photos, 5);
        assert_eq!(shown_ids(&c.search("a dog", Some("US"), 10).await.unwrap()), ids(live));
        let r = c.get_rollout().await.unwrap();
        assert_eq!((r.stable, r.canary, r.canary_percent), (2, 0, 0), "the refused rollout was kept");
        assert_eq!(photo_files(&dir), contents(live), "one photo file per stored content");
        // kill -9 in the middle of a large add. Its stream is left open (its end is never sent),
        // so the add cannot be acknowledged; the server is killed once it has written the bytes
        // of every photo of the stream to disk (staged, not yet in the gallery's log).
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        for i in 0..40 {
            tx.send(pb::AddPhotoRequest { id: format!("copy-{i}.jpg"), data: photos[6 + i % 6].1.clone(), captions: vec![], ..Default::default() }).await.unwrap();
        }
        let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        req.metadata_mut().insert(AUTHORIZATION, format!("Bearer {WRITER_TOKEN}").parse().unwrap());
        let mut gallery = pb::gallery_client::GalleryClient::connect(server.endpoint()).await.unwrap();
        let add = tokio::spawn(async move { gallery.add_photos(req).await });
        let staged = contents(&photos[1..]);
        let deadline = Instant::now() + Duration::from_secs(120);
        while photo_files(&dir) < staged {
            if add.is_finished() {
                let ended = add.await;
                panic!("the add ended before its stream did: {ended:?}");
            }
            assert!(Instant::now() < deadline, "{} of {staged} photo files after 120 s:\n{}", photo_files(&dir), server.log_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.kill9();
        assert!(add.await.unwrap().is_err(), "an add whose stream never ended was acknowledged");
        drop(tx);
    });
    // Nothing of the unacknowledged add is kept, not even its bytes.
    let mut server = Server::start(&repo(), &dir, &[]);
    rt().block_on(async {
        let c = server.ready_client().await;
        assert_eq!(c.gallery_stats().await.unwrap().photos, 5, "photos after a kill -9 during an unacknowledged add of 40");
        assert_eq!(shown_ids(&c.search("a dog", Some("US"), 10).await.unwrap()), ids(live));
        assert_eq!(photo_files(&dir), contents(live), "the unacknowledged add's photo files were not removed at start");
        // An acknowledged add after the crash.
        assert_eq!(c.add_photos(add_requests(&photos[6..8])).await.unwrap().added, 2);
        assert_eq!(c.gallery_stats().await.unwrap().photos, 7);
    });
    // A clean stop (SIGTERM) and a restart keep exactly those 7.
    assert!(server.terminate().success());
    let mut server = Server::start(&repo(), &dir, &[]);
    rt().block_on(async {
        let c = server.ready_client().await;
        assert_eq!(c.gallery_stats().await.unwrap().photos, 7);
        assert_eq!(shown_ids(&c.search("a dog", Some("US"), 10).await.unwrap()), ids(&photos[1..8]));
    });
}

#[test]
fn the_cli_works_against_a_real_server() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(&repo(), &data.path().join("srv"), &[]);
    rt().block_on(async { server.ready_client().await });
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(bin("imagesearch"))
            .args(["--endpoint", &server.endpoint(), "--admin-token", ADMIN_TOKEN, "--writer-token", WRITER_TOKEN])
            .args(args)
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let photos_dir = data.path().join("photos");
    std::fs::create_dir_all(&photos_dir).unwrap();
    for (id, bytes) in test_photos(5) {
        std::fs::write(photos_dir.join(id), bytes).unwrap();
    }
    std::fs::write(photos_dir.join("broken.jpg"), b"nope").unwrap();
    let (ok, out, err) = cli(&["--json", "gallery", "add", photos_dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["added"], 5);
    assert_eq!(v["rejected"][0]["id"], "broken.jpg");
    let (ok, out, _) = cli(&["health"]);
    assert!(ok && out.trim() == "SERVING");
    let html = data.path().join("page.html");
    let (ok, out, err) = cli(&["--json", "search", "a dog on the grass", "--region", "US", "-k", "3", "--html", html.to_str().unwrap()]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["hits"].as_array().unwrap().len(), 3);
    assert!(std::fs::read_to_string(&html).unwrap().contains("data:image/jpeg;base64,"));
    // A restricted region: a search runs; a child query shows only the disclaimer.
    let (ok, _, _) = cli(&["search", "a dog on the grass", "--region", "DE", "-k", "2"]);
    assert!(ok);
    let (ok, out2, _) = cli(&["search", "a small boy", "--region", "DE"]);
    assert!(ok && out2.contains(DISCLAIMER), "{out2}");
    let first = std::fs::read_dir(&photos_dir).unwrap().filter_map(Result::ok).map(|e| e.path()).find(|p| !p.ends_with("broken.jpg")).unwrap();
    let (ok, out, err) = cli(&["--json", "score", "--image", first.to_str().unwrap(), "--text", "a dog", "--region", "US"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["version"], 2);
    let (ok, out, _) = cli(&["--json", "models", "list"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    let (ok, _, err) = cli(&["models", "load", "1"]);
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&["models", "rollout", "--stable", "2", "--canary", "1", "--percent", "10"]);
    assert!(ok && out.contains("canary 1 at 10%"), "{out}{err}");
    let (ok, _, err) = cli(&["models", "unload", "2"]);
    assert!(!ok && err.contains("FailedPrecondition"), "{err}");
    let (ok, out, _) = cli(&["policy", "--restricted", "DE", "--region", "DE", "a toddler"]);
    assert!(ok && out.starts_with("blocked"));
    // A load test through the CLI: counts add up, the version that served is reported.
    let (ok, out, err) = cli(&["--json", "loadtest", "--data", imagesearch_tests::shared_data().join("image_search").to_str().unwrap(),
        "--concurrency", "2", "--requests", "12", "--warmup-s", "0", "--mix", "score=1,stream=1,search=1"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // The load test's region is US by default: a healthy server answers every request.
    assert_eq!(v["ok"].as_u64(), Some(12), "{v}");
    assert!(v["errors"].as_object().unwrap().is_empty(), "{v}");
    assert!(v["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn score_and_gallery_views_are_set_apart_and_share_the_encoder() {
    let data = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", imagesearch_tests::free_port());
    // Two views for Score, fourteen (crops) for gallery photos.
    let mut server = Server::start(&repo(), &data.path().join("srv"), &["--image-views", "both", "--index-views", "crops", "--metrics-listen", &metrics]);
    // Image-cache lookups that found a vector, and that did not.
    let lookups = || {
        let (_, body) = imagesearch_tests::http::get(&metrics, "/metrics").unwrap();
        let count = |outcome: &str| -> u64 {
            body.lines()
                .find(|l| l.starts_with("imagesearch_cache_lookups_total{") && l.contains("cache=\"image\"") && l.contains(&format!("outcome=\"{outcome}\"")))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .map_or(0, |v| v as u64)
        };
        (count("hit"), count("miss"))
    };
    rt().block_on(async {
        let c = server.ready_client().await;
        let info = c.info().await.unwrap();
        assert_eq!((info.image_views.as_str(), info.index_views.as_str()), ("both", "crops"));
        let photos = test_photos(3);
        // Adds and Scores at once: photos with one view and with two share encoder passes.
        let score = c.score(vec![(ImageRef::Bytes(photos[0].1.clone()), "a dog".into())], Some("US"));
        let (added, scored) = tokio::join!(c.add_photos(add_requests(&photos)), score);
        assert_eq!(added.unwrap().added, 3);
        assert!((0.0..=1.0).contains(&scored.unwrap().0[0]));
        // A photo the gallery encoded with fourteen views is not served to Score (two views) from the
        // cache: a miss and a fresh encoding, then a hit under Score's own views.
        let before = lookups();
        let (first, _) = c.score(vec![(ImageRef::Bytes(photos[1].1.clone()), "a dog".into())], Some("US")).await.unwrap();
        let after_first = lookups();
        assert_eq!((after_first.0 - before.0, after_first.1 - before.1), (0, 1), "the gallery's crops vector was not reused");
        let (again, _) = c.score(vec![(ImageRef::Bytes(photos[1].1.clone()), "a dog".into())], Some("US")).await.unwrap();
        let after_again = lookups();
        assert_eq!(after_again.0 - after_first.0, 1, "Score's own vector is cached");
        assert_eq!(first, again);
        assert_eq!(c.search("a dog", Some("US"), 3).await.unwrap().hits.len(), 3);
    });
    let bad = std::process::Command::new(bin("imagesearch-server")).args(["--image-views", "mirror", "--check"]).output().unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("possible values: both, original"));
}
