//! The one error type of the source, classified retryable or not.
//!
//! *Retryable* means the same work can succeed later without anybody changing anything:
//! Postgres restarted, the broker is unreachable, the slot is still held by the walsender of
//! a killed predecessor. The source then starts over from the last confirmed LSN with backoff
//! (see [`crate::Source::run`]); nothing is lost, the unacknowledged tail is produced again.
//! Everything else needs an operator and the message says what to change.
//!
//! Rows the router cannot map are not errors of this type: they are dead letters
//! ([`crate::outbox::DeadLetter`]) that go to the DLQ topic while the stream moves on.

use rdkafka::error::KafkaError;
use walcast_pgoutput::Lsn;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `walcast-source`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connector file is invalid; the message names the key and the fix.
    #[error(transparent)]
    Config(#[from] walcast_config::ConfigError),

    /// Logical replication failed (connection, slot, publication, preflight).
    #[error(transparent)]
    Replication(#[from] walcast_replication::Error),

    /// A statement on the write database failed.
    #[error("postgres: {context}: {source}")]
    Postgres {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },

    /// The outbox table does not exist.
    #[error(
        "outbox table {table} does not exist in database \"{database}\"; create it \
         (walcast schema apply write) or fix [outbox] table in the connector file"
    )]
    MissingTable { table: String, database: String },

    /// A configured outbox column does not exist.
    #[error(
        "outbox table {table} has no column \"{column}\" (configured as {key}); fix the column \
         name in the connector file or add the column to the table"
    )]
    MissingColumn {
        table: String,
        column: String,
        key: String,
    },

    /// A `[[snapshot.tables]]` entry does not match the database; the message names the fix.
    #[error("snapshot table {table} {problem}")]
    SnapshotTable { table: String, problem: String },

    /// The signal table (`[snapshot] signal_table`) does not exist and `[postgres] create` is
    /// off.
    #[error(
        "signal table {table} ([snapshot] signal_table) does not exist; create it as the role \
         that owns the publication (a table in a publication must be owned by the publication's \
         owner): {ddl}; then add it to the publication, or set [postgres] create = true to let \
         the source do both, or set [snapshot] signal_table = \"\" for no signals"
    )]
    MissingSignalTable { table: String, ddl: String },

    /// A Kafka client operation failed (broker unreachable, metadata, topic creation), or a
    /// topic exists with settings other than the configured ones.
    #[error(transparent)]
    Kafka(#[from] walcast_kafka::Error),

    /// The broker refused a record for good (not a size problem, which goes to the DLQ).
    #[error(
        "kafka refused a record for topic {topic} (source LSN {lsn}): {source}; the source \
         restarts from the last confirmed LSN"
    )]
    Delivery {
        topic: String,
        lsn: Lsn,
        #[source]
        source: KafkaError,
    },

    /// An UPDATE, DELETE or TRUNCATE of the outbox with `invalid_op = "fail"`.
    #[error(
        "{op} of outbox table {table} at LSN {lsn}: outbox rows must only be inserted; stop \
         the writer that changes them, or set [outbox] invalid_op = \"warn\" (or \"ignore\") \
         to skip such changes"
    )]
    InvalidOp { op: String, table: String, lsn: Lsn },

    /// A replay that cannot be done safely as asked; the message names the way out.
    #[error("replay refused: {0}")]
    Replay(String),

    /// The admin endpoint could not be bound or served.
    #[error("admin endpoint: {0}")]
    Admin(#[source] std::io::Error),
}

impl Error {
    /// Whether starting over from the last confirmed LSN (with backoff) may succeed without
    /// operator action.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Replication(e) => e.is_retryable(),
            Error::Postgres { source, .. } => match source.code() {
                Some(code) => walcast_postgres::sqlstate::is_transient(code.code()),
                None => true,
            },
            Error::Kafka(e) => e.is_retryable(),
            Error::Delivery { .. } => true,
            Error::Config(_)
            | Error::MissingTable { .. }
            | Error::MissingSignalTable { .. }
            | Error::MissingColumn { .. }
            | Error::SnapshotTable { .. }
            | Error::InvalidOp { .. }
            | Error::Replay(_)
            | Error::Admin(_) => false,
        }
    }

    pub(crate) fn postgres(
        context: impl Into<String>,
    ) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let context = context.into();
        move |source| Error::Postgres { context, source }
    }

    pub(crate) fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> Error {
        let context = context.into();
        move |source| Error::Kafka(walcast_kafka::Error::Kafka { context, source })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn operator_errors_name_cause_and_fix() {
        let e = Error::MissingColumn {
            table: "\"public\".\"outbox_messages\"".into(),
            column: "aggregate_idx".into(),
            key: "[outbox.columns] key".into(),
        };
        let text = e.to_string();
        assert!(text.contains("no column \"aggregate_idx\"") && text.contains("fix the column"));
        assert!(!e.is_retryable());
        let e = Error::InvalidOp {
            op: "UPDATE".into(),
            table: "t".into(),
            lsn: Lsn(1),
        };
        assert!(e.to_string().contains("invalid_op = \"warn\""));
        assert!(!e.is_retryable());
        let e = Error::kafka("creating topic")(KafkaError::AdminOpCreation("timed out".into()));
        assert!(e.is_retryable());
    }

    #[test]
    fn transient_topic_failures_start_over_and_refusals_stop() {
        use rdkafka::error::RDKafkaErrorCode;
        for code in [
            RDKafkaErrorCode::RequestTimedOut,
            RDKafkaErrorCode::NotController,
            RDKafkaErrorCode::BrokerNotAvailable,
        ] {
            let e = Error::from(walcast_kafka::Error::Kafka {
                context: "creating topic t".into(),
                source: KafkaError::AdminOp(code),
            });
            assert!(e.is_retryable(), "{code}");
        }
        let e = Error::from(walcast_kafka::Error::Topic {
            topic: "t".into(),
            problem: "cannot be created: Broker: Invalid topic".into(),
        });
        assert!(!e.is_retryable());
        assert_eq!(
            e.to_string(),
            "topic t cannot be created: Broker: Invalid topic"
        );
    }
}
