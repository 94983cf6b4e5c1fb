//! A user's own CLIP-style checkpoint drops in as the product's two encoders: a tiny, randomly
//! initialised Hugging Face `CLIPModel` (built from its config by `tests/python/tiny_clip.py`,
//! no weights can be downloaded here) is exported by `scripts/export_encoders.py --clip`; the
//! exported towers, run by the model crate from Rust (tokenizer included), give transformers'
//! own vectors; and the real trainer and server use them unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

use imagesearch_model::{ImageEncoder, TextEncoder};
use imagesearch_tests::{assert_serves_a_version_on, venv_python};

fn python(args: &[&str]) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(venv_python()).current_dir(&root).args(args).output().unwrap();
    assert!(out.status.success(), "python {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Exports the tiny checkpoint into `dir/encoders` as `tiny-clip-image` and `tiny-clip-text`
/// (with `open_clip`, after writing it in open_clip's layout, one GELU for both towers); returns
/// the encoder directory and transformers' reference outputs.
fn exported(dir: &Path, open_clip: bool) -> (PathBuf, serde_json::Value) {
    let ckpt = dir.join("ckpt");
    let enc = dir.join("encoders");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    if open_clip {
        python(&["tests/python/tiny_clip.py", "make", &s(&ckpt), "gelu"]);
        python(&["tests/python/tiny_clip.py", "open-clip", &s(&ckpt), &s(&dir.join("open_clip"))]);
    } else {
        python(&["tests/python/tiny_clip.py", "make", &s(&ckpt)]);
    }
    let source = if open_clip { dir.join("open_clip") } else { ckpt.clone() };
    python(&["scripts/export_encoders.py", "--out", &s(&enc), "--clip", &s(&source), "--clip-name", "tiny-clip"]);
    let reference = python(&["tests/python/tiny_clip.py", "reference", &s(&ckpt)]);
    (enc, serde_json::from_slice(&reference).unwrap())
}

/// The export's failure message, for a checkpoint that must be refused.
fn refused(ckpt: &Path, out: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let run = Command::new(venv_python())
        .current_dir(&root)
        .args(["scripts/export_encoders.py", "--out", out.to_str().unwrap(), "--clip", ckpt.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!run.status.success(), "the export of {ckpt:?} should fail");
    assert!(!out.join("clip-image").exists() && !out.join("clip-text").exists(), "nothing half-exported");
    String::from_utf8_lossy(&run.stderr).into_owned()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: dimension");
    let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "{what}: largest difference from transformers' CLIPModel {diff}");
}

/// The exported pair, run from Rust, gives transformers' vectors on the reference texts and pixels.
fn assert_reference_vectors(enc: &Path, reference: &serde_json::Value) {
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
}

#[test]
fn an_exported_clip_checkpoint_gives_transformers_vectors_and_trains_and_serves_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (enc, reference) = exported(dir.path(), false);
    assert_reference_vectors(&enc, &reference);

    // The real trainer makes a version on them, and the real server serves it.
    assert_serves_a_version_on(&enc, "tiny-clip-image", "tiny-clip-text", 1);
}

#[test]
fn an_open_clip_checkpoint_exports_to_the_same_vectors_and_unsupported_ones_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (enc, reference) = exported(dir.path(), true);
    assert_reference_vectors(&enc, &reference);
    let manifest = std::fs::read_to_string(enc.join("tiny-clip-text/manifest.json")).unwrap();
    assert!(manifest.contains("open_clip layout"), "{manifest}");

    // A variant the towers do not implement is refused by the setting's name, never guessed.
    let oc = dir.path().join("open_clip");
    let config_path = oc.join("open_clip_config.json");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    let mut variant = config.clone();
    variant["model_cfg"]["text_cfg"]["hf_model_name"] = "roberta-base".into();
    std::fs::write(&config_path, variant.to_string()).unwrap();
    let why = refused(&oc, &dir.path().join("out1"));
    assert!(why.contains("text_cfg.hf_model_name") && why.contains("not supported"), "{why}");
    std::fs::write(&config_path, config.to_string()).unwrap();

    // A weights file that is a pickle of more than tensors is not run: weights_only refuses it.
    let weights = oc.join("open_clip_pytorch_model.bin");
    python(&["-c", &format!(
        "import collections, torch; torch.save({{'x': collections.Counter('ab')}}, {:?})",
        weights.to_str().unwrap()
    )]);
    let why = refused(&oc, &dir.path().join("out2"));
    assert!(why.contains("open_clip_pytorch_model.bin"), "{why}");

    // Weights of another architecture name the first missing weight.
    python(&["-c", &format!("import torch; torch.save({{'x': torch.zeros(2)}}, {:?})", weights.to_str().unwrap())]);
    let why = refused(&oc, &dir.path().join("out3"));
    assert!(why.contains("missing") && why.contains("visual.conv1.weight"), "{why}");
}
