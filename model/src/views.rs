//! Which views of a photo make its image vector: the mean of the photo and its left-right
//! mirror image (as in training: two encoder passes), or the photo alone (half the cost; the
//! accuracy cost is measured with `imagesearch-train eval --image-views original`).

use std::fmt;
use std::str::FromStr;

use tch::{Kind, Tensor};

/// The views of a photo that are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ImageViews {
    /// Mean of the photo's and its mirror image's vectors.
    #[default]
    Both,
    /// The photo alone.
    Original,
}

impl ImageViews {
    /// Mirror flags of the views to encode.
    pub fn mirrors(self) -> &'static [bool] {
        match self {
            ImageViews::Both => &[false, true],
            ImageViews::Original => &[false],
        }
    }
}

/// Serving vectors of a batch of photos from their views' encoder vectors: `[N·V, D]`, the `V`
/// views of each photo adjacent, → `[N, D]`, the mean over each photo's views (the bench's
/// batches; the server, whose batches mix photos of one and two views, uses [`photo_vector`]).
pub fn photo_vectors(encoded: &Tensor, views_per_photo: i64) -> Tensor {
    let d = encoded.size().last().copied().unwrap_or(0);
    encoded.view([-1, views_per_photo.max(1), d]).mean_dim([1i64].as_slice(), false, Kind::Float)
}

/// The serving vector of one photo from its views' encoder vectors (all of one length): the
/// same mean as [`photo_vectors`], without a tensor per photo.
pub fn photo_vector(views: &[&[f32]]) -> Vec<f32> {
    let n = views.len().max(1) as f32;
    let mut mean = vec![0.0f32; views.first().map_or(0, |v| v.len())];
    for v in views {
        for (m, x) in mean.iter_mut().zip(v.iter()) {
            *m += x;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    mean
}

impl FromStr for ImageViews {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "both" => Ok(ImageViews::Both),
            "original" => Ok(ImageViews::Original),
            other => Err(format!("image views '{other}': use both or original")),
        }
    }
}

impl fmt::Display for ImageViews {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImageViews::Both => "both",
            ImageViews::Original => "original",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for v in [ImageViews::Both, ImageViews::Original] {
            assert_eq!(v.to_string().parse::<ImageViews>(), Ok(v));
        }
        assert!("mirror".parse::<ImageViews>().is_err());
        assert_eq!(ImageViews::Both.mirrors(), &[false, true]);
    }

    #[test]
    fn a_photo_vector_is_the_mean_of_its_views() {
        assert_eq!(photo_vector(&[&[1.0, 2.0], &[3.0, 6.0]]), vec![2.0, 4.0]);
        assert_eq!(photo_vector(&[&[1.0, -2.0]]), vec![1.0, -2.0]);
        // Two photos of two views each, batched.
        let t = Tensor::from_slice(&[1.0f32, 1.0, 3.0, 3.0, 0.0, 2.0, 0.0, 4.0]).view([4, 2]);
        let m = Vec::<f32>::try_from(photo_vectors(&t, 2).view([-1])).unwrap();
        assert_eq!(m, vec![2.0, 2.0, 0.0, 3.0]);
        assert_eq!(photo_vector(&[&[1.0, 1.0], &[3.0, 3.0]]), m[..2].to_vec(), "the two agree");
    }
}
