//! The serving encoder files (`scripts/export_encoders.py`'s variants) give the reference
//! files' vectors within tolerance, on real photos and texts; the identity stays the reference.

mod common;

use common::{encoders, first_test_photos};
use imagesearch_model::{EncoderFile, ImageEncoder, TextEncoder};
use tch::{Device, Tensor};

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn the_image_encoder_serving_file_gives_the_reference_vectors() {
    let dir = encoders().join("efficientnet-lite0");
    let reference = ImageEncoder::load_file(&dir, Device::Cpu, EncoderFile::Reference).unwrap();
    let serving = ImageEncoder::load_file(&dir, Device::Cpu, EncoderFile::Serving).unwrap();
    let m = &serving.manifest;
    assert_ne!(m.file_for(EncoderFile::Serving, Device::Cpu), m.file, "the CPU has a serving variant");
    assert_eq!(m.sha256(), reference.manifest.sha256(), "the identity stays the reference file's");
    let inputs = first_test_photos(&reference, 4);
    let views: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
    for n in [4, 1] {
        let (a, b) = (reference.encode(&views[..n]).unwrap(), serving.encode(&views[..n]).unwrap());
        let d = max_diff(&a, &b);
        assert!(d < 1e-3, "batch {n}: image vectors differ by {d}");
    }
}

#[test]
fn the_bf16_image_encoder_file_stays_close_to_the_reference_and_answers_in_fp32() {
    let dir = encoders().join("efficientnet-lite0");
    let reference = ImageEncoder::load_file(&dir, Device::Cpu, EncoderFile::Reference).unwrap();
    let bf16 = ImageEncoder::load_file(&dir, Device::Cpu, EncoderFile::ServingBf16).unwrap();
    let m = &bf16.manifest;
    let file = m.file_for(EncoderFile::ServingBf16, Device::Cpu);
    assert!(m.serving.iter().any(|v| v.file == file && v.precision == "bf16"), "{file} is not the bf16 variant");
    let inputs = first_test_photos(&reference, 4);
    let views: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
    for n in [4, 1] {
        let (a, b) = (reference.encode(&views[..n]).unwrap(), bf16.encode(&views[..n]).unwrap());
        assert_eq!(b.kind(), tch::Kind::Float, "the bf16 file hands back fp32 vectors");
        let cos = Tensor::cosine_similarity(&a, &b, 1, 1e-8).min().double_value(&[]);
        // bf16 keeps ~3 significant digits: measured 0.990 at worst on 64 test photos.
        assert!(cos > 0.98, "batch {n}: cosine to the reference vectors {cos}");
    }
}

#[test]
fn the_text_encoder_serving_file_gives_the_reference_vectors_and_is_made_for_cuda_too() {
    let dir = encoders().join("minilm-l6-v2");
    let reference = TextEncoder::load_file(&dir, Device::Cpu, EncoderFile::Reference).unwrap();
    let serving = TextEncoder::load_file(&dir, Device::Cpu, EncoderFile::Serving).unwrap();
    let m = &serving.manifest;
    assert_ne!(m.file_for(EncoderFile::Serving, Device::Cuda(0)), m.file, "CUDA has a portable variant");
    let texts = ["a dog runs along the beach", "two people stand on a snowy mountain top at dawn", "x"];
    for n in [3, 1] {
        let (a, b) = (reference.encode(&texts[..n]).unwrap(), serving.encode(&texts[..n]).unwrap());
        assert!(max_diff(&a, &b) < 1e-5, "text vectors differ by {}", max_diff(&a, &b));
    }
}

#[test]
fn the_bf16_text_encoder_file_stays_close_to_the_reference_and_answers_in_fp32() {
    let dir = encoders().join("minilm-l6-v2");
    let reference = TextEncoder::load_file(&dir, Device::Cpu, EncoderFile::Reference).unwrap();
    let bf16 = TextEncoder::load_file(&dir, Device::Cpu, EncoderFile::ServingBf16).unwrap();
    let file = bf16.manifest.file_for(EncoderFile::ServingBf16, Device::Cpu);
    assert!(bf16.manifest.serving.iter().any(|v| v.file == file && v.precision == "bf16"), "{file} is not the bf16 variant");
    let texts = ["a dog runs along the beach", "two people stand on a snowy mountain top at dawn", "x"];
    for n in [3, 1] {
        let (a, b) = (reference.encode(&texts[..n]).unwrap(), bf16.encode(&texts[..n]).unwrap());
        assert_eq!(b.kind(), tch::Kind::Float, "the bf16 file hands back fp32 vectors");
        let cos = Tensor::cosine_similarity(&a, &b, 1, 1e-8).min().double_value(&[]);
        // Measured at least 0.9999 on 256 test queries.
        assert!(cos > 0.999, "batch {n}: cosine to the reference vectors {cos}");
    }
}
