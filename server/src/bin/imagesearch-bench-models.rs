//! The naive ceiling for `make bench`: the server's TorchScript modules called directly in a
//! loop on one thread, with no server, no queue and no cache — one request at a time (batch 1)
//! and eight at a time (batch 8). Score = decode + the image views + text + scorer; Search =
//! text + text tower + product with the gallery's embeddings + top-k. Also each stage alone
//! (decode, resize, image encoder, text encoder). Prints JSON.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use imagesearch_model::preprocess::{decode, to_input};
use imagesearch_model::{EncoderFile, ImageEncoder, ImageLimits, ImageViews, ModelRepository, Scorer, TextEncoder};
use imagesearch_model::device::DeviceChoice;
use imagesearch_model::kernel_caches::KernelCaches;
use tch::Tensor;

#[derive(Parser)]
struct Args {
    #[arg(long, env = "IMAGESEARCH_MODELS", default_value = "models")]
    models: PathBuf,
    /// Scorer version (default: newest).
    #[arg(long)]
    version: Option<u32>,
    /// Directory of photos (the product's test photos).
    #[arg(long, default_value = "../shared/data/image_search/test_images")]
    photos: PathBuf,
    /// Test queries (separator `|`).
    #[arg(long, default_value = "../shared/data/image_search/test_queries.csv")]
    queries: PathBuf,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = DeviceChoice::from_str)]
    device: DeviceChoice,
    /// Requests timed per configuration.
    #[arg(long, default_value_t = 64)]
    requests: usize,
    /// Views of a photo: both (photo and mirror image) or original.
    #[arg(long, value_enum, default_value_t = ImageViews::Original)]
    image_views: ImageViews,
    /// Encoder files, as the server's --encoder-files: auto, serving, serving-bf16 or reference.
    #[arg(long, value_enum, default_value_t = EncoderFile::Auto)]
    encoder_files: EncoderFile,
    /// Entries in ideep's per-shape weight cache, as the server's --weight-cache-capacity.
    #[arg(long, default_value_t = KernelCaches::SERVING.weights)]
    weight_cache_capacity: usize,
    /// Entries in oneDNN's per-shape kernel cache, as the server's --primitive-cache-capacity.
    #[arg(long, default_value_t = KernelCaches::SERVING.primitives)]
    primitive_cache_capacity: usize,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    KernelCaches { weights: a.weight_cache_capacity, primitives: a.primitive_cache_capacity }.apply();
    let device = a.device.device();
    let repo = ModelRepository::new(&a.models);
    let version = match a.version {
        Some(v) => v,
        None => repo.latest()?.context("no scorer version")?,
    };
    let scorer = Scorer::load(&repo.version_dir(version), device)?;
    let image = ImageEncoder::load_file(&repo.encoder_dir(&scorer.manifest.image_encoder.name), device, a.encoder_files)?;
    let (text, fallback) = TextEncoder::load_probed(&repo.encoder_dir(&scorer.manifest.text_encoder.name), device, a.encoder_files)?;
    if let Some(why) = &fallback {
        eprintln!("text encoder runs on the CPU: {why}");
    }
    let mut files: Vec<_> = std::fs::read_dir(&a.photos)?.filter_map(Result::ok).map(|e| e.path()).collect();
    files.sort();
    let photos: Vec<Vec<u8>> = files.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let queries: Vec<String> = std::fs::read_to_string(&a.queries)?
        .lines()
        .skip(1)
        .filter_map(|l| l.split('|').nth(2).map(str::to_string))
        .collect();
    let (w, h) = image.input_size();
    let limits = ImageLimits::default();

    let views = a.image_views;
    let image_vectors = |batch: &[&Vec<u8>]| -> anyhow::Result<Tensor> {
        let inputs: Vec<Vec<f32>> = batch
            .iter()
            .flat_map(|b| {
                let img = decode(b, limits).expect("test photo decodes");
                views.inputs(&img, w, h)
            })
            .collect();
        let rows: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
        let out = image.encode(&rows)?;
        Ok(imagesearch_model::views::photo_vectors(&out, views.views().len() as i64))
    };

    // Each stage of a Score alone, per photo or text, in milliseconds (one thread, batch 1).
    let per = |start: Instant, n: usize| start.elapsed().as_secs_f64() * 1000.0 / n as f64;
    let n = photos.len().min(a.requests);
    let t = Instant::now();
    let decoded: Vec<_> = photos[..n].iter().map(|b| decode(b, limits).expect("test photo decodes")).collect();
    let decode_ms = per(t, n);
    let t = Instant::now();
    let inputs: Vec<Vec<f32>> = decoded.iter().map(|img| to_input(img, w, h, false)).collect();
    let resize_ms = per(t, n);
    let _ = image.encode(&[inputs[0].as_slice()])?;
    let t = Instant::now();
    for x in &inputs {
        let _ = image.encode(&[x.as_slice()])?;
    }
    let image_ms = per(t, n);
    let _ = text.encode(&[queries[0].as_str()])?;
    let t = Instant::now();
    for q in queries.iter().take(n) {
        let _ = text.encode(&[q.as_str()])?;
    }
    let text_ms = per(t, n);
    // The same on a thread of its own, as the server runs its models.
    let text_thread_ms = std::thread::scope(|s| {
        s.spawn(|| {
            let _ = text.encode(&[queries[0].as_str()]);
            let t = Instant::now();
            for q in queries.iter().take(n) {
                let _ = text.encode(&[q.as_str()]);
            }
            per(t, n)
        })
        .join()
        .expect("text thread")
    });
    drop((decoded, inputs));

    // The gallery for Search: every photo encoded once, projected by the image tower.
    let all: Vec<&Vec<u8>> = photos.iter().collect();
    let gallery = scorer.embed_images(&image_vectors(&all)?)?;

    let mut results = serde_json::Map::new();
    for batch in [1usize, 8] {
        // Warm-up, then timed.
        for timed in [false, true] {
            let n = if timed { a.requests } else { batch * 2 };
            let start = Instant::now();
            for i in (0..n).step_by(batch) {
                let imgs: Vec<&Vec<u8>> = (i..i + batch).map(|j| &photos[j % photos.len()]).collect();
                let texts: Vec<&str> = (i..i + batch).map(|j| queries[(j * 7 + 3) % queries.len()].as_str()).collect();
                let iv = image_vectors(&imgs)?;
                let tv = text.encode(&texts)?;
                let s = scorer.score(&iv, &tv)?;
                assert_eq!(s.size()[0], batch as i64);
            }
            if timed {
                let secs = start.elapsed().as_secs_f64();
                results.insert(format!("score_batch{batch}"), serde_json::json!({
                    "pairs_per_s": n as f64 / secs, "ms_per_call": secs * 1000.0 / n as f64 * batch as f64,
                }));
            }
        }
        for timed in [false, true] {
            let n = if timed { a.requests } else { batch * 2 };
            let start = Instant::now();
            for i in (0..n).step_by(batch) {
                let texts: Vec<&str> = (i..i + batch).map(|j| queries[j % queries.len()].as_str()).collect();
                let te = scorer.embed_texts(&text.encode(&texts)?)?;
                let (_, idx) = scorer.rank(&te, &gallery, 5);
                assert_eq!(idx.size(), [batch as i64, 5]);
            }
            if timed {
                let secs = start.elapsed().as_secs_f64();
                results.insert(format!("search_batch{batch}"), serde_json::json!({
                    "searches_per_s": n as f64 / secs, "ms_per_call": secs * 1000.0 / n as f64 * batch as f64,
                }));
            }
        }
    }
    results.insert(
        "stages_ms".into(),
        serde_json::json!({"decode": decode_ms, "resize": resize_ms, "image_encoder": image_ms, "text_encoder": text_ms, "text_encoder_on_a_thread": text_thread_ms}),
    );
    results.insert("image_views".into(), format!("{:?}", a.image_views).to_lowercase().into());
    results.insert("encoder_files".into(), format!("{:?}", a.encoder_files).to_lowercase().into());
    results.insert("torch_threads".into(), tch::get_num_threads().into());
    results.insert("version".into(), version.into());
    results.insert("device".into(), imagesearch_model::device::device_name(device).into());
    results.insert("text_encoder_device".into(), imagesearch_model::device::device_name(text.device()).into());
    results.insert("gallery_photos".into(), photos.len().into());
    println!("{}", serde_json::to_string_pretty(&serde_json::Value::Object(results))?);
    Ok(())
}
