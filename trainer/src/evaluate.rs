//! Honest evaluation of a scorer version, through the saved artifact:
//! - text→image retrieval of the test queries over the test photos (R@1/5/10, MRR, median rank)
//!   next to the chance baseline;
//! - Kendall τ against the human judgments, as the published protocols compute them:
//!   Flickr8K-Expert τc over the individual expert ratings, Flickr8K-CF τb over the crowd share,
//!   own-caption pairs dropped, on held-out photos (and, for comparison, on all judged photos),
//!   with a 95% cluster-bootstrap interval (photos resampled whole);
//! - RMSE of the calibrated score against the held-out aggregated targets, next to the RMSE of
//!   predicting the training mean.

use std::collections::{HashMap, HashSet};

use imagesearch_model::{ModelError, Scorer};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::labels::JudgedPair;
use crate::metrics::{self, Interval, Retrieval};
use crate::tables::TestQuery;

/// Bootstrap replicates for the τ intervals.
const BOOTSTRAP_REPS: usize = 1000;

/// A τ with its interval and the number of items it was computed on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tau {
    #[serde(flatten)]
    pub interval: Interval,
    pub items: usize,
    pub photos: usize,
}

/// 95% intervals of the retrieval rates (cluster bootstrap: a test photo's queries resampled
/// together).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RetrievalIntervals {
    pub r_at_1: Interval,
    pub r_at_5: Interval,
    pub r_at_10: Interval,
    pub mrr: Interval,
}

/// The retrieval rates' intervals from 1-based ranks, clustered by each query's photo.
fn retrieval_intervals(ranks: &[usize], photos: &[&str], candidates: usize, seed: u64) -> Option<RetrievalIntervals> {
    let clusters = metrics::clusters_by(photos);
    let on = |f: fn(&Retrieval) -> f64| {
        metrics::bootstrap(&clusters, BOOTSTRAP_REPS, seed, |idx| {
            let r: Vec<usize> = idx.iter().map(|&i| ranks[i]).collect();
            Some(f(&metrics::retrieval(&r, candidates)))
        })
    };
    Some(RetrievalIntervals { r_at_1: on(|r| r.r_at_1)?, r_at_5: on(|r| r.r_at_5)?, r_at_10: on(|r| r.r_at_10)?, mrr: on(|r| r.mrr)? })
}

/// All metrics of one version.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Metrics {
    pub retrieval: Retrieval,
    /// 95% intervals of `retrieval`'s rates (absent in versions evaluated before they existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieval_interval: Option<RetrievalIntervals>,
    pub retrieval_chance: Retrieval,
    /// Retrieval of the queries that describe a child (whose photos and captions the law keeps
    /// out of training) and of the others.
    pub retrieval_child_queries: Option<Retrieval>,
    pub retrieval_other_queries: Option<Retrieval>,
    pub expert_tau_c: Option<Tau>,
    pub crowd_tau_b: Option<Tau>,
    pub expert_tau_c_all_judged: Option<Tau>,
    pub crowd_tau_b_all_judged: Option<Tau>,
    pub rmse: Option<f64>,
    pub rmse_predict_mean: Option<f64>,
    pub heldout_pairs: usize,
    pub heldout_photos: usize,
}

/// Metrics plus the per-query rankings the report shows.
pub struct Evaluation {
    pub metrics: Metrics,
    /// Per test query: (photo index into the candidate list, calibrated score), best first.
    pub rankings: Vec<Vec<(usize, f64)>>,
    /// Held-out judged pairs: (calibrated score, target).
    pub heldout_scores: Vec<(f64, f64)>,
}

/// Stacks equal-length rows into a `[rows, dim]` f32 tensor.
pub fn stack(rows: &[&[f32]]) -> Tensor {
    let dim = rows.first().map_or(0, |r| r.len()) as i64;
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, dim])
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>, ModelError> {
    Ok(Vec::<f32>::try_from(t.contiguous().view([-1]))?)
}

/// Calibrated scores of many aligned (photo, text) pairs through `scorer.pt`, in batches.
pub fn score_pairs(
    scorer: &Scorer,
    photos: &HashMap<String, Vec<f32>>,
    texts: &HashMap<String, Vec<f32>>,
    pairs: &[(&str, &str)],
) -> Result<Vec<Option<f64>>, ModelError> {
    let mut out = vec![None; pairs.len()];
    let known: Vec<usize> =
        (0..pairs.len()).filter(|&i| photos.contains_key(pairs[i].0) && texts.contains_key(pairs[i].1)).collect();
    for chunk in known.chunks(1024) {
        let iv: Vec<&[f32]> = chunk.iter().map(|&i| photos[pairs[i].0].as_slice()).collect();
        let tv: Vec<&[f32]> = chunk.iter().map(|&i| texts[pairs[i].1].as_slice()).collect();
        let scores = to_vec(&scorer.score(&stack(&iv), &stack(&tv))?)?;
        for (&i, s) in chunk.iter().zip(scores) {
            out[i] = Some(f64::from(s));
        }
    }
    Ok(out)
}

/// Ranks every query over the candidate photos; returns ranks of each query's own photo and
/// the full rankings.
pub fn rank_queries(
    scorer: &Scorer,
    photos: &HashMap<String, Vec<f32>>,
    texts: &HashMap<String, Vec<f32>>,
    candidates: &[String],
    queries: &[TestQuery],
) -> Result<(Vec<usize>, Vec<Vec<(usize, f64)>>), ModelError> {
    let cand: Vec<&[f32]> = candidates.iter().filter_map(|c| photos.get(c).map(Vec::as_slice)).collect();
    if cand.len() != candidates.len() {
        return Err(ModelError::Incompatible("some candidate photos have no vectors".into()));
    }
    let qv: Vec<&[f32]> = queries.iter().filter_map(|q| texts.get(&q.text).map(Vec::as_slice)).collect();
    if qv.len() != queries.len() {
        return Err(ModelError::Incompatible("some queries have no vectors".into()));
    }
    let img = scorer.embed_images(&stack(&cand))?;
    let txt = scorer.embed_texts(&stack(&qv))?;
    let sims = to_vec(&txt.matmul(&img.tr()))?;
    let n = candidates.len();
    let index: HashMap<&str, usize> = candidates.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    // Each query's own-photo rank from its raw cosine row (ties count against it).
    let ranks: Vec<usize> = queries
        .iter()
        .enumerate()
        .map(|(qi, q)| {
            let row = &sims[qi * n..(qi + 1) * n];
            index.get(q.image.as_str()).map(|&own| metrics::rank_of(row, own)).unwrap_or(n + 1)
        })
        .collect();
    Ok((ranks, full_rankings(scorer, &txt, &img, queries.len(), n)?))
}

/// Every query's full calibrated ranking of the `n` gallery rows through the scorer's one
/// ranking ([`Scorer::rank`]): (row, calibrated score), best first.
fn full_rankings(
    scorer: &Scorer,
    queries: &Tensor,
    gallery: &Tensor,
    q: usize,
    n: usize,
) -> Result<Vec<Vec<(usize, f64)>>, ModelError> {
    if q == 0 || n == 0 {
        return Ok(vec![Vec::new(); q]);
    }
    let (scores, rows) = scorer.rank(queries, gallery, n as i64);
    let k = rows.size().get(1).copied().unwrap_or(0) as usize;
    let scores = to_vec(&scores)?;
    let rows = Vec::<i64>::try_from(rows.contiguous().view([-1]))?;
    Ok((0..q)
        .map(|qi| (qi * k..(qi + 1) * k).map(|j| (rows[j] as usize, f64::from(scores[j]))).collect())
        .collect())
}

fn tau(
    items: &[(f64, f64, &str)],
    stat: fn(&[f64], &[f64]) -> Option<f64>,
    seed: u64,
) -> Option<Tau> {
    let photos: Vec<&str> = items.iter().map(|i| i.2).collect();
    let clusters = metrics::clusters_by(&photos);
    let interval = metrics::bootstrap(&clusters, BOOTSTRAP_REPS, seed, |idx| {
        let x: Vec<f64> = idx.iter().map(|&i| items[i].0).collect();
        let y: Vec<f64> = idx.iter().map(|&i| items[i].1).collect();
        stat(&x, &y)
    })?;
    Some(Tau { interval, items: items.len(), photos: clusters.len() })
}

/// Kendall τc (expert, individual ratings) and τb (crowd share) of scores against judgments,
/// own-caption pairs dropped, over the pairs whose photo passes `keep`.
fn judgment_taus(
    judged: &[JudgedPair],
    scores: &[Option<f64>],
    keep: impl Fn(&str) -> bool,
    seed: u64,
) -> (Option<Tau>, Option<Tau>) {
    let (expert, crowd) = judgment_items(judged, scores, keep);
    (tau(&expert, metrics::kendall_tau_c, seed), tau(&crowd, metrics::kendall_tau_b, seed))
}

/// Expert τc and crowd τb of `scores` (one per judged pair, None = not scored) on the photos
/// `keep` accepts, point estimates only (no interval: cheap enough to rank candidates by).
pub fn judgment_tau_points(judged: &[JudgedPair], scores: &[Option<f64>], keep: impl Fn(&str) -> bool) -> (Option<f64>, Option<f64>) {
    let (expert, crowd) = judgment_items(judged, scores, keep);
    let point = |items: &[(f64, f64, &str)], stat: fn(&[f64], &[f64]) -> Option<f64>| {
        let (x, y): (Vec<f64>, Vec<f64>) = items.iter().map(|i| (i.0, i.1)).unzip();
        stat(&x, &y)
    };
    (point(&expert, metrics::kendall_tau_c), point(&crowd, metrics::kendall_tau_b))
}

/// (score, rating, photo) of every expert rating and of every crowd share, own-caption pairs
/// dropped.
fn judgment_items<'a>(
    judged: &'a [JudgedPair],
    scores: &[Option<f64>],
    keep: impl Fn(&str) -> bool,
) -> (Vec<(f64, f64, &'a str)>, Vec<(f64, f64, &'a str)>) {
    let mut expert = Vec::new();
    let mut crowd = Vec::new();
    for (p, s) in judged.iter().zip(scores) {
        let Some(s) = *s else { continue };
        if p.is_own_caption() || !keep(&p.image) {
            continue;
        }
        if let Some(r) = p.judgments.expert {
            expert.extend(r.iter().map(|&x| (s, f64::from(x), p.image.as_str())));
        }
        if let Some(share) = p.judgments.crowd_share() {
            crowd.push((s, share, p.image.as_str()));
        }
    }
    (expert, crowd)
}

/// Evaluates a loaded version.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    scorer: &Scorer,
    photos: &HashMap<String, Vec<f32>>,
    texts: &HashMap<String, Vec<f32>>,
    test_images: &[String],
    queries: &[TestQuery],
    judged: &[JudgedPair],
    heldout: &HashSet<String>,
    train_target_mean: f64,
    seed: u64,
) -> Result<Evaluation, ModelError> {
    let (ranks, rankings) = rank_queries(scorer, photos, texts, test_images, queries)?;
    let pairs: Vec<(&str, &str)> = judged.iter().map(|p| (p.image.as_str(), p.text.as_str())).collect();
    let scores = score_pairs(scorer, photos, texts, &pairs)?;
    let (expert_tau_c, crowd_tau_b) = judgment_taus(judged, &scores, |img| heldout.contains(img), seed);
    let (expert_all, crowd_all) = judgment_taus(judged, &scores, |_| true, seed);
    let heldout_scores: Vec<(f64, f64)> = judged
        .iter()
        .zip(&scores)
        .filter(|(p, _)| heldout.contains(&p.image))
        .filter_map(|(p, s)| s.map(|s| (s, p.target)))
        .collect();
    let (pred, target): (Vec<f64>, Vec<f64>) = heldout_scores.iter().copied().unzip();
    let has_heldout = !target.is_empty();
    let (child_ranks, other_ranks): (Vec<(usize, bool)>, Vec<(usize, bool)>) = ranks
        .iter()
        .zip(queries)
        .map(|(&r, q)| (r, imagesearch_compliance::describes_child(&q.text).is_some()))
        .partition(|(_, child)| *child);
    let subset = |v: Vec<(usize, bool)>| {
        (!v.is_empty()).then(|| metrics::retrieval(&v.into_iter().map(|(r, _)| r).collect::<Vec<_>>(), test_images.len()))
    };
    let metrics = Metrics {
        retrieval_child_queries: subset(child_ranks),
        retrieval_other_queries: subset(other_ranks),
        retrieval: metrics::retrieval(&ranks, test_images.len()),
        retrieval_interval: retrieval_intervals(
            &ranks,
            &queries.iter().map(|q| q.image.as_str()).collect::<Vec<_>>(),
            test_images.len(),
            seed,
        ),
        retrieval_chance: metrics::chance_retrieval(ranks.len(), test_images.len()),
        expert_tau_c,
        crowd_tau_b,
        expert_tau_c_all_judged: expert_all,
        crowd_tau_b_all_judged: crowd_all,
        rmse: has_heldout.then(|| metrics::rmse(&pred, &target)),
        rmse_predict_mean: has_heldout.then(|| metrics::rmse(&vec![train_target_mean; target.len()], &target)),
        heldout_pairs: target.len(),
        heldout_photos: heldout.len(),
    };
    Ok(Evaluation { metrics, rankings, heldout_scores })
}

/// A plain-text table of the metrics (what `make eval` prints).
pub fn metrics_table(m: &Metrics) -> String {
    let mut s = String::new();
    let r = &m.retrieval;
    let c = &m.retrieval_chance;
    s.push_str(&format!(
        "retrieval: {} queries x {} photos (95% cluster bootstrap over photos)\n  {:<22}{:>8}  {:<16}{:>8}\n",
        r.queries, r.candidates, "metric", "model", "interval", "chance"
    ));
    let ci = m.retrieval_interval.as_ref();
    for (name, v, ch, iv) in [
        ("R@1", r.r_at_1, c.r_at_1, ci.map(|i| i.r_at_1)),
        ("R@5", r.r_at_5, c.r_at_5, ci.map(|i| i.r_at_5)),
        ("R@10", r.r_at_10, c.r_at_10, ci.map(|i| i.r_at_10)),
        ("MRR", r.mrr, c.mrr, ci.map(|i| i.mrr)),
        ("median rank", r.median_rank, c.median_rank, None),
        ("mean rank", r.mean_rank, c.mean_rank, None),
    ] {
        let iv = iv.map_or(String::new(), |i| format!("[{:.3}, {:.3}]", i.lo, i.hi));
        s.push_str(&format!("  {name:<22}{v:>8.3}  {iv:<16}{ch:>8.3}\n"));
    }
    for (name, sub) in [("queries describing a child", &m.retrieval_child_queries), ("other queries", &m.retrieval_other_queries)] {
        if let Some(x) = sub {
            s.push_str(&format!(
                "  {name}: {} queries, R@1 {:.3}, R@5 {:.3}, R@10 {:.3}, median rank {:.1}\n",
                x.queries, x.r_at_1, x.r_at_5, x.r_at_10, x.median_rank
            ));
        }
    }
    s.push_str("judgments (own-caption pairs dropped, 95% cluster bootstrap; chance: tau 0):\n");
    let line = |name: &str, t: &Option<Tau>| match t {
        Some(t) => format!(
            "  {name:<34}{:>7.3}  [{:.3}, {:.3}]  ({} items, {} photos)\n",
            t.interval.estimate, t.interval.lo, t.interval.hi, t.items, t.photos
        ),
        None => format!("  {name:<34}    n/a\n"),
    };
    s.push_str(&line("expert tau_c (held-out photos)", &m.expert_tau_c));
    s.push_str(&line("crowd tau_b (held-out photos)", &m.crowd_tau_b));
    s.push_str(&line("expert tau_c (all judged photos)", &m.expert_tau_c_all_judged));
    s.push_str(&line("crowd tau_b (all judged photos)", &m.crowd_tau_b_all_judged));
    if let (Some(rmse), Some(base)) = (m.rmse, m.rmse_predict_mean) {
        s.push_str(&format!(
            "calibrated score vs held-out targets: RMSE {rmse:.4} (predicting the mean: {base:.4}; {} pairs, {} photos)\n",
            m.heldout_pairs, m.heldout_photos
        ));
    }
    s
}
