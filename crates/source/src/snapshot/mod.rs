//! Snapshots of aggregate tables into the event stream (`[snapshot]`): the current state of
//! each row becomes one event on the event topic, keyed by the aggregate id, while the live
//! stream goes on. Progress is kept on the snapshot progress topic
//! ([`walcast_kafka::snapshots`]).
//!
//! Requests reach the controller as [`Command`]s: from `[snapshot] initial` when the slot is
//! first created, and from signal-table rows read through the WAL (the `walcast snapshot`
//! commands write those rows).

// The controller that consumes these commands is being built; until it lands, nothing
// constructs them.
#![allow(dead_code)]

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
