//! End to end: train a tiny scorer on a small subset of the real data with the real encoders,
//! load the artifact back and check it gives the same scores; a second run reuses the vector
//! cache and gets the next version number; `eval` reproduces the manifest's metrics.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use imagesearch_model::{ModelRepository, Scorer, ScorerManifest};
use imagesearch_tests::encoders;
use tch::{Device, Kind, Tensor};

/// `imagesearch-train <args>` on the data, models and cache under `root`, on the CPU.
fn trainer(args: &[&str], root: &Path) -> Command {
    trainer_with(args, root, &encoders())
}

/// [`trainer`] with the encoder repository `encoders`.
fn trainer_with(args: &[&str], root: &Path, encoders: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagesearch-train"));
    cmd.args(args)
        .arg("--data-dir")
        .arg(root.join("data"))
        .arg("--models")
        .arg(root.join("models"))
        .arg("--encoders")
        .arg(encoders)
        .arg("--cache-dir")
        .arg(root.join("cache"))
        .args(["--device", "cpu"]);
    cmd
}

fn run(args: &[&str], root: &Path) -> std::process::Output {
    let out = trainer(args, root).output().unwrap();
    assert!(
        out.status.success(),
        "imagesearch-train {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

const TRAIN: &[&str] = &[
    "train", "--members", "2", "--max-epochs", "2", "--val-photos", "8", "--batch-size", "32",
    "--report-queries", "3", "--holdout-fraction", "0.25",
    // The subset's few judged pairs: let Score's refinement choose on them all the same.
    "--score-refinement-min-pairs", "1",
];

#[test]
fn trains_a_tiny_scorer_and_loads_it_back() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    imagesearch_tests::data_subset(&root.join("data"));
    run(TRAIN, root);

    let repo = ModelRepository::new(root.join("models"));
    assert_eq!(repo.versions().unwrap(), vec![1]);
    let dir = repo.version_dir(1);
    for f in ["scorer.pt", "image_tower.pt", "text_tower.pt", "manifest.json", "report.html"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let manifest = ScorerManifest::load(&dir).unwrap();
    assert_eq!(manifest.version, 1);
    // The test-time levers were chosen on validation: every candidate is listed, the chosen
    // gallery views are recorded, and the query bank (when chosen) adds one column.
    let levers = &manifest.training["levers"];
    assert_eq!(levers["candidates"].as_array().unwrap().len(), 2 * 7 * 2, "{levers}");
    let views = manifest.index_views.clone().expect("manifest records the gallery views");
    assert!(views == "both" || views == "crops", "{views}");
    assert_eq!(levers["chosen_index_views"], views.as_str());
    // The word map is recorded by the content it was measured with, when chosen.
    let mapped = levers["chosen_query_word_map"].as_bool().unwrap();
    assert_eq!(manifest.query_word_map.as_deref(), mapped.then(|| imagesearch_model::WordMap::builtin().id()));
    let banked = levers["chosen_beta"].is_number();
    assert_eq!(manifest.embedding_dim, 2 * 512 + i64::from(banked));
    assert!(manifest.metrics["retrieval"]["r_at_1"].is_number());
    assert!(manifest.training["photo_encoding"]["encoded"].as_u64().unwrap() > 0);
    assert!(manifest.training["gallery_photo_encoding"]["encoded"].as_u64().unwrap() > 0);

    // The artifact gives the same scores through its three entry points.
    let scorer = Scorer::load(&dir, Device::Cpu).unwrap();
    tch::manual_seed(1);
    let iv = Tensor::rand([5, 1280], (Kind::Float, Device::Cpu)) * 3.0;
    let tv = Tensor::randn([5, 384], (Kind::Float, Device::Cpu)) * 0.05;
    let scores = scorer.score(&iv, &tv).unwrap();
    let ie = scorer.embed_images(&iv).unwrap();
    let te = scorer.embed_texts(&tv).unwrap();
    assert_eq!((ie.size()[1], te.size()[1]), (manifest.embedding_dim, manifest.embedding_dim));
    // The joint part is unit length; a query bank's column is −t for photos and 1 for texts.
    let skip = i64::from(banked);
    let norms = ie.narrow(1, skip, 2 * 512).norm_scalaropt_dim(2, [-1i64].as_slice(), false);
    assert!((norms - 1.0).abs().max().double_value(&[]) < 1e-4, "tower outputs are unit length");
    if banked {
        assert!((te.narrow(1, 0, 1) - 1.0).abs().max().double_value(&[]) < 1e-6);
    }
    // Score is the joint embeddings' inner product alone (no query-bank term), weighted per
    // dimension by the refinement when validation kept it, under its own calibration; Search's
    // calibration is fitted on the towers' inner product.
    let refinement = &manifest.training["score_refinement"];
    assert_eq!(refinement["candidates"].as_array().unwrap().len(), 1 + 4 * 4, "{refinement}");
    assert_eq!(refinement["outcome"] == "used", refinement["used"] == true, "{refinement}");
    assert_eq!(manifest.hyperparameters["score_refinement"]["enabled"], true);
    let refined = refinement["used"].as_bool().unwrap();
    let weights: Vec<f32> = refinement["weights"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert_eq!(weights.len(), if refined { 2 * 512 } else { 0 }, "{refinement}");
    let g = if refined { Tensor::from_slice(&weights) } else { Tensor::ones([2 * 512], (Kind::Float, Device::Cpu)) };
    let joint = (ie.narrow(1, skip, 2 * 512) * te.narrow(1, skip, 2 * 512) * g).sum_dim_intlist([-1i64].as_slice(), false, Kind::Float);
    let c = manifest.score_calibration.expect("a score calibration");
    let expected = (joint * c.a + c.b).sigmoid();
    assert!((&scores - &expected).abs().max().double_value(&[]) < 1e-5);
    if !banked && !refined {
        assert!((c.a - manifest.calibration.a).abs() < 1e-6 && (c.b - manifest.calibration.b).abs() < 1e-6, "no bank: one calibration");
    }
    let s: Vec<f32> = Vec::try_from(scores).unwrap();
    assert!(s.iter().all(|x| (0.0..=1.0).contains(x)));

    // The version ships a child detector (labels from captions; the tiny subset may leave a
    // split without positives, which must fall back to flagging everything, not crash).
    let info = manifest.child_detector.as_ref().expect("manifest describes a child detector");
    assert!(manifest.files.contains_key("child_detector.json"));
    assert!(dir.join("child_detector.json").is_file());
    assert!((0.0..=1.0).contains(&info.threshold), "{}", info.threshold);
    assert_eq!(info.target_recall, 0.98, "the default recall target");
    assert!(info.metrics["groups"]["heldout"]["photos"].as_u64().unwrap() > 0);
    assert!(info.metrics["groups"]["test_photos"]["photos"].as_u64().unwrap() == 8);
    assert!(info.metrics["split"]["train"]["positives"].as_u64().unwrap() > 0, "the subset holds photos of children");
    let detector = scorer.detector.as_ref().expect("Scorer::load loads the detector");
    let rows: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(&iv).unwrap();
    for row in &rows {
        let p = detector.probability(row);
        assert!((0.0..=1.0).contains(&p), "{p}");
        assert_eq!(detector.flags(row), p >= info.threshold);
    }

    // The query detector is measured on both held-out lists as the server decides: the word
    // list or the detector, which flags at least every text the word list flags.
    let served = &manifest.query_detector.as_ref().expect("a query detector").metrics["served"];
    for list in ["heldout_list", "heldout_list_2"] {
        let (words, either) = (&served[list]["word_list"], &served[list]["word_list_or_detector"]);
        assert_eq!((words["positives"].as_u64(), either["positives"].as_u64()), (Some(100), Some(100)), "{served}");
        assert!(either["true_positives"].as_u64() >= words["true_positives"].as_u64(), "{served}");
        assert!(either["false_positives"].as_u64() >= words["false_positives"].as_u64(), "{served}");
        assert!(words["true_positives"].as_u64().unwrap() > 50, "the word list reads most child texts: {served}");
    }

    // Loaded twice, the same artifact gives identical scores.
    let again = Scorer::load(&dir, Device::Cpu).unwrap().score(&iv, &tv).unwrap();
    let s2: Vec<f32> = Vec::try_from(again).unwrap();
    assert_eq!(s, s2);

    // The report never shows a photo whose own captions describe a child.
    let html = fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("This image is unavailable in your country in compliance with local laws"));
    // Every lever candidate is a row of the report's levers table, with R@k intervals above.
    let table = &html[html.find("<h2>Test-time levers</h2>").expect("levers table")..];
    let table = &table[..table.find("</table>").unwrap()];
    assert_eq!(table.matches("<tr").count(), 1 + 2 * 7 * 2, "header and one row per candidate");
    assert_eq!(table.matches("font-weight:bold").count(), 1, "the chosen candidate");
    assert!(html.contains("R@1, queries describing a child"));
    let table = &html[html.find("refinement from the judged pairs</h2>").expect("refinement table")..];
    assert_eq!(table[..table.find("</table>").unwrap()].matches("<tr").count(), 1 + 1 + 4 * 4, "header, cosine, candidates");
    let queries = fs::read_to_string(root.join("data/image_search/test_queries.csv")).unwrap();
    let mut child_photos = HashSet::new();
    for l in queries.lines().skip(1) {
        let f: Vec<&str> = l.split('|').collect();
        if imagesearch_compliance::describes_child(f[2]).is_some() {
            child_photos.insert(f[3].to_string());
        }
    }
    assert!(!child_photos.is_empty(), "the subset should hold a photo of a child");
    for p in &child_photos {
        assert!(!html.contains(p.as_str()), "report shows restricted photo {p}");
    }
    assert!(manifest.training["heldout_photo_list"].as_array().is_some_and(|l| l.len() == 3));

    // eval reproduces the manifest's metrics from the saved artifact.
    let out = run(&["eval", "--version", "1", "--json"], root);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["metrics"]["retrieval"], manifest.metrics["retrieval"]);
    assert_eq!(json["metrics"]["expert_tau_c"], manifest.metrics["expert_tau_c"]);

    // A second run encodes nothing (vector cache) and writes version 2.
    run(TRAIN, root);
    assert_eq!(repo.versions().unwrap(), vec![1, 2]);
    let second = ScorerManifest::load(&repo.version_dir(2)).unwrap();
    assert_eq!(second.training["photo_encoding"]["encoded"], 0);
    assert_eq!(second.training["text_encoding"]["encoded"], 0);
    // Same seed, same data: deterministic training.
    assert_eq!(second.calibration, manifest.calibration);
    assert_eq!(second.score_calibration, manifest.score_calibration);
    assert_eq!(second.training["score_refinement"], manifest.training["score_refinement"]);
    assert_eq!(second.files["child_detector.json"], manifest.files["child_detector.json"]);
    assert_eq!(second.child_detector.as_ref().unwrap().threshold, info.threshold);

    // A tampered file is refused.
    fs::write(repo.version_dir(2).join("text_tower.pt"), b"garbage").unwrap();
    let err = Scorer::load(&repo.version_dir(2), Device::Cpu).err().expect("tampered version must not load");
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
}

#[test]
fn nonsense_settings_are_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let settings = [("--batch-size", "1"), ("--members", "0"), ("--holdout-fraction", "1"), ("--val-photos", "0"), ("--judged-positives", "1"), ("--judged-positives", "1.5")];
    for (flag, value) in settings {
        let out = trainer(&["train", flag, value], tmp.path()).output().unwrap();
        assert!(!out.status.success(), "{flag} {value} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{flag}: {stderr}");
    }
}

#[test]
fn bad_rows_stop_the_run_unless_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    imagesearch_tests::data_subset(&root.join("data"));
    let expert = root.join("data/image_search/ExpertAnnotations.tsv");
    let mut text = fs::read_to_string(&expert).unwrap();
    text.push_str("1056338697_4f7d7ce270.jpg\t2549968784_39bfbe44f9.jpg#2\t1\t7\t1\n");
    text.push_str("broken line without tabs\n");
    fs::write(&expert, &text).unwrap();
    let lines = text.lines().count();

    let out = trainer(TRAIN, root).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("ExpertAnnotations.tsv:{}: expert rating 2 is 7, expected 1..4", lines - 1)), "{stderr}");
    assert!(stderr.contains(&format!("ExpertAnnotations.tsv:{}: expected 5 fields, found 1", lines)), "{stderr}");
    assert!(stderr.contains("--skip-bad-rows"), "{stderr}");
    assert!(ModelRepository::new(root.join("models")).versions().unwrap().is_empty());

    let mut args: Vec<&str> = TRAIN.to_vec();
    args.extend(["--skip-bad-rows", "--no-child-detector"]);
    run(&args, root);
    let dir = ModelRepository::new(root.join("models")).version_dir(1);
    let m = ScorerManifest::load(&dir).unwrap();
    assert_eq!(m.training["bad_rows_skipped"], 2);
    // --no-child-detector: none described, none written, and the version still loads.
    assert!(m.child_detector.is_none());
    assert!(!m.files.contains_key("child_detector.json") && !dir.join("child_detector.json").exists());
    assert!(Scorer::load(&dir, Device::Cpu).unwrap().detector.is_none());
}

/// `train --tune-text-epochs 2`: the tuning is recorded with every epoch's validation recall.
/// On 17 photos the tuned encoder over-fits and never beats the base one on validation (0.70
/// against 0.77 mean recall), so the base encoder stays, nothing is written beside it, and the
/// version and `eval` use the base. (The tuned encoder's own files: tests/text_tuning.rs.)
#[test]
fn a_text_tuning_that_does_not_beat_the_base_is_recorded_and_the_base_encoder_stays() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    imagesearch_tests::data_subset(&root.join("data"));
    // The tuned encoder is written beside the base ones: a private encoder repository.
    let repo_dir = root.join("encoders");
    fs::create_dir_all(&repo_dir).unwrap();
    for name in ["efficientnet-lite0", "minilm-l6-v2"] {
        std::os::unix::fs::symlink(encoders().join(name), repo_dir.join(name)).unwrap();
    }
    let args = [
        "train", "--members", "1", "--max-epochs", "2", "--val-photos", "8", "--batch-size", "32", "--report-queries", "1",
        "--holdout-fraction", "0.25", "--index-views", "both", "--query-bank", "0", "--tune-text-epochs", "2",
        "--tune-text-lr", "1e-4", "--tune-text-batch", "16",
    ];
    let out = trainer_with(&args, root, &repo_dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest = ScorerManifest::load(&ModelRepository::new(root.join("models")).version_dir(1)).unwrap();
    let tuning = &manifest.training["text_tuning"];
    assert_eq!(tuning["epochs"].as_array().unwrap().len(), 3, "{tuning}");
    assert_eq!(tuning["base_encoder"], "minilm-l6-v2");
    assert_eq!(manifest.hyperparameters["text_tuning"]["epochs"], 2);
    let epochs = tuning["epochs"].as_array().unwrap();
    let base = epochs[0]["val_mean_recall"].as_f64().unwrap();
    assert!(epochs[1..].iter().all(|e| e["val_mean_recall"].as_f64().unwrap() <= base), "{tuning}");
    assert_eq!(tuning["best_epoch"], 0);
    assert!(tuning["encoder"].is_null());
    assert_eq!(manifest.text_encoder.name, "minilm-l6-v2");
    assert_eq!(fs::read_dir(&repo_dir).unwrap().count(), 2, "nothing written beside the base encoders");
    let html = fs::read_to_string(ModelRepository::new(root.join("models")).version_dir(1).join("report.html")).unwrap();
    let table = &html[html.find("Text-encoder tuning (LiT)").expect("the report shows the tuning")..];
    assert!(table[..table.find("</table>").unwrap()].contains("0 (projections only)"));
    let eval = trainer_with(&["eval", "--json"], root, &repo_dir).output().unwrap();
    assert!(eval.status.success(), "{}", String::from_utf8_lossy(&eval.stderr));
    let json: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert_eq!(json["metrics"]["retrieval"], manifest.metrics["retrieval"]);
}

#[test]
fn judged_photos_lend_positives_to_a_second_ensemble_measured_on_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    imagesearch_tests::data_subset(&root.join("data"));
    let mut args = TRAIN.to_vec();
    args.extend(["--index-views", "both", "--query-bank", "0", "--judged-positives", "0.5"]);
    run(&args, root);
    let manifest = ScorerManifest::load(&ModelRepository::new(root.join("models")).version_dir(1)).unwrap();
    assert_eq!(manifest.hyperparameters["judged_positives"], 0.5);
    let p = &manifest.training["judged_positives"];
    let lent: Vec<&str> = p["photo_list"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(!lent.is_empty(), "{p}");
    assert!(p["photos"].as_u64().unwrap() > 0 && p["pairs"].as_u64() >= p["photos"].as_u64(), "{p}");
    // Only photos the law allows, never a held-out or test photo, and out of the lever
    // validation set, which both ensembles are measured on.
    let heldout: Vec<&str> = manifest.training["heldout_photo_list"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let tests = fs::read_to_string(root.join("data/image_search/test_images.csv")).unwrap();
    let judged = fs::read_to_string(root.join("data/image_search/train_dataset.csv")).unwrap();
    for photo in &lent {
        assert!(!heldout.contains(photo) && !tests.contains(photo), "{photo} is held out or a test photo");
        for line in judged.lines().filter(|l| l.split(',').nth(1).is_some_and(|q| q.starts_with(photo))) {
            let text = line.splitn(3, ',').nth(2).unwrap();
            assert!(imagesearch_compliance::describes_child(text).is_none(), "{photo}'s own caption describes a child: {text}");
        }
    }
    let levers = &manifest.training["levers"];
    assert_eq!(levers["validation_photos"], p["validation_photos"], "{levers}\n{p}");
    for side in ["validation_without", "validation_with", "test_without", "test_with"] {
        assert!(p[side]["mrr"].as_f64().is_some_and(|m| m > 0.0), "{side}: {p}");
    }
    // The kept ensemble trained on the lent photos' pairs exactly when it was kept.
    let used = p["used"].as_bool().unwrap();
    let (wm, wo) = (p["validation_with"]["mrr"].as_f64().unwrap(), p["validation_without"]["mrr"].as_f64().unwrap());
    assert_eq!(used, wm > wo + 0.005, "{p}");
    let html = fs::read_to_string(ModelRepository::new(root.join("models")).version_dir(1).join("report.html")).unwrap();
    let table = &html[html.find("Judged photos as extra positives").expect("the report shows both ensembles")..];
    assert_eq!(table[..table.find("</table>").unwrap()].matches("<tr").count(), 3);

    // Without the lever, the lent photos are lever validation photos again.
    // (And without Score's refinement: Score is then the plain cosine, one calibration.)
    run(&TRAIN.iter().copied().chain(["--index-views", "both", "--query-bank", "0", "--score-refinement", "off"]).collect::<Vec<_>>(), root);
    let plain = ScorerManifest::load(&ModelRepository::new(root.join("models")).version_dir(2)).unwrap();
    assert!(plain.training.get("judged_positives").is_none());
    assert_eq!(plain.hyperparameters["score_refinement"]["enabled"], false);
    let refinement = &plain.training["score_refinement"];
    assert!(refinement["used"] == false && refinement["candidates"].as_array().unwrap().is_empty(), "{refinement}");
    assert_eq!(refinement["outcome"], "disabled");
    let (sc, c) = (plain.score_calibration.unwrap(), plain.calibration);
    assert!((sc.a - c.a).abs() < 1e-6 && (sc.b - c.b).abs() < 1e-6, "no bank, no refinement: one calibration");
    let before = plain.training["levers"]["validation_photos"].as_u64().unwrap();
    assert!(before > levers["validation_photos"].as_u64().unwrap(), "{before} vs {levers}");
}

#[test]
fn a_version_trains_on_the_lite_pair_encoder_through_its_manifest_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    imagesearch_tests::data_subset(&root.join("data"));
    let args = [
        "train", "--members", "1", "--max-epochs", "1", "--val-photos", "8", "--batch-size", "32", "--report-queries", "1",
        "--holdout-fraction", "0.25", "--index-views", "both", "--query-bank", "0", "--image-encoder", "efficientnet-lite0-lite2",
    ];
    run(&args, root);
    let dir = ModelRepository::new(root.join("models")).version_dir(1);
    let manifest = ScorerManifest::load(&dir).unwrap();
    assert_eq!((manifest.image_encoder.name.as_str(), manifest.image_encoder.output_dim), ("efficientnet-lite0-lite2", 2560));
    let scorer = Scorer::load(&dir, Device::Cpu).unwrap();
    let detector = scorer.detector.as_ref().expect("a child detector");
    assert_eq!(detector.weights().weights.len(), 2560, "the detector reads the pair's features too");
    let scores = scorer.score(&Tensor::rand([3, 2560], (Kind::Float, Device::Cpu)), &Tensor::randn([3, 384], (Kind::Float, Device::Cpu))).unwrap();
    assert_eq!(scores.size(), [3]);
    // eval reads the encoders the version names.
    let out = run(&["eval", "--json"], root);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["metrics"]["retrieval"], manifest.metrics["retrieval"]);
}
