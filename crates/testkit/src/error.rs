use std::path::PathBuf;

/// Why the kit could not start or drive a component. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KitError {
    #[error("could not run `{program}`: {source}; is it installed? run scripts/install-deps.sh")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed with {status}: {output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error("{what} did not become ready within {seconds} s; its log is {log}:\n{tail}")]
    NotReady {
        what: String,
        seconds: u64,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "PostgreSQL server binaries not found (looked for initdb in {looked}); install postgresql-15 \
         or set WALCAST_PG_BIN to the directory holding initdb and postgres"
    )]
    NoPostgres { looked: String },
    #[error(
        "the OS user `postgres` is needed to run Postgres as root but does not exist; create it or run as another user"
    )]
    NoPostgresUser,
    #[error("{what}: not within {timeout:?}")]
    TimedOut {
        what: String,
        timeout: std::time::Duration,
    },
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl KitError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> KitError {
        let path = path.into();
        move |source| KitError::Io { path, source }
    }
}
