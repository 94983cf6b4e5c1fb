//! `imagesearch`: the command-line client. This first cut has the offline `policy` check and
//! `info`; search, scoring, gallery, model admin and the load tester come with the client issue.

use anyhow::Context;
use clap::{Parser, Subcommand};
use imagesearch_compliance::{RegionPolicy, Verdict};
use imagesearch_proto::v1::image_search_client::ImageSearchClient;
use imagesearch_proto::v1::InfoRequest;

#[derive(Parser)]
#[command(name = "imagesearch", version, about = "imagesearch client")]
struct Cli {
    /// Server endpoint.
    #[arg(long, env = "IMAGESEARCH_ENDPOINT", default_value = "http://127.0.0.1:50051", global = true)]
    endpoint: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Says, offline, whether the shared rules block a text in a region, and which rule matched.
    Policy {
        /// ISO 3166-1 alpha-2 region of the request (missing: treated as restricted).
        #[arg(long)]
        region: Option<String>,
        /// Regions where the law applies (comma separated).
        #[arg(long, env = "IMAGESEARCH_RESTRICTED_REGIONS", default_value = "")]
        restricted: String,
        /// The query text.
        text: String,
    },
    /// Build, device and scorer versions of the server.
    Info,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Policy { region, restricted, text } => {
            let policy = RegionPolicy::parse_list(&restricted)?;
            match policy.check_query(region.as_deref(), &text)? {
                Verdict::Allowed => println!("allowed"),
                Verdict::Blocked(m) => println!("blocked: {m}"),
            }
        }
        Command::Info => {
            let rt = tokio::runtime::Runtime::new()?;
            let info = rt.block_on(async {
                let mut client = ImageSearchClient::connect(cli.endpoint.clone())
                    .await
                    .with_context(|| format!("connecting to {}", cli.endpoint))?;
                anyhow::Ok(client.info(InfoRequest {}).await?.into_inner())
            })?;
            println!("build {} ({}) on {}", info.build_version, info.git_commit, info.device);
            for v in info.versions {
                println!("  scorer version {} created {}", v.version, v.created);
            }
        }
    }
    Ok(())
}
