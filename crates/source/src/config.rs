//! The source's connector file (`connectors/catalog-outbox-source.toml`): where the outbox
//! is, how its columns map onto a Kafka record, where records go, and the limits that keep
//! memory flat.
//!
//! Every struct rejects unknown keys, and [`SourceConfig::validate`] checks what serde cannot
//! (topic names, templates, protected producer settings) before anything connects. Whether the
//! configured columns exist is checked against the database at start-up
//! ([`crate::outbox::check_columns`]).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use walcast_config::{Backoff, ConfigError, KafkaProperties};
use walcast_kafka::ClientSettings;
use walcast_postgres::Dsn;
use walcast_replication::TableName;

use crate::outbox::TopicTemplate;

/// The whole connector file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub postgres: PostgresConfig,
    #[serde(default)]
    pub outbox: OutboxConfig,
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub heartbeat: HeartbeatConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub snapshot: SnapshotConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// The write database (libpq key/value or URL); the role needs REPLICATION.
    pub dsn: Dsn,
    /// The logical replication slot (pgoutput) the source owns.
    pub slot: String,
    /// The publication holding the outbox table.
    pub publication: String,
    /// Create the publication and the slot when missing.
    #[serde(default = "yes")]
    pub create: bool,
    /// How often the confirmed position is reported to Postgres (milliseconds).
    #[serde(default = "default_status_interval_ms")]
    pub status_interval_ms: u64,
    /// How often the slot lag is measured (seconds).
    #[serde(default = "default_lag_interval_secs")]
    pub lag_interval_secs: u64,
    /// The slot's confirmed position has not moved for this long while WAL was written after
    /// it: the source reports stalled progress (`/ready` 503, a warning, and the
    /// `walcast_source_progress_stalled_seconds` gauge). Seconds.
    #[serde(default = "default_stall_after_secs")]
    pub stall_after_secs: u64,
}

/// What the router reads: the table, its columns and what to do with non-inserts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// `schema.table`.
    pub table: String,
    pub columns: ColumnsConfig,
    /// Header name → column; the header is set only when the column is not null.
    pub headers: BTreeMap<String, String>,
    /// UPDATE, DELETE and TRUNCATE of outbox rows (Debezium's `table.op.invalid.behavior`).
    pub invalid_op: InvalidOp,
}

/// Outbox column names (Debezium outbox-router roles).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ColumnsConfig {
    /// Event id: header `id` (consumers deduplicate by it).
    pub id: String,
    /// Aggregate id: the record key, as text.
    pub key: String,
    /// Event type: header `event_type`.
    pub event_type: String,
    /// The record value, the column's text unchanged.
    pub payload: String,
    /// Header `occurred_at` (ISO 8601); empty for none.
    pub occurred_at: String,
}

/// What to do with an UPDATE, DELETE or TRUNCATE of the outbox table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvalidOp {
    /// Skip it (counted in a metric, logged at debug level).
    #[default]
    Ignore,
    /// Skip it with a warning.
    Warn,
    /// Stop the source: somebody changes outbox rows, which an outbox must not allow.
    Fail,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// A topic name, or a template over outbox columns such as `outbox.event.{event_type}`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Where unroutable rows go; `<topic>.dlq` when not set (required with a template).
    #[serde(default)]
    pub dlq_topic: Option<String>,
    /// Create missing topics with this many partitions…
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// …and this replication factor (1 locally, 3 in production).
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i32,
    /// Create topics that do not exist (otherwise a missing topic is an error at start, and a
    /// template topic that does not exist dead-letters its rows as `topic_refused`).
    #[serde(default = "yes")]
    pub create_topics: bool,
    /// With a topic template: how many topics matching the template may exist; a row that
    /// would need one more goes to the DLQ as `too_many_topics`.
    #[serde(default = "default_max_topics")]
    pub max_topics: usize,
    /// With a topic template: the topics rows may go to, as patterns where `*` matches any
    /// run of characters (`["outbox.event.Product*"]`); empty allows every name. A row whose
    /// topic matches none goes to the DLQ as `topic_not_allowed`.
    #[serde(default)]
    pub topic_allow: Vec<String>,
    /// Records produced but not yet acknowledged, at most.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Bytes produced but not yet acknowledged, at most.
    #[serde(default = "default_max_in_flight_bytes")]
    pub max_in_flight_bytes: usize,
    /// Largest record (key + value + headers); larger events go to the DLQ. Keep it at or
    /// below the broker's and topic's `message.max.bytes`.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// On SIGINT/SIGTERM, how long to wait for outstanding acknowledgements.
    #[serde(default = "default_shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
    /// Extra librdkafka producer settings (not the ones the delivery rule depends on).
    #[serde(default)]
    pub properties: KafkaProperties,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `/health`, `/ready`, `/metrics`.
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// Every this many seconds, write a `pg_logical_emit_message` so the slot advances on a
    /// database without any traffic; 0 turns it off.
    #[serde(default)]
    pub interval_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

/// `[snapshot]`: which tables can be snapshotted into the event topic, and how.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Snapshot every table below when the source first creates its slot.
    pub initial: bool,
    /// Rows per chunk; each chunk is one short read transaction.
    pub chunk_size: u32,
    /// Rows per second over all tables, at most; 0 = as fast as the broker acknowledges.
    pub max_rows_per_sec: u32,
    /// The compacted topic holding each snapshot's progress; `<kafka.topic>.snapshots` when
    /// not set (required with a topic template).
    pub progress_topic: Option<String>,
    /// The signal table (`schema.table`, columns `id`, `type`, `data`, as Debezium's), read
    /// through the WAL; empty for none.
    pub signal_table: String,
    /// How column names become payload field names.
    pub field_naming: FieldNaming,
    pub tables: Vec<SnapshotTable>,
}

/// One table whose current state can be snapshotted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotTable {
    /// `schema.table`.
    pub table: String,
    /// The key column: the record key (as text), and the keyset the chunks follow.
    pub key: String,
    /// The `event_type` header of the table's snapshot records.
    pub event_type: String,
    /// A version every write of a row bumps, in the same transaction as its outbox row.
    pub version_column: String,
    /// When the row was last written (the `occurred_at` of its last event).
    pub occurred_at_column: String,
    /// The columns in the payload; every column when empty.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Column → payload field name, where `field_naming` is not what the consumers expect
    /// (`{ id = "productId" }`).
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
}

/// Payload field names of snapshot records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldNaming {
    /// `is_active` → `isActive` (the catalog's events).
    #[default]
    CamelCase,
    /// The column names unchanged.
    AsIs,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            initial: false,
            chunk_size: 8192,
            max_rows_per_sec: 0,
            progress_topic: None,
            signal_table: "public.walcast_signal".into(),
            field_naming: FieldNaming::CamelCase,
            tables: Vec::new(),
        }
    }
}

/// librdkafka settings the zero-loss rule depends on; `properties` may not change them.
pub const PROTECTED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "set [kafka] brokers instead"),
    (
        "enable.idempotence",
        "idempotence keeps retries from duplicating or reordering records",
    ),
    (
        "acks",
        "only acks=all makes an acknowledgement mean the record is replicated",
    ),
    (
        "partitioner",
        "murmur2_random is the Java client's partitioner, so all clients agree on partitions",
    ),
    (
        "message.timeout.ms",
        "records are retried until acknowledged (0 = no timeout)",
    ),
    ("message.max.bytes", "set [kafka] max_message_bytes instead"),
];

/// Headers every event carries; `[outbox.headers]` may not reuse them.
pub const RESERVED_HEADERS: &[&str] = &["id", "event_type", "occurred_at"];

impl SourceConfig {
    /// Loads the file (with `WALCAST_` overrides) and validates it.
    pub fn load(path: &Path) -> Result<SourceConfig, ConfigError> {
        let config: SourceConfig = walcast_config::load(path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks what serde cannot; `path` is only used in messages.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: String| Err(ConfigError::invalid(path, key, problem));
        if let Err(e) = self.outbox.table.parse::<TableName>() {
            return bad("outbox.table", format!("{e}; write it as schema.table"));
        }
        let c = &self.outbox.columns;
        for (key, value) in [
            ("outbox.columns.id", &c.id),
            ("outbox.columns.key", &c.key),
            ("outbox.columns.event_type", &c.event_type),
            ("outbox.columns.payload", &c.payload),
        ] {
            if value.is_empty() {
                return bad(key, "is empty; name a column of the outbox table".into());
            }
        }
        for (header, column) in &self.outbox.headers {
            if header.is_empty() || column.is_empty() {
                return bad(
                    "outbox.headers",
                    "header and column names must not be empty".into(),
                );
            }
            if RESERVED_HEADERS.contains(&header.as_str()) || header.starts_with("walcast.") {
                return bad(
                    "outbox.headers",
                    format!("header `{header}` is set by walcast itself; pick another name"),
                );
            }
        }
        let template = match TopicTemplate::parse(&self.kafka.topic) {
            Ok(t) => t,
            Err(problem) => return bad("kafka.topic", problem),
        };
        match &self.kafka.dlq_topic {
            Some(dlq) => {
                if let Err(problem) = crate::outbox::check_topic_name(dlq) {
                    return bad("kafka.dlq_topic", problem);
                }
            }
            None if !template.is_fixed() => {
                return bad(
                    "kafka.dlq_topic",
                    "must be set when kafka.topic is a template (e.g. dlq_topic = \"outbox.dlq\")"
                        .into(),
                );
            }
            None => {}
        }
        if template.is_fixed() && !self.kafka.topic_allow.is_empty() {
            return bad(
                "kafka.topic_allow",
                "applies to topic templates only; remove it or make kafka.topic a template".into(),
            );
        }
        for pattern in &self.kafka.topic_allow {
            let name = pattern.replace('*', "x");
            if let Err(problem) = crate::outbox::check_topic_name(&name) {
                return bad(
                    "kafka.topic_allow",
                    format!("pattern '{pattern}': {problem} ('*' matches any run)"),
                );
            }
        }
        if self.kafka.max_topics == 0 {
            return bad("kafka.max_topics", "must be at least 1".into());
        }
        if self.kafka.partitions < 1 || self.kafka.replication_factor < 1 {
            return bad(
                "kafka.partitions",
                "partitions and replication_factor must be at least 1".into(),
            );
        }
        if self.kafka.max_in_flight == 0 || self.kafka.max_in_flight_bytes == 0 {
            return bad("kafka.max_in_flight", "must be at least 1".into());
        }
        if self.kafka.max_message_bytes < 1024 {
            return bad("kafka.max_message_bytes", "must be at least 1024".into());
        }
        for (key, why) in PROTECTED_PROPERTIES {
            if self.kafka.properties.contains_key(*key) {
                return bad(
                    &format!("kafka.properties.\"{key}\""),
                    format!("is fixed by walcast ({why}); remove it"),
                );
            }
        }
        if self.postgres.status_interval_ms == 0 || self.postgres.lag_interval_secs == 0 {
            return bad(
                "postgres.status_interval_ms",
                "intervals must be greater than 0".into(),
            );
        }
        if self.postgres.stall_after_secs < 2 * self.postgres.lag_interval_secs {
            return bad(
                "postgres.stall_after_secs",
                format!(
                    "is {} s, but the slot is measured every {} s (lag_interval_secs); set it to at least twice that",
                    self.postgres.stall_after_secs, self.postgres.lag_interval_secs
                ),
            );
        }
        self.validate_snapshot(path, template.is_fixed())?;
        if self.retry.initial_backoff_ms == 0
            || self.retry.max_backoff_ms < self.retry.initial_backoff_ms
        {
            return bad(
                "retry.max_backoff_ms",
                "need 0 < initial_backoff_ms <= max_backoff_ms".into(),
            );
        }
        Ok(())
    }

    fn validate_snapshot(&self, path: &Path, fixed_topic: bool) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: String| Err(ConfigError::invalid(path, key, problem));
        let s = &self.snapshot;
        if s.chunk_size == 0 {
            return bad("snapshot.chunk_size", "must be at least 1".into());
        }
        if !s.signal_table.is_empty() && s.signal_table.parse::<TableName>().is_err() {
            return bad(
                "snapshot.signal_table",
                "write it as schema.table, or \"\" for no signal table".into(),
            );
        }
        match &s.progress_topic {
            Some(topic) => {
                if let Err(problem) = crate::outbox::check_topic_name(topic) {
                    return bad("snapshot.progress_topic", problem);
                }
            }
            None if !fixed_topic && !s.tables.is_empty() => {
                return bad(
                    "snapshot.progress_topic",
                    "must be set when kafka.topic is a template".into(),
                );
            }
            None => {}
        }
        if !fixed_topic && !s.tables.is_empty() {
            return bad(
                "snapshot.tables",
                "need a fixed [kafka] topic (snapshot records go to it); a topic template cannot route a table row".into(),
            );
        }
        if s.initial && s.tables.is_empty() {
            return bad(
                "snapshot.initial",
                "is true but no [[snapshot.tables]] is configured; add the tables or set it to false".into(),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, t) in s.tables.iter().enumerate() {
            let key = |k: &str| format!("snapshot.tables[{i}].{k}");
            let Ok(name) = t.table.parse::<TableName>() else {
                return bad(&key("table"), "write it as schema.table".into());
            };
            if !seen.insert(name.clone()) {
                return bad(&key("table"), format!("{} is listed twice", t.table));
            }
            if name == self.table() {
                return bad(
                    &key("table"),
                    "is the outbox table; snapshot the aggregate tables instead".into(),
                );
            }
            for (k, v) in [
                ("key", &t.key),
                ("event_type", &t.event_type),
                ("version_column", &t.version_column),
                ("occurred_at_column", &t.occurred_at_column),
            ] {
                if v.is_empty() {
                    return bad(
                        &key(k),
                        if k == "version_column" {
                            "is empty; a snapshot needs a version column that every write bumps in the same transaction as its outbox row (docs/delivery-guarantees.md, \"Snapshots\")".into()
                        } else {
                            "is empty; name a column".into()
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// The snapshot progress topic: `[snapshot] progress_topic`, or `<topic>.snapshots`.
    pub fn progress_topic(&self) -> String {
        self.snapshot
            .progress_topic
            .clone()
            .unwrap_or_else(|| walcast_kafka::snapshots::default_topic(&self.kafka.topic))
    }

    /// The signal table, if one is configured.
    pub fn signal_table(&self) -> Option<TableName> {
        self.snapshot.signal_table.parse().ok()
    }

    /// The outbox table.
    pub fn table(&self) -> TableName {
        self.outbox
            .table
            .parse()
            .unwrap_or_else(|_| TableName::new("public", "outbox_messages"))
    }

    /// The dead-letter topic: `dlq_topic`, or `<topic>.dlq`.
    pub fn dlq_topic(&self) -> String {
        self.kafka
            .dlq_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.kafka.topic))
    }

    /// The reconnection schedule (replication and start-up).
    pub fn backoff(&self) -> Backoff {
        Backoff {
            initial: Duration::from_millis(self.retry.initial_backoff_ms),
            max: Duration::from_millis(self.retry.max_backoff_ms),
            max_attempts: None,
        }
    }
}

impl KafkaConfig {
    /// How to reach the broker: `brokers` and `properties` (TLS, SASL, tuning).
    pub fn client(&self) -> ClientSettings<'_> {
        ClientSettings::new(&self.brokers, &self.properties)
    }
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            table: "public.outbox_messages".into(),
            columns: ColumnsConfig::default(),
            headers: BTreeMap::from([("correlation_id".into(), "correlation_id".into())]),
            invalid_op: InvalidOp::Ignore,
        }
    }
}

impl Default for ColumnsConfig {
    fn default() -> Self {
        ColumnsConfig {
            id: "id".into(),
            key: "aggregate_id".into(),
            event_type: "event_type".into(),
            payload: "payload".into(),
            occurred_at: "occurred_at".into(),
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 9464)),
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_backoff_ms: 100,
            max_backoff_ms: 5000,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_status_interval_ms() -> u64 {
    1000
}
fn default_lag_interval_secs() -> u64 {
    5
}
/// Five minutes: far above the normal gaps (a status update every second, a keepalive
/// whenever the walsender waits for WAL), and above the time a large transaction takes to
/// publish, yet well inside the hours it takes a stuck slot to fill a disk.
fn default_stall_after_secs() -> u64 {
    300
}
fn default_topic() -> String {
    "catalog.events".into()
}
fn default_partitions() -> i32 {
    3
}
fn default_replication_factor() -> i32 {
    1
}
fn default_max_topics() -> usize {
    100
}
fn default_max_in_flight() -> usize {
    10_000
}
fn default_max_in_flight_bytes() -> usize {
    32 << 20
}
fn default_max_message_bytes() -> usize {
    1_000_000
}
fn default_shutdown_timeout_secs() -> u64 {
    30
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Result<SourceConfig, ConfigError> {
        let dir = tempfile::tempdir().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let path = dir.path().join("source.toml");
        std::fs::write(&path, toml).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        SourceConfig::load(&path)
    }

    const MINIMAL: &str = "[postgres]\ndsn = \"host=h user=u dbname=d\"\nslot = \"s\"\npublication = \"p\"\n[kafka]\nbrokers = \"b:9092\"\n";

    fn err(toml: &str) -> String {
        match load(toml) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_follow_the_outbox_schema() {
        let c = load(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.table(), TableName::new("public", "outbox_messages"));
        assert_eq!(c.outbox.columns.key, "aggregate_id");
        assert_eq!(
            c.outbox.headers.get("correlation_id").map(String::as_str),
            Some("correlation_id")
        );
        assert_eq!(c.kafka.topic, "catalog.events");
        assert_eq!(c.dlq_topic(), "catalog.events.dlq");
        assert_eq!(c.kafka.partitions, 3);
        assert_eq!(c.admin.listen.ip(), Ipv4Addr::LOCALHOST);
        assert_eq!(c.outbox.invalid_op, InvalidOp::Ignore);
    }

    #[test]
    fn rejects_what_would_break_the_delivery_rule() {
        let e = err(&format!("{MINIMAL}[kafka.properties]\n\"acks\" = \"1\"\n"));
        assert!(
            e.contains("kafka.properties.\"acks\"") && e.contains("remove it"),
            "{e}"
        );
        let e = err(&MINIMAL.replace("brokers", "topic = \"outbox.event.{event_type}\"\nbrokers"));
        assert!(e.contains("kafka.dlq_topic"), "{e}");
        let e = err(&MINIMAL.replace("brokers", "topic = \"bad topic\"\nbrokers"));
        assert!(e.contains("kafka.topic"), "{e}");
        let e = err(&format!("{MINIMAL}[outbox.headers]\nid = \"x\"\n"));
        assert!(e.contains("set by walcast"), "{e}");
        let e = err(&format!("{MINIMAL}[outbox]\ninvalid_op = \"explode\"\n"));
        assert!(e.contains("invalid_op") || e.contains("explode"), "{e}");
        let e = err(&MINIMAL.replace("brokers", "topic_allow = [\"a*\"]\nbrokers"));
        assert!(
            e.contains("kafka.topic_allow") && e.contains("templates only"),
            "{e}"
        );
        let template = "topic = \"ev.{event_type}\"\ndlq_topic = \"ev.dlq\"\n";
        let e = err(&MINIMAL.replace(
            "brokers",
            &format!("{template}topic_allow = [\"a b*\"]\nbrokers"),
        ));
        assert!(
            e.contains("kafka.topic_allow") && e.contains("'a b*'"),
            "{e}"
        );
        let e = err(&MINIMAL.replace("brokers", &format!("{template}max_topics = 0\nbrokers")));
        assert!(e.contains("kafka.max_topics"), "{e}");
        let e = err(&format!("{MINIMAL}[outbox]\ntabel = \"x\"\n"));
        assert!(e.contains("unknown key `outbox.tabel`"), "{e}");
    }

    #[test]
    fn snapshot_tables_need_a_version_column_and_a_fixed_topic_or_progress_topic() {
        let table = "[[snapshot.tables]]\ntable = \"public.products\"\nkey = \"id\"\nevent_type = \"ProductSnapshot\"\noccurred_at_column = \"updated_at\"\n";
        let e = err(&format!("{MINIMAL}{table}version_column = \"\"\n"));
        assert!(
            e.contains("snapshot.tables[0].version_column") && e.contains("bumps"),
            "{e}"
        );
        let ok = load(&format!("{MINIMAL}{table}version_column = \"version\"\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.progress_topic(), "catalog.events.snapshots");
        assert_eq!(
            ok.signal_table(),
            Some(TableName::new("public", "walcast_signal"))
        );
        let e = err(&format!("{MINIMAL}[snapshot]\ninitial = true\n"));
        assert!(e.contains("snapshot.initial"), "{e}");
        let e = err(&format!(
            "{}{table}version_column = \"version\"\n",
            MINIMAL.replace(
                "brokers",
                "topic = \"ev.{event_type}\"\ndlq_topic = \"ev.dlq\"\nbrokers"
            )
        ));
        assert!(e.contains("snapshot.progress_topic"), "{e}");
    }
}
