//! The error of connecting to Postgres, and how a driver error reads for an operator.
//!
//! Each user of this crate maps it into its own error type (the replication client variant
//! by variant); whether it is worth retrying is [`Error::is_retryable`], built on the one
//! SQLSTATE table in [`crate::sqlstate`].

use std::io;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong parsing a DSN or opening a connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The DSN or another connection setting is invalid.
    #[error("invalid connection settings: {0}")]
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

    /// TLS could not be negotiated or the certificate did not verify.
    #[error("TLS: {0}")]
    Tls(String),

    /// The server sent something the protocol does not allow here.
    #[error("protocol violation: {0}")]
    Protocol(String),

    /// The driver failed (login, startup, a statement).
    #[error("{context}: {text}{hint}", text = sql_text(source), hint = sql_hint(source))]
    Sql {
        /// What we were doing.
        context: String,
        /// The driver error; carries the SQLSTATE when the server sent one.
        #[source]
        source: tokio_postgres::Error,
    },
}

impl Error {
    /// Whether connecting again (with backoff) may succeed without operator action: the
    /// network or the server was away, or the server answered with a transient SQLSTATE.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Io { .. } => true,
            Error::Sql { source, .. } => crate::sqlstate::connection_is_transient(source),
            Error::Config(_) | Error::Tls(_) | Error::Protocol(_) => false,
        }
    }

    /// The SQLSTATE, when the error came from the server.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Error::Sql { source, .. } => source.code().map(|c| c.code()),
            _ => None,
        }
    }

    /// An I/O error while doing `context`.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps a driver error with what we were doing.
    pub fn sql(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let context = context.into();
        move |source| Error::Sql { context, source }
    }
}

/// The server's message (tokio-postgres prints only "db error" for it), or the driver error
/// with its cause.
pub fn sql_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// The fix for the connection errors an operator causes, starting with "; ", or empty.
pub fn sql_hint(e: &tokio_postgres::Error) -> &'static str {
    match e.code().map(|c| c.code()) {
        Some("28P01") | Some("28000") => {
            "; the server rejected the credentials: fix user and password in the dsn (or the \
             server's pg_hba.conf)"
        }
        Some("3D000") => "; the database does not exist: create it or fix dbname in the dsn",
        _ => "",
    }
}
