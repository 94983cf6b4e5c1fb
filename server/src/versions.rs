//! The scorer versions the server knows: their state (available, loading, ready, failed), the
//! loaded ones with their batchers, and the rollout that picks one for each request.
//!
//! A load verifies the manifest (sha256 of every file; the encoders must be the loaded ones),
//! builds the version's gallery index and warms it with real forward passes before the
//! version is marked ready. A failed load changes nothing that is serving.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use imagesearch_model::{ChildDetector, EncoderManifest, ModelRepository, Scorer, WordMap};

use crate::batcher::BatchConfig;
use crate::error::ServeError;
use crate::gallery::PhotoMeta;
use crate::index::ScorerQueue;
use crate::metrics as m;
use crate::model_bucket::BucketModels;
use crate::pg_index::PgSearch;
use crate::rollout::{Rollout, RolloutStore};

/// A version that is loaded and warm.
pub struct LoadedVersion {
    pub version: u32,
    pub manifest_json: String,
    pub created: String,
    pub metrics_json: String,
    pub detector: Option<ChildDetector>,
    /// The version's query detector (text-encoder vectors), next to the word list.
    pub query_detector: Option<ChildDetector>,
    /// The query word map open-region queries are read through, when the version was chosen
    /// and measured with one.
    pub word_map: Option<&'static WordMap>,
    pub worker: ScorerQueue,
}

/// State of a version.
#[derive(Clone)]
pub enum VersionState {
    Loading,
    Ready(Arc<LoadedVersion>),
    Failed(String),
}

/// The versions and the rollout.
pub struct Versions {
    repo: ModelRepository,
    device: tch::Device,
    batch: BatchConfig,
    image: EncoderManifest,
    text: EncoderManifest,
    states: RwLock<BTreeMap<u32, VersionState>>,
    /// The rollout in force and the generation of the saved one it came from.
    rollout: RwLock<(Rollout, i64)>,
    rollout_store: Arc<dyn RolloutStore>,
    /// Where versions' search indexes live: in the gallery database, else in memory.
    search: Option<Arc<PgSearch>>,
    /// The bucket the repository mirrors, when it is one.
    bucket: Option<Arc<BucketModels>>,
}

impl Versions {
    pub fn new(
        repo: ModelRepository,
        device: tch::Device,
        batch: BatchConfig,
        image: EncoderManifest,
        text: EncoderManifest,
        rollout_store: Arc<dyn RolloutStore>,
        search: Option<Arc<PgSearch>>,
    ) -> Self {
        Versions {
            repo,
            device,
            batch,
            image,
            text,
            states: RwLock::new(BTreeMap::new()),
            rollout: RwLock::new((Rollout::default(), 0)),
            rollout_store,
            search,
            bucket: None,
        }
    }

    /// Versions come from `bucket` (downloaded into the repository, its cache, before they load).
    pub fn with_bucket(mut self, bucket: Arc<BucketModels>) -> Self {
        self.bucket = Some(bucket);
        self
    }

    /// Versions in the repository.
    pub fn available(&self) -> Result<Vec<u32>, ServeError> {
        let mut v = self.repo.versions()?;
        if let Some(b) = &self.bucket {
            v.extend(b.versions()?);
            v.sort_unstable();
            v.dedup();
        }
        Ok(v)
    }

    /// Ready versions, ascending.
    pub fn ready(&self) -> Vec<Arc<LoadedVersion>> {
        self.states
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter_map(|s| match s {
                VersionState::Ready(v) => Some(v.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn state(&self, version: u32) -> Option<VersionState> {
        self.states.read().unwrap_or_else(|e| e.into_inner()).get(&version).cloned()
    }

    fn set_state(&self, version: u32, state: VersionState) {
        self.states.write().unwrap_or_else(|e| e.into_inner()).insert(version, state);
        let ready = self.ready().len();
        metrics::gauge!(m::VERSIONS_READY).set(ready as f64);
    }

    /// Loads, verifies and warms a version (blocking; run off the async workers), indexing
    /// `gallery`. A version already ready is returned as is.
    /// `before_ready` runs on the loaded version before it serves (the gallery's re-check); its
    /// error fails the load.
    pub fn load(
        &self,
        version: u32,
        gallery: &[PhotoMeta],
        before_ready: &dyn Fn(&Arc<LoadedVersion>) -> Result<(), ServeError>,
    ) -> Result<Arc<LoadedVersion>, ServeError> {
        match self.state(version) {
            Some(VersionState::Ready(v)) => return Ok(v),
            Some(VersionState::Loading) => {
                return Err(ServeError::FailedPrecondition(format!("version {version} is already loading")))
            }
            _ => {}
        }
        if let Some(b) = &self.bucket {
            b.fetch_version(version)?;
        }
        if !self.repo.versions()?.contains(&version) {
            return Err(ServeError::NotFound(format!(
                "scorer version {version} is not in the model repository {}",
                self.repo.scorer_root().display()
            )));
        }
        self.set_state(version, VersionState::Loading);
        match self.load_inner(version, gallery).and_then(|v| before_ready(&v).map(|()| v)) {
            Ok(v) => {
                self.set_state(version, VersionState::Ready(v.clone()));
                tracing::info!(version, photos = gallery.len(), "scorer version ready");
                Ok(v)
            }
            Err(e) => {
                tracing::error!(version, error = %e, "scorer version failed to load");
                self.set_state(version, VersionState::Failed(e.to_string()));
                Err(e)
            }
        }
    }

    fn load_inner(&self, version: u32, gallery: &[PhotoMeta]) -> Result<Arc<LoadedVersion>, ServeError> {
        let dir = self.repo.version_dir(version);
        let scorer = Scorer::load(&dir, self.device)?;
        scorer.manifest.check_encoders(&self.image, &self.text)?;
        let manifest_json = std::fs::read_to_string(dir.join(imagesearch_model::scorer::MANIFEST_FILE))
            .map_err(|e| ServeError::Storage(e.to_string()))?;
        let created = scorer.manifest.created.clone();
        let metrics_json = scorer.manifest.metrics.to_string();
        let detector = scorer.detector.clone();
        let query_detector = scorer.query_detector.clone();
        let word_map = scorer.manifest.query_word_map.as_deref().map(|id| {
            let map = WordMap::builtin();
            if id != map.id() {
                tracing::warn!(version, measured_with = id, this_build = map.id(), "the version's query word map differs from this build's; using this build's");
            }
            map
        });
        let (image_dim, text_dim) = (self.image.output_dim as usize, self.text.output_dim as usize);
        let db = match &self.search {
            Some(search) => {
                let tower = scorer.manifest.files.get(imagesearch_model::scorer::IMAGE_TOWER_FILE).cloned().unwrap_or_default();
                let m = &scorer.manifest;
                Some(Arc::new(search.open(version, &tower, m.embedding_dim, m.calibration)?))
            }
            None => None,
        };
        let worker = ScorerQueue::spawn(version, self.batch, scorer, db);
        // Index the gallery, then warm up with a real pass through every entry point.
        let photos: Vec<_> = gallery.iter().map(|p| (p.id.clone(), p.vector.clone())).collect();
        worker.index_gallery_blocking(photos)?;
        let zeros_i = Arc::new(vec![0.0f32; image_dim]);
        let zeros_t = Arc::new(vec![0.0f32; text_dim]);
        let scores = worker.score_blocking(vec![zeros_i], vec![zeros_t.clone()])?;
        if scores.len() != 1 || !scores[0].is_finite() {
            return Err(ServeError::Internal(format!("warm-up of version {version} gave scores {scores:?}")));
        }
        worker.search_blocking(zeros_t, 1)?;
        Ok(Arc::new(LoadedVersion { version, manifest_json, created, metrics_json, detector, query_detector, word_map, worker }))
    }

    /// Unloads a version that is neither stable nor canary.
    pub fn unload(&self, version: u32) -> Result<(), ServeError> {
        let r = self.rollout();
        if !r.role(version).is_empty() {
            return Err(ServeError::FailedPrecondition(format!(
                "version {version} is the {} version; change the rollout first",
                r.role(version)
            )));
        }
        let removed = self.states.write().unwrap_or_else(|e| e.into_inner()).remove(&version);
        match removed {
            Some(VersionState::Ready(_)) => {
                metrics::gauge!(m::VERSIONS_READY).set(self.ready().len() as f64);
                tracing::info!(version, "scorer version unloaded");
                Ok(())
            }
            Some(other) => {
                // Put back what was there (loading or failed) and say so.
                self.states.write().unwrap_or_else(|e| e.into_inner()).insert(version, other);
                Err(ServeError::FailedPrecondition(format!("version {version} is not loaded")))
            }
            None => Err(ServeError::UnknownVersion(version)),
        }
    }

    pub fn rollout(&self) -> Rollout {
        self.rollout.read().unwrap_or_else(|e| e.into_inner()).0
    }

    /// Validates, persists (compare-and-set on the generation this server last saw) and applies
    /// a rollout.
    pub fn set_rollout(&self, r: Rollout) -> Result<Rollout, ServeError> {
        let ready: Vec<u32> = self.ready().iter().map(|v| v.version).collect();
        r.validate(&ready)?;
        let mut current = self.rollout.write().unwrap_or_else(|e| e.into_inner());
        let generation = self.rollout_store.save_rollout(r, current.1)?;
        *current = (r, generation);
        m::set_rollout(r.stable, r.canary, r.canary_percent);
        tracing::info!(stable = r.stable, canary = r.canary, percent = r.canary_percent, generation, "rollout set");
        Ok(r)
    }

    /// The rollout at start-up: the saved one when its versions are among `loaded`, else
    /// `newest` as the only (stable) version, saved over the saved one.
    /// Servers starting together may race to save the first one: the loser reads again.
    pub fn start_rollout(&self, loaded: &[u32], newest: u32) -> Result<Rollout, ServeError> {
        let mut attempts = 0;
        loop {
            let saved = self.rollout_store.load_rollout()?;
            if let Some((r, g)) = saved.filter(|(r, _)| r.validate(loaded).is_ok()) {
                self.adopt_rollout(r, g)?;
                return Ok(r);
            }
            self.rollout.write().unwrap_or_else(|e| e.into_inner()).1 = saved.map_or(0, |(_, g)| g);
            match self.set_rollout(Rollout { stable: newest, canary: 0, canary_percent: 0 }) {
                Err(ServeError::Conflict(_)) if attempts < 5 => attempts += 1,
                other => return other,
            }
        }
    }

    /// A saved rollout newer than the one in force (set by another server sharing the store).
    pub fn newer_rollout(&self) -> Result<Option<(Rollout, i64)>, ServeError> {
        let mine = self.rollout.read().unwrap_or_else(|e| e.into_inner()).1;
        Ok(self.rollout_store.load_rollout()?.filter(|(_, g)| *g > mine))
    }

    /// Applies a rollout another server saved, once its versions are ready here.
    pub fn adopt_rollout(&self, r: Rollout, generation: i64) -> Result<(), ServeError> {
        let ready: Vec<u32> = self.ready().iter().map(|v| v.version).collect();
        r.validate(&ready)?;
        let mut current = self.rollout.write().unwrap_or_else(|e| e.into_inner());
        if generation > current.1 {
            *current = (r, generation);
            m::set_rollout(r.stable, r.canary, r.canary_percent);
            tracing::info!(stable = r.stable, canary = r.canary, percent = r.canary_percent, generation, "rollout set by another server adopted");
        }
        Ok(())
    }

    /// The version that serves a request: the pinned one, or the rollout's pick.
    pub fn resolve(&self, pinned: u32, routing_key: &str) -> Result<Arc<LoadedVersion>, ServeError> {
        let version = if pinned != 0 { pinned } else { self.rollout().pick(routing_key) };
        match self.state(version) {
            Some(VersionState::Ready(v)) => Ok(v),
            _ if pinned != 0 => Err(ServeError::UnknownVersion(pinned)),
            _ => Err(ServeError::Unavailable(format!("no scorer version is ready to serve (rollout names {version})"))),
        }
    }
}
