//! A user's own CLIP-style checkpoint drops in as the product's two encoders: a tiny, randomly
//! initialised Hugging Face `CLIPModel` (built from its config by `tests/python/tiny_clip.py`,
//! no weights can be downloaded here) is exported by `scripts/export_encoders.py --clip`; the
//! exported towers, run by the model crate from Rust (tokenizer included), give transformers'
//! own vectors; and the real trainer and server use them unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

use imagesearch_client::{ImageRef, Slot};
use imagesearch_model::{ImageEncoder, TextEncoder};
use imagesearch_tests::{add_requests, test_photos, trained_repository_with, venv_python, Server};

fn python(args: &[&str]) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(venv_python()).current_dir(&root).args(args).output().unwrap();
    assert!(out.status.success(), "python {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Exports the tiny checkpoint into `dir/encoders` as `tiny-clip-image` and `tiny-clip-text`;
/// returns the encoder directory and transformers' reference outputs.
fn exported(dir: &Path) -> (PathBuf, serde_json::Value) {
    let ckpt = dir.join("ckpt");
    let enc = dir.join("encoders");
    python(&["tests/python/tiny_clip.py", "make", ckpt.to_str().unwrap()]);
    python(&["scripts/export_encoders.py", "--out", enc.to_str().unwrap(), "--clip", ckpt.to_str().unwrap(), "--clip-name", "tiny-clip"]);
    let reference = python(&["tests/python/tiny_clip.py", "reference", ckpt.to_str().unwrap()]);
    (enc, serde_json::from_slice(&reference).unwrap())
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: dimension");
    let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "{what}: largest difference from transformers' CLIPModel {diff}");
}

#[test]
fn an_exported_clip_checkpoint_gives_transformers_vectors_and_trains_and_serves_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (enc, reference) = exported(dir.path());

    // The manifests name the pair and their shared output space.
    let image = ImageEncoder::load(&enc.join("tiny-clip-image"), tch::Device::Cpu).unwrap();
    let text = TextEncoder::load(&enc.join("tiny-clip-text"), tch::Device::Cpu).unwrap();
    assert_eq!((image.manifest.output_dim, text.manifest.output_dim), (24, 24));
    assert_eq!(image.input_size(), (32, 32));

    // Texts through the Rust tokenizer and the exported tower, in one padded batch: transformers'
    // vectors (which it computed one text at a time, unpadded).
    let texts: Vec<String> = reference["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let (ids, _) = text.tokenizer().encode_batch(&refs).unwrap();
    let want_ids = reference["ids"].as_array().unwrap();
    for (i, row) in want_ids.iter().enumerate() {
        let n = row.as_array().unwrap().len() as i64;
        let got: Vec<i64> = Vec::try_from(ids.get(i as i64).narrow(0, 0, n)).unwrap();
        let want: Vec<i64> = row.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
        assert_eq!(got, want, "token ids of {:?}", texts[i]);
    }
    let vectors = text.encode(&refs).unwrap();
    for (i, want) in reference["text_vectors"].as_array().unwrap().iter().enumerate() {
        let got: Vec<f32> = Vec::try_from(vectors.get(i as i64)).unwrap();
        assert_close(&got, &floats(want), &format!("text {:?}", texts[i]));
    }

    // Pixels in [0, 1] through the exported image tower (normalisation inside it).
    let pixels: Vec<Vec<f32>> = reference["pixels"].as_array().unwrap().iter().map(floats).collect();
    let batch: Vec<&[f32]> = pixels.iter().map(Vec::as_slice).collect();
    let vectors = image.encode(&batch).unwrap();
    for (i, want) in reference["image_vectors"].as_array().unwrap().iter().enumerate() {
        let got: Vec<f32> = Vec::try_from(vectors.get(i as i64)).unwrap();
        assert_close(&got, &floats(want), &format!("image {i}"));
    }

    // The real trainer makes a version on them, and the real server serves it.
    let repo = trained_repository_with(1, &enc, "tiny-clip-image", "tiny-clip-text");
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(&repo.path().join("models"), data.path(), &[]);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let c = server.ready_client().await;
        let info = c.info().await.unwrap();
        let v = &info.versions[0];
        assert_eq!((v.image_encoder.as_str(), v.text_encoder.as_str()), ("tiny-clip-image", "tiny-clip-text"));
        let photos = test_photos(3);
        assert_eq!(c.add_photos(add_requests(&photos)).await.unwrap().added, 3);
        let (scores, _) = c.score(vec![(ImageRef::Bytes(photos[0].1.clone()), "a dog runs on the grass".into())], Some("US")).await.unwrap();
        assert!((0.0..=1.0).contains(&scores[0]), "{scores:?}");
        let found = c.search("two people ride bikes", Some("US"), 3).await.unwrap();
        let ids: Vec<&str> = found.hits.iter().filter_map(|s| match s { Slot::Photo(p) => Some(p.id.as_str()), Slot::Withheld { .. } => None }).collect();
        assert_eq!(ids.len(), 3, "an open region shows every photo: {:?}", found.hits);
        assert!(ids.iter().all(|id| photos.iter().any(|(p, _)| p == id)), "{ids:?}");
    });
}
