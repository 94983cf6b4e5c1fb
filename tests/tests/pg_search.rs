//! Search in the gallery database (`--search-index postgres-exact|postgres-hnsw`) against a
//! real PostgreSQL + pgvector: the same ranking and scores as the in-memory index (within
//! halfvec rounding), the same law, pages, writes of other servers followed, and a version's
//! index fill that resumes after it was cut short or made for other weights.

use std::collections::{HashMap, HashSet};

use imagesearch_client::{Client, SearchOptions, Slot};
use imagesearch_proto::DISCLAIMER;
use imagesearch_tests::{add_requests, eventually, captioned_add_requests as requests, captioned_photos, test_photos, trained_repository, Postgres, Server};

/// Halfvec rounding of 2,560 unit-length components moves a calibrated score by far less.
const SCORE_TOLERANCE: f32 = 0.005;

const QUERIES: [&str; 4] = ["a dog runs on the grass", "a man riding a bike", "people in a city street", "a photo"];

/// Every visible hit's (id, score) of a search in the US.
async fn ranked(c: &Client, query: &str, k: u32) -> Vec<(String, f32)> {
    let r = c.search(query, Some("US"), k).await.unwrap();
    r.hits
        .iter()
        .map(|s| match s {
            Slot::Photo(p) => (p.id.clone(), p.score),
            Slot::Withheld { .. } => panic!("withheld in the US"),
        })
        .collect()
}

#[test]
fn search_in_postgres_ranks_as_the_memory_index_under_the_same_law() {
    let repo = trained_repository(1);
    let models = repo.path().join("models");
    let pg = Postgres::start();
    let url = pg.url("gallery");
    let store = ["--store", "postgres", "--database-url", url.as_str()];
    let with = |index: &'static str| -> Vec<&str> { store.iter().copied().chain(["--search-index", index]).collect() };
    let (kids, adults) = captioned_photos(3);
    let plain = test_photos(20);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let data = tempfile::tempdir().unwrap();

    // The gallery is written through a server with the in-memory index.
    let mut memory = Server::start(&models, &data.path().join("m"), &store);
    rt.block_on(async {
        let c = memory.ready_client().await;
        c.add_photos(requests(&kids)).await.unwrap();
        c.add_photos(requests(&adults)).await.unwrap();
        c.add_photos(add_requests(&plain)).await.unwrap();
    });
    let total = 26u32;
    let mut exact = Server::start(&models, &data.path().join("e"), &with("postgres-exact"));
    let mut hnsw = Server::start(&models, &data.path().join("h"), &with("postgres-hnsw"));
    rt.block_on(async {
        let (cm, ce, ch) = (memory.ready_client().await, exact.ready_client().await, hnsw.ready_client().await);
        for q in QUERIES {
            let all: HashMap<String, f32> = ranked(&cm, q, total).await.into_iter().collect();
            assert_eq!(all.len(), total as usize);
            let best = ranked(&cm, q, 10).await;
            for (name, c) in [("exact", &ce), ("hnsw", &ch)] {
                let got = ranked(c, q, 10).await;
                assert_eq!(got.len(), 10, "{name}: {q}");
                for (i, ((id, score), (_, want))) in got.iter().zip(&best).enumerate() {
                    // The same score for the same photo, and the same score at every rank.
                    assert!((score - all[id]).abs() < SCORE_TOLERANCE, "{name} '{q}' {id}: {score} vs {}", all[id]);
                    assert!((score - want).abs() < SCORE_TOLERANCE, "{name} '{q}' rank {i}: {score} vs {want}");
                }
            }
        }
        // The law: the children's photos hold their rank slots as the disclaimer in DE.
        for c in [&ce, &ch] {
            let de = c.search("a photo", Some("DE"), total).await.unwrap();
            assert_eq!(de.hits.len(), total as usize);
            let withheld = de.hits.iter().filter(|s| matches!(s, Slot::Withheld { disclaimer, .. } if disclaimer == DISCLAIMER)).count();
            assert_eq!(withheld as u64, c.gallery_stats().await.unwrap().restricted);
            assert!(withheld >= kids.len());
            for kid in &kids {
                assert!(!de.hits.iter().any(|s| matches!(s, Slot::Photo(p) if p.id == kid.0)), "{} shown in DE", kid.0);
            }
            let e = c.search("a little girl in a pink dress", Some("DE"), 5).await.unwrap_err();
            assert!(matches!(&e, imagesearch_client::ClientError::QueryWithheld { disclaimer, .. } if disclaimer == DISCLAIMER), "{e}");
        }
        // Pages of 7 through the HNSW index reach every photo once.
        let mut seen = HashSet::new();
        let mut token = String::new();
        loop {
            let opts = SearchOptions { page_token: token.clone(), ..Default::default() };
            let page = ch.search_with("a photo", Some("US"), 7, &opts).await.unwrap();
            for s in &page.hits {
                let Slot::Photo(p) = s else { panic!("withheld in the US") };
                assert!(seen.insert(p.id.clone()), "{} on two pages", p.id);
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(seen.len(), total as usize);

        // Writes through the memory server are followed by the database index servers.
        let extra = test_photos(22).split_off(20);
        cm.add_photos(add_requests(&extra)).await.unwrap();
        for (name, c) in [("exact", &ce), ("hnsw", &ch)] {
            eventually(&format!("a new photo in {name}"), || async { ranked(c, "a photo", 30).await.len() == 28 }).await;
        }
        cm.remove_photos(vec![plain[0].0.clone(), kids[0].0.clone()]).await.unwrap();
        eventually("removals in hnsw", || async {
            let r = ranked(&ch, "a photo", 30).await;
            r.len() == 26 && !r.iter().any(|(id, _)| id == &plain[0].0 || id == &kids[0].0)
        })
        .await;
    });
    // One row per photo (removed photos' rows went with them), and a valid HNSW index.
    assert_eq!(pg.psql("gallery", "SELECT count(*) FROM embeddings_v1"), "26");
    assert_eq!(pg.psql("gallery", "SELECT count(*) FROM embeddings_v1 e JOIN photos p ON p.id = e.photo_id AND p.sha256 = e.sha256"), "26");
    assert_eq!(
        pg.psql("gallery", "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'embeddings_v1_hnsw'"),
        "t"
    );
}

#[test]
fn a_search_index_fill_resumes_and_is_made_anew_for_other_weights() {
    let repo = trained_repository(1);
    let models = repo.path().join("models");
    let pg = Postgres::start();
    let url = pg.url("gallery");
    let args = ["--store", "postgres", "--database-url", url.as_str(), "--search-index", "postgres-hnsw"];
    let photos = test_photos(12);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(&models, &data.path().join("a"), &args);
    let before = rt.block_on(async {
        let c = server.ready_client().await;
        c.add_photos(add_requests(&photos)).await.unwrap();
        ranked(&c, "a dog", 12).await
    });
    assert_eq!(before.len(), 12);
    server.kill9();
    assert_eq!(pg.psql("gallery", "SELECT count(*) FROM embeddings_v1"), "12");

    // A fill cut short (rows missing, the HNSW build never finished) resumes at the next load.
    pg.psql("gallery", "DELETE FROM embeddings_v1 WHERE photo_id IN (SELECT photo_id FROM embeddings_v1 ORDER BY photo_id LIMIT 5)");
    pg.psql("gallery", "DROP INDEX embeddings_v1_hnsw");
    let mut server = Server::start(&models, &data.path().join("b"), &args);
    rt.block_on(async {
        let c = server.ready_client().await;
        let after = ranked(&c, "a dog", 12).await;
        assert_eq!(after.iter().map(|(id, _)| id).collect::<Vec<_>>(), before.iter().map(|(id, _)| id).collect::<Vec<_>>());
    });
    assert_eq!(pg.psql("gallery", "SELECT count(*) FROM embeddings_v1"), "12");
    assert_eq!(pg.psql("gallery", "SELECT count(*) FROM pg_indexes WHERE indexname = 'embeddings_v1_hnsw'"), "1");
    assert!(server.terminate().success());

    // Rows made by other weights under this version number are not trusted: made anew.
    pg.psql("gallery", "UPDATE search_indexes SET tower_sha256 = 'other' WHERE version = 1");
    pg.psql("gallery", "UPDATE embeddings_v1 SET embedding = (SELECT array_fill(0.01, ARRAY[dim])::halfvec FROM search_indexes WHERE version = 1)::halfvec");
    let mut server = Server::start(&models, &data.path().join("c"), &args);
    rt.block_on(async {
        let c = server.ready_client().await;
        let after = ranked(&c, "a dog", 12).await;
        for ((id, s), (want_id, want)) in after.iter().zip(&before) {
            assert_eq!(id, want_id);
            assert!((s - want).abs() < SCORE_TOLERANCE);
        }
    });
    assert_ne!(pg.psql("gallery", "SELECT tower_sha256 FROM search_indexes WHERE version = 1"), "other");
    assert_eq!(pg.psql("gallery", "SELECT count(*) FROM embeddings_v1"), "12");
}
