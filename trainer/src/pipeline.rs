//! The trainer's two jobs, end to end: `train` (data → vectors → head → calibrated, traced,
//! evaluated and reported version) and `eval` (metrics of an existing version).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use imagesearch_compliance::{describes_child, DISCLAIMER};
use imagesearch_model::hashing::sha256_file;
use imagesearch_model::{
    DetectorInfo, EncoderRef, ImageEncoder, ModelError, ModelRepository, Scorer, ScorerManifest, TextEncoder, DETECTOR_FILE,
};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::Device;
use tracing::{info, warn};

use crate::artifact;
use crate::dataset::{queries_on_test_photos, DataPaths, Dataset};
use crate::detector::{self, DetectorConfig, Example};
use crate::evaluate::{self, stack, Evaluation, Metrics};
use crate::head::{self, EpochLog, Ensemble, HeadConfig, TrainSet, ValSet};
use crate::labels::Aggregation;
use crate::report;
use crate::split;
use crate::tables::{self, Problem, TableError};
use crate::vectors::{self, PhotoVectors, VectorCache, VectorError};

/// Everything that can stop a training or evaluation run.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Vector(#[from] VectorError),
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
}

/// What `train` produced.
pub struct TrainOutcome {
    pub version: u32,
    pub dir: PathBuf,
    pub metrics: Metrics,
    pub detector: Option<DetectorInfo>,
}

/// Reports problems; stops unless bad rows are to be skipped.
fn check_problems(problems: &[Problem], skip: bool, already: &mut usize) -> Result<(), PipelineError> {
    let new = &problems[*already..];
    *already = problems.len();
    if new.is_empty() {
        return Ok(());
    }
    for p in new {
        if skip {
            warn!("skipped: {p}");
        } else {
            eprintln!("error: {p}");
        }
    }
    if skip {
        warn!("{} bad rows or photos skipped", new.len());
        Ok(())
    } else {
        Err(PipelineError::BadRows { count: new.len() })
    }
}

struct Encoders {
    image: ImageEncoder,
    text: TextEncoder,
    image_cache: VectorCache,
    text_cache: VectorCache,
}

impl Encoders {
    fn load(c: &CommonConfig) -> Result<Self, PipelineError> {
        let image = ImageEncoder::load(&c.encoders.join(&c.image_encoder), c.device)?;
        let text = TextEncoder::load(&c.encoders.join(&c.text_encoder), c.device)?;
        let image_cache = VectorCache::open(&c.cache_dir, image.manifest.sha256(), image.manifest.output_dim as usize)?;
        let text_cache = VectorCache::open(&c.cache_dir, text.manifest.sha256(), text.manifest.output_dim as usize)?;
        Ok(Encoders { image, text, image_cache, text_cache })
    }
}

/// Throughput of one encoding pass (None when everything came from the cache).
#[derive(serde::Serialize, Clone, Debug)]
struct Pass {
    encoded: usize,
    seconds: f64,
    per_second: Option<f64>,
}

fn timed<T>(f: impl FnOnce() -> Result<(T, usize), VectorError>) -> Result<(T, Pass), PipelineError> {
    let t = Instant::now();
    let (out, encoded) = f()?;
    let seconds = t.elapsed().as_secs_f64();
    let per_second = (encoded > 0).then(|| encoded as f64 / seconds);
    Ok((out, Pass { encoded, seconds, per_second }))
}

fn encode_photos(
    enc: &mut Encoders,
    c: &CommonConfig,
    photos: &[(String, PathBuf)],
    problems: &mut Vec<Problem>,
) -> Result<(HashMap<String, PhotoVectors>, Pass), PipelineError> {
    timed(|| vectors::encode_photos(&enc.image, &mut enc.image_cache, photos, c.image_batch, problems))
}

fn encode_texts(enc: &mut Encoders, c: &CommonConfig, texts: &[String]) -> Result<(HashMap<String, Vec<f32>>, Pass), PipelineError> {
    timed(|| vectors::encode_texts(&enc.text, &mut enc.text_cache, texts, c.text_batch))
}

fn data_hashes(paths: &DataPaths) -> Result<BTreeMap<String, String>, PipelineError> {
    let mut out = BTreeMap::new();
    for f in paths.files() {
        if f.is_file() {
            let name = f.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            out.insert(name, sha256_file(&f)?);
        }
    }
    Ok(out)
}

/// Leaves out test photos that could not be encoded (skipped bad photos) and their queries.
fn drop_unencoded_test_photos(data: &mut Dataset, photos: &HashMap<String, PhotoVectors>) {
    data.test_images.retain(|p| photos.contains_key(p));
    data.test_queries.retain(|q| photos.contains_key(&q.image));
}

/// Trains, writes, evaluates and reports a new scorer version.
pub fn train(cfg: &TrainConfig) -> Result<TrainOutcome, PipelineError> {
    let started = Instant::now();
    let c = &cfg.common;
    let mut enc = Encoders::load(c)?;
    let mut data = Dataset::load(c.paths.clone(), cfg.aggregation, true)?;
    let mut reported = 0;
    check_problems(&data.problems, c.skip_bad_rows, &mut reported)?;

    // What the law excludes from training: photos whose own captions describe a child, and
    // pairs whose text does.
    let flickr_all = data.captions.len();
    let mut flickr_photos: Vec<String> =
        data.captions.keys().filter(|p| !data.child_photos.contains_key(*p)).cloned().collect();
    let flickr_child = flickr_all - flickr_photos.len();
    if let Some(limit) = cfg.limit_flickr_photos {
        flickr_photos.truncate(limit);
    }
    if flickr_photos.len() < 4 {
        return Err(PipelineError::NoData(format!("only {} usable captioned photos", flickr_photos.len())));
    }
    if cfg.val_photos + 2 > flickr_photos.len() {
        return Err(PipelineError::NoData(format!(
            "--val-photos {} leaves too few of the {} usable captioned photos for training",
            cfg.val_photos,
            flickr_photos.len()
        )));
    }
    let val_set = split::holdout_count(flickr_photos.iter().map(String::as_str), cfg.val_photos, cfg.head.seed);
    let heldout = split::holdout(data.judged.iter().map(|p| p.image.as_str()), cfg.holdout_fraction, cfg.head.seed);
    info!(
        "{} captioned photos ({} excluded: own captions describe a child), {} for validation; {} judged pairs, {} held-out photos",
        flickr_photos.len(), flickr_child, val_set.len(), data.judged.len(), heldout.len()
    );

    // Encode (cached).
    let judged_photos: BTreeSet<String> = data.judged.iter().map(|p| p.image.clone()).collect();
    let mut photo_list: Vec<(String, PathBuf)> =
        flickr_photos.iter().map(|p| (p.clone(), c.paths.flickr_photo(p))).collect();
    // The child detector learns from every captioned photo, those of children included (they
    // are never used to train the scorer).
    let detector_flickr: Vec<String> = match &cfg.detector {
        Some(_) => data.captions.keys().take(cfg.limit_flickr_photos.unwrap_or(usize::MAX)).cloned().collect(),
        None => Vec::new(),
    };
    {
        let scorer_side: HashSet<&str> = flickr_photos.iter().map(String::as_str).collect();
        photo_list.extend(
            detector_flickr.iter().filter(|p| !scorer_side.contains(p.as_str())).map(|p| (p.clone(), c.paths.flickr_photo(p))),
        );
    }
    photo_list.extend(judged_photos.iter().map(|p| (p.to_string(), c.paths.train_photo(p))));
    photo_list.extend(data.test_images.iter().map(|p| (p.clone(), c.paths.test_photo(p))));
    let (photos, photo_pass) = encode_photos(&mut enc, c, &photo_list, &mut data.problems)?;
    check_problems(&data.problems, c.skip_bad_rows, &mut reported)?;
    drop_unencoded_test_photos(&mut data, &photos);
    let mut text_list: Vec<String> = flickr_photos
        .iter()
        .flat_map(|p| data.captions[p].iter().map(|cap| cap.text.clone()))
        .collect();
    text_list.extend(data.judged.iter().map(|p| p.text.clone()));
    text_list.extend(data.test_queries.iter().map(|q| q.text.clone()));
    let (texts, text_pass) = encode_texts(&mut enc, c, &text_list)?;
    let encode_seconds = started.elapsed().as_secs_f64();

    // Training tensors.
    let usable: Vec<&String> = flickr_photos.iter().filter(|p| photos.contains_key(*p)).collect();
    let (train_photos, val_photos): (Vec<&String>, Vec<&String>) =
        usable.into_iter().partition(|p| !val_set.contains(p.as_str()));
    let mut captions_rows: Vec<&[f32]> = Vec::new();
    let mut pairs = Vec::new();
    for (i, p) in train_photos.iter().enumerate() {
        for cap in &data.captions[*p] {
            if let Some(v) = texts.get(&cap.text) {
                pairs.push((i as i64, captions_rows.len() as i64));
                captions_rows.push(v);
            }
        }
    }
    let photos_o = stack(&train_photos.iter().map(|p| photos[*p].original.as_slice()).collect::<Vec<_>>());
    let photos_m = stack(&train_photos.iter().map(|p| photos[*p].mirrored.as_slice()).collect::<Vec<_>>());
    let captions = stack(&captions_rows);
    let val_means: Vec<Vec<f32>> = val_photos.iter().map(|p| photos[*p].mean()).collect();
    let mut val_caps: Vec<&[f32]> = Vec::new();
    let mut val_owner = Vec::new();
    for (i, p) in val_photos.iter().enumerate() {
        for cap in &data.captions[*p] {
            if let Some(v) = texts.get(&cap.text) {
                val_caps.push(v);
                val_owner.push(i as i64);
            }
        }
    }
    let val_photo_t = stack(&val_means.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let val_caption_t = stack(&val_caps);
    let train_set = TrainSet { photos_original: &photos_o, photos_mirrored: &photos_m, captions: &captions, pairs: &pairs };
    let val = ValSet { photos: &val_photo_t, captions: &val_caption_t, caption_photo: &val_owner };
    info!("training {} members on {} pairs ({} photos)", cfg.head.members, pairs.len(), train_photos.len());
    let train_started = Instant::now();
    let mut members = Vec::new();
    let mut logs: Vec<EpochLog> = Vec::new();
    for m in 0..cfg.head.members {
        let (member, log) = head::train_member(&cfg.head, m, &train_set, &val, c.device, &mut |e| {
            info!(
                "member {} epoch {:>2}: train loss {:.4}, val loss {:.4}, val R@1 {:.3}, mean recall {:.3}",
                e.member, e.epoch, e.train_loss, e.val_loss, e.val_r1, e.val_mean_recall
            )
        })?;
        members.push(member);
        logs.extend(log);
    }
    let mut ensemble = Ensemble { members };

    // Calibration on the judged pairs of the training photos that the law allows.
    let mean_photos: HashMap<String, Vec<f32>> = photos.iter().map(|(k, v)| (k.clone(), v.mean())).collect();
    let calib: Vec<_> = data
        .judged
        .iter()
        .filter(|p| !heldout.contains(&p.image) && !data.excluded(&p.image, &p.text))
        .filter(|p| mean_photos.contains_key(&p.image) && texts.contains_key(&p.text))
        .collect();
    let excluded_judged = data.judged.iter().filter(|p| data.excluded(&p.image, &p.text)).count();
    let (cos, target): (Vec<f64>, Vec<f64>) = tch::no_grad(|| {
        let iv = stack(&calib.iter().map(|p| mean_photos[&p.image].as_slice()).collect::<Vec<_>>());
        let tv = stack(&calib.iter().map(|p| texts[&p.text].as_slice()).collect::<Vec<_>>());
        let cos = (ensemble.embed_images(&iv.to_device(c.device)) * ensemble.embed_texts(&tv.to_device(c.device)))
            .sum_dim_intlist([-1i64].as_slice(), false, tch::Kind::Float)
            .to_device(Device::Cpu);
        let cos: Vec<f32> = Vec::try_from(cos).unwrap_or_default();
        (cos.into_iter().map(f64::from).collect(), calib.iter().map(|p| p.target).collect())
    });
    if cos.is_empty() {
        return Err(PipelineError::NoData("no judged training pairs to calibrate on".into()));
    }
    let calibration = head::fit_calibration(&cos, &target);
    let train_target_mean = crate::metrics::mean(&target);
    let train_seconds = train_started.elapsed().as_secs_f64();
    info!("calibration on {} judged pairs: a = {:.3}, b = {:.3}", calib.len(), calibration.a, calibration.b);

    // Write the version (staged), load it back, evaluate through it, report, publish.
    let repo = ModelRepository::new(&c.models);
    let staged = repo.stage()?;
    let files = artifact::write_modules(
        &mut ensemble,
        calibration,
        enc.image.manifest.output_dim,
        enc.text.manifest.output_dim,
        &staged.dir,
    )?;
    let mut manifest = ScorerManifest {
        version: staged.version,
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        git_commit: artifact::git_commit(),
        image_encoder: EncoderRef::from(&enc.image.manifest),
        text_encoder: EncoderRef::from(&enc.text.manifest),
        embedding_dim: cfg.head.dim * cfg.head.members as i64,
        image_views: "mean of the encoder vectors of the photo and its left-right mirror image".into(),
        child_detector: None,
        calibration,
        files,
        data: data_hashes(&c.paths)?,
        aggregation: cfg.aggregation.to_string(),
        hyperparameters: serde_json::json!({
            "head": cfg.head,
            "child_detector": cfg.detector,
            "holdout_fraction": cfg.holdout_fraction,
            "val_photos": cfg.val_photos,
            "limit_flickr_photos": cfg.limit_flickr_photos,
        }),
        training: serde_json::json!({
            "captioned_photos": flickr_all,
            "captioned_photos_excluded_child": flickr_child,
            "train_photos": train_photos.len(),
            "train_pairs": pairs.len(),
            "val_photos": val_photos.len(),
            "judged_pairs": data.judged.len(),
            "judged_pairs_dropped": data.judged_dropped,
            "judged_pairs_excluded_child": excluded_judged,
            "judged_photos_child": judged_photos.iter().filter(|p| data.child_photos.contains_key(p.as_str())).count(),
            "judged_photos_uncaptioned": judged_photos.iter().filter(|p| !data.captioned.contains(p.as_str())).count(),
            "heldout_photo_list": heldout.iter().collect::<BTreeSet<_>>(),
            "calibration_pairs": calib.len(),
            "heldout_photos": heldout.len(),
            "bad_rows_skipped": data.problems.len(),
            "photo_encoding": photo_pass,
            "text_encoding": text_pass,
            "encode_seconds": encode_seconds,
            "train_seconds": train_seconds,
            "epochs": logs,
            "device": imagesearch_model::device::device_name(c.device),
        }),
        metrics: serde_json::Value::Null,
    };
    if let Some(dcfg) = &cfg.detector {
        let detector_started = Instant::now();
        let label = |p: &str| detector::label_from_captions(data.own_captions.get(p).into_iter().flatten().map(String::as_str));
        let examples = |list: &mut dyn Iterator<Item = &String>| -> Vec<Example> {
            list.filter_map(|p| {
                mean_photos.get(p).map(|v| Example { photo: p.clone(), vector: v.clone(), positive: label(p) })
            })
            .collect()
        };
        let test_set: HashSet<&str> = data.test_images.iter().map(String::as_str).collect();
        // Training pool: every captioned photo except the scorer's held-out judged photos and
        // the test photos, which are only evaluated on.
        let judged_captioned = || judged_photos.iter().filter(|p| data.captioned.contains(p.as_str()) && !test_set.contains(p.as_str()));
        let mut pool = examples(&mut detector_flickr.iter());
        pool.extend(examples(&mut judged_captioned().filter(|p| !heldout.contains(p.as_str()))));
        let judged_heldout = examples(&mut judged_captioned().filter(|p| heldout.contains(p.as_str())));
        let test_photos = examples(&mut data.test_images.iter().filter(|p| data.captioned.contains(p.as_str())));
        info!(
            "training the child detector on {} captioned photos ({} positive)",
            pool.len(),
            pool.iter().filter(|e| e.positive).count()
        );
        let trained = detector::train(
            dcfg,
            &pool,
            &[("judged_heldout", &judged_heldout), ("test_photos", &test_photos)],
            enc.image.manifest.output_dim as usize,
        )?;
        let path = staged.dir.join(DETECTOR_FILE);
        let text = serde_json::to_string(&trained.weights).map_err(std::io::Error::other);
        text.and_then(|t| std::fs::write(&path, t)).map_err(|source| PipelineError::Io { path: path.clone(), source })?;
        manifest.files.insert(DETECTOR_FILE.to_string(), sha256_file(&path)?);
        info!("{}", detector::summary_line(&trained.info));
        manifest.child_detector = Some(trained.info);
        if let Some(t) = manifest.training.as_object_mut() {
            t.insert("detector_seconds".into(), serde_json::json!(detector_started.elapsed().as_secs_f64()));
        }
    }
    manifest.save(&staged.dir)?;
    let scorer = Scorer::load(&staged.dir, c.device)?;
    let evaluation = evaluate::evaluate(
        &scorer,
        &mean_photos,
        &texts,
        &data.test_images,
        &data.test_queries,
        &data.judged,
        &heldout,
        train_target_mean,
        cfg.head.seed,
    )?;
    manifest.metrics = serde_json::to_value(&evaluation.metrics).unwrap_or_default();
    if let Some(t) = manifest.training.as_object_mut() {
        t.insert("total_seconds".into(), serde_json::json!(started.elapsed().as_secs_f64()));
    }
    manifest.save(&staged.dir)?;
    let html = build_report(&manifest, &evaluation, &logs, &data, cfg.report_queries, cfg.head.seed);
    let report_path = staged.dir.join("report.html");
    std::fs::write(&report_path, html).map_err(|source| PipelineError::Io { path: report_path, source })?;
    let version = staged.version;
    let dir = staged.commit()?;
    Ok(TrainOutcome { version, dir, metrics: evaluation.metrics, detector: manifest.child_detector })
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

fn build_report(
    manifest: &ScorerManifest,
    eval: &Evaluation,
    logs: &[EpochLog],
    data: &Dataset,
    n_queries: usize,
    seed: u64,
) -> String {
    use report::{Hit, MetricRow, QueryResult, Series};
    let m = &eval.metrics;
    let row = |name: &str, value: f64, interval: Option<(f64, f64)>, baseline: Option<f64>, goal: Option<f64>, higher: bool| MetricRow {
        name: name.into(),
        value,
        interval,
        baseline,
        goal,
        higher_is_better: higher,
    };
    let (r, ch) = (&m.retrieval, &m.retrieval_chance);
    let mut metrics = vec![
        row("R@1 (test queries × test photos)", r.r_at_1, None, Some(ch.r_at_1), Some(0.60), true),
        row("R@5", r.r_at_5, None, Some(ch.r_at_5), Some(0.90), true),
        row("R@10", r.r_at_10, None, Some(ch.r_at_10), Some(0.95), true),
        row("MRR", r.mrr, None, Some(ch.mrr), None, true),
        row("median rank", r.median_rank, None, Some(ch.median_rank), None, false),
    ];
    let tau_row = |name: &str, t: &Option<evaluate::Tau>, goal: Option<f64>| {
        t.as_ref().map(|t| row(name, t.interval.estimate, Some((t.interval.lo, t.interval.hi)), Some(0.0), goal, true))
    };
    metrics.extend(tau_row("expert τc (held-out photos)", &m.expert_tau_c, Some(0.52)));
    metrics.extend(tau_row("crowd τb (held-out photos)", &m.crowd_tau_b, Some(0.35)));
    metrics.extend(tau_row("expert τc (all judged photos)", &m.expert_tau_c_all_judged, None));
    metrics.extend(tau_row("crowd τb (all judged photos)", &m.crowd_tau_b_all_judged, None));
    if let (Some(rmse), Some(base)) = (m.rmse, m.rmse_predict_mean) {
        metrics.push(row("RMSE vs held-out targets", rmse, None, Some(base), None, false));
    }
    if let Some(d) = &manifest.child_detector {
        let groups = &d.metrics["groups"];
        for (key, label) in [("heldout", "held-out captioned photos"), ("test_photos", "test photos")] {
            let g = &groups[key];
            let share = match (g["positives"].as_f64(), g["photos"].as_f64()) {
                (Some(p), Some(n)) if n > 0.0 => Some(p / n),
                _ => None,
            };
            if let Some(r) = g["recall"].as_f64() {
                metrics.push(row(&format!("child detector recall ({label})"), r, None, None, Some(d.target_recall), true));
            }
            if let Some(p) = g["precision"].as_f64() {
                metrics.push(row(&format!("child detector precision ({label})"), p, None, share, None, true));
            }
            if let Some(a) = g["roc_auc"].as_f64() {
                metrics.push(row(&format!("child detector ROC AUC ({label})"), a, None, Some(0.5), None, true));
            }
        }
    }
    let members: BTreeMap<usize, Vec<&EpochLog>> = logs.iter().fold(BTreeMap::new(), |mut acc, e| {
        acc.entry(e.member).or_insert_with(Vec::new).push(e);
        acc
    });
    let series = |f: fn(&EpochLog) -> f64| -> Vec<Series> {
        members
            .iter()
            .map(|(k, v)| Series { name: format!("member {k}"), points: v.iter().map(|e| (e.epoch as f64, f(e))).collect() })
            .collect()
    };
    let curves = vec![
        ("Training loss".to_string(), "epoch".to_string(), "InfoNCE".to_string(), series(|e| e.train_loss)),
        ("Validation loss".to_string(), "epoch".to_string(), "text→image cross-entropy".to_string(), series(|e| e.val_loss)),
        ("Validation R@1".to_string(), "epoch".to_string(), "R@1".to_string(), series(|e| e.val_r1)),
    ];
    let bucket = |lo: f64, hi: f64| -> Vec<f64> {
        eval.heldout_scores.iter().filter(|(_, t)| *t >= lo && *t < hi).map(|(s, _)| *s).collect()
    };
    let histograms = vec![
        (
            "Calibrated score on held-out judged pairs, by human target".to_string(),
            0.0,
            1.0,
            vec![
                ("target < 1/3".to_string(), crate::metrics::histogram(&bucket(0.0, 1.0 / 3.0), 0.0, 1.0, 20)),
                ("1/3 ≤ target < 2/3".to_string(), crate::metrics::histogram(&bucket(1.0 / 3.0, 2.0 / 3.0), 0.0, 1.0, 20)),
                ("target ≥ 2/3".to_string(), crate::metrics::histogram(&bucket(2.0 / 3.0, 1.01), 0.0, 1.0, 20)),
            ],
        ),
        (
            format!("Aggregated targets of all judged pairs ({})", manifest.aggregation),
            0.0,
            1.0,
            vec![("pairs".to_string(), crate::metrics::histogram(&data.judged.iter().map(|p| p.target).collect::<Vec<_>>(), 0.0, 1.0, 20))],
        ),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = n_queries.min(data.test_queries.len());
    let mut picked: Vec<usize> = sample(&mut rng, data.test_queries.len(), n).into_vec();
    picked.sort_unstable();
    let queries = picked
        .into_iter()
        .map(|qi| {
            let q = &data.test_queries[qi];
            let withheld = describes_child(&q.text).map(|m| format!("the query describes a child ({})", m.rule));
            let hits = eval.rankings[qi]
                .iter()
                .take(5)
                .map(|&(pi, score)| {
                    let image = data.test_images[pi].clone();
                    // A photo whose own captions describe a child is never shown (fail closed).
                    let restricted = data.photo_excluded(&image);
                    let thumbnail = if withheld.is_some() || restricted {
                        None
                    } else {
                        report::thumbnail_data_uri(&data.paths.test_photo(&image), 200).ok()
                    };
                    Hit { relevant: image == q.image, image, score, thumbnail, withheld: restricted }
                })
                .collect();
            QueryResult { query: q.text.clone(), withheld_reason: withheld, hits }
        })
        .collect();
    let t = &manifest.training;
    let summary = vec![
        ("image encoder".to_string(), format!("{} ({})", manifest.image_encoder.name, short(&manifest.image_encoder.sha256))),
        ("text encoder".to_string(), format!("{} ({})", manifest.text_encoder.name, short(&manifest.text_encoder.sha256))),
        ("aggregation".to_string(), manifest.aggregation.clone()),
        ("calibration".to_string(), format!("sigmoid({:.3} · cos {:+.3})", manifest.calibration.a, manifest.calibration.b)),
        ("training pairs".to_string(), format!("{} captions of {} photos", t["train_pairs"], t["train_photos"])),
        (
            "excluded by the child rule".to_string(),
            format!(
                "{} of {} captioned photos; {} of {} judged pairs",
                t["captioned_photos_excluded_child"], t["captioned_photos"], t["judged_pairs_excluded_child"], t["judged_pairs"]
            ),
        ),
        (
            "child detector".to_string(),
            match &manifest.child_detector {
                Some(d) => {
                    let fallbacks: Vec<&str> =
                        d.metrics["fallbacks"].as_array().into_iter().flatten().filter_map(|f| f.as_str()).collect();
                    let mut s = format!(
                        "logistic on the image vector, flags at probability ≥ {:.4} (the highest threshold with recall ≥ {} on {} validation photos); labels: {}",
                        d.threshold, d.target_recall, d.metrics["split"]["validation"]["photos"], d.labels
                    );
                    if !fallbacks.is_empty() {
                        s.push_str(&format!("; fallback: {}", fallbacks.join("; ")));
                    }
                    s
                }
                None => "none: every photo without captions is restricted".to_string(),
            },
        ),
        ("device".to_string(), t["device"].as_str().unwrap_or("unknown").to_string()),
        ("git commit".to_string(), manifest.git_commit.clone().unwrap_or_else(|| "unknown".into())),
    ];
    report::render(&report::Report {
        title: format!("imagesearch scorer version {}", manifest.version),
        version: manifest.version,
        created: manifest.created.clone(),
        summary,
        metrics,
        curves,
        histograms,
        queries,
        disclaimer: DISCLAIMER.to_string(),
        notes: vec![
            "Retrieval: each test query ranks the test photos; its own photo is the relevant one (ties count against it).".into(),
            "Kendall τ: own-caption pairs dropped; expert τc over individual ratings, crowd τb over the share of yes votes; 95% interval from 1000 bootstrap resamples of whole photos.".into(),
            "The head never trains on the judged pairs; only the two calibration parameters are fitted on the judged pairs of the training photos, so 'all judged photos' τ is nearly as honest as the held-out one (calibration is monotone and cannot change τ).".into(),
            "Child detector: recall is the share of photos whose own captions describe a child that it flags (goal: the target recall its threshold was chosen for on validation photos); the baseline of its precision is the share of such photos, the precision of flagging everything.".into(),
            format!("Queries that describe a child show the disclaimer instead of photos, and so does the slot of every photo whose own captions describe a child (or that has no caption to clear it): “{DISCLAIMER}”."),
        ],
    })
}

/// Evaluates an existing version; `queries` replaces the test queries (same format).
pub fn eval(
    c: &CommonConfig,
    version: Option<u32>,
    queries: Option<PathBuf>,
    views: imagesearch_model::ImageViews,
) -> Result<(u32, Metrics), PipelineError> {
    let repo = ModelRepository::new(&c.models);
    let available = repo.versions()?;
    let version = match version {
        Some(v) if available.contains(&v) => v,
        Some(v) => return Err(PipelineError::UnknownVersion { version: v, available }),
        None => *available.last().ok_or_else(|| PipelineError::NoData(format!("no scorer version in {}", repo.scorer_root().display())))?,
    };
    let scorer = Scorer::load(&repo.version_dir(version), c.device)?;
    let mut enc = Encoders::load(c)?;
    scorer.manifest.check_encoders(&enc.image.manifest, &enc.text.manifest)?;
    let method: Aggregation = serde_json::from_value(serde_json::Value::String(scorer.manifest.aggregation.clone()))
        .unwrap_or(Aggregation::Pooled);
    let hp = &scorer.manifest.hyperparameters;
    let seed = hp["head"]["seed"].as_u64().unwrap_or(42);
    let fraction = hp["holdout_fraction"].as_f64().unwrap_or(0.2);
    let mut data = Dataset::load(c.paths.clone(), method, false)?;
    if let Some(file) = queries {
        let q = tables::read_test_queries(&file, &mut data.problems)?;
        data.test_queries = queries_on_test_photos(q, &data.test_images, &file, &mut data.problems);
    }
    let mut reported = 0;
    check_problems(&data.problems, c.skip_bad_rows, &mut reported)?;
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
    let mut photo_list: Vec<(String, PathBuf)> = judged_photos.iter().map(|p| (p.to_string(), c.paths.train_photo(p))).collect();
    photo_list.extend(data.test_images.iter().map(|p| (p.clone(), c.paths.test_photo(p))));
    let (photos, _) = encode_photos(&mut enc, c, &photo_list, &mut data.problems)?;
    check_problems(&data.problems, c.skip_bad_rows, &mut reported)?;
    drop_unencoded_test_photos(&mut data, &photos);
    let mut text_list: Vec<String> = data.judged.iter().map(|p| p.text.clone()).collect();
    text_list.extend(data.test_queries.iter().map(|q| q.text.clone()));
    let (texts, _) = encode_texts(&mut enc, c, &text_list)?;
    // The photo vectors as the server would make them (`--image-views`).
    let mean_photos: HashMap<String, Vec<f32>> = photos
        .iter()
        .map(|(k, v)| {
            let vector = match views {
                imagesearch_model::ImageViews::Both => v.mean(),
                imagesearch_model::ImageViews::Original => v.original.clone(),
            };
            (k.clone(), vector)
        })
        .collect();
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
        &scorer, &mean_photos, &texts, &data.test_images, &data.test_queries, &data.judged, &heldout, calib_mean, seed,
    )?;
    Ok((version, evaluation.metrics))
}
