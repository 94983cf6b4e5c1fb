//! Writing a scorer version: the ensemble traced into three TorchScript entry points
//! (`image_tower.pt` and `text_tower.pt` for Search, `scorer.pt` for Score) in a staging
//! directory, with a manifest listing each file's sha256. The caller commits the staged version
//! (atomic rename).

use std::collections::BTreeMap;
use std::path::Path;

use imagesearch_model::hashing::sha256_file;
use imagesearch_model::scorer::{IMAGE_TOWER_FILE, SCORE_FILE, TEXT_TOWER_FILE};
use imagesearch_model::{Calibration, ModelError};
use tch::{CModule, Device, Kind, Tensor};

use crate::head::Ensemble;

/// Traces the ensemble's three entry points into `dir`; returns `file -> sha256`. The towers
/// serve Search (with the query bank's term when there is one); `scorer.pt` serves Score:
/// `sigmoid(a·Σ g_d·u_d·v_d + b)` of the joint embeddings `u`, `v` alone, with
/// `score_calibration` and `score_weights` `g` (None: all 1, the cosine).
pub fn write_modules(
    ensemble: &mut Ensemble,
    score_calibration: Calibration,
    score_weights: Option<&Tensor>,
    image_dim: i64,
    text_dim: i64,
    dir: &Path,
) -> Result<BTreeMap<String, String>, ModelError> {
    ensemble.freeze_on_cpu();
    let example_img = Tensor::randn([3, image_dim], (Kind::Float, Device::Cpu));
    let example_txt = Tensor::randn([3, text_dim], (Kind::Float, Device::Cpu));
    let ens: &Ensemble = ensemble;

    let image_tower = CModule::create_by_tracing("ImageTower", "forward", &[example_img.shallow_clone()], &mut |x| {
        vec![ens.embed_images(&x[0])]
    })?;
    let text_tower = CModule::create_by_tracing("TextTower", "forward", &[example_txt.shallow_clone()], &mut |x| {
        vec![ens.embed_texts(&x[0])]
    })?;
    let (a, b) = (score_calibration.a, score_calibration.b);
    let weights = score_weights.map(|g| g.to_kind(Kind::Float).to_device(Device::Cpu));
    let scorer = CModule::create_by_tracing("Scorer", "forward", &[example_img, example_txt], &mut |x| {
        let texts = match &weights {
            Some(g) => ens.joint_texts(&x[1]) * g,
            None => ens.joint_texts(&x[1]),
        };
        let cos = (ens.joint_images(&x[0]) * texts).sum_dim_intlist(
            [-1i64].as_slice(),
            false,
            Kind::Float,
        );
        vec![(cos * a + b).sigmoid()]
    })?;

    let mut files = BTreeMap::new();
    for (name, module) in [(IMAGE_TOWER_FILE, &image_tower), (TEXT_TOWER_FILE, &text_tower), (SCORE_FILE, &scorer)] {
        let path = dir.join(name);
        module.save(&path)?;
        files.insert(name.to_string(), sha256_file(&path)?);
    }
    Ok(files)
}

/// The git commit of the code, with `-dirty` when the work tree has changes; None outside git.
pub fn git_commit() -> Option<String> {
    let dir = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new("git").args(["-C", dir, "rev-parse", "HEAD"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let mut commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dirty = std::process::Command::new("git")
        .args(["-C", dir, "status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    if dirty {
        commit.push_str("-dirty");
    }
    Some(commit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::{self, HeadConfig, TrainSet, ValSet};

    fn row_sums(x: &Tensor) -> Tensor {
        x.sum_dim_intlist([-1i64].as_slice(), false, Kind::Float)
    }

    #[test]
    fn scorer_pt_applies_the_score_weights_under_its_calibration() {
        tch::manual_seed(7);
        let cpu = (Kind::Float, Device::Cpu);
        let cfg = HeadConfig { dim: 4, hidden: 8, max_epochs: 1, batch_size: 8, members: 1, ..HeadConfig::default() };
        let photos = Tensor::randn([16, 6], cpu);
        let mirrored = &photos + 0.01;
        let captions = Tensor::randn([16, 5], cpu);
        let pairs: Vec<(i64, i64)> = (0..16).map(|i| (i, i)).collect();
        let caption_photo: Vec<i64> = (0..16).collect();
        let train = TrainSet { photos_original: &photos, photos_mirrored: &mirrored, captions: &captions, pairs: &pairs };
        let val = ValSet { photos: &photos, captions: &captions, caption_photo: &caption_photo };
        let (member, _) = head::train_member(&cfg, 0, &train, &val, Device::Cpu, &mut |_| {}).unwrap();
        let mut ensemble = Ensemble { members: vec![member], query_bank: None };
        let g = Tensor::from_slice(&[3.0f32, -1.0, 0.5, 2.0]);
        let calibration = Calibration { a: 4.0, b: -1.0 };
        let dir = tempfile::tempdir().unwrap();
        write_modules(&mut ensemble, calibration, Some(&g), 6, 5, dir.path()).unwrap();

        let scorer = CModule::load(dir.path().join(SCORE_FILE)).unwrap();
        let (iv, tv) = (Tensor::randn([7, 6], cpu), Tensor::randn([7, 5], cpu));
        let got = scorer.forward_ts(&[&iv, &tv]).unwrap();
        let product = ensemble.joint_images(&iv) * ensemble.joint_texts(&tv);
        let weighted = (row_sums(&(&product * &g)) * 4.0 - 1.0).sigmoid();
        let plain = (row_sums(&product) * 4.0 - 1.0).sigmoid();
        assert!((&got - &weighted).abs().max().double_value(&[]) < 1e-5, "scorer.pt is sigmoid(a·Σ g·u·v + b)");
        assert!((&got - &plain).abs().max().double_value(&[]) > 1e-3, "the weights are applied");
        // Without weights, the plain cosine.
        write_modules(&mut ensemble, calibration, None, 6, 5, dir.path()).unwrap();
        let got = CModule::load(dir.path().join(SCORE_FILE)).unwrap().forward_ts(&[&iv, &tv]).unwrap();
        assert!((&got - &plain).abs().max().double_value(&[]) < 1e-5);
    }
}
