//! The server binary over loopback: verifies the model repository at start, serves `Info`,
//! refuses a tampered version.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use imagesearch_proto::v1::image_search_client::ImageSearchClient;
use imagesearch_proto::v1::InfoRequest;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn serves_info_over_grpc() {
    let models = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_imagesearch-server"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--device", "cpu", "--models"])
            .arg(models.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let info = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match ImageSearchClient::connect(format!("http://127.0.0.1:{port}")).await {
                Ok(mut client) => break client.info(InfoRequest {}).await.unwrap().into_inner(),
                Err(e) if Instant::now() > deadline => panic!("server did not come up: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    assert_eq!(info.build_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.device, "cpu");
    assert!(info.versions.is_empty());
}

#[test]
fn refuses_a_tampered_version() {
    let models = tempfile::tempdir().unwrap();
    let dir = models.path().join("scorer/1");
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = serde_json::json!({
        "version": 1, "created": "2026-01-01T00:00:00Z", "git_commit": null,
        "image_encoder": {"name": "efficientnet-lite0", "sha256": "x", "output_dim": 1280},
        "text_encoder": {"name": "minilm-l6-v2", "sha256": "y", "output_dim": 384},
        "embedding_dim": 8, "image_views": "", "calibration": {"a": 1.0, "b": 0.0},
        "files": {"scorer.pt": "00", "image_tower.pt": "00", "text_tower.pt": "00"},
        "data": {}, "aggregation": "pooled", "hyperparameters": {}, "training": {}, "metrics": {}
    });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    for f in ["scorer.pt", "image_tower.pt", "text_tower.pt"] {
        std::fs::write(dir.join(f), b"not torchscript").unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_imagesearch-server"))
        .args(["--check", "--device", "cpu", "--models"])
        .arg(models.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sha256 mismatch"), "{stderr}");
}
