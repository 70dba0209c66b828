//! The one error type of this crate, classified retryable or not.
//!
//! A *retryable* error is one where reconnecting and resuming from the last
//! confirmed LSN can succeed without anybody changing anything: the network
//! dropped, the server restarted, the walsender was terminated, another
//! consumer still holds the slot. Everything else (bad configuration, missing
//! privileges, `wal_level`, a protocol violation) needs an operator and is
//! reported at once. Operator-facing messages name the cause *and* the fix.

use std::fmt;
use std::io;

use walcast_pgoutput::DecodeError;
use walcast_postgres::sqlstate;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `walcast-replication`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The DSN or another setting is invalid.
    #[error("invalid replication config: {0}")]
    Config(String),

    /// A socket operation failed (connect, read, write, timeout).
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The server closed the connection without an error message.
    #[error("connection closed by server while {0}")]
    Closed(&'static str),

    /// TLS could not be negotiated or the certificate did not verify.
    #[error("TLS: {0}")]
    Tls(String),

    /// Authentication failed or asked for a method we do not speak.
    #[error("authentication: {0}")]
    Auth(String),

    /// The server sent an `ErrorResponse`.
    #[error(transparent)]
    Server(#[from] ServerError),

    /// The server sent something the protocol does not allow here.
    #[error("protocol violation: {0}")]
    Protocol(String),

    /// A pgoutput or replication sub-protocol message did not decode.
    #[error("decoding replication data: {0}")]
    Decode(#[from] DecodeError),

    /// An error on the ordinary SQL (management) connection.
    #[error("{context}: {text}{hint}", text = walcast_postgres::sql_text(source), hint = walcast_postgres::sql_hint(source))]
    Sql {
        /// What we were doing.
        context: String,
        /// The driver error; carries the SQLSTATE when the server sent one.
        #[source]
        source: tokio_postgres::Error,
    },

    /// The server or slot is not set up for logical replication; the message
    /// says what to change.
    #[error(transparent)]
    Precondition(#[from] Precondition),
}

impl Error {
    /// Whether reconnecting (with backoff) may succeed without operator action.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Io { .. } | Error::Closed(_) => true,
            Error::Server(e) => e.is_retryable(),
            // No SQLSTATE: retryable when the connection broke or timed out.
            Error::Sql { source, .. } => sqlstate::connection_is_transient(source),
            Error::Precondition(p) => p.is_retryable(),
            Error::Config(_)
            | Error::Tls(_)
            | Error::Auth(_)
            | Error::Protocol(_)
            | Error::Decode(_) => false,
        }
    }

    /// The SQLSTATE, when the error came from the server.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Error::Server(e) => Some(e.code()),
            Error::Sql { source, .. } => source.code().map(|c| c.code()),
            _ => None,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn sql(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let context = context.into();
        move |source| Error::Sql { context, source }
    }
}

/// The same failure in this crate's terms, variant by variant, so a connection error reads
/// and classifies the same whether it came from the transport or the replication protocol.
impl From<walcast_postgres::Error> for Error {
    fn from(e: walcast_postgres::Error) -> Error {
        use walcast_postgres::Error as E;
        match e {
            E::Config(problem) => Error::Config(problem),
            E::Io { context, source } => Error::Io { context, source },
            E::Tls(problem) => Error::Tls(problem),
            E::Protocol(problem) => Error::Protocol(problem),
            E::Sql { context, source } => Error::Sql { context, source },
            // The enum is non-exhaustive; a new kind of failure keeps its own text.
            other => Error::Protocol(other.to_string()),
        }
    }
}

/// An `ErrorResponse` from the server, with its SQLSTATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub(crate) severity: String,
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) detail: Option<String>,
    pub(crate) hint: Option<String>,
}

impl ServerError {
    /// `ERROR`, `FATAL` or `PANIC`.
    pub fn severity(&self) -> &str {
        &self.severity
    }
    /// The SQLSTATE, e.g. `42704`.
    pub fn code(&self) -> &str {
        &self.code
    }
    /// The primary message.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// The optional detail.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }
    /// The optional hint.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }
    /// See [`walcast_postgres::sqlstate`].
    pub fn is_retryable(&self) -> bool {
        sqlstate::is_transient(&self.code)
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " (detail: {d})")?;
        }
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}

/// A server, role, publication or slot that is not ready for logical
/// replication. Checked before streaming; each message says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Precondition {
    /// `wal_level` is not `logical`.
    #[error(
        "wal_level is '{actual}'; set wal_level = logical in postgresql.conf and restart Postgres"
    )]
    WalLevel {
        /// The current setting.
        actual: String,
    },
    /// The role may not start replication.
    #[error(
        "role \"{role}\" lacks the REPLICATION attribute; run ALTER ROLE \"{role}\" WITH REPLICATION as a superuser (or connect as a role that has it)"
    )]
    MissingReplicationRole {
        /// The connecting role.
        role: String,
    },
    /// The server is too old for what was asked.
    #[error(
        "Postgres server version {version} is too old: {feature} needs Postgres {required} or newer; upgrade the server{alternative}"
    )]
    ServerTooOld {
        /// `server_version` as reported.
        version: String,
        /// What needs the newer server.
        feature: &'static str,
        /// Minimum major version.
        required: u32,
        /// A way out other than upgrading, starting with "; ", or empty.
        alternative: &'static str,
    },
    /// Another process streams from the slot.
    #[error(
        "replication slot \"{slot}\" is in use by another process (pid {pid}); stop the other consumer, or terminate it with SELECT pg_terminate_backend({pid}), or use a different slot name"
    )]
    SlotInUse {
        /// Slot name.
        slot: String,
        /// `active_pid` from `pg_replication_slots`.
        pid: i32,
    },
    /// The slot exists but cannot be used by this client.
    #[error(
        "replication slot \"{slot}\" {problem}; drop it with SELECT pg_drop_replication_slot('{slot}') or configure a different slot name"
    )]
    SlotUnusable {
        /// Slot name.
        slot: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The slot does not exist and we were not asked to create it.
    #[error(
        "replication slot \"{slot}\" does not exist; create it (SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')), or let walcast create it ([postgres] create = true for walcast source, --create for walcast wal tail)"
    )]
    SlotMissing {
        /// Slot name.
        slot: String,
    },
    /// The publication does not exist.
    #[error(
        "publication \"{publication}\" does not exist in database \"{database}\"; create it with CREATE PUBLICATION \"{publication}\" FOR TABLE ... (or let walcast create it with --create)"
    )]
    PublicationMissing {
        /// Publication name.
        publication: String,
        /// The database we connected to.
        database: String,
    },
    /// The walsender found no publication at the WAL position it decodes: it was dropped under
    /// a running slot. Postgres looks it up as of each change, so creating it again does not
    /// help for the changes written while it was missing.
    #[error(
        "publication \"{publication}\" does not exist at the slot's position in the WAL (it was dropped while slot \"{slot}\" still had changes to decode); Postgres cannot decode changes written while it was missing, even after it is created again: create it again (CREATE PUBLICATION \"{publication}\" FOR TABLE ..., or let walcast create it), move the slot past the gap with SELECT pg_replication_slot_advance('{slot}', pg_current_wal_lsn()), and replay the rows written since the drop from the table"
    )]
    PublicationDropped {
        /// Publication name.
        publication: String,
        /// Slot name.
        slot: String,
    },
    /// A configured table is not in the publication.
    #[error(
        "publication \"{publication}\" does not include table {table}; run ALTER PUBLICATION \"{publication}\" ADD TABLE {table}"
    )]
    PublicationMissingTable {
        /// Publication name.
        publication: String,
        /// `schema.table`, quoted.
        table: String,
    },
    /// A configured table does not exist.
    #[error("table {table} does not exist; create it or remove it from the configured tables")]
    TableMissing {
        /// `schema.table`, quoted.
        table: String,
    },
    /// UPDATE/DELETE on this table cannot be replicated.
    #[error(
        "table {table} {reason}, so its UPDATEs and DELETEs cannot be replicated; add a primary key, or run ALTER TABLE {table} REPLICA IDENTITY FULL"
    )]
    NoReplicaIdentity {
        /// `schema.table`, quoted.
        table: String,
        /// "has no primary key and REPLICA IDENTITY DEFAULT" or similar.
        reason: &'static str,
    },
}

impl Precondition {
    /// Only a slot held by another process can clear up by itself (the other
    /// consumer exits, or its dead connection times out).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Precondition::SlotInUse { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_use_the_shared_sqlstate_table() {
        let server = |code: &str| ServerError {
            severity: "FATAL".into(),
            code: code.into(),
            message: "m".into(),
            detail: None,
            hint: None,
        };
        for code in ["08006", "08P01", "53300", "57P01", "55006", "40001"] {
            assert!(Error::from(server(code)).is_retryable(), "{code}");
        }
        for code in ["42704", "42501", "55000", "0A000", "XX000", "28P01"] {
            assert!(!Error::from(server(code)).is_retryable(), "{code}");
        }
    }

    #[test]
    fn operator_messages_name_cause_and_fix() {
        let e = Precondition::WalLevel {
            actual: "replica".into(),
        };
        assert_eq!(
            e.to_string(),
            "wal_level is 'replica'; set wal_level = logical in postgresql.conf and restart Postgres"
        );
        assert!(!Error::from(e).is_retryable());
        let e = Error::from(Precondition::SlotInUse {
            slot: "s".into(),
            pid: 42,
        });
        assert!(e.to_string().contains("pid 42"));
        assert!(e.is_retryable());
        let e = Error::from(Precondition::PublicationDropped {
            publication: "p".into(),
            slot: "s".into(),
        });
        assert!(e.to_string().contains("pg_replication_slot_advance('s'"));
        assert!(!e.is_retryable());
    }

    #[test]
    fn server_error_display() {
        let e = ServerError {
            severity: "ERROR".into(),
            code: "42704".into(),
            message: "replication slot \"x\" does not exist".into(),
            detail: None,
            hint: Some("h".into()),
        };
        assert_eq!(
            e.to_string(),
            "ERROR 42704: replication slot \"x\" does not exist (hint: h)"
        );
        assert!(!Error::from(e).is_retryable());
    }
}
