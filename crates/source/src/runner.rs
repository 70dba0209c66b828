//! Running the source: a supervisor that starts the pipeline over from the confirmed LSN
//! after a retryable error (with backoff) and stops on one that needs an operator, the side
//! monitor, and `/health` `/ready` `/metrics` on the admin listener ([`serve`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};
use walcast_kafka::{TopicAdmin, TopicSpec};
use walcast_postgres::connect_sql;
use walcast_replication::{ChangeStream, ChangeStreamConfig};
use walcast_telemetry::admin::{self, Health};
use walcast_telemetry::metrics::Registry;

use crate::config::SourceConfig;
use crate::error::Result;
use crate::kafka::Producer;
use crate::metrics::{SnapshotTableMetrics, SourceMetrics};
use crate::monitor::MonitorConfig;
use crate::pipeline::{Output, Pipeline};
use crate::signal::{self, SignalReader};
use crate::snapshot::{self, Controller};
use crate::{monitor, outbox, stopped};

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
    snapshot_metrics: std::collections::BTreeMap<String, SnapshotTableMetrics>,
    /// Where snapshot commands go instead of the controller (tests).
    #[cfg(test)]
    commands: Option<mpsc::UnboundedSender<snapshot::Command>>,
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
        let snapshot_metrics = crate::metrics::snapshot_metrics(
            registry,
            &config.postgres.slot,
            config.snapshot.tables.iter().map(|t| t.table.as_str()),
        );
        Source {
            snapshot_metrics,
            config: Arc::new(config),
            options,
            health,
            metrics,
            #[cfg(test)]
            commands: None,
        }
    }

    /// Sends snapshot commands to `tx` instead of the controller.
    #[cfg(test)]
    pub(crate) fn with_commands(mut self, tx: mpsc::UnboundedSender<snapshot::Command>) -> Source {
        self.commands = Some(tx);
        self
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
        let snapshot_tables = snapshot::check_tables(&client, config).await?;
        let signal_table = signal::prepare(&client, config).await?;
        drop(client);

        let acks = mpsc::unbounded_channel();
        let mut known_topics = HashMap::new();
        let mut controller = None;
        let output = if self.options.discard {
            info!("discard mode: records are routed and dropped; nothing is produced or confirmed");
            Output::Discard
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
            if !snapshot_tables.is_empty() {
                let limit = |topic: &str| {
                    known_topics
                        .get(topic)
                        .map_or(config.kafka.max_message_bytes, |&l: &usize| {
                            l.min(config.kafka.max_message_bytes)
                        })
                };
                let setup = snapshot::Setup {
                    connect: connect.clone(),
                    tables: snapshot_tables,
                    admin: &admin,
                    record_limit: limit(&config.kafka.topic),
                    dlq_limit: limit(&dlq),
                    metrics: self.snapshot_metrics.clone(),
                };
                let mut c = Controller::new(config.clone(), setup).await?;
                // Before the change stream creates a missing slot.
                c.request_initial().await?;
                controller = Some(c);
            }
            let producer = Producer::new(&config.kafka, self.metrics.clone(), acks.0.clone())?;
            Output::Kafka { producer, admin }
        };

        self.health.set(false, "starting replication");
        let mut cs = ChangeStreamConfig::new(
            connect.clone(),
            &config.postgres.slot,
            &config.postgres.publication,
        );
        cs.create = config.postgres.create;
        cs.tables = vec![config.table()];
        cs.tables.extend(signal_table.clone());
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
        // Snapshots run only here, in the process that streams the slot, and stop with it.
        let (commands, commands_rx) = mpsc::unbounded_channel();
        #[cfg(test)]
        let commands = self.commands.clone().unwrap_or(commands);
        let snapshots = match controller {
            Some(c) => tokio::spawn(c.run(commands_rx)),
            None => tokio::spawn(snapshot::ignore(commands_rx)),
        };
        let signals = signal_table.map(|t| SignalReader::new(t, config));
        let pipeline = Pipeline::new(
            config.clone(),
            changes,
            output,
            acks,
            known_topics,
            self.metrics.clone(),
            self.health.clone(),
            (signals, commands),
        );
        let result = pipeline.run(stop).await;
        snapshots.abort();
        let _ = monitor_stop.send(true);
        let _ = monitor.await;
        result
    }
}

/// Serves `/health`, `/ready` and `/metrics` on `listener` and runs the source until
/// `shutdown` completes. What `walcast source` does, with the listener bound to
/// `[admin] listen`.
pub async fn serve(
    config: SourceConfig,
    options: Options,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let registry = Registry::default();
    let health = Health::default();
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
