//! imagesearch-server: the gRPC services and what is behind them — batchers on dedicated
//! threads, encoders with caches, scorer versions with rollout, the gallery store and the law.

pub mod admin;
pub mod admission;
pub mod app;
pub mod auth;
pub mod batcher;
pub mod cache;
pub mod config;
pub mod connections;
pub mod convert;
pub mod decode;
pub mod encoders;
pub mod error;
pub mod filter;
pub mod gallery;
mod gallery_state;
pub mod index;
pub mod ingest;
pub mod keywords;
pub mod local_store;
pub mod metrics;
pub mod model_bucket;
pub mod paging;
pub mod pg_filter;
pub mod pg_index;
mod pg_pool;
pub mod pg_schema;
pub mod pg_store;
mod recheck;
pub mod rollout;
pub mod search;
pub mod service;
pub mod types;
pub mod versions;
pub mod wal;
