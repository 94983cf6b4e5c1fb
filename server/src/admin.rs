//! What the server tells about itself and how it is administered: Info, gallery counts,
//! version status, unloading, the rollout, and the start-up sequence (warm the encoders, load
//! the versions, restore the rollout). Loading a version is in [`crate::ingest`], since it
//! re-checks the gallery's flags.

use std::sync::Arc;

use imagesearch_model::scorer::MANIFEST_FILE;
use imagesearch_model::ModelRepository;

use crate::app::App;
use crate::error::ServeError;
use crate::rollout::Rollout;
use crate::types::{GalleryStats, Limits, ServerInfo, VersionInfo, VersionPhase, VersionStatus};
use crate::versions::VersionState;
use crate::wal::Flag;

impl App {
    /// The server's build, device, ready versions, limits, rollout and law.
    pub fn info(&self) -> ServerInfo {
        let c = &self.cfg;
        ServerInfo {
            build_version: env!("CARGO_PKG_VERSION"),
            git_commit: option_env!("IMAGESEARCH_GIT_COMMIT").unwrap_or("unknown"),
            device: self.device.clone(),
            image_encoder: self.encoders.image_manifest.name.clone(),
            text_encoder: self.encoders.text_manifest.name.clone(),
            versions: self
                .versions
                .ready()
                .iter()
                .map(|v| VersionInfo {
                    version: v.version,
                    created: v.created.clone(),
                    metrics_json: v.metrics_json.clone(),
                    has_child_detector: v.detector.is_some(),
                })
                .collect(),
            limits: Limits {
                max_pairs_per_request: c.max_pairs_per_request as u32,
                max_batch_size: c.max_batch_size as u32,
                max_queue_delay_us: c.max_queue_delay_us,
                queue_capacity: c.queue_capacity as u32,
                max_message_bytes: c.max_message_bytes as u64,
                max_text_chars: c.max_text_chars as u32,
                max_image_bytes: c.max_image_bytes as u64,
                max_image_pixels: c.max_image_pixels,
                max_k: c.max_k as u32,
                max_stream_in_flight: c.max_stream_in_flight as u32,
                max_request_pixels: c.max_request_pixels,
                max_answer_photo_bytes: c.answer_photo_budget() as u64,
                decode_workers: self.encoders.decode_workers() as u32,
                decode_queue: c.decode_queue as u32,
                max_search_depth: c.max_search_depth as u32,
                max_photo_attributes: crate::filter::MAX_PHOTO_ATTRIBUTES as u32,
                max_filter_conditions: crate::filter::MAX_FILTER_CONDITIONS as u32,
                max_concurrent_requests: c.max_concurrent_requests as u32,
                max_queue_time_ms: c.max_queue_time_ms,
                image_max_batch_size: self.encoders.image_batch_size() as u32,
                image_instances: self.encoders.instances().0 as u32,
                text_instances: self.encoders.instances().1 as u32,
            },
            rollout: self.versions.rollout(),
            restricted_regions: self.policy.restricted_regions().map(|c| c.as_str().to_string()).collect(),
            image_views: self.encoders.views().to_string(),
            index_views: self.encoders.index_views().to_string(),
            text_encoder_device: self.encoders.text_device.clone(),
        }
    }

    /// Gallery counts by the law's flags (reads every photo file's size: off the async workers).
    pub async fn gallery_stats(&self) -> Result<GalleryStats, ServeError> {
        let store = self.store.clone();
        let s = tokio::task::spawn_blocking(move || store.stats()).await.map_err(|e| ServeError::Internal(e.to_string()))?;
        let count = |f: Flag| s.by_flag[f as usize];
        Ok(GalleryStats {
            photos: s.photos,
            restricted: Flag::ALL.iter().filter(|f| f.restricted()).map(|f| count(*f)).sum(),
            restricted_by_captions: count(Flag::Captions),
            restricted_by_detector: count(Flag::Detector),
            restricted_unverified: count(Flag::Unverified),
            restricted_by_review: count(Flag::Reviewed),
            cleared_by_review: count(Flag::ReviewedClear),
            photo_bytes: s.photo_bytes,
            log_bytes: s.log_bytes,
        })
    }

    /// Where a version stands, with its manifest (from the repository when it is not loaded).
    pub fn version_status(&self, version: u32) -> VersionStatus {
        let (phase, error, manifest_json) = match self.versions.state(version) {
            Some(VersionState::Ready(v)) => (VersionPhase::Ready, String::new(), v.manifest_json.clone()),
            Some(VersionState::Loading) => (VersionPhase::Loading, String::new(), String::new()),
            Some(VersionState::Failed(e)) => (VersionPhase::Failed, e, String::new()),
            None => (VersionPhase::Available, String::new(), String::new()),
        };
        let manifest_json = if manifest_json.is_empty() {
            let repo = ModelRepository::new(&self.cfg.models);
            std::fs::read_to_string(repo.version_dir(version).join(MANIFEST_FILE)).unwrap_or_default()
        } else {
            manifest_json
        };
        VersionStatus { version, phase, manifest_json, error, role: self.versions.rollout().role(version) }
    }

    /// Every version in the repository or loaded, ascending.
    pub fn list_versions(&self) -> Result<Vec<VersionStatus>, ServeError> {
        let mut all = self.versions.available()?;
        all.extend(self.versions.ready().iter().map(|v| v.version));
        all.sort_unstable();
        all.dedup();
        Ok(all.into_iter().map(|v| self.version_status(v)).collect())
    }

    /// Loads a version (see [`App::load_version`]) and tells where it stands.
    pub async fn load_version_status(self: &Arc<Self>, version: u32) -> Result<VersionStatus, ServeError> {
        self.load_version(version).await?;
        Ok(self.version_status(version))
    }

    /// Unloads a version that is neither stable nor canary.
    pub fn unload_version(&self, version: u32) -> Result<(), ServeError> {
        self.versions.unload(version)
    }

    /// The rollout in force.
    pub fn rollout(&self) -> Rollout {
        self.versions.rollout()
    }

    /// Validates, persists (off the async workers: the rollout may live in the gallery's
    /// database) and applies a rollout.
    pub async fn set_rollout(self: &Arc<Self>, r: Rollout) -> Result<Rollout, ServeError> {
        let app = self.clone();
        tokio::task::spawn_blocking(move || app.versions.set_rollout(r)).await.map_err(|e| ServeError::Internal(e.to_string()))?
    }

    /// The start-up sequence, run while health says NOT_SERVING: a real pass through both
    /// encoders, each of `versions` loaded and warm, then the saved rollout if it still fits
    /// (else the newest version as stable). The server is ready when this returns.
    pub async fn start(self: &Arc<Self>, versions: &[u32]) -> Result<Rollout, String> {
        let app = self.clone();
        let warm = tokio::task::spawn_blocking(move || app.encoders.warm_up()).await;
        warm.map_err(|e| e.to_string())?.map_err(|e| format!("encoder warm-up: {e}"))?;
        for v in versions {
            self.load_version(*v).await.map_err(|e| format!("scorer version {v}: {e}"))?;
        }
        let newest = versions.iter().copied().max().ok_or("no scorer version to serve")?;
        let (app, loaded) = (self.clone(), versions.to_vec());
        let rollout = tokio::task::spawn_blocking(move || app.versions.start_rollout(&loaded, newest))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("rollout: {e}"))?;
        self.set_ready(true);
        tokio::spawn(self.clone().follow_gallery(std::time::Duration::from_millis(self.cfg.gallery_refresh_ms.max(10))));
        Ok(rollout)
    }
}
