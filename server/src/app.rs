//! What the server does for each call, apart from the wire: the models, the gallery, the law.
//! Handlers in [`crate::service`] convert messages and call these methods.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use imagesearch_compliance::{describes_child, quote, RegionPolicy, DISCLAIMER};
use imagesearch_proto::v1 as pb;

use crate::config::Config;
use crate::decode::Admission;
use crate::encoders::{Encoders, Timings};
use crate::error::ServeError;
use crate::gallery::{PhotoMeta, PhotoStore};
use crate::index::{ScorerJob, ScorerOutput};
use crate::metrics as m;
use crate::versions::{LoadedVersion, Versions};

/// Longest piece of a caller's text (an id, a query) quoted back in a message or a log line.
pub const QUOTE_CHARS: usize = 64;

/// The server's state.
pub struct App {
    pub cfg: Config,
    pub device: String,
    pub encoders: Encoders,
    pub versions: Versions,
    pub store: Arc<dyn PhotoStore>,
    pub policy: RegionPolicy,
    /// Serialises gallery writes and version loads, so every index sees every photo.
    pub gallery_write: tokio::sync::Mutex<()>,
    ready: AtomicBool,
}

/// A finished call: its answer, the version that served and the time spent in models.
pub struct Served<T> {
    pub value: T,
    pub version: u32,
    pub timings: Timings,
}

/// Where a request comes from, checked.
struct Region {
    restricted: bool,
    code: String,
}

impl App {
    pub fn new(cfg: Config, device: String, encoders: Encoders, versions: Versions, store: Arc<dyn PhotoStore>, policy: RegionPolicy) -> Self {
        App { cfg, device, encoders, versions, store, policy, gallery_write: tokio::sync::Mutex::new(()), ready: AtomicBool::new(false) }
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

    fn region(&self, routing: &Option<pb::Routing>) -> Result<Region, ServeError> {
        let code = routing.as_ref().map(|r| r.region.trim().to_string()).unwrap_or_default();
        let restricted = self.policy.is_restricted(Some(code.as_str()))?;
        Ok(Region { restricted, code })
    }

    fn resolve(&self, routing: &Option<pb::Routing>) -> Result<Arc<LoadedVersion>, ServeError> {
        let (pin, key) = routing.as_ref().map_or((0, ""), |r| (r.version, r.routing_key.as_str()));
        self.versions.resolve(pin, key)
    }

    /// Scores pairs.
    pub async fn score(&self, req: pb::ScoreRequest, deadline: Option<Instant>) -> Result<Served<pb::ScoreResponse>, ServeError> {
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
        let images = self.checked_images(req.pairs.into_iter().map(|p| p.image).collect())?;
        let mut timings = Timings::default();
        // Photos and texts are encoded at the same time, each through its own batcher.
        let images = futures::future::try_join_all(images.into_iter().enumerate().map(|(i, image)| async move {
            let mut t = Timings::default();
            let v = self.image_of(image, i, deadline, &mut t).await?;
            Ok::<_, ServeError>((v, t))
        }));
        let texts = futures::future::try_join_all(texts.iter().map(|text| async move {
            let mut t = Timings::default();
            let v = self.encoders.text_vector(text, deadline, &mut t).await?;
            Ok::<_, ServeError>((v, t))
        }));
        let (images, texts) = tokio::try_join!(images, texts)?;
        // Encoders run in parallel: a request waited as long as its slowest.
        let slowest = images.iter().chain(texts.iter()).map(|(_, t)| *t).max_by_key(|t| t.queue + t.inference);
        timings.merge(slowest.unwrap_or_default());
        let job = ScorerJob::Pairs {
            images: images.into_iter().map(|(v, _)| v).collect(),
            texts: texts.into_iter().map(|(v, _)| v).collect(),
        };
        let out = version.worker.submit(job, deadline).await?;
        timings.add(&out);
        let ScorerOutput::Scores(scores) = out.value else {
            return Err(ServeError::Internal("scorer answered a pair job with something else".into()));
        };
        Ok(Served { value: pb::ScoreResponse { scores, version: version.version }, version: version.version, timings })
    }

    /// The request's images, each checked before any is decoded: a gallery id must exist, photo
    /// bytes must have a readable header, and the pixels still to decode (photos not cached)
    /// must fit the request's pixel budget.
    fn checked_images(&self, images: Vec<Option<pb::Image>>) -> Result<Vec<ImageInput>, ServeError> {
        let mut pixels = 0u64;
        let mut out = Vec::with_capacity(images.len());
        for (i, image) in images.into_iter().enumerate() {
            let input = match image.and_then(|im| im.source) {
                Some(pb::image::Source::Data(bytes)) => {
                    let key = imagesearch_model::hashing::sha256(&bytes);
                    if !self.encoders.has_image(&key) {
                        pixels += self.encoders.pixels(&bytes, i)?;
                    }
                    ImageInput::Bytes(Arc::new(bytes), key)
                }
                Some(pb::image::Source::GalleryId(id)) => {
                    let photo = self.store.get(&id).ok_or_else(|| {
                        ServeError::NotFound(format!("pair {i}: gallery photo '{}' does not exist", quote(&id, QUOTE_CHARS)))
                    })?;
                    ImageInput::Vector(photo.vector)
                }
                None => return Err(ServeError::InvalidArgument(format!("pair {i}: no image (send bytes or a gallery_id)"))),
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

    fn withheld() -> pb::Withheld {
        pb::Withheld { disclaimer: DISCLAIMER.to_string() }
    }

    /// A photo as the requester may see it: the photo (its bytes read on the blocking pool, if
    /// they fit in `budget` bytes, which they then use up), or the disclaimer in its place.
    async fn show(&self, meta: &PhotoMeta, restricted_region: bool, budget: Option<&mut usize>) -> Result<ShowOrWithhold, ServeError> {
        if restricted_region && meta.flag.restricted() {
            metrics::counter!(m::WITHHELD, "what" => "photo").increment(1);
            return Ok(ShowOrWithhold::Withheld(Self::withheld()));
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
        Ok(ShowOrWithhold::Photo(pb::Photo {
            id: meta.id.to_string(),
            reference: format!("gallery:{}", meta.id),
            data,
            mime_type: meta.mime.clone(),
            restricted: meta.flag.restricted(),
        }))
    }

    /// Searches the gallery.
    pub async fn search(&self, req: pb::SearchRequest, deadline: Option<Instant>) -> Result<Served<pb::SearchResponse>, ServeError> {
        self.check_ready()?;
        let query = self.encoders.check_text("query", &req.query)?;
        if req.k == 0 || req.k as usize > self.cfg.max_k {
            return Err(ServeError::InvalidArgument(format!("k is {}, it must be 1..={}", req.k, self.cfg.max_k)));
        }
        let region = self.region(&req.routing)?;
        let version = self.resolve(&req.routing)?;
        let gallery_size = self.store.len() as u64;
        if let Some(hit) = describes_child(&query).filter(|_| region.restricted) {
            metrics::counter!(m::WITHHELD, "what" => "query").increment(1);
            tracing::info!(region = %region.code, rule = %hit, "query withheld");
            return Ok(Served {
                value: pb::SearchResponse {
                    hits: vec![],
                    version: version.version,
                    query_withheld: Some(Self::withheld()),
                    gallery_size,
                    photos_without_bytes: 0,
                },
                version: version.version,
                timings: Timings::default(),
            });
        }
        let mut timings = Timings::default();
        let text = self.encoders.text_vector(&query, deadline, &mut timings).await?;
        let out = version.worker.submit(ScorerJob::Search { text, k: req.k as usize }, deadline).await?;
        timings.add(&out);
        let ScorerOutput::Hits(found) = out.value else {
            return Err(ServeError::Internal("scorer answered a search with something else".into()));
        };
        let mut hits = Vec::with_capacity(found.len());
        // The answer must fit in a message: photo bytes up to the budget, references after it.
        let mut budget = self.cfg.answer_photo_budget();
        let mut without_bytes = 0;
        for (id, score) in found {
            // A photo removed since the search ran is left out.
            let Some(meta) = self.store.get(&id) else { continue };
            let content = match self.show(&meta, region.restricted, req.include_photos.then_some(&mut budget)).await? {
                ShowOrWithhold::Photo(p) => {
                    if req.include_photos && p.data.is_empty() {
                        without_bytes += 1;
                    }
                    pb::search_hit::Content::Photo(p)
                }
                ShowOrWithhold::Withheld(w) => pb::search_hit::Content::Withheld(w),
            };
            hits.push(pb::SearchHit { rank: hits.len() as u32 + 1, score, content: Some(content) });
        }
        if without_bytes > 0 {
            metrics::counter!(m::PHOTOS_WITHOUT_BYTES).increment(u64::from(without_bytes));
        }
        Ok(Served {
            value: pb::SearchResponse { hits, version: version.version, query_withheld: None, gallery_size, photos_without_bytes: without_bytes },
            version: version.version,
            timings,
        })
    }

    /// One gallery photo, under the law of the requester's region.
    pub async fn get_photo(&self, req: pb::GetPhotoRequest) -> Result<pb::GetPhotoResponse, ServeError> {
        let region = self.region(&req.routing)?;
        let meta = self
            .store
            .get(&req.id)
            .ok_or_else(|| ServeError::NotFound(format!("gallery photo '{}' does not exist", quote(&req.id, QUOTE_CHARS))))?;
        let mut budget = usize::MAX;
        let content = match self.show(&meta, region.restricted, Some(&mut budget)).await? {
            ShowOrWithhold::Photo(p) => pb::get_photo_response::Content::Photo(p),
            ShowOrWithhold::Withheld(w) => pb::get_photo_response::Content::Withheld(w),
        };
        Ok(pb::GetPhotoResponse { content: Some(content) })
    }
}

/// An image of a Score pair, checked: bytes (with their sha256) to decode, or a gallery vector.
enum ImageInput {
    Bytes(Arc<Vec<u8>>, [u8; 32]),
    Vector(Arc<Vec<f32>>),
}

enum ShowOrWithhold {
    Photo(pb::Photo),
    Withheld(pb::Withheld),
}
