//! `walcast snapshot`: ask the running source for a snapshot of aggregate tables, watch it,
//! list snapshots, cancel one.
//!
//! ```text
//! walcast snapshot start  --config connectors/catalog-outbox-source.toml --table public.products [--id X] [--no-wait]
//! walcast snapshot status --config connectors/catalog-outbox-source.toml
//! walcast snapshot cancel --config connectors/catalog-outbox-source.toml [--id X | --table public.products]
//! ```
//!
//! `start` and `cancel` insert a row into the source's signal table (`[snapshot] signal_table`,
//! Debezium's `execute-snapshot` / `stop-snapshot` layout) over the source's DSN: the source
//! reads it through the WAL, so the request takes effect in the one process that streams the
//! slot, and is never lost to a restart. The role needs `INSERT` on the signal table.
//! `start` then follows the snapshot's state on the progress topic (`[snapshot]
//! progress_topic`) with a progress bar until it is final; `status` prints every state there.
//! Exit status: 0 once completed, 1 when cancelled or failed (or on any error).

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use walcast_kafka::snapshots::{self, SnapshotState, Status};
use walcast_replication::TableName;
use walcast_source::SourceConfig;
use walcast_source::signal;
use walcast_telemetry::progress::{self, Progress};

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    action: SnapshotAction,
}

#[derive(Debug, Subcommand)]
enum SnapshotAction {
    /// Request a snapshot of tables of `[[snapshot.tables]]` and follow it to the end.
    Start(StartArgs),
    /// One line per snapshot on the progress topic: id, status, tables, rows, chunks, age.
    Status(ConfigArg),
    /// Cancel a snapshot by id, the running snapshots of a table, or every running snapshot.
    Cancel(CancelArgs),
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// The source's connector file (its DSN, signal table, broker and progress topic).
    #[arg(
        long,
        env = "WALCAST_SOURCE_CONFIG",
        default_value = "connectors/catalog-outbox-source.toml"
    )]
    config: PathBuf,
}

#[derive(Debug, Args)]
struct StartArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// A table of `[[snapshot.tables]]` (schema.table); repeat for several; none = all.
    #[arg(long = "table")]
    tables: Vec<String>,
    /// The snapshot's id (a new UUID v7 when not given). An id the source already knows
    /// starts nothing new.
    #[arg(long)]
    id: Option<String>,
    /// Return once the request is written; do not follow the snapshot.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").args(["id", "tables"])))]
struct CancelArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The snapshot to cancel.
    #[arg(long)]
    id: Option<String>,
    /// Cancel the running snapshots of this table; repeat for several.
    #[arg(long = "table")]
    tables: Vec<String>,
}

/// How long one read of the progress topic may take.
const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// How often `start` reads the progress topic.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// After this long without a state, `start` says the source may not be running.
const HINT_AFTER: Duration = Duration::from_secs(30);

pub async fn run(args: SnapshotArgs) -> anyhow::Result<()> {
    match args.action {
        SnapshotAction::Start(a) => start(a).await,
        SnapshotAction::Status(a) => status(&load(&a)?).await,
        SnapshotAction::Cancel(a) => cancel(a).await,
    }
}

fn load(arg: &ConfigArg) -> anyhow::Result<SourceConfig> {
    SourceConfig::load(&arg.config).with_context(|| format!("loading {}", arg.config.display()))
}

async fn start(args: StartArgs) -> anyhow::Result<()> {
    let config = load(&args.config)?;
    let tables = configured(&config, &args.tables)?;
    let id = args.id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    if id.is_empty() {
        bail!("--id is empty; give a name, or leave it out for a new UUID");
    }
    let table = insert_signal(
        &config,
        &id,
        signal::EXECUTE_SNAPSHOT,
        &signal::execute_data(&tables),
    )
    .await?;
    let what = if tables.is_empty() {
        "every table of [[snapshot.tables]]".to_owned()
    } else {
        tables.join(", ")
    };
    eprintln!("snapshot {id} of {what} requested (signal row in {table})");
    if args.no_wait {
        println!("{id}");
        return Ok(());
    }
    eprintln!(
        "following it on {} (Ctrl-C stops watching; the snapshot goes on)",
        config.progress_topic()
    );
    follow(&config, &id).await
}

/// Polls the progress topic until snapshot `id` is final, drawing its progress.
async fn follow(config: &SourceConfig, id: &str) -> anyhow::Result<()> {
    let topic = config.progress_topic();
    let started = Instant::now();
    let mut bar: Option<Progress> = None;
    let mut hinted = false;
    loop {
        let states = snapshots::read_all(config.kafka.client(), &topic, READ_TIMEOUT)
            .await
            .with_context(|| format!("reading the progress topic {topic}"))?;
        match states.get(id) {
            None => {
                if !hinted && started.elapsed() >= HINT_AFTER {
                    hinted = true;
                    eprintln!(
                        "no state of snapshot {id} on {topic} after {}s: is the source running, with this signal table in its publication? (walcast status)",
                        HINT_AFTER.as_secs()
                    );
                }
            }
            Some(state) => {
                let bar = bar.get_or_insert_with(|| {
                    Progress::new(&format!("snapshot {id}"), progress::ROWS, 0, true)
                });
                let rows = state.rows();
                bar.set_total(state.estimated_rows().unwrap_or(0).max(rows));
                match state.status {
                    Status::Completed => {
                        bar.finish();
                        println!("{}", line(state, unix_millis()));
                        return Ok(());
                    }
                    Status::Cancelled | Status::Failed => {
                        bar.update(rows);
                        bar.abandon();
                        bail!(
                            "snapshot {id} {}: {}",
                            state.status.as_str(),
                            state.reason.as_deref().unwrap_or("no reason given")
                        );
                    }
                    Status::Requested | Status::Running => bar.update(rows),
                }
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

async fn status(config: &SourceConfig) -> anyhow::Result<()> {
    let topic = config.progress_topic();
    let states = snapshots::read_all(config.kafka.client(), &topic, READ_TIMEOUT)
        .await
        .with_context(|| format!("reading the progress topic {topic}"))?;
    if states.is_empty() {
        println!("no snapshots on {topic}");
        return Ok(());
    }
    let mut states: Vec<&SnapshotState> = states.values().collect();
    states.sort_by_key(|s| (s.requested_at_ms, s.id.clone()));
    let now = unix_millis();
    for s in states {
        println!("{}", line(s, now));
    }
    Ok(())
}

/// `s1  running  public.products  4500/10000 rows  3 chunks  requested 2m5s ago`.
fn line(s: &SnapshotState, now_ms: i64) -> String {
    let tables: Vec<&str> = s.tables.iter().map(|t| t.table.as_str()).collect();
    let estimate = s
        .estimated_rows()
        .map_or_else(|| "?".to_owned(), |e| e.to_string());
    let chunks: u64 = s.tables.iter().map(|t| t.chunks).sum();
    let mut line = format!(
        "{}  {}  {}  {}/{estimate} rows  {chunks} chunks  requested {} ago",
        s.id,
        s.status.as_str(),
        if tables.is_empty() {
            "-".to_owned()
        } else {
            tables.join(",")
        },
        s.rows(),
        age(now_ms.saturating_sub(s.requested_at_ms)),
    );
    if let Some(reason) = &s.reason {
        line.push_str(&format!(
            "  ({})",
            walcast_config::text::excerpt(reason, 512)
        ));
    }
    line
}

/// `45s`, `2m5s`, `3h4m`, `2d3h`.
fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

async fn cancel(args: CancelArgs) -> anyhow::Result<()> {
    let config = load(&args.config)?;
    let tables = configured(&config, &args.tables)?;
    let signal_id = uuid::Uuid::now_v7().to_string();
    let table = insert_signal(
        &config,
        &signal_id,
        signal::STOP_SNAPSHOT,
        &signal::stop_data(args.id.as_deref(), &tables),
    )
    .await?;
    let what = match (&args.id, tables.is_empty()) {
        (Some(id), _) => format!("snapshot {id}"),
        (None, false) => format!("the running snapshots of {}", tables.join(", ")),
        (None, true) => "every running snapshot".to_owned(),
    };
    eprintln!(
        "cancel of {what} requested (signal {signal_id} in {table}); follow it with walcast snapshot status"
    );
    Ok(())
}

/// `names` as `schema.table`, each one of `[[snapshot.tables]]`.
fn configured(config: &SourceConfig, names: &[String]) -> anyhow::Result<Vec<String>> {
    let known: Vec<TableName> = config
        .snapshot
        .tables
        .iter()
        .filter_map(|t| t.table.parse().ok())
        .collect();
    let list = || {
        known
            .iter()
            .map(|t| format!("{}.{}", t.schema, t.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if known.is_empty() {
        bail!(
            "the source's file configures no [[snapshot.tables]]; add the tables to snapshot there first"
        );
    }
    let mut out = Vec::new();
    for name in names {
        match name.parse::<TableName>() {
            Ok(t) if known.contains(&t) => out.push(format!("{}.{}", t.schema, t.name)),
            _ => bail!(
                "--table {name} is not one of the source's [[snapshot.tables]] ({})",
                list()
            ),
        }
    }
    Ok(out)
}

/// Inserts one signal row over the source's DSN; returns the signal table.
async fn insert_signal(
    config: &SourceConfig,
    id: &str,
    kind: &str,
    data: &str,
) -> anyhow::Result<TableName> {
    let Some(table) = signal::table(config) else {
        bail!(
            "the source's file sets no signal table ([snapshot] signal_table); set one (the source creates it with [postgres] create = true)"
        );
    };
    let dsn = config
        .postgres
        .dsn
        .clone()
        .with_application_name("walcast-snapshot");
    let client = walcast_postgres::connect_sql(&dsn)
        .await
        .context("connecting to the write database (the source's [postgres] dsn)")?;
    let sql = format!(
        "INSERT INTO {} (id, type, data) VALUES ($1, $2, $3)",
        table.quoted()
    );
    if let Err(e) = client.execute(&sql, &[&id, &kind, &data]).await {
        let code = e.code().map(|c| c.code().to_owned());
        let hint = match code.as_deref() {
            Some("23505") => format!(
                "a signal with id {id} exists already; give another --id (walcast snapshot status lists the snapshots)"
            ),
            Some("42P01") => format!(
                "the signal table does not exist; start the source once with [postgres] create = true, or create it: {}",
                signal::ddl(&table)
            ),
            Some("42501") => format!(
                "this role may not insert into the signal table; GRANT INSERT ON {table} TO <role> (docs/operations.md, \"Snapshots\")"
            ),
            _ => "see the error above".to_owned(),
        };
        let cause = e.as_db_error().map_or(e.to_string(), ToString::to_string);
        bail!("inserting the signal into {table}: {cause}; {hint}");
    }
    Ok(table)
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use walcast_kafka::snapshots::TableProgress;

    #[test]
    fn a_status_line_has_id_status_tables_rows_chunks_and_age() {
        let s = SnapshotState {
            id: "s1".into(),
            topic: "t".into(),
            status: Status::Failed,
            tables: vec![TableProgress {
                table: "public.products".into(),
                last_key: None,
                rows: 4500,
                chunks: 3,
                estimated_rows: Some(10_000),
                done: false,
            }],
            start_offsets: BTreeMap::new(),
            requested_by: "cli".into(),
            requested_at_ms: 1_000,
            updated_at_ms: 2_000,
            completed_at_ms: None,
            reason: Some("table gone".into()),
        };
        assert_eq!(
            line(&s, 126_000),
            "s1  failed  public.products  4500/10000 rows  3 chunks  requested 2m5s ago  (table gone)"
        );
        assert_eq!(age(59_999), "59s");
        assert_eq!(age(3 * 3_600_000 + 240_000), "3h4m");
        assert_eq!(age(2 * 86_400_000 + 3 * 3_600_000), "2d3h");
    }
}
