//! What the model crate's integration tests share: the exported encoders and real photos.

use std::path::PathBuf;

use imagesearch_model::preprocess::{decode, to_input};
use imagesearch_model::{ImageEncoder, ImageLimits};

/// The exported encoders (`scripts/setup.sh` sets `IMAGESEARCH_ENCODERS`).
pub fn encoders() -> PathBuf {
    std::env::var_os("IMAGESEARCH_ENCODERS").map(PathBuf::from).expect("IMAGESEARCH_ENCODERS (scripts/setup.sh sets it)")
}

/// The first `n` test photos (by name) as `encoder`'s input.
pub fn first_test_photos(encoder: &ImageEncoder, n: usize) -> Vec<Vec<f32>> {
    let photos = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/image_search/test_images");
    let mut files: Vec<_> = std::fs::read_dir(&photos).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let (w, h) = encoder.input_size();
    files[..n]
        .iter()
        .map(|f| to_input(&decode(&std::fs::read(f).unwrap(), ImageLimits::default()).unwrap(), w, h, false))
        .collect()
}
