//! Snapshots of aggregate tables into the event stream (`[snapshot]`): the current state of
//! each row becomes one event on the event topic, keyed by the aggregate id, while the live
//! stream goes on. Progress is kept on the snapshot progress topic
//! ([`walcast_kafka::snapshots`]).
//!
//! Requests reach the controller as [`Command`]s: from `[snapshot] initial` when the slot is
//! first created, and from signal-table rows read through the WAL (the `walcast snapshot`
//! commands write those rows).

//!
//! ```text
//!  initial / signal row / CLI ──Command──▶ Controller (one task, next to the pipeline)
//!                                            │ keyset chunks: SELECT … WHERE key > $last
//!                                            │                ORDER BY key LIMIT chunk_size
//!                                            ▼
//!                        one record per row ─▶ event topic (key = aggregate id)
//!                                            │ every record of the chunk acknowledged
//!                                            ▼
//!                        SnapshotState ─▶ <topic>.snapshots (acknowledged before the next chunk)
//! ```
//!
//! * `table.rs`: the start-up check of a table, its chunk query, the record of a row.
//! * `controller.rs`: the task, and **the progress rule** (when a chunk's state is stored).
//! * `throttle.rs`: `max_rows_per_sec`.

mod controller;
mod table;
mod throttle;

use tokio::sync::mpsc;
use tokio_postgres::Client;
use tracing::warn;

use crate::config::SourceConfig;
use crate::error::Result;

pub(crate) use controller::{Controller, Setup};
pub(crate) use table::Table;

/// Checks every `[[snapshot.tables]]` entry against the database (start-up): a table that
/// lacks its key, version or occurred_at column is refused with the fix.
pub(crate) async fn check_tables(client: &Client, config: &SourceConfig) -> Result<Vec<Table>> {
    let mut tables = Vec::with_capacity(config.snapshot.tables.len());
    for t in &config.snapshot.tables {
        tables.push(Table::load(client, t, config.snapshot.field_naming).await?);
    }
    Ok(tables)
}

/// Answers commands when this process runs no snapshots (no `[[snapshot.tables]]`, or
/// `--discard`): each is logged and accepted, as there is nothing it could start.
pub(crate) async fn ignore(mut commands: mpsc::UnboundedReceiver<Command>) {
    while let Some(c) = commands.recv().await {
        warn!(command = ?c, "snapshot request ignored: this source has no [[snapshot.tables]] (or runs with --discard)");
        let (Command::Start { accepted, .. } | Command::Cancel { accepted, .. }) = c;
        if let Some(a) = accepted {
            a();
        }
    }
}

/// Called once the request it came with is durable (its state is on the progress topic, or
/// the snapshot was already known), so the transaction that carried a signal row may be
/// confirmed. Dropped without a call when the request could not be stored: the transaction
/// then stays unconfirmed and the signal is read again after a restart.
pub(crate) type Accepted = Box<dyn FnOnce() + Send>;

/// What the snapshot controller is asked to do.
pub(crate) enum Command {
    /// Snapshot `tables` (`schema.table`, each one of `[[snapshot.tables]]`; empty = all of
    /// them) under `id`. An id the progress topic already knows starts nothing new.
    Start {
        id: String,
        tables: Vec<String>,
        /// `initial`, `signal`, `cli`, `rebuild <target>`: for the state and the logs.
        requested_by: String,
        accepted: Option<Accepted>,
    },
    /// Cancel snapshot `id`, or (`id` = `None`) the running snapshots of `tables` (empty =
    /// every running snapshot).
    Cancel {
        id: Option<String>,
        tables: Vec<String>,
        reason: String,
        accepted: Option<Accepted>,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Start {
                id,
                tables,
                requested_by,
                ..
            } => f
                .debug_struct("Start")
                .field("id", id)
                .field("tables", tables)
                .field("requested_by", requested_by)
                .finish_non_exhaustive(),
            Command::Cancel {
                id, tables, reason, ..
            } => f
                .debug_struct("Cancel")
                .field("id", id)
                .field("tables", tables)
                .field("reason", reason)
                .finish_non_exhaustive(),
        }
    }
}
