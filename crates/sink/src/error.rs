//! The one error type of the sink, classified retryable or not.
//!
//! *Retryable* means the same work can succeed later without anybody changing anything: the
//! target database restarted or is unreachable, the broker is down, a serialization failure.
//! A target task retries those with backoff and falls behind alone. Everything else needs an
//! operator (bad config, a dropped table, wrong credentials) and its message says what to fix.
//!
//! Poison *events* are not errors of this type: they are values ([`crate::Rejection`]) that go
//! to the dead-letter topic while the partition keeps moving.

use std::path::PathBuf;

use rdkafka::error::KafkaError;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `walcast-sink`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connector file is invalid; the message names the key and the fix.
    #[error("sink config: {0}")]
    Config(String),

    /// Loading the connector file failed.
    #[error(transparent)]
    Load(#[from] walcast_config::ConfigError),

    /// A schema file listed under `[schema] files` could not be read.
    #[error("reading schema file {path}: {source}; fix the path under [schema] files")]
    SchemaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A target database could not be reached, refused TLS or the credentials.
    #[error("target {target}: {source}{hint}", hint = connect_hint(source))]
    Connect {
        target: String,
        // Boxed: the connection error is large and this path is cold.
        #[source]
        source: Box<walcast_postgres::Error>,
    },

    /// A statement on a target database failed.
    #[error("target {target}: {context}: {text}{hint}", text = pg_text(source), hint = pg_hint(source))]
    Postgres {
        target: String,
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },

    /// A Kafka client operation failed, or a topic cannot be used as it is.
    #[error(transparent)]
    Kafka(#[from] walcast_kafka::Error),

    /// The topic to consume does not exist (yet).
    #[error(
        "topic {topic} does not exist on {brokers}; create it (or start the source, which does) \
         or fix [kafka] topic"
    )]
    NoTopic { topic: String, brokers: String },

    /// The topic's partition count differs from the one the target recorded; the message
    /// names the fix (the `partitions` module).
    #[error("{0}")]
    PartitionsChanged(String),

    /// The topic no longer holds records a target needs (retention deleted them, or the topic
    /// was re-created): the target cannot consume, or a plain rebuild cannot start, without a
    /// gap. The message names the partitions, the missing offsets and the fixes (the
    /// `retention` module).
    #[error("{0}")]
    Gap(String),

    /// The admin endpoint could not be served.
    #[error("admin endpoint: {0}")]
    Admin(#[source] std::io::Error),
}

impl Error {
    /// Whether retrying (with backoff) may succeed without operator action.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Config(_)
            | Error::Load(_)
            | Error::SchemaFile { .. }
            | Error::Admin(_)
            | Error::PartitionsChanged(_)
            | Error::Gap(_) => false,
            Error::Postgres { source, .. } => pg_retryable(source),
            Error::Connect { source, .. } => source.is_retryable(),
            Error::Kafka(e) => e.is_retryable(),
            Error::NoTopic { .. } => true,
        }
    }

    /// Whether a Postgres error was caused by the data of the batch (SQLSTATE class 22 data
    /// exception or 23 integrity violation): the batch is then applied event by event and the
    /// failing events go to the dead-letter topic.
    pub(crate) fn is_data_error(&self) -> bool {
        match self {
            Error::Postgres { source, .. } => source
                .code()
                .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23")),
            _ => false,
        }
    }

    pub(crate) fn pg(
        target: &str,
        context: impl Into<String>,
    ) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let target = target.to_owned();
        let context = context.into();
        move |source| Error::Postgres {
            target,
            context,
            source,
        }
    }

    pub(crate) fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> Error {
        let context = context.into();
        move |source| Error::Kafka(walcast_kafka::Error::Kafka { context, source })
    }
}

/// Connection-level failures and SQLSTATEs that clear by themselves
/// ([`walcast_postgres::sqlstate`]).
fn pg_retryable(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(code) => walcast_postgres::sqlstate::is_transient(code.code()),
        // No SQLSTATE: the connection failed or closed (I/O, server gone, TLS).
        None => true,
    }
}

/// Longest server message quoted in an error.
const MESSAGE_BYTES: usize = 1024;

/// The server's message (tokio-postgres prints only "db error" for it), or the driver error
/// with its cause (e.g. the OS error behind "error connecting to server").
fn pg_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        // The server may echo a value of the batch: bounded, like every text the sink writes.
        return format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            crate::text::truncate(db.message(), MESSAGE_BYTES),
            db.code().code()
        );
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// The fix for a connection refused for a reason an operator causes.
fn connect_hint(e: &walcast_postgres::Error) -> &'static str {
    match e.sqlstate() {
        Some("28P01") => {
            "; the target rejected the password: fix user/password in the target's dsn"
        }
        Some("28000") => {
            "; the target refused the login (pg_hba.conf or role): check user, sslmode and \
             pg_hba.conf for this host"
        }
        Some("3D000") => {
            "; the database does not exist: create it or fix dbname in the target's dsn"
        }
        _ => "",
    }
}

/// The fix for the Postgres errors an operator causes.
fn pg_hint(e: &tokio_postgres::Error) -> &'static str {
    match e.code().map(|c| c.code()) {
        Some("28P01") | Some("28000") => {
            "; the target rejected the credentials: fix user/password in the target's dsn"
        }
        Some("3D000") => {
            "; the database does not exist: create it or fix dbname in the target's dsn"
        }
        Some("42P01") | Some("42703") => {
            "; a read table or column is missing: check [schema] files and the [[tables]] \
             mapping, or run `walcast sink rebuild --target NAME`"
        }
        Some("42501") => {
            "; permission denied: grant the sink's user INSERT/UPDATE/DELETE on the read tables"
        }
        _ => "",
    }
}
