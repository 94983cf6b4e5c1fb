//! Photo decoding and preprocessing as the server and trainer run them (the model crate's
//! `preprocess.rs`, compiled here without libtorch): any bytes give a photo or an error, never
//! a panic or an allocation past the pixel limit; the header-only size check agrees with the
//! decoder.
#![no_main]

#[path = "../../model/src/preprocess.rs"]
#[allow(dead_code)]
mod preprocess;

use libfuzzer_sys::fuzz_target;
use preprocess::{decode, dimensions, to_input, ImageLimits};

fuzz_target!(|data: &[u8]| {
    // Small limits keep each run fast; the guards are the same at any size.
    let limits = ImageLimits { max_bytes: 1 << 20, max_pixels: 1 << 20 };
    let header = dimensions(data, limits);
    if let Ok(img) = decode(data, limits) {
        assert!(u64::from(img.width()) * u64::from(img.height()) <= limits.max_pixels);
        assert!(header.is_ok(), "decoded a photo whose header check failed");
        let input = to_input(&img, 8, 8, true);
        assert_eq!(input.len(), 3 * 64);
        assert!(input.iter().all(|x| (0.0..=1.0).contains(x)));
    }
});
