//! `walcast wal tail`: stream a slot's changes to stdout as JSON lines.
//!
//! ```text
//! walcast wal tail --dsn 'host=127.0.0.1 user=walcast dbname=app' \
//!     --slot walcast --publication walcast [--create [--table public.orders]] \
//!     [--from-lsn 0/16B3748] [--max-changes 10]
//! ```
//!
//! Each change is printed as one JSON object per line. A transaction is
//! confirmed to Postgres (the slot advances) once all its lines were written
//! to stdout; with `--max-changes N` the command exits 0 after N changes,
//! having confirmed them (see `walcast_replication::tail` for the exact LSN).
//! Ctrl-C stops cleanly after confirming what was printed.

use std::fmt;
use std::io::BufWriter;

use anyhow::Context as _;
use walcast_postgres::Dsn;
use walcast_replication::{ChangeStreamConfig, Lsn, TableName, tail};

/// Arguments of `walcast wal tail`.
#[derive(clap::Args)]
pub struct WalTailArgs {
    /// libpq connection string (key=value or postgres:// URL), with a role
    /// that has REPLICATION.
    #[arg(long, env = "WALCAST_DSN", hide_env_values = true)]
    pub dsn: String,
    /// Logical replication slot (pgoutput).
    #[arg(long, value_name = "NAME")]
    pub slot: String,
    /// Publication to stream.
    #[arg(long, value_name = "NAME")]
    pub publication: String,
    /// Create what is missing: the publication (FOR TABLE the --table list; --table is needed
    /// only when the publication does not exist yet), tables it lacks, and the slot.
    #[arg(long)]
    pub create: bool,
    /// A table that must be published (added with --create); repeatable.
    #[arg(long = "table", value_name = "SCHEMA.TABLE")]
    pub tables: Vec<String>,
    /// Start here instead of the slot's confirmed_flush_lsn (never before it).
    #[arg(long, value_name = "LSN")]
    pub from_lsn: Option<Lsn>,
    /// Exit 0 after printing (and confirming) this many changes.
    #[arg(long, value_name = "N")]
    pub max_changes: Option<u64>,
}

/// Never prints the DSN (it may hold a password).
impl fmt::Debug for WalTailArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalTailArgs")
            .field("dsn", &"<redacted>")
            .field("slot", &self.slot)
            .field("publication", &self.publication)
            .field("create", &self.create)
            .field("tables", &self.tables)
            .field("from_lsn", &self.from_lsn)
            .field("max_changes", &self.max_changes)
            .finish()
    }
}

/// Runs `walcast wal tail`.
pub async fn run(args: WalTailArgs) -> anyhow::Result<()> {
    let mut connect = Dsn::parse(&args.dsn).context("invalid --dsn")?;
    if connect.application_name().is_none() {
        connect = connect.with_application_name("walcast-wal-tail");
    }
    let mut config = ChangeStreamConfig::new(connect, args.slot, args.publication);
    config.create = args.create;
    config.start_lsn = args.from_lsn;
    config.tables = args
        .tables
        .iter()
        .map(|t| t.parse::<TableName>())
        .collect::<Result<_, _>>()
        .context("invalid --table")?;
    let mut out = BufWriter::new(std::io::stdout());
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let written = tail(config, args.max_changes, &mut out, shutdown).await?;
    tracing::info!(written, "wal tail finished");
    Ok(())
}
