//! The second image encoder, `efficientnet-lite0-lite2` (`scripts/export_encoders.py
//! --lite-pair`): drops in through its manifest alone (260 px input, 2,560-d output), its first
//! 1,280 features are Lite0's own, and its serving files give its reference vectors.

mod common;

use common::{encoders, first_test_photos};
use imagesearch_model::{EncoderFile, ImageEncoder};
use tch::{Device, Tensor};

fn encode(encoder: &ImageEncoder, inputs: &[Vec<f32>]) -> Tensor {
    let views: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
    encoder.encode(&views).unwrap()
}

#[test]
fn the_lite_pair_reads_260_pixels_and_its_first_half_is_lite0s_features() {
    let pair = ImageEncoder::load_file(&encoders().join("efficientnet-lite0-lite2"), Device::Cpu, EncoderFile::Reference).unwrap();
    let lite0 = ImageEncoder::load_file(&encoders().join("efficientnet-lite0"), Device::Cpu, EncoderFile::Reference).unwrap();
    assert_eq!(pair.input_size(), (260, 260));
    assert_eq!(pair.manifest.output_dim, 2560);
    let both = encode(&pair, &first_test_photos(&pair, 6));
    assert_eq!(both.size(), [6, 2560]);
    let own = encode(&lite0, &first_test_photos(&lite0, 6));
    // Lite0 reads a bilinear 224 px copy of the 260 px input instead of the photo resized to
    // 224 directly: close, not equal. Another photo's Lite0 vector is much further.
    let first = both.narrow(1, 0, 1280);
    let same = Tensor::cosine_similarity(&first, &own, 1, 1e-8);
    let other = Tensor::cosine_similarity(&first, &own.roll([1i64].as_slice(), [0i64].as_slice()), 1, 1e-8);
    let (worst_same, best_other) = (same.min().double_value(&[]), other.max().double_value(&[]));
    assert!(worst_same > 0.9, "Lite0's half against Lite0's own vectors: cosine {worst_same}");
    assert!(worst_same > best_other, "another photo ({best_other}) is as close as the same photo ({worst_same})");
    let second = both.narrow(1, 1280, 1280);
    assert!(second.abs().sum(tch::Kind::Float).double_value(&[]) > 0.0, "Lite2's half is empty");
}

#[test]
fn the_lite_pair_serving_files_give_its_reference_vectors() {
    let dir = encoders().join("efficientnet-lite0-lite2");
    let reference = ImageEncoder::load_file(&dir, Device::Cpu, EncoderFile::Reference).unwrap();
    let inputs = first_test_photos(&reference, 3);
    let want = encode(&reference, &inputs);
    let serving = ImageEncoder::load_file(&dir, Device::Cpu, EncoderFile::Serving).unwrap();
    assert_ne!(serving.manifest.file_for(EncoderFile::Serving, Device::Cpu), serving.manifest.file);
    let d = (encode(&serving, &inputs) - &want).abs().max().double_value(&[]);
    assert!(d < 1e-3, "fp32 serving file differs by {d}");
    let bf16 = ImageEncoder::load_file(&dir, Device::Cpu, EncoderFile::ServingBf16).unwrap();
    let cos = Tensor::cosine_similarity(&encode(&bf16, &inputs), &want, 1, 1e-8).min().double_value(&[]);
    assert!(cos > 0.98, "bf16 serving file: cosine to the reference {cos}");
}
