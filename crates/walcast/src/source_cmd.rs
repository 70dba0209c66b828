//! `walcast source`: run the outbox source connector (Postgres WAL → Kafka) until SIGINT or
//! SIGTERM, then finish the current transaction, wait for acknowledgements, confirm and exit.
//!
//! ```text
//! walcast source --config connectors/catalog-outbox-source.toml
//! walcast source --config connectors/catalog-outbox-source.toml --discard
//! ```

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use walcast_source::{Options, SourceConfig};
use walcast_telemetry::admin;

#[derive(Debug, Args)]
pub struct SourceArgs {
    /// The source's connector file.
    #[arg(
        long,
        env = "WALCAST_SOURCE_CONFIG",
        default_value = "connectors/catalog-outbox-source.toml"
    )]
    config: PathBuf,
    /// Decode and route without producing or confirming (benchmarks: walcast's own cost).
    #[arg(long)]
    discard: bool,
}

pub async fn run(args: SourceArgs) -> anyhow::Result<()> {
    let config = SourceConfig::load(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?;
    let options = Options {
        discard: args.discard,
    };
    let listener = admin::bind(config.admin.listen)
        .await
        .with_context(|| format!("binding the admin endpoint {}", config.admin.listen))?;
    walcast_source::serve(config, options, listener, crate::shutdown_signal()).await?;
    Ok(())
}
