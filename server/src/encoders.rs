//! The two encoders behind their batchers, with the caches in front: photo bytes → image
//! vector (the mean of its views' encoder vectors: the photo alone for Score, the photo and its
//! mirror image, as in training, for gallery photos, indexed once; decoded in the bounded
//! [`DecodePool`]) and text → text vector (of the normalised text the law judged).

use std::sync::Arc;
use std::time::{Duration, Instant};

use imagesearch_model::preprocess::decode;
use imagesearch_model::tokenize::validate_text;
use imagesearch_model::{EncoderManifest, ImageEncoder, ImageLimits, ImageViews, TextEncoder};
use tch::Tensor;

use crate::admission::Queue;
use crate::batcher::{BatchConfig, BatchWorker, Batcher, Timed};
use crate::cache::VectorCache;
use crate::decode::{Admission, DecodePool};
use crate::error::ServeError;

/// Time spent waiting in queues and in forward passes, summed over the models a request used.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    pub queue: Duration,
    pub inference: Duration,
}

impl Timings {
    pub fn add<O>(&mut self, t: &Timed<O>) {
        self.queue += t.queue;
        self.inference += t.inference;
    }

    pub fn merge(&mut self, other: Timings) {
        self.queue += other.queue;
        self.inference += other.inference;
    }
}

/// A decoded photo as the image encoder takes it: one CHW tensor per view.
pub struct PhotoViews(Vec<Vec<f32>>, ImageViews);

/// The encoder inputs of a decoded photo: one CHW tensor per view.
fn view_inputs(img: &image::RgbImage, (w, h): (u32, u32), views: ImageViews) -> Vec<Vec<f32>> {
    views.inputs(img, w, h)
}

fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>, ServeError> {
    let n = t.size()[0];
    (0..n).map(|i| Vec::<f32>::try_from(t.get(i)).map_err(|e| ServeError::Internal(e.to_string()))).collect()
}

struct ImageWorker(ImageEncoder);

impl BatchWorker for ImageWorker {
    /// The views of a photo (one for Score, two for a gallery photo by default), each CHW f32;
    /// photos with different numbers of views share one pass.
    type Input = Vec<Vec<f32>>;
    type Output = Vec<f32>;
    fn run(&mut self, inputs: Vec<Vec<Vec<f32>>>) -> Result<Vec<Result<Vec<f32>, ServeError>>, ServeError> {
        let views: Vec<&[f32]> = inputs.iter().flat_map(|v| v.iter().map(Vec::as_slice)).collect();
        let encoded = rows(&self.0.encode(&views)?)?;
        let mut at = 0;
        Ok(inputs
            .iter()
            .map(|photo| {
                let mine: Vec<&[f32]> = encoded[at..at + photo.len()].iter().map(Vec::as_slice).collect();
                at += photo.len();
                Ok(imagesearch_model::views::photo_vector(&mine))
            })
            .collect())
    }
}

struct TextWorker(TextEncoder);

impl BatchWorker for TextWorker {
    type Input = String;
    type Output = Vec<f32>;
    fn run(&mut self, inputs: Vec<String>) -> Result<Vec<Result<Vec<f32>, ServeError>>, ServeError> {
        let texts: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let out = self.0.encode(&texts)?;
        Ok(rows(&out)?.into_iter().map(Ok).collect())
    }
    fn weight(&self, input: &String) -> usize {
        self.0.tokenizer().token_count(input)
    }
}

/// The image and text encoders of the server, shared by every scorer version.
pub struct Encoders {
    image: Batcher<Vec<Vec<f32>>, Vec<f32>>,
    views: ImageViews,
    index_views: ImageViews,
    text: Batcher<String, Vec<f32>>,
    image_cache: VectorCache<([u8; 32], ImageViews)>,
    text_cache: VectorCache<String>,
    decode: DecodePool,
    pub image_manifest: EncoderManifest,
    pub text_manifest: EncoderManifest,
    pub limits: ImageLimits,
    pub max_text_chars: usize,
    input_size: (u32, u32),
    /// Where the text encoder runs ("cpu" when it could not run on the server's device).
    pub text_device: String,
}

/// Batching, sizes of the caches and limits on inputs.
pub struct EncoderSettings {
    pub image_batch: BatchConfig,
    pub text_batch: BatchConfig,
    pub limits: ImageLimits,
    pub max_text_chars: usize,
    pub image_cache: usize,
    pub text_cache: usize,
    /// Views of a photo sent to Score.
    pub views: ImageViews,
    /// Views of a photo added to the gallery (paid once per photo).
    pub index_views: ImageViews,
    pub decode_workers: usize,
    pub decode_queue: usize,
}

impl Encoders {
    /// Starts the encoders' batchers, one thread per loaded copy of each encoder (the copies
    /// move onto their threads).
    pub fn start(images: Vec<ImageEncoder>, texts: Vec<TextEncoder>, s: EncoderSettings) -> Self {
        let (Some(image), Some(text)) = (images.first(), texts.first()) else {
            panic!("Encoders::start needs at least one copy of each encoder");
        };
        let image_manifest = image.manifest.clone();
        let text_manifest = text.manifest.clone();
        let input_size = image.input_size();
        let text_device = imagesearch_model::device::device_name(text.device());
        let images = images.into_iter().map(ImageWorker).collect();
        let texts = texts.into_iter().map(TextWorker).collect();
        Encoders {
            text_device,
            image: Batcher::spawn_instances("image_encoder", image_manifest.name.clone(), s.image_batch, images),
            text: Batcher::spawn_instances("text_encoder", text_manifest.name.clone(), s.text_batch, texts),
            image_cache: VectorCache::new("image", s.image_cache),
            text_cache: VectorCache::new("text", s.text_cache),
            decode: DecodePool::new(s.decode_workers, s.decode_queue),
            views: s.views,
            index_views: s.index_views,
            image_manifest,
            text_manifest,
            limits: s.limits,
            max_text_chars: s.max_text_chars,
            input_size,
        }
    }

    /// Checks a text against the limits (empty, too long, nothing but invisible characters) and
    /// returns the text the model will read (normalised; the law judges the same string).
    pub fn check_text(&self, what: &str, text: &str) -> Result<String, ServeError> {
        validate_text(text, self.max_text_chars).map_err(|source| ServeError::BadText { what: what.to_string(), source })
    }

    /// Whether a Score photo's vector is cached (no decode needed).
    pub fn has_image(&self, key: &[u8; 32]) -> bool {
        self.image_cache.contains(&(*key, self.views))
    }

    /// A gallery photo's cached vector (of the index views), if any.
    pub fn cached_index_vector(&self, key: &[u8; 32]) -> Option<Arc<Vec<f32>>> {
        self.image_cache.get(&(*key, self.index_views))
    }

    /// Width × height a photo claims, from its header (nothing decoded).
    pub fn pixels(&self, bytes: &[u8], index: usize) -> Result<u64, ServeError> {
        let (w, h) = imagesearch_model::preprocess::dimensions(bytes, self.limits).map_err(|source| ServeError::BadImage { index, source })?;
        Ok(u64::from(w) * u64::from(h))
    }

    /// Decodes run at once.
    pub fn decode_workers(&self) -> usize {
        self.decode.workers()
    }

    /// The image vector of a photo (`key` = sha256 of its bytes): from the cache, or decoded in
    /// the decode pool and encoded. `Admission::Wait` waits for room in both queues instead of
    /// shedding.
    pub async fn image_vector(
        &self,
        bytes: Arc<Vec<u8>>,
        key: [u8; 32],
        index: usize,
        deadline: Option<Instant>,
        timings: &mut Timings,
        admission: Admission,
    ) -> Result<Arc<Vec<f32>>, ServeError> {
        if let Some(v) = self.image_cache.get(&(key, self.views)) {
            return Ok(v);
        }
        let views = self.decode(bytes, index, admission, self.views).await?;
        self.encode_views(views, key, deadline, timings, admission).await
    }

    /// Decodes a gallery photo in the decode pool into the encoder's inputs (one small tensor
    /// per index view); the photo's full-size pixels are dropped once this returns.
    pub async fn decode_for_index(&self, bytes: Arc<Vec<u8>>, index: usize, admission: Admission) -> Result<PhotoViews, ServeError> {
        self.decode(bytes, index, admission, self.index_views).await
    }

    async fn decode(&self, bytes: Arc<Vec<u8>>, index: usize, admission: Admission, views: ImageViews) -> Result<PhotoViews, ServeError> {
        let (limits, size) = (self.limits, self.input_size);
        let inputs = self
            .decode
            .run(admission, move || -> Result<Vec<Vec<f32>>, ServeError> {
                let img = decode(&bytes, limits).map_err(|source| ServeError::BadImage { index, source })?;
                Ok(view_inputs(&img, size, views))
            })
            .await??;
        Ok(PhotoViews(inputs, views))
    }

    /// Encodes decoded views into the photo's vector (and caches it under `key` and its views).
    pub async fn encode_views(
        &self,
        views: PhotoViews,
        key: [u8; 32],
        deadline: Option<Instant>,
        timings: &mut Timings,
        admission: Admission,
    ) -> Result<Arc<Vec<f32>>, ServeError> {
        let PhotoViews(input, kind) = views;
        let out = match admission {
            Admission::Shed => self.image.submit(input, deadline).await?,
            Admission::Wait => {
                let image = self.image.clone();
                tokio::task::spawn_blocking(move || image.submit_blocking(input))
                    .await
                    .map_err(|e| ServeError::Internal(e.to_string()))??
            }
        };
        timings.add(&out);
        let v = Arc::new(out.value);
        self.image_cache.insert((key, kind), v.clone());
        Ok(v)
    }

    /// The image encoder's queue, for admission ([`crate::admission::admit_pipeline`]).
    pub fn image_queue(&self) -> &dyn Queue {
        &self.image
    }

    /// The text encoder's queue, for admission.
    pub fn text_queue(&self) -> &dyn Queue {
        &self.text
    }

    /// The text vector of a checked, normalised text ([`Encoders::check_text`]).
    pub async fn text_vector(
        &self,
        text: &str,
        deadline: Option<Instant>,
        timings: &mut Timings,
    ) -> Result<Arc<Vec<f32>>, ServeError> {
        if let Some(v) = self.text_cache.get(&text.to_string()) {
            return Ok(v);
        }
        let out = self.text.submit(text.to_string(), deadline).await?;
        timings.add(&out);
        let v = Arc::new(out.value);
        self.text_cache.insert(text.to_string(), v.clone());
        Ok(v)
    }

    /// The text vector of a checked, normalised gallery caption: as [`Encoders::text_vector`],
    /// but waiting for room in the queue instead of shedding (gallery adds).
    pub async fn caption_vector(&self, text: &str) -> Result<Arc<Vec<f32>>, ServeError> {
        if let Some(v) = self.text_cache.get(&text.to_string()) {
            return Ok(v);
        }
        let (encoder, input) = (self.text.clone(), text.to_string());
        let out = tokio::task::spawn_blocking(move || encoder.submit_blocking(input))
            .await
            .map_err(|e| ServeError::Internal(e.to_string()))??;
        let v = Arc::new(out.value);
        self.text_cache.insert(text.to_string(), v.clone());
        Ok(v)
    }

    /// Runs a real forward pass through both encoders (a generated photo and a text), so the
    /// first request does not pay for libtorch's lazy initialisation.
    pub fn warm_up(&self) -> Result<(), ServeError> {
        let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 128]));
        let mut png = std::io::Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png).map_err(|e| ServeError::Internal(e.to_string()))?;
        let decoded = decode(png.get_ref(), self.limits).map_err(|source| ServeError::BadImage { index: 0, source })?;
        self.image.submit_blocking(view_inputs(&decoded, self.input_size, self.views))?;
        if self.index_views != self.views {
            self.image.submit_blocking(view_inputs(&decoded, self.input_size, self.index_views))?;
        }
        self.text.submit_blocking("a photo used to warm up the text encoder".to_string())?;
        Ok(())
    }

    /// The views a Score photo's vector is made of.
    pub fn views(&self) -> ImageViews {
        self.views
    }

    /// The views a gallery photo's vector is made of.
    pub fn index_views(&self) -> ImageViews {
        self.index_views
    }

    /// Items waiting in the encoders' queues.
    pub fn queue_depths(&self) -> (usize, usize) {
        (self.image.depth(), self.text.depth())
    }

    /// Most photos per image-encoder pass.
    pub fn image_batch_size(&self) -> usize {
        self.image.max_batch_size()
    }

    /// Copies of the image and the text encoder serving their queues.
    pub fn instances(&self) -> (usize, usize) {
        (self.image.instances(), self.text.instances())
    }
}
