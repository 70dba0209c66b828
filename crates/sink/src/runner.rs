//! Running the sink: a task per target (its pipeline, its pruning) under one supervisor, and
//! `/health` `/ready` `/metrics` on the admin listener ([`serve`]).

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};
use walcast_telemetry::admin::{self, Health};
use walcast_telemetry::metrics::Registry;

use crate::config::SinkConfig;
use crate::dead_letter::DeadLetters;
use crate::error::{Error, Result};
use crate::metrics::TargetMetrics;
use crate::monitor::Readiness;
use crate::pipeline::{self, TargetCtx};
use crate::projection::Projections;
use crate::{kafka, prune};

/// A configured sink, ready to run.
#[derive(Debug)]
pub struct Sink {
    config: Arc<SinkConfig>,
    projections: Arc<Projections>,
    schema: Arc<Vec<(String, String)>>,
    registry: Registry,
    health: Health,
}

/// The `[schema] files`, read: (path, SQL).
pub(crate) fn schema_files(config: &SinkConfig) -> Result<Vec<(String, String)>> {
    config
        .schema
        .files
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .map(|sql| (p.display().to_string(), sql))
                .map_err(|source| Error::SchemaFile {
                    path: p.clone(),
                    source,
                })
        })
        .collect()
}

impl Sink {
    /// Validates the config, compiles the projection and reads the schema files.
    pub fn new(config: SinkConfig, registry: Registry, health: Health) -> Result<Sink> {
        config.validate()?;
        let projections = Projections::compile(&config)?;
        let schema = schema_files(&config)?;
        Ok(Sink {
            config: Arc::new(config),
            projections: Arc::new(projections),
            schema: Arc::new(schema),
            registry,
            health,
        })
    }

    /// Runs every target until `shutdown` completes. A target that is down or misconfigured
    /// (wrong credentials, missing database) is retried in the background, named on `/ready`
    /// and by `walcast_sink_target_up`, while the others run.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let config = &self.config;
        let dlq = DeadLetters::new(config)?;
        let partitions = kafka::Watermarks::new(config)?
            .partitions()
            .await
            .map(|p| p.len())
            .unwrap_or(1);
        if let Err(e) = DeadLetters::ensure_topic(config, partitions as i32).await {
            warn!(error = %e, topic = %config.dlq_topic(), "could not ensure the DLQ topic");
        }
        let readiness = Readiness::new(self.health.clone(), config.targets.keys().cloned());
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for (name, t) in &config.targets {
            let ctx = TargetCtx {
                name: name.clone(),
                group: config.group(name),
                dsn: t.dsn.clone(),
                config: self.config.clone(),
                projections: self.projections.clone(),
                schema: self.schema.clone(),
                dlq: dlq.for_target(name),
                metrics: TargetMetrics::new(&self.registry, name),
                readiness: readiness.clone(),
            };
            tasks.spawn(pipeline::run(ctx, stop_rx.clone()));
            // Bookkeeping pruning: its own task and connection, off the batch path.
            if let Some(p) =
                prune::PruneCtx::new(config, name, &self.registry, dlq.for_target(name))
            {
                tasks.spawn(prune::run(p, stop_rx.clone()));
            }
        }
        info!(targets = config.targets.len(), topic = %config.kafka.topic, "sink running");
        tokio::pin!(shutdown);
        let mut result = Ok(());
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                joined = tasks.join_next() => match joined {
                    None => break,
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(e))) => {
                        result = Err(e);
                        break;
                    }
                    Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Some(Err(_)) => {}
                },
            }
        }
        let _ = stop_tx.send(true);
        while let Some(joined) = tasks.join_next().await {
            if let Ok(Err(e)) = joined
                && result.is_ok()
            {
                result = Err(e);
            }
        }
        self.health.set(false, "stopped");
        info!("sink stopped");
        result
    }
}

/// Serves `/health`, `/ready` and `/metrics` on `listener` and runs every target until
/// `shutdown` completes. What `walcast sink` does, with the listener bound to `[admin] listen`.
pub async fn serve(
    config: SinkConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let registry = Registry::default();
    let health = Health::default();
    let sink = Sink::new(config, registry.clone(), health.clone())?;
    if let Ok(addr) = listener.local_addr() {
        info!(listen = %addr, "admin endpoint: /health /ready /metrics");
    }
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let admin_task = tokio::spawn(admin::serve(listener, registry, health, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let result = sink.run(shutdown).await;
    let _ = stop_tx.send(true);
    let _ = admin_task.await;
    result
}
