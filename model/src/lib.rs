//! What the trainer and the server share: image decoding and preprocessing, the tokenizer,
//! the TorchScript encoders, the scorer artifact and the on-disk model repository.

pub mod detector;
pub mod device;
pub mod encoder;
pub mod error;
pub mod hashing;
pub mod kernel_caches;
pub mod preprocess;
pub mod repository;
pub mod scorer;
pub mod tokenize;
pub mod views;
pub mod word_map;

pub use detector::{ChildDetector, DetectorInfo, DetectorWeights, DETECTOR_FILE, QUERY_DETECTOR_FILE};
pub use encoder::{EncoderFile, EncoderKind, EncoderManifest, ImageEncoder, ServingVariant, TextEncoder};
pub use error::ModelError;
pub use preprocess::{ImageError, ImageLimits};
pub use repository::{ModelRepository, StagedVersion};
pub use scorer::{Calibration, EncoderRef, Scorer, ScorerManifest};
pub use tokenize::{TextError, TextTokenizer};
pub use views::ImageViews;
pub use word_map::WordMap;
