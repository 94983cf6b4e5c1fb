//! The server with its gallery in a real PostgreSQL + pgvector (`--store postgres`): the same
//! law and answers as the local store, photos that outlive the server and its data directory,
//! and a lost database that refuses what needs it (UNAVAILABLE) while searches keep working,
//! then comes back without a restart.

use imagesearch_client::{SearchOptions, Slot};
use imagesearch_proto::DISCLAIMER;
use imagesearch_proto::metadata::AUTHORIZATION;
use imagesearch_proto::v1 as pb;
use imagesearch_tests::{captioned_photos, eventually, trained_repository, Postgres, Server, WRITER_TOKEN};
use tonic::Code;
use imagesearch_tests::{captioned_add_requests as requests, status_code as code};



#[test]
fn the_gallery_lives_in_postgres_under_the_same_law() {
    let repo = trained_repository(1);
    let models = repo.path().join("models");
    let mut pg = Postgres::start();
    let url = pg.url("gallery");
    let store = ["--store", "postgres", "--database-url", url.as_str()];
    let (kids, adults) = captioned_photos(3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let data = tempfile::tempdir().unwrap();

    let mut server = Server::start(&models, &data.path().join("a"), &store);
    rt.block_on(async {
        let c = server.ready_client().await;
        let added = c.add_photos(requests(&kids)).await.unwrap();
        assert_eq!((added.added, added.restricted), (3, 3), "child captions restrict");
        // Unflagged adult photos: this tiny version has a detector or not; either way none of
        // the kids' photos may be shown in DE.
        c.add_photos(requests(&adults)).await.unwrap();
        let de = c.search("a photo", Some("DE"), 6).await.unwrap();
        let withheld = de.hits.iter().filter(|s| matches!(s, Slot::Withheld { disclaimer, .. } if disclaimer == DISCLAIMER)).count();
        let stats = c.gallery_stats().await.unwrap();
        assert_eq!(stats.photos, 6);
        assert_eq!(withheld as u64, stats.restricted, "every restricted photo is withheld in DE");
        for kid in &kids {
            assert!(!de.hits.iter().any(|s| matches!(s, Slot::Photo(p) if p.id == kid.0)), "{} shown in DE", kid.0);
        }
    });
    assert_eq!(pg.psql("gallery", "SELECT count(*) FROM photos WHERE flag <> 0"), {
        let s = rt.block_on(async { server.client().await.gallery_stats().await.unwrap() });
        s.restricted.to_string()
    });

    // kill -9, then a new server with an empty data directory: the gallery is the database's.
    server.kill9();
    let mut server = Server::start(&models, &data.path().join("b"), &store);
    rt.block_on(async {
        let c = server.ready_client().await;
        assert_eq!(c.gallery_stats().await.unwrap().photos, 6);
        let us = c.search_with("a photo", Some("US"), 6, &SearchOptions { include_photos: true, ..Default::default() }).await.unwrap();
        assert_eq!(us.hits.len(), 6);
        let kid = us.hits.iter().find_map(|s| match s { Slot::Photo(p) if p.id == kids[0].0 => Some(p.clone()), _ => None }).unwrap();
        assert_eq!(kid.data, kids[0].1, "the bytes came back from the database");
        let de = c.search("a photo", Some("DE"), 6).await.unwrap();
        for kid in &kids {
            assert!(!de.hits.iter().any(|s| matches!(s, Slot::Photo(p) if p.id == kid.0)), "{} shown in DE after the restart", kid.0);
        }
    });

    // The database goes away: writes and photo bytes are UNAVAILABLE, searches still answer.
    pg.crash();
    rt.block_on(async {
        let c = server.client().await;
        let e = c.add_photos(requests(&adults[..1])).await.unwrap_err();
        assert_eq!(code(&e), Code::Unavailable, "{e}");
        assert!(e.to_string().contains("gallery database is unreachable"), "{e}");
        let e = c.search_with("a photo", Some("US"), 3, &SearchOptions { include_photos: true, ..Default::default() }).await.unwrap_err();
        assert_eq!(code(&e), Code::Unavailable, "{e}");
        assert_eq!(c.search("a photo", Some("US"), 3).await.unwrap().hits.len(), 3);
    });
    pg.resume();
    rt.block_on(async {
        let c = server.client().await;
        let removed = c.remove_photos(vec![adults[0].0.clone()]).await.unwrap();
        assert_eq!(removed.removed, 1, "the server reconnected by itself");
        assert_eq!(c.gallery_stats().await.unwrap().photos, 5);
    });
    assert_eq!(pg.psql("gallery", "SELECT count(*) FROM photos"), "5");
}

#[test]
fn migrate_gallery_copies_a_local_gallery_with_its_flags_and_reviews() {
    let repo = trained_repository(1);
    let models = repo.path().join("models");
    let pg = Postgres::start();
    let url = pg.url("gallery");
    let (kids, adults) = captioned_photos(2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let data = tempfile::tempdir().unwrap();
    let local_dir = data.path().join("local");
    let mut server = Server::start(&models, &local_dir, &[]);
    let before = rt.block_on(async {
        let c = server.ready_client().await;
        c.add_photos(requests(&kids)).await.unwrap();
        c.add_photos(requests(&adults)).await.unwrap();
        c.review_photo(&adults[0].0, true, "reviewer", "seen").await.unwrap();
        c.gallery_stats().await.unwrap()
    });
    assert!(server.terminate().success());
    let out = std::process::Command::new(imagesearch_tests::bin("imagesearch-server"))
        .arg("--models")
        .arg(&models)
        .args(["migrate-gallery", "--to", url.as_str(), "--from"])
        .arg(&local_dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("migrated 4 photos") && said.contains("counts match"), "{said}");
    // A second migration into the same (now full) gallery is refused.
    let again = std::process::Command::new(imagesearch_tests::bin("imagesearch-server"))
        .arg("--models")
        .arg(&models)
        .args(["migrate-gallery", "--to", url.as_str(), "--from"])
        .arg(&local_dir)
        .output()
        .unwrap();
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already holds 4 photos"));

    let mut server = Server::start(&models, &data.path().join("pg"), &["--store", "postgres", "--database-url", url.as_str()]);
    rt.block_on(async {
        let c = server.ready_client().await;
        let after = c.gallery_stats().await.unwrap();
        assert_eq!(
            (after.photos, after.restricted, after.restricted_by_captions, after.restricted_by_review),
            (before.photos, before.restricted, before.restricted_by_captions, before.restricted_by_review)
        );
        assert_eq!(after.restricted_by_review, 1);
        let de = c.search("a photo", Some("DE"), 4).await.unwrap();
        assert!(!de.hits.iter().any(|s| matches!(s, Slot::Photo(p) if p.id == adults[0].0 || kids.iter().any(|k| k.0 == p.id))));
    });
    assert_eq!(pg.psql("gallery", "SELECT reviewed_by || ':' || note FROM content_flags WHERE flag = 4"), "reviewer:seen");
}

#[test]
fn two_replicas_on_one_database_serve_one_gallery_and_one_rollout() {
    let repo = trained_repository(2);
    let models = repo.path().join("models");
    let pg = Postgres::start();
    let url = pg.url("gallery");
    let store = ["--store", "postgres", "--database-url", url.as_str()];
    let (kids, adults) = captioned_photos(3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut a = Server::start(&models, &data.path().join("a"), &store);
    let mut b = Server::start(&models, &data.path().join("b"), &store);
    rt.block_on(async {
        let (ca, cb) = (a.ready_client().await, b.ready_client().await);
        ca.add_photos(requests(&adults[..2])).await.unwrap();
        ca.add_photos(requests(&kids[..1])).await.unwrap();
        let started = std::time::Instant::now();
        eventually("A's photos searched on B", || async {
            cb.search("a photo", Some("US"), 10).await.map(|r| r.hits.len() == 3).unwrap_or(false)
        })
        .await;
        println!("a photo added on A was found on B after {:?}", started.elapsed());
        // The law on B for A's child photo.
        let de = cb.search("a photo", Some("DE"), 10).await.unwrap();
        assert!(!de.hits.iter().any(|s| matches!(s, Slot::Photo(p) if p.id == kids[0].0)));
        assert_eq!(cb.gallery_stats().await.unwrap().photos, 3);
        // A removal on A, and an add on B seen on A.
        ca.remove_photos(vec![adults[0].0.clone()]).await.unwrap();
        cb.add_photos(requests(&adults[2..3])).await.unwrap();
        eventually("A's removal on B", || async {
            cb.search("a photo", Some("US"), 10)
                .await
                .map(|r| !r.hits.iter().any(|s| matches!(s, Slot::Photo(p) if p.id == adults[0].0)))
                .unwrap_or(false)
        })
        .await;
        eventually("B's photo on A", || async {
            ca.search("a photo", Some("US"), 10)
                .await
                .map(|r| r.hits.iter().any(|s| matches!(s, Slot::Photo(p) if p.id == adults[2].0)))
                .unwrap_or(false)
        })
        .await;
        // A rollout set through A is obeyed by B: B loads the canary itself, and every routing
        // key lands on the same version on both.
        ca.load_version(1).await.unwrap();
        ca.set_rollout(2, 1, 50).await.unwrap();
        eventually("A's rollout on B", || async {
            cb.get_rollout().await.map(|r| (r.stable, r.canary, r.canary_percent) == (2, 1, 50)).unwrap_or(false)
        })
        .await;
        let mut on_canary = 0;
        for u in 0..40 {
            let opts = SearchOptions { routing_key: format!("user-{u}"), ..Default::default() };
            let on_a = ca.search_with("a dog", Some("US"), 1, &opts).await.unwrap().version;
            let on_b = cb.search_with("a dog", Some("US"), 1, &opts).await.unwrap().version;
            assert_eq!(on_a, on_b, "user-{u} routed differently by the two replicas");
            on_canary += usize::from(on_a == 1);
        }
        assert!((5..=35).contains(&on_canary), "{on_canary} of 40 users on a 50% canary");
        // And back, set through B this time: A follows.
        cb.set_rollout(2, 0, 0).await.unwrap();
        eventually("B's rollout on A", || async {
            ca.get_rollout().await.map(|r| (r.stable, r.canary) == (2, 0)).unwrap_or(false)
        })
        .await;
        assert_eq!(pg.psql("gallery", "SELECT stable || ',' || canary || ',' || canary_percent FROM rollout"), "2,0,0");
        // A acknowledges an add, then is killed during another whose stream never ends (its
        // photos' bytes already staged in the database): B has every acknowledged photo, none of
        // the unacknowledged add, and serves on.
        ca.add_photos(requests(&kids[1..])).await.unwrap();
        let staged_before: i64 = pg.psql("gallery", "SELECT count(*) FROM photo_contents").parse().unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let (_, more_adults) = captioned_photos(8);
        for (id, data, captions) in &more_adults[3..8] {
            let photo = pb::AddPhotoRequest { id: format!("unacked-{id}"), data: data.clone(), captions: captions.clone(), ..Default::default() };
            tx.send(photo).await.unwrap();
        }
        let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        req.metadata_mut().insert(AUTHORIZATION, format!("Bearer {WRITER_TOKEN}").parse().unwrap());
        let mut gallery = pb::gallery_client::GalleryClient::connect(a.endpoint()).await.unwrap();
        let add = tokio::spawn(async move { gallery.add_photos(req).await });
        eventually("the unacknowledged add's bytes staged", || async {
            pg.psql("gallery", "SELECT count(*) FROM photo_contents").parse::<i64>().unwrap() >= staged_before + 5
        })
        .await;
        a.kill9();
        assert!(add.await.unwrap().is_err(), "an add whose stream never ended was acknowledged");
        drop(tx);
    });
    rt.block_on(async {
        let cb = b.client().await;
        eventually("every photo acknowledged by A, on B", || async {
            cb.gallery_stats().await.map(|s| s.photos == 5).unwrap_or(false)
        })
        .await;
        // B's stats read the shared store; its search index follows the store within a poll.
        eventually("every photo acknowledged by A, in B's search", || async {
            cb.search("a photo", Some("US"), 10).await.map(|r| r.hits.len() == 5).unwrap_or(false)
        })
        .await;
        let us = cb.search("a photo", Some("US"), 10).await.unwrap();
        assert_eq!(us.hits.len(), 5);
        assert!(us.hits.iter().all(|s| !matches!(s, Slot::Photo(p) if p.id.starts_with("unacked-"))));
    });
    assert_eq!(pg.psql("gallery", "SELECT count(*) FROM photos"), "5");
    assert_eq!(pg.psql("gallery", "SELECT count(*) FROM photos WHERE id LIKE 'unacked-%'"), "0");
}
