//! The `walcast` command: every service and operator tool behind one binary.
//! `main` only parses arguments, sets up logging and hands over to a module.

mod app_cmd;
mod dlq_cmd;
mod schema;
mod sink_cmd;
mod snapshot_cmd;
mod source_cmd;
mod status;
mod topic;
mod wal_tail;

use clap::{Parser, Subcommand};
use walcast_telemetry::logging::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "walcast",
    version,
    about = "Postgres outbox → Kafka → read models, without losing an event"
)]
struct Cli {
    /// Log JSON lines instead of human-readable lines.
    #[arg(long, global = true, env = "WALCAST_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply walcast's SQL schemas (idempotent: running it again changes nothing).
    Schema(schema::SchemaArgs),
    /// Create and inspect Kafka topics.
    Topic(topic::TopicArgs),
    /// Run the catalog app: write API and query API over the read replicas.
    App(app_cmd::AppArgs),
    /// Run the source connector (outbox in the WAL → Kafka).
    Source(source_cmd::SourceArgs),
    /// Run the sink connector (Kafka → read databases), or rebuild one of its targets.
    Sink(sink_cmd::SinkArgs),
    /// Snapshots of aggregate tables into the event stream: start (and follow), status, cancel.
    Snapshot(snapshot_cmd::SnapshotArgs),
    /// Operator tools for the sink's dead letters (release a key held behind one).
    Dlq(dlq_cmd::DlqArgs),
    /// Health of every component, the source's slot lag and each sink target's lag.
    Status(status::StatusArgs),
    /// Read the write database's WAL (logical replication, pgoutput).
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
}

#[derive(Debug, Subcommand)]
enum WalCommand {
    /// Print every change of a slot as one JSON object per line.
    Tail(wal_tail::WalTailArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    logging::init(if cli.log_json {
        LogFormat::Json
    } else {
        LogFormat::Human
    });
    let result = match cli.command {
        Command::Schema(args) => schema::run(args).await,
        Command::Topic(args) => topic::run(args).await,
        Command::Source(args) => source_cmd::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Sink(args) => sink_cmd::run(args).await,
        Command::Snapshot(args) => snapshot_cmd::run(args).await,
        Command::Dlq(args) => dlq_cmd::run(args).await,
        Command::App(args) => app_cmd::run(args).await,
        Command::Wal {
            command: WalCommand::Tail(args),
        } => wal_tail::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "walcast failed");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT or SIGTERM: the shutdown every service of this binary waits for.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
