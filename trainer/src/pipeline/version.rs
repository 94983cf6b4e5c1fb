//! A new scorer version, written into its staging directory and then published: the traced
//! modules, the child detector, the manifest with its typed `hyperparameters` and `training`
//! sections, and the HTML report.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use imagesearch_model::hashing::sha256_file;
use imagesearch_model::{EncoderRef, ImageViews, ModelRepository, ScorerManifest, StagedVersion, DETECTOR_FILE, QUERY_DETECTOR_FILE};
use serde::Serialize;
use tracing::info;

use super::encode::{data_hashes, Encoders, Pass, TrainingVectors};
use super::fit::{Calibrated, TrainingTensors};
use super::select::Selection;
use super::{PipelineError, TrainConfig, TrainOutcome};
use crate::artifact;
use crate::dataset::Dataset;
use crate::detector::{self, Confusion, DetectorConfig, Example};
use crate::vectors::PhotoVectors;
use crate::evaluate::{Evaluation, Metrics};
use crate::head::{Ensemble, EpochLog, HeadConfig};
use crate::report;

/// The manifest's `hyperparameters` section.
#[derive(Clone, Debug, Serialize)]
pub struct Hyperparameters<'a> {
    pub head: &'a HeadConfig,
    /// None when no child detector was trained.
    pub child_detector: Option<&'a DetectorConfig>,
    /// None when no query detector was trained.
    pub query_detector: Option<&'a DetectorConfig>,
    pub holdout_fraction: f64,
    pub val_photos: usize,
    pub limit_flickr_photos: Option<usize>,
    /// Gallery views asked for (None: chosen on validation).
    pub index_views: Option<String>,
    pub query_bank: &'a super::QueryBankConfig,
    /// The text-encoder tuning asked for (epochs 0: none).
    pub text_tuning: &'a crate::text_tuning::TuneConfig,
    /// Share of the lever validation photos lent to the scorer as positives (0: off).
    pub judged_positives: f64,
    /// Score's refinement from the judged pairs.
    pub score_refinement: &'a crate::refine::RefineConfig,
}

impl<'a> Hyperparameters<'a> {
    /// The hyperparameters of a training run.
    pub fn of(cfg: &'a TrainConfig) -> Self {
        Hyperparameters {
            head: &cfg.head,
            child_detector: cfg.detector.as_ref(),
            query_detector: cfg.query_detector.as_ref(),
            holdout_fraction: cfg.holdout_fraction,
            val_photos: cfg.val_photos,
            limit_flickr_photos: cfg.limit_flickr_photos,
            index_views: cfg.index_views.map(|v| v.to_string()),
            query_bank: &cfg.query_bank,
            text_tuning: &cfg.text_tuning,
            judged_positives: cfg.judged_positives,
            score_refinement: &cfg.refine,
        }
    }
}

/// The manifest's `training` section: data counts, the law's exclusions, the splits, encoder
/// throughput, the epoch logs and wall times. Field names are the manifest's keys.
#[derive(Clone, Debug, Serialize)]
pub struct TrainingSummary {
    /// Captioned photos before the law's exclusions.
    pub captioned_photos: usize,
    /// Captioned photos whose own captions describe a child.
    pub captioned_photos_excluded_child: usize,
    /// Training photos: captioned ones, and judged ones when their positives were kept.
    pub train_photos: usize,
    /// Training (photo, caption) pairs.
    pub train_pairs: usize,
    pub val_photos: usize,
    pub judged_pairs: usize,
    /// Pairs dropped while aggregating, by reason.
    pub judged_pairs_dropped: BTreeMap<String, usize>,
    pub judged_pairs_excluded_child: usize,
    pub judged_photos_child: usize,
    pub judged_photos_uncaptioned: usize,
    /// The held-out judged photos (so a later `eval` uses the same ones).
    pub heldout_photo_list: BTreeSet<String>,
    pub calibration_pairs: usize,
    pub heldout_photos: usize,
    pub bad_rows_skipped: usize,
    pub photo_encoding: Pass,
    /// The judged and test photos alone, with every candidate gallery view (photos/s of
    /// gallery indexing at those views).
    pub gallery_photo_encoding: Pass,
    /// The gallery views and query bank chosen on validation, with every candidate's metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub levers: Option<super::levers::LeverReport>,
    /// Set when the text encoder was tuned (LiT): every epoch's validation recall and the
    /// encoder written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_tuning: Option<crate::text_tuning::TuneReport>,
    /// Set when judged photos were lent as positives: both ensembles on validation and which
    /// was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judged_positives: Option<super::positives::PositivesReport>,
    /// Score's refinement from the judged pairs: every candidate on validation, the choice
    /// and the weights.
    pub score_refinement: crate::refine::RefineReport,
    pub text_encoding: Pass,
    pub encode_seconds: f64,
    pub train_seconds: f64,
    pub epochs: Vec<EpochLog>,
    pub device: String,
    /// Set when a child detector was trained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detector_seconds: Option<f64>,
    /// Set when a query detector was trained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_detector_seconds: Option<f64>,
    /// Set once the version is evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_seconds: Option<f64>,
}

/// Where a run trained and how long its phases took.
pub(super) struct Run {
    pub device: String,
    /// From the start of the run until every vector was ready.
    pub encode_seconds: f64,
    /// Training the members and calibrating.
    pub train_seconds: f64,
}

impl TrainingSummary {
    /// The training section of a run, before the detector and the evaluation.
    pub(super) fn new(
        data: &Dataset,
        sel: &Selection,
        vectors: &TrainingVectors,
        tensors: &TrainingTensors,
        calibrated: &Calibrated,
        epochs: Vec<EpochLog>,
        run: Run,
    ) -> Self {
        let judged_photos = &sel.judged_photos;
        TrainingSummary {
            captioned_photos: sel.captioned_all,
            captioned_photos_excluded_child: sel.captioned_child,
            train_photos: tensors.train_photos,
            train_pairs: tensors.train_pairs(),
            val_photos: tensors.val_photo_count,
            judged_pairs: data.judged.len(),
            judged_pairs_dropped: data.judged_dropped.clone(),
            judged_pairs_excluded_child: data.judged.iter().filter(|p| data.excluded(&p.image, &p.text)).count(),
            judged_photos_child: judged_photos.iter().filter(|p| data.child_photos.contains_key(p.as_str())).count(),
            judged_photos_uncaptioned: judged_photos.iter().filter(|p| !data.captioned.contains(p.as_str())).count(),
            heldout_photo_list: sel.heldout.iter().cloned().collect(),
            calibration_pairs: calibrated.pairs,
            heldout_photos: sel.heldout.len(),
            bad_rows_skipped: data.problems.len(),
            photo_encoding: vectors.photo_pass.clone(),
            gallery_photo_encoding: vectors.gallery_pass.clone(),
            levers: None,
            text_tuning: None,
            judged_positives: None,
            score_refinement: calibrated.refinement.clone(),
            text_encoding: vectors.text_pass.clone(),
            encode_seconds: run.encode_seconds,
            train_seconds: run.train_seconds,
            epochs,
            device: run.device,
            detector_seconds: None,
            query_detector_seconds: None,
            total_seconds: None,
        }
    }
}

/// A version being written: its staging directory, its manifest and the manifest's typed
/// training section (serialised into the manifest on every save).
pub(super) struct Draft {
    pub staged: StagedVersion,
    pub manifest: ScorerManifest,
    pub training: TrainingSummary,
}

impl Draft {
    /// Writes `manifest.json` into the staging directory, with the current training section.
    pub fn save(&mut self) -> Result<(), PipelineError> {
        self.manifest.training = serde_json::to_value(&self.training)?;
        self.manifest.save(&self.staged.dir)?;
        Ok(())
    }

    /// Publishes the staged version (atomic rename) under its number.
    pub fn publish(self, metrics: Metrics) -> Result<TrainOutcome, PipelineError> {
        let version = self.staged.version;
        let dir = self.staged.commit()?;
        Ok(TrainOutcome { version, dir, metrics, detector: self.manifest.child_detector })
    }
}

/// Step: stages a new version, traces the calibrated ensemble into it and drafts its manifest.
pub(super) fn write_modules(
    cfg: &TrainConfig,
    enc: &Encoders,
    ensemble: &mut Ensemble,
    calibrated: &Calibrated,
    training: TrainingSummary,
) -> Result<Draft, PipelineError> {
    let c = &cfg.common;
    let staged = ModelRepository::new(&c.models).stage()?;
    let files = artifact::write_modules(
        ensemble,
        calibrated.score_calibration,
        calibrated.score_weights.as_ref(),
        enc.image.manifest.output_dim,
        enc.text.manifest.output_dim,
        &staged.dir,
    )?;
    let manifest = ScorerManifest {
        version: staged.version,
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        git_commit: artifact::git_commit(),
        image_encoder: EncoderRef::from(&enc.image.manifest),
        text_encoder: EncoderRef::from(&enc.text.manifest),
        embedding_dim: ensemble.embedding_dim(cfg.head.dim),
        image_views: "trained on the mean of the encoder vectors of the photo and its left-right mirror image".into(),
        child_detector: None,
        query_detector: None,
        index_views: None,
        query_word_map: None,
        calibration: calibrated.calibration,
        score_calibration: Some(calibrated.score_calibration),
        files,
        data: data_hashes(&c.paths)?,
        aggregation: cfg.aggregation.to_string(),
        hyperparameters: serde_json::to_value(Hyperparameters::of(cfg))?,
        training: serde_json::to_value(&training)?,
        metrics: serde_json::Value::Null,
    };
    Ok(Draft { staged, manifest, training })
}

/// Step: trains the child detector on the photos' serving vectors, labelled by their own
/// captions — every captioned photo except the scorer's held-out judged photos and the test
/// photos, which it is only evaluated on — writes it into the draft and describes it in the
/// manifest.
pub(super) fn add_child_detector(
    dcfg: &DetectorConfig,
    draft: &mut Draft,
    data: &Dataset,
    sel: &Selection,
    serving: &HashMap<String, Vec<f32>>,
    photos: &HashMap<String, PhotoVectors>,
    image_dim: usize,
) -> Result<(), PipelineError> {
    let started = Instant::now();
    let (judged_photos, heldout) = (&sel.judged_photos, &sel.heldout);
    let label = |p: &str| detector::label_from_captions(data.own_captions.get(p).into_iter().flatten().map(String::as_str));
    let examples = |list: &mut dyn Iterator<Item = &String>| -> Vec<Example> {
        list.filter_map(|p| serving.get(p).map(|v| Example { photo: p.clone(), vector: v.clone(), positive: label(p) }))
            .collect()
    };
    let test_set: HashSet<&str> = data.test_images.iter().map(String::as_str).collect();
    let judged_captioned =
        || judged_photos.iter().filter(|p| data.captioned.contains(p.as_str()) && !test_set.contains(p.as_str()));
    let mut pool = examples(&mut sel.detector_flickr.iter());
    pool.extend(examples(&mut judged_captioned().filter(|p| !heldout.contains(p.as_str()))));
    let judged_heldout = examples(&mut judged_captioned().filter(|p| heldout.contains(p.as_str())));
    let test_photos = examples(&mut data.test_images.iter().filter(|p| data.captioned.contains(p.as_str())));
    info!(
        "training the child detector on {} captioned photos ({} positive)",
        pool.len(),
        pool.iter().filter(|e| e.positive).count()
    );
    let mut trained =
        detector::train(
            dcfg,
            &pool,
            &[("judged_heldout", &judged_heldout), ("test_photos", &test_photos)],
            image_dim,
            &detector::Described::photos(image_dim),
        )?;
    trained.info.metrics["max_over_views"] =
        max_over_views(&trained, &[("judged_heldout", &judged_heldout), ("test_photos", &test_photos)], photos);
    write_detector(draft, DETECTOR_FILE, &trained.weights)?;
    info!("{}", detector::summary_line(&trained.info));
    draft.manifest.child_detector = Some(trained.info);
    draft.training.detector_seconds = Some(started.elapsed().as_secs_f64());
    Ok(())
}

/// A lever measured, not shipped: the detector's largest probability over a photo's 14 crop
/// views (a child may fill one corner) against its probability of the mean vector, at the
/// shipped threshold and by ROC AUC, on the groups' photos that have every view.
fn max_over_views(
    trained: &detector::TrainedDetector,
    groups: &[(&str, &[Example])],
    photos: &HashMap<String, PhotoVectors>,
) -> serde_json::Value {
    let views = ImageViews::Crops.views();
    let threshold = trained.info.threshold;
    let mut out = serde_json::Map::new();
    for (name, group) in groups {
        let (mut positive, mut mean, mut max) = (Vec::new(), Vec::new(), Vec::new());
        for e in group.iter() {
            let Some(pv) = photos.get(&e.photo) else { continue };
            let probs: Option<Vec<f32>> = views.iter().map(|v| pv.view(*v).map(|x| trained.weights.probability(x))).collect();
            let Some(probs) = probs else { continue };
            positive.push(e.positive);
            mean.push(trained.weights.probability(&e.vector));
            max.push(probs.into_iter().fold(0.0f32, f32::max));
        }
        let (at_mean, at_max) = (Confusion::at(&mean, &positive, threshold), Confusion::at(&max, &positive, threshold));
        info!("child detector, {name}: mean vector {}", at_mean.line());
        info!("child detector, {name}: max over 14 views {}", at_max.line());
        out.insert(name.to_string(), serde_json::json!({ "mean_vector": at_mean, "max_over_views": at_max }));
    }
    serde_json::Value::Object(out)
}

/// Step: trains the query detector on text-encoder vectors ([`crate::query_detector`]), writes
/// it into the draft and describes it in the manifest.
pub(super) fn add_query_detector(
    qcfg: &DetectorConfig,
    draft: &mut Draft,
    data: &Dataset,
    sel: &Selection,
    texts: &HashMap<String, Vec<f32>>,
    text_dim: usize,
) -> Result<(), PipelineError> {
    let started = Instant::now();
    let ex = crate::query_detector::examples(data, &sel.heldout, texts);
    info!(
        "training the query detector on {} texts ({} positive)",
        ex.pool.len(),
        ex.pool.iter().filter(|e| e.positive).count()
    );
    let groups: Vec<(&str, &[Example])> = ex.groups.iter().map(|(n, g)| (*n, g.as_slice())).collect();
    let trained = detector::train(qcfg, &ex.pool, &groups, text_dim, &crate::query_detector::described(text_dim))?;
    write_detector(draft, QUERY_DETECTOR_FILE, &trained.weights)?;
    let mut info = trained.info;
    let served = crate::query_detector::served(texts, &trained.weights, info.threshold);
    for (name, _) in crate::query_detector::HELDOUT_LISTS {
        let (g, s) = (&info.metrics["groups"][name], &served[name]["word_list_or_detector"]);
        let adults = |g: &serde_json::Value| g["photos"].as_u64().unwrap_or(0).saturating_sub(g["positives"].as_u64().unwrap_or(0));
        info!(
            "{name}: query detector recall {}, adult texts flagged {} of {}; with the word list (as served) recall {}, adults flagged {} of {}",
            g["recall"], g["false_positives"], adults(g), s["recall"], s["false_positives"], adults(s)
        );
    }
    if let Some(m) = info.metrics.as_object_mut() {
        m.insert("served".into(), served);
    }
    draft.manifest.query_detector = Some(info);
    draft.training.query_detector_seconds = Some(started.elapsed().as_secs_f64());
    Ok(())
}

/// Writes a detector's weights into the draft and lists the file with its sha256.
fn write_detector(draft: &mut Draft, file: &str, weights: &imagesearch_model::DetectorWeights) -> Result<(), PipelineError> {
    let path = draft.staged.dir.join(file);
    let text = serde_json::to_string(weights).map_err(std::io::Error::other);
    text.and_then(|t| std::fs::write(&path, t)).map_err(|source| PipelineError::Io { path: path.clone(), source })?;
    draft.manifest.files.insert(file.to_string(), sha256_file(&path)?);
    Ok(())
}

/// Step: writes `report.html` of the evaluated draft.
pub(super) fn write_report(draft: &Draft, evaluation: &Evaluation, data: &Dataset, cfg: &TrainConfig) -> Result<(), PipelineError> {
    let view = report::version_report(&draft.manifest, &draft.training, evaluation, data, cfg.report_queries, cfg.head.seed);
    let path = draft.staged.dir.join("report.html");
    std::fs::write(&path, report::render(&view)).map_err(|source| PipelineError::Io { path, source })
}
