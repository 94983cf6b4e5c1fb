//! The gRPC services: thin handlers that read metadata (deadline, request id, credentials),
//! convert the message ([`crate::convert`]), call [`App`], convert the answer back, and put
//! timings, version and request id into its metadata. Requests are counted and timed here, by
//! method, status and version.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use imagesearch_proto::metadata::{INFERENCE_US, MODEL_VERSION, QUEUE_US, REQUEST_ID};
use imagesearch_proto::v1 as pb;
use pb::gallery_server::Gallery;
use pb::image_search_server::ImageSearch;
use pb::model_admin_server::ModelAdmin;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::admission::Method;
use crate::app::{App, Served};
use crate::auth::TokenAuth;
use crate::convert;
use crate::encoders::Timings;
use crate::error::{code_label, ServeError};
use crate::metrics as m;
use crate::rollout::Rollout;
use crate::types::{PhotoUpload, Routing, ScoreQuery};

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
    md.get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .map(String::from)
        .unwrap_or_else(|| format!("{:x}-{}", std::process::id(), NEXT_ID.fetch_add(1, Ordering::Relaxed)))
}

fn observe(method: &'static str, version: u32, code: tonic::Code, start: Instant) {
    let v = if version == 0 { String::new() } else { version.to_string() };
    let role = m::role(version);
    metrics::counter!(m::REQUESTS, "method" => method, "status" => code_label(code), "version" => v.clone(), "role" => role).increment(1);
    metrics::histogram!(m::REQUEST_SECONDS, "method" => method, "version" => v, "role" => role).record(start.elapsed().as_secs_f64());
}

fn with_metadata<T>(value: T, id: &str, version: u32, t: Timings) -> Response<T> {
    let mut r = Response::new(value);
    let md = r.metadata_mut();
    if let Ok(v) = id.parse() {
        md.insert(REQUEST_ID, v);
    }
    md.insert(MODEL_VERSION, version.into());
    md.insert(QUEUE_US, (t.queue.as_micros() as u64).into());
    md.insert(INFERENCE_US, (t.inference.as_micros() as u64).into());
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
            // Shed load is counted in the metrics; a line per refusal would cost an overloaded
            // server the cores it sheds for.
            if status.code() == tonic::Code::ResourceExhausted {
                span.in_scope(|| tracing::debug!(code = code_label(status.code()), message = status.message(), "refused"));
            } else {
                span.in_scope(|| tracing::info!(code = code_label(status.code()), message = status.message(), "refused"));
            }
            let mut status = status;
            if let Ok(v) = id.parse() {
                status.metadata_mut().insert(REQUEST_ID, v);
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
        let app = self.0.clone();
        handle("Score", &md, async move {
            let _slot = app.calls.admit(Method::Score)?;
            let s = app.score(ScoreQuery::try_from(req.into_inner())?, deadline).await?;
            Ok(Served { value: convert::score_response(s.value, s.version), version: s.version, timings: s.timings })
        })
        .await
    }

    type ScoreStreamStream = ScoreStreamOut;

    async fn score_stream(&self, req: Request<Streaming<pb::ScoreStreamRequest>>) -> Result<Response<ScoreStreamOut>, Status> {
        let app = self.0.clone();
        let stream_id = request_id(req.metadata());
        let max = app.config().max_stream_in_flight.max(1);
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
                    let outcome = match (app.calls.admit(Method::Score), ScoreQuery::try_from(msg.request.unwrap_or_default())) {
                        (Ok(_slot), Ok(query)) => app.score(query, None).await,
                        (Err(e), _) | (_, Err(e)) => Err(e),
                    };
                    let (version, code) = match &outcome {
                        Ok(s) => (s.version, tonic::Code::Ok),
                        Err(e) => (0, e.code()),
                    };
                    observe("ScoreStream", version, code, start);
                    let answer = convert::stream_response(msg.request_id, outcome.map(|s| (s.value, s.version, s.timings)));
                    let _ = tx.send(Ok(answer)).await;
                });
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn search(&self, req: Request<pb::SearchRequest>) -> Result<Response<pb::SearchResponse>, Status> {
        let deadline = deadline_of(req.metadata());
        let md = req.metadata().clone();
        let app = self.0.clone();
        handle("Search", &md, async move {
            let _slot = app.calls.admit(Method::Search)?;
            let s = app.search(req.into_inner().into(), deadline).await?;
            Ok(Served { value: convert::search_response(s.value, s.version), version: s.version, timings: s.timings })
        })
        .await
    }

    async fn get_photo(&self, req: Request<pb::GetPhotoRequest>) -> Result<Response<pb::GetPhotoResponse>, Status> {
        let md = req.metadata().clone();
        let app = self.0.clone();
        handle("GetPhoto", &md, async move {
            let r = req.into_inner();
            Ok(plain(app.get_photo(&r.id, &Routing::from(r.routing)).await?.into()))
        })
        .await
    }

    async fn info(&self, req: Request<pb::InfoRequest>) -> Result<Response<pb::InfoResponse>, Status> {
        let md = req.metadata().clone();
        handle("Info", &md, async { Ok(plain(self.0.info().into())) }).await
    }
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
            m.map(PhotoUpload::from).map_err(|s| stream_error(s, n))
        });
        let app = self.app.clone();
        handle("AddPhotos", &md, async move {
            checked?;
            Ok(plain(app.add_photos(Box::pin(stream)).await?.into()))
        })
        .await
    }

    async fn remove_photos(&self, req: Request<pb::RemovePhotosRequest>) -> Result<Response<pb::RemovePhotosResponse>, Status> {
        let md = req.metadata().clone();
        let checked = self.writer.check(&md);
        let app = self.app.clone();
        handle("RemovePhotos", &md, async move {
            checked?;
            Ok(plain(app.remove_photos(req.into_inner().ids).await?.into()))
        })
        .await
    }

    async fn review_photo(&self, req: Request<pb::ReviewPhotoRequest>) -> Result<Response<pb::ReviewPhotoResponse>, Status> {
        let md = req.metadata().clone();
        let checked = self.admin.check(&md);
        let app = self.app.clone();
        handle("ReviewPhoto", &md, async move {
            checked?;
            Ok(plain(app.review_photo(req.into_inner().into()).await?.into()))
        })
        .await
    }

    async fn stats(&self, req: Request<pb::GalleryStatsRequest>) -> Result<Response<pb::GalleryStatsResponse>, Status> {
        let md = req.metadata().clone();
        let app = self.app.clone();
        handle("GalleryStats", &md, async move { Ok(plain(app.gallery_stats().await?.into())) }).await
    }
}

/// `imagesearch.v1.ModelAdmin` (behind [`crate::auth`]).
pub struct AdminService(pub Arc<App>);

#[tonic::async_trait]
impl ModelAdmin for AdminService {
    async fn list_versions(&self, req: Request<pb::ListVersionsRequest>) -> Result<Response<pb::ListVersionsResponse>, Status> {
        let md = req.metadata().clone();
        let app = self.0.clone();
        handle("ListVersions", &md, async move {
            let versions = app.list_versions()?.into_iter().map(Into::into).collect();
            Ok(plain(pb::ListVersionsResponse { versions }))
        })
        .await
    }

    async fn load_version(&self, req: Request<pb::LoadVersionRequest>) -> Result<Response<pb::LoadVersionResponse>, Status> {
        let md = req.metadata().clone();
        let app = self.0.clone();
        let version = req.into_inner().version;
        handle("LoadVersion", &md, async move {
            let status = app.load_version_status(version).await?;
            Ok(plain(pb::LoadVersionResponse { status: Some(status.into()) }))
        })
        .await
    }

    async fn unload_version(&self, req: Request<pb::UnloadVersionRequest>) -> Result<Response<pb::UnloadVersionResponse>, Status> {
        let md = req.metadata().clone();
        let app = self.0.clone();
        handle("UnloadVersion", &md, async move {
            app.unload_version(req.into_inner().version)?;
            Ok(plain(pb::UnloadVersionResponse {}))
        })
        .await
    }

    async fn set_rollout(&self, req: Request<pb::SetRolloutRequest>) -> Result<Response<pb::Rollout>, Status> {
        let md = req.metadata().clone();
        let app = self.0.clone();
        handle("SetRollout", &md, async move { Ok(plain(app.set_rollout(Rollout::try_from(req.into_inner())?).await?.into())) }).await
    }

    async fn get_rollout(&self, req: Request<pb::GetRolloutRequest>) -> Result<Response<pb::Rollout>, Status> {
        let md = req.metadata().clone();
        let r = self.0.rollout();
        handle("GetRollout", &md, async move { Ok(plain(r.into())) }).await
    }
}
