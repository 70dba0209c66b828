//! walcast's sink connector: keeps read databases current from the events on a Kafka topic,
//! with exactly-once effects per target.
//!
//! ```text
//!                       ┌─ consumer walcast.sink.catalog_read ─▶ batch tx ─▶ catalog_read DB
//!  catalog.events ──────┼─ consumer walcast.sink.replica-1    ─▶ batch tx ─▶ replica-1 DB
//!  (key = aggregate id) ├─ consumer walcast.sink.replica-2    ─▶ batch tx ─▶ replica-2 DB
//!                       └─ consumer walcast.sink.replica-3    ─▶ batch tx ─▶ replica-3 DB
//!                                    │ poison
//!                                    └──────────────▶ catalog.events.dlq
//!
//!  batch tx = BEGIN; rebuild lock (shared); lock + check walcast_offsets;
//!             INSERT processed_events … RETURNING (skip seen ids); read row guards,
//!             tombstones and held changes FOR UPDATE;
//!             one multi-row upsert / update / delete per table and shape; tombstones;
//!             held changes stored / released;
//!             [DLQ produce + ack]; walcast_offsets; walcast_applied_lsn; COMMIT
//! ```
//!
//! * **Independent targets**: one task, consumer and connection per target; a target that is
//!   down falls behind alone ([`target`] module docs).
//! * **Progress** is stored in each target's database in the batch's own transaction
//!   ([`store`] module docs: the failure cases).
//! * **Bookkeeping is bounded**: `processed_events` and tombstones older than their `[prune]`
//!   windows are deleted in small batches by a task per target ([`prune`] module docs).
//! * **Projection** is declarative ([`config`], [`Projections`]): event type → table, key,
//!   columns from payload fields, upsert / update / delete, computed columns, upcasts of older
//!   event versions. Writes are version-guarded and deletes leave tombstones; an update of a
//!   missing row, and every event of a key held behind a database refusal, waits in
//!   `walcast_held` until it can apply ([`plan`]; [`discard()`] releases a held key).
//!
//! ```no_run
//! # async fn demo() -> Result<(), walcast_sink::Error> {
//! use walcast_telemetry::{admin::Health, metrics::Registry};
//! let config = walcast_sink::SinkConfig::load("connectors/catalog-read-sink.toml".as_ref())?;
//! let sink = walcast_sink::Sink::new(config, Registry::default(), Health::default())?;
//! sink.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

mod applied;
mod batch;
pub mod config;
mod consumer;
mod discard;
mod dlq;
mod error;
mod health;
pub mod metrics;
mod partitions;
mod plan;
mod projection;
mod prune;
mod rebuild;
mod sql;
mod store;
mod target;
mod text;
mod value;

pub use config::SinkConfig;
pub use discard::{Discard, DiscardReport, discard};
pub use error::{Error, Result};
pub use projection::{Projections, RejectKind, Rejection};
pub use rebuild::{RebuildReport, rebuild};

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};
use walcast_telemetry::admin::Health;
use walcast_telemetry::metrics::Registry;

use crate::dlq::Dlq;
use crate::health::Readiness;
use crate::metrics::TargetMetrics;
use crate::target::TargetCtx;

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
        let dlq = Dlq::new(config)?;
        let partitions = consumer::Watermarks::new(config)?
            .partitions()
            .await
            .map(|p| p.len())
            .unwrap_or(1);
        if let Err(e) = Dlq::ensure_topic(config, partitions as i32).await {
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
            tasks.spawn(target::run(ctx, stop_rx.clone()));
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
