//! The real server, client library and CLI over loopback, on tiny scorer versions trained by
//! the real trainer on a subset of the real data: every RPC, every client-caused error,
//! the law in restricted and open regions, rollout, failed loads, restarts and `kill -9`.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use imagesearch_client::{score_request, ClientError, ImageRef, SearchOptions, Slot};
use imagesearch_compliance::DISCLAIMER;
use imagesearch_proto::v1 as pb;
use imagesearch_tests::{bin, captioned_photos, png_header_claiming, test_photos, trained_repository, Server, ADMIN_TOKEN, WRITER_TOKEN};
use tonic::Code;

/// Two tiny versions (1 and 2), trained once for the whole test binary.
fn repo() -> PathBuf {
    static REPO: OnceLock<tempfile::TempDir> = OnceLock::new();
    REPO.get_or_init(|| trained_repository(2)).path().join("models")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

fn add_requests(photos: &[(String, Vec<u8>)]) -> Vec<pb::AddPhotoRequest> {
    photos.iter().map(|(id, data)| pb::AddPhotoRequest { id: id.clone(), data: data.clone(), captions: vec![] }).collect()
}

fn code(e: &ClientError) -> Code {
    e.code().unwrap_or_else(|| panic!("no status: {e}"))
}

#[test]
fn every_rpc_and_the_law_end_to_end() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(&repo(), &data.path().join("srv"), &[]);
    rt().block_on(async {
        let c = server.ready_client().await;
        let info = c.info().await.unwrap();
        assert_eq!(info.device, "cpu");
        assert_eq!((info.image_views.as_str(), info.text_encoder_device.as_str()), ("both", "cpu"));
        assert_eq!(info.versions.iter().map(|v| v.version).collect::<Vec<_>>(), vec![2], "newest version by default");
        assert_eq!(info.restricted_regions, vec!["DE", "FR"]);
        let limits = info.limits.unwrap();
        assert!(limits.max_batch_size > 0 && limits.max_text_chars > 0 && limits.max_image_pixels > 0 && limits.queue_capacity > 0);

        // Gallery: 6 test photos without captions, 2 with child captions, 2 with other captions.
        let photos = test_photos(6);
        let (kids, adults) = captioned_photos(2);
        let mut adds = add_requests(&photos);
        for (id, data, caps) in kids.iter().chain(adults.iter()) {
            adds.push(pb::AddPhotoRequest { id: id.clone(), data: data.clone(), captions: caps.clone() });
        }
        let added = c.add_photos(adds).await.unwrap();
        assert_eq!((added.added, added.replaced, added.rejected.len()), (10, 0, 0), "{added:?}");
        let stats = c.gallery_stats().await.unwrap();
        assert_eq!(stats.photos, 10);
        assert_eq!(stats.restricted_by_captions, 2);
        assert!(stats.restricted >= 2);

        // Score: bytes and gallery ids; scores in [0, 1]; the version is named.
        let (scores, t) = c
            .score(vec![(ImageRef::Bytes(photos[0].1.clone()), "a dog runs on grass".into()), (ImageRef::Gallery(photos[1].0.clone()), "a man on a bike".into())], Some("US"))
            .await
            .unwrap();
        assert_eq!(scores.len(), 2);
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
        assert_eq!(t.version, 2);
        // The same pair scored again (now from the cache) gives the same score.
        let (again, _) = c.score(vec![(ImageRef::Bytes(photos[0].1.clone()), "a dog runs on grass".into())], Some("US")).await.unwrap();
        assert!((again[0] - scores[0]).abs() < 1e-5);

        // ScoreStream: many requests in flight, answers matched by id.
        let reqs: Vec<_> = (0..12)
            .map(|i| score_request(vec![(ImageRef::Gallery(photos[i % 6].0.clone()), format!("photo number {i}"))], Some("US"), 0, ""))
            .collect();
        let answers = c.score_stream(reqs.clone(), 4).await.unwrap();
        assert_eq!(answers.len(), 12);
        for (i, a) in answers.iter().enumerate() {
            let a = a.as_ref().unwrap();
            let (single, _) = c.score_request(reqs[i].clone()).await.unwrap();
            assert!((a.scores[0] - single.scores[0]).abs() < 1e-5, "answer {i} belongs to request {i}");
        }

        // Search in an open region: photos; in a restricted region the child photos' slots
        // carry the disclaimer; without a region, the same (fail closed).
        let ids_open = |r: &imagesearch_client::SearchResults| -> Vec<String> {
            r.hits.iter().filter_map(|s| match s { Slot::Photo(p) => Some(p.id.clone()), _ => None }).collect()
        };
        let opts = SearchOptions { include_photos: true, ..Default::default() };
        let open = c.search_with("a person outdoors", Some("US"), 10, &opts).await.unwrap();
        assert_eq!(open.hits.len(), 10);
        assert_eq!(open.version, 2);
        assert!(ids_open(&open).contains(&kids[0].0), "open regions see every photo");
        if let Slot::Photo(p) = &open.hits[0] {
            assert!(!p.data.is_empty() && p.reference.starts_with("gallery:"));
        }
        let scores: Vec<f32> = open.hits.iter().map(|s| match s { Slot::Photo(p) => p.score, Slot::Withheld { score, .. } => *score }).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "ranked best first");
        for region in [Some("DE"), None, Some(" fr ")] {
            let r = c.search("a person outdoors", region, 10).await.unwrap();
            let shown = ids_open(&r);
            for (kid, _, _) in &kids {
                assert!(!shown.contains(kid), "child photo {kid} shown in {region:?}");
            }
            assert!(r.hits.iter().any(|s| matches!(s, Slot::Withheld { disclaimer, .. } if disclaimer == DISCLAIMER)));
        }
        // The server withholds a child query itself too (raw call, past the client's own check).
        let mut raw = pb::image_search_client::ImageSearchClient::connect(server.endpoint()).await.unwrap();
        let child_q = pb::SearchRequest { query: "a little girl in a pink dress".into(), k: 5, routing: Some(pb::Routing { region: "DE".into(), ..Default::default() }), include_photos: false };
        let r = raw.search(child_q.clone()).await.unwrap();
        assert!(r.metadata().get("x-inference-us").is_some() && r.metadata().get("x-request-id").is_some());
        let r = r.into_inner();
        assert!(r.hits.is_empty());
        assert_eq!(r.query_withheld.unwrap().disclaimer, DISCLAIMER);
        let mut no_region = child_q.clone();
        no_region.routing = None;
        assert!(raw.search(no_region).await.unwrap().into_inner().query_withheld.is_some(), "missing region is restricted");
        let mut us = child_q.clone();
        us.routing = Some(pb::Routing { region: "US".into(), ..Default::default() });
        assert_eq!(raw.search(us).await.unwrap().into_inner().hits.len(), 5, "open region answers child queries");
        // The client refuses the child query before sending it.
        assert!(matches!(c.search("two kids on a slide", Some("DE"), 3).await, Err(ClientError::QueryWithheld { .. })));
        // Score refuses a child text in a restricted region, with a reason.
        let e = c.score(vec![(ImageRef::Gallery(photos[0].0.clone()), "a boy with a ball".into())], Some("DE")).await.unwrap_err();
        assert_eq!(code(&e), Code::PermissionDenied);
        assert!(e.to_string().contains("describes a child"), "{e}");

        // GetPhoto under the same law.
        let get = |id: &str, region: &str| pb::GetPhotoRequest { id: id.into(), routing: Some(pb::Routing { region: region.into(), ..Default::default() }) };
        let kid = raw.get_photo(get(&kids[0].0, "DE")).await.unwrap().into_inner();
        assert!(matches!(kid.content, Some(pb::get_photo_response::Content::Withheld(_))));
        let kid = raw.get_photo(get(&kids[0].0, "US")).await.unwrap().into_inner();
        assert!(matches!(kid.content, Some(pb::get_photo_response::Content::Photo(p)) if p.data == kids[0].1 && p.restricted));

        // Remove.
        let r = c.remove_photos(vec![photos[5].0.clone(), "no-such.jpg".into()]).await.unwrap();
        assert_eq!((r.removed, r.not_found), (1, vec!["no-such.jpg".to_string()]));
        let after = c.search("a person outdoors", Some("US"), 20).await.unwrap();
        assert_eq!(after.hits.len(), 9);

        // Health per service and reflection through generic clients.
        assert_eq!(c.health("imagesearch.v1.ImageSearch").await.unwrap(), 1);
        assert_eq!(c.health("imagesearch.v1.Gallery").await.unwrap(), 1);
        let services = reflection_services(&server.endpoint()).await;
        for s in ["imagesearch.v1.ImageSearch", "imagesearch.v1.Gallery", "imagesearch.v1.ModelAdmin", "grpc.health.v1.Health"] {
            assert!(services.contains(&s.to_string()), "{s} not in {services:?}");
        }
    });
    // Graceful stop on SIGTERM.
    let status = server.terminate();
    assert!(status.success(), "{status}");
}

async fn reflection_services(endpoint: &str) -> Vec<String> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string()).unwrap().connect().await.unwrap();
    let mut c = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
    let mut stream = c.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
    let msg = stream.message().await.unwrap().unwrap();
    match msg.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => l.service.into_iter().map(|s| s.name).collect(),
        other => panic!("unexpected reflection answer {other:?}"),
    }
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
        let s = raw.search(pb::SearchRequest { query: "a dog".into(), k: 0, routing: None, include_photos: false }).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument);
        let s = raw
            .search(pb::SearchRequest { query: "a dog".into(), k: 3, routing: Some(pb::Routing { region: "Germany".into(), ..Default::default() }), include_photos: false })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument);
        // Gallery: a corrupt photo is rejected by name, the good one stored.
        let r = c
            .add_photos(vec![
                pb::AddPhotoRequest { id: "good.jpg".into(), data: photo.clone(), captions: vec![] },
                pb::AddPhotoRequest { id: "bad.jpg".into(), data: b"garbage".to_vec(), captions: vec![] },
                pb::AddPhotoRequest { id: "bomb.png".into(), data: png_header_claiming(50_000, 50_000), captions: vec![] },
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
        req.metadata_mut().insert("authorization", "Bearer wrong".parse().unwrap());
        assert_eq!(admin.list_versions(req).await.unwrap_err().code(), Code::Unauthenticated);
        assert!(!c.list_versions().await.unwrap().is_empty());
        c.info().await.expect("still serving");
    });
}

#[test]
fn rollout_is_sticky_and_a_failed_load_leaves_serving_untouched() {
    let data = tempfile::tempdir().unwrap();
    // A copy of the repository with a third, tampered version.
    let models = data.path().join("models");
    std::fs::create_dir_all(models.join("scorer")).unwrap();
    std::os::unix::fs::symlink(std::fs::canonicalize(repo().join("encoders")).unwrap(), models.join("encoders")).unwrap();
    for v in ["1", "2", "3"] {
        let src = repo().join("scorer").join(if v == "3" { "2" } else { v });
        let dst = models.join("scorer").join(v);
        std::fs::create_dir_all(&dst).unwrap();
        for f in std::fs::read_dir(&src).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), dst.join(f.file_name())).unwrap();
        }
    }
    let mut tampered = std::fs::read(models.join("scorer/3/text_tower.pt")).unwrap();
    let n = tampered.len();
    tampered[n / 2] ^= 1;
    std::fs::write(models.join("scorer/3/text_tower.pt"), tampered).unwrap();

    let mut server = Server::start(&models, &data.path().join("srv"), &["--versions", "1,2"]);
    rt().block_on(async {
        let c = server.ready_client().await;
        c.add_photos(add_requests(&test_photos(4))).await.unwrap();
        let r = c.get_rollout().await.unwrap();
        assert_eq!((r.stable, r.canary), (2, 0));
        // Pinned versions.
        for v in [1, 2] {
            let opts = SearchOptions { version: v, ..Default::default() };
            assert_eq!(c.search_with("a dog", Some("US"), 2, &opts).await.unwrap().version, v);
        }
        let e = c.search_with("a dog", Some("US"), 2, &SearchOptions { version: 7, ..Default::default() }).await.unwrap_err();
        assert_eq!(code(&e), Code::NotFound);
        // Canary 30%: sticky per key, about 30% of keys.
        c.set_rollout(2, 1, 30).await.unwrap();
        let mut on_canary = 0;
        for u in 0..60 {
            let opts = SearchOptions { routing_key: format!("user-{u}"), ..Default::default() };
            let first = c.search_with("a dog", Some("US"), 1, &opts).await.unwrap().version;
            let second = c.search_with("a cat", Some("US"), 1, &opts).await.unwrap().version;
            assert_eq!(first, second, "user-{u} saw two versions");
            on_canary += usize::from(first == 1);
        }
        assert!((6..=30).contains(&on_canary), "{on_canary} of 60 users on a 30% canary");
        // A tampered version fails to load and nothing that serves changes.
        let e = c.load_version(3).await.unwrap_err();
        assert!(e.to_string().contains("sha256"), "{e}");
        let list = c.list_versions().await.unwrap();
        let state = |v: u32| list.iter().find(|s| s.version == v).unwrap().clone();
        assert_eq!(state(3).state, pb::VersionState::Failed as i32);
        assert_eq!(state(2).role, "stable");
        assert_eq!(c.get_rollout().await.unwrap(), pb::Rollout { stable: 2, canary: 1, canary_percent: 30 });
        assert!(c.search("a dog", Some("US"), 2).await.is_ok());
        // A rollout naming a version that is not ready is refused; the stable cannot be unloaded.
        assert_eq!(code(&c.set_rollout(3, 0, 0).await.unwrap_err()), Code::FailedPrecondition);
        assert_eq!(code(&c.unload_version(2).await.unwrap_err()), Code::FailedPrecondition);
        // Promote 1, then unload 2.
        c.set_rollout(1, 0, 0).await.unwrap();
        c.unload_version(2).await.unwrap();
        assert_eq!(c.search("a dog", Some("US"), 2).await.unwrap().version, 1);
        let e = c.search_with("a dog", Some("US"), 2, &SearchOptions { version: 2, ..Default::default() }).await.unwrap_err();
        assert_eq!(code(&e), Code::NotFound);
        // Loading 2 again indexes the gallery for it.
        c.load_version(2).await.unwrap();
        let r = c.search_with("a dog", Some("US"), 4, &SearchOptions { version: 2, ..Default::default() }).await.unwrap();
        assert_eq!(r.hits.len(), 4);
    });
}

#[test]
fn the_gallery_survives_restarts_and_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("srv");
    let photos = test_photos(12);
    let mut server = Server::start(&repo(), &dir, &[]);
    rt().block_on(async {
        let c = server.ready_client().await;
        c.add_photos(add_requests(&photos[..6])).await.unwrap();
        c.remove_photos(vec![photos[0].0.clone()]).await.unwrap();
        c.set_rollout(2, 1, 50).await.unwrap_err(); // 1 is not loaded: refused, nothing saved
    });
    // Acknowledged writes survive kill -9.
    server.kill9();
    let mut server = Server::start(&repo(), &dir, &[]);
    rt().block_on(async {
        let c = server.ready_client().await;
        assert_eq!(c.gallery_stats().await.unwrap().photos, 5);
        let r = c.search("a dog", Some("US"), 10).await.unwrap();
        assert_eq!(r.hits.len(), 5);
        // Kill in the middle of a large add: whatever was not acknowledged may be lost, nothing
        // else, and the store opens cleanly.
        let big: Vec<_> = (0..40).map(|i| pb::AddPhotoRequest { id: format!("copy-{i}.jpg"), data: photos[6 + i % 6].1.clone(), captions: vec![] }).collect();
        let c2 = c.clone();
        let add = tokio::spawn(async move { c2.add_photos(big).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.kill9();
        assert!(add.await.unwrap().is_err(), "the add was not acknowledged");
    });
    let mut server = Server::start(&repo(), &dir, &[]);
    rt().block_on(async {
        let c = server.ready_client().await;
        let n = c.gallery_stats().await.unwrap().photos;
        assert!(n == 5 || n == 45, "{n} photos after a crash during an add of 40");
        let r = c.search("a dog", Some("US"), 5).await.unwrap();
        assert_eq!(r.hits.len(), 5);
        // And a clean restart keeps everything too.
    });
    assert!(server.terminate().success());
    let mut server = Server::start(&repo(), &dir, &[]);
    rt().block_on(async {
        let c = server.ready_client().await;
        let n = c.gallery_stats().await.unwrap().photos;
        assert!(n == 5 || n == 45);
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
    assert_eq!(v["ok"].as_u64().unwrap() + v["errors"].as_object().unwrap().values().map(|x| x.as_u64().unwrap()).sum::<u64>(), 12, "{v}");
    assert!(v["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn one_view_serving_scores_and_searches() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(&repo(), &data.path().join("srv"), &["--image-views", "original"]);
    rt().block_on(async {
        let c = server.ready_client().await;
        let photos = test_photos(3);
        assert_eq!(c.add_photos(add_requests(&photos)).await.unwrap().added, 3);
        let (scores, _) = c.score(vec![(ImageRef::Bytes(photos[0].1.clone()), "a dog".into())], Some("US")).await.unwrap();
        assert!((0.0..=1.0).contains(&scores[0]));
        assert_eq!(c.search("a dog", Some("US"), 3).await.unwrap().hits.len(), 3);
    });
    let bad = std::process::Command::new(bin("imagesearch-server")).args(["--image-views", "mirror", "--check"]).output().unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("use both or original"));
}
