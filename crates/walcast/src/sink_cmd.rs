//! `walcast sink`: run the sink connector (Kafka → read databases), or rebuild one target.
//!
//! ```text
//! walcast sink --config connectors/catalog-read-sink.toml
//! walcast sink rebuild --target replica-2 --config connectors/catalog-read-sink.toml
//! walcast sink rebuild --target replica-2 --from catalog_read
//! ```

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use walcast_sink::{RebuildFrom, SinkConfig};
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
    /// retained offset, with a progress bar; or, with --from, copy another target. The other
    /// targets (and a running sink) carry on.
    Rebuild {
        /// The target to rebuild, as named under [targets] in the connector file.
        #[arg(long)]
        target: String,
        /// Copy this other target (read tables and bookkeeping, at one consistent snapshot)
        /// instead of re-reading the topic: works whatever the topic still holds.
        #[arg(long, value_name = "PEER")]
        from: Option<String>,
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
        Some(SinkAction::Rebuild {
            target,
            from,
            quiet,
        }) => {
            let from = from.map_or(RebuildFrom::Topic, RebuildFrom::Peer);
            let report = walcast_sink::rebuild_from(&config, &target, &from, !quiet).await?;
            let seconds = report.elapsed.as_secs_f64();
            match &from {
                RebuildFrom::Topic => eprintln!(
                    "rebuilt {target}: {} records in {seconds:.1}s ({} dead-lettered)",
                    report.records, report.dead_lettered
                ),
                RebuildFrom::Peer(peer) => {
                    for c in &report.copied {
                        eprintln!(
                            "  {:<28} {:>10} rows  {:>7.2}s",
                            c.table,
                            c.rows,
                            c.elapsed.as_secs_f64()
                        );
                    }
                    let rows: u64 = report.copied.iter().map(|c| c.rows).sum();
                    eprintln!(
                        "rebuilt {target} from {peer}: {rows} rows in {seconds:.1}s ({:.0} rows/s); \
                         the sink resumes it from the copied offsets",
                        rows as f64 / seconds.max(0.001)
                    );
                }
            }
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
