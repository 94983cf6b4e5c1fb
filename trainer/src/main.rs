//! `imagesearch-train`: trains, evaluates and writes versioned scorer artifacts.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use imagesearch_model::ImageViews;
use imagesearch_trainer::dataset::DataPaths;
use imagesearch_trainer::detector::{summary_line, DetectorConfig};
use imagesearch_trainer::evaluate::metrics_table;
use imagesearch_trainer::head::HeadConfig;
use imagesearch_trainer::labels::Aggregation;
use imagesearch_trainer::pipeline::{self, CommonConfig, QueryBankConfig, TrainConfig};
use imagesearch_trainer::refine::RefineConfig;
use imagesearch_trainer::text_tuning::TuneConfig;

#[derive(Parser)]
#[command(name = "imagesearch-train", version, about = "Train and evaluate imagesearch scorer versions")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "IMAGESEARCH_LOG_JSON", global = true)]
    log_json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Train a new scorer version, evaluate it and write its report.
    Train(TrainArgs),
    /// Print the metrics of a scorer version (default: the newest).
    Eval(EvalArgs),
}

#[derive(Args)]
struct CommonArgs {
    /// Data root holding image_search/ and flickr8k_train/.
    #[arg(long, env = "IMAGESEARCH_DATA", default_value = "../shared/data")]
    data_dir: PathBuf,
    /// The judged set (default: <data-dir>/image_search).
    #[arg(long, env = "IMAGESEARCH_JUDGED_DIR")]
    judged_dir: Option<PathBuf>,
    /// The captioned photos (default: <data-dir>/flickr8k_train).
    #[arg(long, env = "IMAGESEARCH_FLICKR_DIR")]
    flickr_dir: Option<PathBuf>,
    /// Model repository (scorer versions are written to <models>/scorer/<n>).
    #[arg(long, env = "IMAGESEARCH_MODELS", default_value = "models")]
    models: PathBuf,
    /// Encoder directory (default: <models>/encoders).
    #[arg(long, env = "IMAGESEARCH_ENCODERS")]
    encoders: Option<PathBuf>,
    /// Image encoder name (a directory under the encoders).
    #[arg(long, env = "IMAGESEARCH_IMAGE_ENCODER", default_value = "efficientnet-lite0")]
    image_encoder: String,
    /// Text encoder name (a directory under the encoders).
    #[arg(long, env = "IMAGESEARCH_TEXT_ENCODER", default_value = "minilm-l6-v2")]
    text_encoder: String,
    /// Vector cache directory (default: $IMAGESEARCH_HOME/vectors, ~/.cache/imagesearch/vectors).
    #[arg(long, env = "IMAGESEARCH_CACHE")]
    cache_dir: Option<PathBuf>,
    /// auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, env = "IMAGESEARCH_DEVICE", default_value = "auto")]
    device: String,
    /// libtorch intra-op threads (default: libtorch's choice).
    #[arg(long, env = "IMAGESEARCH_THREADS", value_parser = clap::value_parser!(i32).range(1..))]
    threads: Option<i32>,
    /// Skip bad rows and photos (reported and counted) instead of stopping.
    #[arg(long, env = "IMAGESEARCH_SKIP_BAD_ROWS")]
    skip_bad_rows: bool,
    /// Photos per image-encoder batch (each photo is encoded as is and mirrored).
    #[arg(long, env = "IMAGESEARCH_IMAGE_BATCH", default_value_t = 8, value_parser = at_least(1))]
    image_batch: usize,
    /// Texts per text-encoder batch (length-sorted).
    #[arg(long, env = "IMAGESEARCH_TEXT_BATCH", default_value_t = 64, value_parser = at_least(1))]
    text_batch: usize,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// How expert and crowd judgments become one target.
    #[arg(long, env = "IMAGESEARCH_AGGREGATION", value_enum, default_value_t = Aggregation::Pooled)]
    aggregation: Aggregation,
    /// Fraction of judged photos held out for evaluation.
    #[arg(long, env = "IMAGESEARCH_HOLDOUT_FRACTION", default_value_t = 0.2, value_parser = fraction)]
    holdout_fraction: f64,
    /// Captioned photos held out for early stopping.
    #[arg(long, env = "IMAGESEARCH_VAL_PHOTOS", default_value_t = 300, value_parser = at_least(1))]
    val_photos: usize,
    /// Use only the first N captioned photos (quick runs and tests).
    #[arg(long, env = "IMAGESEARCH_LIMIT_FLICKR_PHOTOS")]
    limit_flickr_photos: Option<usize>,
    /// Test queries shown in the HTML report.
    #[arg(long, env = "IMAGESEARCH_REPORT_QUERIES", default_value_t = 10, value_parser = at_least(0))]
    report_queries: usize,
    /// Random seed (splits, initialisation, shuffling, dropout).
    #[arg(long, env = "IMAGESEARCH_SEED", default_value_t = 42)]
    seed: u64,
    /// Ensemble members.
    #[arg(long, env = "IMAGESEARCH_MEMBERS", default_value_t = 5, value_parser = at_least(1))]
    members: usize,
    /// Maximum epochs per member (early stopping on validation recall).
    #[arg(long, env = "IMAGESEARCH_MAX_EPOCHS", default_value_t = 30, value_parser = at_least(1))]
    max_epochs: usize,
    /// Epochs without validation improvement before stopping.
    #[arg(long, env = "IMAGESEARCH_PATIENCE", default_value_t = 3, value_parser = at_least(1))]
    patience: usize,
    #[arg(long, env = "IMAGESEARCH_BATCH_SIZE", default_value_t = 256, value_parser = at_least(2))]
    batch_size: usize,
    /// AdamW learning rate (3e-4 reached the best validation recall in half the epochs of 1e-4).
    #[arg(long, env = "IMAGESEARCH_LR", default_value_t = 3e-4)]
    lr: f64,
    #[arg(long, env = "IMAGESEARCH_WEIGHT_DECAY", default_value_t = 0.05)]
    weight_decay: f64,
    /// Joint embedding dimension per member.
    #[arg(long, env = "IMAGESEARCH_DIM", default_value_t = 512, value_parser = clap::value_parser!(i64).range(1..))]
    dim: i64,
    /// Hidden width of the tower MLPs.
    #[arg(long, env = "IMAGESEARCH_HIDDEN", default_value_t = 1024, value_parser = clap::value_parser!(i64).range(1..))]
    hidden: i64,
    #[arg(long, env = "IMAGESEARCH_INPUT_DROPOUT", default_value_t = 0.4)]
    input_dropout: f64,
    #[arg(long, env = "IMAGESEARCH_DROPOUT", default_value_t = 0.3)]
    dropout: f64,
    #[arg(long, env = "IMAGESEARCH_LABEL_SMOOTHING", default_value_t = 0.1)]
    label_smoothing: f64,
    /// Recall on validation photos that the child detector's threshold is chosen for.
    #[arg(long, env = "IMAGESEARCH_DETECTOR_RECALL", default_value_t = 0.98, value_parser = recall)]
    detector_recall: f64,
    /// Also measure the child detector as a small MLP (logged and in the manifest's
    /// `child_detector.metrics.mlp_probe`; not shipped; ~35 s on 2 cores).
    #[arg(long, env = "IMAGESEARCH_DETECTOR_MLP_PROBE")]
    detector_mlp_probe: bool,
    /// Ship no child detector (the server then restricts every photo without captions).
    #[arg(long, env = "IMAGESEARCH_NO_CHILD_DETECTOR")]
    no_child_detector: bool,
    /// Recall on validation texts that the query detector's threshold is chosen for.
    #[arg(long, env = "IMAGESEARCH_QUERY_DETECTOR_RECALL", default_value_t = 0.98, value_parser = recall)]
    query_detector_recall: f64,
    /// Ship no query detector (the server then judges texts by the word list alone).
    #[arg(long, env = "IMAGESEARCH_NO_QUERY_DETECTOR")]
    no_query_detector: bool,
    /// Views gallery photos are indexed with (both, or crops: 14 views); default: the one that
    /// ranks best on the lever validation set.
    #[arg(long, env = "IMAGESEARCH_INDEX_VIEWS", value_enum)]
    index_views: Option<ImageViews>,
    /// Training captions in the query bank (inverted-softmax normalisation); 0 = none.
    #[arg(long, env = "IMAGESEARCH_QUERY_BANK", default_value_t = 5000, value_parser = at_least(0))]
    query_bank: usize,
    /// β of the query bank's inverted softmax, used as given; default: chosen on the lever
    /// validation set (no bank is one of the candidates).
    #[arg(long, env = "IMAGESEARCH_QUERY_BANK_BETA", value_parser = positive)]
    query_bank_beta: Option<f64>,
    /// Read open-region queries through the query word map (child words the scorer never
    /// trained on → adult words it did: boy → man); default: chosen on the lever validation set.
    #[arg(long, env = "IMAGESEARCH_QUERY_WORD_MAP", value_parser = on_off)]
    query_word_map: Option<bool>,
    /// Epochs of tuning the text encoder with the image side locked (LiT) before the head
    /// trains; the best epoch on validation becomes a new encoder that the version names
    /// (0 = the base encoder as is; about 170 s an epoch on 2 CPU cores).
    #[arg(long, env = "IMAGESEARCH_TUNE_TEXT_EPOCHS", default_value_t = 0, value_parser = at_least(0))]
    tune_text_epochs: usize,
    /// AdamW learning rate of the text encoder's weights while tuning.
    #[arg(long, env = "IMAGESEARCH_TUNE_TEXT_LR", default_value_t = 2e-5, value_parser = positive)]
    tune_text_lr: f64,
    /// Captions per tuning batch (the contrastive loss's negatives).
    #[arg(long, env = "IMAGESEARCH_TUNE_TEXT_BATCH", default_value_t = 128, value_parser = at_least(2))]
    tune_text_batch: usize,
    /// Share of the lever validation photos (judged, allowed by the law, neither held out nor
    /// test photos) whose own captions and human-matched texts train a second ensemble, kept
    /// when it ranks better on the rest of them (0 = off; doubles the members' training time).
    #[arg(long, env = "IMAGESEARCH_JUDGED_POSITIVES", default_value_t = 0.0, value_parser = share)]
    judged_positives: f64,
    /// Score's refinement: a weight per joint dimension, fitted by ridge regression on the
    /// judged training pairs' targets and kept when it orders a quarter of those photos' pairs
    /// better than the plain cosine (Kendall τ); Search is unchanged.
    #[arg(long, env = "IMAGESEARCH_SCORE_REFINEMENT", default_value = "on", value_parser = on_off, action = clap::ArgAction::Set)]
    score_refinement: bool,
    /// Fewest validation pairs (photo and text both unseen by the fit) Score's refinement is
    /// chosen on; with fewer, Score keeps the plain cosine.
    #[arg(long, env = "IMAGESEARCH_SCORE_REFINEMENT_MIN_PAIRS", default_value_t = 1000, value_parser = at_least(1))]
    score_refinement_min_pairs: usize,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Version to evaluate (default: the newest).
    #[arg(long, env = "IMAGESEARCH_VERSION")]
    version: Option<u32>,
    /// Queries to rank against the test photos (the test_queries.csv format).
    #[arg(long)]
    queries: Option<PathBuf>,
    /// Print the metrics as JSON.
    #[arg(long)]
    json: bool,
    /// Photo vectors as the server makes them: both (photo and mirror image, as trained),
    /// original (half the encoder cost) or crops (14 views) — to measure what
    /// `imagesearch-server --image-views`/`--index-views` cost; default: the version's gallery views.
    #[arg(long, value_enum)]
    image_views: Option<ImageViews>,
    /// Encoder files to make the vectors with: reference (as trained), serving or serving-bf16
    /// (as `imagesearch-server --encoder-files` would serve them: what a variant costs).
    #[arg(long, value_enum, default_value_t = imagesearch_model::EncoderFile::Reference)]
    encoder_files: imagesearch_model::EncoderFile,
}

/// A count flag with a lower bound.
fn at_least(min: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(min..)
}

/// A share in [0, 1): 0 turns a lever off, 1 would leave nothing to validate it on.
fn share(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if (0.0..1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not in [0, 1)"))
    }
}

/// A fraction strictly between 0 and 1.
fn fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err(format!("{v} is not strictly between 0 and 1"))
    }
}

/// A number above 0.
fn positive(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v > 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{v} is not above 0"))
    }
}

/// `on` or `off`.
fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("'{s}' is neither on nor off")),
    }
}

/// A recall in (0, 1].
fn recall(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(format!("{v} is not in (0, 1]"))
    }
}

fn common(a: &CommonArgs) -> anyhow::Result<CommonConfig> {
    let device = imagesearch_model::device::parse_device(&a.device).map_err(anyhow::Error::msg)?;
    if let Some(n) = a.threads {
        tch::set_num_threads(n);
    }
    let home = std::env::var_os("IMAGESEARCH_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/imagesearch")))
        .unwrap_or_else(|| PathBuf::from(".cache/imagesearch"));
    Ok(CommonConfig {
        paths: DataPaths {
            judged_dir: a.judged_dir.clone().unwrap_or_else(|| a.data_dir.join("image_search")),
            flickr_dir: a.flickr_dir.clone().unwrap_or_else(|| a.data_dir.join("flickr8k_train")),
        },
        encoders: a.encoders.clone().unwrap_or_else(|| a.models.join("encoders")),
        models: a.models.clone(),
        image_encoder: a.image_encoder.clone(),
        text_encoder: a.text_encoder.clone(),
        cache_dir: a.cache_dir.clone().unwrap_or_else(|| home.join("vectors")),
        device,
        skip_bad_rows: a.skip_bad_rows,
        image_batch: a.image_batch,
        text_batch: a.text_batch,
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    match cli.command {
        Command::Train(a) => {
            let cfg = TrainConfig {
                common: common(&a.common)?,
                aggregation: a.aggregation,
                holdout_fraction: a.holdout_fraction,
                val_photos: a.val_photos,
                limit_flickr_photos: a.limit_flickr_photos,
                report_queries: a.report_queries,
                detector: (!a.no_child_detector).then(|| DetectorConfig {
                    target_recall: a.detector_recall,
                    mlp_probe: a.detector_mlp_probe,
                    seed: a.seed,
                    ..DetectorConfig::default()
                }),
                query_detector: (!a.no_query_detector).then(|| DetectorConfig {
                    target_recall: a.query_detector_recall,
                    seed: a.seed,
                    ..DetectorConfig::default()
                }),
                index_views: a.index_views,
                query_bank: QueryBankConfig { size: a.query_bank, beta: a.query_bank_beta },
                query_word_map: a.query_word_map,
                judged_positives: a.judged_positives,
                refine: RefineConfig {
                    enabled: a.score_refinement,
                    min_validation_pairs: a.score_refinement_min_pairs,
                    seed: a.seed,
                    ..RefineConfig::default()
                },
                text_tuning: TuneConfig {
                    epochs: a.tune_text_epochs,
                    lr: a.tune_text_lr,
                    batch_size: a.tune_text_batch,
                    seed: a.seed,
                    ..TuneConfig::default()
                },
                head: HeadConfig {
                    dim: a.dim,
                    hidden: a.hidden,
                    input_dropout: a.input_dropout,
                    dropout: a.dropout,
                    lr: a.lr,
                    weight_decay: a.weight_decay,
                    batch_size: a.batch_size,
                    max_epochs: a.max_epochs,
                    patience: a.patience,
                    label_smoothing: a.label_smoothing,
                    members: a.members,
                    seed: a.seed,
                },
            };
            let out = pipeline::train(&cfg).context("training failed")?;
            println!("{}", metrics_table(&out.metrics));
            match &out.detector {
                Some(d) => println!("{}", summary_line(d)),
                None => println!("child detector: none (--no-child-detector)"),
            }
            println!("scorer version {} written to {}", out.version, out.dir.display());
            println!("report: {}", out.dir.join("report.html").display());
        }
        Command::Eval(a) => {
            let cfg = common(&a.common)?;
            let out = pipeline::eval(&cfg, a.version, a.queries, a.image_views, a.encoder_files).context("evaluation failed")?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("scorer version {}", out.version);
                println!("{}", metrics_table(&out.metrics));
                for (group, c) in out.child_detector.iter().flatten() {
                    println!("child detector, {group}: {}", c.line());
                }
            }
        }
    }
    Ok(())
}
