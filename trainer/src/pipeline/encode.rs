//! Encoder vectors for the jobs: the two TorchScript encoders with their vector caches, timed
//! encoding passes (the manifest's `photo_encoding` and `text_encoding`), and the training
//! job's step that encodes every photo and text it needs.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use imagesearch_model::{EncoderFile, ImageEncoder, ImageViews, TextEncoder, WordMap};

use super::select::Selection;
use super::{CommonConfig, PipelineError, ProblemGate};
use crate::dataset::{DataPaths, Dataset};
use crate::tables::Problem;
use crate::vectors::{self, PhotoVectors, VectorCache, VectorError};

/// The image and text encoders of a run, each with its vector cache.
pub(super) struct Encoders {
    pub image: ImageEncoder,
    pub text: TextEncoder,
    pub image_cache: VectorCache,
    pub text_cache: VectorCache,
}

impl Encoders {
    /// Loads the configured encoders (their reference files: the vectors versions train on)
    /// and opens their caches.
    pub fn load(c: &CommonConfig) -> Result<Self, PipelineError> {
        Self::load_files(c, EncoderFile::Reference)
    }

    /// Loads `which` file of each encoder; each cache is keyed by the file loaded, so vectors of
    /// a serving variant never mix with the reference's.
    pub fn load_files(c: &CommonConfig, which: EncoderFile) -> Result<Self, PipelineError> {
        let image = ImageEncoder::load_file(&c.encoders.join(&c.image_encoder), c.device, which)?;
        let text = TextEncoder::load_file(&c.encoders.join(&c.text_encoder), c.device, which)?;
        let cache = |m: &imagesearch_model::EncoderManifest| VectorCache::open(&c.cache_dir, m.sha256_of(which, c.device), m.output_dim as usize);
        let (image_cache, text_cache) = (cache(&image.manifest)?, cache(&text.manifest)?);
        Ok(Encoders { image, text, image_cache, text_cache })
    }
}

/// Throughput of one encoding pass (`per_second` is None when everything came from the cache).
#[derive(serde::Serialize, Clone, Debug)]
pub struct Pass {
    /// Photos or distinct texts that had to be encoded.
    pub encoded: usize,
    pub seconds: f64,
    pub per_second: Option<f64>,
}

impl Pass {
    /// Two passes as one.
    pub fn sum(a: &Pass, b: &Pass) -> Pass {
        let (encoded, seconds) = (a.encoded + b.encoded, a.seconds + b.seconds);
        Pass { encoded, seconds, per_second: (encoded > 0).then(|| encoded as f64 / seconds) }
    }
}

fn timed<T>(f: impl FnOnce() -> Result<(T, usize), VectorError>) -> Result<(T, Pass), PipelineError> {
    let t = Instant::now();
    let (out, encoded) = f()?;
    let seconds = t.elapsed().as_secs_f64();
    let per_second = (encoded > 0).then(|| encoded as f64 / seconds);
    Ok((out, Pass { encoded, seconds, per_second }))
}

/// The `views` of each photo, by name; photos that cannot be read or decoded become problems.
pub(super) fn encode_photos(
    enc: &mut Encoders,
    c: &CommonConfig,
    photos: &[(String, PathBuf)],
    views: ImageViews,
    problems: &mut Vec<Problem>,
) -> Result<(HashMap<String, PhotoVectors>, Pass), PipelineError> {
    timed(|| vectors::encode_photos(&enc.image, &mut enc.image_cache, photos, views, c.image_batch, problems))
}

/// The vector of each text.
pub(super) fn encode_texts(
    enc: &mut Encoders,
    c: &CommonConfig,
    texts: &[String],
) -> Result<(HashMap<String, Vec<f32>>, Pass), PipelineError> {
    timed(|| vectors::encode_texts(&enc.text, &mut enc.text_cache, texts, c.text_batch))
}

/// Leaves out test photos that could not be encoded (skipped bad photos) and their queries.
pub(super) fn drop_unencoded_test_photos(data: &mut Dataset, photos: &HashMap<String, PhotoVectors>) {
    data.test_images.retain(|p| photos.contains_key(p));
    data.test_queries.retain(|q| photos.contains_key(&q.image));
}

/// The sha256 of each data file a version is trained from, by file name.
pub(super) fn data_hashes(paths: &DataPaths) -> Result<BTreeMap<String, String>, PipelineError> {
    let mut out = BTreeMap::new();
    for f in paths.files() {
        if f.is_file() {
            let name = f.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            out.insert(name, imagesearch_model::hashing::sha256_file(&f)?);
        }
    }
    Ok(out)
}

/// What the training job's encoding step produced.
pub(super) struct TrainingVectors {
    /// The encoded views of every photo that could be encoded: both whole views of the
    /// captioned training photos, every candidate gallery view of the judged and test photos.
    pub photos: HashMap<String, PhotoVectors>,
    /// Each of those photos' serving vector: the mean of both whole views (as trained) until
    /// [`TrainingVectors::serve_with`] picks the gallery views of the photos that have them.
    pub serving: HashMap<String, Vec<f32>>,
    /// The vector of every caption, judged query and test query.
    pub texts: HashMap<String, Vec<f32>>,
    pub photo_pass: Pass,
    /// The judged and test photos' pass alone (every candidate gallery view of each).
    pub gallery_pass: Pass,
    pub text_pass: Pass,
}

impl TrainingVectors {
    /// Serving vectors made of `views` for the photos that have them (the judged and test
    /// photos, as a gallery indexes them), of both whole views for the rest.
    pub fn serve_with(&mut self, views: ImageViews) {
        self.serving = serving_vectors(&self.photos, views);
    }
}

/// The texts among `texts` that `map` changes, as mapped (to be encoded too).
pub(super) fn mapped_texts<'a>(map: &WordMap, texts: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    texts.into_iter().filter_map(|t| match map.apply(t) {
        Cow::Owned(m) => Some(m),
        Cow::Borrowed(_) => None,
    }).collect()
}

/// The vectors `keys` are served with: each text's own vector, or with a word map (open
/// regions) its mapped text's vector. Keys without an encoded vector are left out.
pub(super) fn served_texts<'a>(
    texts: &HashMap<String, Vec<f32>>,
    map: Option<&WordMap>,
    keys: impl IntoIterator<Item = &'a String>,
) -> HashMap<String, Vec<f32>> {
    keys.into_iter()
        .filter_map(|k| {
            let read = map.map_or(Cow::Borrowed(k.as_str()), |m| m.apply(k));
            Some((k.clone(), texts.get(read.as_ref())?.clone()))
        })
        .collect()
}

/// Each photo's vector made of `views` where it has them, else of both whole views.
pub(super) fn serving_vectors(photos: &HashMap<String, PhotoVectors>, views: ImageViews) -> HashMap<String, Vec<f32>> {
    photos
        .iter()
        .filter_map(|(k, v)| v.serving(views).or_else(|| v.serving(ImageViews::Both)).map(|s| (k.clone(), s)))
        .collect()
}

/// Step: encodes (or finds in the cache) every photo the run needs — the scorer's captioned
/// photos, the child detector's extra ones, the judged and the test photos — and every text:
/// their captions, the judged queries and the test queries. Test photos that cannot be
/// encoded are dropped with their queries (when bad photos are skipped).
pub(super) fn encode_for_training(
    enc: &mut Encoders,
    c: &CommonConfig,
    sel: &Selection,
    gallery_views: ImageViews,
    data: &mut Dataset,
    gate: &mut ProblemGate,
) -> Result<TrainingVectors, PipelineError> {
    let mut photo_list: Vec<(String, PathBuf)> =
        sel.flickr_photos.iter().map(|p| (p.clone(), c.paths.flickr_photo(p))).collect();
    {
        let scorer_side: HashSet<&str> = sel.flickr_photos.iter().map(String::as_str).collect();
        photo_list.extend(
            sel.detector_flickr
                .iter()
                .filter(|p| !scorer_side.contains(p.as_str()))
                .map(|p| (p.clone(), c.paths.flickr_photo(p))),
        );
    }
    let (mut photos, flickr_pass) = encode_photos(enc, c, &photo_list, ImageViews::Both, &mut data.problems)?;
    // The judged and test photos are gallery photos: every view a gallery may index them with.
    let mut gallery_list: Vec<(String, PathBuf)> =
        sel.judged_photos.iter().map(|p| (p.to_string(), c.paths.train_photo(p))).collect();
    gallery_list.extend(data.test_images.iter().map(|p| (p.clone(), c.paths.test_photo(p))));
    let (gallery, gallery_pass) = encode_photos(enc, c, &gallery_list, gallery_views, &mut data.problems)?;
    vectors::merge_photos(&mut photos, gallery);
    gate.check(&data.problems)?;
    drop_unencoded_test_photos(data, &photos);
    let photo_pass = Pass::sum(&flickr_pass, &gallery_pass);

    let (texts, text_pass) = encode_texts(enc, c, &training_texts(sel, data))?;
    let serving = serving_vectors(&photos, ImageViews::Both);
    Ok(TrainingVectors { photos, serving, texts, photo_pass, gallery_pass, text_pass })
}

/// Every text the training job encodes: the captions of the scorer's photos, the judged
/// queries, the photos' own captions, the test queries, the query detector's lists, and the
/// queries as an open region reads them through the word map (a lever).
pub(super) fn training_texts(sel: &Selection, data: &Dataset) -> Vec<String> {
    let mut text_list: Vec<String> =
        sel.flickr_photos.iter().flat_map(|p| data.captions[p].iter().map(|cap| cap.text.clone())).collect();
    text_list.extend(data.judged.iter().map(|p| p.text.clone()));
    text_list.extend(data.own_captions.values().flatten().cloned());
    text_list.extend(data.test_queries.iter().map(|q| q.text.clone()));
    text_list.extend(crate::query_detector::list_texts());
    let queries = data.own_captions.values().flatten().chain(data.judged.iter().map(|p| &p.text));
    let mapped = mapped_texts(WordMap::builtin(), queries.chain(data.test_queries.iter().map(|q| &q.text)));
    text_list.extend(mapped);
    text_list
}

/// Step (after the text encoder was tuned): `name` becomes the run's text encoder, and every
/// training text is encoded again with it.
pub(super) fn switch_text_encoder(
    enc: &mut Encoders,
    c: &CommonConfig,
    name: &str,
    sel: &Selection,
    data: &Dataset,
    v: &mut TrainingVectors,
) -> Result<(), PipelineError> {
    enc.text = TextEncoder::load(&c.encoders.join(name), c.device)?;
    enc.text_cache = VectorCache::open(&c.cache_dir, enc.text.manifest.sha256(), enc.text.manifest.output_dim as usize)?;
    let (texts, pass) = encode_texts(enc, c, &training_texts(sel, data))?;
    v.texts = texts;
    v.text_pass = pass;
    Ok(())
}
