//! imagesearch-train: reads the judged data with polars, aggregates the judgments into targets,
//! excludes what the law forbids, encodes photos and texts with the TorchScript encoders,
//! trains a two-tower scorer with tch, evaluates it honestly and writes a versioned TorchScript
//! artifact with a manifest and an HTML report.

pub mod artifact;
pub mod dataset;
pub mod detector;
mod detector_mlp;
pub mod evaluate;
pub mod head;
pub mod labels;
pub mod metrics;
pub mod pipeline;
pub mod progress;
pub mod query_detector;
pub mod refine;
pub mod report;
pub mod split;
pub mod tables;
pub mod text_tuning;
pub mod vectors;
