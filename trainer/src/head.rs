//! The scorer head: two towers that project image and text encoder vectors into one joint
//! space, trained contrastively (symmetric InfoNCE) on captioned photos, as an ensemble of
//! independently seeded members.
//!
//! Each tower: standardise → input dropout → MLP (Linear, GELU, dropout, Linear) plus a linear
//! skip → L2 norm. The ensemble's embedding is the members' unit embeddings concatenated and
//! scaled by 1/√M, so one dot product equals the members' mean cosine.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Hyper-parameters of the head.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeadConfig {
    pub dim: i64,
    pub hidden: i64,
    pub input_dropout: f64,
    pub dropout: f64,
    pub lr: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    pub max_epochs: usize,
    pub patience: usize,
    pub label_smoothing: f64,
    pub members: usize,
    pub seed: u64,
}

impl Default for HeadConfig {
    fn default() -> Self {
        HeadConfig {
            dim: 512,
            hidden: 1024,
            input_dropout: 0.4,
            dropout: 0.3,
            lr: 3e-4,
            weight_decay: 0.05,
            batch_size: 256,
            max_epochs: 30,
            patience: 3,
            label_smoothing: 0.1,
            members: 5,
            seed: 42,
        }
    }
}

/// One tower.
struct Tower {
    mean: Tensor,
    std: Tensor,
    l1: nn::Linear,
    l2: nn::Linear,
    skip: nn::Linear,
    input_dropout: f64,
    dropout: f64,
}

impl Tower {
    fn new(p: nn::Path, din: i64, cfg: &HeadConfig, stats: (&Tensor, &Tensor)) -> Self {
        let mut mean = p.zeros_no_train("mean", &[din]);
        let mut std = p.ones_no_train("std", &[din]);
        tch::no_grad(|| {
            mean.copy_(stats.0);
            std.copy_(stats.1);
        });
        Tower {
            mean,
            std,
            l1: nn::linear(&p / "l1", din, cfg.hidden, Default::default()),
            l2: nn::linear(&p / "l2", cfg.hidden, cfg.dim, Default::default()),
            skip: nn::linear(&p / "skip", din, cfg.dim, Default::default()),
            input_dropout: cfg.input_dropout,
            dropout: cfg.dropout,
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let x = ((x - &self.mean) / &self.std).dropout(self.input_dropout, train);
        let h = self.l1.forward(&x).gelu("none").dropout(self.dropout, train);
        l2_normalize(&(self.l2.forward(&h) + self.skip.forward(&x)))
    }
}

/// Rows scaled to unit L2 norm.
pub fn l2_normalize(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12)
}

/// One trained member: its variables and towers.
pub struct Member {
    vs: nn::VarStore,
    image: Tower,
    text: Tower,
}

/// What training needs: encoder vectors and (photo, caption) positives.
pub struct TrainSet<'a> {
    /// Original and mirrored encoder vectors of each photo, `[P, Di]` each.
    pub photos_original: &'a Tensor,
    pub photos_mirrored: &'a Tensor,
    /// Caption vectors `[C, Dt]`.
    pub captions: &'a Tensor,
    /// (photo row, caption row) positives.
    pub pairs: &'a [(i64, i64)],
}

/// Validation data: photos (mean view) and captions with the row of their photo.
pub struct ValSet<'a> {
    pub photos: &'a Tensor,
    pub captions: &'a Tensor,
    pub caption_photo: &'a [i64],
}

/// Per-epoch numbers of one member, for the report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochLog {
    pub member: usize,
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_r1: f64,
    pub val_mean_recall: f64,
}

fn column_stats(x: &Tensor) -> (Tensor, Tensor) {
    let mean = x.mean_dim([0i64].as_slice(), false, Kind::Float);
    let std = x.std_dim([0i64].as_slice(), false, false).clamp_min(1e-6);
    (mean, std)
}

/// Symmetric InfoNCE with label smoothing; `same` marks off-diagonal pairs that share a photo
/// (not negatives: masked out).
pub(crate) fn contrastive_loss(img: &Tensor, txt: &Tensor, scale: &Tensor, same: &Tensor, smoothing: f64) -> Tensor {
    let b = img.size()[0];
    let logits = img.matmul(&txt.tr()) * scale.exp().clamp_max(100.0);
    let eye = Tensor::eye(b, (Kind::Bool, img.device()));
    let masked = same.logical_and(&eye.logical_not());
    let logits = logits.masked_fill(&masked, -1e4);
    let valid = masked.logical_not().to_kind(Kind::Float);
    let spread = &valid / valid.sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
    let target = eye.to_kind(Kind::Float) * (1.0 - smoothing) + spread * smoothing;
    let rows = -(logits.log_softmax(1, Kind::Float) * &target).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    let cols = -(logits.log_softmax(0, Kind::Float) * target.tr()).sum_dim_intlist([0i64].as_slice(), false, Kind::Float);
    (rows.mean(Kind::Float) + cols.mean(Kind::Float)) * 0.5
}

/// Text→image recall on the validation set: (loss, R@1, mean of R@1/5/10).
fn validate(member: &Member, val: &ValSet, scale: &Tensor) -> (f64, f64, f64) {
    tch::no_grad(|| {
        let img = member.image.forward(val.photos, false);
        let txt = member.text.forward(val.captions, false);
        let sims = txt.matmul(&img.tr()); // [C, P]
        let target = Tensor::from_slice(val.caption_photo).to_device(sims.device());
        let loss = (&sims * scale.exp().clamp_max(100.0)).cross_entropy_for_logits(&target).double_value(&[]);
        let (r1, mean_recall) = recalls(&sims, val.caption_photo);
        (loss, r1, mean_recall)
    })
}

/// Text→image R@1 and the mean of R@1/5/10 of similarities `[C, P]`, caption `c`'s own photo
/// being `caption_photo[c]`. Pessimistic on ties, like the test metric: every photo scoring at
/// least as high as the own photo (itself included) counts.
pub(crate) fn recalls(sims: &Tensor, caption_photo: &[i64]) -> (f64, f64) {
    let target = Tensor::from_slice(caption_photo).to_device(sims.device());
    let own = sims.gather(1, &target.unsqueeze(1), false);
    let rank = sims.ge_tensor(&own).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    let recall = |k: f64| rank.le(k).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
    let (r1, r5, r10) = (recall(1.0), recall(5.0), recall(10.0));
    (r1, (r1 + r5 + r10) / 3.0)
}

/// Trains one member with early stopping on the validation mean recall; returns the member at
/// its best epoch and the epoch log.
pub fn train_member(
    cfg: &HeadConfig,
    index: usize,
    data: &TrainSet,
    val: &ValSet,
    device: Device,
    on_epoch: &mut dyn FnMut(&EpochLog),
) -> Result<(Member, Vec<EpochLog>), tch::TchError> {
    let seed = cfg.seed.wrapping_add(1000 * index as u64);
    tch::manual_seed(seed as i64);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let vs = nn::VarStore::new(device);
    let root = vs.root();
    let all_photos = Tensor::cat(&[data.photos_original, data.photos_mirrored], 0);
    let is = column_stats(&all_photos);
    let image = Tower::new(&root / "image", all_photos.size()[1], cfg, (&is.0, &is.1));
    let ts = column_stats(data.captions);
    let text = Tower::new(&root / "text", data.captions.size()[1], cfg, (&ts.0, &ts.1));
    let scale = root.var("logit_scale", &[1], nn::Init::Const((1.0f64 / 0.07).ln()));
    let mut opt = nn::AdamW { wd: cfg.weight_decay, ..Default::default() }.build(&vs, cfg.lr)?;
    let member = Member { vs, image, text };

    let val_photos = val.photos.to_device(device);
    let val_captions = val.captions.to_device(device);
    let val = ValSet { photos: &val_photos, captions: &val_captions, caption_photo: val.caption_photo };
    let photos_o = data.photos_original.to_device(device);
    let photos_m = data.photos_mirrored.to_device(device);
    let captions = data.captions.to_device(device);
    let mut order: Vec<usize> = (0..data.pairs.len()).collect();
    let mut best: Option<(f64, Vec<(String, Tensor)>)> = None;
    let mut since_best = 0;
    let mut log = Vec::new();
    for epoch in 1..=cfg.max_epochs {
        order.shuffle(&mut rng);
        let (mut sum, mut steps) = (0.0, 0usize);
        for chunk in order.chunks(cfg.batch_size) {
            if chunk.len() < 2 {
                continue;
            }
            let photo_idx: Vec<i64> = chunk.iter().map(|&i| data.pairs[i].0).collect();
            let caption_idx: Vec<i64> = chunk.iter().map(|&i| data.pairs[i].1).collect();
            let pi = Tensor::from_slice(&photo_idx).to_device(device);
            let ci = Tensor::from_slice(&caption_idx).to_device(device);
            // Augmentation: each sample sees its photo as is or mirrored.
            let flip = Tensor::rand([chunk.len() as i64, 1], (Kind::Float, device)).lt(0.5);
            let x = photos_o.index_select(0, &pi).where_self(&flip, &photos_m.index_select(0, &pi));
            let same = pi.unsqueeze(1).eq_tensor(&pi.unsqueeze(0));
            let img = member.image.forward(&x, true);
            let txt = member.text.forward(&captions.index_select(0, &ci), true);
            let loss = contrastive_loss(&img, &txt, &scale, &same, cfg.label_smoothing);
            opt.backward_step(&loss);
            sum += loss.double_value(&[]);
            steps += 1;
        }
        let (val_loss, val_r1, val_mean_recall) = validate(&member, &val, &scale);
        let entry = EpochLog {
            member: index,
            epoch,
            train_loss: sum / steps.max(1) as f64,
            val_loss,
            val_r1,
            val_mean_recall,
        };
        on_epoch(&entry);
        log.push(entry);
        if best.as_ref().is_none_or(|(b, _)| val_mean_recall > *b) {
            let snapshot =
                member.vs.variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect();
            best = Some((val_mean_recall, snapshot));
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= cfg.patience {
                break;
            }
        }
    }
    if let Some((_, snapshot)) = best {
        let mut vars = member.vs.variables();
        tch::no_grad(|| {
            for (name, value) in snapshot {
                if let Some(v) = vars.get_mut(&name) {
                    v.copy_(&value);
                }
            }
        });
    }
    Ok((member, log))
}

/// Query-bank normalisation (the inverted softmax of Bogolin et al., CVPR 2022) folded into the
/// towers: a photo's similarity to a query is lowered by how similar the photo is to a bank of
/// training captions, `t(photo) = log Σ_b exp(β · cos(photo, b)) / β`, which demotes "hub" photos
/// that match every query. The term depends on the photo alone, so the image tower puts `−t`
/// in front of the joint embedding and the text tower puts `1` there: one inner product is
/// then `cos − t`, and a search stays one matrix product (or one inner-product index lookup).
pub struct QueryBank {
    /// Joint text embeddings of the bank's captions `[K, E]`.
    pub captions: Tensor,
    pub beta: f64,
}

impl QueryBank {
    /// The per-photo term `t` of joint image embeddings `[B, E]` → `[B]`.
    pub fn term(&self, images: &Tensor) -> Tensor {
        (images.matmul(&self.captions.tr()) * self.beta).logsumexp([1i64].as_slice(), false) / self.beta
    }
}

/// The trained ensemble, with its query bank when one is used.
pub struct Ensemble {
    pub members: Vec<Member>,
    pub query_bank: Option<QueryBank>,
}

impl Ensemble {
    /// The members' joint image embeddings `[B, M·dim]`, unit length (inference mode), before
    /// the query bank's term.
    pub fn joint_images(&self, x: &Tensor) -> Tensor {
        self.concat(|m| m.image.forward(x, false))
    }

    /// The members' joint text embeddings `[B, M·dim]`, unit length (inference mode).
    pub fn joint_texts(&self, x: &Tensor) -> Tensor {
        self.concat(|m| m.text.forward(x, false))
    }

    /// Image embeddings as served: [`Ensemble::joint_images`] with `−t` in front when a query
    /// bank is used (`[B, 1 + M·dim]`).
    pub fn embed_images(&self, x: &Tensor) -> Tensor {
        self.served_images(self.joint_images(x))
    }

    /// Joint image embeddings `e` as served: `−t` prepended when a query bank is used.
    pub fn served_images(&self, e: Tensor) -> Tensor {
        match &self.query_bank {
            Some(bank) => Tensor::cat(&[-bank.term(&e).unsqueeze(1), e], 1),
            None => e,
        }
    }

    /// Text embeddings as served: [`Ensemble::joint_texts`] with `1` in front when a query bank
    /// is used (`ones_like`, so a traced tower follows the batch size).
    pub fn embed_texts(&self, x: &Tensor) -> Tensor {
        self.served_texts(self.joint_texts(x))
    }

    /// Joint text embeddings `e` as served: `1` prepended when a query bank is used.
    pub fn served_texts(&self, e: Tensor) -> Tensor {
        match &self.query_bank {
            Some(_) => Tensor::cat(&[e.narrow(1, 0, 1).ones_like(), e], 1),
            None => e,
        }
    }

    /// Width of the served embeddings.
    pub fn embedding_dim(&self, member_dim: i64) -> i64 {
        member_dim * self.members.len() as i64 + i64::from(self.query_bank.is_some())
    }

    fn concat(&self, f: impl Fn(&Member) -> Tensor) -> Tensor {
        let parts: Vec<Tensor> = self.members.iter().map(f).collect();
        Tensor::cat(&parts, 1) / (self.members.len() as f64).sqrt()
    }

    /// Freezes every member's variables and moves them to the CPU, so the traced artifact does
    /// not depend on the device it was trained on (the server moves it where it runs).
    pub fn freeze_on_cpu(&mut self) {
        for m in &mut self.members {
            m.vs.freeze();
            m.vs.set_device(Device::Cpu);
        }
        if let Some(bank) = &mut self.query_bank {
            bank.captions = bank.captions.to_device(Device::Cpu);
        }
    }
}

/// Fits `sigmoid(a·cos + b)` to soft targets in [0, 1]: logistic regression by Newton's method
/// with a backtracking line search on the cross-entropy (a plain Newton step can overshoot and
/// diverge when the similarities sit far from 0, as `cos − t` of the query bank does), from
/// `a = 0` and `b` = the logit of the mean target.
pub fn fit_calibration(cos: &[f64], target: &[f64]) -> imagesearch_model::Calibration {
    let n = cos.len().max(1) as f64;
    let mean = (target.iter().sum::<f64>() / n).clamp(1e-6, 1.0 - 1e-6);
    let loss = |a: f64, b: f64| -> f64 {
        cos.iter()
            .zip(target)
            .map(|(&x, &y)| {
                let z = a * x + b;
                // −[y·log σ(z) + (1−y)·log(1−σ(z))] = softplus(z) − y·z, computed stably.
                let softplus = if z > 0.0 { z + (-z).exp().ln_1p() } else { z.exp().ln_1p() };
                softplus - y * z
            })
            .sum::<f64>()
            / n
    };
    let (mut a, mut b) = (0.0f64, (mean / (1.0 - mean)).ln());
    let mut current = loss(a, b);
    for _ in 0..100 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (&x, &y) in cos.iter().zip(target) {
            let p = 1.0 / (1.0 + (-(a * x + b)).exp());
            let w = (p * (1.0 - p)).max(1e-12);
            ga += (p - y) * x;
            gb += p - y;
            haa += w * x * x;
            hab += w * x;
            hbb += w;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-300 {
            break;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        let mut step = 1.0;
        let mut next = loss(a - da, b - db);
        while !(next <= current) && step > 1e-6 {
            step *= 0.5;
            next = loss(a - step * da, b - step * db);
        }
        if !(next <= current) {
            break;
        }
        a -= step * da;
        b -= step * db;
        let converged = current - next < 1e-14 && (step * (da.abs() + db.abs())) < 1e-10;
        current = next;
        if converged {
            break;
        }
    }
    imagesearch_model::Calibration { a, b }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_recovers_a_known_sigmoid() {
        let truth = imagesearch_model::Calibration { a: 8.0, b: -2.0 };
        let cos: Vec<f64> = (0..200).map(|i| -0.2 + i as f64 * 0.005).collect();
        let target: Vec<f64> = cos.iter().map(|&c| truth.apply(c)).collect();
        let fit = fit_calibration(&cos, &target);
        assert!((fit.a - 8.0).abs() < 1e-3 && (fit.b + 2.0).abs() < 1e-3, "{fit:?}");
    }

    #[test]
    fn calibration_converges_far_from_zero() {
        // Similarities around −0.4 with a narrow spread (cos − t of a query bank): plain Newton
        // steps from a = 10, b = −3 end here at a ≈ −212 (on the default data at a ≈ 6e8).
        let truth = imagesearch_model::Calibration { a: 12.0, b: 3.5 };
        let cos: Vec<f64> = (0..400).map(|i| -0.45 + i as f64 * 0.0003).collect();
        let target: Vec<f64> = cos.iter().map(|&c| truth.apply(c)).collect();
        let fit = fit_calibration(&cos, &target);
        assert!((fit.a - 12.0).abs() < 1e-2 && (fit.b - 3.5).abs() < 1e-2, "{fit:?}");
        // Noisy soft targets: a finite fit whose scores stay inside (0, 1).
        let noisy: Vec<f64> = target.iter().enumerate().map(|(i, t)| if i % 3 == 0 { 1.0 - t } else { *t }).collect();
        let fit = fit_calibration(&cos, &noisy);
        assert!(fit.a.is_finite() && fit.a.abs() < 1e3 && fit.b.abs() < 1e3, "{fit:?}");
    }

    #[test]
    fn the_query_bank_term_is_a_scaled_log_sum_exp_over_the_bank() {
        let bank = QueryBank { captions: Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0, 0.6, 0.8]).view([3, 2]), beta: 10.0 };
        let photos = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
        let t: Vec<f32> = Vec::try_from(bank.term(&photos)).unwrap();
        let expect = |c: [f64; 3]| c.iter().map(|x| (10.0 * x).exp()).sum::<f64>().ln() / 10.0;
        assert!((f64::from(t[0]) - expect([1.0, 0.0, 0.6])).abs() < 1e-5, "{t:?}");
        assert!((f64::from(t[1]) - expect([0.0, 1.0, 0.8])).abs() < 1e-5, "{t:?}");
        // The photo that matches more of the bank (a hub) gets the larger term.
        assert!(t[1] > t[0]);
    }

    #[test]
    fn loss_prefers_aligned_embeddings() {
        let a = l2_normalize(&Tensor::randn([8, 4], (Kind::Float, Device::Cpu)));
        let b = l2_normalize(&Tensor::randn([8, 4], (Kind::Float, Device::Cpu)));
        let same = Tensor::eye(8, (Kind::Bool, Device::Cpu));
        let scale = Tensor::from_slice(&[(1.0f32 / 0.07).ln()]);
        let aligned = contrastive_loss(&a, &a, &scale, &same, 0.1).double_value(&[]);
        let random = contrastive_loss(&a, &b, &scale, &same, 0.1).double_value(&[]);
        assert!(aligned < random, "{aligned} vs {random}");
    }
}
