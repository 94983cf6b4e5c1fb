//! Test-time levers chosen on validation, never on the test set: which views a gallery photo's
//! vector is made of (`--index-views`: both whole views, or the 14 crops) and the query bank's
//! inverted softmax (`--query-bank`, its β) and the query word map of open regions
//! (`--query-word-map`, [`imagesearch_model::WordMap`]). Each candidate is measured on the *lever
//! validation* set — the judged photos that are neither held out nor test photos, queried by
//! their own captions (full-resolution photos, like a gallery's; the scorer never trains on
//! them) — and, for the report only, on the test queries; the best validation MRR wins, ties
//! within [`MRR_TIE`] going to the best expert τc of those photos' judged pairs.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use imagesearch_model::{ImageViews, WordMap};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tch::{Device, Kind, Tensor};
use tracing::info;

use super::encode::{serving_vectors, TrainingVectors};
use super::select::Selection;
use super::{PipelineError, TrainConfig};
use crate::dataset::Dataset;
use crate::evaluate::{self, stack};
use crate::labels::JudgedPair;
use crate::head::{Ensemble, QueryBank};
use crate::metrics::{self, Retrieval};

/// The query bank's settings.
#[derive(Clone, Debug, Serialize)]
pub struct QueryBankConfig {
    /// Training captions in the bank (0 = no query bank).
    pub size: usize,
    /// β of the inverted softmax, used as given; None = chosen on validation among no bank and
    /// [`BETAS`].
    pub beta: Option<f64>,
}

impl Default for QueryBankConfig {
    fn default() -> Self {
        QueryBankConfig { size: 5000, beta: None }
    }
}

/// The β values tried when none is given.
pub const BETAS: [f64; 6] = [5.0, 10.0, 20.0, 30.0, 50.0, 80.0];

/// One candidate setting and how it ranks.
#[derive(Clone, Debug, Serialize)]
pub struct LeverRow {
    pub index_views: String,
    /// None: no query bank.
    pub beta: Option<f64>,
    /// Queries read through the word map.
    pub query_word_map: bool,
    pub validation: Retrieval,
    /// Expert τc and crowd τb of the judged pairs of the lever validation photos (the head
    /// never trains on judged pairs; the calibration is monotone and cannot change τ).
    pub validation_tau_c: Option<f64>,
    pub validation_tau_b: Option<f64>,
    /// On the test queries, for the report (never used to choose).
    pub test: Retrieval,
}

/// Every candidate and the one chosen (the manifest's `training.levers`).
#[derive(Clone, Debug, Serialize)]
pub struct LeverReport {
    pub validation_photos: usize,
    pub validation_queries: usize,
    pub bank_captions: usize,
    pub candidates: Vec<LeverRow>,
    pub chosen_index_views: String,
    pub chosen_beta: Option<f64>,
    pub chosen_query_word_map: bool,
}

/// What the levers step decided.
pub(super) struct Chosen {
    pub index_views: ImageViews,
    pub query_bank: Option<QueryBank>,
    pub query_word_map: bool,
    pub report: LeverReport,
}

/// Photos and queries of one retrieval set, as joint embeddings.
pub(super) struct RetrievalSet {
    images: Tensor,
    texts: Tensor,
    /// Row of each query's photo.
    target: Vec<i64>,
}

impl RetrievalSet {
    /// Queries in the set.
    pub(super) fn queries(&self) -> usize {
        self.target.len()
    }

    /// Photos in the set (those with a serving vector).
    pub(super) fn photos(&self) -> usize {
        self.images.size()[0] as usize
    }

    /// The set of `photos` (those with a serving vector) queried by `queries` (text, photo).
    pub(super) fn new(
        ensemble: &Ensemble,
        device: Device,
        serving: &HashMap<String, Vec<f32>>,
        texts: &HashMap<String, Vec<f32>>,
        photos: &[&str],
        queries: &[(&str, &str)],
    ) -> Option<Self> {
        let photos: Vec<&str> = photos.iter().copied().filter(|p| serving.contains_key(*p)).collect();
        let row: HashMap<&str, i64> = photos.iter().enumerate().map(|(i, p)| (*p, i as i64)).collect();
        let queries: Vec<(&[f32], i64)> = queries
            .iter()
            .filter_map(|(t, p)| Some((texts.get(*t)?.as_slice(), *row.get(p)?)))
            .collect();
        if photos.len() < 2 || queries.is_empty() {
            return None;
        }
        tch::no_grad(|| {
            let iv = stack(&photos.iter().map(|p| serving[*p].as_slice()).collect::<Vec<_>>()).to_device(device);
            let tv = stack(&queries.iter().map(|(t, _)| *t).collect::<Vec<_>>()).to_device(device);
            Some(RetrievalSet {
                images: ensemble.joint_images(&iv),
                texts: ensemble.joint_texts(&tv),
                target: queries.iter().map(|(_, r)| *r).collect(),
            })
        })
    }

    /// Retrieval with the query bank's term subtracted from each photo's similarity.
    pub(super) fn measure(&self, bank: Option<&QueryBank>) -> Retrieval {
        tch::no_grad(|| {
            let mut sim = self.texts.matmul(&self.images.tr());
            if let Some(b) = bank {
                sim = sim - b.term(&self.images).unsqueeze(0);
            }
            let target = Tensor::from_slice(&self.target).to_device(sim.device()).unsqueeze(1);
            let own = sim.gather(1, &target, false);
            let above = sim.gt_tensor(&own).sum_dim_intlist([1i64].as_slice(), false, Kind::Int64).to_device(Device::Cpu);
            let above: Vec<i64> = Vec::try_from(above).unwrap_or_default();
            let ranks: Vec<usize> = above.into_iter().map(|a| a as usize + 1).collect();
            metrics::retrieval(&ranks, self.images.size()[0] as usize)
        })
    }
}

/// The judged pairs of the lever validation photos, as joint embeddings of their distinct
/// photos and texts.
struct JudgedSet {
    images: Tensor,
    texts: Tensor,
    /// Per judged pair of the data set: (text row, photo row), None when not in the set.
    pairs: Vec<Option<(usize, usize)>>,
}

impl JudgedSet {
    fn new(
        ensemble: &Ensemble,
        device: Device,
        serving: &HashMap<String, Vec<f32>>,
        texts: &HashMap<String, Vec<f32>>,
        judged: &[JudgedPair],
        photos: &HashSet<&str>,
        map: Option<&WordMap>,
    ) -> Self {
        let (mut photo_rows, mut text_rows) = (HashMap::new(), HashMap::new());
        let (mut iv, mut tv): (Vec<&[f32]>, Vec<&[f32]>) = (Vec::new(), Vec::new());
        let pairs = judged
            .iter()
            .map(|p| {
                let image = serving.get(&p.image).filter(|_| photos.contains(p.image.as_str()))?;
                let read = map.map_or(Cow::Borrowed(p.text.as_str()), |m| m.apply(&p.text));
                let text = texts.get(read.as_ref())?;
                let pi = *photo_rows.entry(p.image.as_str()).or_insert_with(|| {
                    iv.push(image.as_slice());
                    iv.len() - 1
                });
                let ti = *text_rows.entry(read.into_owned()).or_insert_with(|| {
                    tv.push(text.as_slice());
                    tv.len() - 1
                });
                Some((ti, pi))
            })
            .collect();
        tch::no_grad(|| {
            let embed = |rows: &[&[f32]], f: &dyn Fn(&Tensor) -> Tensor| {
                if rows.is_empty() { Tensor::zeros([0, 1], (Kind::Float, device)) } else { f(&stack(rows).to_device(device)) }
            };
            JudgedSet {
                images: embed(&iv, &|x| ensemble.joint_images(x)),
                texts: embed(&tv, &|x| ensemble.joint_texts(x)),
                pairs,
            }
        })
    }

    /// τc and τb of the served similarity (cosine less the bank's term).
    fn taus(&self, bank: Option<&QueryBank>, judged: &[JudgedPair]) -> (Option<f64>, Option<f64>) {
        if self.images.size()[0] == 0 || self.texts.size()[0] == 0 {
            return (None, None);
        }
        let width = self.images.size()[0] as usize;
        let sim: Vec<f32> = tch::no_grad(|| {
            let mut sim = self.texts.matmul(&self.images.tr());
            if let Some(b) = bank {
                sim = sim - b.term(&self.images).unsqueeze(0);
            }
            Vec::try_from(sim.flatten(0, 1).to_device(Device::Cpu)).unwrap_or_default()
        });
        let scores: Vec<Option<f64>> =
            self.pairs.iter().map(|p| p.and_then(|(t, i)| sim.get(t * width + i).map(|s| f64::from(*s)))).collect();
        evaluate::judgment_tau_points(judged, &scores, |_| true)
    }
}

/// The lever validation set: the judged photos that are neither held out, test photos nor
/// lent to the scorer as positives, and their own captions as queries (text, photo).
pub(super) fn validation_set<'a>(data: &'a Dataset, sel: &'a Selection) -> (Vec<&'a str>, Vec<(&'a str, &'a str)>) {
    let test: HashSet<&str> = data.test_images.iter().map(String::as_str).collect();
    let photos: Vec<&str> = sel
        .judged_photos
        .iter()
        .map(String::as_str)
        .filter(|p| !sel.heldout.contains(*p) && !test.contains(p) && !sel.positive_photos.contains(*p))
        .collect();
    let queries = photos
        .iter()
        .flat_map(|p| data.own_captions.get(*p).into_iter().flatten().map(move |t| (t.as_str(), *p)))
        .collect();
    (photos, queries)
}

/// The test photos and queries (text, photo), for reports only.
pub(super) fn test_set(data: &Dataset) -> (Vec<&str>, Vec<(&str, &str)>) {
    let photos = data.test_images.iter().map(String::as_str).collect();
    (photos, data.test_queries.iter().map(|q| (q.text.as_str(), q.image.as_str())).collect())
}

/// Step: measures every candidate (gallery views × query bank β × word map) on the lever validation set
/// and the test queries, and picks the one with the best validation MRR.
pub(super) fn choose(
    cfg: &TrainConfig,
    ensemble: &Ensemble,
    data: &Dataset,
    sel: &Selection,
    vectors: &TrainingVectors,
) -> Result<Chosen, PipelineError> {
    let device = cfg.common.device;
    let ((val_photos, val_queries), (test_photos, test_queries)) = (validation_set(data, sel), test_set(data));

    let bank = bank_captions(cfg, ensemble, data, sel, vectors);
    let view_candidates: Vec<ImageViews> = match cfg.index_views {
        Some(v) => vec![v],
        None => vec![ImageViews::Both, ImageViews::Crops],
    };
    let betas: Vec<Option<f64>> = match (&bank, cfg.query_bank.beta) {
        (None, _) => vec![None],
        (Some(_), Some(b)) => vec![Some(b)],
        (Some(_), None) => std::iter::once(None).chain(BETAS.iter().map(|b| Some(*b))).collect(),
    };
    let word_maps: Vec<bool> = match cfg.query_word_map {
        Some(on) => vec![on],
        None => vec![false, true],
    };
    let mut rows = Vec::new();
    let mut settings: Vec<(ImageViews, Option<f64>, bool)> = Vec::new();
    let (mut val_counts, mut val_photo_count) = (0, 0);
    for views in view_candidates {
        let serving = serving_vectors(&vectors.photos, views);
        let has_views = |p: &&str| vectors.photos.get(*p).is_some_and(|v| v.has(views));
        let vp: Vec<&str> = val_photos.iter().copied().filter(has_views).collect();
        let tp: Vec<&str> = test_photos.iter().copied().filter(has_views).collect();
        for &word_map in &word_maps {
            let map = word_map.then(WordMap::builtin);
            let (vq, tq) = (read_through(map, &val_queries), read_through(map, &test_queries));
            let Some(val) = RetrievalSet::new(ensemble, device, &serving, &vectors.texts, &vp, &pairs(&vq)) else {
                return Err(PipelineError::NoData(format!("no lever validation photos with {views} views")));
            };
            let test_set = RetrievalSet::new(ensemble, device, &serving, &vectors.texts, &tp, &pairs(&tq));
            let judged = JudgedSet::new(ensemble, device, &serving, &vectors.texts, &data.judged, &vp.iter().copied().collect(), map);
            (val_counts, val_photo_count) = (val.queries(), val.photos());
            for beta in &betas {
                let qb = beta.zip(bank.as_ref()).map(|(b, captions)| QueryBank { captions: captions.shallow_clone(), beta: b });
                let v = val.measure(qb.as_ref());
                let (tau_c, tau_b) = judged.taus(qb.as_ref(), &data.judged);
                let t = test_set.as_ref().map(|s| s.measure(qb.as_ref())).unwrap_or_else(|| metrics::retrieval(&[], 0));
                info!(
                    "lever {views} views, query bank {}, word map {}: validation R@1 {:.3} R@5 {:.3} R@10 {:.3} MRR {:.3} τc {:.3} τb {:.3} (test R@1 {:.3})",
                    beta.map_or("off".to_string(), |b| format!("β {b}")),
                    if word_map { "on" } else { "off" },
                    v.r_at_1,
                    v.r_at_5,
                    v.r_at_10,
                    v.mrr,
                    tau_c.unwrap_or(f64::NAN),
                    tau_b.unwrap_or(f64::NAN),
                    t.r_at_1
                );
                settings.push((views, *beta, word_map));
                rows.push(LeverRow { index_views: views.to_string(), beta: *beta, query_word_map: word_map, validation: v, validation_tau_c: tau_c, validation_tau_b: tau_b, test: t });
            }
        }
    }
    let chosen = pick(&rows).ok_or_else(|| PipelineError::NoData("no lever candidate".into()))?;
    let (index_views, beta, query_word_map) = settings[chosen];
    info!(
        "chosen on validation: {index_views} views, query bank {}, word map {}",
        beta.map_or("off".to_string(), |b| format!("β {b}")),
        if query_word_map { "on" } else { "off" }
    );
    let report = LeverReport {
        validation_photos: val_photo_count,
        validation_queries: val_counts,
        bank_captions: bank.as_ref().map_or(0, |b| b.size()[0] as usize),
        candidates: rows,
        chosen_index_views: index_views.to_string(),
        chosen_beta: beta,
        chosen_query_word_map: query_word_map,
    };
    let query_bank = beta.zip(bank).map(|(beta, captions)| QueryBank { captions, beta });
    Ok(Chosen { index_views, query_bank, query_word_map, report })
}

/// Validation MRRs this close to the best count as a tie (the validation set's noise is larger).
pub const MRR_TIE: f64 = 0.005;

/// The candidate to serve: the best validation MRR, where candidates within [`MRR_TIE`] of it
/// are tied and the tie goes to the best validation expert τc (the query bank raises retrieval
/// but lowers τ as β grows), then to the earlier candidate.
fn pick(rows: &[LeverRow]) -> Option<usize> {
    let best = rows.iter().map(|r| r.validation.mrr).fold(f64::NEG_INFINITY, f64::max);
    let tau = |r: &LeverRow| r.validation_tau_c.unwrap_or(f64::NEG_INFINITY);
    let mut chosen: Option<usize> = None;
    for (i, r) in rows.iter().enumerate() {
        if r.validation.mrr >= best - MRR_TIE && chosen.is_none_or(|c| tau(r) > tau(&rows[c])) {
            chosen = Some(i);
        }
    }
    chosen
}

/// `queries` (text, photo) with each text as it is read: through `map` when given.
fn read_through<'a>(map: Option<&WordMap>, queries: &[(&str, &'a str)]) -> Vec<(String, &'a str)> {
    queries.iter().map(|(t, p)| (map.map_or_else(|| t.to_string(), |m| m.apply(t).into_owned()), *p)).collect()
}

fn pairs<'a>(owned: &'a [(String, &'a str)]) -> Vec<(&'a str, &'a str)> {
    owned.iter().map(|(t, p)| (t.as_str(), *p)).collect()
}

/// Joint embeddings `[K, E]` of up to `--query-bank` training captions (a seeded sample of the
/// captions the scorer trained on: the law's exclusions already hold); None when the bank is off.
fn bank_captions(cfg: &TrainConfig, ensemble: &Ensemble, data: &Dataset, sel: &Selection, v: &TrainingVectors) -> Option<Tensor> {
    if cfg.query_bank.size == 0 {
        return None;
    }
    let mut texts: Vec<&[f32]> = sel
        .flickr_photos
        .iter()
        .filter(|p| !sel.val_set.contains(p.as_str()))
        .flat_map(|p| data.captions[p].iter())
        .filter(|c| !data.excluded(&c.query.image, &c.text))
        .filter_map(|c| v.texts.get(&c.text).map(Vec::as_slice))
        .collect();
    if texts.is_empty() {
        return None;
    }
    texts.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.head.seed ^ 0x9b));
    texts.truncate(cfg.query_bank.size);
    Some(tch::no_grad(|| ensemble.joint_texts(&stack(&texts).to_device(cfg.common.device))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(mrr: f64, tau_c: Option<f64>) -> LeverRow {
        let mut r = metrics::retrieval(&[1, 2], 10);
        r.mrr = mrr;
        LeverRow {
            index_views: "both".into(),
            beta: None,
            query_word_map: false,
            validation: r.clone(),
            validation_tau_c: tau_c,
            validation_tau_b: None,
            test: r,
        }
    }

    #[test]
    fn the_best_mrr_wins_and_near_ties_go_to_the_better_tau() {
        assert_eq!(pick(&[]), None);
        assert_eq!(pick(&[row(0.30, Some(0.5)), row(0.40, Some(0.1))]), Some(1), "a clear MRR win ignores τ");
        assert_eq!(pick(&[row(0.393, Some(0.40)), row(0.391, Some(0.42)), row(0.35, Some(0.9))]), Some(1));
        assert_eq!(pick(&[row(0.39, Some(0.4)), row(0.39, Some(0.4))]), Some(0), "full ties keep the first");
        assert_eq!(pick(&[row(0.39, None), row(0.389, Some(0.1))]), Some(1));
    }
}
