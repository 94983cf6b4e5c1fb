//! What the server does for each call, apart from the wire: the models, the gallery, the law.
//! Handlers in [`crate::service`] convert messages and call these methods.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use imagesearch_compliance::{describes_child, RegionPolicy, DISCLAIMER};
use imagesearch_proto::v1 as pb;

use crate::config::Config;
use crate::encoders::{Encoders, Timings};
use crate::error::ServeError;
use crate::gallery::{NewPhoto, PhotoMeta, PhotoStore};
use crate::index::{ScorerJob, ScorerOutput};
use crate::metrics as m;
use crate::versions::{LoadedVersion, Versions};
use crate::wal::Flag;

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

fn mime_of(bytes: &[u8]) -> &'static str {
    match image::guess_format(bytes) {
        Ok(image::ImageFormat::Png) => "image/png",
        Ok(image::ImageFormat::WebP) => "image/webp",
        _ => "image/jpeg",
    }
}

/// The flag of a photo from its captions, or else from the child detectors of the ready
/// versions (any one flagging wins; none to ask = unverified, which is restricted).
pub fn flag_photo(captions: &[String], vector: &[f32], versions: &[Arc<LoadedVersion>]) -> Flag {
    if !captions.is_empty() {
        return if captions.iter().any(|c| describes_child(c).is_some()) { Flag::Captions } else { Flag::Clear };
    }
    let detectors: Vec<_> = versions.iter().filter_map(|v| v.detector.as_ref()).collect();
    if detectors.is_empty() {
        Flag::Unverified
    } else if detectors.iter().any(|d| d.flags(vector)) {
        Flag::Detector
    } else {
        Flag::Clear
    }
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

    fn check_ready(&self) -> Result<(), ServeError> {
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
        for (i, p) in req.pairs.iter().enumerate() {
            self.encoders.check_text(&format!("pair {i}: text"), &p.text)?;
            if region.restricted {
                if let Some(hit) = describes_child(&p.text) {
                    metrics::counter!(m::WITHHELD, "what" => "score").increment(1);
                    return Err(ServeError::Refused(format!(
                        "pair {i}: the text describes a child ({hit}), which may not be scored in region '{}' \
                         (restricted, or no region given) in compliance with local laws",
                        region.code
                    )));
                }
            }
        }
        let version = self.resolve(&req.routing)?;
        let mut timings = Timings::default();
        // Photos and texts are encoded at the same time, each through its own batcher.
        let images = futures::future::try_join_all(req.pairs.iter().enumerate().map(|(i, p)| {
            let image = p.image.clone();
            async move {
                let mut t = Timings::default();
                let v = self.image_of(image, i, deadline, &mut t).await?;
                Ok::<_, ServeError>((v, t))
            }
        }));
        let texts = futures::future::try_join_all(req.pairs.iter().map(|p| async move {
            let mut t = Timings::default();
            let v = self.encoders.text_vector(&p.text, deadline, &mut t).await?;
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

    async fn image_of(&self, image: Option<pb::Image>, i: usize, deadline: Option<Instant>, t: &mut Timings) -> Result<Arc<Vec<f32>>, ServeError> {
        match image.and_then(|im| im.source) {
            Some(pb::image::Source::Data(bytes)) => self.encoders.image_vector(Arc::new(bytes), i, deadline, t).await,
            Some(pb::image::Source::GalleryId(id)) => self
                .store
                .get(&id)
                .map(|p| p.vector)
                .ok_or_else(|| ServeError::NotFound(format!("pair {i}: gallery photo '{id}' does not exist"))),
            None => Err(ServeError::InvalidArgument(format!("pair {i}: no image (send bytes or a gallery_id)"))),
        }
    }

    fn withheld() -> pb::Withheld {
        pb::Withheld { disclaimer: DISCLAIMER.to_string() }
    }

    /// A photo as the requester may see it: the photo (its bytes read on the blocking pool), or
    /// the disclaimer in its place.
    async fn show(&self, meta: &PhotoMeta, restricted_region: bool, with_bytes: bool) -> Result<ShowOrWithhold, ServeError> {
        if restricted_region && meta.flag.restricted() {
            metrics::counter!(m::WITHHELD, "what" => "photo").increment(1);
            return Ok(ShowOrWithhold::Withheld(Self::withheld()));
        }
        let data = if with_bytes {
            let (store, id) = (self.store.clone(), meta.id.clone());
            tokio::task::spawn_blocking(move || store.photo_bytes(&id))
                .await
                .map_err(|e| ServeError::Internal(e.to_string()))??
                .unwrap_or_default()
        } else {
            Vec::new()
        };
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
        self.encoders.check_text("query", &req.query)?;
        if req.k == 0 || req.k as usize > self.cfg.max_k {
            return Err(ServeError::InvalidArgument(format!("k is {}, it must be 1..={}", req.k, self.cfg.max_k)));
        }
        let region = self.region(&req.routing)?;
        let version = self.resolve(&req.routing)?;
        let gallery_size = self.store.len() as u64;
        if let Some(hit) = describes_child(&req.query).filter(|_| region.restricted) {
            metrics::counter!(m::WITHHELD, "what" => "query").increment(1);
            tracing::info!(region = %region.code, rule = %hit, "query withheld");
            return Ok(Served {
                value: pb::SearchResponse { hits: vec![], version: version.version, query_withheld: Some(Self::withheld()), gallery_size },
                version: version.version,
                timings: Timings::default(),
            });
        }
        let mut timings = Timings::default();
        let text = self.encoders.text_vector(&req.query, deadline, &mut timings).await?;
        let out = version.worker.submit(ScorerJob::Search { text, k: req.k as usize }, deadline).await?;
        timings.add(&out);
        let ScorerOutput::Hits(found) = out.value else {
            return Err(ServeError::Internal("scorer answered a search with something else".into()));
        };
        let mut hits = Vec::with_capacity(found.len());
        for (id, score) in found {
            // A photo removed since the search ran is left out.
            let Some(meta) = self.store.get(&id) else { continue };
            let content = match self.show(&meta, region.restricted, req.include_photos).await? {
                ShowOrWithhold::Photo(p) => pb::search_hit::Content::Photo(p),
                ShowOrWithhold::Withheld(w) => pb::search_hit::Content::Withheld(w),
            };
            hits.push(pb::SearchHit { rank: hits.len() as u32 + 1, score, content: Some(content) });
        }
        Ok(Served {
            value: pb::SearchResponse { hits, version: version.version, query_withheld: None, gallery_size },
            version: version.version,
            timings,
        })
    }

    /// One gallery photo, under the law of the requester's region.
    pub async fn get_photo(&self, req: pb::GetPhotoRequest) -> Result<pb::GetPhotoResponse, ServeError> {
        let region = self.region(&req.routing)?;
        let meta = self.store.get(&req.id).ok_or_else(|| ServeError::NotFound(format!("gallery photo '{}' does not exist", req.id)))?;
        let content = match self.show(&meta, region.restricted, true).await? {
            ShowOrWithhold::Photo(p) => pb::get_photo_response::Content::Photo(p),
            ShowOrWithhold::Withheld(w) => pb::get_photo_response::Content::Withheld(w),
        };
        Ok(pb::GetPhotoResponse { content: Some(content) })
    }

    /// Decodes, checks, encodes, flags and stores photos; answers once they are durable and
    /// every ready version indexes them. Bad photos are rejected one by one with a reason.
    pub async fn add_photos(self: &Arc<Self>, photos: Vec<pb::AddPhotoRequest>) -> Result<pb::AddPhotosResponse, ServeError> {
        self.check_ready()?;
        let mut rejected = Vec::new();
        let mut accepted: Vec<pb::AddPhotoRequest> = Vec::new();
        for p in photos {
            let id_ok = !p.id.trim().is_empty() && p.id.len() <= 256 && !p.id.chars().any(char::is_control);
            if !id_ok {
                rejected.push(pb::RejectedPhoto { id: p.id.clone(), reason: "id must be 1..=256 printable characters".into() });
                continue;
            }
            if let Some(bad) = p.captions.iter().find_map(|c| self.encoders.check_text("caption", c).err()) {
                rejected.push(pb::RejectedPhoto { id: p.id.clone(), reason: bad.to_string() });
                continue;
            }
            accepted.push(p);
        }
        // Encode in parallel so the image batcher sees full batches.
        let mut tasks = tokio::task::JoinSet::new();
        let limit = Arc::new(tokio::sync::Semaphore::new(self.cfg.max_batch_size.max(4)));
        for (i, p) in accepted.into_iter().enumerate() {
            let app = self.clone();
            let permit = limit.clone().acquire_owned().await.map_err(|e| ServeError::Internal(e.to_string()))?;
            tasks.spawn_blocking(move || {
                let _permit = permit;
                let out = app.encoders.image_vector_blocking(&p.data, i);
                (i, p, out)
            });
        }
        let mut encoded = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let (i, p, out) = done.map_err(|e| ServeError::Internal(e.to_string()))?;
            match out {
                Ok((sha, vector)) => encoded.push((i, p, sha, vector)),
                Err(ServeError::BadImage { source, .. }) => rejected.push(pb::RejectedPhoto { id: p.id, reason: source.to_string() }),
                Err(e) => return Err(e),
            }
        }
        encoded.sort_by_key(|(i, ..)| *i);
        let _writer = self.gallery_write.lock().await;
        let ready = self.versions.ready();
        let new: Vec<NewPhoto> = encoded
            .into_iter()
            .map(|(_, p, sha256, vector)| NewPhoto {
                flag: flag_photo(&p.captions, &vector, &ready),
                mime: mime_of(&p.data).to_string(),
                bytes: Arc::new(p.data),
                id: p.id,
                sha256,
                captions: p.captions,
                vector,
            })
            .collect();
        let restricted = new.iter().filter(|p| p.flag.restricted()).count() as u32;
        let index: Vec<(Arc<str>, Arc<Vec<f32>>)> = new.iter().map(|p| (Arc::from(p.id.as_str()), p.vector.clone())).collect();
        let store = self.store.clone();
        let up = tokio::task::spawn_blocking(move || store.upsert(new)).await.map_err(|e| ServeError::Internal(e.to_string()))??;
        self.reindex(ScorerJob::Upsert(index), ready).await?;
        metrics::gauge!(m::GALLERY_PHOTOS).set(self.store.len() as f64);
        Ok(pb::AddPhotosResponse { added: up.added, replaced: up.replaced, restricted, rejected })
    }

    /// Applies an index job (upsert or remove) to every given version, waiting for each.
    async fn reindex(&self, job: ScorerJob, versions: Vec<Arc<LoadedVersion>>) -> Result<(), ServeError> {
        for v in versions {
            let (worker, job) = (v.worker.clone(), job.clone());
            tokio::task::spawn_blocking(move || worker.submit_blocking(job)).await.map_err(|e| ServeError::Internal(e.to_string()))??;
        }
        Ok(())
    }

    /// Removes photos.
    pub async fn remove_photos(&self, ids: Vec<String>) -> Result<pb::RemovePhotosResponse, ServeError> {
        self.check_ready()?;
        let _writer = self.gallery_write.lock().await;
        let store = self.store.clone();
        let ids2 = ids.clone();
        let not_found = tokio::task::spawn_blocking(move || store.remove(&ids2)).await.map_err(|e| ServeError::Internal(e.to_string()))??;
        let gone: Vec<Arc<str>> = ids.iter().filter(|id| !not_found.contains(id)).map(|id| Arc::from(id.as_str())).collect();
        let removed = gone.len() as u32;
        self.reindex(ScorerJob::Remove(gone), self.versions.ready()).await?;
        metrics::gauge!(m::GALLERY_PHOTOS).set(self.store.len() as f64);
        Ok(pb::RemovePhotosResponse { removed, not_found })
    }

    /// Loads a version (indexing the gallery) and lets its child detector check the photos
    /// that have no captions.
    pub async fn load_version(self: &Arc<Self>, version: u32) -> Result<Arc<LoadedVersion>, ServeError> {
        let _writer = self.gallery_write.lock().await;
        let app = self.clone();
        tokio::task::spawn_blocking(move || {
            let gallery = app.store.all();
            let loaded = app.versions.load(version, &gallery)?;
            if let Some(d) = &loaded.detector {
                let changes: Vec<(String, Flag)> = gallery
                    .iter()
                    .filter(|p| p.captions.is_empty())
                    .filter_map(|p| match (p.flag, d.flags(&p.vector)) {
                        (Flag::Unverified | Flag::Clear, true) => Some((p.id.to_string(), Flag::Detector)),
                        (Flag::Unverified, false) => Some((p.id.to_string(), Flag::Clear)),
                        _ => None,
                    })
                    .collect();
                if !changes.is_empty() {
                    tracing::info!(version, changed = changes.len(), "child detector re-checked uncaptioned photos");
                }
                app.store.set_flags(&changes)?;
            }
            Ok(loaded)
        })
        .await
        .map_err(|e| ServeError::Internal(e.to_string()))?
    }
}

enum ShowOrWithhold {
    Photo(pb::Photo),
    Withheld(pb::Withheld),
}
