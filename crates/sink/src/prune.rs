//! Keeps each target's bookkeeping bounded: `processed_events` and `walcast_tombstones` rows
//! older than their window (`[prune]`, see [`crate::config::PruneConfig`]) are deleted by a task
//! of their own, on its own connection, never inside a batch transaction.
//!
//! ```text
//!  every interval_secs, per table:
//!    DELETE … WHERE ctid = ANY(ARRAY(SELECT ctid … WHERE <time> < now() - window LIMIT n))
//!    repeated while a statement deletes n rows; then the row estimate and oldest age gauges
//! ```
//!
//! Each statement is its own short transaction touching at most `batch_rows` rows, so a batch
//! of the sink waits at most for one of them, and a backlog (pruning enabled on a large table)
//! drains in small steps. The time predicate is repeated outside the sub-select, so a row that
//! changed in between (a tombstone re-written by a newer delete) is re-checked and kept.
//!
//! Why pruning cannot apply an event twice or resurrect a row: within the windows the ids and
//! tombstones are there; after them, every write is still version-guarded against the row, and
//! the windows are longer than any duplicate or replay can arrive (`docs/delivery-guarantees.md`).

use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info, warn};
use walcast_telemetry::metrics::Registry;

use crate::config::SinkConfig;
use crate::error::{Error, Result};
use crate::metrics::PruneMetrics;
use crate::store::Store;

/// One bookkeeping table and the column its age is read from.
struct Table {
    name: &'static str,
    time_column: &'static str,
    window: Duration,
    metrics: PruneMetrics,
}

/// What the pruning task of one target needs.
#[derive(Debug, Clone)]
pub(crate) struct PruneCtx {
    pub(crate) target: String,
    pub(crate) dsn: walcast_config::Dsn,
    pub(crate) group: String,
    pub(crate) topic: String,
    pub(crate) interval: Duration,
    pub(crate) batch_rows: i64,
    processed_window: Duration,
    tombstone_window: Duration,
    registry: Registry,
}

impl PruneCtx {
    pub(crate) fn new(config: &SinkConfig, target: &str, registry: &Registry) -> Option<Self> {
        let t = config.targets.get(target)?;
        Some(PruneCtx {
            target: target.to_owned(),
            dsn: t.dsn.clone(),
            group: config.group(target),
            topic: config.kafka.topic.clone(),
            interval: Duration::from_secs(config.prune.interval_secs.max(1)),
            batch_rows: i64::from(config.prune.batch_rows.max(1)),
            processed_window: Duration::from_secs(config.prune.processed_events_window_secs),
            tombstone_window: config.tombstone_window(),
            registry: registry.clone(),
        })
    }

    fn tables(&self) -> [Table; 2] {
        let metrics = |table| PruneMetrics::new(&self.registry, &self.target, table);
        [
            Table {
                name: "processed_events",
                time_column: "processed_at",
                window: self.processed_window,
                metrics: metrics("processed_events"),
            },
            Table {
                name: "walcast_tombstones",
                time_column: "deleted_at",
                window: self.tombstone_window,
                metrics: metrics("walcast_tombstones"),
            },
        ]
    }
}

/// `DELETE` of at most `$2` rows older than `$1` seconds.
fn delete_sql(t: &Table) -> String {
    let old = format!(
        "{} < now() - make_interval(secs => $1::float8)",
        t.time_column
    );
    format!(
        "DELETE FROM {tbl} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {tbl} WHERE {old} LIMIT $2)) \
         AND {old}",
        tbl = t.name
    )
}

/// The planner's row estimate and the age of the oldest row (seconds, 0 when empty).
fn stats_sql(t: &Table) -> String {
    format!(
        "SELECT GREATEST(c.reltuples, 0)::float8, \
         COALESCE(extract(epoch FROM now() - (SELECT min({col}) FROM {tbl})), 0)::float8 \
         FROM pg_class c WHERE c.oid = '{tbl}'::regclass",
        col = t.time_column,
        tbl = t.name
    )
}

/// Prunes one target every `interval` until `stop` turns true. Errors (target down, tables
/// not there yet) are logged and retried at the next interval; the batches never wait for it.
pub(crate) async fn run(ctx: PruneCtx, mut stop: watch::Receiver<bool>) -> Result<()> {
    let tables = ctx.tables();
    let mut store: Option<Store> = None;
    loop {
        if wait(ctx.interval, &mut stop).await {
            return Ok(());
        }
        if store.is_none() {
            match Store::connect(&ctx.target, ctx.dsn.expose(), &ctx.group, &ctx.topic).await {
                Ok(s) => store = Some(s),
                Err(e) => {
                    debug!(target = %ctx.target, error = %e, "pruning: target not reachable");
                    continue;
                }
            }
        }
        let Some(s) = store.as_ref() else { continue };
        for t in &tables {
            if let Err(e) = prune(&ctx, s, t, &mut stop).await {
                warn!(target = %ctx.target, table = t.name, error = %e, "pruning failed; trying again next interval");
                store = None;
                break;
            }
        }
    }
}

/// Deletes the rows of `t` older than its window, `batch_rows` at a time.
async fn prune(
    ctx: &PruneCtx,
    store: &Store,
    t: &Table,
    stop: &mut watch::Receiver<bool>,
) -> Result<()> {
    let client = store.client();
    let pg = |what: &str| Error::pg(&ctx.target, format!("{what} {}", t.name));
    let delete = client
        .prepare(&delete_sql(t))
        .await
        .map_err(pg("preparing the prune of"))?;
    let window = t.window.as_secs_f64();
    let mut total = 0u64;
    loop {
        let n = client
            .execute(&delete, &[&window, &ctx.batch_rows])
            .await
            .map_err(pg("pruning"))?;
        t.metrics.batches.inc();
        t.metrics.pruned.inc_by(n);
        total += n;
        if n < ctx.batch_rows as u64 || *stop.borrow() {
            break;
        }
        // Let the sink's batches in between two deletes.
        tokio::task::yield_now().await;
    }
    let row = client
        .query_one(&stats_sql(t), &[])
        .await
        .map_err(pg("reading the size of"))?;
    t.metrics.rows.set(row.get(0));
    t.metrics.oldest.set(row.get(1));
    if total > 0 {
        info!(target = %ctx.target, table = t.name, rows = total, window_secs = t.window.as_secs(), "pruned bookkeeping older than its window");
    }
    Ok(())
}

/// Sleeps `d` unless shutdown comes first; true on shutdown.
async fn wait(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    stopped || *stop.borrow()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn the_delete_rechecks_the_age_outside_the_sub_select() {
        let t = Table {
            name: "walcast_tombstones",
            time_column: "deleted_at",
            window: Duration::from_secs(60),
            metrics: PruneMetrics::new(&Registry::default(), "t", "walcast_tombstones"),
        };
        let sql = delete_sql(&t);
        assert_eq!(
            sql.matches("deleted_at < now() - make_interval(secs => $1::float8)")
                .count(),
            2,
            "{sql}"
        );
        assert!(sql.contains("LIMIT $2"), "{sql}");
    }
}
