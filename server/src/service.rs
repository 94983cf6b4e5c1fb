//! The gRPC services: thin handlers that read metadata (deadline, request id), call [`App`],
//! and put timings, version and request id into the answer's metadata. Requests are counted
//! and timed here, by method, status and version.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use imagesearch_proto::v1 as pb;
use pb::gallery_server::Gallery;
use pb::image_search_server::ImageSearch;
use pb::model_admin_server::ModelAdmin;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::app::{App, Served};
use crate::auth::TokenAuth;
use crate::encoders::Timings;
use crate::error::{code_label, ServeError};
use crate::metrics as m;
use crate::rollout::Rollout;
use crate::versions::VersionState;
use crate::wal::Flag;

/// Parses a `grpc-timeout` header ("100m", "5S", ...) into a deadline.
pub fn deadline_of(md: &MetadataMap) -> Option<Instant> {
    let v = md.get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Some(Instant::now() + d)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The caller's `x-request-id`, or a new one.
pub fn request_id(md: &MetadataMap) -> String {
    md.get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .map(String::from)
        .unwrap_or_else(|| format!("{:x}-{}", std::process::id(), NEXT_ID.fetch_add(1, Ordering::Relaxed)))
}

fn observe(method: &'static str, version: u32, code: tonic::Code, start: Instant) {
    let v = if version == 0 { String::new() } else { version.to_string() };
    metrics::counter!(m::REQUESTS, "method" => method, "status" => code_label(code), "version" => v.clone()).increment(1);
    metrics::histogram!(m::REQUEST_SECONDS, "method" => method, "version" => v).record(start.elapsed().as_secs_f64());
}

fn with_metadata<T>(value: T, id: &str, version: u32, t: Timings) -> Response<T> {
    let mut r = Response::new(value);
    let md = r.metadata_mut();
    if let Ok(v) = id.parse() {
        md.insert("x-request-id", v);
    }
    md.insert("x-model-version", version.into());
    md.insert("x-queue-us", (t.queue.as_micros() as u64).into());
    md.insert("x-inference-us", (t.inference.as_micros() as u64).into());
    r
}

/// Runs a handler body with a request id, a span, metrics and timing metadata.
async fn handle<T, F>(method: &'static str, md: &MetadataMap, body: F) -> Result<Response<T>, Status>
where
    F: std::future::Future<Output = Result<Served<T>, ServeError>>,
{
    let id = request_id(md);
    let start = Instant::now();
    let span = tracing::info_span!("request", method, request_id = %id);
    let result = body.instrument(span.clone()).await;
    match result {
        Ok(s) => {
            observe(method, s.version, tonic::Code::Ok, start);
            span.in_scope(|| tracing::debug!(version = s.version, elapsed_us = start.elapsed().as_micros() as u64, "ok"));
            Ok(with_metadata(s.value, &id, s.version, s.timings))
        }
        Err(e) => {
            let status = Status::from(e);
            observe(method, 0, status.code(), start);
            span.in_scope(|| tracing::info!(code = code_label(status.code()), message = status.message(), "refused"));
            let mut status = status;
            if let Ok(v) = id.parse() {
                status.metadata_mut().insert("x-request-id", v);
            }
            Err(status)
        }
    }
}

fn plain<T>(value: T) -> Served<T> {
    Served { value, version: 0, timings: Timings::default() }
}

/// `imagesearch.v1.ImageSearch`.
pub struct SearchService(pub Arc<App>);

type ScoreStreamOut = Pin<Box<dyn Stream<Item = Result<pb::ScoreStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ImageSearch for SearchService {
    async fn score(&self, req: Request<pb::ScoreRequest>) -> Result<Response<pb::ScoreResponse>, Status> {
        let deadline = deadline_of(req.metadata());
        let md = req.metadata().clone();
        handle("Score", &md, self.0.score(req.into_inner(), deadline)).await
    }

    type ScoreStreamStream = ScoreStreamOut;

    async fn score_stream(&self, req: Request<Streaming<pb::ScoreStreamRequest>>) -> Result<Response<ScoreStreamOut>, Status> {
        let app = self.0.clone();
        let stream_id = request_id(req.metadata());
        let max = app.cfg.max_stream_in_flight.max(1);
        let mut incoming = req.into_inner();
        // Answers go out through a bounded channel; a permit per request in flight keeps us
        // from reading more than `max` requests ahead of the answers (backpressure).
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::ScoreStreamResponse, Status>>(max);
        let permits = Arc::new(tokio::sync::Semaphore::new(max));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else { break };
                let msg = match incoming.next().await {
                    Some(Ok(m)) => m,
                    Some(Err(status)) => {
                        tracing::debug!(stream = %stream_id, %status, "score stream ended by the client");
                        break;
                    }
                    None => break,
                };
                let (app, tx) = (app.clone(), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let start = Instant::now();
                    let request = msg.request.unwrap_or_default();
                    let outcome = app.score(request, None).await;
                    let answer = match outcome {
                        Ok(s) => {
                            observe("ScoreStream", s.version, tonic::Code::Ok, start);
                            pb::ScoreStreamResponse {
                                request_id: msg.request_id,
                                outcome: Some(pb::score_stream_response::Outcome::Result(s.value)),
                                queue_us: s.timings.queue.as_micros() as u64,
                                inference_us: s.timings.inference.as_micros() as u64,
                            }
                        }
                        Err(e) => {
                            let code = e.code();
                            observe("ScoreStream", 0, code, start);
                            pb::ScoreStreamResponse {
                                request_id: msg.request_id,
                                outcome: Some(pb::score_stream_response::Outcome::Error(pb::StreamError {
                                    code: code as i32,
                                    message: e.to_string(),
                                })),
                                queue_us: 0,
                                inference_us: 0,
                            }
                        }
                    };
                    let _ = tx.send(Ok(answer)).await;
                });
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn search(&self, req: Request<pb::SearchRequest>) -> Result<Response<pb::SearchResponse>, Status> {
        let deadline = deadline_of(req.metadata());
        let md = req.metadata().clone();
        handle("Search", &md, self.0.search(req.into_inner(), deadline)).await
    }

    async fn get_photo(&self, req: Request<pb::GetPhotoRequest>) -> Result<Response<pb::GetPhotoResponse>, Status> {
        let md = req.metadata().clone();
        let app = self.0.clone();
        handle("GetPhoto", &md, async move { app.get_photo(req.into_inner()).await.map(plain) }).await
    }

    async fn info(&self, req: Request<pb::InfoRequest>) -> Result<Response<pb::InfoResponse>, Status> {
        let md = req.metadata().clone();
        handle("Info", &md, async { Ok(plain(info(&self.0))) }).await
    }
}

/// The `Info` answer.
pub fn info(app: &App) -> pb::InfoResponse {
    let c = &app.cfg;
    let r = app.versions.rollout();
    pb::InfoResponse {
        build_version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: option_env!("IMAGESEARCH_GIT_COMMIT").unwrap_or("unknown").to_string(),
        device: app.device.clone(),
        versions: app
            .versions
            .ready()
            .iter()
            .map(|v| pb::ScorerVersion {
                version: v.version,
                created: v.created.clone(),
                image_encoder: app.encoders.image_manifest.name.clone(),
                text_encoder: app.encoders.text_manifest.name.clone(),
                metrics_json: v.metrics_json.clone(),
                has_child_detector: v.detector.is_some(),
            })
            .collect(),
        limits: Some(pb::Limits {
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
            decode_workers: app.encoders.decode_workers() as u32,
            decode_queue: c.decode_queue as u32,
        }),
        rollout: Some(rollout_pb(r)),
        restricted_regions: app.policy.restricted_regions().map(|c| c.as_str().to_string()).collect(),
        image_views: app.encoders.views().to_string(),
        text_encoder_device: app.encoders.text_device.clone(),
    }
}

fn rollout_pb(r: Rollout) -> pb::Rollout {
    pb::Rollout { stable: r.stable, canary: r.canary, canary_percent: r.canary_percent }
}

/// `imagesearch.v1.Gallery`: writes need the writer token, reviews the admin token.
pub struct GalleryService {
    pub app: Arc<App>,
    pub writer: TokenAuth,
    pub admin: TokenAuth,
}

/// A broken photo stream as an error: a message over the size limit keeps its code
/// (OUT_OF_RANGE, as on every other call), anything else is a bad stream.
fn stream_error(s: Status, photo: usize) -> ServeError {
    if s.code() == tonic::Code::OutOfRange {
        ServeError::TooLarge { what: "photo message", detail: format!("message {photo} of the stream: {}", s.message()) }
    } else {
        ServeError::InvalidArgument(format!("photo stream broke at message {photo}: {} ({})", s.message(), code_label(s.code())))
    }
}

#[tonic::async_trait]
impl Gallery for GalleryService {
    async fn add_photos(&self, req: Request<Streaming<pb::AddPhotoRequest>>) -> Result<Response<pb::AddPhotosResponse>, Status> {
        let md = req.metadata().clone();
        let checked = self.writer.check(&md);
        let mut n = 0usize;
        let stream = req.into_inner().map(move |m| {
            n += 1;
            m.map_err(|s| stream_error(s, n))
        });
        let app = self.app.clone();
        handle("AddPhotos", &md, async move {
            checked?;
            app.add_photos(Box::pin(stream)).await.map(plain)
        })
        .await
    }

    async fn remove_photos(&self, req: Request<pb::RemovePhotosRequest>) -> Result<Response<pb::RemovePhotosResponse>, Status> {
        let md = req.metadata().clone();
        let checked = self.writer.check(&md);
        let app = self.app.clone();
        handle("RemovePhotos", &md, async move {
            checked?;
            app.remove_photos(req.into_inner().ids).await.map(plain)
        })
        .await
    }

    async fn review_photo(&self, req: Request<pb::ReviewPhotoRequest>) -> Result<Response<pb::ReviewPhotoResponse>, Status> {
        let md = req.metadata().clone();
        let checked = self.admin.check(&md);
        let app = self.app.clone();
        handle("ReviewPhoto", &md, async move {
            checked?;
            app.review_photo(req.into_inner()).await.map(plain)
        })
        .await
    }

    async fn stats(&self, req: Request<pb::GalleryStatsRequest>) -> Result<Response<pb::GalleryStatsResponse>, Status> {
        let md = req.metadata().clone();
        let store = self.app.store.clone();
        handle("GalleryStats", &md, async move {
            // Stats reads every photo file's size: off the async workers.
            let s = tokio::task::spawn_blocking(move || store.stats()).await.map_err(|e| ServeError::Internal(e.to_string()))?;
            let count = |f: Flag| s.by_flag[f as usize];
            Ok(plain(pb::GalleryStatsResponse {
                photos: s.photos,
                restricted: Flag::ALL.iter().filter(|f| f.restricted()).map(|f| count(*f)).sum(),
                restricted_by_captions: count(Flag::Captions),
                restricted_by_detector: count(Flag::Detector),
                restricted_unverified: count(Flag::Unverified),
                restricted_by_review: count(Flag::Reviewed),
                cleared_by_review: count(Flag::ReviewedClear),
                photo_bytes: s.photo_bytes,
                log_bytes: s.log_bytes,
            }))
        })
        .await
    }
}

/// `imagesearch.v1.ModelAdmin` (behind [`crate::auth`]).
pub struct AdminService(pub Arc<App>);

fn status_of(app: &App, version: u32) -> pb::VersionStatus {
    let r = app.versions.rollout();
    let (state, error, manifest_json) = match app.versions.state(version) {
        Some(VersionState::Ready(v)) => (pb::VersionState::Ready, String::new(), v.manifest_json.clone()),
        Some(VersionState::Loading) => (pb::VersionState::Loading, String::new(), String::new()),
        Some(VersionState::Failed(e)) => (pb::VersionState::Failed, e, String::new()),
        None => (pb::VersionState::Available, String::new(), String::new()),
    };
    let manifest_json = if manifest_json.is_empty() {
        let repo = imagesearch_model::ModelRepository::new(&app.cfg.models);
        std::fs::read_to_string(repo.version_dir(version).join("manifest.json")).unwrap_or_default()
    } else {
        manifest_json
    };
    pb::VersionStatus { version, state: state as i32, manifest_json, error, role: r.role(version).to_string() }
}

#[tonic::async_trait]
impl ModelAdmin for AdminService {
    async fn list_versions(&self, req: Request<pb::ListVersionsRequest>) -> Result<Response<pb::ListVersionsResponse>, Status> {
        let md = req.metadata().clone();
        let app = self.0.clone();
        handle("ListVersions", &md, async move {
            let mut all = app.versions.available()?;
            all.extend(app.versions.ready().iter().map(|v| v.version));
            all.sort_unstable();
            all.dedup();
            Ok(plain(pb::ListVersionsResponse { versions: all.into_iter().map(|v| status_of(&app, v)).collect() }))
        })
        .await
    }

    async fn load_version(&self, req: Request<pb::LoadVersionRequest>) -> Result<Response<pb::LoadVersionResponse>, Status> {
        let md = req.metadata().clone();
        let app = self.0.clone();
        let version = req.into_inner().version;
        handle("LoadVersion", &md, async move {
            app.load_version(version).await?;
            Ok(plain(pb::LoadVersionResponse { status: Some(status_of(&app, version)) }))
        })
        .await
    }

    async fn unload_version(&self, req: Request<pb::UnloadVersionRequest>) -> Result<Response<pb::UnloadVersionResponse>, Status> {
        let md = req.metadata().clone();
        let app = self.0.clone();
        handle("UnloadVersion", &md, async move {
            app.versions.unload(req.into_inner().version)?;
            Ok(plain(pb::UnloadVersionResponse {}))
        })
        .await
    }

    async fn set_rollout(&self, req: Request<pb::SetRolloutRequest>) -> Result<Response<pb::Rollout>, Status> {
        let md = req.metadata().clone();
        let app = self.0.clone();
        handle("SetRollout", &md, async move {
            let r = req.into_inner().rollout.ok_or_else(|| ServeError::InvalidArgument("rollout missing".into()))?;
            let set = app.versions.set_rollout(Rollout { stable: r.stable, canary: r.canary, canary_percent: r.canary_percent })?;
            Ok(plain(rollout_pb(set)))
        })
        .await
    }

    async fn get_rollout(&self, req: Request<pb::GetRolloutRequest>) -> Result<Response<pb::Rollout>, Status> {
        let md = req.metadata().clone();
        let r = self.0.versions.rollout();
        handle("GetRollout", &md, async move { Ok(plain(rollout_pb(r))) }).await
    }
}
