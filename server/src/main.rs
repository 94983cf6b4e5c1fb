//! `imagesearch-server`: loads and verifies the scorer versions of a model repository and
//! serves the imagesearch gRPC API. (This first cut serves `Info`; scoring, search, gallery and
//! rollout come with the server issue.)

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use imagesearch_model::{EncoderManifest, ModelRepository, Scorer};
use imagesearch_proto::v1::image_search_server::{ImageSearch, ImageSearchServer};
use imagesearch_proto::v1::{InfoRequest, InfoResponse, ScorerVersion};
use tonic::{Request, Response, Status};

#[derive(Parser)]
#[command(name = "imagesearch-server", version, about = "imagesearch gRPC server")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "IMAGESEARCH_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Model repository.
    #[arg(long, env = "IMAGESEARCH_MODELS", default_value = "models")]
    models: PathBuf,
    /// auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, env = "IMAGESEARCH_DEVICE", default_value = "auto")]
    device: String,
    /// Load and verify the models, print what was found, and exit.
    #[arg(long)]
    check: bool,
}

struct Service {
    info: InfoResponse,
}

#[tonic::async_trait]
impl ImageSearch for Service {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(self.info.clone()))
    }
}

fn load_versions(repo: &ModelRepository, device: tch::Device) -> anyhow::Result<Vec<ScorerVersion>> {
    let mut out = Vec::new();
    for v in repo.versions()? {
        let scorer = Scorer::load(&repo.version_dir(v), device).with_context(|| format!("scorer version {v}"))?;
        let m = &scorer.manifest;
        let image = EncoderManifest::load(&repo.encoder_dir(&m.image_encoder.name))?;
        let text = EncoderManifest::load(&repo.encoder_dir(&m.text_encoder.name))?;
        m.check_encoders(&image, &text)?;
        out.push(ScorerVersion {
            version: v,
            created: m.created.clone(),
            image_encoder: m.image_encoder.name.clone(),
            text_encoder: m.text_encoder.name.clone(),
            metrics_json: m.metrics.to_string(),
        });
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let device = imagesearch_model::device::parse_device(&args.device).map_err(anyhow::Error::msg)?;
    let repo = ModelRepository::new(&args.models);
    let versions = load_versions(&repo, device)?;
    let info = InfoResponse {
        build_version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: option_env!("IMAGESEARCH_GIT_COMMIT").unwrap_or("unknown").to_string(),
        device: imagesearch_model::device::device_name(device),
        versions,
    };
    for v in &info.versions {
        tracing::info!(version = v.version, created = %v.created, "scorer version verified");
    }
    if args.check {
        println!("{} scorer version(s) verified on {}", info.versions.len(), info.device);
        return Ok(());
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        tracing::info!(listen = %args.listen, "serving");
        tonic::transport::Server::builder()
            .add_service(ImageSearchServer::new(Service { info }))
            .serve_with_shutdown(args.listen, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
    })?;
    Ok(())
}
