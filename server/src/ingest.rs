//! Gallery writes: photos checked, encoded and staged one by one as their stream arrives (a
//! bounded number in flight, so a long stream never sits in memory), flagged under the law and
//! stored in one durable write; removals; reviews of flags; loading a version (whose detectors
//! re-check the stored photos first, `recheck.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use imagesearch_compliance::{is_ignorable, quote};

use crate::app::{App, QUOTE_CHARS};
use crate::decode::Admission;
use crate::encoders::Timings;
use crate::error::ServeError;
use crate::filter::{check_attributes, now_ms, Attributes};
use crate::gallery::{captions_describe_child, decide_flag, merge_evidence, IndexChange, NewPhoto, Review};
use crate::metrics as m;
use crate::types::{Added, PhotoUpload, Rejected, Removed, ReviewRequest, Reviewed};
use crate::versions::LoadedVersion;
use crate::wal::Flag;

/// Longest photo id, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Bytes of photos read from an AddPhotos stream but not yet decoded and staged (at least one
/// message's worth): what a long stream of large photos costs in memory.
const ADD_BYTES_IN_FLIGHT: usize = 64 << 20;

/// Why an id cannot name a photo, if it cannot: empty, too long, or holding a character that
/// is invisible, a control or a bidi override (ids must read the same everywhere they appear).
pub fn check_id(id: &str) -> Result<(), String> {
    if id.trim().is_empty() {
        return Err("id is empty".into());
    }
    if id.len() > MAX_ID_BYTES {
        return Err(format!("id is {} bytes, more than the limit of {MAX_ID_BYTES} bytes", id.len()));
    }
    if let Some((at, c)) = id.chars().enumerate().find(|(_, c)| c.is_control() || is_ignorable(*c)) {
        return Err(format!("id has an invisible or control character U+{:04X} at character {at}", u32::from(c)));
    }
    Ok(())
}

fn mime_of(bytes: &[u8]) -> &'static str {
    match image::guess_format(bytes) {
        Ok(image::ImageFormat::Png) => "image/png",
        Ok(image::ImageFormat::WebP) => "image/webp",
        _ => "image/jpeg",
    }
}

/// What the child detectors of the ready versions say of an image vector: any one flagging
/// wins; `None` when no version has a detector.
fn detectors_say(vector: &[f32], versions: &[Arc<LoadedVersion>]) -> Option<bool> {
    let detectors: Vec<_> = versions.iter().filter_map(|v| v.detector.as_ref()).collect();
    (!detectors.is_empty()).then(|| detectors.iter().any(|d| d.flags(vector)))
}

/// Whether a ready version's query detector says one of a photo's captions describes a child.
fn query_detectors_say(caption_vectors: &[Arc<Vec<f32>>], versions: &[Arc<LoadedVersion>]) -> bool {
    versions.iter().any(|v| caption_vectors.iter().any(|c| crate::app::flags_child_text(v, c)))
}

/// A change to every version's gallery index.
#[derive(Clone)]
enum Reindex {
    Upsert(Vec<(Arc<str>, Arc<Vec<f32>>)>),
    Remove(Vec<Arc<str>>),
}

/// A photo encoded and staged, waiting for the stream's end.
struct Staged {
    order: usize,
    id: String,
    sha256: [u8; 32],
    mime: &'static str,
    captions: Vec<String>,
    attributes: Attributes,
    vector: Arc<Vec<f32>>,
    /// The captions' text vectors, when a ready version has a query detector to read them.
    caption_vectors: Vec<Arc<Vec<f32>>>,
}

impl App {
    /// Reads a stream of photos; checks, encodes and stages each as it comes (at most
    /// `max(4, --max-batch-size)` in flight: the stream is read no faster than that), then flags
    /// and stores all of them in one durable write. Bad photos are rejected one by one with a
    /// reason; a broken stream or a storage failure stores nothing.
    pub async fn add_photos<S>(self: &Arc<Self>, photos: S) -> Result<Added, ServeError>
    where
        S: Stream<Item = Result<PhotoUpload, ServeError>> + Send + Unpin,
    {
        self.check_ready()?;
        let mut staged = Vec::new();
        let outcome = self.stage_stream(photos, &mut staged).await;
        let store = self.store.clone();
        let release = |staged: &[Staged]| {
            let shas: Vec<[u8; 32]> = staged.iter().map(|s| s.sha256).collect();
            tokio::task::spawn_blocking(move || store.unstage(&shas))
        };
        let rejected = match outcome {
            Ok(rejected) => rejected,
            Err(e) => {
                let _ = release(&staged).await;
                return Err(e);
            }
        };
        staged.sort_by_key(|s| s.order);
        let _writer = self.gallery_write.lock().await;
        let ready = self.versions.ready();
        let new = self.flag(&staged, &ready);
        let index: Vec<(Arc<str>, Arc<Vec<f32>>)> = new.iter().map(|p| (Arc::from(p.id.as_str()), p.vector.clone())).collect();
        let store = self.store.clone();
        let up = tokio::task::spawn_blocking(move || store.upsert(new)).await.map_err(|e| ServeError::Internal(e.to_string()))??;
        self.reindex(Reindex::Upsert(index), ready).await?;
        metrics::gauge!(m::GALLERY_PHOTOS).set(self.store.len() as f64);
        Ok(Added { added: up.added, replaced: up.replaced, restricted: up.restricted, rejected })
    }

    /// Reads the stream, staging good photos into `staged`; returns the rejections.
    async fn stage_stream<S>(self: &Arc<Self>, mut photos: S, staged: &mut Vec<Staged>) -> Result<Vec<Rejected>, ServeError>
    where
        S: Stream<Item = Result<PhotoUpload, ServeError>> + Send + Unpin,
    {
        // Two bounds: photos in flight (enough to fill the encoder's batches), and the bytes of
        // photos not yet decoded (their full size lives only until they are staged and decoded).
        let in_flight = Arc::new(tokio::sync::Semaphore::new(self.cfg.max_batch_size.max(4)));
        let bytes_budget_kib = (ADD_BYTES_IN_FLIGHT.max(self.cfg.max_message_bytes) >> 10) as u32;
        let undecoded = Arc::new(tokio::sync::Semaphore::new(bytes_budget_kib as usize));
        let mut tasks = tokio::task::JoinSet::new();
        let mut rejected = Vec::new();
        let mut order = 0;
        let reject = |id: &str, reason: String| Rejected { id: quote(id, QUOTE_CHARS), reason };
        loop {
            let permit = in_flight.clone().acquire_owned().await.map_err(|e| ServeError::Internal(e.to_string()))?;
            let Some(next) = photos.next().await else { break };
            let p = next?;
            order += 1;
            if let Err(why) = check_id(&p.id) {
                rejected.push(reject(&p.id, why));
                continue;
            }
            if let Some(bad) = p.captions.iter().find_map(|c| self.encoders.check_text("caption", c).err()) {
                rejected.push(reject(&p.id, bad.to_string()));
                continue;
            }
            let attributes = match check_attributes(p.attributes) {
                Ok(a) => a,
                Err(why) => {
                    rejected.push(reject(&p.id, why));
                    continue;
                }
            };
            let kib = ((p.data.len() >> 10) as u32 + 1).min(bytes_budget_kib);
            let bytes_permit = undecoded.clone().acquire_many_owned(kib).await.map_err(|e| ServeError::Internal(e.to_string()))?;
            let app = self.clone();
            tasks.spawn(async move {
                let _permit = permit;
                let outcome = app.stage_one(order, p.id.clone(), p.data, p.captions, attributes, bytes_permit).await;
                (p.id, outcome)
            });
            while let Some(done) = tasks.try_join_next() {
                Self::collect(done, staged, &mut rejected)?;
            }
        }
        while let Some(done) = tasks.join_next().await {
            Self::collect(done, staged, &mut rejected)?;
        }
        Ok(rejected)
    }

    fn collect(
        done: Result<(String, Result<Staged, ServeError>), tokio::task::JoinError>,
        staged: &mut Vec<Staged>,
        rejected: &mut Vec<Rejected>,
    ) -> Result<(), ServeError> {
        let (id, outcome) = done.map_err(|e| ServeError::Internal(e.to_string()))?;
        match outcome {
            Ok(s) => staged.push(s),
            Err(ServeError::BadImage { source, .. }) => rejected.push(Rejected { id: quote(&id, QUOTE_CHARS), reason: source.to_string() }),
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Decodes one photo, stages its bytes and drops them (releasing `bytes_permit`), then
    /// encodes it — waiting for room rather than shedding.
    async fn stage_one(
        &self,
        order: usize,
        id: String,
        data: Vec<u8>,
        captions: Vec<String>,
        attributes: Attributes,
        bytes_permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Staged, ServeError> {
        let data = Arc::new(data);
        let sha256 = imagesearch_model::hashing::sha256(&data);
        let mime = mime_of(&data);
        let cached = self.encoders.cached_index_vector(&sha256);
        let views = match cached {
            Some(_) => None,
            None => Some(self.encoders.decode_for_index(data.clone(), order, Admission::Wait).await?),
        };
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.stage(&sha256, &data)).await.map_err(|e| ServeError::Internal(e.to_string()))??;
        drop(bytes_permit);
        let mut t = Timings::default();
        let vector = match (cached, views) {
            (Some(vector), _) => vector,
            (None, Some(views)) => self.encoders.encode_views(views, sha256, None, &mut t, Admission::Wait).await?,
            (None, None) => return Err(ServeError::Internal("photo neither cached nor decoded".into())),
        };
        // A version's query detector reads the captions too: a paraphrase the word list misses
        // ("a little fella on a pony") restricts the photo all the same.
        let mut caption_vectors = Vec::new();
        if self.versions.ready().iter().any(|v| v.query_detector.is_some()) {
            for c in &captions {
                let text = self.encoders.check_text("caption", c)?;
                caption_vectors.push(self.encoders.caption_vector(&text).await?);
            }
        }
        Ok(Staged { order, id, sha256, mime, captions, attributes, vector, caption_vectors })
    }

    /// The law's flag of each staged photo: its own captions, what is known of its bytes (in the
    /// store and elsewhere in this stream: the same bytes get the same verdict whatever their
    /// order), and the child detectors. Captions never clear what the detector flags.
    fn flag(&self, staged: &[Staged], ready: &[Arc<LoadedVersion>]) -> Vec<NewPhoto> {
        let verdicts: Vec<(bool, Option<bool>)> = staged
            .iter()
            .map(|s| (captions_describe_child(&s.captions) || query_detectors_say(&s.caption_vectors, ready), detectors_say(&s.vector, ready)))
            .collect();
        let mut known: HashMap<[u8; 32], Option<Flag>> = HashMap::new();
        for (s, (own, detector)) in staged.iter().zip(&verdicts) {
            let before = *known.entry(s.sha256).or_insert_with(|| self.store.content_flag(&s.sha256));
            known.insert(s.sha256, merge_evidence(before, decide_flag(*own, before, *detector)));
        }
        let added_ms = now_ms();
        staged
            .iter()
            .zip(verdicts)
            .map(|(s, (own, detector))| NewPhoto {
                flag: decide_flag(own, known[&s.sha256], detector),
                id: s.id.clone(),
                sha256: s.sha256,
                mime: s.mime.to_string(),
                captions: s.captions.clone(),
                vector: s.vector.clone(),
                attributes: s.attributes.clone(),
                added_ms,
            })
            .collect()
    }

    /// Applies an index change to every given version, waiting for each.
    async fn reindex(&self, change: Reindex, versions: Vec<Arc<LoadedVersion>>) -> Result<(), ServeError> {
        for v in versions {
            let (worker, change) = (v.worker.clone(), change.clone());
            tokio::task::spawn_blocking(move || match change {
                Reindex::Upsert(photos) => worker.upsert_blocking(photos),
                Reindex::Remove(ids) => worker.remove_blocking(ids),
            })
            .await
            .map_err(|e| ServeError::Internal(e.to_string()))??;
        }
        Ok(())
    }

    /// Removes photos.
    pub async fn remove_photos(&self, ids: Vec<String>) -> Result<Removed, ServeError> {
        self.check_ready()?;
        let _writer = self.gallery_write.lock().await;
        let store = self.store.clone();
        let asked = ids.clone();
        let not_found = tokio::task::spawn_blocking(move || store.remove(&asked)).await.map_err(|e| ServeError::Internal(e.to_string()))??;
        let missing: HashSet<&str> = not_found.iter().map(String::as_str).collect();
        let gone: Vec<Arc<str>> =
            ids.iter().filter(|id| !missing.contains(id.as_str())).collect::<HashSet<_>>().into_iter().map(|id| Arc::from(id.as_str())).collect();
        let removed = gone.len() as u32;
        self.reindex(Reindex::Remove(gone), self.versions.ready()).await?;
        metrics::gauge!(m::GALLERY_PHOTOS).set(self.store.len() as f64);
        let not_found = not_found.iter().map(|id| quote(id, QUOTE_CHARS)).collect();
        Ok(Removed { removed, not_found })
    }

    /// Records a reviewer's decision on a photo's flag (the caller holds the admin token).
    pub async fn review_photo(&self, req: ReviewRequest) -> Result<Reviewed, ServeError> {
        self.check_ready()?;
        let reviewer = req.reviewer.trim();
        if reviewer.is_empty() || reviewer.len() > 128 || reviewer.chars().any(|c| c.is_control() || is_ignorable(c)) {
            return Err(ServeError::InvalidArgument("reviewer must be 1..=128 bytes of visible characters".into()));
        }
        if req.note.len() > 2000 {
            return Err(ServeError::InvalidArgument(format!("note is {} bytes, more than the limit of 2000 bytes", req.note.len())));
        }
        let review = Review { restricted: req.restricted, by: reviewer.to_string(), note: req.note.clone() };
        let _writer = self.gallery_write.lock().await;
        let store = self.store.clone();
        let id = req.id.clone();
        let changed = tokio::task::spawn_blocking(move || store.review(&id, &review)).await.map_err(|e| ServeError::Internal(e.to_string()))??;
        let flag = self.store.get(&req.id).map_or(Flag::Reviewed, |p| p.flag);
        metrics::counter!(m::REVIEWS, "decision" => if req.restricted { "restrict" } else { "clear" }).increment(1);
        // Logged inside the request's span, which carries its request id.
        tracing::warn!(
            id = %quote(&req.id, QUOTE_CHARS),
            reviewer = %quote(reviewer, QUOTE_CHARS),
            restricted = req.restricted,
            changed = changed.len(),
            flag = flag.name(),
            "photo flag reviewed"
        );
        Ok(Reviewed { changed: changed.iter().map(|(id, _)| quote(id, QUOTE_CHARS)).collect(), flag })
    }

    /// Follows a gallery other servers write too: every `every`, catches up with their changes
    /// and applies them to every ready version's index (a photo added on another server is
    /// found here within a poll). Polling rather than LISTEN/NOTIFY: a notification sent while
    /// this server is disconnected is lost, so it would need the same catch-up anyway. Runs
    /// until the process ends; a store no other server writes returns at once.
    pub async fn follow_gallery(self: Arc<Self>, every: std::time::Duration) {
        if !self.store.is_shared() {
            return;
        }
        let mut failing = false;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.follow_rollout().await;
            let _writer = self.gallery_write.lock().await;
            let store = self.store.clone();
            let changes = match tokio::task::spawn_blocking(move || store.refresh()).await {
                Ok(Ok(changes)) => {
                    metrics::gauge!(m::GALLERY_DATABASE_UP).set(1.0);
                    if failing {
                        tracing::info!("gallery database reachable again; following other servers' changes");
                        failing = false;
                    }
                    changes
                }
                Ok(Err(e)) => {
                    metrics::gauge!(m::GALLERY_DATABASE_UP).set(0.0);
                    if !failing {
                        tracing::warn!(error = %e, "cannot follow the shared gallery; serving the last known gallery and rollout");
                        failing = true;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "gallery follower failed");
                    continue;
                }
            };
            self.repair_search_indexes().await;
            if changes.is_empty() {
                continue;
            }
            let n = changes.len();
            // Consecutive changes of one kind go to the indexes as one job.
            let mut batch: Option<Reindex> = None;
            let ready = self.versions.ready();
            for change in changes {
                let next = match (batch.take(), change) {
                    (Some(Reindex::Upsert(mut v)), IndexChange::Upsert(id, vec)) => {
                        v.push((id, vec));
                        Reindex::Upsert(v)
                    }
                    (Some(Reindex::Remove(mut v)), IndexChange::Remove(id)) => {
                        v.push(id);
                        Reindex::Remove(v)
                    }
                    (done, change) => {
                        if let Some(done) = done {
                            if let Err(e) = self.reindex(done, ready.clone()).await {
                                tracing::error!(error = %e, "applying another server's gallery changes failed");
                            }
                        }
                        match change {
                            IndexChange::Upsert(id, vec) => Reindex::Upsert(vec![(id, vec)]),
                            IndexChange::Remove(id) => Reindex::Remove(vec![id]),
                        }
                    }
                };
                batch = Some(next);
            }
            if let Some(done) = batch {
                if let Err(e) = self.reindex(done, ready).await {
                    tracing::error!(error = %e, "applying another server's gallery changes failed");
                }
            }
            metrics::gauge!(m::GALLERY_PHOTOS).set(self.store.len() as f64);
            tracing::debug!(changes = n, "applied other servers' gallery changes");
        }
    }

    /// Writes the embeddings a database search index lacks after a write to it failed (the
    /// photos were stored; searches of that version miss them until this runs).
    async fn repair_search_indexes(self: &Arc<Self>) {
        for v in self.versions.ready() {
            if !v.worker.database_index().is_some_and(|d| d.needs_repair()) {
                continue;
            }
            let (worker, store) = (v.worker.clone(), self.store.clone());
            let repaired = tokio::task::spawn_blocking(move || {
                worker.repair_blocking(store.all().into_iter().map(|p| (p.id, p.vector)).collect())
            })
            .await;
            match repaired {
                Ok(Ok(n)) => tracing::info!(version = v.version, photos = n, "search index repaired"),
                Ok(Err(e)) => tracing::warn!(version = v.version, error = %e, "search index repair failed; retried on the next follow"),
                Err(e) => tracing::error!(error = %e, "search index repair failed"),
            }
        }
    }

    /// Adopts a rollout another server saved, loading its versions here first; until they are
    /// ready (or when the database is unreachable) the last known rollout keeps serving.
    async fn follow_rollout(self: &Arc<Self>) {
        let versions = self.clone();
        let newer = match tokio::task::spawn_blocking(move || versions.versions.newer_rollout()).await {
            Ok(Ok(Some(newer))) => newer,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot read the shared rollout; the last known one serves");
                return;
            }
            Err(_) => return,
        };
        let (r, generation) = newer;
        for v in [r.stable, r.canary].into_iter().filter(|v| *v != 0) {
            if self.versions.ready().iter().all(|l| l.version != v) {
                tracing::info!(version = v, "loading a version the shared rollout names");
                if let Err(e) = self.load_version(v).await {
                    tracing::error!(version = v, error = %e, "cannot load a version the shared rollout names; the last known rollout serves");
                    return;
                }
            }
        }
        if let Err(e) = self.versions.adopt_rollout(r, generation) {
            tracing::error!(error = %e, "cannot adopt the shared rollout; the last known one serves");
        }
    }

    /// Loads a version (indexing the gallery); before it serves, its detectors re-check the
    /// stored photos (`recheck.rs`): flags are raised, never lifted by a second detector.
    pub async fn load_version(self: &Arc<Self>, version: u32) -> Result<Arc<LoadedVersion>, ServeError> {
        let _writer = self.gallery_write.lock().await;
        let (app, runtime) = (self.clone(), tokio::runtime::Handle::current());
        tokio::task::spawn_blocking(move || {
            let gallery = app.store.all();
            app.versions.load(version, &gallery, &|loaded| {
                let r = app.recheck_gallery(&runtime, loaded, &gallery)?;
                if r != crate::recheck::Recheck::default() {
                    tracing::info!(
                        version,
                        by_detector = r.by_detector,
                        by_captions = r.by_captions,
                        cleared = r.cleared,
                        captions_read = r.captions_read,
                        "the version's detectors re-checked the gallery"
                    );
                }
                Ok(())
            })
        })
        .await
        .map_err(|e| ServeError::Internal(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_visible_bounded_and_plain() {
        assert!(check_id("photo-1.jpg").is_ok());
        assert!(check_id("fotó ✓").is_ok());
        for bad in ["", "   ", "\u{200b}", "\u{202e}\u{2066}", "a\nb", "x\u{200d}y"] {
            assert!(check_id(bad).is_err(), "{bad:?} accepted");
        }
        let long = "x".repeat(MAX_ID_BYTES + 1);
        assert!(check_id(&long).unwrap_err().contains("bytes"));
        assert!(check_id(&"é".repeat(200)).unwrap_err().contains("400 bytes"));
        assert!(check_id("a\u{200b}").unwrap_err().contains("U+200B at character 1"));
    }
}
