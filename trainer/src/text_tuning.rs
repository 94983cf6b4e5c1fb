//! Tuning the text encoder with the image side locked ("LiT", Zhai et al., CVPR 2022).
//!
//! The text encoder's TorchScript module is trained contrastively (symmetric InfoNCE) against
//! the frozen image-encoder vectors of the training photos, through a linear projection on each
//! side. The projections are first fitted alone on the cached text vectors (warm-up, cheap,
//! dropout on the image features); then the image side is locked and the encoder's weights
//! train with the text projection. The epoch with the best validation recall is kept and
//! saved as a new encoder — its own directory, manifest and sha256 next to the base encoder —
//! that the head is then trained on and the version names. Only the photos and captions the
//! law allows take part (the caller passes the head's training set).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use imagesearch_model::hashing::sha256_file;
use imagesearch_model::{EncoderManifest, ModelError, TextEncoder};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{CModule, Device, Kind, Tensor};
use tracing::info;

use crate::head::{contrastive_loss, l2_normalize, recalls};

/// Settings of the tuning.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TuneConfig {
    /// Epochs with the encoder's weights training (0 = no tuning).
    pub epochs: usize,
    /// AdamW learning rate of the encoder's weights.
    pub lr: f64,
    /// AdamW learning rate of the two projections and the temperature.
    pub head_lr: f64,
    /// Epochs of the projections alone, on the cached vectors, before the encoder trains.
    pub warmup_epochs: usize,
    pub batch_size: usize,
    /// Width of the shared space of the projections.
    pub dim: i64,
    /// Dropout on the standardised image features while the image projection trains.
    pub input_dropout: f64,
    pub weight_decay: f64,
    pub seed: u64,
}

impl Default for TuneConfig {
    fn default() -> Self {
        TuneConfig {
            epochs: 0,
            lr: 2e-5,
            head_lr: 1e-3,
            warmup_epochs: 5,
            batch_size: 128,
            dim: 512,
            input_dropout: 0.4,
            weight_decay: 0.01,
            seed: 42,
        }
    }
}

/// What tuning trains on: the locked photo vectors, the captions as text and their vectors
/// under the base encoder (for the warm-up), the positives, and the validation photos.
pub struct TuneSet<'a> {
    /// Original and mirrored image-encoder vectors of each training photo, `[P, Di]` each.
    pub photos_original: &'a Tensor,
    pub photos_mirrored: &'a Tensor,
    /// Each caption's text and its base-encoder vector (`[C, Dt]`, same rows).
    pub captions: &'a [String],
    pub caption_vectors: &'a Tensor,
    /// (photo row, caption row) positives.
    pub pairs: &'a [(i64, i64)],
    /// Validation photos' vectors, their captions and the row of each caption's photo.
    pub val_photos: &'a Tensor,
    pub val_captions: &'a [String],
    pub val_caption_photo: &'a [i64],
}

/// One epoch of the tuning (epoch 0: the projections alone over the base encoder).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TuneEpoch {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_r1: f64,
    pub val_mean_recall: f64,
    pub seconds: f64,
}

/// What the tuning did (the manifest's `training.text_tuning`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TuneReport {
    pub config: TuneConfig,
    pub base_encoder: String,
    pub base_sha256: String,
    /// The encoder written (None when no epoch beat the base encoder on validation).
    pub encoder: Option<String>,
    pub best_epoch: usize,
    pub epochs: Vec<TuneEpoch>,
    pub pairs: usize,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("encoder manifest: {0}")]
    Json(#[from] serde_json::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TuneError + '_ {
    move |source| TuneError::Io { path: path.to_path_buf(), source }
}

/// The linear projections on both sides and the temperature. The image side (projection and
/// temperature) has its own variables: it trains in the warm-up only and is locked after.
struct Projections {
    image_mean: Tensor,
    image_std: Tensor,
    image: nn::Linear,
    text: nn::Linear,
    scale: Tensor,
    input_dropout: f64,
}

impl Projections {
    fn new(image_side: &nn::Path, text_side: &nn::Path, photos: &Tensor, text_dim: i64, cfg: &TuneConfig) -> Self {
        let mean = photos.mean_dim([0i64].as_slice(), false, Kind::Float);
        let std = photos.std_dim([0i64].as_slice(), false, false).clamp_min(1e-6);
        Projections {
            image_mean: mean.to_device(image_side.device()),
            image_std: std.to_device(image_side.device()),
            image: nn::linear(image_side / "image", photos.size()[1], cfg.dim, Default::default()),
            text: nn::linear(text_side / "text", text_dim, cfg.dim, Default::default()),
            scale: image_side.var("logit_scale", &[1], nn::Init::Const((1.0f64 / 0.07).ln())),
            input_dropout: cfg.input_dropout,
        }
    }

    /// Unit image embeddings; in training the standardised features pass through dropout.
    fn images(&self, x: &Tensor, train: bool) -> Tensor {
        let x = ((x - &self.image_mean) / &self.image_std).dropout(self.input_dropout, train);
        l2_normalize(&self.image.forward(&x))
    }

    fn texts(&self, x: &Tensor) -> Tensor {
        l2_normalize(&self.text.forward(x))
    }
}

/// The encoder being tuned: the base encoder's reference TorchScript module with its weights
/// registered as trainable variables.
struct Trainable {
    vs: nn::VarStore,
    module: CModule,
}

impl Trainable {
    fn load(file: &Path, device: Device) -> Result<Self, TuneError> {
        let vs = nn::VarStore::new(device);
        let mut module = CModule::load_on_device(file, device)?;
        let root = vs.root();
        for (name, tensor) in module.named_parameters()? {
            let t = tensor.set_requires_grad(true);
            let _ = root.add(&name.replace('.', "_"), t, true);
        }
        module.set_train();
        Ok(Trainable { vs, module })
    }

    fn forward(&self, encoder: &TextEncoder, texts: &[&str], device: Device) -> Result<Tensor, TuneError> {
        let (ids, mask) = encoder.tokenizer().encode_batch(texts)?;
        Ok(self.module.forward_ts(&[ids.to_device(device), mask.to_device(device)])?)
    }

    fn snapshot(&self) -> Vec<(String, Tensor)> {
        self.vs.variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect()
    }

    fn restore(&self, snapshot: Vec<(String, Tensor)>) {
        let mut vars = self.vs.variables();
        tch::no_grad(|| {
            for (name, value) in snapshot {
                if let Some(v) = vars.get_mut(&name) {
                    v.copy_(&value);
                }
            }
        });
    }
}

/// Text→image R@1 and mean of R@1/5/10 on the validation set, the captions embedded by `texts`.
fn validate(proj: &Projections, set: &TuneSet, texts: &Tensor) -> (f64, f64) {
    tch::no_grad(|| {
        let img = proj.images(&set.val_photos.to_device(texts.device()), false);
        recalls(&proj.texts(texts).matmul(&img.tr()), set.val_caption_photo)
    })
}

/// The locked photo vectors, original and mirrored, moved to the training device once.
struct LockedPhotos {
    original: Tensor,
    mirrored: Tensor,
}

impl LockedPhotos {
    fn new(set: &TuneSet, device: Device) -> Self {
        LockedPhotos { original: set.photos_original.to_device(device), mirrored: set.photos_mirrored.to_device(device) }
    }

    /// One batch's photos (each as is or mirrored at random) and the mask of pairs sharing a
    /// photo.
    fn batch(&self, pairs: &[(i64, i64)], chunk: &[usize]) -> (Tensor, Tensor) {
        let device = self.original.device();
        let photo_idx: Vec<i64> = chunk.iter().map(|&i| pairs[i].0).collect();
        let pi = Tensor::from_slice(&photo_idx).to_device(device);
        let flip = Tensor::rand([chunk.len() as i64, 1], (Kind::Float, device)).lt(0.5);
        let (o, m) = (self.original.index_select(0, &pi), self.mirrored.index_select(0, &pi));
        (o.where_self(&flip, &m), pi.unsqueeze(1).eq_tensor(&pi.unsqueeze(0)))
    }
}

/// The validation captions' vectors from the encoder being tuned, in batches.
fn encode_val(enc: &Trainable, encoder: &TextEncoder, set: &TuneSet, batch: usize, device: Device) -> Result<Tensor, TuneError> {
    let mut out = Vec::new();
    tch::no_grad(|| -> Result<(), TuneError> {
        for chunk in set.val_captions.chunks(batch) {
            let texts: Vec<&str> = chunk.iter().map(String::as_str).collect();
            out.push(enc.forward(encoder, &texts, device)?);
        }
        Ok(())
    })?;
    Ok(Tensor::cat(&out, 0))
}

/// One optimisation step of `loss` for every optimiser in `opts`.
fn step(opts: &mut [&mut nn::Optimizer], loss: &Tensor) {
    opts.iter_mut().for_each(|o| o.zero_grad());
    loss.backward();
    opts.iter_mut().for_each(|o| o.step());
}

/// One pass over the positives in shuffled batches: `batch_loss(chunk, photos, same)` gives a
/// batch's loss, `opts` step on it; returns the mean loss. `label` names the pass in the
/// progress log (every 20 batches) when given.
fn epoch(
    cfg: &TuneConfig,
    set: &TuneSet,
    photos: &LockedPhotos,
    order: &mut [usize],
    rng: &mut ChaCha8Rng,
    opts: &mut [&mut nn::Optimizer],
    label: Option<String>,
    batch_loss: &mut dyn FnMut(&[usize], &Tensor, &Tensor) -> Result<Tensor, TuneError>,
) -> Result<f64, TuneError> {
    order.shuffle(rng);
    let (mut sum, mut steps) = (0.0, 0usize);
    let batches = order.len().div_ceil(cfg.batch_size);
    for (b, chunk) in order.chunks(cfg.batch_size).enumerate().filter(|(_, c)| c.len() >= 2) {
        let (batch, same) = photos.batch(set.pairs, chunk);
        let loss = batch_loss(chunk, &batch, &same)?;
        step(opts, &loss);
        sum += loss.double_value(&[]);
        steps += 1;
        if let Some(label) = label.as_deref().filter(|_| (b + 1) % 20 == 0) {
            info!("{label}: batch {}/{batches}, loss {:.4}", b + 1, sum / steps as f64);
        }
    }
    Ok(sum / steps.max(1) as f64)
}

/// Tunes `base` (a loaded text encoder) on `set` and, when an epoch beats the base encoder's
/// validation recall, writes the best epoch as a new encoder under `encoders`; returns the
/// report (its `encoder` names the new encoder directory).
pub fn tune(
    cfg: &TuneConfig,
    base: &TextEncoder,
    encoders: &Path,
    set: &TuneSet,
    device: Device,
    on_epoch: &mut dyn FnMut(&TuneEpoch),
) -> Result<TuneReport, TuneError> {
    let started = Instant::now();
    tch::manual_seed(cfg.seed as i64);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let enc = Trainable::load(&base.dir.join(&base.manifest.file), device)?;
    let (mut image_vs, text_vs) = (nn::VarStore::new(device), nn::VarStore::new(device));
    let all_photos = Tensor::cat(&[set.photos_original, set.photos_mirrored], 0);
    let proj = Projections::new(&image_vs.root(), &text_vs.root(), &all_photos, set.caption_vectors.size()[1], cfg);
    let adamw = |vs: &nn::VarStore, lr: f64| nn::AdamW { wd: cfg.weight_decay, ..Default::default() }.build(vs, lr);
    let (mut image_opt, mut text_opt) = (adamw(&image_vs, cfg.head_lr)?, adamw(&text_vs, cfg.head_lr)?);
    let mut enc_opt = adamw(&enc.vs, cfg.lr)?;
    let caption_vectors = set.caption_vectors.to_device(device);
    let photos = LockedPhotos::new(set, device);
    let mut order: Vec<usize> = (0..set.pairs.len()).collect();
    let caption_rows = |chunk: &[usize]| Tensor::from_slice(&chunk.iter().map(|&i| set.pairs[i].1).collect::<Vec<_>>()).to_device(device);

    // Warm-up: the projections alone over the base encoder's cached vectors, dropout on the
    // image features.
    let mut warm_loss = 0.0;
    for _ in 0..cfg.warmup_epochs {
        warm_loss = epoch(cfg, set, &photos, &mut order, &mut rng, &mut [&mut image_opt, &mut text_opt], None, &mut |chunk, batch, same| {
            let txt = proj.texts(&caption_vectors.index_select(0, &caption_rows(chunk)));
            Ok(contrastive_loss(&proj.images(batch, true), &txt, &proj.scale, same, 0.0))
        })?;
    }
    let (val_r1, val_mean_recall) = validate(&proj, set, &encode_val(&enc, base, set, cfg.batch_size, device)?);
    let first = TuneEpoch { epoch: 0, train_loss: warm_loss, val_r1, val_mean_recall, seconds: started.elapsed().as_secs_f64() };
    on_epoch(&first);
    let mut best = (val_mean_recall, 0usize, None);
    let mut epochs = vec![first];

    // The image side is locked from here on: only the text side learns (LiT).
    image_vs.freeze();
    for n in 1..=cfg.epochs {
        let epoch_started = Instant::now();
        let label = Some(format!("text tuning epoch {n}"));
        let train_loss = epoch(cfg, set, &photos, &mut order, &mut rng, &mut [&mut text_opt, &mut enc_opt], label, &mut |chunk, batch, same| {
            let texts: Vec<&str> = chunk.iter().map(|&i| set.captions[set.pairs[i].1 as usize].as_str()).collect();
            let txt = proj.texts(&enc.forward(base, &texts, device)?);
            Ok(contrastive_loss(&proj.images(batch, false), &txt, &proj.scale, same, 0.0))
        })?;
        let (val_r1, val_mean_recall) = validate(&proj, set, &encode_val(&enc, base, set, cfg.batch_size, device)?);
        let e = TuneEpoch { epoch: n, train_loss, val_r1, val_mean_recall, seconds: epoch_started.elapsed().as_secs_f64() };
        on_epoch(&e);
        if val_mean_recall > best.0 {
            best = (val_mean_recall, n, Some(enc.snapshot()));
        }
        epochs.push(e);
    }

    let (_, best_epoch, snapshot) = best;
    let encoder = match snapshot {
        Some(s) => {
            enc.restore(s);
            Some(save(&enc.module, base, encoders, cfg, best_epoch)?)
        }
        None => None,
    };
    Ok(TuneReport {
        config: cfg.clone(),
        base_encoder: base.manifest.name.clone(),
        base_sha256: base.manifest.sha256().to_string(),
        encoder,
        best_epoch,
        epochs,
        pairs: set.pairs.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes the tuned module as the encoder `<base>-lit-<sha256 prefix>` (module, the base's
/// tokenizer, a manifest with the base's input contract); returns its name.
fn save(module: &CModule, base: &TextEncoder, encoders: &Path, cfg: &TuneConfig, epoch: usize) -> Result<String, TuneError> {
    let staging = encoders.join(format!(".{}-lit-staging-{}", base.manifest.name, std::process::id()));
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    let file = "encoder.pt";
    module.save(staging.join(file))?;
    let sha = sha256_file(&staging.join(file))?;
    let tokenizer = base.manifest.input.get("tokenizer").and_then(serde_json::Value::as_str).unwrap_or("tokenizer.json");
    std::fs::copy(base.dir.join(tokenizer), staging.join(tokenizer)).map_err(io(&staging))?;
    let mut files = BTreeMap::new();
    files.insert(file.to_string(), sha.clone());
    files.insert(tokenizer.to_string(), sha256_file(&staging.join(tokenizer))?);
    let name = format!("{}-lit-{}", base.manifest.name, &sha[..12]);
    let manifest = EncoderManifest {
        name: name.clone(),
        kind: base.manifest.kind,
        file: file.to_string(),
        source: format!(
            "{} (sha256 {}) tuned by imagesearch-train with the image side locked (LiT): epoch {epoch} of {}, lr {}, batch {}, seed {}",
            base.manifest.name,
            base.manifest.sha256(),
            cfg.epochs,
            cfg.lr,
            cfg.batch_size,
            cfg.seed
        ),
        input: base.manifest.input.clone(),
        normalisation: base.manifest.normalisation.clone(),
        output_dim: base.manifest.output_dim,
        files,
        torch: base.manifest.torch.clone(),
        serving: Vec::new(),
    };
    let path = staging.join("manifest.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest)?).map_err(io(&path))?;
    let dir = encoders.join(&name);
    if dir.exists() {
        // The same weights were written before (the name is their hash): keep that copy.
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    } else {
        std::fs::rename(&staging, &dir).map_err(io(&dir))?;
    }
    Ok(name)
}
