//! The trainer's two jobs, end to end: [`train`] (data → vectors → head → calibrated, traced,
//! evaluated and reported version) and [`eval`] (metrics of an existing version).
//!
//! This module owns the jobs' settings, their errors and the order of `train`'s steps; each
//! step lives in a submodule: `select` (the law's exclusions and the splits), `encode`
//! (encoder vectors, cached), `fit` (the ensemble and its calibration), `version` (the new
//! version's files, manifest and report) and `eval` (evaluation through the saved artifact).

mod encode;
mod eval;
mod fit;
mod levers;
mod positives;
mod select;
mod version;

use std::path::PathBuf;
use std::time::Instant;

use imagesearch_model::{DetectorInfo, ImageViews, ModelError, WordMap};
use tch::Device;
use tracing::{info, warn};

use crate::dataset::{DataPaths, Dataset};
use crate::detector::DetectorConfig;
use crate::evaluate::Metrics;
use crate::head::HeadConfig;
use crate::labels::Aggregation;
use crate::tables::{Problem, TableError};
use crate::vectors::VectorError;

pub use encode::Pass;
pub use eval::{eval, Evaluated};
pub use levers::{LeverReport, QueryBankConfig, MRR_TIE};
pub use positives::PositivesReport;
pub use version::{Hyperparameters, TrainingSummary};

/// Everything that can stop a training or evaluation run.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Vector(#[from] VectorError),
    #[error("text-encoder tuning: {0}")]
    Tuning(#[from] crate::text_tuning::TuneError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{count} bad rows or photos (listed above); fix them or pass --skip-bad-rows")]
    BadRows { count: usize },
    #[error("no data: {0}")]
    NoData(String),
    #[error("scorer version {version} not found (available: {available:?})")]
    UnknownVersion { version: u32, available: Vec<u32> },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("manifest JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Settings shared by `train` and `eval`.
#[derive(Clone, Debug)]
pub struct CommonConfig {
    pub paths: DataPaths,
    pub models: PathBuf,
    pub encoders: PathBuf,
    pub image_encoder: String,
    pub text_encoder: String,
    pub cache_dir: PathBuf,
    pub device: Device,
    pub skip_bad_rows: bool,
    pub image_batch: usize,
    pub text_batch: usize,
}

/// Settings of `train`.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub common: CommonConfig,
    pub aggregation: Aggregation,
    pub holdout_fraction: f64,
    pub head: HeadConfig,
    pub val_photos: usize,
    pub limit_flickr_photos: Option<usize>,
    pub report_queries: usize,
    /// The child detector shipped with the version; None trains none.
    pub detector: Option<DetectorConfig>,
    /// The query detector shipped with the version; None trains none.
    pub query_detector: Option<DetectorConfig>,
    /// The views gallery photos are indexed with; None = chosen on validation (both or crops).
    pub index_views: Option<ImageViews>,
    pub query_bank: QueryBankConfig,
    /// Open-region queries read through the word map; None = chosen on validation.
    pub query_word_map: Option<bool>,
    /// Tuning of the text encoder before the head (epochs 0: none).
    pub text_tuning: crate::text_tuning::TuneConfig,
    /// Share of the lever validation photos (judged, allowed, neither held out nor test) whose
    /// human-matched texts train a second ensemble, kept when it wins on the rest (0: off).
    pub judged_positives: f64,
    /// Score's refinement from the judged pairs (chosen on validation when enabled).
    pub refine: crate::refine::RefineConfig,
}

/// What `train` produced.
pub struct TrainOutcome {
    pub version: u32,
    pub dir: PathBuf,
    pub metrics: Metrics,
    pub detector: Option<DetectorInfo>,
}

/// Reports the data problems found so far, each once; stops the run at the first new ones
/// unless bad rows are to be skipped.
struct ProblemGate {
    skip: bool,
    reported: usize,
}

impl ProblemGate {
    fn new(skip: bool) -> Self {
        ProblemGate { skip, reported: 0 }
    }

    /// Reports the problems added since the last check; an error when there are any and
    /// they are not to be skipped.
    fn check(&mut self, problems: &[Problem]) -> Result<(), PipelineError> {
        let new = &problems[self.reported.min(problems.len())..];
        self.reported = problems.len();
        if new.is_empty() {
            return Ok(());
        }
        for p in new {
            if self.skip {
                warn!("skipped: {p}");
            } else {
                eprintln!("error: {p}");
            }
        }
        if self.skip {
            warn!("{} bad rows or photos skipped", new.len());
            Ok(())
        } else {
            Err(PipelineError::BadRows { count: new.len() })
        }
    }
}

/// Step: reads and validates the tables (judged set, test queries and photos, and the
/// captions when `with_captions`), aggregating the judgments with `method`.
fn load_tables(
    c: &CommonConfig,
    method: Aggregation,
    with_captions: bool,
    gate: &mut ProblemGate,
) -> Result<Dataset, PipelineError> {
    let data = Dataset::load(c.paths.clone(), method, with_captions)?;
    gate.check(&data.problems)?;
    Ok(data)
}

/// Trains, writes, evaluates and reports a new scorer version.
pub fn train(cfg: &TrainConfig) -> Result<TrainOutcome, PipelineError> {
    let started = Instant::now();
    let c = &cfg.common;
    let mut gate = ProblemGate::new(c.skip_bad_rows);
    let mut enc = encode::Encoders::load(c)?;
    let mut data = load_tables(c, cfg.aggregation, true, &mut gate)?;
    let selection = select::apply_exclusions(cfg, &data)?;
    let gallery_views = cfg.index_views.unwrap_or(ImageViews::Crops);
    let mut vectors = encode::encode_for_training(&mut enc, c, &selection, gallery_views, &mut data, &mut gate)?;
    let encode_seconds = started.elapsed().as_secs_f64();

    let mut tensors = fit::training_tensors(&data, &selection, &vectors, false);
    let text_tuning = match cfg.text_tuning.epochs {
        0 => None,
        _ => {
            let report = fit::tune_text_encoder(cfg, &enc.text, &tensors)?;
            if let Some(name) = &report.encoder {
                encode::switch_text_encoder(&mut enc, c, name, &selection, &data, &mut vectors)?;
                tensors = fit::training_tensors(&data, &selection, &vectors, false);
            }
            Some(report)
        }
    };
    let train_started = Instant::now();
    let (mut ensemble, mut epochs) = fit::train_members(cfg, &tensors)?;
    // Judged photos as extra positives: a second ensemble, kept when it wins on validation.
    let mut calibration_left_out = selection.heldout.clone();
    let judged_positives = match selection.positive_photos.is_empty() {
        true => None,
        false => {
            let with = fit::training_tensors(&data, &selection, &vectors, true);
            info!("training a second ensemble with {} judged photos' {} positives", with.positive_photos, with.positive_pairs);
            let (other, other_epochs) = fit::train_members(cfg, &with)?;
            let counts = (with.positive_photos, with.positive_pairs);
            let report = positives::judge(cfg, &ensemble, &other, counts, &data, &selection, &vectors, gallery_views)?;
            if report.used {
                (ensemble, epochs, tensors) = (other, other_epochs, with);
                calibration_left_out.extend(selection.positive_photos.iter().cloned());
            }
            Some(report)
        }
    };
    // The test-time levers, chosen on validation; the calibration is then fitted on what is
    // served: the chosen gallery views and the query bank's term.
    let chosen = levers::choose(cfg, &ensemble, &data, &selection, &vectors)?;
    ensemble.query_bank = chosen.query_bank;
    vectors.serve_with(chosen.index_views);
    let calibrated = fit::calibrate(&ensemble, &cfg.refine, c.device, &data, &calibration_left_out, &vectors)?;
    let run = version::Run {
        device: imagesearch_model::device::device_name(c.device),
        encode_seconds,
        train_seconds: train_started.elapsed().as_secs_f64(),
    };

    let mut training = TrainingSummary::new(&data, &selection, &vectors, &tensors, &calibrated, epochs, run);
    training.levers = Some(chosen.report);
    training.judged_positives = judged_positives;
    training.text_tuning = text_tuning;
    let mut draft = version::write_modules(cfg, &enc, &mut ensemble, &calibrated, training)?;
    draft.manifest.index_views = Some(chosen.index_views.to_string());
    draft.manifest.query_word_map = chosen.query_word_map.then(|| WordMap::builtin().id().to_string());
    if let Some(dcfg) = &cfg.detector {
        let image_dim = enc.image.manifest.output_dim as usize;
        version::add_child_detector(dcfg, &mut draft, &data, &selection, &vectors.serving, &vectors.photos, image_dim)?;
    }
    if let Some(qcfg) = &cfg.query_detector {
        let text_dim = enc.text.manifest.output_dim as usize;
        version::add_query_detector(qcfg, &mut draft, &data, &selection, &vectors.texts, text_dim)?;
    }
    let evaluation = eval::evaluate_staged(&mut draft, cfg, &data, &selection, &vectors, &calibrated)?;
    draft.training.total_seconds = Some(started.elapsed().as_secs_f64());
    draft.save()?;
    version::write_report(&draft, &evaluation, &data, cfg)?;
    draft.publish(evaluation.metrics)
}
