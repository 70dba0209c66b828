//! `walcast-source --config FILE [--discard]`: the same as `walcast source`, as a binary of
//! this crate so its integration tests and benchmark can run the source as a child process
//! (and `kill -9` it). Operators use `walcast source`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use walcast_source::{Options, SourceConfig};
use walcast_telemetry::logging::{self, LogFormat};

/// Outbox source connector: Postgres WAL → Kafka.
#[derive(Debug, Parser)]
struct Args {
    /// The source's connector file.
    #[arg(
        long,
        env = "WALCAST_SOURCE_CONFIG",
        default_value = "connectors/catalog-outbox-source.toml"
    )]
    config: PathBuf,
    /// Decode and route without producing or confirming.
    #[arg(long)]
    discard: bool,
    /// Log JSON lines.
    #[arg(long, env = "WALCAST_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    logging::init(if args.log_json {
        LogFormat::Json
    } else {
        LogFormat::Human
    });
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "walcast-source failed");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = SourceConfig::load(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?;
    let options = Options {
        discard: args.discard,
    };
    walcast_source::serve(config, options, walcast_source::shutdown_signal()).await?;
    Ok(())
}
