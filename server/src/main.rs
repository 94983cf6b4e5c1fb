//! `imagesearch-server`: batched gRPC scoring and search over versioned scorers, with a
//! gallery that survives crashes, rollout between versions, and the law enforced fail-closed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use imagesearch_model::{ImageEncoder, ImageLimits, ModelRepository, ScorerManifest, TextEncoder};
use imagesearch_proto::v1::gallery_server::GalleryServer;
use imagesearch_proto::LIVENESS_SERVICE;
use imagesearch_proto::v1::image_search_server::ImageSearchServer;
use imagesearch_proto::v1::model_admin_server::ModelAdminServer;
use imagesearch_server::app::App;
use imagesearch_server::auth::{read_token_file, TokenAuth};
use imagesearch_server::config::{Command, Config, MetricsListen, SearchIndexKind, StoreKind};
use imagesearch_server::gallery::PhotoStore;
use imagesearch_server::model_bucket::BucketModels;
use imagesearch_server::pg_index::{PgSearch, SqlSearch};
use imagesearch_server::pg_store::PgStore;
use imagesearch_server::encoders::{EncoderSettings, Encoders};
use imagesearch_server::local_store::LocalStore;
use imagesearch_server::rollout::{FileRollout, Rollout, RolloutStore};
use imagesearch_server::service::{AdminService, GalleryService, SearchService};
use imagesearch_server::versions::Versions;
use tonic_health::ServingStatus;

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // A log line that cannot be written (stderr on a full disk) is dropped: reporting it with
    // eprintln! would panic the request's task and reset its connection.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .log_internal_errors(false);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The versions to load at start: those asked for, else the newest; plus those the saved
/// rollout names.
fn startup_versions(cfg: &Config, repo: &ModelRepository, saved: Option<Rollout>) -> anyhow::Result<Vec<u32>> {
    let available = repo.versions()?;
    anyhow::ensure!(
        !available.is_empty(),
        "no scorer version in {}: train one with `imagesearch-train train`",
        repo.scorer_root().display()
    );
    let mut wanted = if cfg.versions.is_empty() { vec![*available.last().unwrap()] } else { cfg.versions.clone() };
    for v in &wanted {
        anyhow::ensure!(available.contains(v), "scorer version {v} is not in {} (have {available:?})", repo.scorer_root().display());
    }
    if let Some(r) = saved {
        wanted.extend([r.stable, r.canary].into_iter().filter(|v| *v != 0 && available.contains(v)));
    }
    wanted.sort_unstable();
    wanted.dedup();
    Ok(wanted)
}

async fn shutdown_signal() {
    let term = async {
        #[cfg(unix)]
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    if let Err(why) = cfg.validate() {
        Config::command().error(clap::error::ErrorKind::ArgumentConflict, why).exit();
    }
    // Before any thread starts and before libtorch's first operation (both read it at first use).
    let kernel_caches = cfg.kernel_caches().apply();
    init_tracing(cfg.log_json);
    for (name, value) in &kernel_caches {
        tracing::info!(%name, %value, "CPU kernel cache bounded");
    }
    let device = cfg.device.device();
    if cfg.torch_threads(device) > 0 {
        tch::set_num_threads(cfg.torch_threads(device));
    }
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("data dir {}", cfg.data_dir.display()))?;
    // A bucket of models is mirrored into the data directory and served from there: the
    // encoders and the versions asked for (else the newest) are fetched and verified first.
    let bucket = match cfg.models.to_str().filter(|_| BucketModels::is_bucket(&cfg.models)) {
        Some(url) => {
            let b = Arc::new(BucketModels::new(url, &cfg.data_dir.join("models-cache"))?);
            b.fetch_encoders()?;
            let wanted = if cfg.versions.is_empty() { b.versions()?.last().copied().into_iter().collect() } else { cfg.versions.clone() };
            for v in wanted {
                anyhow::ensure!(b.fetch_version(v)?, "scorer version {v} is not in the model bucket {url}");
            }
            Some(b)
        }
        None => None,
    };
    let repo = ModelRepository::new(bucket.as_ref().map_or(cfg.models.clone(), |b| b.cache().to_path_buf()));
    // The encoders the versions were trained with (all versions must agree; checked at load):
    // those of the first version asked for, else of the newest.
    let named = match cfg.versions.first() {
        Some(v) => *v,
        None => *startup_versions(&cfg, &repo, None)?.last().expect("at least one version"),
    };
    let first = ScorerManifest::load(&repo.version_dir(named))?;
    let timeout = Duration::from_secs(cfg.database_timeout_s);
    if let Some(Command::MigrateGallery { from, to, batch }) = &cfg.command {
        return migrate_gallery(from, to, *batch, &first.image_encoder.sha256, timeout);
    }
    // The gallery, and the rollout: beside it in a file, or in its database (shared by replicas).
    let (store, rollout_store): (Arc<dyn PhotoStore>, Arc<dyn RolloutStore>) = match (cfg.store, &cfg.database_url) {
        (StoreKind::Postgres, Some(url)) => {
            let pg = Arc::new(PgStore::open(url, &first.image_encoder.sha256, timeout).context("gallery database (--database-url)")?);
            (pg.clone(), pg)
        }
        (StoreKind::Postgres, None) => anyhow::bail!("--store postgres needs --database-url"),
        (StoreKind::Local, _) => (
            Arc::new(LocalStore::open(&cfg.data_dir.join("gallery"))?),
            Arc::new(FileRollout::new(cfg.data_dir.join("rollout.json"))),
        ),
    };
    let saved = rollout_store.load_rollout().context("the saved rollout")?.map(|(r, _)| r);
    if let (Some(b), Some(r)) = (&bucket, saved) {
        for v in [r.stable, r.canary].into_iter().filter(|v| *v != 0) {
            if let Err(e) = b.fetch_version(v) {
                tracing::warn!(version = v, error = %e, "cannot fetch a version the saved rollout names");
            }
        }
    }
    let wanted = startup_versions(&cfg, &repo, saved)?;
    let index_views = match cfg.index_views {
        Some(v) => v,
        None => first.index_views.as_deref().unwrap_or("both").parse().map_err(anyhow::Error::msg)?,
    };
    let (image_copies, text_copies) = cfg.instances(device);
    let image_dir = repo.encoder_dir(&first.image_encoder.name);
    let images = (0..image_copies)
        .map(|_| ImageEncoder::load_file(&image_dir, device, cfg.encoder_files))
        .collect::<Result<Vec<_>, _>>()
        .context("image encoder")?;
    let text_dir = repo.encoder_dir(&first.text_encoder.name);
    let mut texts = Vec::with_capacity(text_copies);
    for _ in 0..text_copies {
        let (text, fallback) = TextEncoder::load_probed(&text_dir, device, cfg.encoder_files).context("text encoder")?;
        if let Some(why) = fallback.filter(|_| texts.is_empty()) {
            tracing::warn!(device = ?device, reason = %why, "the text encoder cannot run on this device; it runs on the CPU");
        }
        texts.push(text);
    }
    tracing::info!(
        image_instances = image_copies,
        text_instances = text_copies,
        torch_threads = tch::get_num_threads(),
        image_file = images[0].manifest.file_for(cfg.encoder_files, device),
        text_file = texts[0].manifest.file_for(cfg.encoder_files, texts[0].device()),
        image_max_batch_size = cfg.image_batch_size(device),
        "model instances"
    );
    let batch = cfg.batch();
    let (image_manifest, text_manifest) = (images[0].manifest.clone(), texts[0].manifest.clone());
    let encoders = Encoders::start(
        images,
        texts,
        EncoderSettings {
            image_batch: batch.with_batch_size(cfg.image_batch_size(device)),
            text_batch: cfg.text_batch(device),
            limits: ImageLimits { max_bytes: cfg.max_image_bytes, max_pixels: cfg.max_image_pixels },
            max_text_chars: cfg.max_text_chars,
            image_cache: cfg.image_cache,
            text_cache: cfg.text_cache,
            views: cfg.image_views,
            index_views,
            decode_workers: cfg.decode_workers(),
            decode_queue: cfg.decode_queue,
        },
    );
    let search = match (cfg.search_index, &cfg.database_url) {
        (SearchIndexKind::Memory, _) => None,
        (kind, Some(url)) => {
            let mode = match kind {
                SearchIndexKind::PostgresHnsw => SqlSearch::Hnsw { ef_search: cfg.hnsw_ef_search },
                _ => SqlSearch::Exact,
            };
            Some(Arc::new(PgSearch::new(url, timeout, mode, &first.image_encoder.sha256, cfg.hnsw_build_memory_mb)?))
        }
        (_, None) => anyhow::bail!("--search-index {:?} needs --database-url", cfg.search_index),
    };
    let mut versions = Versions::new(repo.clone(), device, batch, image_manifest, text_manifest, rollout_store, search);
    if let Some(b) = bucket {
        versions = versions.with_bucket(b);
    }
    let device_name = imagesearch_model::device::device_name(device);
    let app = Arc::new(App::new(cfg.clone(), device_name, encoders, versions, store));

    let runtime = tokio::runtime::Runtime::new()?;
    if cfg.check {
        return runtime.block_on(async {
            for v in &wanted {
                app.load_version(*v).await.with_context(|| format!("scorer version {v}"))?;
            }
            println!("{} scorer version(s) verified and warm on {}: {wanted:?}", wanted.len(), app.device());
            Ok(())
        });
    }
    runtime.block_on(serve(app, wanted))
}

/// `migrate-gallery`: the local gallery under `from` into the empty PostgreSQL gallery at `to`,
/// whose vectors are those of the image encoder `encoder_sha256`; counts checked after.
fn migrate_gallery(from: &std::path::Path, to: &str, batch: usize, encoder_sha256: &str, timeout: Duration) -> anyhow::Result<()> {
    let local = LocalStore::open(&from.join("gallery")).with_context(|| format!("local gallery {}", from.display()))?;
    let target = PgStore::open(to, encoder_sha256, timeout).context("target gallery database")?;
    let records = local.snapshot();
    let started = std::time::Instant::now();
    target.import(records, batch, |id| local.photo_bytes(id))?;
    let (a, b) = (local.stats(), target.stats());
    anyhow::ensure!(
        a.photos == b.photos && a.by_flag == b.by_flag,
        "counts differ after the migration: local {} photos {:?}, PostgreSQL {} photos {:?}",
        a.photos,
        a.by_flag,
        b.photos,
        b.by_flag
    );
    let contents = local.snapshot().iter().filter(|r| matches!(r, imagesearch_server::wal::Record::Content { .. })).count();
    anyhow::ensure!(contents == target.content_flags().len(), "content flags differ: local {contents}, PostgreSQL {}", target.content_flags().len());
    println!(
        "migrated {} photos ({} restricted) and {contents} content flags in {:.1} s; counts match",
        b.photos,
        b.by_flag.iter().enumerate().filter(|(f, _)| imagesearch_server::wal::Flag::from_u8(*f as u8).is_some_and(|f| f.restricted())).map(|(_, n)| n).sum::<u64>(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A role's token, from its flag or its file.
fn token(role: &'static str, value: &Option<String>, file: &Option<std::path::PathBuf>) -> anyhow::Result<TokenAuth> {
    let from_file = match file {
        Some(path) => Some(read_token_file(path).with_context(|| format!("--{role}-token-file {}", path.display()))?),
        None => None,
    };
    let auth = TokenAuth::new(role, from_file.as_deref().or(value.as_deref()));
    if !auth.is_configured() {
        tracing::warn!(role, "no {role} token configured: every {role} call is refused");
    }
    Ok(auth)
}

/// The TLS set-up from --tls-cert, --tls-key and --tls-client-ca, if any.
fn tls_config(cfg: &Config) -> anyhow::Result<Option<tonic::transport::ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) else { return Ok(None) };
    let read = |p: &std::path::PathBuf, what: &str| std::fs::read(p).with_context(|| format!("{what} {}", p.display()));
    let identity = tonic::transport::Identity::from_pem(read(cert, "--tls-cert")?, read(key, "--tls-key")?);
    let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity).timeout(Duration::from_secs(10));
    if let Some(ca) = &cfg.tls_client_ca {
        tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(ca, "--tls-client-ca")?));
    }
    Ok(Some(tls))
}

async fn serve(app: Arc<App>, wanted: Vec<u32>) -> anyhow::Result<()> {
    let cfg = app.config().clone();
    let admin_auth = token("admin", &cfg.admin_token, &cfg.admin_token_file)?;
    let writer_auth = token("writer", &cfg.writer_token, &cfg.writer_token_file)?;
    anyhow::ensure!(!admin_auth.same_token_as(&writer_auth), "the writer token must differ from the admin token");
    if let MetricsListen::At(addr) = cfg.metrics_listen {
        imagesearch_server::metrics::install(addr).map_err(anyhow::Error::msg).context("metrics endpoint")?;
    }
    let (health, health_service) = tonic_health::server::health_reporter();
    let all_not_serving = |h: tonic_health::server::HealthReporter| async move {
        h.set_service_status("", ServingStatus::NotServing).await;
        h.set_not_serving::<ImageSearchServer<SearchService>>().await;
        h.set_not_serving::<GalleryServer<GalleryService>>().await;
    };
    all_not_serving(health.clone()).await;
    // Liveness: SERVING while the process answers gRPC, through warm-up and drain alike (a
    // probe on "" would restart a pod that is only warming up or draining).
    health.set_service_status(LIVENESS_SERVICE, ServingStatus::Serving).await;
    // Reflection in both protocol versions: grpcurl before 1.9 and Python's grpcio-reflection
    // speak only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(imagesearch_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let max = cfg.max_message_bytes;
    let search = ImageSearchServer::new(SearchService(app.clone())).max_decoding_message_size(max).max_encoding_message_size(max);
    let gallery = GalleryServer::new(GalleryService { app: app.clone(), writer: writer_auth, admin: admin_auth.clone() })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let admin = tonic::service::interceptor::InterceptedService::new(
        ModelAdminServer::new(AdminService(app.clone())).max_decoding_message_size(max).max_encoding_message_size(max),
        admin_auth,
    );

    // Warm up in the background; health says NOT_SERVING until every version is warm.
    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<anyhow::Error>(1);
    {
        let (app, health) = (app.clone(), health.clone());
        tokio::spawn(async move {
            match app.start(&wanted).await {
                Ok(rollout) => {
                    health.set_service_status("", ServingStatus::Serving).await;
                    health.set_serving::<ImageSearchServer<SearchService>>().await;
                    health.set_serving::<GalleryServer<GalleryService>>().await;
                    tracing::info!(versions = ?wanted, stable = rollout.stable, photos = app.gallery_len(), "ready");
                }
                Err(e) => {
                    let _ = fatal_tx.send(anyhow::anyhow!(e)).await;
                }
            }
        });
    }

    let listener = tokio::net::TcpListener::bind(cfg.listen).await.with_context(|| format!("listen on {}", cfg.listen))?;
    let tls = tls_config(&cfg)?;
    tracing::info!(
        listen = %listener.local_addr()?,
        tls = tls.is_some(),
        client_certificates = cfg.tls_client_ca.is_some(),
        metrics = %cfg.metrics_listen,
        device = %app.device(),
        "serving"
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let seconds = |s: u64| (s > 0).then(|| Duration::from_secs(s));
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .http2_keepalive_interval(seconds(cfg.http2_keepalive_s))
        .http2_keepalive_timeout(seconds(cfg.http2_keepalive_timeout_s));
    if let Some(age) = seconds(cfg.max_connection_age_s) {
        builder = builder.max_connection_age(age).max_connection_age_grace(Duration::from_secs(cfg.drain_timeout_s));
    }
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).context("TLS set-up (--tls-cert, --tls-key, --tls-client-ca)")?;
    }
    let incoming = imagesearch_server::connections::limited(listener, cfg.max_connections);
    let server = builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(search)
        .add_service(gallery)
        .add_service(admin)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        });
    let mut server = Box::pin(server);
    let fatal = tokio::select! {
        r = &mut server => return r.context("gRPC server"),
        _ = shutdown_signal() => None,
        Some(e) = fatal_rx.recv() => Some(e),
    };
    // Graceful stop: say NOT_SERVING first, stop accepting, let in-flight calls finish.
    tracing::info!(drain_timeout_s = cfg.drain_timeout_s, "stopping: NOT_SERVING, draining");
    all_not_serving(health).await;
    let _ = stop_tx.send(());
    match tokio::time::timeout(Duration::from_secs(cfg.drain_timeout_s), server).await {
        Ok(r) => r.context("gRPC server")?,
        Err(_) => tracing::warn!("drain timeout passed; exiting with calls still in flight"),
    }
    match fatal {
        Some(e) => Err(e),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}
