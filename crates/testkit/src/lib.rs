//! Real PostgreSQL 15 clusters and a real Apache Kafka broker for tests and local runs.
//!
//! Every integration test in walcast talks to real parts started by this crate:
//!
//! * [`Postgres`] runs `initdb` into a temporary directory, configures `wal_level = logical`
//!   with room for replication slots and senders, and starts `postgres` on a free loopback
//!   port. When the test process runs as root (as CI does), the cluster runs as the
//!   `postgres` OS user, because Postgres refuses to run as root.
//! * [`Kafka`] runs Apache Kafka in KRaft mode (one node acting as broker and controller) with
//!   `java`, from jars that `scripts/fetch-kafka.sh` resolves from Maven Central once per
//!   machine. A JVM is expensive on a two-core machine, so a test binary shares one broker
//!   ([`Kafka::shared`]) and gives each test its own topic names ([`unique_name`]).
//! * Security: [`PostgresBuilder::tls_scram`] makes a cluster's TCP port TLS-only with
//!   SCRAM-SHA-256 passwords, and [`Kafka::start_secure`] adds a `SASL_SSL` (SCRAM-SHA-256)
//!   listener; both use a throwaway CA generated with the `openssl` crate.
//!
//! Helpers for the tests themselves: [`free_port`] (never the same port twice in one binary),
//! [`wait_until`] / [`wait_until_async`] (a condition with a deadline, named when it fails),
//! [`Service`] (the `walcast` binary as a child process: kill -9, SIGTERM, its log, restarts)
//! and [`ConnectorFile`] (connector files written from typed values).
//!
//! Teardown: dropping a handle kills its process and removes its directory, also while a test
//! panics. Processes are started with a parent-death signal, so even a test binary killed with
//! `SIGKILL` leaves no orphaned Postgres or JVM behind.
//!
//! ```no_run
//! # fn main() -> Result<(), walcast_testkit::KitError> {
//! let pg = walcast_testkit::Postgres::start()?;
//! assert_eq!(pg.psql("postgres", "SHOW wal_level")?, "logical");
//! # Ok(()) }
//! ```

mod connector;
mod error;
mod kafka;
mod ports;
mod postgres;
mod process;
mod service;
mod tls;
mod wait;

pub use connector::{ConnectorFile, SINK_FILE, SOURCE_FILE};
pub use error::KitError;
pub use kafka::Kafka;
pub use ports::free_port;
pub use postgres::{Postgres, PostgresBuilder};
pub use service::Service;
pub use toml_edit::Value as TomlValue;
pub use wait::{wait_until, wait_until_async};

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// A name unique within this machine for a database, slot, publication, topic or group.
///
/// Lower-case ASCII, digits and `_` only, so it is valid unquoted in SQL and as a topic name.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{clean}_{}_{n}", std::process::id())
}

/// The root of the walcast repository this crate was built from (holds `infra/` and `scripts/`).
pub fn repo_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("WALCAST_REPO") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_are_sql_safe() {
        let a = unique_name("My-Topic");
        let b = unique_name("My-Topic");
        assert_ne!(a, b);
        assert!(a.starts_with("my_topic_"));
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        );
    }
}
