//! Which views of a photo make its image vector: the mean of the photo and its left-right
//! mirror image (as in training: two encoder passes), or the photo alone (half the cost; the
//! accuracy cost is measured with `imagesearch-train eval --image-views original`).

use std::fmt;
use std::str::FromStr;

/// The views of a photo that are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
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
}
