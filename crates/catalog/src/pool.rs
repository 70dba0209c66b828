//! Connection pools: one for the write database, one per read replica, built by
//! [`walcast_postgres::pool`] (deadpool-postgres, TLS by the DSN's `sslmode`).
//!
//! A replica that is down must fail a request within `timeout`, not hang it, and a pool that
//! is exhausted must answer 503 rather than queue forever.

use std::time::Duration;

use deadpool_postgres::Pool;
use walcast_postgres::{Dsn, PoolSettings};

use crate::error::{Error, Result};

/// Size and timeouts of each pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// Connections per database, at most.
    pub max_size: usize,
    /// Bounds connecting, and waiting for a free connection.
    pub timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> PoolOptions {
        PoolOptions {
            max_size: 8,
            timeout: Duration::from_secs(2),
        }
    }
}

/// Builds a pool; connections are opened lazily, so this succeeds while the database is down.
/// A CA file that cannot be read fails here.
pub(crate) fn build(dsn: &Dsn, options: PoolOptions) -> Result<Pool> {
    let PoolOptions { max_size, timeout } = options;
    walcast_postgres::pool(
        dsn,
        &PoolSettings {
            max_size,
            timeout,
            application_name: "walcast-catalog",
        },
    )
    .map_err(|e| Error::Config(format!("the connection pool for {dsn}: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_ca_is_a_config_error_without_the_password() {
        let dsn: Dsn =
            "host=x password=hunter2 sslmode=verify-full sslrootcert=/nonexistent/ca.pem"
                .parse()
                .unwrap();
        let e = build(&dsn, PoolOptions::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("catalog config"), "{e}");
        assert!(
            e.contains("cannot load sslrootcert /nonexistent/ca.pem"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[tokio::test]
    async fn pooled_connections_force_the_session_settings() {
        let pg = walcast_testkit::Postgres::start().unwrap();
        pg.create_database("styled").unwrap();
        pg.psql(
            "postgres",
            "ALTER DATABASE styled SET DateStyle = 'SQL, DMY';
             ALTER DATABASE styled SET IntervalStyle = 'sql_standard';
             ALTER DATABASE styled SET TimeZone = 'America/New_York';
             ALTER DATABASE styled SET extra_float_digits = 0;",
        )
        .unwrap();
        let dsn = format!("{} options='-c TimeZone=Asia/Tokyo'", pg.dsn("styled"));
        let pool = build(&dsn.parse().unwrap(), PoolOptions::default()).unwrap();
        let client = pool.get().await.unwrap();
        let show = |s: &'static str| {
            let client = &client;
            async move {
                let row = client.query_one(&format!("SHOW {s}"), &[]).await.unwrap();
                row.get::<_, String>(0)
            }
        };
        assert!(show("DateStyle").await.starts_with("ISO, "));
        assert_eq!(show("IntervalStyle").await, "postgres");
        assert_eq!(show("TimeZone").await, "UTC");
        assert_eq!(show("extra_float_digits").await, "3");
    }
}
