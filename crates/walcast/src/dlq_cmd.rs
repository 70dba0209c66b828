//! `walcast dlq`: operator tools for the sink's dead letters.
//!
//! ```text
//! walcast dlq discard --config connectors/catalog-read-sink.toml --target replica-2 --event-id <uuid>
//! walcast dlq discard --config connectors/catalog-read-sink.toml --target replica-2 --aggregate <key>
//! ```

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use walcast_sink::{Discard, SinkConfig};

#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    action: DlqAction,
}

#[derive(Debug, Subcommand)]
enum DlqAction {
    /// Give up on a dead letter: release the key a target holds behind it and apply, in
    /// order, the events that waited. The dead letter itself is not applied.
    Discard(DiscardArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["event_id", "aggregate"])))]
struct DiscardArgs {
    /// The sink's connector file.
    #[arg(
        long,
        env = "WALCAST_SINK_CONFIG",
        default_value = "connectors/catalog-read-sink.toml"
    )]
    config: PathBuf,
    /// The target holding the key (the `walcast.target` header of the dead letter).
    #[arg(long)]
    target: String,
    /// The dead letter's event id (its `id` header).
    #[arg(long)]
    event_id: Option<String>,
    /// Every dead letter of this key (the aggregate id, the dead letter's record key).
    #[arg(long)]
    aggregate: Option<String>,
}

pub async fn run(args: DlqArgs) -> anyhow::Result<()> {
    match args.action {
        DlqAction::Discard(a) => {
            let config = SinkConfig::load(&a.config)
                .with_context(|| format!("loading {}", a.config.display()))?;
            let what = match (a.event_id, a.aggregate) {
                (Some(id), _) => Discard::event(&id)?,
                (None, Some(key)) => Discard::Key(key),
                (None, None) => anyhow::bail!("give --event-id or --aggregate"),
            };
            let report = walcast_sink::discard(&config, &a.target, &what).await?;
            let keys: Vec<String> = report
                .keys
                .iter()
                .map(|(t, k)| format!("{t} {k}"))
                .collect();
            eprintln!(
                "{}: released {}; {} held events applied, {} still wait for their row",
                a.target,
                keys.join(", "),
                report.released,
                report.still_held
            );
            Ok(())
        }
    }
}
