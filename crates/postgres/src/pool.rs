//! Connection pools (deadpool-postgres) from a [`Dsn`], with TLS by its `sslmode`.
//!
//! deadpool earns its place over a hand-rolled pool by its timeouts: a database that is down
//! must fail a request within the connect timeout, not hang it, and a pool that is exhausted
//! must answer at once rather than queue forever. Connections that died (server restart) are
//! noticed by `is_closed` when they come back to the pool and are replaced.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode as PgSslMode;

use crate::dsn::{Dsn, Host, SslMode};
use crate::error::{Error, Result};
use crate::tls::MakeTls;

/// How a pool is sized and timed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Connections, at most (at least one).
    pub max_size: usize,
    /// Bounds connecting (replacing the DSN's `connect_timeout`), and waiting for a free
    /// connection.
    pub timeout: Duration,
    /// `application_name` when the DSN gives none.
    pub application_name: &'static str,
}

/// Builds a pool; connections are opened lazily, so this succeeds while the database is down.
/// A CA file that cannot be read, or a TLS mode a Unix socket cannot give, fails here.
pub fn pool(dsn: &Dsn, settings: &PoolSettings) -> Result<Pool> {
    let mut config = tokio_postgres::Config::new();
    match dsn.host() {
        Host::Tcp(h) => config.host(h),
        Host::Unix(dir) => config.host_path(dir),
    };
    config
        .port(dsn.port())
        .user(dsn.user())
        .dbname(dsn.dbname())
        .connect_timeout(settings.timeout)
        // The TLS checks themselves are MakeTls's; tokio-postgres only decides whether to ask.
        .ssl_mode(match dsn.ssl_mode() {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            _ => PgSslMode::Require,
        })
        .application_name(dsn.application_name().unwrap_or(settings.application_name))
        // DateStyle, TimeZone, … forced on every pooled connection, after the DSN's own options.
        .options(walcast_config::session_options(dsn.options()));
    if let Some(p) = dsn.password() {
        config.password(p);
    }
    let manager = Manager::from_config(
        config,
        MakeTls::new(dsn)?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(settings.max_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.timeout))
        .create_timeout(Some(settings.timeout))
        .recycle_timeout(Some(settings.timeout))
        .build()
        .map_err(|e| Error::Config(format!("building the connection pool for {dsn}: {e}")))
}
