//! Overload, as behaviour: past its limits the real server refuses at once with
//! RESOURCE_EXHAUSTED, a message naming the limit and a retry pushback, serves everything it
//! admitted, and serves normally again once the load is gone.

use std::path::PathBuf;
use std::sync::OnceLock;

use imagesearch_client::{ClientError, ImageRef};
use imagesearch_tests::{status_code, test_photos, trained_repository, Server};
use tonic::Code;

fn repo() -> PathBuf {
    static REPO: OnceLock<tempfile::TempDir> = OnceLock::new();
    REPO.get_or_init(|| trained_repository(1)).path().join("models")
}

/// Sends `n` Score calls at once (one photo each) and sorts the answers.
async fn burst(server: &Server, n: usize) -> (usize, Vec<ClientError>) {
    let photos = test_photos(8);
    let mut cfg = server.client_config();
    cfg.retry.max_attempts = 1; // count what the server answers
    let client = imagesearch_client::Client::connect(cfg).await.unwrap();
    let calls = (0..n).map(|i| {
        let (client, photo) = (client.clone(), photos[i % photos.len()].1.clone());
        tokio::spawn(async move { client.score(vec![(ImageRef::Bytes(photo), format!("a photo of a street, call {i}"))], Some("US")).await })
    });
    let (mut ok, mut refused) = (0, Vec::new());
    for c in calls.collect::<Vec<_>>() {
        match c.await.unwrap() {
            Ok((scores, _)) => {
                assert_eq!(scores.len(), 1);
                ok += 1;
            }
            Err(e) => refused.push(e),
        }
    }
    (ok, refused)
}

#[test]
fn past_the_in_flight_limit_calls_are_refused_at_once_and_the_rest_served() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(&repo(), data.path(), &["--max-concurrent-requests", "2", "--image-cache", "0", "--text-cache", "0"]);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        server.ready_client().await;
        let (ok, refused) = burst(&server, 16).await;
        assert!(ok >= 2, "{ok} served");
        assert!(!refused.is_empty(), "16 calls at once against a limit of 2: none refused");
        for e in &refused {
            assert_eq!(status_code(e), Code::ResourceExhausted, "{e}");
            assert!(e.to_string().contains("2 Score calls are in flight, the server's limit"), "{e}");
            // The refusal says when to come back: the shortest pushback.
            assert_eq!(e.retry_after(), Some(std::time::Duration::from_millis(50)), "{e}");
        }
        // The load is gone: everything is served again.
        let (ok, refused) = burst(&server, 2).await;
        assert_eq!((ok, refused.len()), (2, 0), "{refused:?}");
    });
}

#[test]
fn past_the_queue_time_budget_work_is_shed_and_admitted_work_is_served() {
    let data = tempfile::tempdir().unwrap();
    // A 1 ms budget: once the image encoder's cost is measured, any photo with another ahead
    // of it would wait longer.
    let mut server = Server::start(&repo(), data.path(), &["--max-queue-time-ms", "1", "--image-cache", "0", "--text-cache", "0", "--image-instances", "1"]);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        server.ready_client().await;
        // A Score call is admitted once over the three queues it passes (image and text, then
        // the scorer), so the first of a burst always finds them free and is served to the end;
        // the rest would wait behind it and are refused before any of their work starts.
        let (ok, refused) = burst(&server, 24).await;
        assert!(ok >= 1, "{ok} served: an admitted call was shed half-way");
        assert!(!refused.is_empty(), "24 photos at once on one encoder with a 1 ms budget: none shed ({ok} served)");
        for e in &refused {
            assert_eq!(status_code(e), Code::ResourceExhausted, "{e}");
            assert!(e.to_string().contains("is overloaded: a new request would wait about"), "{e}");
            // Come back once the work ahead has drained to within the budget: at least the
            // floor, never past the ceiling.
            let wait = e.retry_after().unwrap_or_else(|| panic!("no pushback on {e}"));
            assert!((50..=5_000).contains(&wait.as_millis()), "{wait:?}");
        }
        let (ok, refused) = burst(&server, 1).await;
        assert_eq!((ok, refused.len()), (1, 0), "{refused:?}");
    });
}
