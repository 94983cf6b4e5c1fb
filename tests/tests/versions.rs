//! Scorer versions on the real server: rollout and pinning, a failed load that leaves serving
//! untouched, and what a version's own files decide — its query and photo detectors (read
//! again over the stored captions when a version loads later) and its query word map.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use imagesearch_client::{score_request, ClientError, ImageRef, SearchOptions, Slot};
use imagesearch_proto::v1 as pb;
use imagesearch_tests::{add_requests, captioned_add_requests, status_code as code, test_photos, trained_repository, Server};
use tonic::Code;

/// Two tiny versions (1 and 2), trained once for the whole test binary.
fn repo() -> PathBuf {
    static REPO: OnceLock<tempfile::TempDir> = OnceLock::new();
    REPO.get_or_init(|| trained_repository(2)).path().join("models")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
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
        // Canary 30%: sticky per key, about 30% of keys (200 keys: 60 expected, 40..=80 is
        // within 3 standard deviations and rules out 10% and 50%).
        c.set_rollout(2, 1, 30).await.unwrap();
        let mut on_canary = 0;
        for u in 0..200 {
            let opts = SearchOptions { routing_key: format!("user-{u}"), ..Default::default() };
            let first = c.search_with("a dog", Some("US"), 1, &opts).await.unwrap().version;
            let second = c.search_with("a cat", Some("US"), 1, &opts).await.unwrap().version;
            assert_eq!(first, second, "user-{u} saw two versions");
            on_canary += usize::from(first == 1);
        }
        assert!((40..=80).contains(&on_canary), "{on_canary} of 200 users on a 30% canary");
        // A tampered version fails to load and nothing that serves changes.
        let e = c.load_version(3).await.unwrap_err();
        assert!(e.to_string().contains("sha256"), "{e}");
        let list = c.list_versions().await.unwrap();
        let state = |v: u32| list.iter().find(|s| s.version == v).unwrap().clone();
        assert_eq!(state(3).state, pb::VersionState::Failed as i32);
        assert_eq!(state(2).role, "stable");
        assert_eq!(c.get_rollout().await.unwrap(), pb::Rollout { stable: 2, canary: 1, canary_percent: 30 });
        assert_eq!(c.search("a dog", Some("US"), 2).await.unwrap().hits.len(), 2, "serving goes on after the failed load");
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

/// A copy of the trained repository to edit (the directory lives as long as the guard).
fn copy_of_repository() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let status = std::process::Command::new("cp").arg("-a").arg(repo()).arg(&models).status().unwrap();
    assert!(status.success());
    (tmp, models)
}

/// Replaces version `v`'s `kind` detector (`child_detector` or `query_detector`) in a copied
/// repository by one that gives every vector the same probability, sigmoid(`bias`), at
/// threshold 0.5; its manifest lists the new file's sha256. `bias` None removes it.
fn constant_detector(models: &Path, v: u32, kind: &str, dims: usize, bias: Option<f64>) {
    let dir = models.join("scorer").join(v.to_string());
    let path = dir.join("manifest.json");
    let mut manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(manifest[kind].is_object(), "the trainer ships a {kind}");
    let file = dir.join(format!("{kind}.json"));
    match bias {
        Some(bias) => {
            let weights = serde_json::json!({"mean": vec![0.0; dims], "scale": vec![1.0; dims], "weights": vec![0.0; dims], "bias": bias});
            std::fs::write(&file, serde_json::to_string(&weights).unwrap()).unwrap();
            let sum = std::process::Command::new("sha256sum").arg(&file).output().unwrap();
            let sha = String::from_utf8(sum.stdout).unwrap().split_whitespace().next().unwrap().to_string();
            manifest["files"][format!("{kind}.json")] = sha.into();
            manifest[kind]["threshold"] = 0.5.into();
        }
        None => {
            std::fs::remove_file(&file).unwrap();
            manifest["files"].as_object_mut().unwrap().remove(&format!("{kind}.json"));
            manifest.as_object_mut().unwrap().remove(kind);
        }
    }
    std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
}

#[test]
fn a_version_that_loads_later_reads_the_stored_captions_with_its_query_detector() {
    // Version 1 has no query detector; version 2's says child of every text. Neither photo
    // detector flags anything, so only the captions can restrict.
    let (_tmp, models) = copy_of_repository();
    constant_detector(&models, 1, "query_detector", 384, None);
    constant_detector(&models, 2, "query_detector", 384, Some(10.0));
    for v in [1, 2] {
        constant_detector(&models, v, "child_detector", 1280, Some(-10.0));
    }
    let data = tempfile::tempdir().unwrap();
    let withheld = |p: &pb::GetPhotoResponse| matches!(&p.content, Some(pb::get_photo_response::Content::Withheld(_)));
    let mut server = Server::start(&models, &data.path().join("srv"), &["--versions", "1"]);
    rt().block_on(async {
        let c = server.ready_client().await;
        let photos = test_photos(2);
        // Words the word list does not know, and a photo without captions.
        let captioned = vec![(photos[0].0.clone(), photos[0].1.clone(), vec!["a dog runs on the beach".to_string()])];
        assert_eq!(c.add_photos(captioned_add_requests(&captioned)).await.unwrap().restricted, 0);
        assert_eq!(c.add_photos(add_requests(&photos[1..])).await.unwrap().restricted, 0);
        let mut raw = pb::image_search_client::ImageSearchClient::connect(server.endpoint()).await.unwrap();
        let get = |id: &str| pb::GetPhotoRequest { id: id.into(), routing: Some(pb::Routing { region: "DE".into(), ..Default::default() }) };
        assert!(!withheld(&raw.get_photo(get(&photos[0].0)).await.unwrap().into_inner()));

        c.load_version(2).await.unwrap();
        let stats = c.gallery_stats().await.unwrap();
        assert_eq!((stats.restricted_by_captions, stats.restricted), (1, 1), "{stats:?}");
        assert!(withheld(&raw.get_photo(get(&photos[0].0)).await.unwrap().into_inner()), "the captioned photo is withheld in DE");
        assert!(!withheld(&raw.get_photo(get(&photos[1].0)).await.unwrap().into_inner()), "the photo without captions is not");
    });
    // The flag is stored: a restart with version 1 alone keeps the photo restricted.
    server.kill9();
    let mut server = Server::start(&models, &data.path().join("srv"), &["--versions", "1"]);
    rt().block_on(async {
        let c = server.ready_client().await;
        assert_eq!(c.gallery_stats().await.unwrap().restricted_by_captions, 1);
    });
}

#[test]
fn a_query_detector_that_says_child_withholds_in_restricted_regions_only() {
    // A copy of the trained versions whose query detectors flag every text (weights 0, bias
    // 10: probability ≈ 1), their manifests listing the new files' sha256.
    let (_tmp, models) = copy_of_repository();
    for v in [1, 2] {
        constant_detector(&models, v, "query_detector", 384, Some(10.0));
    }
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(&models, &data.path().join("srv"), &[]);
    rt().block_on(async {
        let c = server.ready_client().await;
        let photos = test_photos(2);
        c.add_photos(add_requests(&photos)).await.unwrap();
        // Words the word list does not know: only the detector can withhold them.
        let text = "a dog runs on the beach";
        let de = c.search(text, Some("DE"), 2).await.unwrap();
        assert!(de.hits.is_empty() && de.query_withheld.is_some(), "{de:?}");
        let us = c.search(text, Some("US"), 2).await.unwrap();
        assert!(us.query_withheld.is_none() && !us.hits.is_empty(), "{us:?}");
        let e = c.score(vec![(ImageRef::Bytes(photos[0].1.clone()), text.into())], Some("DE")).await.unwrap_err();
        assert_eq!(code(&e), Code::PermissionDenied, "{e}");
        assert!(e.to_string().contains("query detector"), "{e}");
        let (scores, _) = c.score(vec![(ImageRef::Bytes(photos[0].1.clone()), text.into())], Some("US")).await.unwrap();
        assert!((0.0..=1.0).contains(&scores[0]));
        // The detector reads gallery captions too: a caption the word list clears restricts.
        let before = c.gallery_stats().await.unwrap().restricted_by_captions;
        let captioned = vec![(photos[1].0.clone() + "-captioned", photos[1].1.clone(), vec![text.to_string()])];
        let added = c.add_photos(captioned_add_requests(&captioned)).await.unwrap();
        assert_eq!(added.restricted, 1, "{added:?}");
        assert_eq!(c.gallery_stats().await.unwrap().restricted_by_captions, before + 1);
    });
}

#[test]
fn a_version_with_the_word_map_reads_open_region_queries_as_adult_words() {
    // Version 1 of a copy names a word map (another id than this build's: the server warns and
    // uses its own table); version 2 names none.
    let (_tmp, models) = copy_of_repository();
    let path = models.join("scorer/1/manifest.json");
    let mut manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    manifest["query_word_map"] = "query-words-of-another-build".into();
    std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(&models, &data.path().join("srv"), &[]);
    rt().block_on(async {
        let c = server.ready_client().await;
        c.load_version(1).await.unwrap();
        c.add_photos(add_requests(&test_photos(6))).await.unwrap();
        let search = |query: &'static str, version: u32| {
            let c = &c;
            async move {
                let opts = SearchOptions { version, ..SearchOptions::default() };
                let r = c.search_with(query, Some("US"), 6, &opts).await.unwrap();
                assert_eq!(r.version, version);
                let hits: Vec<(String, f32)> = r
                    .hits
                    .iter()
                    .map(|h| match h {
                        Slot::Photo(p) => (p.id.clone(), p.score),
                        other => panic!("withheld in an open region: {other:?}"),
                    })
                    .collect();
                assert_eq!(hits.len(), 6);
                hits
            }
        };
        let (child, adult) = ("Two boys and a girl play with a dog", "Two men and a woman play with a dog");
        assert_eq!(search(child, 1).await, search(adult, 1).await, "version 1 reads the child words as adult ones");
        assert_ne!(search(child, 2).await, search(adult, 2).await, "version 2 reads the text as it is");
        // Score reads the pair's text the same way.
        let photo = test_photos(1).remove(0).1;
        let score = |text: &'static str, version: u32| {
            let (c, photo) = (&c, photo.clone());
            async move {
                let (r, _) = c.score_request(score_request(vec![(ImageRef::Bytes(photo), text.into())], Some("US"), version, "")).await.unwrap();
                assert_eq!(r.version, version);
                r.scores[0]
            }
        };
        assert_eq!(score(child, 1).await, score(adult, 1).await);
        assert_ne!(score(child, 2).await, score(adult, 2).await);
        // Where the law applies, nothing is mapped: the query is withheld.
        // (The compliance-aware client withholds it before sending.)
        let de = c.search_with(child, Some("DE"), 6, &SearchOptions { version: 1, ..SearchOptions::default() }).await;
        assert!(matches!(de, Err(ClientError::QueryWithheld { .. })), "{de:?}");
    });
    assert!(server.log_text().contains("query word map differs"), "the server warns of another build's table");
}
