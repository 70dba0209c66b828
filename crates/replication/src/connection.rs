//! A replication-mode connection (`replication=database`) and the commands
//! of the streaming replication protocol, sent as simple queries.
//!
//! ```text
//!  IDENTIFY_SYSTEM                                   ──▶ systemid, timeline, xlogpos, dbname
//!  CREATE_REPLICATION_SLOT s LOGICAL pgoutput (...)  ──▶ slot, consistent_point, snapshot
//!  START_REPLICATION SLOT s LOGICAL 0/0 (...)        ──▶ CopyBothResponse, then CopyData both ways
//! ```

use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tracing::info;
use walcast_pgoutput::Lsn;

use crate::copy_both::ReplicationStream;
use crate::error::{Error, Precondition, Result};
use crate::startup::{self, Session};
use crate::wire::{Backend, Wire, server_error, unexpected};
use walcast_postgres::Dsn;

/// Result of `IDENTIFY_SYSTEM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemIdentity {
    /// Unique cluster identifier.
    pub system_id: String,
    /// Current timeline.
    pub timeline: u32,
    /// Current WAL flush location.
    pub xlogpos: Lsn,
    /// Database connected to.
    pub dbname: Option<String>,
}

/// What to do with the snapshot of a newly created slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotAction {
    /// Export it (usable with `SET TRANSACTION SNAPSHOT` until the next
    /// command on this connection) for an initial table copy.
    Export,
    /// Do not export a snapshot.
    Nothing,
}

/// Result of `CREATE_REPLICATION_SLOT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSlot {
    /// Slot name.
    pub slot_name: String,
    /// The first LSN the slot can stream from.
    pub consistent_point: Lsn,
    /// The exported snapshot, with [`SnapshotAction::Export`].
    pub snapshot_name: Option<String>,
    /// The output plugin, `pgoutput`.
    pub output_plugin: Option<String>,
}

/// Options of `START_REPLICATION ... LOGICAL` for pgoutput.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartOptions {
    /// pgoutput protocol version: 1, or 2 (Postgres 14+, needed for `streaming`).
    pub proto_version: u32,
    /// Publications to stream.
    pub publications: Vec<String>,
    /// Also stream `pg_logical_emit_message` messages.
    pub messages: bool,
    /// Stream large in-progress transactions (proto v2+).
    pub streaming: bool,
}

impl StartOptions {
    /// Protocol v2 with messages, no in-progress streaming.
    pub fn new(publication: impl Into<String>) -> StartOptions {
        StartOptions {
            proto_version: 2,
            publications: vec![publication.into()],
            messages: true,
            streaming: false,
        }
    }

    fn render(&self) -> String {
        let pubs = self
            .publications
            .iter()
            .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(",");
        let mut opts = format!(
            "proto_version '{}', publication_names {}",
            self.proto_version,
            quote_literal(&pubs)
        );
        if self.messages {
            opts.push_str(", messages 'true'");
        }
        if self.streaming {
            opts.push_str(", streaming 'on'");
        }
        opts
    }
}

/// One row of a simple-query result, text format.
pub(crate) type Row = Vec<Option<String>>;

/// A connection in replication mode, before streaming.
#[derive(Debug)]
pub struct ReplicationConnection {
    wire: Wire,
    session: Session,
    config: Dsn,
}

impl ReplicationConnection {
    /// Connects with `replication=database` and authenticates.
    pub async fn connect(config: &Dsn) -> Result<ReplicationConnection> {
        let (wire, session) = startup::connect(config, true).await?;
        Ok(ReplicationConnection {
            wire,
            session,
            config: config.clone(),
        })
    }

    /// The walsender's process id.
    pub fn backend_pid(&self) -> i32 {
        self.session.backend_pid
    }

    /// `server_version` as reported at startup, e.g. `15.18 (Debian 15.18-0+deb12u1)`.
    pub fn server_version(&self) -> &str {
        self.session
            .parameters
            .get("server_version")
            .map_or("", String::as_str)
    }

    /// A setting the server reported at startup (`ParameterStatus`: `DateStyle`, `TimeZone`,
    /// `IntervalStyle`, `server_version`, …).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.session.parameters.get(name).map(String::as_str)
    }

    /// The major version (10, 11, ..., 15), from `server_version`.
    pub fn server_major_version(&self) -> Option<u32> {
        major_version(self.server_version())
    }

    /// `IDENTIFY_SYSTEM`.
    pub async fn identify_system(&mut self) -> Result<SystemIdentity> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = rows
            .into_iter()
            .next()
            .ok_or_else(|| Error::Protocol("IDENTIFY_SYSTEM returned no row".to_owned()))?;
        let col = |i: usize| row.get(i).cloned().flatten();
        Ok(SystemIdentity {
            system_id: col(0).unwrap_or_default(),
            timeline: col(1).and_then(|t| t.parse().ok()).unwrap_or_default(),
            xlogpos: parse_lsn(col(2).as_deref(), "IDENTIFY_SYSTEM xlogpos")?,
            dbname: col(3),
        })
    }

    /// `CREATE_REPLICATION_SLOT name LOGICAL pgoutput`, with the Postgres 15
    /// option syntax (`(SNAPSHOT 'export')`) or the older keywords before 15.
    pub async fn create_replication_slot(
        &mut self,
        name: &str,
        snapshot: SnapshotAction,
    ) -> Result<CreatedSlot> {
        validate_slot_name(name)?;
        let new_syntax = self.server_major_version().is_none_or(|v| v >= 15);
        let sql = match (snapshot, new_syntax) {
            (SnapshotAction::Export, true) => {
                format!("CREATE_REPLICATION_SLOT {name} LOGICAL pgoutput (SNAPSHOT 'export')")
            }
            (SnapshotAction::Nothing, true) => {
                format!("CREATE_REPLICATION_SLOT {name} LOGICAL pgoutput (SNAPSHOT 'nothing')")
            }
            (SnapshotAction::Export, false) => {
                format!("CREATE_REPLICATION_SLOT {name} LOGICAL pgoutput EXPORT_SNAPSHOT")
            }
            (SnapshotAction::Nothing, false) => {
                format!("CREATE_REPLICATION_SLOT {name} LOGICAL pgoutput NOEXPORT_SNAPSHOT")
            }
        };
        let rows = self.simple_query(&sql).await?;
        let row = rows
            .into_iter()
            .next()
            .ok_or_else(|| Error::Protocol("CREATE_REPLICATION_SLOT returned no row".to_owned()))?;
        let col = |i: usize| row.get(i).cloned().flatten();
        let created = CreatedSlot {
            slot_name: col(0).unwrap_or_else(|| name.to_owned()),
            consistent_point: parse_lsn(col(1).as_deref(), "consistent_point")?,
            snapshot_name: col(2),
            output_plugin: col(3),
        };
        info!(slot = %created.slot_name, consistent_point = %created.consistent_point, "replication slot created");
        Ok(created)
    }

    /// `START_REPLICATION SLOT name LOGICAL start (options)`; on success the
    /// connection is in CopyBoth mode.
    ///
    /// `start` = `0/0` means "from the slot's `confirmed_flush_lsn`"; the
    /// server never starts before that position in any case.
    pub async fn start_replication(
        mut self,
        slot: &str,
        start: Lsn,
        options: &StartOptions,
    ) -> Result<ReplicationStream> {
        validate_slot_name(slot)?;
        let major = self.server_major_version();
        if major.is_some_and(|v| v < 10) {
            return Err(Precondition::ServerTooOld {
                version: self.server_version().to_owned(),
                feature: "logical replication with pgoutput",
                required: 10,
                alternative: "",
            }
            .into());
        }
        if options.proto_version >= 2 && major.is_some_and(|v| v < 14) {
            return Err(Precondition::ServerTooOld {
                version: self.server_version().to_owned(),
                feature: "pgoutput protocol version 2",
                required: 14,
                alternative: "; or configure proto_version 1",
            }
            .into());
        }
        let sql = format!(
            "START_REPLICATION SLOT {slot} LOGICAL {start} ({})",
            options.render()
        );
        self.wire.encode(|b| frontend::query(&sql, b))?;
        self.wire.flush().await?;
        const DOING: &str = "starting replication";
        loop {
            match self.wire.recv(DOING).await? {
                Backend::CopyBothResponse => break,
                Backend::Message(Message::ErrorResponse(e)) => {
                    let err = server_error(&e);
                    self.drain_until_ready().await.ok();
                    return Err(err.into());
                }
                Backend::Message(Message::ParameterStatus(_)) => {}
                other => return Err(unexpected(&other, DOING)),
            }
        }
        info!(slot, %start, pid = self.session.backend_pid, "replication started");
        Ok(ReplicationStream::new(
            self.wire,
            slot.to_owned(),
            self.session.backend_pid,
        ))
    }

    /// Runs one simple-query command and collects its rows as text.
    pub(crate) async fn simple_query(&mut self, sql: &str) -> Result<Vec<Row>> {
        self.wire.encode(|b| frontend::query(sql, b))?;
        self.wire.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.wire.recv("running a replication command").await? {
                Backend::Message(Message::RowDescription(_)) => {}
                Backend::Message(Message::DataRow(row)) => rows.push(data_row(&row)?),
                Backend::Message(
                    Message::CommandComplete(_)
                    | Message::EmptyQueryResponse
                    | Message::ParameterStatus(_),
                ) => {}
                Backend::Message(Message::ErrorResponse(e)) => error = Some(server_error(&e)),
                Backend::Message(Message::ReadyForQuery(_)) => break,
                other => return Err(unexpected(&other, "running a replication command")),
            }
        }
        match error {
            Some(e) => Err(e.into()),
            None => Ok(rows),
        }
    }

    async fn drain_until_ready(&mut self) -> Result<()> {
        loop {
            if let Backend::Message(Message::ReadyForQuery(_)) =
                self.wire.recv("recovering from an error").await?
            {
                return Ok(());
            }
        }
    }

    /// Sends `Terminate` and closes the socket.
    pub async fn close(mut self) {
        let terminate = self.wire.encode(|b| {
            frontend::terminate(b);
            Ok(())
        });
        if terminate.is_ok() {
            let _ = self.wire.flush().await;
        }
        self.wire.shutdown().await;
    }

    /// The settings this connection was made with.
    pub fn config(&self) -> &Dsn {
        &self.config
    }
}

fn data_row(row: &postgres_protocol::message::backend::DataRowBody) -> Result<Row> {
    use fallible_iterator::FallibleIterator;
    let buf = row.buffer();
    row.ranges()
        .map(|r| Ok(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned())))
        .collect()
        .map_err(|e| Error::Protocol(format!("malformed DataRow: {e}")))
}

fn parse_lsn(s: Option<&str>, what: &str) -> Result<Lsn> {
    s.unwrap_or("0/0")
        .parse()
        .map_err(|e| Error::Protocol(format!("{what}: {e}")))
}

pub(crate) fn major_version(server_version: &str) -> Option<u32> {
    let digits: String = server_version
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Slot names are what Postgres allows: `[a-z0-9_]{1,63}`. Checking here
/// keeps them safe to splice into replication commands.
pub(crate) fn validate_slot_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "replication slot name \"{name}\" is invalid; use 1 to 63 lower-case letters, digits and underscores"
        )))
    }
}

/// A SQL string literal.
pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_start_options() {
        let mut o = StartOptions::new("my\"pub");
        assert_eq!(
            o.render(),
            "proto_version '2', publication_names '\"my\"\"pub\"', messages 'true'"
        );
        o.streaming = true;
        o.messages = false;
        o.proto_version = 1;
        o.publications.push("it's".into());
        assert_eq!(
            o.render(),
            "proto_version '1', publication_names '\"my\"\"pub\",\"it''s\"', streaming 'on'"
        );
    }

    #[test]
    fn slot_names() {
        assert!(validate_slot_name("walcast_1").is_ok());
        for bad in ["", "Upper", "has space", "x;DROP", &"a".repeat(64)] {
            assert!(validate_slot_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn major_versions() {
        assert_eq!(major_version("15.18 (Debian 15.18-0+deb12u1)"), Some(15));
        assert_eq!(major_version("9.6.24"), Some(9));
        assert_eq!(major_version("17devel"), Some(17));
        assert_eq!(major_version(""), None);
    }
}
