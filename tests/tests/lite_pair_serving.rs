//! The optional image encoder `efficientnet-lite0-lite2` (EfficientNet-Lite0 ⊕ Lite2, 260 px in,
//! 2,560-d out) trains and serves through its manifest alone: the real trainer makes a version
//! on it and the real server indexes, scores and searches with it.

use imagesearch_client::{ImageRef, Slot};
use imagesearch_tests::{add_requests, encoders, test_photos, trained_repository_with, Server};

#[test]
fn a_version_on_the_lite_pair_is_served_unchanged() {
    let repo = trained_repository_with(1, &encoders(), "efficientnet-lite0-lite2", "minilm-l6-v2");
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(&repo.path().join("models"), data.path(), &[]);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let c = server.ready_client().await;
        let info = c.info().await.unwrap();
        assert_eq!(info.versions[0].image_encoder, "efficientnet-lite0-lite2");
        let photos = test_photos(3);
        assert_eq!(c.add_photos(add_requests(&photos)).await.unwrap().added, 3);
        let pairs = photos.iter().map(|(_, bytes)| (ImageRef::Bytes(bytes.clone()), "a dog runs on the grass".to_string())).collect();
        let (scores, _) = c.score(pairs, Some("US")).await.unwrap();
        assert_eq!(scores.len(), 3);
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)), "{scores:?}");
        let found = c.search("two people ride bikes", Some("US"), 3).await.unwrap();
        let ids: Vec<&str> = found.hits.iter().filter_map(|s| match s { Slot::Photo(p) => Some(p.id.as_str()), Slot::Withheld { .. } => None }).collect();
        assert_eq!(ids.len(), 3, "an open region shows every photo: {:?}", found.hits);
        assert!(ids.iter().all(|id| photos.iter().any(|(p, _)| p == id)), "{ids:?}");
    });
}
