//! Connection pools (deadpool-postgres): one for the write database, one per read replica.
//!
//! deadpool earns its place over a hand-rolled pool by its timeouts: a replica that is down
//! must fail a request within `connect_timeout`, not hang it, and a pool that is exhausted
//! must answer 503 rather than queue forever. Connections that died (server restart) are
//! noticed by `is_closed` when they come back to the pool and are replaced.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use walcast_config::Dsn;

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
pub(crate) fn build(dsn: &Dsn, options: PoolOptions) -> Result<Pool> {
    let PoolOptions { max_size, timeout } = options;
    let mut config: tokio_postgres::Config = dsn.expose().parse().map_err(|e| {
        Error::Config(format!(
            "cannot parse the DSN {dsn}: {e}; fix the connection string"
        ))
    })?;
    config.connect_timeout(timeout);
    // DateStyle, TimeZone, … forced on every pooled connection, after the DSN's own options.
    let options = walcast_config::session_options(config.get_options());
    config.options(&options);
    if config.get_application_name().is_none() {
        config.application_name("walcast-catalog");
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .map_err(|e| Error::Config(format!("building the connection pool for {dsn}: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_dsn_is_a_config_error_without_the_password() {
        let e = build(
            &Dsn::new("host=x password=hunter2 bogus_key=1"),
            PoolOptions::default(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("cannot parse the DSN"), "{e}");
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
        let pool = build(&Dsn::new(dsn), PoolOptions::default()).unwrap();
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
