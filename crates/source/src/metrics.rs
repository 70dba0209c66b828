//! Metric names of the source (Prometheus conventions) and the handles the pipeline updates.

use std::collections::BTreeMap;

use walcast_telemetry::metrics::{
    Counter, Gauge, Histogram, LATENCY_BUCKETS, Registry, WholeGauge,
};

pub const EVENTS_PUBLISHED: &str = "walcast_source_events_published_total";
pub const BYTES_PUBLISHED: &str = "walcast_source_bytes_published_total";
pub const EVENTS_ROUTED: &str = "walcast_source_events_routed_total";
pub const DEAD_LETTERS: &str = "walcast_source_dead_letters_total";
pub const DELIVERY_ERRORS: &str = "walcast_source_delivery_errors_total";
pub const KAFKA_ERRORS: &str = "walcast_source_kafka_errors_total";
pub const SKIPPED: &str = "walcast_source_changes_skipped_total";
pub const RESTARTS: &str = "walcast_source_restarts_total";
pub const HEARTBEATS: &str = "walcast_source_heartbeats_total";
pub const IN_FLIGHT: &str = "walcast_source_in_flight_records";
pub const SLOT_LAG: &str = "walcast_source_slot_lag_bytes";
pub const CONFIRMED_LSN: &str = "walcast_source_confirmed_lsn";
pub const PROGRESS_STALLED: &str = "walcast_source_progress_stalled_seconds";
pub const COMMIT_TO_ACK: &str = "walcast_source_commit_to_ack_seconds";
pub const SNAPSHOT_ROWS: &str = "walcast_source_snapshot_rows_total";
pub const SNAPSHOT_CHUNKS: &str = "walcast_source_snapshot_chunks_total";
pub const SNAPSHOT_ETA: &str = "walcast_source_snapshot_eta_seconds";
pub const SNAPSHOT_RUNNING: &str = "walcast_source_snapshot_running";

/// Every metric of the source.
#[derive(Debug, Clone)]
pub struct SourceMetrics {
    pub events_published: Counter,
    pub bytes_published: Counter,
    pub events_routed: Counter,
    pub dead_letters: Counter,
    pub delivery_errors: Counter,
    pub kafka_errors: Counter,
    pub skipped: Counter,
    pub restarts: Counter,
    pub heartbeats: Counter,
    pub in_flight: Gauge,
    pub slot_lag: Gauge,
    pub confirmed_lsn: WholeGauge,
    pub progress_stalled: Gauge,
    pub commit_to_ack: Histogram,
}

impl SourceMetrics {
    pub fn new(registry: &Registry, slot: &str) -> SourceMetrics {
        let l = &[("slot", slot)];
        SourceMetrics {
            events_published: registry.counter(EVENTS_PUBLISHED, "Outbox events acknowledged by the broker.", l),
            bytes_published: registry.counter(BYTES_PUBLISHED, "Key, value and header bytes of the events acknowledged by the broker.", l),
            events_routed: registry.counter(EVENTS_ROUTED, "Outbox events routed (produced, or discarded with --discard).", l),
            dead_letters: registry.counter(DEAD_LETTERS, "Rows and records sent to the dead-letter topic and acknowledged.", l),
            delivery_errors: registry.counter(DELIVERY_ERRORS, "Records the broker refused (too large: dead-lettered; otherwise the source restarts).", l),
            kafka_errors: registry.counter(KAFKA_ERRORS, "Errors reported by the Kafka client (broker unreachable, ...); deliveries are retried.", l),
            skipped: registry.counter(SKIPPED, "Changes that are not events: other tables, UPDATE/DELETE/TRUNCATE of the outbox.", l),
            restarts: registry.counter(RESTARTS, "Times the source started over from the confirmed LSN after a retryable error.", l),
            heartbeats: registry.counter(HEARTBEATS, "Heartbeat messages written with pg_logical_emit_message.", l),
            in_flight: registry.gauge(IN_FLIGHT, "Records produced and not yet acknowledged.", l),
            slot_lag: registry.gauge(SLOT_LAG, "pg_current_wal_lsn() minus the slot's confirmed_flush_lsn, in bytes.", l),
            confirmed_lsn: registry.whole_gauge(CONFIRMED_LSN, "Last LSN confirmed to Postgres, as a number.", l),
            progress_stalled: registry.gauge(PROGRESS_STALLED, "Seconds the slot's confirmed_flush_lsn has not moved while WAL was written after it (0 while it moves or is caught up).", l),
            commit_to_ack: registry.histogram(COMMIT_TO_ACK, "Time from a transaction's commit to the broker's acknowledgement of its events.", l, LATENCY_BUCKETS),
        }
    }
}

/// The metrics of one snapshot table (label `table` = `schema.table`).
#[derive(Debug, Clone)]
pub struct SnapshotTableMetrics {
    pub rows: Counter,
    pub chunks: Counter,
    pub eta: Gauge,
    pub running: Gauge,
}

/// The metrics of every `[[snapshot.tables]]` entry, by `schema.table`.
pub fn snapshot_metrics<'t>(
    registry: &Registry,
    slot: &str,
    tables: impl IntoIterator<Item = &'t str>,
) -> BTreeMap<String, SnapshotTableMetrics> {
    tables
        .into_iter()
        .map(|table| {
            let l = &[("slot", slot), ("table", table)];
            let m = SnapshotTableMetrics {
                rows: registry.counter(SNAPSHOT_ROWS, "Snapshot rows acknowledged by the broker.", l),
                chunks: registry.counter(SNAPSHOT_CHUNKS, "Snapshot chunks whose rows and progress the broker acknowledged.", l),
                eta: registry.gauge(SNAPSHOT_ETA, "Estimated seconds until the running snapshot of the table is done (from the planner's row estimate and the current rate).", l),
                running: registry.gauge(SNAPSHOT_RUNNING, "1 while a snapshot reads the table.", l),
            };
            (table.to_owned(), m)
        })
        .collect()
}
