//! walcast's outbox source connector: outbox INSERTs, read from the write database's WAL
//! through a logical replication slot, become Kafka records in the layout of Debezium's
//! outbox event router, and the slot is confirmed only up to what the broker acknowledged.
//!
//! ```text
//!  write app: BEGIN; UPDATE products …; INSERT INTO outbox_messages …; COMMIT
//!                                   │ WAL
//!   slot (pgoutput) ─▶ ChangeStream (walcast-replication, raw rows)
//!                           │ Begin / Change / Commit, in commit order
//!                           ▼
//!                      outbox::Router ── not mappable ──▶ <topic>.dlq
//!                           │ Record: key = aggregate id, value = payload text,
//!                           ▼         headers id, event_type, occurred_at, walcast.*
//!                      Producer (idempotent, acks=all, murmur2) ─▶ catalog.events
//!                           │ acknowledgements
//!                           ▼
//!                      Ledger ─▶ confirm(commit end LSN) ─▶ slot's confirmed_flush_lsn
//! ```
//!
//! * [`record`]: the record layout (headers and what they hold).
//! * [`outbox`]: routing, topic templates, dead letters, the start-up column check.
//! * [`ledger`]: **progress tracking** — exactly when an LSN may be confirmed, and what
//!   happens on `kill -9`, a broker outage or a shutdown mid-transaction.
//! * `pipeline`: the loop, bounded in-flight records, graceful shutdown.
//! * [`topic`]: topic creation and layout checks (also used by `walcast topic create`).
//! * [`metrics`]: metric names; `/health`, `/ready` and `/metrics` are served by [`serve`].
//!
//! Errors are one type, [`Error`]; retryable ones make the source start over from the
//! confirmed LSN with backoff ([`Source::run`]), the others stop it with a message naming
//! the cause and the fix.
//!
//! ```no_run
//! # async fn demo() -> Result<(), walcast_source::Error> {
//! use walcast_source::{Options, SourceConfig};
//! let config = SourceConfig::load("connectors/catalog-outbox-source.toml".as_ref())?;
//! walcast_source::serve(config, Options::default(), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```

pub mod config;
mod error;
pub mod ledger;
pub mod metrics;
mod monitor;
pub mod outbox;
mod pipeline;
mod producer;
pub mod record;

pub use config::SourceConfig;
pub use error::{Error, Result};
pub use monitor::HEARTBEAT_PREFIX;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};
use walcast_kafka::{TopicAdmin, TopicSpec};
use walcast_postgres::connect_sql;
use walcast_replication::{ChangeStream, ChangeStreamConfig};
use walcast_telemetry::admin::{self, Health};
use walcast_telemetry::metrics::Registry;

use crate::metrics::SourceMetrics;
use crate::monitor::MonitorConfig;
use crate::pipeline::{Pipeline, Sink};
use crate::producer::Producer;

/// How to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Decode and route, but produce nothing and confirm nothing (benchmarks: our cost
    /// without the broker's). The slot does not move, so a normal run afterwards still
    /// delivers everything.
    pub discard: bool,
}

/// A configured source, ready to run.
#[derive(Debug)]
pub struct Source {
    config: Arc<SourceConfig>,
    options: Options,
    health: Health,
    metrics: SourceMetrics,
}

impl Source {
    /// Registers the source's metrics in `registry`; readiness goes to `health`.
    pub fn new(
        config: SourceConfig,
        options: Options,
        registry: &Registry,
        health: Health,
    ) -> Source {
        let metrics = SourceMetrics::new(registry, &config.postgres.slot);
        Source {
            config: Arc::new(config),
            options,
            health,
            metrics,
        }
    }

    /// Runs until `shutdown` completes (then finishes the current transaction, waits for
    /// acknowledgements, confirms and returns `Ok`) or an error that needs an operator.
    /// Retryable errors (Postgres or the broker gone, the slot still held by a predecessor)
    /// start the source over from the confirmed LSN with backoff.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let (stop_tx, stop) = watch::channel(false);
        let supervised = self.supervise(stop);
        tokio::pin!(supervised, shutdown);
        tokio::select! {
            result = &mut supervised => return result,
            () = &mut shutdown => {
                let _ = stop_tx.send(true);
            }
        }
        supervised.await
    }

    async fn supervise(&self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let backoff = self.config.backoff();
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let result = self.run_once(&mut stop).await;
            let stopping = *stop.borrow();
            match result {
                Ok(()) => return Ok(()),
                Err(e) if e.is_retryable() && !stopping => {
                    self.metrics.restarts.inc();
                    if started.elapsed() > Duration::from_secs(60) {
                        attempt = 0;
                    }
                    let delay = backoff.delay(attempt).unwrap_or(backoff.max);
                    attempt += 1;
                    self.health.set(false, &format!("restarting after: {e}"));
                    warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "source stopped on a retryable error; starting over from the confirmed LSN");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stopped(&mut stop) => return Ok(()),
                    }
                }
                Err(e) if e.is_retryable() => return Ok(()),
                Err(e) => {
                    self.health.set(false, &e.to_string());
                    return Err(e);
                }
            }
        }
    }

    async fn run_once(&self, stop: &mut watch::Receiver<bool>) -> Result<()> {
        let config = &self.config;
        let connect = config
            .postgres
            .dsn
            .clone()
            .with_application_name("walcast-source");
        self.health.set(false, "checking the outbox table");
        let client = connect_sql(&connect)
            .await
            .map_err(walcast_replication::Error::from)?;
        outbox::check_columns(&client, config).await?;
        drop(client);

        let acks = mpsc::unbounded_channel();
        let mut known_topics = HashMap::new();
        let sink = if self.options.discard {
            info!("discard mode: records are routed and dropped; nothing is produced or confirmed");
            Sink::Discard
        } else {
            self.health.set(false, "checking Kafka topics");
            let admin = TopicAdmin::new(config.kafka.client())?;
            let spec = TopicSpec {
                partitions: config.kafka.partitions,
                replication_factor: config.kafka.replication_factor,
            };
            let dlq = config.dlq_topic();
            let fixed = outbox::TopicTemplate::parse(&config.kafka.topic)
                .is_ok_and(|t| t.is_fixed())
                .then(|| config.kafka.topic.clone());
            for (topic, strict) in fixed.iter().map(|t| (t, true)).chain([(&dlq, false)]) {
                if config.kafka.create_topics {
                    admin.ensure_topic(topic, spec, strict).await?;
                } else {
                    admin.check(topic, spec, strict).await?;
                }
                let limit = admin.max_message_bytes(topic).await?;
                known_topics.insert(Arc::from(topic.as_str()), limit);
            }
            let producer = Producer::new(&config.kafka, self.metrics.clone(), acks.0.clone())?;
            Sink::Kafka { producer, admin }
        };

        self.health.set(false, "starting replication");
        let mut cs = ChangeStreamConfig::new(
            connect.clone(),
            &config.postgres.slot,
            &config.postgres.publication,
        );
        cs.create = config.postgres.create;
        cs.tables = vec![config.table()];
        cs.raw_rows = true;
        cs.status_interval = Duration::from_millis(config.postgres.status_interval_ms);
        cs.backoff = config.backoff();
        let changes = ChangeStream::start(cs).await?;
        info!(slot = %config.postgres.slot, table = %config.table(), topic = %config.kafka.topic, "source streaming");
        self.health.set(true, "streaming");

        let (monitor_stop, monitor_rx) = watch::channel(false);
        let monitor = tokio::spawn(monitor::run(
            MonitorConfig {
                connect,
                slot: config.postgres.slot.clone(),
                lag_interval: Duration::from_secs(config.postgres.lag_interval_secs),
                heartbeat_interval: (config.heartbeat.interval_secs > 0)
                    .then(|| Duration::from_secs(config.heartbeat.interval_secs)),
                stall_after: Duration::from_secs(config.postgres.stall_after_secs),
            },
            self.metrics.clone(),
            self.health.clone(),
            monitor_rx,
        ));
        let pipeline = Pipeline::new(
            config.clone(),
            changes,
            sink,
            acks,
            known_topics,
            self.metrics.clone(),
            self.health.clone(),
        );
        let result = pipeline.run(stop).await;
        let _ = monitor_stop.send(true);
        let _ = monitor.await;
        result
    }
}

/// Serves `/health`, `/ready` and `/metrics` on `[admin] listen` and runs the source until
/// `shutdown` completes. What `walcast source` does.
pub async fn serve(
    config: SourceConfig,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let registry = Registry::default();
    let health = Health::default();
    let listener = admin::bind(config.admin.listen)
        .await
        .map_err(Error::Admin)?;
    if let Ok(addr) = listener.local_addr() {
        info!(listen = %addr, "admin endpoint: /health /ready /metrics");
    }
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let admin_task = tokio::spawn(admin::serve(
        listener,
        registry.clone(),
        health.clone(),
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
    ));
    let result = Source::new(config, options, &registry, health)
        .run(shutdown)
        .await;
    let _ = stop_tx.send(true);
    let _ = admin_task.await;
    result
}

/// Completes on SIGINT or SIGTERM: the shutdown future `walcast source` passes to [`serve`].
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Completes once `stop` is true (or its sender is gone). The `watch::Ref` never outlives
/// this function, which keeps the futures that wait on it `Send`.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
