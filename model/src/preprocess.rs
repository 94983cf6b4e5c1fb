//! Image decoding and preprocessing: bytes in, a checked RGB image, then the encoder's input
//! (CHW f32 in [0, 1], whole photo resized to the encoder's size with a triangle filter).
//!
//! Decoding is guarded: the header is read first and a photo whose claimed size exceeds the
//! pixel limit is refused before any pixel buffer is allocated (decompression bombs).

use std::io::Cursor;

use image::{imageops, DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

/// Limits on what a photo may be.
#[derive(Clone, Copy, Debug)]
pub struct ImageLimits {
    /// Largest encoded size in bytes.
    pub max_bytes: usize,
    /// Largest width × height.
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits { max_bytes: 20 << 20, max_pixels: 40_000_000 }
    }
}

/// Why a photo was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image is empty (0 bytes)")]
    Empty,
    #[error("image is {bytes} bytes, more than the limit of {max} bytes")]
    TooLarge { bytes: usize, max: usize },
    #[error("image format not recognised (JPEG, PNG or WebP expected)")]
    UnknownFormat,
    #[error("image format {0:?} is not accepted (JPEG, PNG or WebP expected)")]
    UnsupportedFormat(ImageFormat),
    #[error("image claims {width}x{height} pixels, more than the limit of {max} pixels")]
    TooManyPixels { width: u32, height: u32, max: u64 },
    #[error("image has a zero dimension ({width}x{height})")]
    ZeroSize { width: u32, height: u32 },
    #[error("image is corrupt or truncated: {0}")]
    Corrupt(String),
}

/// A reader for bytes within the size limit in an accepted format (JPEG, PNG, WebP).
fn accepted_reader(bytes: &[u8], limits: ImageLimits) -> Result<(ImageReader<Cursor<&[u8]>>, ImageFormat), ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(ImageError::TooLarge { bytes: bytes.len(), max: limits.max_bytes });
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    let format = reader.format().ok_or(ImageError::UnknownFormat)?;
    if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP) {
        return Err(ImageError::UnsupportedFormat(format));
    }
    Ok((reader, format))
}

/// Refuses a claimed size that is empty or over the pixel limit.
fn check_size(width: u32, height: u32, limits: ImageLimits) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::ZeroSize { width, height });
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ImageError::TooManyPixels { width, height, max: limits.max_pixels });
    }
    Ok(())
}

/// Decodes JPEG, PNG or WebP bytes into RGB, applying the EXIF orientation, within `limits`.
pub fn decode(bytes: &[u8], limits: ImageLimits) -> Result<RgbImage, ImageError> {
    let (reader, format) = accepted_reader(bytes, limits)?;
    // The JPEG decoder fills a truncated file with grey instead of failing: check its end.
    if format == ImageFormat::Jpeg {
        if let Some(fault) = jpeg_fault(bytes) {
            return Err(ImageError::Corrupt(fault.to_string()));
        }
    }
    let mut decoder = reader.into_decoder().map_err(|e| ImageError::Corrupt(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    check_size(width, height, limits)?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img =
        DynamicImage::from_decoder(decoder).map_err(|e| ImageError::Corrupt(e.to_string()))?;
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

/// What is wrong with a JPEG's marker structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JpegFault {
    /// The file ends inside a segment or a scan, before its end-of-image marker.
    Truncated,
    /// A byte that cannot be there (a bad marker or segment) at this offset.
    Corrupt(usize),
}

impl std::fmt::Display for JpegFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JpegFault::Truncated => f.write_str("JPEG ends before its end-of-image marker"),
            JpegFault::Corrupt(at) => write!(f, "JPEG has an invalid marker or segment at byte {at}"),
        }
    }
}

/// Whether a JPEG's main image runs to its end-of-image marker.
pub fn jpeg_is_complete(b: &[u8]) -> bool {
    jpeg_fault(b).is_none()
}

/// Walks a JPEG's marker segments (skipping APPn payloads, where an EXIF thumbnail has its own
/// markers), then the entropy-coded scans, until EOI. A file cut short ends inside a segment or
/// a scan ([`JpegFault::Truncated`]); a byte that no valid file has there is
/// [`JpegFault::Corrupt`] (the decoder would otherwise fill the rest with grey).
pub fn jpeg_fault(b: &[u8]) -> Option<JpegFault> {
    if b.len() < 4 {
        return Some(JpegFault::Truncated);
    }
    if b[0] != 0xFF || b[1] != 0xD8 {
        return Some(JpegFault::Corrupt(0));
    }
    let mut i = 2;
    let mut in_scan = false;
    while i + 1 < b.len() {
        if b[i] != 0xFF {
            if !in_scan {
                return Some(JpegFault::Corrupt(i));
            }
            i += 1;
            continue;
        }
        let m = b[i + 1];
        match m {
            0xD9 => return None,
            // A fill byte before a marker.
            0xFF => i += 1,
            // A stuffed 0xFF inside a scan.
            0x00 if in_scan => i += 2,
            // Restart markers and TEM stand alone.
            0x01 | 0xD0..=0xD7 => i += 2,
            // Reserved markers (and a stuffed zero outside a scan) never occur.
            0x00 | 0x02..=0xBF => return Some(JpegFault::Corrupt(i)),
            _ => {
                if i + 3 >= b.len() {
                    return Some(JpegFault::Truncated);
                }
                let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
                if len < 2 {
                    return Some(JpegFault::Corrupt(i + 2));
                }
                i += 2 + len;
                in_scan = m == 0xDA;
            }
        }
    }
    Some(JpegFault::Truncated)
}

/// The width and height a photo claims, read from its header only (no pixel is decoded),
/// within `limits`.
pub fn dimensions(bytes: &[u8], limits: ImageLimits) -> Result<(u32, u32), ImageError> {
    let (reader, _) = accepted_reader(bytes, limits)?;
    let (width, height) = reader.into_dimensions().map_err(|e| ImageError::Corrupt(e.to_string()))?;
    check_size(width, height, limits)?;
    Ok((width, height))
}

/// Resizes the whole photo to `width`×`height` (aspect not kept, triangle filter), optionally
/// mirrored left-right, and lays it out as CHW f32 in [0, 1]. The resize is SIMD convolution
/// (`fast_image_resize`, measured ~10× faster than `image`'s on a 500×375 photo), within one
/// or two levels of 255 of `image`'s triangle filter, which the first versions were trained on.
pub fn to_input(img: &RgbImage, width: u32, height: u32, mirror: bool) -> Vec<f32> {
    to_input_region(img, None, width, height, mirror)
}

/// A rectangle of a photo in pixels: left, top, width, height.
pub type Region = (u32, u32, u32, u32);

/// [`to_input`] of a `region` of the photo (clamped to it; `None` = the whole photo): the
/// region is cut out, then resized and optionally mirrored.
pub fn to_input_region(img: &RgbImage, region: Option<Region>, width: u32, height: u32, mirror: bool) -> Vec<f32> {
    let cropped;
    let source = match region {
        Some((x, y, w, h)) if (x, y, w, h) != (0, 0, img.width(), img.height()) => {
            let x = x.min(img.width().saturating_sub(1));
            let y = y.min(img.height().saturating_sub(1));
            let w = w.clamp(1, img.width() - x);
            let h = h.clamp(1, img.height() - y);
            cropped = imageops::crop_imm(img, x, y, w, h).to_image();
            &cropped
        }
        _ => img,
    };
    let mut resized = resize(source, width, height);
    if mirror {
        imageops::flip_horizontal_in_place(&mut resized);
    }
    let plane = (width * height) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in resized.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = f32::from(px[c]) / 255.0;
        }
    }
    out
}

/// The triangle-filter resize of [`to_input`]; `image`'s own resize when SIMD cannot take it.
fn resize(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    use fast_image_resize::{images::Image, images::ImageRef, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
    thread_local! {
        static RESIZER: std::cell::RefCell<Resizer> = std::cell::RefCell::new(Resizer::new());
    }
    let fast = ImageRef::new(img.width(), img.height(), img.as_raw(), PixelType::U8x3).ok().and_then(|src| {
        let mut dst = Image::new(width, height, PixelType::U8x3);
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        RESIZER.with(|r| r.borrow_mut().resize(&src, &mut dst, &options)).ok()?;
        RgbImage::from_raw(width, height, dst.into_vec())
    });
    fast.unwrap_or_else(|| imageops::resize(img, width, height, imageops::FilterType::Triangle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn a_jpeg_cut_short_is_refused() {
        let img = RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 3) as u8, (y * 5) as u8, ((x + y) * 2) as u8]));
        let mut jpeg = Cursor::new(Vec::new());
        img.write_to(&mut jpeg, ImageFormat::Jpeg).unwrap();
        let jpeg = jpeg.into_inner();
        assert!(jpeg_is_complete(&jpeg));
        assert!(decode(&jpeg, ImageLimits::default()).is_ok());
        for cut in [jpeg.len() / 3, jpeg.len() / 2, jpeg.len() - 2] {
            let err = decode(&jpeg[..cut], ImageLimits::default()).unwrap_err();
            assert!(matches!(err, ImageError::Corrupt(_)), "cut at {cut}: {err}");
        }
        assert_eq!(jpeg_fault(&jpeg[..jpeg.len() / 2]), Some(JpegFault::Truncated));
        // A corrupted middle (inside the scan of a photo-sized file) is reported as corrupt, not
        // as truncated.
        let img = RgbImage::from_fn(256, 256, |x, y| image::Rgb([(x * 7 ^ y * 3) as u8, (y * 5) as u8, ((x * y) % 251) as u8]));
        let mut jpeg = Cursor::new(Vec::new());
        img.write_to(&mut jpeg, ImageFormat::Jpeg).unwrap();
        let jpeg = jpeg.into_inner();
        let mut broken = jpeg.clone();
        let mid = jpeg.len() / 2;
        broken[mid] = 0xFF;
        broken[mid + 1] = 0x37;
        assert_eq!(jpeg_fault(&broken), Some(JpegFault::Corrupt(mid)));
        let err = decode(&broken, ImageLimits::default()).unwrap_err().to_string();
        assert!(err.contains("invalid marker") && !err.contains("ends before"), "{err}");
        // Data appended after the end-of-image marker (camera trailers) is fine.
        let mut trailer = jpeg.clone();
        trailer.extend_from_slice(b"trailing bytes");
        assert!(jpeg_is_complete(&trailer));
    }

    #[test]
    fn every_photo_of_the_shared_data_counts_as_complete() {
        // The shared data sits beside the clone (`../shared/data`, or `$IMAGESEARCH_DATA`); it
        // is always there in CI, so its absence is a failure, not a pass over nothing.
        let root = std::env::var_os("IMAGESEARCH_DATA")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
        let dirs = ["image_search/train_images", "image_search/test_images", "flickr8k_train/images"];
        let mut n = 0;
        for d in dirs {
            let dir = root.join(d);
            let entries = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("cannot read the shared photos in {}: {e} (the shared data belongs in ../shared/data or $IMAGESEARCH_DATA)", dir.display()));
            for e in entries.filter_map(Result::ok) {
                let bytes = std::fs::read(e.path()).unwrap();
                assert!(jpeg_is_complete(&bytes), "{} judged truncated", e.path().display());
                n += 1;
            }
        }
        assert!(n > 7000, "only {n} photos checked in {}: the shared data (../shared/data or $IMAGESEARCH_DATA) is missing or incomplete", root.display());
    }

    #[test]
    fn the_simd_resize_matches_the_triangle_filter_on_real_photos() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/image_search/test_images");
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files.iter().take(5) {
            let img = decode(&std::fs::read(f).unwrap(), ImageLimits::default()).unwrap();
            let ours = resize(&img, 224, 224);
            let theirs = imageops::resize(&img, 224, 224, imageops::FilterType::Triangle);
            let diffs: Vec<i32> = ours.as_raw().iter().zip(theirs.as_raw()).map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs()).collect();
            let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
            assert!(*diffs.iter().max().unwrap() <= 3 && mean < 0.5, "{}: max {} mean {mean}", f.display(), diffs.iter().max().unwrap());
        }
    }

    #[test]
    fn decodes_and_lays_out_chw() {
        let img = decode(&png(4, 2), ImageLimits::default()).unwrap();
        assert_eq!(img.dimensions(), (4, 2));
        let input = to_input(&img, 4, 2, false);
        assert_eq!(input.len(), 3 * 8);
        assert_eq!(input[1], 1.0 / 255.0); // red channel = x
        assert_eq!(input[16], 7.0 / 255.0); // blue plane
        let mirrored = to_input(&img, 4, 2, true);
        assert_eq!(mirrored[0], input[3]);
    }

    #[test]
    fn refuses_bad_input_with_reasons() {
        let limits = ImageLimits::default();
        assert!(matches!(decode(&[], limits), Err(ImageError::Empty)));
        assert!(matches!(decode(b"not an image at all", limits), Err(ImageError::UnknownFormat)));
        let mut truncated = png(64, 64);
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(decode(&truncated, limits), Err(ImageError::Corrupt(_))));
        let small = ImageLimits { max_bytes: 10, ..limits };
        assert!(matches!(decode(&png(4, 4), small), Err(ImageError::TooLarge { .. })));
    }

    /// CRC-32 (IEEE) as PNG chunks use it.
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    #[test]
    fn refuses_decompression_bomb_from_header() {
        // A PNG header claiming 50000x50000 pixels: refused before any pixel is allocated.
        let mut bytes = png(1, 1);
        bytes[16..20].copy_from_slice(&50_000u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&50_000u32.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = decode(&bytes, ImageLimits::default()).unwrap_err();
        assert!(
            matches!(err, ImageError::TooManyPixels { width: 50_000, height: 50_000, .. }),
            "{err}"
        );
    }
}
