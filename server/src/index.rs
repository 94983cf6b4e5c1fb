//! One scorer version on its batcher thread: scores pairs and searches its gallery index — the
//! query's text embedding times the projected, unit-length image embeddings of every gallery
//! photo, calibrated, top-k. The index is kept on the version's device (`--search-index
//! memory`), or in the gallery database ([`crate::pg_index`]): then the thread only embeds
//! queries and photos, and the ranking is one SQL query on the blocking pool.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use imagesearch_model::Scorer;
use tch::{Device, Kind, Tensor};
use tokio::sync::oneshot;

use crate::admission::Queue;
use crate::batcher::{BatchConfig, BatchWorker, Batcher, Timed};
use crate::error::ServeError;
use crate::filter::PhotoFilter;
use crate::pg_index::{fill_lacking, PgIndex, Scope};

/// One answer's way back from the version's thread, typed by the job's kind.
type Reply<T> = oneshot::Sender<T>;

/// Work for a version's thread; each kind carries the channel of its own answer.
pub enum ScorerJob {
    /// One request's pairs: image and text vectors, same length → one score per pair.
    Pairs { images: Vec<Arc<Vec<f32>>>, texts: Vec<Arc<Vec<f32>>>, reply: Reply<Vec<f32>> },
    /// One query's text vector → the best `k` photos (id, calibrated score), best first, among
    /// those scoring at most `at_most` when given (a page after a cursor).
    Search { text: Arc<Vec<f32>>, k: usize, at_most: Option<f32>, only: Option<Ids>, reply: Reply<Vec<(Arc<str>, f32)>> },
    /// Puts photos (id, image vector) into the index, replacing those with the same id → the
    /// index's size.
    Upsert { photos: Vec<(Arc<str>, Arc<Vec<f32>>)>, reply: Reply<usize> },
    /// Takes photos out of the index → the index's size.
    Remove { ids: Vec<Arc<str>>, reply: Reply<usize> },
    /// A query's text vector → its joint embedding (for an index in the database).
    EmbedText { text: Arc<Vec<f32>>, reply: Reply<Vec<f32>> },
    /// Image vectors → their joint embeddings (for an index in the database).
    EmbedImages { images: Vec<Arc<Vec<f32>>>, reply: Reply<Vec<Vec<f32>>> },
}

/// A set of photo ids.
pub type Ids = Arc<HashSet<Arc<str>>>;

/// The photos a search ranks.
#[derive(Clone, Debug, Default)]
pub struct Among {
    /// Those passing this filter (evaluated in SQL by an index in the database; an in-memory
    /// index needs it resolved into `only` by the caller, see [`ScorerQueue::resolves_filters`])…
    pub filter: PhotoFilter,
    /// …and among these ids when given.
    pub only: Option<Ids>,
}

/// A version's queue: typed calls in front of its batcher, and its index in the database when
/// it has one.
#[derive(Clone)]
pub struct ScorerQueue {
    batcher: Batcher<ScorerJob, ()>,
    db: Option<Arc<PgIndex>>,
}

impl ScorerQueue {
    /// Starts the version's thread; its index lives in the database when `db` is given.
    pub fn spawn(version: u32, cfg: BatchConfig, scorer: Scorer, db: Option<Arc<PgIndex>>) -> Self {
        ScorerQueue { batcher: Batcher::spawn("scorer", version.to_string(), cfg, VersionWorker::new(scorer)), db }
    }

    /// The version's scorer queue, for admission ([`crate::admission::admit_pipeline`]).
    pub fn queue(&self) -> &dyn Queue {
        &self.batcher
    }

    /// The version's index in the database, if it has one.
    pub fn database_index(&self) -> Option<&Arc<PgIndex>> {
        self.db.as_ref()
    }

    /// Whether the index applies [`Among::filter`] itself (in SQL); otherwise the caller
    /// resolves the filter into [`Among::only`].
    pub fn resolves_filters(&self) -> bool {
        self.db.is_some()
    }

    /// Scores aligned pairs of image and text vectors.
    pub async fn score(&self, images: Vec<Arc<Vec<f32>>>, texts: Vec<Arc<Vec<f32>>>, deadline: Option<Instant>) -> Result<Timed<Vec<f32>>, ServeError> {
        let (reply, answer) = oneshot::channel();
        let done = self.batcher.submit(ScorerJob::Pairs { images, texts, reply }, deadline).await?;
        answered(done, answer)
    }

    /// The best `k` photos for a query's text vector, among those scoring at most `at_most`.
    pub async fn search(
        &self,
        text: Arc<Vec<f32>>,
        k: usize,
        at_most: Option<f32>,
        among: Among,
        deadline: Option<Instant>,
    ) -> Result<Timed<Vec<(Arc<str>, f32)>>, ServeError> {
        let Some(db) = self.db.clone() else {
            let (reply, answer) = oneshot::channel();
            let done = self.batcher.submit(ScorerJob::Search { text, k, at_most, only: among.only, reply }, deadline).await?;
            return answered(done, answer);
        };
        let (reply, answer) = oneshot::channel();
        let done = self.batcher.submit(ScorerJob::EmbedText { text, reply }, deadline).await?;
        let embedded = answered(done, answer)?;
        let started = Instant::now();
        let query = embedded.value;
        let hits = tokio::task::spawn_blocking(move || db.search(&query, k, at_most, &among))
            .await
            .map_err(|e| ServeError::Internal(e.to_string()))??;
        Ok(Timed { value: hits, queue: embedded.queue, inference: embedded.inference + started.elapsed() })
    }

    /// Puts photos into the index, waiting for room in the queue (call from a blocking context).
    /// An index in the database embeds only the photos it lacks (another server sharing the
    /// gallery may have written them); a failed write there is logged and repaired later: the
    /// photos are stored already.
    pub fn upsert_blocking(&self, photos: Vec<(Arc<str>, Arc<Vec<f32>>)>) -> Result<usize, ServeError> {
        let Some(db) = &self.db else {
            let (reply, answer) = oneshot::channel();
            let done = self.batcher.submit_blocking(ScorerJob::Upsert { photos, reply })?;
            return answered(done, answer).map(|t| t.value);
        };
        match self.fill_lacking(db, photos, Scope::Given) {
            Ok(n) => Ok(n),
            Err(e) => {
                tracing::error!(version = db.version(), error = %e, "could not write photos' embeddings to the search index; repaired on the next follow");
                db.mark_for_repair();
                Ok(0)
            }
        }
    }

    /// Takes photos out of the index (call from a blocking context). Rows in the database go
    /// with their photos.
    pub fn remove_blocking(&self, ids: Vec<Arc<str>>) -> Result<usize, ServeError> {
        if self.db.is_some() {
            return Ok(0);
        }
        let (reply, answer) = oneshot::channel();
        let done = self.batcher.submit_blocking(ScorerJob::Remove { ids, reply })?;
        answered(done, answer).map(|t| t.value)
    }

    /// Indexes a whole gallery when the version loads: into memory, or into the database those
    /// photos it lacks (resuming a fill a crash cut short), then the HNSW index.
    pub fn index_gallery_blocking(&self, photos: Vec<(Arc<str>, Arc<Vec<f32>>)>) -> Result<(), ServeError> {
        let Some(db) = &self.db else { return self.upsert_blocking(photos).map(|_| ()) };
        self.fill_lacking(db, photos, Scope::WholeGallery)?;
        db.ensure_hnsw()
    }

    /// Embeds what the database index lacks after a failed write (call from a blocking context).
    pub fn repair_blocking(&self, photos: Vec<(Arc<str>, Arc<Vec<f32>>)>) -> Result<usize, ServeError> {
        match &self.db {
            Some(db) if db.take_repair() => self.fill_lacking(db, photos, Scope::WholeGallery).inspect_err(|_| db.mark_for_repair()),
            _ => Ok(0),
        }
    }

    /// Embeds on this version's thread and writes to `db` those of `photos` it lacks.
    fn fill_lacking(&self, db: &PgIndex, photos: Vec<(Arc<str>, Arc<Vec<f32>>)>, scope: Scope) -> Result<usize, ServeError> {
        fill_lacking(db, photos, scope, |images| {
            let (reply, answer) = oneshot::channel();
            let done = self.batcher.submit_blocking(ScorerJob::EmbedImages { images, reply })?;
            answered(done, answer).map(|t| t.value)
        })
    }

    /// Scores pairs, waiting for room (warm-up; call from a blocking context).
    pub fn score_blocking(&self, images: Vec<Arc<Vec<f32>>>, texts: Vec<Arc<Vec<f32>>>) -> Result<Vec<f32>, ServeError> {
        let (reply, answer) = oneshot::channel();
        let done = self.batcher.submit_blocking(ScorerJob::Pairs { images, texts, reply })?;
        answered(done, answer).map(|t| t.value)
    }

    /// Searches, waiting for room (warm-up; call from a blocking context).
    pub fn search_blocking(&self, text: Arc<Vec<f32>>, k: usize) -> Result<Vec<(Arc<str>, f32)>, ServeError> {
        if let Some(db) = &self.db {
            let (reply, answer) = oneshot::channel();
            let done = self.batcher.submit_blocking(ScorerJob::EmbedText { text, reply })?;
            return db.search(&answered(done, answer)?.value, k, None, &Among::default());
        }
        let (reply, answer) = oneshot::channel();
        let done = self.batcher.submit_blocking(ScorerJob::Search { text, k, at_most: None, only: None, reply })?;
        answered(done, answer).map(|t| t.value)
    }
}

/// A finished job's answer with its batch's timings. The worker sends the answer before it
/// reports the job done, so a job done without one is a bug of this module.
fn answered<T>(done: Timed<()>, mut answer: oneshot::Receiver<T>) -> Result<Timed<T>, ServeError> {
    let value = answer.try_recv().map_err(|_| ServeError::Internal("the scorer finished a job without answering it".into()))?;
    Ok(Timed { value, queue: done.queue, inference: done.inference })
}

/// A scorer version and its gallery index.
struct VersionWorker {
    scorer: Scorer,
    ids: Vec<Arc<str>>,
    rows: HashMap<Arc<str>, i64>,
    /// `[N, D]` on the scorer's device (None while empty).
    index: Option<Tensor>,
}

fn stack(vs: &[Arc<Vec<f32>>], device: Device) -> Result<Tensor, ServeError> {
    let dim = vs.first().map_or(0, |v| v.len());
    if vs.iter().any(|v| v.len() != dim) {
        return Err(ServeError::Internal("vectors of different lengths in one batch".into()));
    }
    let flat: Vec<f32> = vs.iter().flat_map(|v| v.iter().copied()).collect();
    Ok(Tensor::from_slice(&flat).view([vs.len() as i64, dim as i64]).to_device(device))
}

/// The rows of a `[N, E]` tensor.
fn rows_of(t: &Tensor) -> Result<Vec<Vec<f32>>, ServeError> {
    let e = t.size().get(1).copied().unwrap_or(0).max(1) as usize;
    let flat = Vec::<f32>::try_from(t.to_kind(Kind::Float).to_device(Device::Cpu).contiguous().view([-1]))
        .map_err(|e| ServeError::Internal(e.to_string()))?;
    Ok(flat.chunks(e).map(<[f32]>::to_vec).collect())
}

impl VersionWorker {
    fn new(scorer: Scorer) -> Self {
        VersionWorker { scorer, ids: Vec::new(), rows: HashMap::new(), index: None }
    }

    fn upsert(&mut self, photos: &[(Arc<str>, Arc<Vec<f32>>)]) -> Result<(), ServeError> {
        if photos.is_empty() {
            return Ok(());
        }
        // The last entry for an id wins.
        let mut latest: HashMap<&Arc<str>, usize> = HashMap::new();
        for (i, (id, _)) in photos.iter().enumerate() {
            latest.insert(id, i);
        }
        let mut keep: Vec<usize> = latest.into_values().collect();
        keep.sort_unstable();
        let vectors: Vec<Arc<Vec<f32>>> = keep.iter().map(|&i| photos[i].1.clone()).collect();
        let device = self.scorer.device();
        let emb = self.scorer.embed_images(&stack(&vectors, Device::Cpu)?)?.to_device(device);
        let mut new_rows = Vec::new();
        for (j, &i) in keep.iter().enumerate() {
            let id = &photos[i].0;
            match (self.rows.get(id), self.index.as_mut()) {
                (Some(&row), Some(index)) => {
                    index.get(row).copy_(&emb.get(j as i64));
                }
                _ => new_rows.push(j as i64),
            }
        }
        if !new_rows.is_empty() {
            let add = emb.index_select(0, &Tensor::from_slice(&new_rows).to_device(device));
            self.index = Some(match self.index.take() {
                Some(index) => Tensor::cat(&[index, add], 0),
                None => add,
            });
            for &j in &new_rows {
                let id = photos[keep[j as usize]].0.clone();
                self.rows.insert(id.clone(), self.ids.len() as i64);
                self.ids.push(id);
            }
        }
        Ok(())
    }

    fn embed_images(&self, images: &[Arc<Vec<f32>>]) -> Result<Vec<Vec<f32>>, ServeError> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        rows_of(&self.scorer.embed_images(&stack(images, Device::Cpu)?)?)
    }

    fn remove(&mut self, ids: &[Arc<str>]) {
        let gone: Vec<i64> = ids.iter().filter_map(|id| self.rows.get(id).copied()).collect();
        if gone.is_empty() {
            return;
        }
        let gone: std::collections::HashSet<i64> = gone.into_iter().collect();
        let keep: Vec<i64> = (0..self.ids.len() as i64).filter(|r| !gone.contains(r)).collect();
        self.ids = keep.iter().map(|&r| self.ids[r as usize].clone()).collect();
        self.rows = self.ids.iter().enumerate().map(|(r, id)| (id.clone(), r as i64)).collect();
        self.index = match (self.index.take(), keep.is_empty()) {
            (_, true) | (None, _) => None,
            (Some(index), false) => Some(index.index_select(0, &Tensor::from_slice(&keep).to_device(index.device()))),
        };
    }

    fn score_pairs(&self, jobs: &[(&[Arc<Vec<f32>>], &[Arc<Vec<f32>>])]) -> Result<Vec<Vec<f32>>, ServeError> {
        let images: Vec<Arc<Vec<f32>>> = jobs.iter().flat_map(|(i, _)| i.iter().cloned()).collect();
        let texts: Vec<Arc<Vec<f32>>> = jobs.iter().flat_map(|(_, t)| t.iter().cloned()).collect();
        if images.is_empty() {
            return Ok(jobs.iter().map(|_| Vec::new()).collect());
        }
        let scores = self.scorer.score(&stack(&images, Device::Cpu)?, &stack(&texts, Device::Cpu)?)?;
        let all = Vec::<f32>::try_from(scores.view([-1])).map_err(|e| ServeError::Internal(e.to_string()))?;
        let mut out = Vec::with_capacity(jobs.len());
        let mut at = 0;
        for (i, _) in jobs {
            out.push(all[at..at + i.len()].to_vec());
            at += i.len();
        }
        Ok(out)
    }

    fn search(&self, queries: &[SearchInput<'_>]) -> Result<Vec<Vec<(Arc<str>, f32)>>, ServeError> {
        let Some(index) = &self.index else {
            return Ok(queries.iter().map(|_| Vec::new()).collect());
        };
        let texts: Vec<Arc<Vec<f32>>> = queries.iter().map(|q| q.text.clone()).collect();
        let emb = self.scorer.embed_texts(&stack(&texts, Device::Cpu)?)?.to_device(index.device());
        let n = self.ids.len() as i64;
        let k_max = queries.iter().map(|q| q.k as i64).max().unwrap_or(1).clamp(1, n);
        let bounds: Option<Vec<f32>> =
            queries.iter().any(|q| q.at_most.is_some()).then(|| queries.iter().map(|q| q.at_most.unwrap_or(f32::INFINITY)).collect());
        let excluded = queries.iter().any(|q| q.only.is_some()).then(|| self.excluded(queries));
        let (top, idx) = self.scorer.manifest.calibration.rank_at_most(&emb, index, k_max, bounds.as_deref(), excluded.as_ref());
        let top = Vec::<f32>::try_from(top.to_kind(Kind::Float).to_device(Device::Cpu).view([-1]))
            .map_err(|e| ServeError::Internal(e.to_string()))?;
        let idx = Vec::<i64>::try_from(idx.to_device(Device::Cpu).view([-1])).map_err(|e| ServeError::Internal(e.to_string()))?;
        Ok(queries
            .iter()
            .enumerate()
            .map(|(q, input)| {
                let base = q * k_max as usize;
                // Rows masked by a bound or a filter come back as −∞: not hits.
                (0..input.k.min(k_max as usize))
                    .filter(|j| top[base + j] > f32::NEG_INFINITY)
                    .map(|j| (self.ids[idx[base + j] as usize].clone(), top[base + j]))
                    .collect()
            })
            .collect())
    }

    /// `[Q, N]`: true where query `q` may not rank row `n` (not among its `only` ids).
    fn excluded(&self, queries: &[SearchInput<'_>]) -> Tensor {
        let mut mask = Vec::with_capacity(queries.len() * self.ids.len());
        for q in queries {
            match q.only {
                Some(only) => mask.extend(self.ids.iter().map(|id| !only.contains(id))),
                None => mask.extend(std::iter::repeat_n(false, self.ids.len())),
            }
        }
        Tensor::from_slice(&mask).view([queries.len() as i64, self.ids.len() as i64])
    }
}

/// One query of a batch of searches.
struct SearchInput<'a> {
    text: &'a Arc<Vec<f32>>,
    k: usize,
    at_most: Option<f32>,
    only: Option<&'a Ids>,
}

impl BatchWorker for VersionWorker {
    type Input = ScorerJob;
    type Output = ();

    fn run(&mut self, jobs: Vec<ScorerJob>) -> Result<Vec<Result<(), ServeError>>, ServeError> {
        // Index updates first (in arrival order), then one forward pass for all pairs and one
        // for all queries.
        let mut out: Vec<Result<(), ServeError>> = Vec::with_capacity(jobs.len());
        let mut pairs = Vec::new();
        let mut queries = Vec::new();
        let mut texts = Vec::new();
        for (i, job) in jobs.into_iter().enumerate() {
            out.push(Ok(()));
            match job {
                ScorerJob::Upsert { photos, reply } => match self.upsert(&photos) {
                    Ok(()) => {
                        let _ = reply.send(self.ids.len());
                    }
                    Err(e) => out[i] = Err(e),
                },
                ScorerJob::Remove { ids, reply } => {
                    self.remove(&ids);
                    let _ = reply.send(self.ids.len());
                }
                ScorerJob::Pairs { images, texts, reply } => pairs.push((images, texts, reply)),
                ScorerJob::EmbedText { text, reply } => texts.push((text, reply)),
                ScorerJob::EmbedImages { images, reply } => match self.embed_images(&images) {
                    Ok(e) => {
                        let _ = reply.send(e);
                    }
                    Err(e) => out[i] = Err(e),
                },
                ScorerJob::Search { text, k, at_most, only, reply } => queries.push((text, k, at_most, only, reply)),
            }
        }
        if !pairs.is_empty() {
            let inputs: Vec<_> = pairs.iter().map(|(i, t, _)| (i.as_slice(), t.as_slice())).collect();
            let scores = self.score_pairs(&inputs)?;
            for ((_, _, reply), s) in pairs.into_iter().zip(scores) {
                let _ = reply.send(s);
            }
        }
        if !texts.is_empty() {
            let vectors: Vec<Arc<Vec<f32>>> = texts.iter().map(|(t, _)| t.clone()).collect();
            let emb = self.scorer.embed_texts(&stack(&vectors, Device::Cpu)?)?;
            for ((_, reply), e) in texts.into_iter().zip(rows_of(&emb)?) {
                let _ = reply.send(e);
            }
        }
        if !queries.is_empty() {
            let inputs: Vec<SearchInput<'_>> =
                queries.iter().map(|(text, k, at_most, only, _)| SearchInput { text, k: *k, at_most: *at_most, only: only.as_ref() }).collect();
            let hits = self.search(&inputs)?;
            for ((_, _, _, _, reply), h) in queries.into_iter().zip(hits) {
                let _ = reply.send(h);
            }
        }
        Ok(out)
    }
}
