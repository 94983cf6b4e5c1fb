//! The report's view of a trained version: what its manifest, its training section, its
//! evaluation and the data show, turned into a [`Report`] — the metrics next to their goals
//! and baselines, the training curves, the score distributions, sampled example queries with
//! thumbnails (withheld where the law requires) and the summary facts.

use std::collections::BTreeMap;

use imagesearch_compliance::describes_child;
use imagesearch_model::ScorerManifest;
use imagesearch_proto::DISCLAIMER;
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{thumbnail_data_uri, Hit, MetricRow, QueryResult, Report, Series, Table};
use crate::dataset::Dataset;
use crate::evaluate::{self, Evaluation};
use crate::head::EpochLog;
use crate::metrics::histogram;
use crate::pipeline::{LeverReport, PositivesReport, TrainingSummary};
use crate::refine::RefineReport;
use crate::text_tuning::TuneReport;

/// Hits shown per example query.
const HITS_SHOWN: usize = 5;
/// Longest side of a thumbnail, in pixels.
const THUMBNAIL_SIDE: u32 = 200;

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// The report of a trained version; `n_queries` test queries, sampled with `seed`, are shown.
pub fn version_report(
    manifest: &ScorerManifest,
    training: &TrainingSummary,
    eval: &Evaluation,
    data: &Dataset,
    n_queries: usize,
    seed: u64,
) -> Report {
    Report {
        title: format!("imagesearch scorer version {}", manifest.version),
        version: manifest.version,
        created: manifest.created.clone(),
        summary: summary(manifest, training),
        metrics: metric_rows(manifest, eval),
        tables: training
            .levers
            .iter()
            .map(lever_table)
            .chain(training.text_tuning.iter().map(tuning_table))
            .chain(training.judged_positives.iter().map(positives_table))
            .chain((!training.score_refinement.candidates.is_empty()).then(|| refinement_table(&training.score_refinement)))
            .collect(),
        curves: curves(&training.epochs),
        histograms: histograms(manifest, eval, data),
        queries: example_queries(eval, data, n_queries, seed),
        disclaimer: DISCLAIMER.to_string(),
        notes: vec![
            "Retrieval: each test query ranks the test photos; its own photo is the relevant one (ties count against it).".into(),
            "Kendall τ: own-caption pairs dropped; expert τc over individual ratings, crowd τb over the share of yes votes; 95% interval from 1000 bootstrap resamples of whole photos.".into(),
            refinement_note(&training.score_refinement),
            "Child detector: recall is the share of photos whose own captions describe a child that it flags (goal: the target recall its threshold was chosen for on validation photos); the baseline of its precision is the share of such photos, the precision of flagging everything.".into(),
            format!("Queries that describe a child show the disclaimer instead of photos, and so does the slot of every photo whose own captions describe a child (or that has no caption to clear it): “{DISCLAIMER}”."),
        ],
    }
}

/// What the judged pairs of the training photos were used for, and so how honest the τ over
/// all judged photos is.
fn refinement_note(r: &RefineReport) -> String {
    let head = "The head never trains on the judged pairs; the calibrations are fitted on the judged pairs of the training photos (monotone: they cannot change τ)";
    if r.used {
        format!("{head}, and so is Score's refinement (a weight per joint dimension), which does change τ: only the held-out photos' τ is honest, 'all judged photos' includes the pairs it was fitted on.")
    } else {
        format!("{head}, so 'all judged photos' τ is nearly as honest as the held-out one.")
    }
}

/// Score's refinement candidates on its validation photos, the chosen one bold.
fn refinement_table(r: &RefineReport) -> Table {
    let f = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.3}"));
    let rows: Vec<Vec<String>> = r
        .candidates
        .iter()
        .map(|c| match c.strength {
            0.0 => vec!["plain cosine".into(), "–".into(), f(c.expert_tau_c), f(c.crowd_tau_b)],
            s => vec![format!("{}", c.alpha), format!("{s}"), f(c.expert_tau_c), f(c.crowd_tau_b)],
        })
        .collect();
    let chosen = r.candidates.iter().position(|c| r.used && Some(c.alpha) == r.alpha && Some(c.strength) == r.strength).unwrap_or(0);
    Table {
        title: "Score's refinement from the judged pairs".into(),
        header: ["ridge α", "strength", "val expert τc", "val crowd τb"].iter().map(|h| h.to_string()).collect(),
        rows,
        highlighted: vec![chosen],
        note: format!(
            "Outcome: {:?}. {} judged pairs of the training photos the law allows; while choosing, candidates were fitted on the {} pairs whose photo and text are both outside a set-aside {} photos and {} texts, and measured on the {} pairs whose photo and text are both inside it; the best mean of the two τs (bold) was refitted on all {} pairs. Score only: Search ranks by the cosine.",
            r.outcome, r.pairs, r.choice_fit_pairs, r.validation_photos, r.validation_texts, r.validation_pairs, r.pairs
        ),
    }
}

/// Every epoch of the text-encoder tuning with its validation recall, the kept one bold.
fn tuning_table(t: &TuneReport) -> Table {
    let rows = t
        .epochs
        .iter()
        .map(|e| {
            vec![
                if e.epoch == 0 { "0 (projections only)".to_string() } else { e.epoch.to_string() },
                format!("{:.4}", e.train_loss),
                format!("{:.3}", e.val_r1),
                format!("{:.3}", e.val_mean_recall),
                format!("{:.0}", e.seconds),
            ]
        })
        .collect();
    let kept = match &t.encoder {
        Some(name) => format!("epoch {} was kept as the encoder {name}", t.best_epoch),
        None => format!("no epoch beat the untuned {} on validation mean recall, so it was kept", t.base_encoder),
    };
    Table {
        title: "Text-encoder tuning (LiT)".into(),
        header: ["epoch", "train loss", "val R@1", "val mean recall", "seconds"].iter().map(|h| h.to_string()).collect(),
        rows,
        highlighted: vec![t.best_epoch],
        note: format!("{} training pairs, image side locked; {kept}.", t.pairs),
    }
}

/// The ensembles trained without and with judged photos' positives, the kept one bold.
fn positives_table(p: &PositivesReport) -> Table {
    let f = |v: f64| format!("{v:.3}");
    let row = |name: &str, v: &crate::metrics::Retrieval, t: &crate::metrics::Retrieval| {
        vec![name.to_string(), f(v.r_at_1), f(v.r_at_5), f(v.r_at_10), f(v.mrr), f(t.r_at_1), f(t.r_at_5), f(t.r_at_10), f(t.mrr)]
    };
    Table {
        title: "Judged photos as extra positives".into(),
        header: ["scorer trained", "val R@1", "val R@5", "val R@10", "val MRR", "test R@1", "test R@5", "test R@10", "test MRR"]
            .iter()
            .map(|h| h.to_string())
            .collect(),
        rows: vec![
            row("on the captioned photos", &p.validation_without, &p.test_without),
            row(&format!("+ {} judged photos ({} pairs)", p.photos, p.pairs), &p.validation_with, &p.test_with),
        ],
        highlighted: vec![usize::from(p.used)],
        note: format!(
            "Kept (bold) only when its validation MRR is better by more than {}: {} judged photos the head never trained on, {} gallery views, no query bank or word map; the test columns are shown only.",
            crate::pipeline::MRR_TIE, p.validation_photos, p.index_views
        ),
    }
}

/// Every test-time lever candidate with its validation and test retrieval, the chosen one bold.
fn lever_table(l: &LeverReport) -> Table {
    let f = |v: f64| format!("{v:.3}");
    let mut highlighted = Vec::new();
    let rows = l
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if c.index_views == l.chosen_index_views && c.beta == l.chosen_beta && c.query_word_map == l.chosen_query_word_map {
                highlighted.push(i);
            }
            vec![
                c.index_views.clone(),
                c.beta.map_or_else(|| "off".to_string(), |b| format!("β {b}")),
                if c.query_word_map { "on" } else { "off" }.to_string(),
                f(c.validation.r_at_1),
                f(c.validation.r_at_5),
                f(c.validation.r_at_10),
                f(c.validation.mrr),
                c.validation_tau_c.map_or_else(|| "—".to_string(), f),
                c.validation_tau_b.map_or_else(|| "—".to_string(), f),
                f(c.test.r_at_1),
                f(c.test.r_at_5),
                f(c.test.r_at_10),
                f(c.test.mrr),
            ]
        })
        .collect();
    let header = ["gallery views", "query bank", "word map", "val R@1", "val R@5", "val R@10", "val MRR", "val τc", "val τb", "test R@1", "test R@5", "test R@10", "test MRR"];
    Table {
        title: "Test-time levers".into(),
        header: header.iter().map(|h| h.to_string()).collect(),
        rows,
        highlighted,
        note: format!(
            "Chosen (bold) by validation MRR: {} validation queries on {} judged photos the head never trained on; the test columns are shown only, never used to choose. Query bank: {} training captions.",
            l.validation_queries, l.validation_photos, l.bank_captions
        ),
    }
}

fn row(name: &str, value: f64, interval: Option<(f64, f64)>, baseline: Option<f64>, goal: Option<f64>, higher: bool) -> MetricRow {
    MetricRow { name: name.into(), value, interval, baseline, goal, higher_is_better: higher }
}

/// The metrics table: retrieval against chance, τ against zero, RMSE against predicting the
/// mean, and the child detector's recall, precision and ROC AUC.
fn metric_rows(manifest: &ScorerManifest, eval: &Evaluation) -> Vec<MetricRow> {
    let m = &eval.metrics;
    let (r, ch) = (&m.retrieval, &m.retrieval_chance);
    let ci = |f: fn(&evaluate::RetrievalIntervals) -> &crate::metrics::Interval| {
        m.retrieval_interval.as_ref().map(|i| (f(i).lo, f(i).hi))
    };
    let mut metrics = vec![
        row("R@1 (test queries × test photos)", r.r_at_1, ci(|i| &i.r_at_1), Some(ch.r_at_1), Some(0.60), true),
        row("R@5", r.r_at_5, ci(|i| &i.r_at_5), Some(ch.r_at_5), Some(0.90), true),
        row("R@10", r.r_at_10, ci(|i| &i.r_at_10), Some(ch.r_at_10), Some(0.95), true),
        row("MRR", r.mrr, ci(|i| &i.mrr), Some(ch.mrr), None, true),
        row("median rank", r.median_rank, None, Some(ch.median_rank), None, false),
    ];
    for (name, sub) in [("R@1, queries describing a child", &m.retrieval_child_queries), ("R@1, other queries", &m.retrieval_other_queries)] {
        if let Some(sub) = sub {
            metrics.push(row(&format!("{name} ({})", sub.queries), sub.r_at_1, None, Some(ch.r_at_1), None, true));
        }
    }
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
            let ci = |v: &serde_json::Value| v["lo"].as_f64().zip(v["hi"].as_f64());
            if let Some(r) = g["recall"].as_f64() {
                metrics.push(row(&format!("child detector recall ({label})"), r, ci(&g["recall_interval"]), None, Some(d.target_recall), true));
            }
            if let Some(fa) = g["negatives_flagged"]["estimate"].as_f64() {
                // Flagging every photo is the fail-closed baseline; the goal is ≤ 25%.
                metrics.push(row(&format!("child detector: negative photos flagged ({label})"), fa, ci(&g["negatives_flagged"]), Some(1.0), Some(0.25), false));
            }
            if let Some(p) = g["precision"].as_f64() {
                metrics.push(row(&format!("child detector precision ({label})"), p, None, share, None, true));
            }
            if let Some(a) = g["roc_auc"].as_f64() {
                metrics.push(row(&format!("child detector ROC AUC ({label})"), a, None, Some(0.5), None, true));
            }
        }
    }
    metrics
}

/// Training loss, validation loss and validation R@1 per epoch, one line per member.
fn curves(logs: &[EpochLog]) -> Vec<super::Curve> {
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
    vec![
        ("Training loss".to_string(), "epoch".to_string(), "InfoNCE".to_string(), series(|e| e.train_loss)),
        ("Validation loss".to_string(), "epoch".to_string(), "text→image cross-entropy".to_string(), series(|e| e.val_loss)),
        ("Validation R@1".to_string(), "epoch".to_string(), "R@1".to_string(), series(|e| e.val_r1)),
    ]
}

/// The calibrated scores of the held-out judged pairs by human target, and the aggregated
/// targets of all judged pairs.
fn histograms(manifest: &ScorerManifest, eval: &Evaluation, data: &Dataset) -> Vec<super::Histogram> {
    let bucket = |lo: f64, hi: f64| -> Vec<f64> {
        eval.heldout_scores.iter().filter(|(_, t)| *t >= lo && *t < hi).map(|(s, _)| *s).collect()
    };
    vec![
        (
            "Calibrated score on held-out judged pairs, by human target".to_string(),
            0.0,
            1.0,
            vec![
                ("target < 1/3".to_string(), histogram(&bucket(0.0, 1.0 / 3.0), 0.0, 1.0, 20)),
                ("1/3 ≤ target < 2/3".to_string(), histogram(&bucket(1.0 / 3.0, 2.0 / 3.0), 0.0, 1.0, 20)),
                ("target ≥ 2/3".to_string(), histogram(&bucket(2.0 / 3.0, 1.01), 0.0, 1.0, 20)),
            ],
        ),
        (
            format!("Aggregated targets of all judged pairs ({})", manifest.aggregation),
            0.0,
            1.0,
            vec![("pairs".to_string(), histogram(&data.judged.iter().map(|p| p.target).collect::<Vec<_>>(), 0.0, 1.0, 20))],
        ),
    ]
}

/// `n` test queries sampled with `seed` (in their file order) with their top hits. A query
/// that describes a child shows none of its photos; a photo whose own captions describe a
/// child (or that has none to clear it) is never shown (fail closed).
fn example_queries(eval: &Evaluation, data: &Dataset, n: usize, seed: u64) -> Vec<QueryResult> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = n.min(data.test_queries.len());
    let mut picked: Vec<usize> = sample(&mut rng, data.test_queries.len(), n).into_vec();
    picked.sort_unstable();
    picked
        .into_iter()
        .map(|qi| {
            let q = &data.test_queries[qi];
            let withheld = describes_child(&q.text).map(|m| format!("the query describes a child ({})", m.rule));
            let hits = eval.rankings[qi]
                .iter()
                .take(HITS_SHOWN)
                .map(|&(pi, score)| {
                    let image = data.test_images[pi].clone();
                    let restricted = data.photo_excluded(&image);
                    let thumbnail = if withheld.is_some() || restricted {
                        None
                    } else {
                        thumbnail_data_uri(&data.paths.test_photo(&image), THUMBNAIL_SIDE).ok()
                    };
                    Hit { relevant: image == q.image, image, score, thumbnail, withheld: restricted }
                })
                .collect();
            QueryResult { query: q.text.clone(), withheld_reason: withheld, hits }
        })
        .collect()
}

/// Search's calibration and, when the version has its own, Score's.
fn calibration_fact(manifest: &ScorerManifest) -> String {
    let c = manifest.calibration;
    let search = format!("sigmoid({:.3} · ip {:+.3})", c.a, c.b);
    match manifest.score_calibration {
        Some(s) if s != c => format!("Search: {search}; Score (no query-bank term): sigmoid({:.3} · cos {:+.3})", s.a, s.b),
        _ => format!("Search and Score: {search}"),
    }
}

/// The summary facts: encoders, aggregation, calibration, data and exclusions, the child
/// detector, device and commit.
fn summary(manifest: &ScorerManifest, t: &TrainingSummary) -> Vec<(String, String)> {
    vec![
        ("image encoder".to_string(), format!("{} ({})", manifest.image_encoder.name, short(&manifest.image_encoder.sha256))),
        ("text encoder".to_string(), format!("{} ({})", manifest.text_encoder.name, short(&manifest.text_encoder.sha256))),
        ("aggregation".to_string(), manifest.aggregation.clone()),
        ("calibration".to_string(), calibration_fact(manifest)),
        ("training pairs".to_string(), format!("{} captions of {} photos", t.train_pairs, t.train_photos)),
        (
            "excluded by the child rule".to_string(),
            format!(
                "{} of {} captioned photos; {} of {} judged pairs",
                t.captioned_photos_excluded_child, t.captioned_photos, t.judged_pairs_excluded_child, t.judged_pairs
            ),
        ),
        ("child detector".to_string(), detector_fact(manifest)),
        ("device".to_string(), t.device.clone()),
        ("git commit".to_string(), manifest.git_commit.clone().unwrap_or_else(|| "unknown".into())),
    ]
}

fn detector_fact(manifest: &ScorerManifest) -> String {
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
    }
}
