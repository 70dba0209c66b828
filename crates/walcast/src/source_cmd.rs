//! `walcast source`: run the outbox source connector (Postgres WAL → Kafka) until SIGINT or
//! SIGTERM, then finish the current transaction, wait for acknowledgements, confirm and exit;
//! or replay outbox rows still in the table.
//!
//! ```text
//! walcast source --config connectors/catalog-outbox-source.toml
//! walcast source --config connectors/catalog-outbox-source.toml --discard
//! walcast source replay --config connectors/catalog-outbox-source.toml --since 2026-11-30T12:00:00Z
//! ```

use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgGroup, Args, Subcommand};
use walcast_sink::SinkConfig;
use walcast_source::replay::{self, Request, Selection, Summary};
use walcast_source::{Options, SourceConfig};
use walcast_telemetry::admin;

#[derive(Debug, Args)]
pub struct SourceArgs {
    /// The source's connector file.
    #[arg(
        long,
        global = true,
        env = "WALCAST_SOURCE_CONFIG",
        default_value = "connectors/catalog-outbox-source.toml"
    )]
    config: PathBuf,
    /// Decode and route without producing or confirming (benchmarks: walcast's own cost).
    #[arg(long)]
    discard: bool,
    #[command(subcommand)]
    action: Option<SourceAction>,
}

#[derive(Debug, Subcommand)]
enum SourceAction {
    /// Publish outbox rows still in the table again, as the live stream published them (same
    /// topic, key, value and headers, `id` included, plus `walcast.replay = true`); sinks skip
    /// what they applied. Refused when the oldest selected event is older than the sink's
    /// tombstone window (then rebuild the target: `walcast sink rebuild`).
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("selection").required(true).args(["since", "event_id", "aggregate"])))]
struct ReplayArgs {
    /// Every row whose occurred_at is at or after this time (RFC 3339, e.g.
    /// 2026-11-30T12:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// The row with this event id.
    #[arg(long)]
    event_id: Option<String>,
    /// Every row of this aggregate (the key column).
    #[arg(long)]
    aggregate: Option<String>,
    /// The sink's connector file: its tombstone window ([prune] tombstone_window_secs) bounds
    /// how old a replayed event may be, and its aggregate version field orders the events.
    #[arg(long, default_value = "connectors/catalog-read-sink.toml")]
    sink_config: PathBuf,
    /// Read and route the rows and print what would be published; produce nothing.
    #[arg(long)]
    dry_run: bool,
    /// Rows per page, at most (each page is read by one statement and acknowledged by the
    /// broker before the next; a page also stops at [kafka] max_in_flight_bytes of rows).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    page_rows: i64,
}

pub async fn run(args: SourceArgs) -> anyhow::Result<()> {
    let config = SourceConfig::load(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?;
    match args.action {
        None => serve(config, args.discard).await,
        Some(SourceAction::Replay(_)) if args.discard => {
            anyhow::bail!("--discard is for running the source; a replay has --dry-run")
        }
        Some(SourceAction::Replay(replay)) => run_replay(&config, replay).await,
    }
}

async fn serve(config: SourceConfig, discard: bool) -> anyhow::Result<()> {
    let options = Options { discard };
    let listener = admin::bind(config.admin.listen)
        .await
        .with_context(|| format!("binding the admin endpoint {}", config.admin.listen))?;
    walcast_source::serve(config, options, listener, crate::shutdown_signal()).await?;
    Ok(())
}

async fn run_replay(config: &SourceConfig, args: ReplayArgs) -> anyhow::Result<()> {
    let sink = SinkConfig::load(&args.sink_config)
        .with_context(|| format!("loading {}", args.sink_config.display()))?;
    let selection = match (args.since, args.event_id, args.aggregate) {
        (Some(t), _, _) => Selection::Since(t),
        (_, Some(id), _) => Selection::EventId(id),
        (_, _, Some(key)) => Selection::Aggregate(key),
        // clap requires exactly one of the three.
        (None, None, None) => anyhow::bail!("name the rows: --since, --event-id or --aggregate"),
    };
    let request = Request {
        selection,
        max_age: sink.tombstone_window(),
        version_field: sink.envelope.aggregate_version_field.clone(),
        dry_run: args.dry_run,
        page_rows: args.page_rows,
        page_bytes: i64::try_from(config.kafka.max_in_flight_bytes).unwrap_or(i64::MAX),
    };
    let summary = replay::replay(config, &request).await?;
    println!("{}", report(&summary, args.dry_run));
    Ok(())
}

/// `replayed 7 outbox rows in 1 pages: published 7 events (catalog.events 7)`, plus dead
/// letters.
fn report(s: &Summary, dry_run: bool) -> String {
    let per_topic = |m: &std::collections::BTreeMap<String, u64>| {
        if m.is_empty() {
            return String::new();
        }
        let topics: Vec<String> = m.iter().map(|(t, n)| format!("{t} {n}")).collect();
        format!(" ({})", topics.join(", "))
    };
    let events: u64 = s.published.values().sum();
    let dead: u64 = s.dead_letters.values().sum();
    let verb = if dry_run {
        "would publish"
    } else {
        "published"
    };
    let mut line = format!(
        "replayed {} outbox rows in {} pages: {verb} {events} events{}",
        s.rows,
        s.pages,
        per_topic(&s.published)
    );
    if dead > 0 {
        line.push_str(&format!(
            ", {dead} dead letters{}",
            per_topic(&s.dead_letters)
        ));
    }
    if dry_run {
        line.push_str("; dry run, nothing produced");
    }
    line
}
