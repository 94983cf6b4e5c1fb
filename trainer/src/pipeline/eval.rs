//! Evaluation through the saved artifact: the training job's step that loads the staged
//! version back and evaluates it, and the `eval` job (the metrics of an existing version,
//! optionally on other queries or with the photo vectors of `--image-views original`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

use imagesearch_model::{ChildDetector, EncoderFile, ImageViews, ModelRepository, Scorer, WordMap};
use tracing::warn;

use super::encode::{drop_unencoded_test_photos, encode_photos, encode_texts, mapped_texts, served_texts, Encoders, TrainingVectors};
use super::fit::Calibrated;
use super::select::Selection;
use super::version::Draft;
use super::{CommonConfig, PipelineError, ProblemGate, TrainConfig};
use crate::dataset::{queries_on_test_photos, Dataset};
use crate::detector::{label_from_captions, Confusion};
use crate::evaluate::{self, Evaluation, Metrics};
use crate::labels::Aggregation;
use crate::{split, tables};

/// Step: saves the draft's manifest, loads the staged version back and evaluates it through
/// its traced modules; the metrics go into the manifest.
pub(super) fn evaluate_staged(
    draft: &mut Draft,
    cfg: &TrainConfig,
    data: &Dataset,
    sel: &Selection,
    vectors: &TrainingVectors,
    calibrated: &Calibrated,
) -> Result<Evaluation, PipelineError> {
    draft.save()?;
    let scorer = Scorer::load(&draft.staged.dir, cfg.common.device)?;
    // The texts as an open region reads them (the test queries include child queries).
    let map = word_map_of(&scorer, draft.staged.version);
    let texts = served_texts(&vectors.texts, map, query_texts(data));
    let evaluation = evaluate::evaluate(
        &scorer,
        &vectors.serving,
        &texts,
        &data.test_images,
        &data.test_queries,
        &data.judged,
        &sel.heldout,
        calibrated.target_mean,
        cfg.head.seed,
    )?;
    draft.manifest.metrics = serde_json::to_value(&evaluation.metrics)?;
    Ok(evaluation)
}

/// What `imagesearch-train eval` measured.
#[derive(serde::Serialize, Debug)]
pub struct Evaluated {
    pub version: u32,
    pub metrics: Metrics,
    /// The version's photo child detector at its threshold on these vectors, by group
    /// (`judged_heldout`, `test_photos`); None when the version ships no detector.
    pub child_detector: Option<BTreeMap<String, Confusion>>,
}

/// Evaluates an existing version (default: the newest); `queries` replaces the test queries
/// (same format), `views` makes the photo vectors as `imagesearch-server --image-views` would,
/// and `files` picks the encoder files (`--encoder-files`: what a serving variant costs).
pub fn eval(
    c: &CommonConfig,
    version: Option<u32>,
    queries: Option<PathBuf>,
    views: Option<ImageViews>,
    files: EncoderFile,
) -> Result<Evaluated, PipelineError> {
    let repo = ModelRepository::new(&c.models);
    let available = repo.versions()?;
    let version = match version {
        Some(v) if available.contains(&v) => v,
        Some(v) => return Err(PipelineError::UnknownVersion { version: v, available }),
        None => *available
            .last()
            .ok_or_else(|| PipelineError::NoData(format!("no scorer version in {}", repo.scorer_root().display())))?,
    };
    let scorer = Scorer::load(&repo.version_dir(version), c.device)?;
    // By default the photos are indexed as the version's gallery was chosen and calibrated.
    let views = match views {
        Some(v) => v,
        None => scorer.manifest.index_views.as_deref().unwrap_or("both").parse().map_err(PipelineError::NoData)?,
    };
    // The encoders the version names (a tuned text encoder has its own name).
    let named = CommonConfig {
        image_encoder: scorer.manifest.image_encoder.name.clone(),
        text_encoder: scorer.manifest.text_encoder.name.clone(),
        ..c.clone()
    };
    let c = &named;
    let mut enc = Encoders::load_files(c, files)?;
    scorer.manifest.check_encoders(&enc.image.manifest, &enc.text.manifest)?;
    let method: Aggregation = serde_json::from_value(serde_json::Value::String(scorer.manifest.aggregation.clone()))
        .unwrap_or(Aggregation::Pooled);
    let hp = &scorer.manifest.hyperparameters;
    let seed = hp["head"]["seed"].as_u64().unwrap_or(42);
    let fraction = hp["holdout_fraction"].as_f64().unwrap_or(0.2);
    let mut gate = ProblemGate::new(c.skip_bad_rows);
    let mut data = Dataset::load(c.paths.clone(), method, false)?;
    if let Some(file) = queries {
        let q = tables::read_test_queries(&file, &mut data.problems)?;
        data.test_queries = queries_on_test_photos(q, &data.test_images, &file, &mut data.problems);
    }
    gate.check(&data.problems)?;
    // The held-out photos are the ones the version was evaluated on at training time, so
    // calibration photos can never leak into held-out metrics even if the data changed.
    let heldout: HashSet<String> = match scorer.manifest.training["heldout_photo_list"].as_array() {
        Some(list) => list.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
        None => {
            warn!("version {version} does not list its held-out photos; recomputing the split from seed {seed}");
            split::holdout(data.judged.iter().map(|p| p.image.as_str()), fraction, seed)
        }
    };
    let judged_photos: BTreeSet<&str> = data.judged.iter().map(|p| p.image.as_str()).collect();
    let mut photo_list: Vec<(String, PathBuf)> =
        judged_photos.iter().map(|p| (p.to_string(), c.paths.train_photo(p))).collect();
    photo_list.extend(data.test_images.iter().map(|p| (p.clone(), c.paths.test_photo(p))));
    let (photos, _) = encode_photos(&mut enc, c, &photo_list, views, &mut data.problems)?;
    gate.check(&data.problems)?;
    drop_unencoded_test_photos(&mut data, &photos);
    let map = word_map_of(&scorer, version);
    let mut text_list: Vec<String> = query_texts(&data).cloned().collect();
    if let Some(m) = map {
        text_list.extend(mapped_texts(m, query_texts(&data)));
    }
    let (texts, _) = encode_texts(&mut enc, c, &text_list)?;
    let texts = served_texts(&texts, map, query_texts(&data));
    // The photo vectors as the server would make them (`--image-views`).
    let serving: HashMap<String, Vec<f32>> =
        photos.iter().filter_map(|(k, v)| v.serving(views).map(|s| (k.clone(), s))).collect();
    let calib_mean = {
        let t: Vec<f64> = data
            .judged
            .iter()
            .filter(|p| !heldout.contains(&p.image) && !data.excluded(&p.image, &p.text))
            .map(|p| p.target)
            .collect();
        crate::metrics::mean(&t)
    };
    let evaluation = evaluate::evaluate(
        &scorer,
        &serving,
        &texts,
        &data.test_images,
        &data.test_queries,
        &data.judged,
        &heldout,
        calib_mean,
        seed,
    )?;
    let judged: BTreeSet<&str> = data.judged.iter().map(|p| p.image.as_str()).collect();
    let child_detector = scorer.detector.as_ref().map(|d| detector_on(d, &data, &judged, &heldout, &serving));
    Ok(Evaluated { version, metrics: evaluation.metrics, child_detector })
}

/// The detector's confusion at its threshold on the captioned held-out judged photos and the
/// captioned test photos (labels from their own captions, as at training).
fn detector_on(
    d: &ChildDetector,
    data: &Dataset,
    judged: &BTreeSet<&str>,
    heldout: &HashSet<String>,
    serving: &HashMap<String, Vec<f32>>,
) -> BTreeMap<String, Confusion> {
    let test: HashSet<&str> = data.test_images.iter().map(String::as_str).collect();
    let heldout_judged: Vec<&str> = judged.iter().copied().filter(|p| heldout.contains(*p) && !test.contains(p)).collect();
    let groups = [("judged_heldout", heldout_judged), ("test_photos", test.iter().copied().collect())];
    groups
        .into_iter()
        .map(|(name, photos)| {
            let (mut scores, mut positive) = (Vec::new(), Vec::new());
            for p in photos.into_iter().filter(|p| data.captioned.contains(*p)) {
                if let Some(v) = serving.get(p) {
                    scores.push(d.probability(v));
                    positive.push(label_from_captions(data.own_captions.get(p).into_iter().flatten().map(String::as_str)));
                }
            }
            (name.to_string(), Confusion::at(&scores, &positive, d.info.threshold))
        })
        .collect()
}

/// The texts an evaluation reads: the judged pairs' and the test queries'.
fn query_texts(data: &Dataset) -> impl Iterator<Item = &String> {
    data.judged.iter().map(|p| &p.text).chain(data.test_queries.iter().map(|q| &q.text))
}

/// The word map a version reads open-region queries through: this build's table when the
/// version names one (a warning when it names another content).
fn word_map_of(scorer: &Scorer, version: u32) -> Option<&'static WordMap> {
    let id = scorer.manifest.query_word_map.as_deref()?;
    let map = WordMap::builtin();
    if id != map.id() {
        warn!("version {version} was measured with query word map {id}; this build's is {}", map.id());
    }
    Some(map)
}
