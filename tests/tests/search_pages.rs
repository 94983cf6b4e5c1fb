//! Search beyond one top-k: a relevance floor (`min_score`) and pages (`page_token`) that are
//! stable under concurrent adds, bounded by `--max-search-depth`, and refuse tokens that are
//! not theirs.

use std::collections::HashSet;

use imagesearch_client::{Client, ClientError, SearchOptions, SearchResults, Slot};
use imagesearch_tests::{test_photos, trained_repository, Server};
use imagesearch_tests::{add_requests as requests, status_code as code};
use tonic::Code;

fn photos_of(r: &SearchResults) -> Vec<(u32, String, f32)> {
    r.hits
        .iter()
        .map(|s| match s {
            Slot::Photo(p) => (p.rank, p.id.clone(), p.score),
            Slot::Withheld { .. } => panic!("withheld in an open region"),
        })
        .collect()
}

async fn page(c: &Client, k: u32, min_score: f32, token: &str) -> Result<SearchResults, ClientError> {
    let opts = SearchOptions { min_score, page_token: token.to_string(), ..Default::default() };
    c.search_with("a dog running on the grass", Some("US"), k, &opts).await
}


#[test]
fn pages_floors_and_depth() {
    let repo = trained_repository(1);
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(&repo.path().join("models"), &data.path().join("srv"), &["--max-search-depth", "10"]);
    let photos = test_photos(15);
    let (first, later) = photos.split_at(12);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = server.ready_client().await;
        assert_eq!(c.add_photos(requests(first)).await.unwrap().added, 12);

        // The whole ranking in one page, for reference (within the depth of 10).
        let all = photos_of(&page(&c, 10, 0.0, "").await.unwrap());
        assert_eq!(all.len(), 10);
        assert!(all.windows(2).all(|w| w[0].2 >= w[1].2), "best first: {all:?}");

        // Pages of 4 give the same ranking, ranks continuing, until the depth.
        let p1 = page(&c, 4, 0.0, "").await.unwrap();
        assert_eq!(photos_of(&p1), all[..4].to_vec());
        assert!(!p1.next_page_token.is_empty());
        // Photos added between pages do not make a later page repeat what an earlier one showed.
        c.add_photos(requests(later)).await.unwrap();
        let p2 = page(&c, 4, 0.0, &p1.next_page_token).await.unwrap();
        let p2_hits = photos_of(&p2);
        assert_eq!(p2_hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![5, 6, 7, 8]);
        let shown1: HashSet<String> = photos_of(&p1).into_iter().map(|h| h.1).collect();
        assert!(p2_hits.iter().all(|h| !shown1.contains(&h.1)), "a page repeated a hit: {p2_hits:?}");
        assert!(p2_hits.iter().all(|h| h.2 <= all[3].2), "a later page ranks below the cursor");
        let p3 = page(&c, 4, 0.0, &p2.next_page_token).await.unwrap();
        assert_eq!(photos_of(&p3).iter().map(|h| h.0).collect::<Vec<_>>(), vec![9, 10], "the depth ends the pages");
        assert!(p3.next_page_token.is_empty());

        // A floor: only hits at or above it, and an honest empty answer above every score.
        let now = photos_of(&page(&c, 10, 0.0, "").await.unwrap());
        let floor = now[5].2;
        let floored = photos_of(&page(&c, 10, floor, "").await.unwrap());
        assert!(!floored.is_empty() && floored.iter().all(|h| h.2 >= floor), "{floored:?}");
        assert_eq!(floored.len(), now.iter().filter(|h| h.2 >= floor).count());
        let none = page(&c, 10, (now[0].2 + 1e-3).min(1.0), "").await.unwrap();
        assert!(none.hits.is_empty() && none.next_page_token.is_empty(), "{none:?}");
        // With a floor, pages stop where the floor does.
        let f1 = page(&c, 2, floor, "").await.unwrap();
        let mut seen = photos_of(&f1).len();
        let mut token = f1.next_page_token.clone();
        while !token.is_empty() {
            let next = page(&c, 2, floor, &token).await.unwrap();
            seen += next.hits.len();
            token = next.next_page_token;
        }
        assert_eq!(seen, floored.len());

        // Bad floors and tokens are INVALID_ARGUMENT, named.
        for bad in [-0.1, 1.5, f32::NAN] {
            let e = page(&c, 3, bad, "").await.unwrap_err();
            assert_eq!(code(&e), Code::InvalidArgument, "{e}");
            assert!(e.to_string().contains("min_score"), "{e}");
        }
        let e = page(&c, 3, 0.5, &p1.next_page_token).await.unwrap_err();
        assert_eq!(code(&e), Code::InvalidArgument);
        assert!(e.to_string().contains("another query, min_score"), "{e}");
        let other = c
            .search_with("two cats", Some("US"), 3, &SearchOptions { page_token: p1.next_page_token.clone(), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(code(&other), Code::InvalidArgument);
        for junk in ["not-hex", "00ff", &"ab".repeat(2000)] {
            let e = page(&c, 3, 0.0, junk).await.unwrap_err();
            assert_eq!(code(&e), Code::InvalidArgument, "{junk}: {e}");
        }
        let info = c.info().await.unwrap();
        assert_eq!(info.limits.unwrap().max_search_depth, 10);
    });
}
