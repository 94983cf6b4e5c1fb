//! `imagesearch`: the command-line client — search (table, JSON or an HTML page), scoring,
//! gallery, model admin, health, the offline policy check, and the load tester.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use imagesearch_client::html::search_html;
use imagesearch_client::loadtest::{self, GrpcTarget, LoadConfig, Mode, Op, Workload};
use imagesearch_client::{Client, ClientConfig, ImageRef, SearchOptions, Slot};
use imagesearch_compliance::{RegionPolicy, Verdict};
use imagesearch_proto::v1 as pb;
use tonic_health::pb::health_check_response::ServingStatus;

#[derive(Parser)]
#[command(name = "imagesearch", version, about = "imagesearch client: search, score, gallery, models, load tests")]
struct Cli {
    /// Server endpoint (http:// or https://).
    #[arg(long, env = "IMAGESEARCH_ENDPOINT", default_value = "http://127.0.0.1:50051", global = true)]
    endpoint: String,
    /// Bearer token for `models` commands and `gallery review`.
    #[arg(long, env = "IMAGESEARCH_ADMIN_TOKEN", global = true, hide_env_values = true)]
    admin_token: Option<String>,
    /// Bearer token for gallery writes (`gallery add`, `gallery remove`).
    #[arg(long, env = "IMAGESEARCH_WRITER_TOKEN", global = true, hide_env_values = true)]
    writer_token: Option<String>,
    /// PEM CA certificate to trust for an https:// endpoint (system roots otherwise).
    #[arg(long, env = "IMAGESEARCH_TLS_CA", global = true)]
    tls_ca: Option<PathBuf>,
    /// PEM client certificate, for servers that require one (with --tls-key).
    #[arg(long, env = "IMAGESEARCH_CLIENT_TLS_CERT", global = true, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "IMAGESEARCH_CLIENT_TLS_KEY", global = true, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Name the server's certificate must carry, when it differs from the endpoint's host.
    #[arg(long, env = "IMAGESEARCH_TLS_DOMAIN", global = true)]
    tls_domain: Option<String>,
    /// Deadline of each call in seconds (retries included).
    #[arg(long, env = "IMAGESEARCH_TIMEOUT_S", default_value_t = 30.0, global = true)]
    timeout_s: f64,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ranks the gallery by a description, under the law of the region.
    Search {
        query: String,
        /// ISO 3166-1 alpha-2 region of the user (missing: treated as restricted).
        #[arg(long)]
        region: Option<String>,
        #[arg(short, long, default_value_t = 5)]
        k: u32,
        /// Pin a scorer version.
        #[arg(long, default_value_t = 0)]
        version: u32,
        /// Sticky rollout key (e.g. a user id).
        #[arg(long, default_value = "")]
        routing_key: String,
        /// Write an HTML page with the photos (or the disclaimer in their place).
        #[arg(long)]
        html: Option<PathBuf>,
        /// Leave out hits scoring below this (the score is calibrated, in [0, 1]).
        #[arg(long, default_value_t = 0.0)]
        min_score: f32,
        /// The next page: the token the previous page printed.
        #[arg(long, default_value = "")]
        page_token: String,
        /// Only photos whose attribute KEY is one of the values: `KEY=V1,V2` (repeat for more
        /// conditions, all must hold).
        #[arg(long = "where", value_name = "KEY=V1,V2", value_parser = parse_condition)]
        conditions: Vec<pb::AttributeCondition>,
        /// Only photos added at or after / before this time (Unix milliseconds).
        #[arg(long)]
        added_from_ms: Option<i64>,
        #[arg(long)]
        added_before_ms: Option<i64>,
        /// Weight in [0, 1] of the keyword ranking over captions fused with the vector ranking.
        #[arg(long, default_value_t = 0.0)]
        keyword_weight: f32,
    },
    /// Scores how well texts describe photos (pairs: the n-th --image with the n-th --text).
    Score {
        /// A photo file, or gallery:<id>.
        #[arg(long, required = true)]
        image: Vec<String>,
        #[arg(long, required = true)]
        text: Vec<String>,
        #[arg(long)]
        region: Option<String>,
    },
    /// The gallery: add a directory, remove photos, stats.
    Gallery {
        #[command(subcommand)]
        command: GalleryCommand,
    },
    /// Model versions and rollout (needs the admin token).
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// grpc.health.v1 status of the server (or of one service).
    Health {
        #[arg(long, default_value = "")]
        service: String,
    },
    /// Build, device, versions, rollout, limits and restricted regions of the server.
    Info,
    /// Says, offline, whether the shared rules block a text in a region, and which rule matched.
    Policy {
        #[arg(long)]
        region: Option<String>,
        /// Regions where the law applies (comma separated).
        #[arg(long, env = "IMAGESEARCH_RESTRICTED_REGIONS", default_value = "")]
        restricted: String,
        text: String,
    },
    /// Load test: closed or open loop, a mix of Score, ScoreStream and Search.
    Loadtest(LoadArgs),
}

#[derive(Subcommand)]
enum GalleryCommand {
    /// Adds every JPEG/PNG/WebP of a directory (id = file name).
    Add {
        dir: PathBuf,
        /// Captions, one per line: `<file name>[#n]<TAB><caption>`; they decide the photos'
        /// restricted flags (photos without captions are checked by the child detector).
        #[arg(long)]
        captions: Option<PathBuf>,
        /// An attribute every photo of the directory gets, `KEY=VALUE` (repeat for more), for
        /// searches to filter on (e.g. `--attr owner=ana --attr album=tokyo`).
        #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_attribute)]
        attributes: Vec<(String, String)>,
        #[arg(long, default_value_t = 32)]
        chunk: usize,
    },
    Remove { ids: Vec<String> },
    Stats,
    /// Records a review of a photo's restricted flag (needs the admin token); applies to every
    /// photo with the same bytes.
    Review {
        id: String,
        /// The photo shows a child (restrict) or does not (clear a detector's or unverified flag).
        #[arg(long, value_enum)]
        decision: Decision,
        #[arg(long)]
        reviewer: String,
        #[arg(long, default_value = "")]
        note: String,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    List,
    Load { version: u32 },
    Unload { version: u32 },
    /// Sets the rollout when --stable is given; shows it otherwise.
    Rollout {
        #[arg(long)]
        stable: Option<u32>,
        #[arg(long, default_value_t = 0)]
        canary: u32,
        #[arg(long, default_value_t = 0)]
        percent: u32,
    },
}

#[derive(clap::Args)]
struct LoadArgs {
    /// The product dataset's directory (test_queries.csv, test_images/).
    #[arg(long, env = "IMAGESEARCH_LOAD_DATA", default_value = "../shared/data/image_search")]
    data: PathBuf,
    /// How the load is offered: closed (fixed concurrency) or open (fixed request rate).
    #[arg(long, value_enum, default_value_t = LoadMode::Closed)]
    mode: LoadMode,
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Requests per second in open mode.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Measured seconds (after warm-up).
    #[arg(long, default_value_t = 20.0)]
    duration_s: f64,
    /// Stop after this many measured requests instead.
    #[arg(long)]
    requests: Option<u64>,
    #[arg(long, default_value_t = 3.0)]
    warmup_s: f64,
    /// Mix of operations with weights: `score`, `stream` and `search`, each `=<weight>` (1 if left out).
    #[arg(long, default_value = "score=1,stream=1,search=1", value_parser = parse_mix_arg)]
    mix: MixArg,
    /// Pairs in each Score / ScoreStream request.
    #[arg(long, default_value_t = 1)]
    pairs: usize,
    #[arg(long, default_value = "US")]
    region: String,
    #[arg(short, long, default_value_t = 5)]
    k: u32,
    /// Run closed loop at each of these concurrencies (e.g. 1,8,32) and write a table and plot.
    #[arg(long, value_delimiter = ',')]
    sweep: Vec<usize>,
    /// Where a sweep writes sweep.md, sweep.svg and sweep.json.
    #[arg(long, default_value = "var/loadtest")]
    out_dir: PathBuf,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Retries of a refused call (RESOURCE_EXHAUSTED, UNAVAILABLE) with back-off, as a
    /// production client would; 0 counts every refusal (and how fast it came) as the server gave it.
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Closed loop: resend at once after a refusal, ignoring the server's retry pushback (by
    /// default a refused worker waits as long as the server asked, as a well-behaved client does).
    #[arg(long)]
    ignore_pushback: bool,
}

/// `gallery review --decision`: what the reviewer saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Decision {
    /// The photo shows a child: withhold it in restricted regions.
    Restrict,
    /// It does not: clear a detector's or an unverified flag.
    Clear,
}

impl Decision {
    /// The restricted flag the review sets.
    fn restricts(self) -> bool {
        self == Decision::Restrict
    }
}

/// `loadtest --mode`: how the load is offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LoadMode {
    /// A fixed number of workers (--concurrency), each waiting for its answer.
    Closed,
    /// Requests sent on a fixed schedule (--rate), whatever the answers do.
    Open,
}

impl LoadMode {
    /// The load tester's mode, with the setting that goes with it.
    fn with(self, concurrency: usize, rate: f64) -> Mode {
        match self {
            LoadMode::Closed => Mode::Closed { concurrency },
            LoadMode::Open => Mode::Open { rate },
        }
    }
}

/// `loadtest --mix`: the spec as given (for titles) and the operations with weights it names.
#[derive(Clone, Debug)]
struct MixArg {
    spec: String,
    ops: Vec<(Op, u32)>,
}

/// Parses `--mix` (see [`loadtest::parse_mix`]).
fn parse_mix_arg(s: &str) -> Result<MixArg, String> {
    Ok(MixArg { spec: s.to_string(), ops: loadtest::parse_mix(s)? })
}

/// The server's limits as `(name, value)` rows, named as in the API (and in `--json`).
fn limit_rows(l: &pb::Limits) -> [(&'static str, u64); 22] {
    [
        ("max_pairs_per_request", u64::from(l.max_pairs_per_request)),
        ("max_batch_size", u64::from(l.max_batch_size)),
        ("max_queue_delay_us", l.max_queue_delay_us),
        ("queue_capacity", u64::from(l.queue_capacity)),
        ("max_message_bytes", l.max_message_bytes),
        ("max_text_chars", u64::from(l.max_text_chars)),
        ("max_image_bytes", l.max_image_bytes),
        ("max_image_pixels", l.max_image_pixels),
        ("max_request_pixels", l.max_request_pixels),
        ("max_k", u64::from(l.max_k)),
        ("max_stream_in_flight", u64::from(l.max_stream_in_flight)),
        ("max_answer_photo_bytes", l.max_answer_photo_bytes),
        ("decode_workers", u64::from(l.decode_workers)),
        ("decode_queue", u64::from(l.decode_queue)),
        ("max_search_depth", u64::from(l.max_search_depth)),
        ("max_photo_attributes", u64::from(l.max_photo_attributes)),
        ("max_filter_conditions", u64::from(l.max_filter_conditions)),
        ("max_concurrent_requests", u64::from(l.max_concurrent_requests)),
        ("max_queue_time_ms", l.max_queue_time_ms),
        ("image_max_batch_size", u64::from(l.image_max_batch_size)),
        ("image_instances", u64::from(l.image_instances)),
        ("text_instances", u64::from(l.text_instances)),
    ]
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Policy { region, restricted, text } = &cli.command {
        let policy = RegionPolicy::parse_list(restricted)?;
        let verdict = policy.check_query(region.as_deref(), text)?;
        if cli.json {
            let (blocked, rule) = match &verdict { Verdict::Allowed => (false, None), Verdict::Blocked(m) => (true, Some(m.to_string())) };
            return print_json(&serde_json::json!({"blocked": blocked, "rule": rule, "region": region}));
        }
        match verdict {
            Verdict::Allowed => println!("allowed"),
            Verdict::Blocked(m) => println!("blocked: {m}"),
        }
        return Ok(());
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut cfg = ClientConfig::new(cli.endpoint.clone());
    if let Command::Loadtest(a) = &cli.command {
        // A load generator counts what the server answered: refusals are not retried unless asked.
        cfg.retry.max_attempts = a.retries.saturating_add(1);
    }
    cfg.admin_token = cli.admin_token.clone();
    cfg.writer_token = cli.writer_token.clone();
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| p.display().to_string());
    cfg.tls_ca_pem = cli.tls_ca.as_ref().map(read).transpose()?;
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        cfg.tls_identity_pem = Some((read(cert)?, read(key)?));
    }
    cfg.tls_domain = cli.tls_domain.clone();
    cfg.request_timeout = Duration::from_secs_f64(cli.timeout_s.max(0.001));
    let client = Client::connect(cfg).await?;
    let json = cli.json;
    match cli.command {
        Command::Policy { .. } => unreachable!("handled offline"),
        Command::Search { query, region, k, version, routing_key, html, min_score, page_token, conditions, added_from_ms, added_before_ms, keyword_weight } => {
            let filter = (!conditions.is_empty() || added_from_ms.is_some() || added_before_ms.is_some()).then(|| pb::SearchFilter {
                attributes: conditions,
                added_from_unix_ms: added_from_ms.unwrap_or(0),
                added_before_unix_ms: added_before_ms.unwrap_or(0),
            });
            let opts = SearchOptions { version, routing_key, include_photos: html.is_some(), min_score, page_token, filter, keyword_weight };
            let r = match client.search_with(&query, region.as_deref(), k, &opts).await {
                Err(imagesearch_client::ClientError::QueryWithheld { disclaimer, rule, .. }) => {
                    // Refused by the client itself: same answer as the server's.
                    eprintln!("query withheld by the client ({rule})");
                    imagesearch_client::SearchResults { hits: vec![], version: 0, query_withheld: Some(disclaimer), gallery_size: 0, next_page_token: String::new() }
                }
                other => other?,
            };
            if let Some(path) = &html {
                std::fs::write(path, search_html(&query, region.as_deref().unwrap_or(""), &r)).with_context(|| path.display().to_string())?;
                eprintln!("wrote {}", path.display());
            }
            if json {
                let hits: Vec<_> = r.hits.iter().map(|s| match s {
                    Slot::Photo(p) => serde_json::json!({"rank": p.rank, "id": p.id, "score": p.score, "reference": p.reference}),
                    Slot::Withheld { rank, score, disclaimer } => serde_json::json!({"rank": rank, "score": score, "withheld": disclaimer}),
                }).collect();
                return print_json(&serde_json::json!({
                    "query": query, "region": region, "version": r.version, "query_withheld": r.query_withheld, "hits": hits,
                    "next_page_token": r.next_page_token,
                }));
            }
            println!("version {} · gallery {} photos", r.version, r.gallery_size);
            if let Some(d) = &r.query_withheld {
                println!("{d}");
            }
            for s in &r.hits {
                match s {
                    Slot::Photo(p) => println!("{:>3}  {:.4}  {}", p.rank, p.score, p.id),
                    Slot::Withheld { rank, score, disclaimer } => println!("{rank:>3}  {score:.4}  [{disclaimer}]"),
                }
            }
            if !r.next_page_token.is_empty() {
                println!("next page: --page-token {}", r.next_page_token);
            }
        }
        Command::Score { image, text, region } => {
            anyhow::ensure!(image.len() == text.len(), "{} --image but {} --text: give them in pairs", image.len(), text.len());
            let mut pairs = Vec::new();
            for (i, t) in image.iter().zip(&text) {
                let img = match i.strip_prefix("gallery:") {
                    Some(id) => ImageRef::Gallery(id.to_string()),
                    None => ImageRef::Bytes(std::fs::read(i).with_context(|| i.clone())?),
                };
                pairs.push((img, t.clone()));
            }
            let (scores, t) = client.score(pairs, region.as_deref()).await?;
            if json {
                return print_json(&serde_json::json!({"scores": scores, "version": t.version, "queue_us": t.queue.as_micros() as u64, "inference_us": t.inference.as_micros() as u64}));
            }
            for ((i, tx), s) in image.iter().zip(&text).zip(&scores) {
                println!("{s:.4}  {i}  {tx}");
            }
            println!("version {} · queue {:?} · inference {:?}", t.version, t.queue, t.inference);
        }
        Command::Gallery { command } => match command {
            GalleryCommand::Add { dir, captions, attributes, chunk } => {
                let captions = match &captions {
                    Some(p) => imagesearch_client::read_captions(p)?,
                    None => Default::default(),
                };
                let bar = indicatif::ProgressBar::new(0);
                bar.set_style(indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} photos {elapsed}").unwrap());
                let r = client.add_directory(&dir, &captions, &attributes.into_iter().collect(), chunk, |done, total| { bar.set_length(total as u64); bar.set_position(done as u64); }).await?;
                bar.finish_and_clear();
                if json {
                    let rejected: Vec<_> = r.rejected.iter().map(|x| serde_json::json!({"id": x.id, "reason": x.reason})).collect();
                    return print_json(&serde_json::json!({"added": r.added, "replaced": r.replaced, "restricted": r.restricted, "rejected": rejected}));
                }
                println!("added {} · replaced {} · restricted {} · rejected {}", r.added, r.replaced, r.restricted, r.rejected.len());
                for x in &r.rejected {
                    println!("  rejected {}: {}", x.id, x.reason);
                }
            }
            GalleryCommand::Remove { ids } => {
                let r = client.remove_photos(ids).await?;
                if json {
                    return print_json(&serde_json::json!({"removed": r.removed, "not_found": r.not_found}));
                }
                println!("removed {} · not found {:?}", r.removed, r.not_found);
            }
            GalleryCommand::Stats => {
                let s = client.gallery_stats().await?;
                let v = serde_json::json!({"photos": s.photos, "restricted": s.restricted, "restricted_by_captions": s.restricted_by_captions,
                    "restricted_by_detector": s.restricted_by_detector, "restricted_unverified": s.restricted_unverified,
                    "restricted_by_review": s.restricted_by_review, "cleared_by_review": s.cleared_by_review,
                    "photo_bytes": s.photo_bytes, "log_bytes": s.log_bytes});
                if json { return print_json(&v); }
                println!("{} photos · {} restricted ({} by captions, {} by the detector, {} unverified, {} by review; {} cleared by review) · {} MB photos · {} MB log",
                    s.photos, s.restricted, s.restricted_by_captions, s.restricted_by_detector, s.restricted_unverified,
                    s.restricted_by_review, s.cleared_by_review, s.photo_bytes / 1_000_000, s.log_bytes / 1_000_000);
            }
            GalleryCommand::Review { id, decision, reviewer, note } => {
                let r = client.review_photo(&id, decision.restricts(), &reviewer, &note).await?;
                if json {
                    return print_json(&serde_json::json!({"id": id, "flag": r.flag, "changed": r.changed}));
                }
                println!("{id}: {} · {} photo(s) changed: {:?}", r.flag, r.changed.len(), r.changed);
            }
        },
        Command::Models { command } => match command {
            ModelsCommand::List => {
                let vs = client.list_versions().await?;
                if json {
                    let v: Vec<_> = vs.iter().map(|s| serde_json::json!({"version": s.version, "state": state_name(s), "role": s.role, "error": s.error,
                        "manifest": serde_json::from_str::<serde_json::Value>(&s.manifest_json).unwrap_or_default()})).collect();
                    return print_json(&v);
                }
                for s in vs {
                    println!("{:>4}  {:<9} {:<7} {}", s.version, state_name(&s), s.role, s.error);
                }
            }
            ModelsCommand::Load { version } => {
                let s = client.load_version(version).await?;
                println!("version {} {}", s.version, state_name(&s));
            }
            ModelsCommand::Unload { version } => {
                client.unload_version(version).await?;
                println!("version {version} unloaded");
            }
            ModelsCommand::Rollout { stable, canary, percent } => {
                let r = match stable {
                    Some(stable) => client.set_rollout(stable, canary, percent).await?,
                    None => client.get_rollout().await?,
                };
                if json {
                    return print_json(&serde_json::json!({"stable": r.stable, "canary": r.canary, "canary_percent": r.canary_percent}));
                }
                println!("stable {} · canary {} at {}%", r.stable, r.canary, r.canary_percent);
            }
        },
        Command::Health { service } => {
            let status = ServingStatus::try_from(client.health(&service).await?).unwrap_or(ServingStatus::Unknown);
            let name = status.as_str_name();
            if json { return print_json(&serde_json::json!({"service": service, "status": name})); }
            println!("{name}");
            if status != ServingStatus::Serving {
                std::process::exit(1);
            }
        }
        Command::Info => {
            let info = client.info().await?;
            if json {
                let l = info.limits.unwrap_or_default();
                let limits: serde_json::Map<String, serde_json::Value> =
                    limit_rows(&l).into_iter().map(|(name, value)| (name.to_string(), serde_json::Value::from(value))).collect();
                let r = info.rollout.unwrap_or_default();
                return print_json(&serde_json::json!({
                    "build_version": info.build_version, "git_commit": info.git_commit, "device": info.device,
                    "versions": info.versions.iter().map(|v| serde_json::json!({"version": v.version, "created": v.created, "child_detector": v.has_child_detector})).collect::<Vec<_>>(),
                    "rollout": {"stable": r.stable, "canary": r.canary, "canary_percent": r.canary_percent},
                    "restricted_regions": info.restricted_regions,
                    "image_views": info.image_views, "index_views": info.index_views, "text_encoder_device": info.text_encoder_device,
                    "limits": limits,
                }));
            }
            println!(
                "build {} ({}) on {} (text encoder on {}, image views: {} for Score, {} for gallery photos)",
                info.build_version, info.git_commit, info.device, info.text_encoder_device, info.image_views, info.index_views
            );
            for v in &info.versions {
                println!("  scorer version {} created {} child detector: {}", v.version, v.created, v.has_child_detector);
            }
            if let Some(r) = info.rollout {
                println!("  rollout: stable {} · canary {} at {}%", r.stable, r.canary, r.canary_percent);
            }
            println!("  restricted regions: {}", info.restricted_regions.join(","));
            if let Some(l) = &info.limits {
                let rows = limit_rows(l);
                let width = rows.iter().map(|(name, _)| name.len() + 1).max().unwrap_or(0);
                println!("  limits:");
                for (name, value) in rows {
                    println!("    {:<width$} {value}", format!("{name}:"));
                }
            }
        }
        Command::Loadtest(a) => loadtest_cmd(client, a, json).await?,
    }
    Ok(())
}

/// A version's state as `models` prints it.
fn state_name(s: &pb::VersionStatus) -> &'static str {
    match s.state() {
        pb::VersionState::Available => "available",
        pb::VersionState::Loading => "loading",
        pb::VersionState::Ready => "ready",
        pb::VersionState::Failed => "failed",
        pb::VersionState::Unspecified => "unknown",
    }
}

/// `loadtest`: one run in the chosen mode, or a closed-loop sweep that writes a table and a plot.
async fn loadtest_cmd(client: Client, a: LoadArgs, json: bool) -> anyhow::Result<()> {
    let mut work = Workload::from_dataset(&a.data, 100)?;
    work.region = a.region.clone();
    work.k = a.k;
    work.pairs_per_score = a.pairs;
    let in_flight = a.sweep.iter().copied().max().unwrap_or(a.concurrency).max(1);
    let target = Arc::new(GrpcTarget::new(client, work, in_flight).await?);
    let base = |mode| LoadConfig {
        mode,
        duration: if a.requests.is_some() { None } else { Some(Duration::from_secs_f64(a.duration_s)) },
        requests: a.requests,
        warmup: Duration::from_secs_f64(a.warmup_s),
        mix: a.mix.ops.clone(),
        seed: a.seed,
        max_outstanding: 10_000,
        honour_pushback: !a.ignore_pushback,
    };
    if !a.sweep.is_empty() {
        let mut rows = Vec::new();
        for &c in &a.sweep {
            let r = loadtest::run(target.clone(), &base(Mode::Closed { concurrency: c })).await;
            eprintln!("concurrency {c}: {:.1} req/s, p50 {:.2} ms, p99 {:.2} ms", r.throughput_rps, r.latency.p50_ms, r.latency.p99_ms);
            rows.push((c, r));
        }
        std::fs::create_dir_all(&a.out_dir)?;
        let table = loadtest::sweep_table(&rows);
        std::fs::write(a.out_dir.join("sweep.md"), &table)?;
        std::fs::write(a.out_dir.join("sweep.svg"), loadtest::sweep_svg(&rows, &format!("imagesearch load: {}", a.mix.spec)))?;
        let reports: Vec<_> = rows.iter().map(|(c, r)| serde_json::json!({"concurrency": c, "report": r})).collect();
        std::fs::write(a.out_dir.join("sweep.json"), serde_json::to_string_pretty(&reports)?)?;
        if json { return print_json(&reports); }
        print!("{table}");
        eprintln!("wrote {}/sweep.{{md,svg,json}}", a.out_dir.display());
        return Ok(());
    }
    let r = loadtest::run(target, &base(a.mode.with(a.concurrency, a.rate))).await;
    if json { return print_json(&r); }
    let l = &r.latency;
    println!("{:?}: {} ok in {:.1} s = {:.1} req/s", r.mode, r.ok, r.measured_s, r.throughput_rps);
    println!("latency ms: p50 {:.2} · p90 {:.2} · p99 {:.2} · p99.9 {:.2} · max {:.2}", l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms);
    for (op, l) in &r.by_op {
        println!("  {op:<7} n={:<6} p50 {:.2} · p99 {:.2}", l.count, l.p50_ms, l.p99_ms);
    }
    println!("errors: {:?} · versions: {:?}", r.errors, r.versions);
    if r.pushbacks > 0 {
        println!("waited {} times as refusals asked ({:.1} s in all)", r.pushbacks, r.pushed_back_s);
    }
    Ok(())
}

/// `KEY=VALUE` of `--attr`.
fn parse_attribute(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("'{s}' is not KEY=VALUE"))?;
    Ok((k.to_string(), v.to_string()))
}

/// `KEY=V1,V2` of `--where`.
fn parse_condition(s: &str) -> Result<pb::AttributeCondition, String> {
    let (key, values) = s.split_once('=').ok_or_else(|| format!("'{s}' is not KEY=V1,V2"))?;
    Ok(pb::AttributeCondition { key: key.to_string(), any_of: values.split(',').map(str::to_string).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        let mut argv = vec!["imagesearch"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|cli| cli.command)
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn review_decisions_are_a_fixed_set() {
        let review = |d: &str| parse(&["gallery", "review", "p.jpg", "--decision", d, "--reviewer", "ann"]);
        for (given, restricts) in [("restrict", true), ("clear", false)] {
            match review(given) {
                Ok(Command::Gallery { command: GalleryCommand::Review { decision, .. } }) => assert_eq!(decision.restricts(), restricts, "{given}"),
                _ => panic!("--decision {given} did not parse"),
            }
        }
        assert!(review("maybe").is_err());
        assert!(review("Restrict ").is_err());
    }

    #[test]
    fn load_modes_are_a_fixed_set_and_the_mix_is_parsed_up_front() {
        match parse(&["loadtest", "--mode", "open", "--rate", "50", "--mix", "search=3,score"]) {
            Ok(Command::Loadtest(a)) => {
                assert!(matches!(a.mode.with(a.concurrency, a.rate), Mode::Open { rate } if rate == 50.0));
                assert_eq!(a.mix.ops, vec![(Op::Search, 3), (Op::Score, 1)]);
                assert_eq!(a.mix.spec, "search=3,score");
            }
            _ => panic!("loadtest did not parse"),
        }
        match parse(&["loadtest"]) {
            Ok(Command::Loadtest(a)) => {
                assert!(matches!(a.mode.with(a.concurrency, a.rate), Mode::Closed { concurrency: 8 }));
                assert_eq!(a.mix.ops, vec![(Op::Score, 1), (Op::Stream, 1), (Op::Search, 1)]);
            }
            _ => panic!("loadtest did not parse"),
        }
        assert!(parse(&["loadtest", "--mode", "half-open"]).is_err());
        assert!(parse(&["loadtest", "--mix", "scroll=1"]).is_err(), "a bad mix is refused by the parser");
    }

    #[test]
    fn every_limit_is_printed_once() {
        let l = pb::Limits {
            max_pairs_per_request: 1, max_batch_size: 2, max_queue_delay_us: 3, queue_capacity: 4, max_message_bytes: 5,
            max_text_chars: 6, max_image_bytes: 7, max_image_pixels: 8, max_k: 9, max_stream_in_flight: 10,
            max_request_pixels: 11, max_answer_photo_bytes: 12, decode_workers: 13, decode_queue: 14, max_search_depth: 15, max_photo_attributes: 16, max_filter_conditions: 17,
            max_concurrent_requests: 18, max_queue_time_ms: 19, image_max_batch_size: 20, image_instances: 21, text_instances: 22,
        };
        let rows = limit_rows(&l);
        let mut values: Vec<u64> = rows.iter().map(|(_, v)| *v).collect();
        values.sort_unstable();
        assert_eq!(values, (1..=22).collect::<Vec<u64>>(), "each field once");
        let names: std::collections::BTreeSet<&str> = rows.iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), rows.len(), "names are unique");
    }
}
