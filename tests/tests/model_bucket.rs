//! Models from an S3-compatible bucket (`--models s3://bucket/prefix`), against a real S3 server
//! (`rclone serve s3`) and a real PostgreSQL: two replicas load their versions from the bucket,
//! a version published later loads on both when the rollout names it, and a version whose bytes
//! do not match its manifest never loads.

use std::path::Path;

use imagesearch_tests::{add_requests, status_code, test_photos, trained_repository, Postgres, S3Server, Server};
use tonic::Code;

#[test]
fn replicas_load_versions_from_a_bucket_verified() {
    let repo = trained_repository(3);
    let models = repo.path().join("models");
    let s3 = S3Server::start(&["models"]);
    // One test in this binary: the servers it starts inherit the bucket's credentials.
    for (k, v) in s3.client_env() {
        std::env::set_var(k, v);
    }
    s3.upload(&models.join("encoders"), "models/prod/encoders");
    s3.upload(&models.join("scorer/1"), "models/prod/scorer/1");
    let pg = Postgres::start();
    let url = pg.url("gallery");
    let args = ["--store", "postgres", "--database-url", url.as_str()];
    let bucket = Path::new("s3://models/prod");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut a = Server::start(bucket, &data.path().join("a"), &args);
    let mut b = Server::start(bucket, &data.path().join("b"), &args);
    rt.block_on(async {
        let (ca, cb) = (a.ready_client().await, b.ready_client().await);
        assert_eq!(ca.get_rollout().await.unwrap().stable, 1);
        ca.add_photos(add_requests(&test_photos(4))).await.unwrap();
        let listed = cb.list_versions().await.unwrap();
        assert_eq!(listed.iter().map(|v| v.version).collect::<Vec<_>>(), vec![1]);

        // Version 2 published to the bucket: loaded through A, rolled out, obeyed by B, which
        // fetches it from the bucket itself.
        s3.upload(&models.join("scorer/2"), "models/prod/scorer/2");
        ca.load_version(2).await.unwrap();
        ca.set_rollout(2, 0, 0).await.unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while cb.get_rollout().await.map(|r| r.stable).unwrap_or(0) != 2 {
            assert!(std::time::Instant::now() < until, "B did not take up version 2 from the bucket");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let r = cb.search("a dog", Some("US"), 4).await.unwrap();
        assert_eq!((r.version, r.hits.len()), (2, 4));

        // Version 3 with a damaged file in the bucket: refused by its sha256, nothing loads.
        s3.upload(&models.join("scorer/3"), "models/prod/scorer/3");
        let tower = s3.object_path("models/prod/scorer/3/image_tower.pt");
        let mut bytes = std::fs::read(&tower).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&tower, bytes).unwrap();
        let e = ca.load_version(3).await.unwrap_err();
        assert_eq!(status_code(&e), Code::FailedPrecondition, "{e}");
        assert!(e.to_string().contains("sha256"), "{e}");
        assert!(!data.path().join("a/models-cache/scorer/3").exists(), "a version that failed its check was cached");
        // Unknown versions are NOT_FOUND, as with a directory.
        let e = ca.load_version(9).await.unwrap_err();
        assert_eq!(status_code(&e), Code::NotFound, "{e}");
    });
    // Both replicas cached what they serve, verified.
    for d in ["a", "b"] {
        for v in ["1", "2"] {
            assert!(data.path().join(d).join("models-cache/scorer").join(v).join("manifest.json").is_file(), "{d} lacks version {v}");
        }
    }
}
