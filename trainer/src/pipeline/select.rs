//! The law's exclusions and the splits of a training run: which captioned photos the scorer may
//! learn from (none whose own captions describe a child), which of them validate the early
//! stopping, which judged photos are held out for evaluation, which photos the child
//! detector learns from, and which judged photos may lend the scorer positives.

use std::collections::{BTreeSet, HashSet};

use tracing::info;

use super::{PipelineError, TrainConfig};
use crate::dataset::Dataset;
use crate::split;

/// The photos of one training run, by role.
pub(super) struct Selection {
    /// Captioned photos before the law's exclusions.
    pub captioned_all: usize,
    /// Captioned photos excluded because their own captions describe a child.
    pub captioned_child: usize,
    /// Captioned photos the scorer may learn from (after `--limit-flickr-photos`).
    pub flickr_photos: Vec<String>,
    /// The validation photos among them (early stopping).
    pub val_set: HashSet<String>,
    /// Judged photos held out for evaluation (never calibrated on).
    pub heldout: HashSet<String>,
    /// Every photo with judged pairs.
    pub judged_photos: BTreeSet<String>,
    /// Captioned photos the child detector learns from, those of children included (never
    /// used to train the scorer); empty when no detector is trained.
    pub detector_flickr: Vec<String>,
    /// Judged photos whose human-matched texts may train the scorer (`--judged-positives`): a
    /// seeded share of those the law allows that are neither held out nor test photos; they
    /// leave the lever validation set. Empty when the lever is off.
    pub positive_photos: HashSet<String>,
}

/// Step: applies what the law excludes from training — photos whose own captions describe a
/// child (pairs whose text does are left out later, by [`Dataset::excluded`]) — and splits the
/// rest by photo.
pub(super) fn apply_exclusions(cfg: &TrainConfig, data: &Dataset) -> Result<Selection, PipelineError> {
    let captioned_all = data.captions.len();
    let mut flickr_photos: Vec<String> =
        data.captions.keys().filter(|p| !data.child_photos.contains_key(*p)).cloned().collect();
    let captioned_child = captioned_all - flickr_photos.len();
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
        flickr_photos.len(),
        captioned_child,
        val_set.len(),
        data.judged.len(),
        heldout.len()
    );
    let judged_photos: BTreeSet<String> = data.judged.iter().map(|p| p.image.clone()).collect();
    let detector_flickr: Vec<String> = match &cfg.detector {
        Some(_) => data.captions.keys().take(cfg.limit_flickr_photos.unwrap_or(usize::MAX)).cloned().collect(),
        None => Vec::new(),
    };
    let test: HashSet<&str> = data.test_images.iter().map(String::as_str).collect();
    let candidates = judged_photos
        .iter()
        .map(String::as_str)
        .filter(|p| !heldout.contains(*p) && !test.contains(p) && !data.photo_excluded(p));
    let positive_photos = split::holdout(candidates, cfg.judged_positives, cfg.head.seed ^ 0x6a75_6467);
    Ok(Selection { captioned_all, captioned_child, flickr_photos, val_set, heldout, judged_photos, detector_flickr, positive_photos })
}
