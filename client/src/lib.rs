//! `imagesearch-client`: the typed, compliance-aware client of the imagesearch gRPC API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), imagesearch_client::ClientError> {
//! use imagesearch_client::{Client, ClientConfig, Slot};
//! let client = Client::connect(ClientConfig::new("http://127.0.0.1:50051")).await?;
//! let found = client.search("a dog jumps into a pool", Some("DE"), 5).await?;
//! for slot in &found.hits {
//!     match slot {
//!         Slot::Photo(p) => println!("{} {:.3}", p.id, p.score),
//!         Slot::Withheld { disclaimer, .. } => println!("{disclaimer}"),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! The client fails closed on its own: in a restricted region (or without a region) it refuses
//! a query that describes a child before sending it, and it turns any photo the server marked
//! `restricted` into [`Slot::Withheld`], even if a misconfigured server sent it.

pub mod loadtest;
pub mod retry;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imagesearch_compliance::{describes_child, RegionCode, RegionPolicy, DISCLAIMER};
use imagesearch_proto::v1 as pb;
use pb::gallery_client::GalleryClient;
use pb::image_search_client::ImageSearchClient;
use pb::model_admin_client::ModelAdminClient;
use tokio::sync::RwLock;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

pub use retry::RetryPolicy;

/// What can go wrong, typed: the server's status, or the client's own refusal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(Status),
    #[error("bad region '{0}': {1}")]
    BadRegion(String, String),
    #[error("withheld: the query describes a child ({rule}); in region '{region}' only this may be shown: {disclaimer}")]
    QueryWithheld { region: String, rule: String, disclaimer: String },
    #[error("{0}")]
    InvalidInput(String),
    #[error("{path}: {message}")]
    Io { path: String, message: String },
}

fn code_name(code: Code) -> String {
    format!("{code:?}")
}

impl ClientError {
    /// The gRPC code, when the server answered with one.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Status(s) => Some(s.code()),
            _ => None,
        }
    }
}

impl From<Status> for ClientError {
    fn from(s: Status) -> Self {
        ClientError::Status(s)
    }
}

/// How to reach the server.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub endpoint: String,
    pub connect_timeout: Duration,
    /// Deadline of each call, retries included.
    pub request_timeout: Duration,
    pub keep_alive: Duration,
    pub retry: RetryPolicy,
    /// Bearer token for model admin calls and reviews of photo flags.
    pub admin_token: Option<String>,
    /// Bearer token for gallery writes (add, remove).
    pub writer_token: Option<String>,
    /// Regions the client itself treats as restricted (united with the server's list).
    pub restricted_regions: Option<RegionPolicy>,
    /// PEM of a CA to trust for `https://` endpoints (system roots otherwise).
    pub tls_ca_pem: Option<Vec<u8>>,
    /// PEM certificate and key the client presents (servers that ask for client certificates).
    pub tls_identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// Name the server's certificate must carry, when it differs from the endpoint's host.
    pub tls_domain: Option<String>,
    /// Largest message accepted from the server.
    pub max_message_bytes: usize,
}

impl ClientConfig {
    pub fn new(endpoint: impl Into<String>) -> Self {
        ClientConfig {
            endpoint: endpoint.into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            admin_token: None,
            writer_token: None,
            restricted_regions: None,
            tls_ca_pem: None,
            tls_identity_pem: None,
            tls_domain: None,
            max_message_bytes: 64 << 20,
        }
    }
}

/// A search result's slot: a photo that may be shown, or the disclaimer in its place. A
/// withheld slot carries no photo, so it cannot be displayed by accident.
#[derive(Clone, Debug, PartialEq)]
pub enum Slot {
    Photo(FoundPhoto),
    Withheld { rank: u32, score: f32, disclaimer: String },
}

/// A photo that may be shown to the requester.
#[derive(Clone, Debug, PartialEq)]
pub struct FoundPhoto {
    pub rank: u32,
    pub id: String,
    pub score: f32,
    /// "gallery:<id>".
    pub reference: String,
    /// The bytes, when asked for.
    pub data: Vec<u8>,
    pub mime_type: String,
}

/// A search's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchResults {
    pub hits: Vec<Slot>,
    pub version: u32,
    /// Set when the query itself was withheld (no hits then).
    pub query_withheld: Option<String>,
    pub gallery_size: u64,
}

/// Options of a search beyond query, region and k.
#[derive(Clone, Debug, Default)]
pub struct SearchOptions {
    pub version: u32,
    pub routing_key: String,
    pub include_photos: bool,
}

/// An image for scoring.
#[derive(Clone, Debug)]
pub enum ImageRef {
    Bytes(Vec<u8>),
    Gallery(String),
}

/// Timings the server reported for a call (`x-queue-us`, `x-inference-us`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerTimings {
    pub queue: Duration,
    pub inference: Duration,
    pub version: u32,
}

fn timings_of(md: &tonic::metadata::MetadataMap) -> ServerTimings {
    let num = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    ServerTimings {
        queue: Duration::from_micros(num("x-queue-us")),
        inference: Duration::from_micros(num("x-inference-us")),
        version: num("x-model-version") as u32,
    }
}

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

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    fn search_client(&self) -> ImageSearchClient<Channel> {
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
        r.metadata_mut().insert("authorization", value);
        Ok(r)
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.cfg.request_timeout
    }

    /// Runs one unary call with the retry policy.
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
        let msg = pb::SearchRequest {
            query: query.to_string(),
            k,
            routing: Some(pb::Routing { region: region_s.clone(), version: opts.version, routing_key: opts.routing_key.clone() }),
            include_photos: opts.include_photos,
        };
        let resp = self
            .call(|d| {
                let mut c = self.search_client();
                let req = self.request(msg.clone(), d);
                async move { c.search(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        let mut results = to_results(resp, restricted);
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
                None => *slot = Slot::Withheld { rank: found.rank, score: found.score, disclaimer: DISCLAIMER.to_string() },
            }
        }
        Ok(())
    }

    /// One gallery photo under the law of `region`: `None` when it is withheld there (a photo
    /// flagged restricted is withheld in a restricted region whatever the server sent).
    pub async fn get_photo(&self, id: &str, region: Option<&str>) -> Result<Option<pb::Photo>, ClientError> {
        let restricted = self.is_restricted(region).await?;
        let msg = pb::GetPhotoRequest {
            id: id.to_string(),
            routing: Some(pb::Routing { region: region.unwrap_or("").trim().to_string(), ..Default::default() }),
        };
        let resp = self
            .call(|d| {
                let mut c = self.search_client();
                let req = self.request(msg.clone(), d);
                async move { c.get_photo(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(match resp.content {
            Some(pb::get_photo_response::Content::Photo(p)) if !(restricted && p.restricted) => Some(p),
            _ => None,
        })
    }

    /// Scores pairs; returns the scores and the version that served.
    pub async fn score(&self, pairs: Vec<(ImageRef, String)>, region: Option<&str>) -> Result<(Vec<f32>, ServerTimings), ClientError> {
        let msg = score_request(pairs, region, 0, "");
        self.call(|d| {
            let mut c = self.search_client();
            let req = self.request(msg.clone(), d);
            async move {
                let r = c.score(req).await?;
                let mut t = timings_of(r.metadata());
                let body = r.into_inner();
                t.version = body.version;
                Ok((body.scores, t))
            }
        })
        .await
    }

    /// A raw Score request (for callers who pin versions or routing keys).
    pub async fn score_request(&self, msg: pb::ScoreRequest) -> Result<(pb::ScoreResponse, ServerTimings), ClientError> {
        self.call(|d| {
            let mut c = self.search_client();
            let req = self.request(msg.clone(), d);
            async move {
                let r = c.score(req).await?;
                let t = timings_of(r.metadata());
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
    /// by file name), in chunks of `chunk`, calling `progress(done, total)` after each chunk.
    pub async fn add_directory(
        &self,
        dir: &Path,
        captions: &std::collections::HashMap<String, Vec<String>>,
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
                photos.push(pb::AddPhotoRequest { id, data, captions: caps });
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

    pub async fn list_versions(&self) -> Result<Vec<pb::VersionStatus>, ClientError> {
        let req = self.admin_request(pb::ListVersionsRequest {}, self.deadline())?;
        Ok(self.admin().list_versions(req).await?.into_inner().versions)
    }

    /// Loads (verifies and warms) a version; may take a while.
    pub async fn load_version(&self, version: u32) -> Result<pb::VersionStatus, ClientError> {
        let req = self.admin_request(pb::LoadVersionRequest { version }, Instant::now() + self.cfg.request_timeout.max(Duration::from_secs(300)))?;
        Ok(self.admin().load_version(req).await?.into_inner().status.unwrap_or_default())
    }

    pub async fn unload_version(&self, version: u32) -> Result<(), ClientError> {
        let req = self.admin_request(pb::UnloadVersionRequest { version }, self.deadline())?;
        self.admin().unload_version(req).await?;
        Ok(())
    }

    pub async fn set_rollout(&self, stable: u32, canary: u32, canary_percent: u32) -> Result<pb::Rollout, ClientError> {
        let rollout = pb::Rollout { stable, canary, canary_percent };
        let req = self.admin_request(pb::SetRolloutRequest { rollout: Some(rollout) }, self.deadline())?;
        Ok(self.admin().set_rollout(req).await?.into_inner())
    }

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

/// Reads captions: one per line, `<file name>[#n]<TAB><caption>` (Flickr8k's token format).
pub fn read_captions(path: &Path) -> Result<std::collections::HashMap<String, Vec<String>>, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|e| ClientError::Io { path: path.display().to_string(), message: e.to_string() })?;
    let mut out: std::collections::HashMap<String, Vec<String>> = Default::default();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let (key, caption) = line.split_once('\t').ok_or_else(|| {
            ClientError::InvalidInput(format!("{}:{}: expected '<file name><TAB><caption>'", path.display(), n + 1))
        })?;
        let id = key.split('#').next().unwrap_or(key).trim().to_string();
        out.entry(id).or_default().push(caption.trim().to_string());
    }
    Ok(out)
}

/// Builds a Score request.
pub fn score_request(pairs: Vec<(ImageRef, String)>, region: Option<&str>, version: u32, routing_key: &str) -> pb::ScoreRequest {
    pb::ScoreRequest {
        pairs: pairs
            .into_iter()
            .map(|(image, text)| pb::Pair {
                image: Some(pb::Image {
                    source: Some(match image {
                        ImageRef::Bytes(b) => pb::image::Source::Data(b),
                        ImageRef::Gallery(id) => pb::image::Source::GalleryId(id),
                    }),
                }),
                text,
            })
            .collect(),
        routing: Some(pb::Routing { region: region.unwrap_or("").to_string(), version, routing_key: routing_key.to_string() }),
    }
}

/// Turns the server's answer into slots; in a restricted region, a photo flagged restricted
/// becomes a withheld slot whatever the server did, and a withheld query shows no photo even if
/// the server sent some.
pub fn to_results(resp: pb::SearchResponse, restricted_region: bool) -> SearchResults {
    let hits = if resp.query_withheld.is_some() { Vec::new() } else { resp.hits };
    let hits = hits
        .into_iter()
        .map(|h| match h.content {
            Some(pb::search_hit::Content::Photo(p)) if !(restricted_region && p.restricted) => Slot::Photo(FoundPhoto {
                rank: h.rank,
                id: p.id,
                score: h.score,
                reference: p.reference,
                data: p.data,
                mime_type: p.mime_type,
            }),
            // A restricted photo, an explicit withholding, or an empty slot: nothing to show.
            _ => Slot::Withheld { rank: h.rank, score: h.score, disclaimer: DISCLAIMER.to_string() },
        })
        .collect();
    let query_withheld = resp.query_withheld.map(|w| if w.disclaimer.is_empty() { DISCLAIMER.to_string() } else { w.disclaimer });
    SearchResults { hits, version: resp.version, query_withheld, gallery_size: resp.gallery_size }
}

/// An open ScoreStream: send requests with ids, receive answers as they come.
pub struct ScoreStream {
    tx: tokio::sync::mpsc::Sender<pb::ScoreStreamRequest>,
    rx: tonic::Streaming<pb::ScoreStreamResponse>,
    outstanding: usize,
}

impl ScoreStream {
    /// Opens a stream (the channel to the server holds at most `buffer` unsent requests).
    pub async fn open(client: &Client, buffer: usize) -> Result<Self, ClientError> {
        let (tx, rx) = tokio::sync::mpsc::channel(buffer.max(1));
        let mut c = client.search_client();
        let resp = c.score_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await?;
        Ok(ScoreStream { tx, rx: resp.into_inner(), outstanding: 0 })
    }

    pub fn in_flight(&self) -> usize {
        self.outstanding
    }

    pub async fn send(&mut self, request_id: u64, request: pb::ScoreRequest) -> Result<(), ClientError> {
        self.tx
            .send(pb::ScoreStreamRequest { request_id, request: Some(request) })
            .await
            .map_err(|_| ClientError::Status(Status::unavailable("score stream closed by the server")))?;
        self.outstanding += 1;
        Ok(())
    }

    /// The next answer: its request id and the scores, or the error of that one request.
    pub async fn recv(&mut self) -> Result<(u64, Result<(pb::ScoreResponse, ServerTimings), ClientError>), ClientError> {
        let msg = self.rx.message().await?.ok_or_else(|| ClientError::Status(Status::unavailable("score stream ended")))?;
        self.outstanding = self.outstanding.saturating_sub(1);
        let t = ServerTimings {
            queue: Duration::from_micros(msg.queue_us),
            inference: Duration::from_micros(msg.inference_us),
            version: 0,
        };
        let result = match msg.outcome {
            Some(pb::score_stream_response::Outcome::Result(r)) => Ok((r.clone(), ServerTimings { version: r.version, ..t })),
            Some(pb::score_stream_response::Outcome::Error(e)) => Err(ClientError::Status(Status::new(Code::from(e.code), e.message))),
            None => Err(ClientError::Status(Status::internal("empty stream answer"))),
        };
        Ok((msg.request_id, result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo_hit(rank: u32, id: &str, restricted: bool) -> pb::SearchHit {
        pb::SearchHit {
            rank,
            score: 0.5,
            content: Some(pb::search_hit::Content::Photo(pb::Photo {
                id: id.into(),
                reference: format!("gallery:{id}"),
                data: vec![1, 2, 3],
                mime_type: "image/jpeg".into(),
                restricted,
            })),
        }
    }

    #[test]
    fn a_restricted_photo_never_reaches_a_restricted_region() {
        let resp = pb::SearchResponse {
            hits: vec![photo_hit(1, "dog.jpg", false), photo_hit(2, "child.jpg", true), pb::SearchHit { rank: 3, score: 0.1, content: None }],
            version: 3,
            query_withheld: None,
            gallery_size: 10,
            photos_without_bytes: 0,
        };
        let r = to_results(resp.clone(), true);
        assert!(matches!(&r.hits[0], Slot::Photo(p) if p.id == "dog.jpg"));
        assert!(matches!(&r.hits[1], Slot::Withheld { disclaimer, .. } if disclaimer == DISCLAIMER));
        assert!(matches!(&r.hits[2], Slot::Withheld { .. }), "an empty slot shows nothing");
        // In an open region the flagged photo may be shown.
        let open = to_results(resp.clone(), false);
        assert!(matches!(&open.hits[1], Slot::Photo(p) if p.id == "child.jpg"));
        // A withheld query shows nothing, even if a misbehaving server sent photos with it.
        let mut withheld = resp;
        withheld.query_withheld = Some(pb::Withheld { disclaimer: String::new() });
        let r = to_results(withheld, true);
        assert!(r.hits.is_empty());
        assert_eq!(r.query_withheld.as_deref(), Some(DISCLAIMER));
    }
}
