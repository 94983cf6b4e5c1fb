//! Which views of a photo make its image vector: the photo and its left-right mirror image (as
//! in training: two encoder passes), the photo alone (half the cost; Score's default), or
//! fourteen views — the whole photo, its centre square and five crops (four corners and the
//! centre), each also mirrored — whose mean is a steadier gallery vector, paid once per photo
//! at index time. The accuracy of each is measured with `imagesearch-train eval --image-views`.

use std::fmt;
use std::str::FromStr;

use image::RgbImage;
use tch::{Kind, Tensor};

use crate::preprocess::{to_input_region, Region};

/// The views of a photo that are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ImageViews {
    /// Mean of the photo's and its mirror image's vectors.
    #[default]
    Both,
    /// The photo alone.
    Original,
    /// Mean over 14 views: whole, centre square and five crops, each as is and mirrored.
    Crops,
}

/// The part of a photo a view shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Crop {
    /// The whole photo.
    Whole,
    /// The centred square of the shorter side.
    Square,
    TopLeft,
    TopRight,
    BottomLeft,
    BottomRight,
    /// The centred crop of the five-crop size.
    Centre,
}

/// Side of each of the five crops, as a fraction of the photo's side.
pub const FIVE_CROP_FRACTION: f64 = 0.7;

impl Crop {
    /// Every crop, in view order.
    pub const ALL: [Crop; 7] =
        [Crop::Whole, Crop::Square, Crop::TopLeft, Crop::TopRight, Crop::BottomLeft, Crop::BottomRight, Crop::Centre];

    /// The crop's rectangle in a `width`×`height` photo; `None` for the whole photo.
    pub fn region(self, width: u32, height: u32) -> Option<Region> {
        let side = |s: u32| ((f64::from(s) * FIVE_CROP_FRACTION).round() as u32).clamp(1, s.max(1));
        let (cw, ch) = (side(width), side(height));
        let (right, bottom) = (width - cw, height - ch);
        match self {
            Crop::Whole => None,
            Crop::Square => {
                let s = width.min(height);
                Some(((width - s) / 2, (height - s) / 2, s, s))
            }
            Crop::TopLeft => Some((0, 0, cw, ch)),
            Crop::TopRight => Some((right, 0, cw, ch)),
            Crop::BottomLeft => Some((0, bottom, cw, ch)),
            Crop::BottomRight => Some((right, bottom, cw, ch)),
            Crop::Centre => Some((right / 2, bottom / 2, cw, ch)),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Crop::Whole => "whole",
            Crop::Square => "square",
            Crop::TopLeft => "top-left",
            Crop::TopRight => "top-right",
            Crop::BottomLeft => "bottom-left",
            Crop::BottomRight => "bottom-right",
            Crop::Centre => "centre",
        }
    }
}

/// One encoder pass over a photo: a crop, as is or mirrored left-right.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct View {
    pub crop: Crop,
    pub mirrored: bool,
}

impl View {
    /// The whole photo as is.
    pub const ORIGINAL: View = View { crop: Crop::Whole, mirrored: false };
    /// The whole photo mirrored.
    pub const MIRRORED: View = View { crop: Crop::Whole, mirrored: true };

    /// A stable name ("original" and "mirrored" for the whole photo, as vector caches written
    /// before crops existed name them; "top-left/mirrored" and so on for crops).
    pub fn tag(self) -> String {
        match (self.crop, self.mirrored) {
            (Crop::Whole, false) => "original".into(),
            (Crop::Whole, true) => "mirrored".into(),
            (c, false) => c.name().into(),
            (c, true) => format!("{}/mirrored", c.name()),
        }
    }

    /// The encoder input of this view of `img` (CHW f32, `width`×`height`).
    pub fn input(self, img: &RgbImage, width: u32, height: u32) -> Vec<f32> {
        to_input_region(img, self.crop.region(img.width(), img.height()), width, height, self.mirrored)
    }
}

const BOTH: [View; 2] = [View::ORIGINAL, View::MIRRORED];
const ORIGINAL: [View; 1] = [View::ORIGINAL];
const CROPS: [View; 14] = {
    let mut out = [View::ORIGINAL; 14];
    let mut i = 0;
    while i < 7 {
        out[2 * i] = View { crop: Crop::ALL[i], mirrored: false };
        out[2 * i + 1] = View { crop: Crop::ALL[i], mirrored: true };
        i += 1;
    }
    out
};

impl ImageViews {
    /// The views to encode, in order.
    pub fn views(self) -> &'static [View] {
        match self {
            ImageViews::Both => &BOTH,
            ImageViews::Original => &ORIGINAL,
            ImageViews::Crops => &CROPS,
        }
    }

    /// The encoder inputs of this setting's views of `img`.
    pub fn inputs(self, img: &RgbImage, width: u32, height: u32) -> Vec<Vec<f32>> {
        self.views().iter().map(|v| v.input(img, width, height)).collect()
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
            "crops" => Ok(ImageViews::Crops),
            other => Err(format!("image views '{other}': use both, original or crops")),
        }
    }
}

impl fmt::Display for ImageViews {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImageViews::Both => "both",
            ImageViews::Original => "original",
            ImageViews::Crops => "crops",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for v in [ImageViews::Both, ImageViews::Original, ImageViews::Crops] {
            assert_eq!(v.to_string().parse::<ImageViews>(), Ok(v));
        }
        assert!("mirror".parse::<ImageViews>().is_err());
        assert_eq!(ImageViews::Both.views(), &[View::ORIGINAL, View::MIRRORED]);
        assert_eq!(ImageViews::Crops.views().len(), 14);
        let tags: std::collections::BTreeSet<String> = ImageViews::Crops.views().iter().map(|v| v.tag()).collect();
        assert_eq!(tags.len(), 14, "every view has its own cache tag");
        assert_eq!(View::ORIGINAL.tag(), "original");
        assert_eq!(View::MIRRORED.tag(), "mirrored");
    }

    #[test]
    fn crops_lie_inside_the_photo_and_cut_where_they_say() {
        for (w, h) in [(500, 375), (375, 500), (224, 224), (1, 1), (3, 2)] {
            for c in Crop::ALL {
                if let Some((x, y, cw, ch)) = c.region(w, h) {
                    assert!(cw >= 1 && ch >= 1 && x + cw <= w && y + ch <= h, "{c:?} of {w}x{h}: {x},{y} {cw}x{ch}");
                }
            }
        }
        assert_eq!(Crop::Square.region(500, 375), Some((62, 0, 375, 375)));
        assert_eq!(Crop::BottomRight.region(500, 375), Some((150, 112, 350, 263)));
        // A photo whose left half is black and right half white: the top-left crop is darker
        // than the top-right one, and mirroring a crop swaps its columns.
        let img = RgbImage::from_fn(100, 60, |x, _| if x < 50 { image::Rgb([0, 0, 0]) } else { image::Rgb([255, 255, 255]) });
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        let left = View { crop: Crop::TopLeft, mirrored: false }.input(&img, 8, 8);
        let right = View { crop: Crop::TopRight, mirrored: false }.input(&img, 8, 8);
        assert!(mean(&left) < 0.35 && mean(&right) > 0.65, "{} {}", mean(&left), mean(&right));
        let flipped = View { crop: Crop::TopLeft, mirrored: true }.input(&img, 8, 8);
        assert_eq!(flipped[0], left[7]);
        assert_eq!(View::ORIGINAL.input(&img, 8, 8), crate::preprocess::to_input(&img, 8, 8, false));
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
