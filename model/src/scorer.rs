//! The scorer artifact: one version of the learned (image, text) scorer.
//!
//! A traced TorchScript module has exactly one method, so a version holds one file per entry
//! point, all listed with their sha256 in `manifest.json`:
//! - `image_tower.pt`: image encoder vectors `[B, Di]` → joint embeddings `[B, E]` (unit length);
//! - `text_tower.pt`: text encoder vectors `[B, Dt]` → joint embeddings `[B, E]` (unit length);
//! - `scorer.pt`: `forward(image_vec [B, Di], text_vec [B, Dt]) -> score [B]` in [0, 1].
//!
//! Search's score is `sigmoid(a * ip + b)` of the towers' inner product, with `a, b` in the
//! manifest, so a search can rank a whole gallery by one matrix product and calibrate only the
//! top k. Score's (`scorer.pt`) is calibrated on its own: the joint embeddings' product without
//! the query bank's term, weighted per dimension when the version has a refinement fitted on
//! the judged pairs (the trainer's `refine` module; the weights are in the manifest's
//! `training.score_refinement`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{CModule, Device, Kind, Tensor};

use crate::hashing::verify_files;
use crate::{EncoderManifest, ModelError};

/// File names of the three entry points.
pub const SCORE_FILE: &str = "scorer.pt";
pub const IMAGE_TOWER_FILE: &str = "image_tower.pt";
pub const TEXT_TOWER_FILE: &str = "text_tower.pt";
pub const MANIFEST_FILE: &str = "manifest.json";

/// Which encoder a scorer was trained on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EncoderRef {
    pub name: String,
    pub sha256: String,
    pub output_dim: i64,
}

impl From<&EncoderManifest> for EncoderRef {
    fn from(m: &EncoderManifest) -> Self {
        EncoderRef { name: m.name.clone(), sha256: m.sha256().to_string(), output_dim: m.output_dim }
    }
}

/// The monotone map from joint-space cosine to a score in [0, 1]: `sigmoid(a * cos + b)`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Calibration {
    pub a: f64,
    pub b: f64,
}

impl Calibration {
    /// Score of one cosine.
    pub fn apply(&self, cos: f64) -> f64 {
        1.0 / (1.0 + (-(self.a * cos + self.b)).exp())
    }

    /// The best `k` rows of `gallery` `[N, E]` for each row of `queries` `[Q, E]` by calibrated
    /// cosine, best first: scores `[Q, k]` and row indices `[Q, k]`, `k` clamped to `1..=N`.
    pub fn rank(&self, queries: &Tensor, gallery: &Tensor, k: i64) -> (Tensor, Tensor) {
        self.rank_at_most(queries, gallery, k, None, None)
    }

    /// [`Calibration::rank`] among the rows scoring at most `bounds[q]` for query `q` (a page
    /// after a cursor) and not `excluded` (`[Q, N]`, true = not ranked: a filter); rows left
    /// out come last with score −∞.
    pub fn rank_at_most(&self, queries: &Tensor, gallery: &Tensor, k: i64, bounds: Option<&[f32]>, excluded: Option<&Tensor>) -> (Tensor, Tensor) {
        let k = k.clamp(1, gallery.size()[0].max(1));
        tch::no_grad(|| {
            let scores = self.apply_tensor(&queries.matmul(&gallery.tr()));
            let scores = match excluded {
                Some(m) => scores.masked_fill(&m.to_device(scores.device()), f64::NEG_INFINITY),
                None => scores,
            };
            let scores = match bounds {
                Some(b) => {
                    let b = Tensor::from_slice(b).to_device(scores.device()).view([-1, 1]);
                    scores.masked_fill(&scores.gt_tensor(&b), f64::NEG_INFINITY)
                }
                None => scores,
            };
            scores.topk(k, 1, true, true)
        })
    }

    /// Scores of a tensor of cosines (same shape, f32).
    pub fn apply_tensor(&self, cos: &Tensor) -> Tensor {
        (cos.to_kind(Kind::Float) * self.a + self.b).sigmoid()
    }
}

/// `manifest.json` of a scorer version.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ScorerManifest {
    pub version: u32,
    /// RFC 3339 creation time.
    pub created: String,
    /// Git commit of the code that trained it, when known.
    pub git_commit: Option<String>,
    pub image_encoder: EncoderRef,
    pub text_encoder: EncoderRef,
    /// Joint embedding dimension E.
    pub embedding_dim: i64,
    /// How a photo's image vector is formed from encoder outputs (e.g. mirror averaging).
    pub image_views: String,
    /// The views gallery photos were chosen and calibrated with (`both`, `crops`; versions
    /// before crops existed have none: `both`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_views: Option<String>,
    /// The query word map ([`crate::WordMap::id`]) open-region queries are read through; none:
    /// queries are read as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_word_map: Option<String>,
    /// Of Search: `sigmoid(a·ip + b)` over the towers' inner product (which holds the query
    /// bank's term when the version has one).
    pub calibration: Calibration,
    /// Of Score (`scorer.pt`): `sigmoid(a·x + b)` over the joint embeddings' product without
    /// the query bank's term (which helps ranking photos for a query but not judging one pair),
    /// `x = Σ g_d·u_d·v_d`, with `g` Score's refinement (all 1, the cosine, when it has none).
    /// None in versions made before the two were separated: Score used `calibration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_calibration: Option<Calibration>,
    /// Every file of the version and its sha256.
    pub files: BTreeMap<String, String>,
    /// Training data files and their sha256.
    pub data: BTreeMap<String, String>,
    /// Label aggregation method.
    pub aggregation: String,
    pub hyperparameters: serde_json::Value,
    /// Data counts (pairs, exclusions, splits) and wall times.
    pub training: serde_json::Value,
    /// Evaluation metrics.
    pub metrics: serde_json::Value,
    /// The child detector shipped with this version (older versions have none: the server then
    /// treats every photo without captions as restricted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_detector: Option<crate::DetectorInfo>,
    /// The query detector shipped with this version (older versions have none: the server then
    /// judges texts by the word list alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_detector: Option<crate::DetectorInfo>,
}

impl ScorerManifest {
    /// Reads `dir/manifest.json`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
        serde_json::from_str(&text).map_err(|source| ModelError::Manifest { path, source })
    }

    /// Writes `dir/manifest.json` (pretty JSON).
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        let path = dir.join(MANIFEST_FILE);
        let text = serde_json::to_string_pretty(self)
            .map_err(|source| ModelError::Manifest { path: path.clone(), source })?;
        std::fs::write(&path, text).map_err(|e| ModelError::io(&path, e))
    }

    /// Refuses encoders other than the ones this version was trained on.
    pub fn check_encoders(&self, image: &EncoderManifest, text: &EncoderManifest) -> Result<(), ModelError> {
        for (side, want, have) in [("image", &self.image_encoder, image), ("text", &self.text_encoder, text)] {
            if want.sha256 != have.sha256() || want.output_dim != have.output_dim {
                return Err(ModelError::Incompatible(format!(
                    "scorer version {} was trained on {side} encoder {} ({}), but {} ({}) is loaded",
                    self.version,
                    want.name,
                    short(&want.sha256),
                    have.name,
                    short(have.sha256())
                )));
            }
        }
        Ok(())
    }
}

/// A detector the manifest describes, from its file (which the manifest must list).
fn load_detector(
    dir: &Path,
    manifest: &ScorerManifest,
    info: Option<&crate::DetectorInfo>,
    file: &str,
    encoder: &EncoderRef,
) -> Result<Option<crate::ChildDetector>, ModelError> {
    match info {
        Some(info) if manifest.files.contains_key(file) => {
            Ok(Some(crate::ChildDetector::load_file(dir, file, info.clone(), encoder.output_dim as usize)?))
        }
        Some(_) => Err(ModelError::Incompatible(format!(
            "{}: manifest describes a detector but does not list {file}",
            dir.display()
        ))),
        None => Ok(None),
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// A loaded, verified scorer version.
pub struct Scorer {
    pub manifest: ScorerManifest,
    pub dir: PathBuf,
    score: CModule,
    image_tower: CModule,
    text_tower: CModule,
    device: Device,
    /// The version's child detector, when it ships one.
    pub detector: Option<crate::ChildDetector>,
    /// The version's query detector (on text-encoder vectors), when it ships one.
    pub query_detector: Option<crate::ChildDetector>,
}

impl Scorer {
    /// Loads a version directory, verifying every file against the manifest's sha256.
    pub fn load(dir: &Path, device: Device) -> Result<Self, ModelError> {
        let manifest = ScorerManifest::load(dir)?;
        for needed in [SCORE_FILE, IMAGE_TOWER_FILE, TEXT_TOWER_FILE] {
            if !manifest.files.contains_key(needed) {
                return Err(ModelError::Incompatible(format!(
                    "{}: manifest does not list {needed}",
                    dir.display()
                )));
            }
        }
        verify_files(dir, &manifest.files)?;
        let detector = load_detector(dir, &manifest, manifest.child_detector.as_ref(), crate::DETECTOR_FILE, &manifest.image_encoder)?;
        let query_detector =
            load_detector(dir, &manifest, manifest.query_detector.as_ref(), crate::QUERY_DETECTOR_FILE, &manifest.text_encoder)?;
        let load = |file: &str| -> Result<CModule, ModelError> {
            let mut m = CModule::load_on_device(dir.join(file), device)?;
            m.set_eval();
            Ok(m)
        };
        Ok(Scorer {
            score: load(SCORE_FILE)?,
            image_tower: load(IMAGE_TOWER_FILE)?,
            text_tower: load(TEXT_TOWER_FILE)?,
            manifest,
            dir: dir.to_path_buf(),
            device,
            detector,
            query_detector,
        })
    }

    /// The device the modules run on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Joint embeddings of image encoder vectors `[B, Di]` (f32 on CPU out).
    pub fn embed_images(&self, image_vecs: &Tensor) -> Result<Tensor, ModelError> {
        self.run(&self.image_tower, &[image_vecs])
    }

    /// Joint embeddings of text encoder vectors `[B, Dt]` (f32 on CPU out).
    pub fn embed_texts(&self, text_vecs: &Tensor) -> Result<Tensor, ModelError> {
        self.run(&self.text_tower, &[text_vecs])
    }

    /// Calibrated scores in [0, 1] of aligned pairs `[B, Di]` × `[B, Dt]` → `[B]`: the Score
    /// entry point (the manifest's `score_calibration`, no query-bank term).
    pub fn score(&self, image_vecs: &Tensor, text_vecs: &Tensor) -> Result<Tensor, ModelError> {
        self.run(&self.score, &[image_vecs, text_vecs])
    }

    /// The best `k` gallery rows for each query, best first: calibrated scores `[Q, k]` and row
    /// indices `[Q, k]` (`k` is clamped to the gallery's size). `queries` `[Q, E]` and `gallery`
    /// `[N, E]` are joint embeddings on one device; the outputs stay on it. The one ranking of
    /// the project: the server's index, the trainer's evaluation and the bench use it.
    pub fn rank(&self, queries: &Tensor, gallery: &Tensor, k: i64) -> (Tensor, Tensor) {
        self.manifest.calibration.rank(queries, gallery, k)
    }

    fn run(&self, module: &CModule, inputs: &[&Tensor]) -> Result<Tensor, ModelError> {
        let inputs: Vec<Tensor> =
            inputs.iter().map(|t| t.to_kind(Kind::Float).to_device(self.device)).collect();
        let out = tch::no_grad(|| module.forward_ts(&inputs))?;
        Ok(out.to_kind(Kind::Float).to_device(Device::Cpu))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_is_a_monotone_sigmoid() {
        let c = Calibration { a: 10.0, b: -3.0 };
        assert!((c.apply(0.3) - 0.5).abs() < 1e-12);
        assert!(c.apply(0.1) < c.apply(0.2));
        assert!(c.apply(-1.0) > 0.0 && c.apply(1.0) < 1.0);
        let t = Vec::<f32>::try_from(c.apply_tensor(&Tensor::from_slice(&[0.3f32, 0.1]))).unwrap();
        assert!((f64::from(t[0]) - 0.5).abs() < 1e-6 && (f64::from(t[1]) - c.apply(0.1)).abs() < 1e-6);
    }

    #[test]
    fn rank_is_the_calibrated_top_k() {
        let c = Calibration { a: 5.0, b: 0.0 };
        let gallery = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0, 0.6, 0.8]).view([3, 2]);
        let queries = Tensor::from_slice(&[0.0f32, 1.0, 1.0, 0.0]).view([2, 2]);
        let (scores, rows) = c.rank(&queries, &gallery, 2);
        assert_eq!(Vec::<i64>::try_from(rows.view([-1])).unwrap(), vec![1, 2, 0, 2]);
        let s = Vec::<f32>::try_from(scores.view([-1])).unwrap();
        assert!((f64::from(s[0]) - c.apply(1.0)).abs() < 1e-6 && (f64::from(s[1]) - c.apply(0.8)).abs() < 1e-6);
        // k past the gallery's size is clamped.
        assert_eq!(c.rank(&queries, &gallery, 10).1.size(), [2, 3]);
        // Below a bound: the first query's best two rows (1, then 2) are above it.
        let bound = c.apply(0.7) as f32;
        let (s, rows) = c.rank_at_most(&queries, &gallery, 1, Some(&[bound, f32::INFINITY]), None);
        assert_eq!(Vec::<i64>::try_from(rows.view([-1])).unwrap(), vec![0, 0]);
        assert!(Vec::<f32>::try_from(s.view([-1])).unwrap()[0] <= bound);
        // Excluded rows are not ranked: the second query's best row (0) is left out.
        let excluded = Tensor::from_slice(&[false, false, false, true, false, false]).view([2, 3]);
        let (s, rows) = c.rank_at_most(&queries, &gallery, 3, None, Some(&excluded));
        assert_eq!(Vec::<i64>::try_from(rows.view([-1])).unwrap()[3..5], [2, 1]);
        assert_eq!(Vec::<f32>::try_from(s.view([-1])).unwrap()[5], f32::NEG_INFINITY);
    }

    fn encoder(name: &str, sha: &str, dim: i64) -> EncoderManifest {
        EncoderManifest {
            name: name.into(),
            kind: crate::EncoderKind::Text,
            file: "encoder.pt".into(),
            source: String::new(),
            input: serde_json::json!({}),
            normalisation: String::new(),
            output_dim: dim,
            files: BTreeMap::from([("encoder.pt".to_string(), sha.to_string())]),
            torch: None,
            serving: Vec::new(),
        }
    }

    #[test]
    fn manifest_round_trip_and_encoder_check() {
        let image = encoder("img", "aaaa", 1280);
        let text = encoder("txt", "bbbb", 384);
        let manifest = ScorerManifest {
            version: 7,
            created: "2026-11-23T00:00:00Z".into(),
            git_commit: Some("abc".into()),
            image_encoder: EncoderRef::from(&image),
            text_encoder: EncoderRef::from(&text),
            embedding_dim: 1024,
            image_views: "mean".into(),
            index_views: Some("crops".into()),
            query_word_map: None,
            calibration: Calibration { a: 12.5, b: -4.25 },
            score_calibration: Some(Calibration { a: 9.5, b: -3.0 }),
            files: BTreeMap::from([(SCORE_FILE.to_string(), "00".to_string())]),
            data: BTreeMap::from([("ExpertAnnotations.tsv".to_string(), "11".to_string())]),
            aggregation: "pooled".into(),
            hyperparameters: serde_json::json!({"head": {"seed": 42}}),
            training: serde_json::json!({"train_pairs": 10}),
            metrics: serde_json::json!({"retrieval": {"r_at_1": 0.5}}),
            child_detector: None,
            query_detector: None,
        };
        let dir = tempfile::tempdir().unwrap();
        manifest.save(dir.path()).unwrap();
        let back = ScorerManifest::load(dir.path()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&manifest).unwrap());
        back.check_encoders(&image, &text).unwrap();
        let other = encoder("txt", "cccc", 384);
        let err = back.check_encoders(&image, &other).unwrap_err();
        assert!(err.to_string().contains("trained on text encoder txt (bbbb)"), "{err}");
    }
}
