//! Score's refinement from the judged pairs: a weight per dimension of the joint embedding,
//! fitted by ridge regression on the human targets of the judged training pairs, its
//! regularisation and strength chosen on pairs whose photo and text both stay out of the fit.
//!
//! Score then ranks a pair by `Σ_d g_d·u_d·v_d` (`u`, `v`: the pair's joint unit embeddings)
//! instead of the plain cosine (`g = 1`). The contrastive head learns which photo a caption was
//! written for; the judgments say how well any text describes any photo, across queries,
//! which is what Kendall's τ over the judged pairs measures. Search keeps the cosine: the
//! weighting ranks a query's photos no better (README, "Score's refinement").
//!
//! The fit: `w = argmin ‖(X − μ)w − (y − ȳ)‖² + α·(tr G / E)·‖w‖²` with `X` the pairs'
//! element-wise products `u ⊙ v` (`[N, E]`), `G = (X − μ)ᵀ(X − μ)`; then
//! `g = 1 + s·w·std(cos)/std(Xw)`, so the strength `s` is the learnt term's spread
//! relative to the cosine's. `s = 0` (no refinement) is always a candidate.
//!
//! The choice: a seeded share of the photos and a seeded share of the texts are set aside; the
//! candidates are fitted on the pairs with neither and measured on the pairs with both, so what
//! is chosen is what carries over to photos and texts the fit never saw (Score's texts are new).

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::evaluate::judgment_tau_points;
use crate::labels::JudgedPair;
use crate::split;

/// Settings of the refinement.
#[derive(Clone, Debug, Serialize)]
pub struct RefineConfig {
    /// False: Score stays the plain cosine.
    pub enabled: bool,
    /// Ridge strengths, relative to the mean eigenvalue of `G`.
    pub alphas: Vec<f64>,
    /// Strengths `s` of the learnt term (0 is always tried too).
    pub strengths: Vec<f64>,
    /// Share of the judged training photos, and of their texts, set aside to choose `(α, s)`.
    pub val_fraction: f64,
    /// Fewest set-aside pairs a choice is trusted on (below: the cosine; τ's noise on a few
    /// hundred pairs is larger than the candidates' differences).
    pub min_validation_pairs: usize,
    pub seed: u64,
}

impl Default for RefineConfig {
    fn default() -> Self {
        RefineConfig {
            enabled: true,
            alphas: vec![1.0, 10.0, 100.0, 1000.0],
            strengths: vec![1.0, 2.0, 4.0, 8.0],
            val_fraction: 1.0 / 3.0,
            min_validation_pairs: 1000,
            seed: 42,
        }
    }
}

/// One `(α, s)` candidate on the validation photos (`s = 0`: the plain cosine).
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    pub alpha: f64,
    pub strength: f64,
    pub expert_tau_c: Option<f64>,
    pub crowd_tau_b: Option<f64>,
}

impl Candidate {
    /// What the choice maximises: the mean of the τs that are defined.
    pub fn objective(&self) -> f64 {
        let v: Vec<f64> = [self.expert_tau_c, self.crowd_tau_b].into_iter().flatten().collect();
        if v.is_empty() {
            f64::NEG_INFINITY
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    }
}

/// Why Score applies the weights or keeps the cosine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// `--score-refinement off`.
    Disabled,
    /// Too few pairs to fit on or to choose with ([`RefineConfig::min_validation_pairs`]).
    TooFewPairs,
    /// No candidate beat the cosine on the validation pairs.
    CosineNotBeaten,
    /// The refit on all pairs gave weights that are not finite.
    NonFiniteRefit,
    /// Score applies the weights.
    Used,
}

/// What the refinement did: every candidate, the choice and the weights Score applies.
#[derive(Clone, Debug, Serialize)]
pub struct RefineReport {
    /// True when Score applies the weights (a candidate with `s > 0` beat the cosine).
    pub used: bool,
    pub outcome: Outcome,
    pub alpha: Option<f64>,
    pub strength: Option<f64>,
    /// Judged pairs (allowed, training photos) the weights are refitted on in the end.
    pub pairs: usize,
    /// While choosing: pairs fitted on (photo and text both kept), pairs measured on (photo and
    /// text both set aside), and the photos and texts set aside.
    pub choice_fit_pairs: usize,
    pub validation_pairs: usize,
    pub validation_photos: usize,
    pub validation_texts: usize,
    pub candidates: Vec<Candidate>,
    /// Refitted on all `pairs`: `g`, one per joint dimension (empty when not used).
    pub weights: Vec<f32>,
}

/// Centered ridge regression of `target` on the rows of `x` (both f64), for every `alpha`
/// (relative to the mean eigenvalue of the Gram matrix); returns `w` per alpha.
pub fn ridge(x: &Tensor, target: &Tensor, alphas: &[f64]) -> Vec<Tensor> {
    let mu = x.mean_dim([0i64].as_slice(), false, Kind::Double);
    let xc = x - &mu;
    let yc = target - target.mean(Kind::Double);
    let gram = xc.tr().matmul(&xc);
    let e = gram.size()[0];
    let scale = gram.trace().double_value(&[]) / e.max(1) as f64;
    let r = xc.tr().matmul(&yc.unsqueeze(1));
    let eye = Tensor::eye(e, (Kind::Double, x.device()));
    alphas
        .iter()
        .map(|&a| Tensor::linalg_solve(&(&gram + &eye * (a * scale.max(1e-12))), &r, true).squeeze_dim(1))
        .collect()
}

/// The spread (standard deviation) of the plain cosine over the rows of `x`.
fn cosine_spread(x: &Tensor) -> f64 {
    x.sum_dim_intlist([1i64].as_slice(), false, Kind::Double).std(true).double_value(&[])
}

/// `w` scaled so that the learnt term's spread over the rows of `x` is `cos_spread`. The spread
/// of `x·w` is that of `(x − μ)·w`: centring shifts every row's term by the same `μ·w`.
fn unit_term(x: &Tensor, w: &Tensor, cos_spread: f64) -> Tensor {
    let spread = x.matmul(w).std(true).double_value(&[]);
    if spread > 0.0 {
        w * (cos_spread / spread)
    } else {
        w.zeros_like()
    }
}

/// Score's weights at strength `s`: `g = 1 + s·unit`.
fn weights(unit: &Tensor, strength: f64) -> Tensor {
    unit * strength + 1.0
}

/// Scores of the rows of `x` under weights `g` (None: the plain cosine).
fn scored(x: &Tensor, g: Option<&Tensor>) -> Vec<Option<f64>> {
    let s = match g {
        Some(g) => x.matmul(g),
        None => x.sum_dim_intlist([1i64].as_slice(), false, Kind::Double),
    };
    Vec::<f64>::try_from(s.to_device(Device::Cpu)).unwrap_or_default().into_iter().map(Some).collect()
}

/// The choice's split of `pairs`: (rows fitted on — photo and text both kept; rows measured
/// on — photo and text both set aside; photos set aside; texts set aside). Rows with one of the
/// two set aside take no part in the choice.
pub fn choice_split(cfg: &RefineConfig, pairs: &[&JudgedPair]) -> (Vec<i64>, Vec<i64>, usize, usize) {
    let photos = split::holdout(pairs.iter().map(|p| p.image.as_str()), cfg.val_fraction, cfg.seed ^ 0x5c0e);
    let texts = split::holdout(pairs.iter().map(|p| p.text.as_str()), cfg.val_fraction, cfg.seed ^ 0x7e47);
    let (mut fit, mut val) = (Vec::new(), Vec::new());
    for (i, p) in pairs.iter().enumerate() {
        match (photos.contains(&p.image), texts.contains(&p.text)) {
            (false, false) => fit.push(i as i64),
            (true, true) => val.push(i as i64),
            _ => {}
        }
    }
    (fit, val, photos.len(), texts.len())
}

/// Chooses and fits the refinement on `pairs` (the judged training pairs the law allows) with
/// `products` their rows `u ⊙ v` (`[N, E]`) and `target` their aggregated targets. The
/// candidates are fitted and measured on [`choice_split`], ranked by the mean of expert τc and
/// crowd τb (own-caption pairs dropped); the chosen α is then refitted on all pairs. Returns
/// the report and `g`.
pub fn fit(cfg: &RefineConfig, pairs: &[&JudgedPair], products: &Tensor, target: &[f64]) -> (RefineReport, Option<Tensor>) {
    let mut report = RefineReport {
        used: false,
        outcome: Outcome::Disabled,
        alpha: None,
        strength: None,
        pairs: pairs.len(),
        choice_fit_pairs: 0,
        validation_pairs: 0,
        validation_photos: 0,
        validation_texts: 0,
        candidates: Vec::new(),
        weights: Vec::new(),
    };
    if !cfg.enabled {
        return (report, None);
    }
    report.outcome = Outcome::TooFewPairs;
    let (fit_rows, val_rows, val_photos, val_texts) = choice_split(cfg, pairs);
    report.choice_fit_pairs = fit_rows.len();
    report.validation_pairs = val_rows.len();
    report.validation_photos = val_photos;
    report.validation_texts = val_texts;
    if fit_rows.len() < 2 || val_rows.len() < cfg.min_validation_pairs.max(1) {
        return (report, None);
    }
    let x = products.to_kind(Kind::Double);
    let y = Tensor::from_slice(target).to_device(x.device());
    let index = |r: &[i64]| Tensor::from_slice(r).to_device(x.device());
    let (xf, yf) = (x.index_select(0, &index(&fit_rows)), y.index_select(0, &index(&fit_rows)));
    let xv = x.index_select(0, &index(&val_rows));
    let val_pairs: Vec<JudgedPair> = val_rows.iter().map(|&i| pairs[i as usize].clone()).collect();
    let taus = |g: Option<&Tensor>| judgment_tau_points(&val_pairs, &scored(&xv, g), |_| true);
    let (c0, b0) = taus(None);
    let baseline = Candidate { alpha: 0.0, strength: 0.0, expert_tau_c: c0, crowd_tau_b: b0 };
    let mut best = baseline.clone();
    report.candidates.push(baseline);
    let fit_spread = cosine_spread(&xf);
    for (&alpha, w) in cfg.alphas.iter().zip(ridge(&xf, &yf, &cfg.alphas)) {
        let unit = unit_term(&xf, &w, fit_spread);
        for &strength in &cfg.strengths {
            let g = weights(&unit, strength);
            let (c, b) = taus(Some(&g));
            let cand = Candidate { alpha, strength, expert_tau_c: c, crowd_tau_b: b };
            if cand.objective() > best.objective() {
                best = cand.clone();
            }
            report.candidates.push(cand);
        }
    }
    if best.strength == 0.0 {
        report.outcome = Outcome::CosineNotBeaten;
        return (report, None);
    }
    let w = ridge(&x, &y, &[best.alpha]).remove(0);
    let g = weights(&unit_term(&x, &w, cosine_spread(&x)), best.strength).to_kind(Kind::Float).to_device(Device::Cpu);
    let values = Vec::<f32>::try_from(&g).unwrap_or_default();
    if values.is_empty() || !values.iter().all(|v| v.is_finite()) {
        report.outcome = Outcome::NonFiniteRefit;
        return (report, None);
    }
    report.used = true;
    report.outcome = Outcome::Used;
    report.alpha = Some(best.alpha);
    report.strength = Some(best.strength);
    report.weights = values;
    (report, Some(g))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ridge_recovers_a_linear_rule_and_shrinks_with_alpha() {
        tch::manual_seed(3);
        let x = Tensor::randn([400, 6], (Kind::Double, Device::Cpu));
        let truth = Tensor::from_slice(&[1.0f64, -2.0, 0.0, 0.5, 3.0, 0.0]);
        let y = x.matmul(&truth) + 7.0;
        let fits = ridge(&x, &y, &[1e-9, 10.0]);
        let w = &fits[0];
        assert!((w - &truth).abs().max().double_value(&[]) < 1e-6, "{w}");
        let w10 = &fits[1];
        assert!(w10.norm().double_value(&[]) < 0.5 * truth.norm().double_value(&[]), "α shrinks the weights");
    }

    #[test]
    fn weights_are_one_plus_the_learnt_term_at_its_strength() {
        tch::manual_seed(4);
        let x = Tensor::randn([200, 4], (Kind::Double, Device::Cpu));
        let w = Tensor::from_slice(&[1.0f64, 0.0, 0.0, 0.0]);
        let unit = unit_term(&x, &w, cosine_spread(&x));
        let g0 = weights(&unit, 0.0);
        assert!((g0 - 1.0).abs().max().double_value(&[]) < 1e-12, "strength 0 is the cosine");
        let g = weights(&unit, 2.0);
        assert!((g.narrow(0, 1, 3) - 1.0).abs().max().double_value(&[]) < 1e-12, "dimensions w leaves alone keep weight 1");
        // The learnt term's spread is twice the cosine's.
        let cos_sd = x.sum_dim_intlist([1i64].as_slice(), false, Kind::Double).std(true).double_value(&[]);
        let term_sd = x.select(1, 0).std(true).double_value(&[]) * (g.double_value(&[0]) - 1.0);
        assert!((term_sd - 2.0 * cos_sd).abs() < 1e-9, "{term_sd} vs {cos_sd}");
    }

    /// The default settings, trusting a choice on the few validation pairs of these tests.
    fn small() -> RefineConfig {
        RefineConfig { min_validation_pairs: 10, ..RefineConfig::default() }
    }

    /// Judged pairs on 40 photos whose human target follows dimension 0 of the product while
    /// the cosine is mostly noise from the other dimensions.
    fn synthetic(n: usize) -> (Vec<JudgedPair>, Tensor, Vec<f64>) {
        tch::manual_seed(5);
        let x = Tensor::randn([n as i64, 8], (Kind::Float, Device::Cpu));
        let signal: Vec<f32> = Vec::try_from(x.select(1, 0)).unwrap();
        let (mut pairs, mut target) = (Vec::new(), Vec::new());
        for (i, s) in signal.iter().enumerate() {
            let rating = if *s > 0.8 { 4 } else if *s > 0.0 { 3 } else if *s > -0.8 { 2 } else { 1 };
            let yes = u32::from(*s > 0.3);
            pairs.push(JudgedPair {
                image: format!("p{}.jpg", i % 40),
                query: crate::tables::QueryId { image: format!("q{i}.jpg"), n: 0 },
                text: format!("text {i}"),
                judgments: crate::labels::Judgments { expert: Some([rating; 3]), crowd: Some((yes * 3, 3 - yes * 3)) },
                target: f64::from(rating - 1) / 3.0,
            });
            target.push(f64::from(rating - 1) / 3.0);
        }
        (pairs, x, target)
    }

    #[test]
    fn fit_learns_what_the_judges_reward_and_beats_the_cosine_on_validation() {
        let (pairs, x, target) = synthetic(2000);
        let refs: Vec<&JudgedPair> = pairs.iter().collect();
        let (report, g) = fit(&small(), &refs, &x, &target);
        assert!(report.used && report.outcome == Outcome::Used, "{report:?}");
        let g = g.expect("weights");
        assert_eq!(report.weights.len(), 8);
        assert_eq!(report.candidates.len(), 1 + 4 * 4);
        assert!(report.validation_photos == 13 && report.validation_texts == 667, "{report:?}");
        assert!(report.validation_pairs > 100 && report.choice_fit_pairs > 3 * report.validation_pairs, "{report:?}");
        // Dimension 0 carries the judgments: its weight dominates.
        let w: Vec<f32> = Vec::try_from(&g).unwrap();
        assert!(w[1..].iter().all(|v| v.abs() < w[0].abs()), "{w:?}");
        let chosen = report.candidates.iter().find(|c| Some(c.strength) == report.strength && Some(c.alpha) == report.alpha).unwrap();
        assert!(chosen.objective() > report.candidates[0].objective() + 0.1, "{report:?}");
    }

    #[test]
    fn disabled_or_uninformative_refinement_leaves_the_cosine() {
        let (pairs, x, target) = synthetic(400);
        let refs: Vec<&JudgedPair> = pairs.iter().collect();
        let off = RefineConfig { enabled: false, ..RefineConfig::default() };
        let (report, g) = fit(&off, &refs, &x, &target);
        assert!(!report.used && g.is_none() && report.candidates.is_empty());
        assert_eq!(report.outcome, Outcome::Disabled);
        let (report, g) = fit(&RefineConfig::default(), &refs, &x, &target);
        assert!(g.is_none() && report.outcome == Outcome::TooFewPairs && report.validation_pairs > 10, "{report:?}");
        // Targets that are the cosine's own order: nothing beats the cosine.
        let cos: Vec<f64> = Vec::try_from(x.sum_dim_intlist([1i64].as_slice(), false, Kind::Double)).unwrap();
        let mut exact = pairs.clone();
        for (p, c) in exact.iter_mut().zip(&cos) {
            let r = if *c > 1.0 { 4 } else if *c > 0.0 { 3 } else if *c > -1.0 { 2 } else { 1 };
            p.judgments = crate::labels::Judgments { expert: Some([r; 3]), crowd: None };
            p.target = f64::from(r - 1) / 3.0;
        }
        let t: Vec<f64> = exact.iter().map(|p| p.target).collect();
        let refs: Vec<&JudgedPair> = exact.iter().collect();
        let (report, g) = fit(&RefineConfig { strengths: vec![2.0], alphas: vec![100.0], ..small() }, &refs, &x, &t);
        assert!(report.candidates.len() == 2 && report.candidates[0].expert_tau_c.unwrap() > 0.85, "{report:?}");
        assert!(!report.used && g.is_none() && report.outcome == Outcome::CosineNotBeaten, "{report:?}");
    }

    #[test]
    fn the_choice_measures_on_photos_and_texts_the_fit_never_saw() {
        let (pairs, x, target) = synthetic(2000);
        let refs: Vec<&JudgedPair> = pairs.iter().collect();
        let cfg = small();
        let (fit_rows, val_rows, _, _) = choice_split(&cfg, &refs);
        let seen = |rows: &[i64], f: fn(&JudgedPair) -> &str| -> std::collections::HashSet<String> {
            rows.iter().map(|&i| f(refs[i as usize]).to_string()).collect()
        };
        let (fit_photos, val_photos) = (seen(&fit_rows, |p| &p.image), seen(&val_rows, |p| &p.image));
        let (fit_texts, val_texts) = (seen(&fit_rows, |p| &p.text), seen(&val_rows, |p| &p.text));
        assert!(fit_photos.is_disjoint(&val_photos) && fit_texts.is_disjoint(&val_texts));
        // The targets of every row outside the fit rows change nothing the choice sees.
        let mut other = target.clone();
        for (i, t) in other.iter_mut().enumerate() {
            if !fit_rows.contains(&(i as i64)) {
                *t = 1.0 - *t;
            }
        }
        let (a, _) = fit(&cfg, &refs, &x, &target);
        let (b, _) = fit(&cfg, &refs, &x, &other);
        let taus = |r: &RefineReport| r.candidates.iter().map(|c| (c.expert_tau_c, c.crowd_tau_b)).collect::<Vec<_>>();
        assert_eq!(taus(&a), taus(&b));
        // The final refit reads them all.
        assert_ne!(a.weights, b.weights);
    }
}
