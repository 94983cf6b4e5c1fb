//! The server binary at start: it refuses to serve what it cannot verify, and says why.
//! (Serving itself is tested end to end in `tests/tests/e2e.rs`.)

use std::path::Path;
use std::process::Command;

use imagesearch_tests::encoders;

fn server(args: &[&str], models: &Path) -> (bool, String) {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_imagesearch-server"))
        .args(["--device", "cpu", "--metrics-listen", "off", "--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--models")
        .arg(models)
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn an_empty_repository_is_an_error_that_says_what_to_do() {
    let models = tempfile::tempdir().unwrap();
    let (ok, err) = server(&[], models.path());
    assert!(!ok);
    assert!(err.contains("no scorer version") && err.contains("imagesearch-train train"), "{err}");
}

#[test]
fn refuses_a_tampered_version_and_a_bad_region_list() {
    let models = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(encoders(), models.path().join("encoders")).unwrap();
    let dir = models.path().join("scorer/1");
    std::fs::create_dir_all(&dir).unwrap();
    let enc = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(encoders().join(name).join("manifest.json")).unwrap()).unwrap()
    };
    let sha = |m: &serde_json::Value| m["files"][m["file"].as_str().unwrap()].clone();
    let (image, text) = (enc("efficientnet-lite0"), enc("minilm-l6-v2"));
    let manifest = serde_json::json!({
        "version": 1, "created": "2026-01-01T00:00:00Z", "git_commit": null,
        "image_encoder": {"name": "efficientnet-lite0", "sha256": sha(&image), "output_dim": image["output_dim"]},
        "text_encoder": {"name": "minilm-l6-v2", "sha256": sha(&text), "output_dim": text["output_dim"]},
        "embedding_dim": 8, "image_views": "", "calibration": {"a": 1.0, "b": 0.0},
        "files": {"scorer.pt": "00", "image_tower.pt": "00", "text_tower.pt": "00"},
        "data": {}, "aggregation": "pooled", "hyperparameters": {}, "training": {}, "metrics": {}
    });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    for f in ["scorer.pt", "image_tower.pt", "text_tower.pt"] {
        std::fs::write(dir.join(f), b"not torchscript").unwrap();
    }
    let (ok, err) = server(&["--check"], models.path());
    assert!(!ok);
    assert!(err.contains("sha256 mismatch"), "{err}");
    let (ok, err) = server(&["--check", "--restricted-regions", "DE,Germany"], models.path());
    assert!(!ok && err.contains("Germany"), "{err}");
}
