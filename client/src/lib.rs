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
//!
//! This file holds the error and the value types callers see; [`Client`] makes the calls,
//! [`ScoreStream`] drives one ScoreStream, [`html`] writes the search page, [`loadtest`] is the
//! load tester and [`retry`] the retry policy. Messages are built and answers parsed in one
//! private module of conversions, where the region check on answers is made.

mod captions;
mod client;
mod config;
mod convert;
pub mod html;
pub mod loadtest;
pub mod retry;
mod stream;

use std::time::Duration;

use tonic::{Code, Status};

pub use captions::read_captions;
pub use client::Client;
pub use config::ClientConfig;
pub use convert::{score_request, to_results};
pub use retry::RetryPolicy;
pub use stream::ScoreStream;

/// What can go wrong, typed: the server's status, or the client's own refusal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is malformed or could not be reached.
    #[error("cannot connect to {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    /// The server (or the transport) answered with a gRPC status.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(Status),
    /// The region is not an ISO 3166-1 alpha-2 code.
    #[error("bad region '{0}': {1}")]
    BadRegion(String, String),
    /// The client refused to send a query that describes a child in a restricted region.
    #[error("withheld: the query describes a child ({rule}); in region '{region}' only this may be shown: {disclaimer}")]
    QueryWithheld { region: String, rule: String, disclaimer: String },
    /// The caller's input cannot make a request (a missing token, an unreadable caption line).
    #[error("{0}")]
    InvalidInput(String),
    /// A local file could not be read.
    #[error("{path}: {message}")]
    Io { path: String, message: String },
}

/// The name of a gRPC code as errors and load reports show it (`Unavailable`).
pub(crate) fn code_name(code: Code) -> String {
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

    /// How long the server asked the caller to wait before sending the request again (its
    /// retry pushback on a refusal), when it asked.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ClientError::Status(s) => retry::pushback(s),
            _ => None,
        }
    }
}

impl From<Status> for ClientError {
    fn from(s: Status) -> Self {
        ClientError::Status(s)
    }
}

/// A search result's slot: a photo that may be shown, or the disclaimer in its place. A
/// withheld slot carries no photo, so it cannot be displayed by accident.
#[derive(Clone, Debug, PartialEq)]
pub enum Slot {
    /// A photo that may be shown in the requester's region.
    Photo(FoundPhoto),
    /// A photo that may not be shown there: only its rank, score and the disclaimer.
    Withheld { rank: u32, score: f32, disclaimer: String },
}

/// A photo that may be shown to the requester.
#[derive(Clone, Debug, PartialEq)]
pub struct FoundPhoto {
    /// 1-based position in the answer.
    pub rank: u32,
    /// The gallery id (the file name it was added under).
    pub id: String,
    /// How well the query describes the photo, in [0, 1].
    pub score: f32,
    /// "gallery:<id>".
    pub reference: String,
    /// The bytes, when asked for.
    pub data: Vec<u8>,
    /// MIME type of `data` (`image/jpeg`, ...).
    pub mime_type: String,
}

/// A search's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchResults {
    /// One slot per rank, best first.
    pub hits: Vec<Slot>,
    /// The scorer version that served (0: the client withheld the query itself).
    pub version: u32,
    /// Set when the query itself was withheld (no hits then).
    pub query_withheld: Option<String>,
    /// Photos in the gallery when the search ran.
    pub gallery_size: u64,
    /// Token of the next page (`SearchOptions::page_token`), empty on the last page.
    pub next_page_token: String,
}

/// Options of a search beyond query, region and k.
#[derive(Clone, Debug, Default)]
pub struct SearchOptions {
    /// Pin a scorer version (0 = let the rollout decide).
    pub version: u32,
    /// Sticky rollout key (e.g. a user id).
    pub routing_key: String,
    /// Send the photos' bytes with the answer.
    pub include_photos: bool,
    /// Relevance floor in [0, 1] (0 = none).
    pub min_score: f32,
    /// Continue after the page that returned this token.
    pub page_token: String,
    /// Only photos passing this filter (attributes given at upload, added time).
    pub filter: Option<imagesearch_proto::v1::SearchFilter>,
    /// Weight in [0, 1] of the keyword ranking over captions fused with the vector ranking
    /// (0 = vectors only).
    pub keyword_weight: f32,
}

/// An image for scoring.
#[derive(Clone, Debug)]
pub enum ImageRef {
    /// Encoded bytes (JPEG, PNG or WebP).
    Bytes(Vec<u8>),
    /// The id of a gallery photo.
    Gallery(String),
}

/// Timings the server reported for a call (`x-queue-us`, `x-inference-us`) and the version
/// that served it.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerTimings {
    /// Time the call waited in batch queues.
    pub queue: Duration,
    /// Time spent in model forward passes.
    pub inference: Duration,
    /// The scorer version that served (0 when not reported).
    pub version: u32,
}
