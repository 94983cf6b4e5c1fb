//! Tuning the text encoder (LiT) on the real MiniLM: the tuned module is written as a new,
//! verifiable encoder whose vectors differ from the base's, and tuning raises the recall it
//! is chosen by.

use std::fs;

use imagesearch_model::{EncoderManifest, TextEncoder};
use imagesearch_tests::encoders;
use imagesearch_trainer::text_tuning::{tune, TuneConfig, TuneSet};
use tch::{Device, Kind, Tensor};

/// Eight "photos" (fixed random vectors: the locked side) with three captions each.
fn captions() -> Vec<(i64, String)> {
    let things = ["a red kite", "a black dog", "a wooden boat", "a snowy mountain", "a busy market", "a yellow taxi", "a surfer on a wave", "a cat on a sofa"];
    let frames = ["{} in the afternoon", "a photo of {}", "there is {} here"];
    let mut out = Vec::new();
    for (p, thing) in things.iter().enumerate() {
        for f in frames {
            out.push((p as i64, f.replace("{}", thing)));
        }
    }
    out
}

#[test]
fn tuning_writes_a_new_verified_encoder_that_reads_texts_differently() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("encoders");
    fs::create_dir_all(&repo).unwrap();
    let base = TextEncoder::load(&encoders().join("minilm-l6-v2"), Device::Cpu).unwrap();

    tch::manual_seed(3);
    let photos = Tensor::randn([8, 32], (Kind::Float, Device::Cpu));
    let mirrored = &photos + Tensor::randn([8, 32], (Kind::Float, Device::Cpu)) * 0.05;
    let rows = captions();
    let texts: Vec<String> = rows.iter().map(|(_, t)| t.clone()).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = base.encode(&refs).unwrap();
    let pairs: Vec<(i64, i64)> = rows.iter().enumerate().map(|(i, (p, _))| (*p, i as i64)).collect();
    let caption_photo: Vec<i64> = rows.iter().map(|(p, _)| *p).collect();
    // Validation on the training set itself: what tuning fits, it must then rank better.
    let set = TuneSet {
        photos_original: &photos,
        photos_mirrored: &mirrored,
        captions: &texts,
        caption_vectors: &vectors,
        pairs: &pairs,
        val_photos: &photos,
        val_captions: &texts,
        val_caption_photo: &caption_photo,
    };
    // No warm-up: epoch 0 is random projections over the base encoder (about chance), so the
    // tuned epochs must beat it.
    let cfg = TuneConfig { epochs: 4, lr: 1e-4, head_lr: 1e-2, warmup_epochs: 0, batch_size: 8, dim: 16, ..TuneConfig::default() };
    let mut seen = Vec::new();
    let report = tune(&cfg, &base, &repo, &set, Device::Cpu, &mut |e| seen.push(e.epoch)).unwrap();

    assert_eq!(seen, vec![0, 1, 2, 3, 4]);
    assert_eq!(report.epochs.len(), 5);
    assert!(report.best_epoch >= 1);
    let best = &report.epochs[report.best_epoch];
    assert!(best.val_mean_recall > report.epochs[0].val_mean_recall, "{:?}", report.epochs);
    assert_eq!(report.base_sha256, base.manifest.sha256());

    // The new encoder: named by its hash, every file listed with a sha256 that verifies on load.
    let name = report.encoder.clone().expect("an epoch beat the base encoder");
    assert!(name.starts_with("minilm-l6-v2-lit-"), "{name}");
    let dir = repo.join(&name);
    let tuned = TextEncoder::load(&dir, Device::Cpu).unwrap();
    let manifest = EncoderManifest::load(&dir).unwrap();
    assert_eq!(manifest.name, name);
    assert!(name.ends_with(&manifest.sha256()[..12]));
    assert_eq!(manifest.output_dim, base.manifest.output_dim);
    assert!(manifest.source.contains(base.manifest.sha256()), "{}", manifest.source);
    assert!(manifest.serving.is_empty(), "a tuned encoder has no serving variants yet");
    assert_eq!(fs::read(dir.join("tokenizer.json")).unwrap(), fs::read(base.dir.join("tokenizer.json")).unwrap());
    // No staging directory is left behind.
    assert_eq!(fs::read_dir(&repo).unwrap().count(), 1);

    // It reads texts differently from the base, still as unit vectors.
    let before = base.encode(&refs).unwrap();
    let after = tuned.encode(&refs).unwrap();
    let norms = after.norm_scalaropt_dim(2, [1], false);
    assert!((norms - 1.0).abs().max().double_value(&[]) < 1e-4);
    let cos = (&before * &after).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    assert!(cos.min().double_value(&[]) < 0.9999, "the tuned encoder did not change");

    // A tampered file is refused, as for any encoder.
    let mut bytes = fs::read(dir.join("encoder.pt")).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    fs::write(dir.join("encoder.pt"), bytes).unwrap();
    assert!(TextEncoder::load(&dir, Device::Cpu).is_err());
}
