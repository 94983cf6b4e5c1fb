//! Every setting of the server, as flags with environment twins.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// imagesearch gRPC server: scoring, search over a gallery, model versions with rollout.
#[derive(Parser, Debug, Clone)]
#[command(name = "imagesearch-server", version)]
pub struct Config {
    /// Address of the gRPC API.
    #[arg(long, env = "IMAGESEARCH_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Address of the Prometheus metrics endpoint (`/metrics`); "off" disables it.
    #[arg(long, env = "IMAGESEARCH_METRICS_LISTEN", default_value = "127.0.0.1:9091")]
    pub metrics_listen: String,
    /// Model repository (encoders/ and scorer/<version>/).
    #[arg(long, env = "IMAGESEARCH_MODELS", default_value = "models")]
    pub models: PathBuf,
    /// Where the gallery and the rollout are kept.
    #[arg(long, env = "IMAGESEARCH_DATA_DIR", default_value = "var/server")]
    pub data_dir: PathBuf,
    /// Scorer versions to load at start, comma separated; default the newest.
    #[arg(long, env = "IMAGESEARCH_VERSIONS", value_delimiter = ',')]
    pub versions: Vec<u32>,
    /// auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, env = "IMAGESEARCH_DEVICE", default_value = "auto")]
    pub device: String,
    /// Regions (ISO 3166-1 alpha-2, comma separated) where no description or image of a child
    /// may be shown. Requests without a region are treated as restricted.
    #[arg(long, env = "IMAGESEARCH_RESTRICTED_REGIONS", default_value = "")]
    pub restricted_regions: String,
    /// Bearer token for ModelAdmin calls; without one, admin calls are refused.
    #[arg(long, env = "IMAGESEARCH_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Most items per forward pass (1 = no cross-request batching).
    #[arg(long, env = "IMAGESEARCH_MAX_BATCH_SIZE", default_value_t = 32)]
    pub max_batch_size: usize,
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
    /// Largest k of a Search.
    #[arg(long, env = "IMAGESEARCH_MAX_K", default_value_t = 100)]
    pub max_k: usize,
    /// Most requests in flight on one ScoreStream.
    #[arg(long, env = "IMAGESEARCH_MAX_STREAM_IN_FLIGHT", default_value_t = 32)]
    pub max_stream_in_flight: usize,
    /// Photos whose image vectors are cached (by content hash).
    #[arg(long, env = "IMAGESEARCH_IMAGE_CACHE", default_value_t = 4096)]
    pub image_cache: usize,
    /// Texts whose vectors are cached.
    #[arg(long, env = "IMAGESEARCH_TEXT_CACHE", default_value_t = 16384)]
    pub text_cache: usize,
    /// Views of a photo that make its vector: both (photo and mirror image, as trained) or
    /// original (half the image-encoder cost; measured accuracy cost in README).
    #[arg(long, env = "IMAGESEARCH_IMAGE_VIEWS", default_value = "both")]
    pub image_views: imagesearch_model::ImageViews,
    /// Threads libtorch may use per forward pass (0 = libtorch's default).
    #[arg(long, env = "IMAGESEARCH_TORCH_THREADS", default_value_t = 0)]
    pub torch_threads: i32,
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

impl Config {
    /// The batcher's wait for a batch to fill.
    pub fn max_queue_delay(&self) -> Duration {
        Duration::from_micros(self.max_queue_delay_us)
    }
}
