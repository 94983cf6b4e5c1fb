//! Every setting of the server, as flags with environment twins.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use imagesearch_compliance::RegionPolicy;
use imagesearch_model::device::DeviceChoice;
use imagesearch_model::kernel_caches::KernelCaches;
use tch::Device;

use crate::batcher::BatchConfig;

/// imagesearch gRPC server: scoring, search over a gallery, model versions with rollout.
#[derive(Parser, Debug, Clone)]
#[command(name = "imagesearch-server", version)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Address of the gRPC API.
    #[arg(long, env = "IMAGESEARCH_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Address of the Prometheus metrics endpoint (`/metrics`); "off" disables it.
    #[arg(long, env = "IMAGESEARCH_METRICS_LISTEN", default_value = "127.0.0.1:9091", value_parser = metrics_listen)]
    pub metrics_listen: MetricsListen,
    /// Model repository (encoders/ and scorer/<version>/): a directory, or an S3-compatible
    /// bucket `s3://bucket/prefix` (credentials and endpoint from AWS_* variables), mirrored into
    /// --data-dir/models-cache with every file checked against its manifest before it loads.
    #[arg(long, env = "IMAGESEARCH_MODELS", default_value = "models")]
    pub models: PathBuf,
    /// Where the gallery (with --store local) and the rollout are kept.
    #[arg(long, env = "IMAGESEARCH_DATA_DIR", default_value = "var/server")]
    pub data_dir: PathBuf,
    /// Where the gallery lives: local (a log and files under --data-dir, one server) or
    /// postgres (PostgreSQL + pgvector at --database-url).
    #[arg(long, env = "IMAGESEARCH_STORE", value_enum, default_value_t = StoreKind::Local)]
    pub store: StoreKind,
    /// PostgreSQL URL of the gallery with --store postgres (`postgres://user:pass@host:5432/db`).
    #[arg(long, env = "IMAGESEARCH_DATABASE_URL", hide_env_values = true, required_if_eq("store", "postgres"))]
    pub database_url: Option<String>,
    /// How often a server sharing its gallery database with others catches up with their
    /// changes, in milliseconds.
    #[arg(long, env = "IMAGESEARCH_GALLERY_REFRESH_MS", default_value_t = 250)]
    pub gallery_refresh_ms: u64,
    /// Longest connect or statement on the gallery database, in seconds.
    #[arg(long, env = "IMAGESEARCH_DATABASE_TIMEOUT_S", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub database_timeout_s: u64,
    /// Where each scorer version's search index lives: memory (every server holds every
    /// photo's projected embedding: exact and fastest while they fit), postgres-exact (a scan in
    /// the gallery database) or postgres-hnsw (pgvector's HNSW index there: approximate, no
    /// index in the servers' memory). The postgres ones need --store postgres.
    #[arg(long, env = "IMAGESEARCH_SEARCH_INDEX", value_enum, default_value_t = SearchIndexKind::Memory)]
    pub search_index: SearchIndexKind,
    /// Candidates an HNSW search visits (pgvector's hnsw.ef_search): higher finds more of the
    /// exact top-k, slower.
    #[arg(long, env = "IMAGESEARCH_HNSW_EF_SEARCH", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub hnsw_ef_search: u32,
    /// Memory an HNSW index build may use in the database (maintenance_work_mem), in MiB; a
    /// graph larger than this builds much more slowly.
    #[arg(long, env = "IMAGESEARCH_HNSW_BUILD_MEMORY_MB", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(64..))]
    pub hnsw_build_memory_mb: u32,
    /// Scorer versions to load at start, comma separated; default the newest.
    #[arg(long, env = "IMAGESEARCH_VERSIONS", value_delimiter = ',')]
    pub versions: Vec<u32>,
    /// auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, env = "IMAGESEARCH_DEVICE", default_value = "auto", value_parser = DeviceChoice::from_str)]
    pub device: DeviceChoice,
    /// Regions (ISO 3166-1 alpha-2, comma separated) where no description or image of a child
    /// may be shown. Requests without a region are treated as restricted.
    #[arg(long, env = "IMAGESEARCH_RESTRICTED_REGIONS", default_value = "", value_parser = region_policy)]
    pub restricted_regions: RegionPolicy,
    /// Bearer token for ModelAdmin calls and Gallery.ReviewPhoto; without one they are refused.
    #[arg(long, env = "IMAGESEARCH_ADMIN_TOKEN", hide_env_values = true, conflicts_with = "admin_token_file")]
    pub admin_token: Option<String>,
    /// File holding the admin token (first line); keeps it out of `ps` and the environment.
    #[arg(long, env = "IMAGESEARCH_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Bearer token for gallery writes (AddPhotos, RemovePhotos); must differ from the admin
    /// token. Without one, gallery writes are refused.
    #[arg(long, env = "IMAGESEARCH_WRITER_TOKEN", hide_env_values = true, conflicts_with = "writer_token_file")]
    pub writer_token: Option<String>,
    /// File holding the writer token (first line).
    #[arg(long, env = "IMAGESEARCH_WRITER_TOKEN_FILE")]
    pub writer_token_file: Option<PathBuf>,
    /// PEM certificate chain: serve gRPC over TLS (with --tls-key).
    #[arg(long, env = "IMAGESEARCH_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "IMAGESEARCH_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): every client must present a certificate signed by one (mutual TLS).
    #[arg(long, env = "IMAGESEARCH_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Most open client connections; further connections wait in the listen backlog.
    #[arg(long, env = "IMAGESEARCH_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Most concurrent HTTP/2 streams (calls) per connection.
    #[arg(long, env = "IMAGESEARCH_MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    pub max_concurrent_streams: u32,
    /// HTTP/2 keep-alive ping interval in seconds (0 = off); a peer that does not answer within
    /// --http2-keepalive-timeout-s is disconnected.
    #[arg(long, env = "IMAGESEARCH_HTTP2_KEEPALIVE_S", default_value_t = 30)]
    pub http2_keepalive_s: u64,
    /// How long a keep-alive ping may go unanswered, in seconds.
    #[arg(long, env = "IMAGESEARCH_HTTP2_KEEPALIVE_TIMEOUT_S", default_value_t = 10)]
    pub http2_keepalive_timeout_s: u64,
    /// Connections older than this many seconds are asked to go away (clients reconnect; idle and
    /// stale connections do not pile up). 0 = never.
    #[arg(long, env = "IMAGESEARCH_MAX_CONNECTION_AGE_S", default_value_t = 1800)]
    pub max_connection_age_s: u64,
    /// Most items per forward pass (1 = no cross-request batching).
    #[arg(long, env = "IMAGESEARCH_MAX_BATCH_SIZE", default_value_t = 32)]
    pub max_batch_size: usize,
    /// Most padded tokens per text-encoder pass: texts × the longest one's tokens (as
    /// text-embeddings-inference's --max-batch-tokens), so one long text does not make every
    /// short text batched with it pay for its length. 0 = 512 on a CPU (a MiniLM pass of 8 texts
    /// measured 24 ms at 14 tokens, 210 ms at 128), 16,384 on a GPU.
    #[arg(long, env = "IMAGESEARCH_MAX_BATCH_TOKENS", default_value_t = 0)]
    pub max_batch_tokens: usize,
    /// Most photos per image-encoder pass (0 = 4 on a CPU, where larger batches measured no
    /// faster per photo, --max-batch-size on a GPU).
    #[arg(long, env = "IMAGESEARCH_IMAGE_MAX_BATCH_SIZE", default_value_t = 0)]
    pub image_max_batch_size: usize,
    /// Copies of the image encoder, each on its own thread taking from one queue (Triton's
    /// instance count); 0 = one per core on a CPU (with one libtorch thread each), 1 on a GPU.
    #[arg(long, env = "IMAGESEARCH_IMAGE_INSTANCES", default_value_t = 0)]
    pub image_instances: usize,
    /// Copies of the text encoder (0 = as --image-instances).
    #[arg(long, env = "IMAGESEARCH_TEXT_INSTANCES", default_value_t = 0)]
    pub text_instances: usize,
    /// Longest expected queue wait a Score or Search is admitted with, in milliseconds, over
    /// every model queue it passes (the measured cost per item × the items promised ahead);
    /// past it RESOURCE_EXHAUSTED at once, before any work. 0 = no budget (only
    /// --queue-capacity bounds the wait).
    #[arg(long, env = "IMAGESEARCH_MAX_QUEUE_TIME_MS", default_value_t = 1000)]
    pub max_queue_time_ms: u64,
    /// Most Score, ScoreStream-message or Search calls each in flight at once; past it
    /// RESOURCE_EXHAUSTED at once (as text-embeddings-inference's --max-concurrent-requests).
    #[arg(long, env = "IMAGESEARCH_MAX_CONCURRENT_REQUESTS", default_value_t = 512, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_concurrent_requests: usize,
    /// Nice value of the model threads (0..=19): accepting, refusing and answering calls then
    /// never waits behind a forward pass. 0 = the process's priority.
    #[arg(long, env = "IMAGESEARCH_MODEL_NICE", default_value_t = 10, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub model_nice: i32,
    /// Longest wait for a batch to fill, in microseconds.
    #[arg(long, env = "IMAGESEARCH_MAX_QUEUE_DELAY_US", default_value_t = 2000)]
    pub max_queue_delay_us: u64,
    /// Items a model queue holds before RESOURCE_EXHAUSTED.
    #[arg(long, env = "IMAGESEARCH_QUEUE_CAPACITY", default_value_t = 256)]
    pub queue_capacity: usize,
    /// Most pairs in one Score request.
    #[arg(long, env = "IMAGESEARCH_MAX_PAIRS", default_value_t = 64)]
    pub max_pairs_per_request: usize,
    /// Largest gRPC message in bytes.
    #[arg(long, env = "IMAGESEARCH_MAX_MESSAGE_BYTES", default_value_t = 32 << 20)]
    pub max_message_bytes: usize,
    /// Longest text in characters.
    #[arg(long, env = "IMAGESEARCH_MAX_TEXT_CHARS", default_value_t = 1000)]
    pub max_text_chars: usize,
    /// Largest encoded image in bytes.
    #[arg(long, env = "IMAGESEARCH_MAX_IMAGE_BYTES", default_value_t = 20 << 20)]
    pub max_image_bytes: usize,
    /// Largest width × height of an image.
    #[arg(long, env = "IMAGESEARCH_MAX_IMAGE_PIXELS", default_value_t = 40_000_000)]
    pub max_image_pixels: u64,
    /// Most width × height summed over the images of one request (decoding is paid per pixel).
    #[arg(long, env = "IMAGESEARCH_MAX_REQUEST_PIXELS", default_value_t = 64_000_000)]
    pub max_request_pixels: u64,
    /// Photos decoded at once (0 = one per core).
    #[arg(long, env = "IMAGESEARCH_DECODE_WORKERS", default_value_t = 0)]
    pub decode_workers: usize,
    /// Photos that may wait for a decode worker before Score sheds with RESOURCE_EXHAUSTED.
    #[arg(long, env = "IMAGESEARCH_DECODE_QUEUE", default_value_t = 64)]
    pub decode_queue: usize,
    /// Most photo bytes in one Search answer with include_photos (0 = half of
    /// --max-message-bytes); photos past it come as references only.
    #[arg(long, env = "IMAGESEARCH_MAX_ANSWER_PHOTO_BYTES", default_value_t = 0)]
    pub max_answer_photo_bytes: usize,
    /// Largest k of a Search.
    #[arg(long, env = "IMAGESEARCH_MAX_K", default_value_t = 100)]
    pub max_k: usize,
    /// Deepest hit paged Searches reach (page_token).
    #[arg(long, env = "IMAGESEARCH_MAX_SEARCH_DEPTH", default_value_t = 1000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub max_search_depth: usize,
    /// Most requests in flight on one ScoreStream.
    #[arg(long, env = "IMAGESEARCH_MAX_STREAM_IN_FLIGHT", default_value_t = 32)]
    pub max_stream_in_flight: usize,
    /// Photos whose image vectors are cached (by content hash).
    #[arg(long, env = "IMAGESEARCH_IMAGE_CACHE", default_value_t = 4096)]
    pub image_cache: usize,
    /// Texts whose vectors are cached.
    #[arg(long, env = "IMAGESEARCH_TEXT_CACHE", default_value_t = 16384)]
    pub text_cache: usize,
    /// Views of a photo sent to Score that make its vector: original (the photo alone: half the
    /// image-encoder cost of both, its accuracy cost inside the test noise, see README) or both
    /// (photo and mirror image, as trained).
    #[arg(long, env = "IMAGESEARCH_IMAGE_VIEWS", value_enum, default_value_t = imagesearch_model::ImageViews::Original)]
    pub image_views: imagesearch_model::ImageViews,
    /// Views of a photo added to the gallery (encoded once per photo): crops (14 views: whole,
    /// centre square, five crops, each also mirrored), both (as trained) or original; default:
    /// the views the version the encoders are taken from (the first of `--versions`, else the
    /// newest) was chosen and calibrated with: its manifest's `index_views`, `both` when it has none.
    #[arg(long, env = "IMAGESEARCH_INDEX_VIEWS", value_enum)]
    pub index_views: Option<imagesearch_model::ImageViews>,
    /// Encoder files to serve: auto (serving-bf16 on a CPU with native bf16 — AVX512-BF16 or
    /// AMX —, serving elsewhere and on GPUs), serving (the fp32 variant exported for the device: faster on a CPU,
    /// portable to CUDA, within the tolerance its manifest states), serving-bf16 (the image
    /// and text encoders in bfloat16 where exported for the device, at the accuracy README
    /// states) or reference (the files the versions were trained with).
    #[arg(long, env = "IMAGESEARCH_ENCODER_FILES", value_enum, default_value_t = imagesearch_model::EncoderFile::Auto)]
    pub encoder_files: imagesearch_model::EncoderFile,
    /// Threads libtorch may use per forward pass (0 = one on a CPU, where model instances use
    /// the cores side by side; libtorch's default on a GPU).
    #[arg(long, env = "IMAGESEARCH_TORCH_THREADS", default_value_t = 0)]
    pub torch_threads: i32,
    /// Entries in ideep's per-shape cache of reordered weights on a CPU (LRU_CACHE_CAPACITY;
    /// 0 = libtorch's default of 1,024). Every new input shape a model meets adds entries, so
    /// under a text encoder in bf16 the default grew the server by over a gigabyte. An
    /// operator's own LRU_CACHE_CAPACITY wins.
    #[arg(long, env = "IMAGESEARCH_WEIGHT_CACHE_CAPACITY", default_value_t = KernelCaches::SERVING.weights)]
    pub weight_cache_capacity: usize,
    /// Entries in oneDNN's per-shape cache of compiled kernels on a CPU
    /// (ONEDNN_PRIMITIVE_CACHE_CAPACITY; 0 = libtorch's default). Bounded at 256 it cost ~8% of
    /// throughput (kernels rebuilt); an operator's own ONEDNN_PRIMITIVE_CACHE_CAPACITY wins.
    #[arg(long, env = "IMAGESEARCH_PRIMITIVE_CACHE_CAPACITY", default_value_t = KernelCaches::SERVING.primitives)]
    pub primitive_cache_capacity: usize,
    /// How long in-flight requests may take to finish after SIGTERM, in seconds.
    #[arg(long, env = "IMAGESEARCH_DRAIN_TIMEOUT_S", default_value_t = 20)]
    pub drain_timeout_s: u64,
    /// Log as JSON lines.
    #[arg(long, env = "IMAGESEARCH_LOG_JSON")]
    pub log_json: bool,
    /// Load and verify the models, print what was found, and exit.
    #[arg(long)]
    pub check: bool,
}

/// What to do instead of serving.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Copies a local gallery (its photos, flags, reviews and vectors) into an empty PostgreSQL
    /// gallery and checks that the counts match; the server must not be running on either.
    MigrateGallery {
        /// The local gallery: the server's --data-dir (its `gallery/` directory is read).
        #[arg(long)]
        from: PathBuf,
        /// The PostgreSQL URL of the target gallery.
        #[arg(long, env = "IMAGESEARCH_MIGRATE_TO", hide_env_values = true)]
        to: String,
        /// Photos per transaction.
        #[arg(long, default_value_t = 256)]
        batch: usize,
    },
}

/// Which gallery store the server uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// The embedded store: a write-ahead log and content-addressed files under --data-dir.
    Local,
    /// PostgreSQL + pgvector at --database-url.
    Postgres,
}

/// Where scorer versions' search indexes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SearchIndexKind {
    /// In each server's memory (on the scorer's device).
    Memory,
    /// In the gallery database, searched by a full scan.
    PostgresExact,
    /// In the gallery database, searched through an HNSW index.
    PostgresHnsw,
}

/// Where the metrics endpoint listens, if anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsListen {
    Off,
    At(SocketAddr),
}

impl std::fmt::Display for MetricsListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsListen::Off => f.write_str("off"),
            MetricsListen::At(a) => a.fmt(f),
        }
    }
}

fn metrics_listen(s: &str) -> Result<MetricsListen, String> {
    match s.trim() {
        "off" => Ok(MetricsListen::Off),
        addr => addr.parse().map(MetricsListen::At).map_err(|e| format!("'{addr}' is neither \"off\" nor an address such as 127.0.0.1:9091: {e}")),
    }
}

fn region_policy(s: &str) -> Result<RegionPolicy, String> {
    RegionPolicy::parse_list(s).map_err(|e| e.to_string())
}

impl Config {
    /// Checks what flags cannot check one by one.
    pub fn validate(&self) -> Result<(), String> {
        if self.search_index != SearchIndexKind::Memory && self.store != StoreKind::Postgres {
            return Err("--search-index postgres-exact and postgres-hnsw keep the index in the gallery database: they need --store postgres".into());
        }
        Ok(())
    }

    /// The batcher's wait for a batch to fill.
    pub fn max_queue_delay(&self) -> Duration {
        Duration::from_micros(self.max_queue_delay_us)
    }

    /// The batching and admission settings shared by every model.
    pub fn batch(&self) -> BatchConfig {
        BatchConfig {
            max_batch_size: self.max_batch_size,
            max_queue_delay: self.max_queue_delay(),
            queue_capacity: self.queue_capacity,
            max_queue_time: (self.max_queue_time_ms > 0).then(|| Duration::from_millis(self.max_queue_time_ms)),
            nice: self.model_nice,
            max_batch_weight: None,
        }
    }

    /// The text encoder's batching: the shared settings under a padded-token budget on `device`.
    pub fn text_batch(&self, device: Device) -> BatchConfig {
        let tokens = match self.max_batch_tokens {
            0 if device == Device::Cpu => 512,
            0 => 16_384,
            n => n,
        };
        BatchConfig { max_batch_weight: Some(tokens), ..self.batch() }
    }

    /// Most photos per image-encoder pass on `device`.
    pub fn image_batch_size(&self, device: Device) -> usize {
        match self.image_max_batch_size {
            0 if device == Device::Cpu => self.max_batch_size.min(4),
            0 => self.max_batch_size,
            n => n,
        }
    }

    /// Copies of the image and the text encoder on `device`.
    pub fn instances(&self, device: Device) -> (usize, usize) {
        let image = match self.image_instances {
            0 if device == Device::Cpu => std::thread::available_parallelism().map_or(2, usize::from),
            0 => 1,
            n => n,
        };
        (image, if self.text_instances == 0 { image } else { self.text_instances })
    }

    /// The bounds of libtorch's CPU kernel caches.
    pub fn kernel_caches(&self) -> KernelCaches {
        KernelCaches { weights: self.weight_cache_capacity, primitives: self.primitive_cache_capacity }
    }

    /// Threads libtorch may use per forward pass on `device`: on a CPU one unless --torch-threads
    /// says otherwise. (Measured: a libtorch forward pass with 2 intra-op threads on any thread
    /// but the process's first runs ~2x slower than with 1 — MiniLM 10.7 vs 6.0 ms — so the
    /// cores are used by model instances side by side instead.)
    pub fn torch_threads(&self, device: Device) -> i32 {
        match self.torch_threads {
            0 if device == Device::Cpu => 1,
            n => n,
        }
    }

    /// Photos decoded at once.
    pub fn decode_workers(&self) -> usize {
        if self.decode_workers > 0 {
            self.decode_workers
        } else {
            std::thread::available_parallelism().map_or(2, usize::from)
        }
    }

    /// Most photo bytes in one Search answer.
    pub fn answer_photo_budget(&self) -> usize {
        if self.max_answer_photo_bytes > 0 {
            self.max_answer_photo_bytes.min(self.max_message_bytes)
        } else {
            self.max_message_bytes / 2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("imagesearch-server").chain(args.iter().copied()))
    }

    #[test]
    fn fixed_value_flags_are_checked_at_start() {
        let c = parse(&["--metrics-listen", "off", "--device", "cpu", "--restricted-regions", "de, FR", "--image-views", "original"]).unwrap();
        assert_eq!(c.metrics_listen, MetricsListen::Off);
        assert_eq!(c.device, DeviceChoice::Cpu);
        assert!(c.restricted_regions.is_restricted(Some("DE")).unwrap());
        assert_eq!(c.image_views, imagesearch_model::ImageViews::Original);
        assert_eq!(parse(&["--metrics-listen", "127.0.0.1:9"]).unwrap().metrics_listen.to_string(), "127.0.0.1:9");
        assert!(parse(&["--store", "postgres"]).is_err(), "postgres without a URL");
        let pg = parse(&["--store", "postgres", "--database-url", "postgres://u@127.0.0.1:5/g"]).unwrap();
        assert_eq!(pg.store, StoreKind::Postgres);
        assert_eq!(pg.search_index, SearchIndexKind::Memory);
        let hnsw = parse(&["--store", "postgres", "--database-url", "postgres://u@h/g", "--search-index", "postgres-hnsw", "--hnsw-ef-search", "40"]).unwrap();
        assert_eq!((hnsw.search_index, hnsw.hnsw_ef_search), (SearchIndexKind::PostgresHnsw, 40));
        assert!(hnsw.validate().is_ok());
        assert!(parse(&["--search-index", "postgres-exact"]).unwrap().validate().is_err(), "a database index without the database store");
        assert!(parse(&["--hnsw-ef-search", "0"]).is_err());
        for bad in [&["--metrics-listen", "of"][..], &["--device", "gpu"], &["--restricted-regions", "DEU"], &["--image-views", "mirror"]] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
