//! Judged photos as extra positives (`--judged-positives`): a seeded share of the judged photos
//! the law allows (neither held out nor test photos) lend the scorer their own captions and the
//! texts humans matched with them. A second ensemble trains on the captioned photos plus those;
//! both are measured on the rest of the lever validation set (never on the test set) and the
//! second is kept only when its validation MRR is better by more than [`MRR_TIE`]. Whichever is
//! kept, the lent photos stay out of the lever validation set; they stay out of the
//! calibration when the second ensemble is kept (its head has seen them).

use std::collections::BTreeSet;

use imagesearch_model::ImageViews;
use serde::Serialize;
use tracing::info;

use super::encode::{serving_vectors, TrainingVectors};
use super::levers::{test_set, validation_set, RetrievalSet, MRR_TIE};
use super::select::Selection;
use super::{PipelineError, TrainConfig};
use crate::dataset::Dataset;
use crate::head::Ensemble;
use crate::metrics::{self, Retrieval};

/// Both ensembles on the lever validation set and, for the report only, on the test queries
/// (the manifest's `training.judged_positives`).
#[derive(Clone, Debug, Serialize)]
pub struct PositivesReport {
    /// Judged photos lent to the scorer (those with a positive) and the (photo, text)
    /// positives they gave.
    pub photos: usize,
    pub pairs: usize,
    /// The photos set aside for it (out of the lever validation set), by name.
    pub photo_list: BTreeSet<String>,
    /// The gallery views both were measured with; no query bank, no word map.
    pub index_views: String,
    pub validation_photos: usize,
    pub validation_without: Retrieval,
    pub validation_with: Retrieval,
    pub test_without: Retrieval,
    pub test_with: Retrieval,
    /// Whether the ensemble trained with them was kept.
    pub used: bool,
}

/// Step: `without` (trained on the captioned photos) against `with` (trained on them and on
/// `photos` judged photos giving `pairs` positives), on the lever validation set and, for the
/// report, the test queries (photos as a gallery indexes them with `views`, no query bank); the
/// report says whether `with` is to be kept.
#[allow(clippy::too_many_arguments)]
pub(super) fn judge(
    cfg: &TrainConfig,
    without: &Ensemble,
    with: &Ensemble,
    (photos, pairs): (usize, usize),
    data: &Dataset,
    sel: &Selection,
    v: &TrainingVectors,
    views: ImageViews,
) -> Result<PositivesReport, PipelineError> {
    let device = cfg.common.device;
    let serving = serving_vectors(&v.photos, views);
    let ((vp, vq), (tp, tq)) = (validation_set(data, sel), test_set(data));
    // One ensemble's validation and test retrieval, and the validation photos and queries measured.
    let measure = |ensemble: &Ensemble| -> Result<(Retrieval, Retrieval, (usize, usize)), PipelineError> {
        let val = RetrievalSet::new(ensemble, device, &serving, &v.texts, &vp, &vq)
            .ok_or_else(|| PipelineError::NoData("no lever validation photos left beside the judged positives".into()))?;
        let test = RetrievalSet::new(ensemble, device, &serving, &v.texts, &tp, &tq)
            .map_or_else(|| metrics::retrieval(&[], 0), |s| s.measure(None));
        Ok((val.measure(None), test, (val.photos(), val.queries())))
    };
    let (validation_without, test_without, (validation_photos, queries)) = measure(without)?;
    let (validation_with, test_with, _) = measure(with)?;
    let used = validation_with.mrr > validation_without.mrr + MRR_TIE;
    info!(
        "judged positives ({photos} photos, {pairs} pairs): validation MRR {:.3} without, {:.3} with ({queries} queries); {} (test R@1 {:.3} / {:.3})",
        validation_without.mrr,
        validation_with.mrr,
        if used { "kept" } else { "not kept" },
        test_without.r_at_1,
        test_with.r_at_1
    );
    Ok(PositivesReport {
        photos,
        pairs,
        photo_list: sel.positive_photos.iter().cloned().collect(),
        index_views: views.to_string(),
        validation_photos,
        validation_without,
        validation_with,
        test_without,
        test_with,
        used,
    })
}
