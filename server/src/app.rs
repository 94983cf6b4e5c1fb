//! What the server does for each call, apart from the wire: the models, the gallery, the law.
//! It takes and gives back the server's own types ([`crate::types`]); handlers in
//! [`crate::service`] convert messages ([`crate::convert`]) and call these methods. Gallery
//! writes are in [`crate::ingest`], model administration in [`crate::admin`].

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use imagesearch_compliance::{describes_child, quote, RegionPolicy};

use crate::admission::{admit_pipeline, holding, CallLimits};
use crate::config::Config;
use crate::decode::Admission;
use crate::encoders::{Encoders, Timings};
use crate::error::ServeError;
use crate::gallery::{PhotoMeta, PhotoStore};
use crate::metrics as m;
use crate::types::{ImageRef, Routing, ScoreQuery, Shown, ShownPhoto};
use crate::versions::{LoadedVersion, Versions};

/// Longest piece of a caller's text (an id, a query) quoted back in a message or a log line.
pub const QUOTE_CHARS: usize = 64;

/// The server's state.
pub struct App {
    pub(crate) cfg: Config,
    pub(crate) device: String,
    pub(crate) encoders: Encoders,
    pub(crate) versions: Versions,
    pub(crate) store: Arc<dyn PhotoStore>,
    pub(crate) policy: RegionPolicy,
    /// Serialises gallery writes and version loads, so every index sees every photo.
    pub(crate) gallery_write: tokio::sync::Mutex<()>,
    /// In-flight limits of Score and Search (the front door's admission).
    pub calls: CallLimits,
    ready: AtomicBool,
}

/// A finished call: its answer, the version that served and the time spent in models.
pub struct Served<T> {
    pub value: T,
    pub version: u32,
    pub timings: Timings,
}

/// Where a request comes from, checked.
pub(crate) struct Region {
    pub restricted: bool,
    pub code: String,
}

impl App {
    pub fn new(cfg: Config, device: String, encoders: Encoders, versions: Versions, store: Arc<dyn PhotoStore>) -> Self {
        let policy = cfg.restricted_regions.clone();
        let calls = CallLimits::new(cfg.max_concurrent_requests);
        App { cfg, device, encoders, versions, store, policy, gallery_write: tokio::sync::Mutex::new(()), calls, ready: AtomicBool::new(false) }
    }

    /// The settings the server runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The device the scorers run on ("cpu", "cuda:0").
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Photos in the gallery.
    pub fn gallery_len(&self) -> usize {
        self.store.len()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub(crate) fn check_ready(&self) -> Result<(), ServeError> {
        if self.is_ready() {
            Ok(())
        } else {
            Err(ServeError::Unavailable("the server is starting or stopping: models are not warm".into()))
        }
    }

    pub(crate) fn region(&self, routing: &Routing) -> Result<Region, ServeError> {
        let code = routing.region.trim().to_string();
        let restricted = self.policy.is_restricted(Some(code.as_str()))?;
        Ok(Region { restricted, code })
    }

    pub(crate) fn resolve(&self, routing: &Routing) -> Result<Arc<LoadedVersion>, ServeError> {
        self.versions.resolve(routing.version, &routing.routing_key)
    }

    /// Scores pairs: one calibrated score in [0, 1] per pair.
    pub async fn score(&self, req: ScoreQuery, deadline: Option<Instant>) -> Result<Served<Vec<f32>>, ServeError> {
        self.check_ready()?;
        let n = req.pairs.len();
        if n == 0 {
            return Err(ServeError::InvalidArgument("no pairs: send at least one image/text pair".into()));
        }
        if n > self.cfg.max_pairs_per_request {
            return Err(ServeError::InvalidArgument(format!(
                "{n} pairs, more than the limit of {} per request; split the request",
                self.cfg.max_pairs_per_request
            )));
        }
        let region = self.region(&req.routing)?;
        // The law judges, and the model reads, the same normalised text.
        let mut texts = Vec::with_capacity(n);
        for (i, p) in req.pairs.iter().enumerate() {
            let text = self.encoders.check_text(&format!("pair {i}: text"), &p.text)?;
            if region.restricted {
                if let Some(hit) = describes_child(&text) {
                    metrics::counter!(m::WITHHELD, "what" => "score").increment(1);
                    return Err(ServeError::Refused(format!(
                        "pair {i}: the text describes a child ({hit}), which may not be scored in region '{}' \
                         (restricted, or no region given) in compliance with local laws",
                        region.code
                    )));
                }
            }
            texts.push(text);
        }
        let version = self.resolve(&req.routing)?;
        // The law's checks read the texts as sent; the model reads them through the word map
        // where the law lets them through.
        let model_texts: Vec<Cow<'_, str>> = texts.iter().map(|t| model_text(&version, region.restricted, t)).collect();
        let images = self.checked_images(req.pairs.into_iter().map(|p| p.image).collect())?;
        // Admitted once over every queue the request passes, before any of its work starts.
        let to_encode = images.iter().filter(|i| matches!(i, ImageInput::Bytes(..))).count();
        let mut admitted = admit_pipeline(
            &[(self.encoders.image_queue(), to_encode), (self.encoders.text_queue(), n)],
            &[(version.worker.queue(), 1)],
            deadline,
        )?;
        let mut timings = Timings::default();
        // Photos and texts are encoded at the same time, each through its own batcher; each
        // encoder's reservation ends when the request's items are through it.
        let images = holding(
            admitted.take(self.encoders.image_queue()),
            futures::future::try_join_all(images.into_iter().enumerate().map(|(i, image)| async move {
                let mut t = Timings::default();
                let v = self.image_of(image, i, deadline, &mut t).await?;
                Ok::<_, ServeError>((v, t))
            })),
        );
        let texts = holding(
            admitted.take(self.encoders.text_queue()),
            futures::future::try_join_all(model_texts.iter().map(|text| async move {
                let mut t = Timings::default();
                let v = self.encoders.text_vector(text, deadline, &mut t).await?;
                Ok::<_, ServeError>((v, t))
            })),
        );
        let (images, texts) = tokio::try_join!(images, texts)?;
        // Encoders run in parallel: a request waited as long as its slowest.
        let slowest = images.iter().chain(texts.iter()).map(|(_, t)| *t).max_by_key(|t| t.queue + t.inference);
        timings.merge(slowest.unwrap_or_default());
        let images = images.into_iter().map(|(v, _)| v).collect();
        let texts: Vec<_> = texts.into_iter().map(|(v, _)| v).collect();
        if region.restricted {
            if let Some(i) = texts.iter().position(|v| flags_child_text(&version, v)) {
                metrics::counter!(m::WITHHELD, "what" => "score").increment(1);
                return Err(ServeError::Refused(format!(
                    "pair {i}: the text describes a child (scorer version {}'s query detector), which may not be scored \
                     in region '{}' (restricted, or no region given) in compliance with local laws",
                    version.version, region.code
                )));
            }
        }
        let out = version.worker.score(images, texts, deadline).await?;
        timings.add(&out);
        Ok(Served { value: out.value, version: version.version, timings })
    }

    /// The request's images, each checked before any is decoded: a gallery id must exist, photo
    /// bytes must have a readable header, and the pixels still to decode (photos not cached)
    /// must fit the request's pixel budget.
    fn checked_images(&self, images: Vec<ImageRef>) -> Result<Vec<ImageInput>, ServeError> {
        let mut pixels = 0u64;
        let mut out = Vec::with_capacity(images.len());
        for (i, image) in images.into_iter().enumerate() {
            let input = match image {
                ImageRef::Bytes(bytes) => {
                    let key = imagesearch_model::hashing::sha256(&bytes);
                    if !self.encoders.has_image(&key) {
                        pixels += self.encoders.pixels(&bytes, i)?;
                    }
                    ImageInput::Bytes(Arc::new(bytes), key)
                }
                ImageRef::Gallery(id) => {
                    let photo = self.store.get(&id).ok_or_else(|| {
                        ServeError::NotFound(format!("pair {i}: gallery photo '{}' does not exist", quote(&id, QUOTE_CHARS)))
                    })?;
                    ImageInput::Vector(photo.vector)
                }
            };
            out.push(input);
        }
        if pixels > self.cfg.max_request_pixels {
            return Err(ServeError::InvalidArgument(format!(
                "the request's images hold {pixels} pixels to decode, more than the limit of {} per request \
                 (--max-request-pixels); send fewer or smaller images per request",
                self.cfg.max_request_pixels
            )));
        }
        Ok(out)
    }

    async fn image_of(&self, image: ImageInput, i: usize, deadline: Option<Instant>, t: &mut Timings) -> Result<Arc<Vec<f32>>, ServeError> {
        match image {
            ImageInput::Bytes(bytes, key) => self.encoders.image_vector(bytes, key, i, deadline, t, Admission::Shed).await,
            ImageInput::Vector(v) => Ok(v),
        }
    }

    /// A photo as the requester may see it: the photo (its bytes read on the blocking pool, if
    /// they fit in `budget` bytes, which they then use up), or the disclaimer in its place.
    pub(crate) async fn show(&self, meta: &PhotoMeta, restricted_region: bool, budget: Option<&mut usize>) -> Result<Shown, ServeError> {
        if restricted_region && meta.flag.restricted() {
            metrics::counter!(m::WITHHELD, "what" => "photo").increment(1);
            return Ok(Shown::Withheld);
        }
        let mut data = Vec::new();
        if let Some(budget) = budget.filter(|b| **b > 0) {
            let (store, id) = (self.store.clone(), meta.id.clone());
            let bytes = tokio::task::spawn_blocking(move || store.photo_bytes(&id))
                .await
                .map_err(|e| ServeError::Internal(e.to_string()))??
                .unwrap_or_default();
            if bytes.len() <= *budget {
                *budget -= bytes.len();
                data = bytes;
            } else {
                *budget = 0;
            }
        }
        Ok(Shown::Photo(ShownPhoto { id: meta.id.to_string(), data, mime_type: meta.mime.clone(), restricted: meta.flag.restricted() }))
    }

    /// One gallery photo, under the law of the requester's region.
    pub async fn get_photo(&self, id: &str, routing: &Routing) -> Result<Shown, ServeError> {
        let region = self.region(routing)?;
        let meta = self
            .store
            .get(id)
            .ok_or_else(|| ServeError::NotFound(format!("gallery photo '{}' does not exist", quote(id, QUOTE_CHARS))))?;
        let mut budget = usize::MAX;
        self.show(&meta, region.restricted, Some(&mut budget)).await
    }
}

/// An image of a Score pair, checked: bytes (with their sha256) to decode, or a gallery vector.
enum ImageInput {
    Bytes(Arc<Vec<u8>>, [u8; 32]),
    Vector(Arc<Vec<f32>>),
}

/// Whether `version`'s query detector says the text with this text-encoder vector describes a
/// child (false when the version ships none: the word list then judges alone).
pub(crate) fn flags_child_text(version: &LoadedVersion, text_vector: &[f32]) -> bool {
    version.query_detector.as_ref().is_some_and(|d| d.flags(text_vector))
}

/// The text the model reads for a (normalised) query text: where the law does not withhold it
/// and the version has a word map, through the map (child words the scorer never trained on
/// read as adult ones); else the text itself.
pub(crate) fn model_text<'a>(version: &LoadedVersion, restricted: bool, text: &'a str) -> Cow<'a, str> {
    match version.word_map {
        Some(map) if !restricted => map.apply(text),
        _ => Cow::Borrowed(text),
    }
}
