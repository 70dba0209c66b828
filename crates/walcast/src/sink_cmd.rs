//! `walcast sink`: run the sink connector (Kafka → read databases), or rebuild one target.
//!
//! ```text
//! walcast sink --config connectors/catalog-read-sink.toml
//! walcast sink rebuild --target replica-2 --config connectors/catalog-read-sink.toml
//! ```

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use walcast_sink::SinkConfig;
use walcast_telemetry::admin;

#[derive(Debug, Args)]
pub struct SinkArgs {
    /// The sink's connector file.
    #[arg(
        long,
        global = true,
        env = "WALCAST_SINK_CONFIG",
        default_value = "connectors/catalog-read-sink.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    action: Option<SinkAction>,
}

#[derive(Debug, Subcommand)]
enum SinkAction {
    /// Empty one target's read tables and bookkeeping and re-consume it from the earliest
    /// retained offset, with a progress bar; the other targets (and a running sink) carry on.
    Rebuild {
        /// The target to rebuild, as named under [targets] in the connector file.
        #[arg(long)]
        target: String,
        /// No progress bar on stderr.
        #[arg(long)]
        quiet: bool,
    },
}

pub async fn run(args: SinkArgs) -> anyhow::Result<()> {
    let config = SinkConfig::load(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?;
    match args.action {
        None => serve(config).await,
        Some(SinkAction::Rebuild { target, quiet }) => {
            let report = walcast_sink::rebuild(&config, &target, !quiet).await?;
            eprintln!(
                "rebuilt {target}: {} records in {:.1}s ({} dead-lettered)",
                report.records,
                report.elapsed.as_secs_f64(),
                report.dead_lettered
            );
            Ok(())
        }
    }
}

/// Runs every target and the admin endpoint until SIGINT or SIGTERM.
async fn serve(config: SinkConfig) -> anyhow::Result<()> {
    let listener = admin::bind(config.admin.listen).await?;
    walcast_sink::serve(config, listener, crate::shutdown_signal()).await?;
    Ok(())
}
