//! [`Client`]: one HTTP/2 channel to the server and one method per call. Every unary call runs
//! under the configuration's deadline and retry policy; searches and photo fetches apply the
//! client's own region check before and after the call (fail closed).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imagesearch_compliance::{describes_child, RegionCode, RegionPolicy};
use imagesearch_proto::metadata::AUTHORIZATION;
use imagesearch_proto::{v1 as pb, DISCLAIMER};
use pb::gallery_client::GalleryClient;
use pb::image_search_client::ImageSearchClient;
use pb::model_admin_client::ModelAdminClient;
use tokio::sync::RwLock;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::convert::{self, score_request};
use crate::{ClientConfig, ClientError, ImageRef, ScoreStream, SearchOptions, SearchResults, ServerTimings, Slot};

/// The client. Cheap to clone; one HTTP/2 connection, reused.
#[derive(Clone)]
pub struct Client {
    cfg: Arc<ClientConfig>,
    channel: Channel,
    server_policy: Arc<RwLock<Option<RegionPolicy>>>,
}

impl Client {
    /// Connects (eagerly, so a wrong endpoint fails here).
    pub async fn connect(cfg: ClientConfig) -> Result<Self, ClientError> {
        let err = |m: String| ClientError::Connect { endpoint: cfg.endpoint.clone(), message: m };
        let mut ep = Endpoint::from_shared(cfg.endpoint.clone())
            .map_err(|e| err(e.to_string()))?
            .connect_timeout(cfg.connect_timeout)
            .tcp_keepalive(Some(cfg.keep_alive))
            .http2_keep_alive_interval(cfg.keep_alive)
            .keep_alive_while_idle(true);
        if cfg.endpoint.starts_with("https://") {
            let mut tls = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
            if let Some(pem) = &cfg.tls_ca_pem {
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            if let Some((cert, key)) = &cfg.tls_identity_pem {
                tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
            }
            if let Some(domain) = &cfg.tls_domain {
                tls = tls.domain_name(domain.clone());
            }
            ep = ep.tls_config(tls).map_err(|e| err(e.to_string()))?;
        }
        let channel = ep.connect().await.map_err(|e| err(format!("{e} ({:?})", std::error::Error::source(&e))))?;
        Ok(Client { cfg: Arc::new(cfg), channel, server_policy: Arc::new(RwLock::new(None)) })
    }

    /// The configuration the client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// A stub of the ImageSearch service on the shared channel.
    pub(crate) fn search_client(&self) -> ImageSearchClient<Channel> {
        ImageSearchClient::new(self.channel.clone()).max_decoding_message_size(self.cfg.max_message_bytes)
    }

    fn request<T>(&self, msg: T, deadline: Instant) -> Request<T> {
        let mut r = Request::new(msg);
        r.set_timeout(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)));
        r
    }

    fn admin_request<T>(&self, msg: T, deadline: Instant) -> Result<Request<T>, ClientError> {
        let token = self.cfg.admin_token.as_deref().ok_or_else(|| {
            ClientError::InvalidInput("model admin calls and reviews need an admin token (--admin-token / IMAGESEARCH_ADMIN_TOKEN)".into())
        })?;
        Self::authorized(self.request(msg, deadline), "admin", token)
    }

    fn writer_request<T>(&self, msg: T, deadline: Instant) -> Result<Request<T>, ClientError> {
        let token = self.cfg.writer_token.as_deref().ok_or_else(|| {
            ClientError::InvalidInput("gallery writes need a writer token (--writer-token / IMAGESEARCH_WRITER_TOKEN)".into())
        })?;
        Self::authorized(self.request(msg, deadline), "writer", token)
    }

    fn authorized<T>(mut r: Request<T>, role: &str, token: &str) -> Result<Request<T>, ClientError> {
        let value = format!("Bearer {token}").parse().map_err(|_| ClientError::InvalidInput(format!("{role} token is not valid ASCII")))?;
        r.metadata_mut().insert(AUTHORIZATION, value);
        Ok(r)
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.cfg.request_timeout
    }

    /// Runs one unary call with the retry policy, every attempt under the same deadline.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, ClientError>
    where
        F: FnMut(Instant) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let deadline = self.deadline();
        let mut f = f;
        let (r, _) = self.cfg.retry.run(Some(deadline), |_| f(deadline)).await;
        r.map_err(ClientError::from)
    }

    /// The server's build, device, versions, rollout, limits and restricted regions.
    pub async fn info(&self) -> Result<pb::InfoResponse, ClientError> {
        self.call(|d| {
            let mut c = self.search_client();
            let req = self.request(pb::InfoRequest {}, d);
            async move { c.info(req).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// Whether the client treats `region` as restricted: no region, a region in its own list,
    /// or one in the server's list. When the server's list cannot be had, every region is.
    pub async fn is_restricted(&self, region: Option<&str>) -> Result<bool, ClientError> {
        let region = region.map(str::trim).filter(|r| !r.is_empty());
        let Some(region) = region else { return Ok(true) };
        let code = RegionCode::parse(region).map_err(|e| ClientError::BadRegion(region.to_string(), e.to_string()))?;
        if self.cfg.restricted_regions.as_ref().is_some_and(|p| p.contains(code)) {
            return Ok(true);
        }
        if let Some(p) = self.server_policy.read().await.as_ref() {
            return Ok(p.contains(code));
        }
        match self.info().await {
            Ok(info) => match RegionPolicy::parse_list(&info.restricted_regions.join(",")) {
                Ok(policy) => {
                    let restricted = policy.contains(code);
                    *self.server_policy.write().await = Some(policy);
                    Ok(restricted)
                }
                // A list we cannot read protects nobody: treat the region as restricted.
                Err(_) => Ok(true),
            },
            Err(_) => Ok(true),
        }
    }

    /// Searches the gallery; see [`Client::search_with`].
    pub async fn search(&self, query: &str, region: Option<&str>, k: u32) -> Result<SearchResults, ClientError> {
        self.search_with(query, region, k, &SearchOptions::default()).await
    }

    /// Searches the gallery under the law of `region` (None = unknown = restricted).
    pub async fn search_with(&self, query: &str, region: Option<&str>, k: u32, opts: &SearchOptions) -> Result<SearchResults, ClientError> {
        let restricted = self.is_restricted(region).await?;
        let region_s = region.unwrap_or("").trim().to_string();
        if restricted {
            if let Some(hit) = describes_child(query) {
                return Err(ClientError::QueryWithheld { region: region_s, rule: hit.to_string(), disclaimer: DISCLAIMER.to_string() });
            }
        }
        let msg = convert::search_request(query, &region_s, k, opts);
        let resp = self
            .call(|d| {
                let mut c = self.search_client();
                let req = self.request(msg.clone(), d);
                async move { c.search(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        let mut results = convert::to_results(resp, restricted);
        if opts.include_photos {
            self.fill_missing_bytes(&mut results, region).await?;
        }
        Ok(results)
    }

    /// Fetches, one by one under the same law, the photos the server sent without bytes
    /// because the answer's byte budget was spent.
    async fn fill_missing_bytes(&self, results: &mut SearchResults, region: Option<&str>) -> Result<(), ClientError> {
        for slot in &mut results.hits {
            let Slot::Photo(found) = slot else { continue };
            if !found.data.is_empty() {
                continue;
            }
            match self.get_photo(&found.id, region).await? {
                Some(photo) => found.data = photo.data,
                None => *slot = convert::withheld(found.rank, found.score),
            }
        }
        Ok(())
    }

    /// One gallery photo under the law of `region`: `None` when it is withheld there (a photo
    /// flagged restricted is withheld in a restricted region whatever the server sent).
    pub async fn get_photo(&self, id: &str, region: Option<&str>) -> Result<Option<pb::Photo>, ClientError> {
        let restricted = self.is_restricted(region).await?;
        let msg = convert::get_photo_request(id, region.unwrap_or("").trim());
        let resp = self
            .call(|d| {
                let mut c = self.search_client();
                let req = self.request(msg.clone(), d);
                async move { c.get_photo(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(convert::shown_photo(resp, restricted))
    }

    /// Scores pairs; returns the scores and the version that served.
    pub async fn score(&self, pairs: Vec<(ImageRef, String)>, region: Option<&str>) -> Result<(Vec<f32>, ServerTimings), ClientError> {
        let (body, t) = self.score_request(score_request(pairs, region, 0, "")).await?;
        Ok((body.scores, ServerTimings { version: body.version, ..t }))
    }

    /// A raw Score request (for callers who pin versions or routing keys).
    pub async fn score_request(&self, msg: pb::ScoreRequest) -> Result<(pb::ScoreResponse, ServerTimings), ClientError> {
        self.call(|d| {
            let mut c = self.search_client();
            let req = self.request(msg.clone(), d);
            async move {
                let r = c.score(req).await?;
                let t = ServerTimings::from(r.metadata());
                Ok((r.into_inner(), t))
            }
        })
        .await
    }

    /// Scores many requests over one bidirectional stream with at most `in_flight` requests
    /// outstanding; answers come back in request order.
    pub async fn score_stream(&self, requests: Vec<pb::ScoreRequest>, in_flight: usize) -> Result<Vec<Result<pb::ScoreResponse, ClientError>>, ClientError> {
        let mut stream = ScoreStream::open(self, in_flight).await?;
        let n = requests.len();
        let mut out: Vec<Option<Result<pb::ScoreResponse, ClientError>>> = (0..n).map(|_| None).collect();
        let mut next = 0usize;
        let mut done = 0usize;
        while done < n {
            while next < n && stream.in_flight() < in_flight.max(1) {
                stream.send(next as u64, requests[next].clone()).await?;
                next += 1;
            }
            let (id, result) = stream.recv().await?;
            if let Some(slot) = out.get_mut(id as usize) {
                *slot = Some(result.map(|(r, _)| r));
                done += 1;
            }
        }
        Ok(out.into_iter().map(|o| o.expect("every request answered")).collect())
    }

    /// Adds photos; answers once the server stored them durably.
    pub async fn add_photos(&self, photos: Vec<pb::AddPhotoRequest>) -> Result<pb::AddPhotosResponse, ClientError> {
        let mut c = GalleryClient::new(self.channel.clone()).max_encoding_message_size(self.cfg.max_message_bytes);
        let req = self.writer_request(tokio_stream::iter(photos), Instant::now() + self.cfg.request_timeout.max(Duration::from_secs(600)))?;
        Ok(c.add_photos(req).await?.into_inner())
    }

    /// Adds every JPEG/PNG/WebP file of a directory (id = file name, captions from `captions`
    /// by file name, `attributes` on every photo), in chunks of `chunk`, calling
    /// `progress(done, total)` after each chunk.
    pub async fn add_directory(
        &self,
        dir: &Path,
        captions: &HashMap<String, Vec<String>>,
        attributes: &HashMap<String, String>,
        chunk: usize,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<pb::AddPhotosResponse, ClientError> {
        let io = |e: std::io::Error| ClientError::Io { path: dir.display().to_string(), message: e.to_string() };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png" | "webp")))
            .collect();
        files.sort();
        let total = files.len();
        let mut sum = pb::AddPhotosResponse::default();
        for (i, part) in files.chunks(chunk.max(1)).enumerate() {
            let mut photos = Vec::with_capacity(part.len());
            for p in part {
                let data = std::fs::read(p).map_err(|e| ClientError::Io { path: p.display().to_string(), message: e.to_string() })?;
                let id = p.file_name().unwrap_or_default().to_string_lossy().to_string();
                let caps = captions.get(&id).cloned().unwrap_or_default();
                photos.push(pb::AddPhotoRequest { id, data, captions: caps, attributes: attributes.clone() });
            }
            let r = self.add_photos(photos).await?;
            sum.added += r.added;
            sum.replaced += r.replaced;
            sum.restricted += r.restricted;
            sum.rejected.extend(r.rejected);
            progress((i * chunk.max(1) + part.len()).min(total), total);
        }
        Ok(sum)
    }

    /// Removes photos by id (needs the writer token).
    pub async fn remove_photos(&self, ids: Vec<String>) -> Result<pb::RemovePhotosResponse, ClientError> {
        self.writer_request((), self.deadline())?;
        self.call(|d| {
            let mut c = GalleryClient::new(self.channel.clone());
            let req = self.writer_request(pb::RemovePhotosRequest { ids: ids.clone() }, d).map_err(|e| Status::invalid_argument(e.to_string()));
            async move { c.remove_photos(req?).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// Records a review of a photo's restricted flag (needs the admin token).
    pub async fn review_photo(&self, id: &str, restricted: bool, reviewer: &str, note: &str) -> Result<pb::ReviewPhotoResponse, ClientError> {
        let msg = pb::ReviewPhotoRequest { id: id.to_string(), restricted, reviewer: reviewer.to_string(), note: note.to_string() };
        self.admin_request((), self.deadline())?;
        self.call(|d| {
            let mut c = GalleryClient::new(self.channel.clone());
            let req = self.admin_request(msg.clone(), d).map_err(|e| Status::invalid_argument(e.to_string()));
            async move { c.review_photo(req?).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// The gallery's counts: photos, restricted flags by cause, bytes stored.
    pub async fn gallery_stats(&self) -> Result<pb::GalleryStatsResponse, ClientError> {
        self.call(|d| {
            let mut c = GalleryClient::new(self.channel.clone());
            let req = self.request(pb::GalleryStatsRequest {}, d);
            async move { c.stats(req).await.map(|r| r.into_inner()) }
        })
        .await
    }

    fn admin(&self) -> ModelAdminClient<Channel> {
        ModelAdminClient::new(self.channel.clone())
    }

    /// Every scorer version in the server's repository, with its state and role.
    pub async fn list_versions(&self) -> Result<Vec<pb::VersionStatus>, ClientError> {
        let req = self.admin_request(pb::ListVersionsRequest {}, self.deadline())?;
        Ok(self.admin().list_versions(req).await?.into_inner().versions)
    }

    /// Loads (verifies and warms) a version; may take a while.
    pub async fn load_version(&self, version: u32) -> Result<pb::VersionStatus, ClientError> {
        let req = self.admin_request(pb::LoadVersionRequest { version }, Instant::now() + self.cfg.request_timeout.max(Duration::from_secs(300)))?;
        Ok(self.admin().load_version(req).await?.into_inner().status.unwrap_or_default())
    }

    /// Unloads a version that takes no traffic.
    pub async fn unload_version(&self, version: u32) -> Result<(), ClientError> {
        let req = self.admin_request(pb::UnloadVersionRequest { version }, self.deadline())?;
        self.admin().unload_version(req).await?;
        Ok(())
    }

    /// Sets which versions take traffic that pins none; returns the rollout now in force.
    pub async fn set_rollout(&self, stable: u32, canary: u32, canary_percent: u32) -> Result<pb::Rollout, ClientError> {
        let rollout = pb::Rollout { stable, canary, canary_percent };
        let req = self.admin_request(pb::SetRolloutRequest { rollout: Some(rollout) }, self.deadline())?;
        Ok(self.admin().set_rollout(req).await?.into_inner())
    }

    /// The rollout now in force.
    pub async fn get_rollout(&self) -> Result<pb::Rollout, ClientError> {
        let req = self.admin_request(pb::GetRolloutRequest {}, self.deadline())?;
        Ok(self.admin().get_rollout(req).await?.into_inner())
    }

    /// `grpc.health.v1` status of a service ("" = the whole server).
    pub async fn health(&self, service: &str) -> Result<i32, ClientError> {
        let mut c = tonic_health::pb::health_client::HealthClient::new(self.channel.clone());
        let req = self.request(tonic_health::pb::HealthCheckRequest { service: service.to_string() }, self.deadline());
        Ok(c.check(req).await?.into_inner().status)
    }
}
