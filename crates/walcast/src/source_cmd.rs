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
    walcast_source::serve(config, options, walcast_source::shutdown_signal()).await?;
    Ok(())
}
