//! Metric names of the sink (Prometheus conventions), all labelled `target` (the pruning ones
//! `table` too).

use walcast_telemetry::metrics::{Counter, Gauge, Histogram, Registry, WholeGauge};

pub const EVENTS_APPLIED: &str = "walcast_sink_events_applied_total";
pub const EVENTS_DUPLICATE: &str = "walcast_sink_events_duplicate_total";
pub const EVENTS_STALE: &str = "walcast_sink_events_stale_total";
pub const EVENTS_MISSING_ROW: &str = "walcast_sink_events_missing_row_total";
pub const EVENTS_HELD: &str = "walcast_sink_events_held_total";
pub const EVENTS_RELEASED: &str = "walcast_sink_events_released_total";
pub const HELD_CHANGES: &str = "walcast_sink_held_changes";
pub const HELD_KEYS: &str = "walcast_sink_held_keys";
pub const HELD_OLDEST_SECONDS: &str = "walcast_sink_held_oldest_seconds";
pub const DLQ: &str = "walcast_sink_dlq_total";
pub const BATCHES: &str = "walcast_sink_batches_total";
pub const RETRIES: &str = "walcast_sink_retries_total";
pub const LAG: &str = "walcast_sink_lag_messages";
pub const APPLY_SECONDS: &str = "walcast_sink_apply_seconds";
pub const APPLIED_COMMIT_LSN: &str = "walcast_sink_applied_commit_lsn";
pub const TARGET_UP: &str = "walcast_sink_target_up";
pub const PARTITIONS_REFUSED: &str = "walcast_sink_partitions_refused";
pub const TARGET_GAP: &str = "walcast_sink_target_gap";
pub const PRUNED_ROWS: &str = "walcast_sink_bookkeeping_pruned_rows_total";
pub const PRUNE_BATCHES: &str = "walcast_sink_bookkeeping_prune_batches_total";
pub const BOOKKEEPING_ROWS: &str = "walcast_sink_bookkeeping_rows";
pub const BOOKKEEPING_OLDEST: &str = "walcast_sink_bookkeeping_oldest_seconds";

const APPLY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The metrics of one target.
#[derive(Debug, Clone)]
pub(crate) struct TargetMetrics {
    pub(crate) applied: Counter,
    pub(crate) duplicates: Counter,
    pub(crate) stale: Counter,
    pub(crate) missing_row: Counter,
    pub(crate) held: Counter,
    pub(crate) released: Counter,
    pub(crate) held_changes: Gauge,
    pub(crate) held_keys: Gauge,
    pub(crate) held_oldest: Gauge,
    pub(crate) dlq: Counter,
    pub(crate) batches: Counter,
    pub(crate) retries: Counter,
    pub(crate) lag: Gauge,
    pub(crate) apply_seconds: Histogram,
    pub(crate) applied_commit_lsn: WholeGauge,
    pub(crate) up: Gauge,
    pub(crate) partitions_refused: Gauge,
    pub(crate) gap: Gauge,
}

impl TargetMetrics {
    pub(crate) fn new(registry: &Registry, target: &str) -> TargetMetrics {
        let l = &[("target", target)];
        TargetMetrics {
            applied: registry.counter(EVENTS_APPLIED, "Events newly recorded as processed by the target (applied, or found older than the row).", l),
            duplicates: registry.counter(EVENTS_DUPLICATE, "Redelivered or replayed events the target had already processed.", l),
            stale: registry.counter(EVENTS_STALE, "Events older than the row or tombstone they target, ignored by the version guard.", l),
            missing_row: registry.counter(EVENTS_MISSING_ROW, "Updates of rows that do not exist (never created, or deleted), held until the row lands.", l),
            held: registry.counter(EVENTS_HELD, "Events held in walcast_held: updates of missing rows, and events of keys held behind a dead letter.", l),
            released: registry.counter(EVENTS_RELEASED, "Held events applied (their row landed, or their key's hold was released).", l),
            held_changes: registry.gauge(HELD_CHANGES, "Events waiting in walcast_held.", l),
            held_keys: registry.gauge(HELD_KEYS, "Keys held behind a dead letter until it is replayed or discarded (walcast dlq discard).", l),
            held_oldest: registry.gauge(HELD_OLDEST_SECONDS, "Age of the oldest event waiting in walcast_held, in seconds (0 when none).", l),
            dlq: registry.counter(DLQ, "Poison events sent to the dead-letter topic.", l),
            batches: registry.counter(BATCHES, "Batch transactions committed.", l),
            retries: registry.counter(RETRIES, "Batches or connections retried after an error.", l),
            lag: registry.gauge(LAG, "Messages between the target's stored offsets and the high watermarks.", l),
            apply_seconds: registry.histogram(APPLY_SECONDS, "Time to apply and commit one batch.", l, APPLY_BUCKETS),
            applied_commit_lsn: registry.whole_gauge(APPLIED_COMMIT_LSN, "Source commit LSN up to which every event is applied (walcast_applied_lsn), as a number.", l),
            up: registry.gauge(TARGET_UP, "1 while the target is connected and consuming, else 0.", l),
            partitions_refused: registry.gauge(PARTITIONS_REFUSED, "Partitions of the topic the target does not consume because the topic gained partitions (see /ready).", l),
            gap: registry.gauge(TARGET_GAP, "1 while the target consumes nothing because the topic no longer holds records it needs (retention; see /ready and docs/operations.md), else 0.", l),
        }
    }
}

/// The pruning metrics of one bookkeeping table of one target.
#[derive(Debug, Clone)]
pub(crate) struct PruneMetrics {
    pub(crate) pruned: Counter,
    pub(crate) batches: Counter,
    pub(crate) rows: Gauge,
    pub(crate) oldest: Gauge,
}

impl PruneMetrics {
    pub(crate) fn new(registry: &Registry, target: &str, table: &str) -> PruneMetrics {
        let l = &[("target", target), ("table", table)];
        PruneMetrics {
            pruned: registry.counter(
                PRUNED_ROWS,
                "Bookkeeping rows deleted because they are older than their window.",
                l,
            ),
            batches: registry.counter(
                PRUNE_BATCHES,
                "DELETE statements run by the pruning task.",
                l,
            ),
            rows: registry.gauge(
                BOOKKEEPING_ROWS,
                "Rows in the bookkeeping table (planner estimate, pg_class.reltuples).",
                l,
            ),
            oldest: registry.gauge(
                BOOKKEEPING_OLDEST,
                "Age of the oldest row in the bookkeeping table, 0 when empty.",
                l,
            ),
        }
    }
}
