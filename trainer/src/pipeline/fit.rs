//! Fitting the scorer: the training tensors built from the captioned photos the law allows, the
//! ensemble's members trained contrastively on them (early stopping on the validation
//! photos), then Score's refinement and the calibrations fitted on the judged pairs of the
//! training photos.

use std::collections::HashSet;

use imagesearch_model::views::View;
use imagesearch_model::{Calibration, ImageViews};
use tch::{Device, Tensor};
use tracing::info;

use super::encode::TrainingVectors;
use super::select::Selection;
use super::{PipelineError, TrainConfig};
use crate::dataset::Dataset;
use crate::evaluate::stack;
use crate::head::{self, EpochLog, Ensemble, TrainSet, ValSet};
use crate::refine::{self, RefineConfig, RefineReport};
use crate::text_tuning::{self, TuneReport, TuneSet};

/// The head's training and validation data as tensors.
pub(super) struct TrainingTensors {
    photos_original: Tensor,
    photos_mirrored: Tensor,
    captions: Tensor,
    /// Each caption row's text.
    caption_texts: Vec<String>,
    /// (photo row, caption row) positives.
    pairs: Vec<(i64, i64)>,
    val_photos: Tensor,
    val_captions: Tensor,
    val_caption_texts: Vec<String>,
    val_caption_photo: Vec<i64>,
    /// Training photos (rows of the photo tensors).
    pub train_photos: usize,
    /// Validation photos.
    pub val_photo_count: usize,
    /// Judged photos among the training photos, and their pairs (`--judged-positives`).
    pub positive_photos: usize,
    pub positive_pairs: usize,
}

impl TrainingTensors {
    /// Training (photo, caption) positives.
    pub fn train_pairs(&self) -> usize {
        self.pairs.len()
    }
}

/// Judged pairs at least this matched (the pooled target, 0 = no match, 1 = all judges say it
/// matches) are positives of `--judged-positives`: a majority of the judgments say match.
pub const MATCH_TARGET: f64 = 0.5;

/// The texts a judged photo is matched with, as positives: its own captions and the judged
/// texts humans matched with it ([`MATCH_TARGET`]), none the law excludes; each once.
pub(super) fn positive_texts<'a>(data: &'a Dataset, photo: &str) -> Vec<&'a str> {
    let own = data.own_captions.get(photo).into_iter().flatten().map(String::as_str);
    let matched = data.judged.iter().filter(|p| p.image == photo && p.target >= MATCH_TARGET).map(|p| p.text.as_str());
    let mut seen = HashSet::new();
    own.chain(matched).filter(|t| !data.excluded(photo, t) && seen.insert(*t)).collect()
}

/// Step: the training tensors — both views of each training photo, their captions and the
/// positive pairs (with `with_positives`, also the judged positive photos of
/// [`Selection::positive_photos`] with their [`positive_texts`]) — and the validation tensors
/// (photos' serving vectors, captions and the row of each caption's photo). Photos that could
/// not be encoded are left out.
pub(super) fn training_tensors(data: &Dataset, sel: &Selection, v: &TrainingVectors, with_positives: bool) -> TrainingTensors {
    let (photos, texts) = (&v.photos, &v.texts);
    let usable: Vec<&String> =
        sel.flickr_photos.iter().filter(|p| photos.get(*p).is_some_and(|v| v.has(ImageViews::Both))).collect();
    let (mut train_photos, val_photos): (Vec<&String>, Vec<&String>) =
        usable.into_iter().partition(|p| !sel.val_set.contains(p.as_str()));
    let mut captions_rows: Vec<&[f32]> = Vec::new();
    let mut caption_texts = Vec::new();
    let mut pairs = Vec::new();
    for (i, p) in train_photos.iter().enumerate() {
        for cap in &data.captions[*p] {
            if let Some(t) = texts.get(&cap.text) {
                pairs.push((i as i64, captions_rows.len() as i64));
                captions_rows.push(t);
                caption_texts.push(cap.text.clone());
            }
        }
    }
    let (mut positive_photos, mut positive_pairs) = (0, 0);
    if with_positives {
        let mut extra: Vec<&String> =
            sel.positive_photos.iter().filter(|p| photos.get(*p).is_some_and(|v| v.has(ImageViews::Both))).collect();
        extra.sort();
        for p in extra {
            let matched: Vec<(&str, &Vec<f32>)> =
                positive_texts(data, p).into_iter().filter_map(|t| Some((t, texts.get(t)?))).collect();
            if matched.is_empty() {
                continue;
            }
            let row = train_photos.len() as i64;
            train_photos.push(p);
            positive_photos += 1;
            for (text, vector) in matched {
                pairs.push((row, captions_rows.len() as i64));
                captions_rows.push(vector);
                caption_texts.push(text.to_string());
                positive_pairs += 1;
            }
        }
    }
    let view = |v: View| -> Tensor {
        stack(&train_photos.iter().map(|p| photos[*p].view(v).unwrap_or_default()).collect::<Vec<_>>())
    };
    let (photos_original, photos_mirrored) = (view(View::ORIGINAL), view(View::MIRRORED));
    let captions = stack(&captions_rows);
    let mut val_caps: Vec<&[f32]> = Vec::new();
    let mut val_caption_texts = Vec::new();
    let mut val_caption_photo = Vec::new();
    for (i, p) in val_photos.iter().enumerate() {
        for cap in &data.captions[*p] {
            if let Some(t) = texts.get(&cap.text) {
                val_caps.push(t);
                val_caption_texts.push(cap.text.clone());
                val_caption_photo.push(i as i64);
            }
        }
    }
    let val_photo_t = stack(&val_photos.iter().map(|p| v.serving[*p].as_slice()).collect::<Vec<_>>());
    TrainingTensors {
        photos_original,
        photos_mirrored,
        captions,
        caption_texts,
        pairs,
        val_photos: val_photo_t,
        val_captions: stack(&val_caps),
        val_caption_texts,
        val_caption_photo,
        train_photos: train_photos.len(),
        val_photo_count: val_photos.len(),
        positive_photos,
        positive_pairs,
    }
}

/// Step: trains the ensemble's members one after the other (each logs its epochs); returns
/// the ensemble and every member's epoch log.
pub(super) fn train_members(cfg: &TrainConfig, t: &TrainingTensors) -> Result<(Ensemble, Vec<EpochLog>), PipelineError> {
    let train_set = TrainSet {
        photos_original: &t.photos_original,
        photos_mirrored: &t.photos_mirrored,
        captions: &t.captions,
        pairs: &t.pairs,
    };
    let val = ValSet { photos: &t.val_photos, captions: &t.val_captions, caption_photo: &t.val_caption_photo };
    info!("training {} members on {} pairs ({} photos)", cfg.head.members, t.pairs.len(), t.train_photos);
    let mut members = Vec::new();
    let mut logs: Vec<EpochLog> = Vec::new();
    for m in 0..cfg.head.members {
        let (member, log) = head::train_member(&cfg.head, m, &train_set, &val, cfg.common.device, &mut |e| {
            info!(
                "member {} epoch {:>2}: train loss {:.4}, val loss {:.4}, val R@1 {:.3}, mean recall {:.3}",
                e.member, e.epoch, e.train_loss, e.val_loss, e.val_r1, e.val_mean_recall
            )
        })?;
        members.push(member);
        logs.extend(log);
    }
    Ok((Ensemble { members, query_bank: None }, logs))
}

/// Step: tunes the text encoder with the image side locked (LiT) on the head's training set,
/// its validation photos choosing the epoch; the report names the encoder written, if any.
pub(super) fn tune_text_encoder(
    cfg: &TrainConfig,
    base: &imagesearch_model::TextEncoder,
    t: &TrainingTensors,
) -> Result<TuneReport, PipelineError> {
    let set = TuneSet {
        photos_original: &t.photos_original,
        photos_mirrored: &t.photos_mirrored,
        captions: &t.caption_texts,
        caption_vectors: &t.captions,
        pairs: &t.pairs,
        val_photos: &t.val_photos,
        val_captions: &t.val_caption_texts,
        val_caption_photo: &t.val_caption_photo,
    };
    let c = &cfg.common;
    info!("tuning the text encoder {} on {} pairs ({} epochs)", base.manifest.name, t.pairs.len(), cfg.text_tuning.epochs);
    let report = text_tuning::tune(&cfg.text_tuning, base, &c.encoders, &set, c.device, &mut |e| {
        info!(
            "text tuning epoch {}: train loss {:.4}, val R@1 {:.3}, mean recall {:.3} ({:.0} s)",
            e.epoch, e.train_loss, e.val_r1, e.val_mean_recall, e.seconds
        )
    })?;
    match &report.encoder {
        Some(name) => info!("text encoder tuned: {name} (epoch {})", report.best_epoch),
        None => info!("text tuning did not beat the base encoder on validation; the base encoder stays"),
    }
    Ok(report)
}

/// The fitted calibrations, Score's refinement and what they were fitted on.
pub(super) struct Calibrated {
    /// Of the served inner product (the towers', with the query bank's term): Search's scores.
    pub calibration: Calibration,
    /// Of Score's inner product (no query-bank term; weighted by `score_weights` when set).
    pub score_calibration: Calibration,
    /// Score's weight per joint dimension ([`crate::refine`]); None: the plain cosine.
    pub score_weights: Option<Tensor>,
    /// How the refinement was chosen.
    pub refinement: RefineReport,
    /// Judged pairs it was fitted on.
    pub pairs: usize,
    /// Mean target of those pairs (the baseline prediction of the RMSE).
    pub target_mean: f64,
}

/// Step: fits Score's refinement and both calibrations on the judged pairs of the training
/// photos that the law allows (the photos of `left_out` — held-out photos, and judged photos
/// the head trained on — and excluded pairs never take part).
pub(super) fn calibrate(
    ensemble: &Ensemble,
    refine: &RefineConfig,
    device: Device,
    data: &Dataset,
    left_out: &HashSet<String>,
    v: &TrainingVectors,
) -> Result<Calibrated, PipelineError> {
    let (serving, texts) = (&v.serving, &v.texts);
    let calib: Vec<_> = data
        .judged
        .iter()
        .filter(|p| !left_out.contains(&p.image) && !data.excluded(&p.image, &p.text))
        .filter(|p| serving.contains_key(&p.image) && texts.contains_key(&p.text))
        .collect();
    let target: Vec<f64> = calib.iter().map(|p| p.target).collect();
    if target.is_empty() {
        return Err(PipelineError::NoData("no judged training pairs to calibrate on".into()));
    }
    let (served, products) = tch::no_grad(|| {
        let iv = stack(&calib.iter().map(|p| serving[&p.image].as_slice()).collect::<Vec<_>>()).to_device(device);
        let tv = stack(&calib.iter().map(|p| texts[&p.text].as_slice()).collect::<Vec<_>>()).to_device(device);
        let (ji, jt) = (ensemble.joint_images(&iv), ensemble.joint_texts(&tv));
        let products = &ji * &jt;
        (row_sums(&(ensemble.served_images(ji) * ensemble.served_texts(jt))), products)
    });
    let (refinement, score_weights) = tch::no_grad(|| refine::fit(refine, &calib, &products, &target));
    let joint = tch::no_grad(|| match &score_weights {
        Some(g) => row_sums(&(&products * g.to_device(products.device()))),
        None => row_sums(&products),
    });
    let calibration = head::fit_calibration(&served, &target);
    let score_calibration = head::fit_calibration(&joint, &target);
    info!(
        "calibration on {} judged pairs: Search a = {:.3}, b = {:.3}; Score (no query-bank term) a = {:.3}, b = {:.3}",
        calib.len(),
        calibration.a,
        calibration.b,
        score_calibration.a,
        score_calibration.b
    );
    match (refinement.alpha, refinement.strength) {
        (Some(alpha), Some(strength)) => info!(
            "Score's refinement from judged pairs: α {alpha}, strength {strength} (chosen on {} pairs of {} photos and {} texts the fit did not see)",
            refinement.validation_pairs, refinement.validation_photos, refinement.validation_texts
        ),
        _ => info!("Score's refinement not used: {:?}", refinement.outcome),
    }
    Ok(Calibrated {
        calibration,
        score_calibration,
        score_weights,
        refinement,
        pairs: calib.len(),
        target_mean: crate::metrics::mean(&target),
    })
}

/// The sums of the rows of `[N, E]` as f64 on the CPU.
fn row_sums(x: &Tensor) -> Vec<f64> {
    let d = x.sum_dim_intlist([-1i64].as_slice(), false, tch::Kind::Float).to_device(Device::Cpu);
    Vec::<f32>::try_from(d).unwrap_or_default().into_iter().map(f64::from).collect()
}
