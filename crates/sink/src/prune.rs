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
//!
//! # Held changes that outlive the tombstone window
//!
//! An update held for a row that never arrived (`walcast_held`, not behind a dead letter) and
//! older than the tombstone window can no longer be placed safely: the events that would
//! order it against a delete may be gone. It is dead-lettered as `no_base_row` (the value is
//! the change as projected, columns by name; `id` and `event_type` are kept) and only then
//! removed, in one transaction that holds the rows (`FOR UPDATE SKIP LOCKED`, so a batch that
//! is releasing them wins). A crash between the broker's acknowledgement and the commit
//! dead-letters it again, never loses it. Changes held behind a dead letter stay until it is
//! replayed or discarded: that is an operator's decision (`walcast dlq discard`).

use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info, warn};
use walcast_telemetry::metrics::Registry;

use rdkafka::Timestamp;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};

use crate::config::SinkConfig;
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::error::{Error, Result};
use crate::metrics::PruneMetrics;
use crate::projection::{RejectKind, Rejection};
use crate::sleep_or_stop;
use crate::store::Store;

/// How long the broker may take to acknowledge the dead letters of expired held changes while
/// their rows are locked.
const HELD_DLQ_TIMEOUT: Duration = Duration::from_secs(30);

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
    pub(crate) dsn: walcast_postgres::Dsn,
    pub(crate) group: String,
    pub(crate) topic: String,
    pub(crate) interval: Duration,
    pub(crate) batch_rows: i64,
    processed_window: Duration,
    tombstone_window: Duration,
    registry: Registry,
    dlq: DeadLetters,
}

impl PruneCtx {
    pub(crate) fn new(
        config: &SinkConfig,
        target: &str,
        registry: &Registry,
        dlq: DeadLetters,
    ) -> Option<Self> {
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
            dlq,
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
    let held_metrics = PruneMetrics::new(&ctx.registry, &ctx.target, "walcast_held");
    let mut store: Option<Store> = None;
    loop {
        if sleep_or_stop(ctx.interval, &mut stop).await {
            return Ok(());
        }
        if store.is_none() {
            match Store::connect(&ctx.target, &ctx.dsn, &ctx.group, &ctx.topic).await {
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
        if let Some(s) = store.as_ref()
            && let Err(e) = expire_held(&ctx, s, &held_metrics).await
        {
            warn!(target = %ctx.target, error = %e, "dead-lettering expired held changes failed; trying again next interval");
            store = None;
        }
    }
}

/// Held changes waiting for a row that never came, older than the tombstone window, at most
/// `batch_rows` per transaction (see the module docs).
const EXPIRED_HELD: &str = "SELECT h.table_name, h.key, h.event_id::text, h.event_type, h.version, \
     h.occurred_us, h.change::text, extract(epoch FROM now() - h.held_at)::float8 \
     FROM walcast_held h \
     WHERE NOT h.dead_letter AND h.held_at < now() - make_interval(secs => $1::float8) \
       AND NOT EXISTS (SELECT 1 FROM walcast_held d WHERE d.dead_letter \
                       AND d.table_name = h.table_name AND d.key = h.key) \
     ORDER BY h.held_at LIMIT $2 FOR UPDATE OF h SKIP LOCKED";

/// Dead-letters expired held changes as `no_base_row`, then removes them.
async fn expire_held(ctx: &PruneCtx, store: &Store, metrics: &PruneMetrics) -> Result<()> {
    let client = store.client();
    let pg = |what: &'static str| Error::pg(&ctx.target, what);
    let window = ctx.tombstone_window.as_secs_f64();
    loop {
        client
            .batch_execute("BEGIN")
            .await
            .map_err(pg("starting to expire held changes"))?;
        let result = expire_batch(ctx, store, window).await;
        let n = match result {
            Ok(n) => {
                client
                    .batch_execute("COMMIT")
                    .await
                    .map_err(pg("committing expired held changes"))?;
                n
            }
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(e);
            }
        };
        metrics.pruned.inc_by(n);
        metrics.batches.inc();
        if n > 0 {
            warn!(target = %ctx.target, changes = n, window_secs = ctx.tombstone_window.as_secs(), "held changes waited longer than the tombstone window for their row; dead-lettered as no_base_row");
        }
        if n < ctx.batch_rows as u64 {
            return Ok(());
        }
    }
}

/// One transaction's worth of [`expire_held`]: returns how many were dead-lettered.
async fn expire_batch(ctx: &PruneCtx, store: &Store, window: f64) -> Result<u64> {
    let client = store.client();
    let rows = client
        .query(EXPIRED_HELD, &[&window, &ctx.batch_rows])
        .await
        .map_err(Error::pg(&ctx.target, "reading expired held changes"))?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut records = Vec::with_capacity(rows.len());
    let mut keys: (Vec<String>, Vec<String>, Vec<String>) = Default::default();
    for r in &rows {
        let (table, key, id, event_type): (String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let version: i64 = r.get(4);
        let occurred: Option<i64> = r.get(5);
        let change: Option<String> = r.get(6);
        let age: f64 = r.get(7);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "id",
                value: Some(id.as_str()),
            })
            .insert(Header {
                key: "event_type",
                value: Some(event_type.as_str()),
            });
        let record = OwnedMessage::new(
            change.map(String::into_bytes),
            Some(key.clone().into_bytes()),
            ctx.topic.clone(),
            Timestamp::NotAvailable,
            -1,
            -1,
            Some(headers),
        );
        let why = Rejection {
            kind: RejectKind::NoBaseRow,
            detail: format!(
                "held {:.0} s for a row of {table} with key {key} (version {version}, occurred_us {}) that never reached this target, longer than the tombstone window ({} s); the value is the change as projected (columns by name); find the base event in the outbox by aggregate, re-produce it and then this one, or rebuild the target",
                age,
                occurred.map_or("null".to_owned(), |o| o.to_string()),
                ctx.tombstone_window.as_secs()
            ),
        };
        records.push((record, why));
        keys.0.push(table);
        keys.1.push(key);
        keys.2.push(id);
    }
    let letters: Vec<DeadLetter<'_>> = records
        .iter()
        .map(|(record, why)| DeadLetter { record, why })
        .collect();
    match tokio::time::timeout(HELD_DLQ_TIMEOUT, ctx.dlq.send_all(&letters)).await {
        Ok(sent) => sent?,
        Err(_) => {
            return Err(Error::kafka(
                "waiting for the broker to acknowledge the dead letters of expired held changes",
            )(rdkafka::error::KafkaError::MessageProduction(
                rdkafka::types::RDKafkaErrorCode::MessageTimedOut,
            )));
        }
    }
    client
        .execute(
            "DELETE FROM walcast_held WHERE (table_name, key, event_id::text) IN \
             (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))",
            &[&keys.0, &keys.1, &keys.2],
        )
        .await
        .map_err(Error::pg(&ctx.target, "removing expired held changes"))?;
    Ok(rows.len() as u64)
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
