//! Training of the child detector that ships inside each scorer version (the model side, and
//! what the server does with it, is `imagesearch_model::detector`).
//!
//! - **Labels** come from captions: a photo is positive when any of its own captions (its
//!   Flickr8k captions, the queries written for it) describes a child
//!   ([`imagesearch_compliance::describes_child`]), negative otherwise.
//! - **Features**: the photo's serving vector, the mean of the image-encoder vectors of the
//!   photo and its left-right mirror.
//! - **Model**: standardise by the training photos' mean and standard deviation, then logistic
//!   regression, fitted full batch with Adam from zero weights (so a given data set gives the
//!   same weights every time), classes weighted to equal total weight, L2 penalty chosen from a
//!   small grid by validation ROC AUC.
//! - **Threshold**: the highest probability threshold at which the validation photos' recall is
//!   still at least the target recall (a miss shows a child where the law forbids it, a false
//!   alarm only hides a photo). With no positive photo to calibrate on, the threshold is 0: every
//!   photo is flagged (fail closed), and the metrics say so.
//! - **Split** by photo into training, validation and held-out photos (seeded, deterministic).
//!   Photos the caller keeps out of training (the scorer's held-out judged photos, the test
//!   photos) are only evaluated on, as separate groups.

use std::collections::BTreeMap;

use imagesearch_compliance::describes_child;
use imagesearch_model::{DetectorInfo, DetectorWeights};
use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::evaluate::stack;
use crate::metrics::{wilson, Interval};
use crate::split;

/// How the labels are derived, in words (stored in the manifest).
pub const LABEL_RULE: &str = "positive when any of the photo's own captions (its Flickr8k captions, the queries written \
for it) describes a child (imagesearch_compliance::describes_child), negative otherwise";

/// Hyper-parameters of the detector.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DetectorConfig {
    /// Recall the threshold is chosen for, on the validation photos.
    pub target_recall: f64,
    /// L2 penalties tried (on the standardised weights); the best validation ROC AUC wins,
    /// ties go to the larger penalty.
    pub weight_decays: Vec<f64>,
    /// Full-batch Adam steps per fit.
    pub steps: usize,
    pub lr: f64,
    /// Shares of the photos used for validation and held out for the final metrics.
    pub val_fraction: f64,
    pub heldout_fraction: f64,
    pub seed: u64,
    /// Also measure a small MLP on the same split (`detector_mlp.rs`; not shipped).
    #[serde(default)]
    pub mlp_probe: bool,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            target_recall: 0.98,
            weight_decays: vec![1e-3, 1e-2, 1e-1, 1.0, 10.0],
            steps: 300,
            lr: 0.01,
            val_fraction: 0.15,
            heldout_fraction: 0.15,
            seed: 42,
            mlp_probe: false,
        }
    }
}

/// One labelled photo.
#[derive(Clone, Debug)]
pub struct Example {
    pub photo: String,
    /// The photo's serving vector (mean of both views).
    pub vector: Vec<f32>,
    pub positive: bool,
}

/// Whether a photo with these own captions is a positive (any caption describes a child).
pub fn label_from_captions<'a>(captions: impl IntoIterator<Item = &'a str>) -> bool {
    captions.into_iter().any(|c| describes_child(c).is_some())
}

/// The highest threshold at which at least `target` of the positives' scores are at or above
/// it; None when there is no positive.
pub fn threshold_for_recall(positive_scores: &[f32], target: f64) -> Option<f32> {
    if positive_scores.is_empty() {
        return None;
    }
    let mut sorted = positive_scores.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let n = sorted.len();
    // The fewest positives that reach the target (a small tolerance keeps 0.95 × 20 at 19).
    let need = ((target.clamp(0.0, 1.0) * n as f64) - 1e-9).ceil().clamp(1.0, n as f64) as usize;
    Some(sorted[need - 1])
}

/// ROC AUC (probability that a random positive scores above a random negative, ties count
/// half); None without both classes.
pub fn roc_auc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    let pos = positive.iter().filter(|&&p| p).count();
    let neg = positive.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the positives' ranks (1-based, tied scores share their mean rank).
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += order[i..=j].iter().filter(|&&k| positive[k]).count() as f64 * mean_rank;
        i = j + 1;
    }
    let (pos, neg) = (pos as f64, neg as f64);
    Some((rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg))
}

/// Counts and rates of flagging at a threshold.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Confusion {
    pub photos: usize,
    pub positives: usize,
    pub threshold: f32,
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
    pub true_negatives: usize,
    /// None when nothing is flagged.
    pub precision: Option<f64>,
    /// None when there is no positive.
    pub recall: Option<f64>,
    pub f1: Option<f64>,
    /// Share of the photos flagged.
    pub flagged: f64,
    pub roc_auc: Option<f64>,
    /// Wilson 95% interval of the recall (None when there is no positive).
    #[serde(default)]
    pub recall_interval: Option<Interval>,
    /// Share of the negative photos flagged (false alarms), with its Wilson 95% interval.
    #[serde(default)]
    pub negatives_flagged: Option<Interval>,
}

impl Confusion {
    pub fn at(scores: &[f32], positive: &[bool], threshold: f32) -> Self {
        let (mut tp, mut fp, mut fn_, mut tn) = (0, 0, 0, 0);
        for (&s, &p) in scores.iter().zip(positive) {
            match (s >= threshold, p) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, true) => fn_ += 1,
                (false, false) => tn += 1,
            }
        }
        let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
        let precision = ratio(tp, tp + fp);
        let recall = ratio(tp, tp + fn_);
        let f1 = match (precision, recall) {
            (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
            (Some(_), Some(_)) => Some(0.0),
            _ => None,
        };
        Confusion {
            photos: scores.len(),
            positives: tp + fn_,
            threshold,
            true_positives: tp,
            false_positives: fp,
            false_negatives: fn_,
            true_negatives: tn,
            precision,
            recall,
            f1,
            flagged: ratio(tp + fp, scores.len()).unwrap_or(0.0),
            roc_auc: roc_auc(scores, positive),
            recall_interval: wilson(tp, tp + fn_),
            negatives_flagged: wilson(fp, fp + tn),
        }
    }

    /// One line for the training log.
    pub fn line(&self) -> String {
        let f = |x: Option<f64>| x.map_or("n/a".to_string(), |v| format!("{v:.3}"));
        let ci = |x: Option<Interval>| x.map_or(String::new(), |i| format!(" [{:.3}, {:.3}]", i.lo, i.hi));
        format!(
            "{} photos ({} positive): precision {}, recall {}{}, F1 {}, ROC AUC {}, flagged {:.1}%, negatives flagged {}{} (tp {}, fp {}, fn {}, tn {})",
            self.photos,
            self.positives,
            f(self.precision),
            f(self.recall),
            ci(self.recall_interval),
            f(self.f1),
            f(self.roc_auc),
            100.0 * self.flagged,
            f(self.negatives_flagged.map(|i| i.estimate)),
            ci(self.negatives_flagged),
            self.true_positives,
            self.false_positives,
            self.false_negatives,
            self.true_negatives
        )
    }
}

/// A trained detector: what goes into the manifest and into `child_detector.json`.
pub struct TrainedDetector {
    pub info: DetectorInfo,
    pub weights: DetectorWeights,
}

fn counts(examples: &[&Example]) -> serde_json::Value {
    serde_json::json!({
        "photos": examples.len(),
        "positives": examples.iter().filter(|e| e.positive).count(),
    })
}

/// Column mean and (biased) standard deviation of the rows, the deviation floored at 1e-6.
fn standardisation(rows: &[&Example], dim: usize) -> (Vec<f32>, Vec<f32>) {
    if rows.is_empty() {
        return (vec![0.0; dim], vec![1.0; dim]);
    }
    let n = rows.len() as f64;
    let mut mean = vec![0.0f64; dim];
    for e in rows {
        for (m, &x) in mean.iter_mut().zip(&e.vector) {
            *m += x as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut var = vec![0.0f64; dim];
    for e in rows {
        for ((v, &x), m) in var.iter_mut().zip(&e.vector).zip(&mean) {
            *v += (x as f64 - m).powi(2);
        }
    }
    let scale = var.iter().map(|v| ((v / n).sqrt() as f32).max(1e-6)).collect();
    (mean.into_iter().map(|m| m as f32).collect(), scale)
}

/// Standardised rows as a `[n, dim]` tensor.
pub(crate) fn design(rows: &[&Example], mean: &[f32], scale: &[f32]) -> Tensor {
    let z: Vec<Vec<f32>> =
        rows.iter().map(|e| e.vector.iter().zip(mean).zip(scale).map(|((x, m), s)| (x - m) / s).collect()).collect();
    stack(&z.iter().map(Vec::as_slice).collect::<Vec<_>>())
}

/// Class-weighted, L2-penalised logistic regression on standardised rows; returns
/// (weights, bias). Deterministic: zero start, full batch.
fn fit(x: &Tensor, y: &[bool], weight_decay: f64, cfg: &DetectorConfig) -> Result<(Vec<f32>, f32), tch::TchError> {
    let n = y.len();
    let pos = y.iter().filter(|&&p| p).count();
    let (wp, wn) = (n as f64 / (2.0 * pos as f64), n as f64 / (2.0 * (n - pos) as f64));
    let target = Tensor::from_slice(&y.iter().map(|&p| if p { 1.0f32 } else { 0.0 }).collect::<Vec<_>>());
    let sample = Tensor::from_slice(&y.iter().map(|&p| if p { wp as f32 } else { wn as f32 }).collect::<Vec<_>>());
    let vs = nn::VarStore::new(Device::Cpu);
    let w = vs.root().zeros("weights", &[x.size()[1]]);
    let b = vs.root().zeros("bias", &[1]);
    let mut opt = nn::Adam::default().build(&vs, cfg.lr)?;
    for _ in 0..cfg.steps {
        let z = x.mv(&w) + &b;
        // Logistic loss: softplus(z) - y·z, weighted so both classes weigh the same in total.
        let data = ((z.softplus() - &target * &z) * &sample).mean(Kind::Float);
        let loss = data + w.square().sum(Kind::Float) * (0.5 * weight_decay);
        opt.backward_step(&loss);
    }
    let weights = Vec::<f32>::try_from(w.detach().contiguous())?;
    Ok((weights, b.double_value(&[0]) as f32))
}

fn probabilities(weights: &DetectorWeights, rows: &[&Example]) -> Vec<f32> {
    rows.iter().map(|e| weights.probability(&e.vector)).collect()
}

/// What a detector reads and how its labels were made, in words (for its manifest entry).
pub struct Described<'a> {
    /// Log prefix: "child detector", "query detector".
    pub name: &'a str,
    pub features: String,
    pub labels: &'a str,
}

impl Described<'_> {
    /// The photo detector on `dim`-d image-encoder vectors.
    pub fn photos(dim: usize) -> Self {
        Described {
            name: "child detector",
            features: format!("mean of the image-encoder vectors of the photo's gallery views ({dim}-d), standardised"),
            labels: LABEL_RULE,
        }
    }
}

/// Trains on `pool` (split by photo into training, validation and held-out photos) and
/// evaluates the result on the held-out photos and on each named `extra` group (photos kept
/// out of training by the caller). Every vector must have `dim` values.
pub fn train(
    cfg: &DetectorConfig,
    pool: &[Example],
    extra: &[(&str, &[Example])],
    dim: usize,
    what: &Described,
) -> Result<TrainedDetector, tch::TchError> {
    let name = what.name;
    // Split by photo name: held-out first, then validation from the rest.
    let seed = cfg.seed ^ 0xC41D_DE7E;
    let heldout_set = split::holdout(pool.iter().map(|e| e.photo.as_str()), cfg.heldout_fraction, seed);
    let rest: Vec<&Example> = pool.iter().filter(|e| !heldout_set.contains(&e.photo)).collect();
    let val_share = (cfg.val_fraction / (1.0 - cfg.heldout_fraction).max(1e-9)).clamp(0.0, 1.0);
    let val_set = split::holdout(rest.iter().map(|e| e.photo.as_str()), val_share, seed.wrapping_add(1));
    let heldout: Vec<&Example> = pool.iter().filter(|e| heldout_set.contains(&e.photo)).collect();
    let (val, train): (Vec<&Example>, Vec<&Example>) = rest.into_iter().partition(|e| val_set.contains(&e.photo));

    let mut fallbacks: Vec<String> = Vec::new();
    let (mean, scale) = standardisation(&train, dim);
    let train_pos = train.iter().filter(|e| e.positive).count();
    let mut search = BTreeMap::new();
    let mut chosen_decay = None;
    let (weights, bias) = if train_pos == 0 || train_pos == train.len() {
        fallbacks.push(format!(
            "the {} training photos hold {} positives: no model is fitted, every photo gets probability 0.5",
            train.len(),
            train_pos
        ));
        (vec![0.0; dim], 0.0)
    } else {
        let x = design(&train, &mean, &scale);
        let y: Vec<bool> = train.iter().map(|e| e.positive).collect();
        let val_y: Vec<bool> = val.iter().map(|e| e.positive).collect();
        let mut best: Option<(Option<f64>, f64, Vec<f32>, f32)> = None;
        // Larger penalties first, so ties (and no validation AUC at all) keep the larger one.
        let mut decays = cfg.weight_decays.clone();
        decays.sort_by(|a, b| b.total_cmp(a));
        for decay in decays {
            let (w, b) = fit(&x, &y, decay, cfg)?;
            let candidate = DetectorWeights { mean: mean.clone(), scale: scale.clone(), weights: w, bias: b };
            let auc = roc_auc(&probabilities(&candidate, &val), &val_y);
            tracing::info!(
                "{name}: weight decay {decay:e}: validation ROC AUC {}",
                auc.map_or("n/a".into(), |a| format!("{a:.4}"))
            );
            search.insert(format!("{decay:e}"), serde_json::json!(auc));
            let better = match &best {
                None => true,
                Some((best_auc, ..)) => auc.unwrap_or(f64::NEG_INFINITY) > best_auc.unwrap_or(f64::NEG_INFINITY),
            };
            if better {
                best = Some((auc, decay, candidate.weights, candidate.bias));
            }
        }
        match best {
            Some((_, decay, w, b)) => {
                chosen_decay = Some(decay);
                (w, b)
            }
            None => (vec![0.0; dim], 0.0),
        }
    };
    let weights = DetectorWeights { mean, scale, weights, bias };

    let val_scores = probabilities(&weights, &val);
    let val_pos: Vec<f32> = val.iter().zip(&val_scores).filter(|(e, _)| e.positive).map(|(_, &s)| s).collect();
    let threshold = match threshold_for_recall(&val_pos, cfg.target_recall) {
        Some(t) => t,
        None => {
            fallbacks.push(format!(
                "no positive among the {} validation photos to calibrate on: threshold 0 flags every photo (fail closed)",
                val.len()
            ));
            0.0
        }
    };
    let evaluate = |rows: &[&Example]| -> Confusion {
        let labels: Vec<bool> = rows.iter().map(|e| e.positive).collect();
        Confusion::at(&probabilities(&weights, rows), &labels, threshold)
    };
    let mut groups = serde_json::Map::new();
    let validation = evaluate(&val);
    let held = evaluate(&heldout);
    tracing::info!("{name} threshold {threshold:.4} (recall ≥ {} on validation)", cfg.target_recall);
    tracing::info!("{name}, validation: {}", validation.line());
    tracing::info!("{name}, held-out: {}", held.line());
    groups.insert("validation".into(), serde_json::to_value(&validation).unwrap_or_default());
    groups.insert("heldout".into(), serde_json::to_value(&held).unwrap_or_default());
    for (name, rows) in extra {
        let rows: Vec<&Example> = rows.iter().collect();
        let c = evaluate(&rows);
        tracing::info!("{}, {name}: {}", what.name, c.line());
        groups.insert((*name).to_string(), serde_json::to_value(&c).unwrap_or_default());
    }
    for f in &fallbacks {
        tracing::warn!("{name}: {f}");
    }
    let mlp_probe = cfg
        .mlp_probe
        .then(|| crate::detector_mlp::probe(cfg, &train, &val, &heldout, extra, &weights.mean, &weights.scale));
    let metrics = serde_json::json!({
        "threshold_rule": format!(
            "highest probability threshold whose recall on the validation photos is at least {}",
            cfg.target_recall
        ),
        "fallbacks": fallbacks,
        "features": what.features,
        "model": "logistic regression, classes weighted to equal total weight, L2 penalty chosen by validation ROC AUC",
        "weight_decay": chosen_decay,
        "weight_decay_validation_auc": search,
        "hyperparameters": cfg,
        "split": {
            "train": counts(&train),
            "validation": counts(&val),
            "heldout": counts(&heldout),
        },
        "groups": groups,
        "mlp_probe": mlp_probe,
    });
    let info = DetectorInfo { threshold, target_recall: cfg.target_recall, labels: what.labels.to_string(), metrics };
    Ok(TrainedDetector { info, weights })
}

/// One line on a detector for the console (held-out precision and recall at its threshold).
pub fn summary_line(info: &DetectorInfo) -> String {
    let g = &info.metrics["groups"];
    let f = |v: &serde_json::Value| v.as_f64().map_or("n/a".to_string(), |x| format!("{x:.3}"));
    let mut s = format!("child detector: threshold {:.4} (recall >= {} on validation)", info.threshold, info.target_recall);
    for (name, key) in [("held-out", "heldout"), ("test photos", "test_photos")] {
        let m = &g[key];
        if m.is_object() {
            s.push_str(&format!(
                "; {name}: precision {}, recall {}, ROC AUC {} ({} photos, {} positive)",
                f(&m["precision"]),
                f(&m["recall"]),
                f(&m["roc_auc"]),
                m["photos"],
                m["positives"]
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn labels_come_from_the_photos_own_captions() {
        assert!(label_from_captions(["A dog runs on the beach .", "Two kids play in the sand ."]));
        assert!(label_from_captions(["a 7-year-old on a bike"]));
        assert!(!label_from_captions(["A young woman walks her dog .", "A man in a red shirt ."]));
        assert!(!label_from_captions(std::iter::empty::<&str>()));
    }

    #[test]
    fn threshold_is_the_highest_that_meets_the_recall() {
        // Ten positives: recall 0.8 needs 8 of them, so the 8th highest score is the threshold.
        let scores = [0.9, 0.2, 0.8, 0.7, 0.95, 0.6, 0.5, 0.4, 0.3, 0.85];
        assert_eq!(threshold_for_recall(&scores, 0.8), Some(0.4));
        // 0.95 of 20 is 19 exactly, not 20 (floating point).
        let twenty: Vec<f32> = (1..=20).map(|i| i as f32 / 20.0).collect();
        assert_eq!(threshold_for_recall(&twenty, 0.95), Some(0.1));
        assert_eq!(threshold_for_recall(&twenty, 1.0), Some(0.05));
        // Anything above it misses the target; at it the target is met.
        let t = threshold_for_recall(&scores, 0.75).unwrap();
        let recall = |t: f32| scores.iter().filter(|&&s| s >= t).count() as f64 / scores.len() as f64;
        assert!(recall(t) >= 0.75 && recall(t + 1e-6) < 0.75);
        // Tied scores are all kept.
        assert_eq!(threshold_for_recall(&[0.5, 0.5, 0.5, 0.1], 0.5), Some(0.5));
        assert_eq!(threshold_for_recall(&[], 0.95), None);
    }

    #[test]
    fn auc_and_confusion_by_hand() {
        let scores = [0.9, 0.8, 0.7, 0.6, 0.5];
        let labels = [true, false, true, false, false];
        // Positive pairs above negatives: 0.9 beats 3, 0.7 beats 2 → 5 of 6.
        assert!((roc_auc(&scores, &labels).unwrap() - 5.0 / 6.0).abs() < 1e-12);
        assert_eq!(roc_auc(&[0.5, 0.5], &[true, false]), Some(0.5));
        assert_eq!(roc_auc(&scores, &[false; 5]), None);
        let c = Confusion::at(&scores, &labels, 0.7);
        assert_eq!((c.true_positives, c.false_positives, c.false_negatives, c.true_negatives), (2, 1, 0, 2));
        assert_eq!(c.precision, Some(2.0 / 3.0));
        assert_eq!(c.recall, Some(1.0));
        assert!((c.f1.unwrap() - 0.8).abs() < 1e-12);
        assert!((c.flagged - 0.6).abs() < 1e-12);
    }

    /// Photos whose vectors are shifted along a few directions when positive.
    fn synthetic(n: usize, dim: usize, shift: f32, seed: u64) -> Vec<Example> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let positive = rng.gen_bool(0.35);
                let vector = (0..dim)
                    .map(|d| {
                        let noise: f32 = rng.gen_range(-1.0..1.0);
                        3.0 + noise + if positive && d < 4 { shift } else { 0.0 }
                    })
                    .collect();
                Example { photo: format!("p{i}.jpg"), vector, positive }
            })
            .collect()
    }

    #[test]
    fn separable_data_reaches_the_target_recall() {
        let cfg = DetectorConfig { steps: 200, mlp_probe: true, ..DetectorConfig::default() };
        let pool = synthetic(600, 16, 2.5, 1);
        let test = synthetic(200, 16, 2.5, 2);
        let d = train(&cfg, &pool, &[("test_photos", &test)], 16, &Described::photos(16)).unwrap();
        let g = &d.info.metrics["groups"];
        // The threshold meets the target on the validation photos by construction; on new
        // photos recall scatters around it (it sits at the positives' lower tail).
        assert!(g["validation"]["recall"].as_f64().unwrap() >= 0.95);
        for group in ["validation", "heldout", "test_photos"] {
            let recall = g[group]["recall"].as_f64().unwrap();
            assert!(recall >= 0.88, "{group}: recall {recall}");
            assert!(g[group]["roc_auc"].as_f64().unwrap() > 0.99, "{group}");
            assert!(g[group]["precision"].as_f64().unwrap() > 0.9, "{group}");
        }
        assert!(d.info.metrics["fallbacks"].as_array().unwrap().is_empty());
        assert!(d.info.threshold > 0.0 && d.info.threshold < 1.0);
        // The MLP lever is measured beside it on the same split and threshold rule.
        let mlp = &d.info.metrics["mlp_probe"];
        assert_eq!(mlp["validation_auc"].as_object().unwrap().len(), 6, "{mlp}");
        for group in ["heldout", "test_photos"] {
            assert!(mlp["groups"][group]["roc_auc"].as_f64().unwrap() > 0.97, "{group}: {mlp}");
            assert!(mlp["groups"][group]["recall"].as_f64().unwrap() >= 0.85, "{group}: {mlp}");
        }
        // The shipped weights are what the server loads.
        let det = imagesearch_model::ChildDetector::new(d.info.clone(), d.weights.clone(), 16).unwrap();
        let flagged = test.iter().filter(|e| e.positive && det.flags(&e.vector)).count();
        let positives = test.iter().filter(|e| e.positive).count();
        assert!(flagged as f64 >= 0.88 * positives as f64);
        // Deterministic.
        let again = train(&cfg, &pool, &[("test_photos", &test)], 16, &Described::photos(16)).unwrap();
        assert_eq!(again.weights, d.weights);
        assert_eq!(again.info, d.info);
    }

    #[test]
    fn no_positives_fail_closed() {
        let cfg = DetectorConfig { steps: 20, mlp_probe: true, ..DetectorConfig::default() };
        let mut pool = synthetic(40, 8, 2.0, 3);
        pool.iter_mut().for_each(|e| e.positive = false);
        let d = train(&cfg, &pool, &[], 8, &Described::photos(8)).unwrap();
        assert_eq!(d.info.threshold, 0.0);
        assert!(!d.info.metrics["fallbacks"].as_array().unwrap().is_empty());
        assert!(d.info.metrics["mlp_probe"]["skipped"].is_string());
        let det = imagesearch_model::ChildDetector::new(d.info, d.weights, 8).unwrap();
        assert!(pool.iter().all(|e| det.flags(&e.vector)), "with nothing to learn from, every photo is flagged");

        // An empty pool does not crash either.
        let d = train(&cfg, &[], &[], 8, &Described::photos(8)).unwrap();
        assert_eq!(d.info.threshold, 0.0);
        assert_eq!(d.weights.scale, vec![1.0; 8]);
    }
}
