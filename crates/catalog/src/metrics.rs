//! Metric names of the catalog app (Prometheus conventions).

use std::collections::HashMap;

use walcast_telemetry::metrics::{Counter, Gauge, Histogram, LATENCY_BUCKETS, Registry};

/// Write commands by `command` and `outcome` (`ok`, `replayed`, `rejected`, `failed`).
pub const COMMANDS: &str = "walcast_catalog_commands_total";
/// Time to run a write command (transaction included), by `command`.
pub const COMMAND_SECONDS: &str = "walcast_catalog_command_seconds";
/// Queries answered, by `replica`.
pub const QUERIES: &str = "walcast_catalog_queries_total";
/// Queries that failed on a replica and moved on to the next one, by the failed `replica`.
pub const QUERY_FAILOVERS: &str = "walcast_catalog_query_failovers_total";
/// 1 while a replica is healthy and caught up enough to serve, by `replica`.
pub const REPLICA_ELIGIBLE: &str = "walcast_catalog_replica_eligible";
/// How long a replica has been behind the most advanced healthy one, by `replica`.
pub const REPLICA_LAG_SECONDS: &str = "walcast_catalog_replica_lag_seconds";
/// WAL bytes between a replica's applied commit LSN and the most advanced healthy one's.
pub const REPLICA_LAG_BYTES: &str = "walcast_catalog_replica_lag_bytes";

/// Idempotency keys deleted because they are older than the window.
pub const IDEMPOTENCY_PRUNED: &str = "walcast_catalog_idempotency_keys_pruned_total";
/// Idempotency keys kept (planner estimate, `pg_class.reltuples`).
pub const IDEMPOTENCY_ROWS: &str = "walcast_catalog_idempotency_keys";
/// Age of the oldest idempotency key, 0 when there is none.
pub const IDEMPOTENCY_OLDEST: &str = "walcast_catalog_idempotency_keys_oldest_seconds";

const COMMAND_NAMES: &[&str] = &[
    "create",
    "update",
    "change_price",
    "activate",
    "deactivate",
    "delete",
];
const OUTCOMES: &[&str] = &["ok", "replayed", "rejected", "failed"];

/// Counters and histograms of the write API, registered once per command and outcome.
#[derive(Debug, Clone)]
pub(crate) struct WriteMetrics {
    commands: HashMap<(&'static str, &'static str), Counter>,
    seconds: HashMap<&'static str, Histogram>,
}

impl WriteMetrics {
    pub(crate) fn new(registry: &Registry) -> WriteMetrics {
        let mut commands = HashMap::new();
        let mut seconds = HashMap::new();
        for &command in COMMAND_NAMES {
            for &outcome in OUTCOMES {
                let labels = &[("command", command), ("outcome", outcome)];
                let c = registry.counter(COMMANDS, "Write commands by outcome.", labels);
                commands.insert((command, outcome), c);
            }
            let h = registry.histogram(
                COMMAND_SECONDS,
                "Time to run a write command.",
                &[("command", command)],
                LATENCY_BUCKETS,
            );
            seconds.insert(command, h);
        }
        WriteMetrics { commands, seconds }
    }

    pub(crate) fn record(&self, command: &str, outcome: &str, seconds: f64) {
        if let Some(c) = self.commands.get(&(command, outcome)) {
            c.inc();
        }
        if let Some(h) = self.seconds.get(command) {
            h.observe(seconds);
        }
    }
}

/// The metrics of one replica.
#[derive(Debug, Clone)]
pub(crate) struct ReplicaMetrics {
    pub(crate) queries: Counter,
    pub(crate) failovers: Counter,
    pub(crate) eligible: Gauge,
    pub(crate) lag_seconds: Gauge,
    pub(crate) lag_bytes: Gauge,
}

impl ReplicaMetrics {
    pub(crate) fn new(registry: &Registry, replica: &str) -> ReplicaMetrics {
        let l = &[("replica", replica)];
        ReplicaMetrics {
            queries: registry.counter(QUERIES, "Queries answered by a replica.", l),
            failovers: registry.counter(
                QUERY_FAILOVERS,
                "Queries that failed on a replica and moved on.",
                l,
            ),
            eligible: registry.gauge(REPLICA_ELIGIBLE, "1 while a replica may serve.", l),
            lag_seconds: registry.gauge(
                REPLICA_LAG_SECONDS,
                "How long a replica has been behind the most advanced healthy one.",
                l,
            ),
            lag_bytes: registry.gauge(
                REPLICA_LAG_BYTES,
                "WAL bytes a replica is behind the most advanced healthy one.",
                l,
            ),
        }
    }
}

/// The metrics of the idempotency-key pruning task.
#[derive(Debug, Clone)]
pub(crate) struct KeyMetrics {
    pub(crate) pruned: Counter,
    pub(crate) rows: Gauge,
    pub(crate) oldest: Gauge,
}

impl KeyMetrics {
    pub(crate) fn new(registry: &Registry) -> KeyMetrics {
        KeyMetrics {
            pruned: registry.counter(
                IDEMPOTENCY_PRUNED,
                "Idempotency keys deleted as older than the window.",
                &[],
            ),
            rows: registry.gauge(
                IDEMPOTENCY_ROWS,
                "Idempotency keys kept (planner estimate).",
                &[],
            ),
            oldest: registry.gauge(
                IDEMPOTENCY_OLDEST,
                "Age of the oldest idempotency key, 0 when none.",
                &[],
            ),
        }
    }
}
