//! Photo thumbnails for the report: a photo read from disk, decoded through the model crate's
//! guarded decoder ([`preprocess::decode`]: size, format and pixel-count checks before any
//! pixel buffer is allocated, EXIF orientation applied), shrunk and embedded as a base64 JPEG
//! `data:` URI so the page stands alone.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::DynamicImage;
use imagesearch_model::preprocess::{self, ImageError, ImageLimits};

/// Why a thumbnail could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The image file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The guarded decoder refused the photo (too large, too many pixels, unknown format,
    /// corrupt or truncated).
    #[error("image {path}: {source}")]
    Decode {
        /// The image file.
        path: PathBuf,
        /// Why it was refused.
        #[source]
        source: ImageError,
    },
    /// The thumbnail could not be encoded.
    #[error("thumbnail of {path}: {source}")]
    Encode {
        /// The image file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: image::ImageError,
    },
}

/// Makes a `data:image/jpeg;base64,…` thumbnail of the photo at `path`.
///
/// The photo is decoded with the model crate's guarded decoder within the default
/// [`ImageLimits`] (a file over the byte limit is refused before it is read, one claiming too
/// many pixels from its header, before decoding), turned upright by its EXIF orientation,
/// shrunk with a Triangle filter so its longest side is `max_side` (aspect kept; smaller
/// photos are not enlarged), and encoded as JPEG quality 80.
pub fn thumbnail_data_uri(path: &Path, max_side: u32) -> Result<String, ReportError> {
    let limits = ImageLimits::default();
    let io_err = |source| ReportError::Io { path: path.to_path_buf(), source };
    let decode_err = |source| ReportError::Decode { path: path.to_path_buf(), source };
    let len = std::fs::metadata(path).map_err(io_err)?.len();
    if len > limits.max_bytes as u64 {
        let bytes = usize::try_from(len).unwrap_or(usize::MAX);
        return Err(decode_err(ImageError::TooLarge { bytes, max: limits.max_bytes }));
    }
    let bytes = std::fs::read(path).map_err(io_err)?;
    let mut img = DynamicImage::ImageRgb8(preprocess::decode(&bytes, limits).map_err(decode_err)?);
    let side = max_side.max(1);
    if img.width() > side || img.height() > side {
        img = img.resize(side, side, FilterType::Triangle);
    }
    let rgb = img.into_rgb8();
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, 80)
        .encode_image(&rgb)
        .map_err(|source| ReportError::Encode { path: path.to_path_buf(), source })?;
    Ok(format!("data:image/jpeg;base64,{}", base64::engine::general_purpose::STANDARD.encode(&jpeg)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC-32 (IEEE) for hand-made PNG chunks.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn temp_path(tag: &str) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        std::env::temp_dir().join(format!(
            "report-test-{}-{nanos}-{}-{tag}.png",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }

    #[test]
    fn thumbnail_of_tiny_png() {
        let path = temp_path("tiny");
        let img = image::RgbaImage::from_fn(40, 20, |x, y| {
            image::Rgba([(x * 6) as u8, (y * 12) as u8, 90, 255 - x as u8])
        });
        img.save(&path).unwrap();
        let uri = thumbnail_data_uri(&path, 10);
        let small = thumbnail_data_uri(&path, 100);
        std::fs::remove_file(&path).unwrap();

        let b64 = uri
            .unwrap()
            .strip_prefix("data:image/jpeg;base64,")
            .expect("prefix")
            .to_string();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let thumb = preprocess::decode(&bytes, ImageLimits::default()).unwrap();
        assert_eq!((thumb.width(), thumb.height()), (10, 5));

        let b64 = small
            .unwrap()
            .strip_prefix("data:image/jpeg;base64,")
            .unwrap()
            .to_string();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let thumb = preprocess::decode(&bytes, ImageLimits::default()).unwrap();
        assert_eq!((thumb.width(), thumb.height()), (40, 20), "never enlarged");
    }

    #[test]
    fn thumbnail_refuses_huge_and_missing_images() {
        // A PNG header claiming 10000×6000 (60 MP) with no pixel data: it must
        // be refused from the header alone.
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&10_000u32.to_be_bytes());
        ihdr.extend_from_slice(&6_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend_from_slice(&13u32.to_be_bytes());
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
        // A truncated IDAT chunk: enough for the header parser to stop.
        png.extend_from_slice(&4u32.to_be_bytes());
        png.extend_from_slice(b"IDAT\x78\x9c\x00\x00");
        let path = temp_path("huge");
        std::fs::write(&path, &png).unwrap();
        let res = thumbnail_data_uri(&path, 64);
        std::fs::remove_file(&path).unwrap();
        match res {
            Err(ReportError::Decode { source: ImageError::TooManyPixels { width: 10_000, height: 6_000, .. }, .. }) => {}
            other => panic!("expected TooManyPixels, got {other:?}"),
        }

        let missing = temp_path("missing");
        assert!(matches!(
            thumbnail_data_uri(&missing, 64),
            Err(ReportError::Io { .. })
        ));
    }
}
