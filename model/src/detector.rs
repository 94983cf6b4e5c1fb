//! The child detectors: logistic models on an encoder vector that say whether it may show or
//! describe a child. The photo detector reads a photo's image-encoder vector (the server flags
//! gallery photos that come without captions); the query detector reads a text's text-encoder
//! vector (the server withholds, in restricted regions, texts it flags, next to the word list:
//! either one saying child is enough). The trainer learns both from caption-derived labels and
//! stores them inside a scorer version (`child_detector.json`, `query_detector.json`, listed
//! with their sha256 in the manifest's `files`, described by its `child_detector` and
//! `query_detector`).
//!
//! The threshold is chosen for recall: a miss shows a child where the law forbids it, a false
//! alarm only hides a photo.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// File name of the detector's weights inside a scorer version directory.
pub const DETECTOR_FILE: &str = "child_detector.json";
/// File name of the query detector's weights inside a scorer version directory.
pub const QUERY_DETECTOR_FILE: &str = "query_detector.json";

/// What the scorer manifest says about its detector.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DetectorInfo {
    /// Probability at or above which a photo is flagged.
    pub threshold: f32,
    /// Recall the threshold was chosen for (on validation photos).
    pub target_recall: f64,
    /// How the labels were derived, in words.
    pub labels: String,
    /// Precision, recall and counts on held-out photos, as JSON.
    pub metrics: serde_json::Value,
}

/// The detector's parameters: standardisation then a linear layer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DetectorWeights {
    pub mean: Vec<f32>,
    pub scale: Vec<f32>,
    pub weights: Vec<f32>,
    pub bias: f32,
}

impl DetectorWeights {
    /// Probability that the photo with encoder vector `x` shows a child.
    pub fn probability(&self, x: &[f32]) -> f32 {
        let z: f32 = x
            .iter()
            .zip(&self.mean)
            .zip(&self.scale)
            .zip(&self.weights)
            .map(|(((x, m), s), w)| (x - m) / s * w)
            .sum::<f32>()
            + self.bias;
        1.0 / (1.0 + (-z).exp())
    }
}

/// A loaded detector.
#[derive(Clone, Debug)]
pub struct ChildDetector {
    pub info: DetectorInfo,
    weights: DetectorWeights,
}

impl ChildDetector {
    /// Builds a detector; the weight vectors must all have `dim` entries.
    pub fn new(info: DetectorInfo, weights: DetectorWeights, dim: usize) -> Result<Self, ModelError> {
        let lens = [weights.mean.len(), weights.scale.len(), weights.weights.len()];
        if lens.iter().any(|&l| l != dim) {
            return Err(ModelError::Incompatible(format!(
                "child detector has vectors of lengths {lens:?}, the image encoder gives {dim}"
            )));
        }
        if weights.scale.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(ModelError::Incompatible("child detector has a non-positive scale".into()));
        }
        Ok(ChildDetector { info, weights })
    }

    /// Loads `child_detector.json` from a version directory (its sha256 is checked by the
    /// scorer's manifest verification).
    pub fn load(dir: &Path, info: DetectorInfo, dim: usize) -> Result<Self, ModelError> {
        Self::load_file(dir, DETECTOR_FILE, info, dim)
    }

    /// Loads a detector's weights from `file` in a version directory.
    pub fn load_file(dir: &Path, file: &str, info: DetectorInfo, dim: usize) -> Result<Self, ModelError> {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
        let weights: DetectorWeights =
            serde_json::from_str(&text).map_err(|source| ModelError::Manifest { path, source })?;
        Self::new(info, weights, dim)
    }

    /// Probability that the photo shows a child.
    pub fn probability(&self, vector: &[f32]) -> f32 {
        self.weights.probability(vector)
    }

    /// Whether the photo is flagged (probability at or above the threshold).
    pub fn flags(&self, vector: &[f32]) -> bool {
        self.probability(vector) >= self.info.threshold
    }

    /// The parameters.
    pub fn weights(&self) -> &DetectorWeights {
        &self.weights
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(threshold: f32) -> DetectorInfo {
        DetectorInfo { threshold, target_recall: 0.95, labels: "test".into(), metrics: serde_json::json!({}) }
    }

    #[test]
    fn standardises_then_applies_the_logistic() {
        let w = DetectorWeights { mean: vec![1.0, 0.0], scale: vec![2.0, 1.0], weights: vec![4.0, -1.0], bias: 0.5 };
        let d = ChildDetector::new(info(0.5), w, 2).unwrap();
        // z = (3-1)/2*4 + (1-0)/1*(-1) + 0.5 = 3.5
        let p = d.probability(&[3.0, 1.0]);
        assert!((p - 1.0 / (1.0 + (-3.5f32).exp())).abs() < 1e-6);
        assert!(d.flags(&[3.0, 1.0]));
        assert!(!d.flags(&[-3.0, 1.0]));
    }

    #[test]
    fn refuses_mismatched_dimensions_and_bad_scales() {
        let w = DetectorWeights { mean: vec![0.0; 3], scale: vec![1.0; 3], weights: vec![0.0; 3], bias: 0.0 };
        assert!(ChildDetector::new(info(0.5), w.clone(), 4).is_err());
        let mut bad = w;
        bad.scale[1] = 0.0;
        assert!(ChildDetector::new(info(0.5), bad, 3).is_err());
    }

    #[test]
    fn loads_from_a_version_directory() {
        let dir = tempfile::tempdir().unwrap();
        let w = DetectorWeights { mean: vec![0.0; 2], scale: vec![1.0; 2], weights: vec![1.0, 1.0], bias: -1.0 };
        std::fs::write(dir.path().join(DETECTOR_FILE), serde_json::to_string(&w).unwrap()).unwrap();
        let d = ChildDetector::load(dir.path(), info(0.9), 2).unwrap();
        assert_eq!(d.weights(), &w);
        assert!(ChildDetector::load(dir.path(), info(0.9), 3).is_err());
    }
}
