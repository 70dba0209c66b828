//! `walcast app`: the catalog app — the write API and the query API over the read replicas.
//!
//! ```text
//! walcast app \
//!   --write-dsn "host=127.0.0.1 port=5432 user=postgres dbname=catalog_write" \
//!   --read-dsn  "host=127.0.0.1 port=5433 user=postgres dbname=catalog_read" \
//!   --read-dsn  "host=127.0.0.1 port=5434 user=postgres dbname=catalog_read" \
//!   --read-dsn  "host=127.0.0.1 port=5435 user=postgres dbname=catalog_read" \
//!   --write-listen 127.0.0.1:3000 --query-listen 127.0.0.1:4000
//! ```
//!
//! Replicas are named `replica-1`, `replica-2`, ... in the order given (the names the sink's
//! connector file uses for its targets). Both ports also serve `/health`, `/ready` and
//! `/metrics`. Every flag has an environment variable; `WALCAST_APP_READ_DSNS` separates
//! DSNs with `;`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;
use walcast_catalog::app::{self, AppConfig};
use walcast_catalog::{KeyRetention, LagPolicy, PoolOptions, ReplicaConfig};
use walcast_postgres::Dsn;
use walcast_telemetry::admin::Health;
use walcast_telemetry::metrics::Registry;

#[derive(Debug, Args)]
pub struct AppArgs {
    /// The write database (`catalog_write` on the leader).
    #[arg(
        long,
        env = "WALCAST_APP_WRITE_DSN",
        default_value = "host=127.0.0.1 port=5432 user=postgres dbname=catalog_write",
        hide_env_values = true
    )]
    write_dsn: String,
    /// A read replica's `catalog_read` database; repeat once per replica.
    #[arg(
        long = "read-dsn",
        env = "WALCAST_APP_READ_DSNS",
        value_delimiter = ';',
        hide_env_values = true,
        default_values = [
            "host=127.0.0.1 port=5433 user=postgres dbname=catalog_read",
            "host=127.0.0.1 port=5434 user=postgres dbname=catalog_read",
            "host=127.0.0.1 port=5435 user=postgres dbname=catalog_read",
        ]
    )]
    read_dsns: Vec<String>,
    /// Where the write API listens.
    #[arg(
        long,
        env = "WALCAST_APP_WRITE_LISTEN",
        default_value = "127.0.0.1:3000"
    )]
    write_listen: SocketAddr,
    /// Where the query API listens.
    #[arg(
        long,
        env = "WALCAST_APP_QUERY_LISTEN",
        default_value = "127.0.0.1:4000"
    )]
    query_listen: SocketAddr,
    /// Connections per database, at most.
    #[arg(long, env = "WALCAST_APP_POOL_SIZE", default_value_t = 8)]
    pool_size: usize,
    /// Skip a replica that has been behind the freshest one for longer than this (ms).
    #[arg(long, env = "WALCAST_APP_MAX_LAG_MS", default_value_t = 5000)]
    max_lag_ms: u64,
    /// Skip a replica more than this many WAL bytes behind the freshest one.
    #[arg(long, env = "WALCAST_APP_MAX_LAG_BYTES", default_value_t = 16 * 1024 * 1024)]
    max_lag_bytes: u64,
    /// How often every replica's health and applied LSN are probed (ms).
    #[arg(long, env = "WALCAST_APP_PROBE_INTERVAL_MS", default_value_t = 500)]
    probe_interval_ms: u64,
    /// Keep idempotency keys this long (s); a retry after that runs the command again.
    #[arg(long, env = "WALCAST_APP_IDEMPOTENCY_WINDOW_SECS", default_value_t = 24 * 3600)]
    idempotency_window_secs: u64,
    /// Seconds between passes that delete idempotency keys older than the window.
    #[arg(
        long,
        env = "WALCAST_APP_IDEMPOTENCY_PRUNE_INTERVAL_SECS",
        default_value_t = 60
    )]
    idempotency_prune_interval_secs: u64,
}

pub async fn run(args: AppArgs) -> anyhow::Result<()> {
    let replicas: Vec<ReplicaConfig> = args
        .read_dsns
        .iter()
        .filter(|d| !d.trim().is_empty())
        .enumerate()
        .map(|(i, dsn)| {
            // The value is not echoed: it may carry a password.
            Ok(ReplicaConfig {
                name: format!("replica-{}", i + 1),
                dsn: Dsn::parse(dsn.trim())
                    .with_context(|| format!("--read-dsn number {}", i + 1))?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(
        !replicas.is_empty(),
        "no read replica: give at least one --read-dsn"
    );
    let config = AppConfig {
        write_dsn: Dsn::parse(&args.write_dsn).context("--write-dsn")?,
        replicas,
        pool: PoolOptions {
            max_size: args.pool_size,
            ..PoolOptions::default()
        },
        lag: LagPolicy {
            max_lag: Duration::from_millis(args.max_lag_ms),
            max_lag_bytes: args.max_lag_bytes,
            probe_interval: Duration::from_millis(args.probe_interval_ms),
        },
        idempotency: KeyRetention {
            window: Duration::from_secs(args.idempotency_window_secs.max(1)),
            interval: Duration::from_secs(args.idempotency_prune_interval_secs.max(1)),
            ..KeyRetention::default()
        },
    };
    // Bind both before anything else, so a port in use fails the start with its name.
    let write_listener = TcpListener::bind(args.write_listen)
        .await
        .with_context(|| {
            format!(
                "write API cannot listen on {}; set --write-listen",
                args.write_listen
            )
        })?;
    let query_listener = TcpListener::bind(args.query_listen)
        .await
        .with_context(|| {
            format!(
                "query API cannot listen on {}; set --query-listen",
                args.query_listen
            )
        })?;
    tracing::info!(
        write = %args.write_listen,
        query = %args.query_listen,
        write_db = %config.write_dsn,
        replicas = config.replicas.len(),
        "catalog app listening"
    );
    app::run(
        config,
        write_listener,
        query_listener,
        Registry::default(),
        Health::default(),
        crate::shutdown_signal(),
    )
    .await?;
    tracing::info!("catalog app stopped");
    Ok(())
}
