//! The sink's connector file (`connectors/catalog-read-sink.toml`): where to consume, the
//! targets, batching, and the declarative projection of event types onto read tables.
//!
//! Every struct rejects unknown keys, and [`SinkConfig::validate`] checks the cross references
//! (event → table → column, computed placeholders, upcast versions) before anything starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use walcast_config::KafkaProperties;
use walcast_kafka::ClientSettings;
use walcast_postgres::Dsn;

use crate::error::{Error, Result};

/// The whole connector file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub schema: SchemaConfig,
    #[serde(default)]
    pub envelope: EnvelopeConfig,
    #[serde(default)]
    pub prune: PruneConfig,
    /// Target name → target. Names appear in metrics, logs, DLQ headers and consumer groups.
    pub targets: BTreeMap<String, TargetConfig>,
    /// The read tables events are projected into.
    pub tables: Vec<TableConfig>,
    /// One entry per event type.
    pub events: Vec<EventConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// The topic the source publishes to.
    pub topic: String,
    /// Each target consumes as `<group_prefix>.<target>`; its offsets live in its own database.
    #[serde(default = "default_group_prefix")]
    pub group_prefix: String,
    /// Dead-letter topic; `<topic>.dlq` when not set. Created at start when missing.
    #[serde(default)]
    pub dlq_topic: Option<String>,
    /// The source's snapshot progress topic; `<topic>.snapshots` when not set (the source's
    /// default). Read only when a target has no stored offset for a partition that no longer
    /// starts at offset 0: a completed snapshot that began after the deleted records makes
    /// that start complete (docs/delivery-guarantees.md, "Retention").
    #[serde(default)]
    pub snapshot_topic: Option<String>,
    /// Seconds between looks for new partitions of the topic, and between checks of a target
    /// stopped on a retention gap.
    #[serde(default = "default_metadata_refresh_secs")]
    pub metadata_refresh_secs: u64,
    /// Extra librdkafka properties for consumers and the DLQ producer.
    #[serde(default)]
    pub properties: KafkaProperties,
}

impl KafkaConfig {
    /// How to reach the broker: `brokers` and `properties` (TLS, SASL, tuning).
    pub fn client(&self) -> ClientSettings<'_> {
        ClientSettings::new(&self.brokers, &self.properties)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most events applied in one transaction.
    pub max_events: usize,
    /// How long a batch waits for more events after its first one.
    pub linger_ms: u64,
    /// Most record bytes (key, value, headers) in one batch: a batch closes at `max_events` or
    /// `max_bytes`, whichever comes first; a single larger record is a batch of its own. A
    /// target holds about twice this while it applies a batch (the records and one shared copy
    /// of their values; docs/benchmarks.md), so it bounds the sink's memory behind a backlog of
    /// large events.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `/health`, `/ready`, `/metrics`.
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaConfig {
    /// SQL files applied to every target at start (idempotent DDL), relative to the connector
    /// file's directory.
    #[serde(default)]
    pub files: Vec<PathBuf>,
}

/// How long each target keeps its bookkeeping (`processed_events`, `walcast_tombstones`); a
/// task per target deletes older rows in small batches, off the batch path. The defaults and
/// why they are safe: `docs/delivery-guarantees.md`, "Pruning windows". Shortened through the
/// environment like every key (`WALCAST_PRUNE__TOMBSTONE_WINDOW_SECS=600`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PruneConfig {
    /// `processed_events` rows recorded longer ago than this are deleted. At least the topic's
    /// retention: a duplicate (redelivery, re-sent tail, rewind) can only come from the topic.
    pub processed_events_window_secs: u64,
    /// Tombstones written longer ago than this are deleted. At least the longest of topic,
    /// outbox and DLQ retention and the longest snapshot, and not shorter than
    /// `processed_events_window_secs`; replay tools refuse events older than this window.
    pub tombstone_window_secs: u64,
    /// Seconds between pruning passes.
    pub interval_secs: u64,
    /// Rows deleted per statement (each its own short transaction).
    pub batch_rows: u32,
}

/// Where the envelope of an event lives (Debezium outbox-router layout by default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvelopeConfig {
    pub event_id_header: String,
    pub event_type_header: String,
    pub occurred_at_header: String,
    pub commit_lsn_header: String,
    /// Schema version of the event: this header, else `event_version_field` of the payload,
    /// else the mapping's current `version`.
    pub event_version_header: String,
    pub event_version_field: String,
    /// The aggregate version in the payload: the first field of the version guard.
    pub aggregate_version_field: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub dsn: Dsn,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    pub name: String,
    /// The primary-key column (one of `columns`).
    pub key: String,
    #[serde(default = "default_version_column")]
    pub version_column: String,
    #[serde(default = "default_occurred_at_column")]
    pub occurred_at_column: String,
    pub columns: Vec<ColumnConfig>,
    /// Column → SQL expression computed on every write. `{column}` stands for the column's new
    /// value (`{version}` and `{occurred_at}` included), e.g.
    /// `lower(concat_ws(' ', {sku}, {name}, {description}))`.
    #[serde(default)]
    pub computed: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
    #[serde(default)]
    pub nullable: bool,
    /// Longest accepted text (e.g. 3 for `CHAR(3)`); longer values are poison.
    #[serde(default)]
    pub max_chars: Option<usize>,
}

/// The column types a projection can write; a payload value of another JSON type is poison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Uuid,
    Text,
    /// Exact decimal from a JSON string (`"12.50"`) or number.
    Numeric,
    Boolean,
    Integer,
    Bigint,
    Timestamptz,
    Jsonb,
}

impl ColumnType {
    pub(crate) fn sql(self) -> &'static str {
        match self {
            ColumnType::Uuid => "uuid",
            ColumnType::Text => "text",
            ColumnType::Numeric => "numeric",
            ColumnType::Boolean => "boolean",
            ColumnType::Integer => "integer",
            ColumnType::Bigint => "bigint",
            ColumnType::Timestamptz => "timestamptz",
            ColumnType::Jsonb => "jsonb",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventConfig {
    /// The `event_type` header value.
    #[serde(rename = "type")]
    pub event_type: String,
    pub table: String,
    pub action: Action,
    /// Payload field holding the table key.
    pub key: String,
    /// The current schema version of this event type; older ones are upcast.
    #[serde(default = "default_event_version")]
    pub version: u32,
    /// Column → payload field (`"name"`) or `{ field = "...", optional = true }` or
    /// `{ value = <constant> }`.
    #[serde(default)]
    pub columns: BTreeMap<String, FieldSource>,
    /// Rules that lift an older schema version by one.
    #[serde(default)]
    pub upcast: Vec<UpcastConfig>,
}

/// What an event does to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Insert or replace the whole row.
    Upsert,
    /// Set the mapped columns of an existing row (a missing row is left missing).
    Update,
    /// Delete the row and leave a tombstone so a late event cannot resurrect it.
    Delete,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FieldSource {
    Field(String),
    Spec(FieldSpec),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// Missing or null writes NULL instead of sending the event to the DLQ.
    #[serde(default)]
    pub optional: bool,
}

/// Lifts a payload from schema version `from` to `from + 1`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpcastConfig {
    pub from: u32,
    /// Old field name → new field name.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Fields added in the new version, with the value old events get.
    #[serde(default)]
    pub defaults: BTreeMap<String, serde_json::Value>,
}

impl SinkConfig {
    /// Loads the connector file with `WALCAST_` environment overrides, resolves schema paths
    /// against the file's directory and validates.
    pub fn load(path: &Path) -> Result<SinkConfig> {
        let mut config: SinkConfig = walcast_config::load(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for f in &mut config.schema.files {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
        // Name the file, as the loader's own errors do: an operator fixes it by editing it.
        config.validate().map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })?;
        Ok(config)
    }

    /// The dead-letter topic.
    pub fn dlq_topic(&self) -> String {
        self.kafka
            .dlq_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.kafka.topic))
    }

    /// The snapshot progress topic (`[kafka] snapshot_topic`, by default the source's
    /// default for the topic).
    pub fn snapshot_topic(&self) -> String {
        self.kafka
            .snapshot_topic
            .clone()
            .unwrap_or_else(|| walcast_kafka::snapshots::default_topic(&self.kafka.topic))
    }

    /// The consumer group (and `walcast_offsets.consumer_group`) of a target.
    pub fn group(&self, target: &str) -> String {
        format!("{}.{target}", self.kafka.group_prefix)
    }

    /// How long a target keeps a tombstone: the oldest event a replay may still bring to this
    /// sink without `walcast sink rebuild` (see [`PruneConfig`]).
    pub fn tombstone_window(&self) -> Duration {
        Duration::from_secs(self.prune.tombstone_window_secs)
    }

    pub(crate) fn linger(&self) -> Duration {
        Duration::from_millis(self.batch.linger_ms)
    }

    /// The restart schedule of a target task (`[retry]`), doubling from `initial_backoff_ms`
    /// up to `max_backoff_ms`; it never gives up.
    pub(crate) fn backoff(&self) -> walcast_config::Backoff {
        walcast_config::Backoff {
            initial: Duration::from_millis(self.retry.initial_backoff_ms),
            max: Duration::from_millis(self.retry.max_backoff_ms),
            max_attempts: None,
        }
    }

    /// Checks everything that can be checked without a network.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(Error::Config(m));
        if self.targets.is_empty() {
            return fail("no [targets.NAME] entries; add at least one target with a dsn".into());
        }
        for name in self.targets.keys() {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return fail(format!(
                    "target name {name:?} may use only letters, digits, '-', '_' and '.'; rename it"
                ));
            }
        }
        let dsns: Vec<&Dsn> = self.targets.values().map(|t| &t.dsn).collect();
        if dsns
            .iter()
            .enumerate()
            .any(|(i, a)| dsns[i + 1..].contains(a))
        {
            return fail(
                "two targets have the same dsn; each target needs its own database, since the \
                 offsets and processed events it keeps are per database"
                    .into(),
            );
        }
        if self.batch.max_events == 0 {
            return fail("[batch] max_events must be at least 1".into());
        }
        if self.batch.max_bytes < 1024 {
            return fail(
                "[batch] max_bytes must be at least 1024 (16777216, 16 MB, is the default)".into(),
            );
        }
        if self.retry.initial_backoff_ms == 0
            || self.retry.max_backoff_ms < self.retry.initial_backoff_ms
        {
            return fail("[retry] needs 0 < initial_backoff_ms <= max_backoff_ms".into());
        }
        if let Some(v) = (self.kafka.properties.expose()).get(crate::kafka::AUTO_OFFSET_RESET) {
            return fail(format!(
                "[kafka.properties] sets {}={v:?}; remove it: the sink never skips records \
                 the topic no longer holds (a target stops instead, and `walcast sink rebuild \
                 --from` repairs it; docs/operations.md, \"Retention\")",
                crate::kafka::AUTO_OFFSET_RESET
            ));
        }
        self.prune.validate()?;
        crate::projection::Projections::compile(self).map(|_| ())
    }
}

impl PruneConfig {
    fn validate(&self) -> Result<()> {
        if self.processed_events_window_secs == 0
            || self.tombstone_window_secs == 0
            || self.interval_secs == 0
            || self.batch_rows == 0
        {
            return Err(Error::Config(
                "[prune] windows, interval_secs and batch_rows must be at least 1".into(),
            ));
        }
        if self.tombstone_window_secs < self.processed_events_window_secs {
            return Err(Error::Config(format!(
                "[prune] tombstone_window_secs ({}) is shorter than processed_events_window_secs \
                 ({}): once both are gone a late duplicate could resurrect a deleted row; make \
                 the tombstone window at least as long",
                self.tombstone_window_secs, self.processed_events_window_secs
            )));
        }
        Ok(())
    }
}

impl Default for PruneConfig {
    fn default() -> Self {
        PruneConfig {
            // 8 days: the topic's 7-day retention (log.retention.hours=168) and a day spare.
            processed_events_window_secs: 8 * 86_400,
            // 30 days: the longest of topic, outbox and DLQ retention (7 days each) plus the
            // time an operator may take to fix and replay a dead letter, and any snapshot.
            tombstone_window_secs: 30 * 86_400,
            interval_secs: 60,
            batch_rows: 1000,
        }
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_events: 1000,
            linger_ms: 20,
            max_bytes: default_max_bytes(),
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

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9465)),
        }
    }
}

impl Default for EnvelopeConfig {
    fn default() -> Self {
        EnvelopeConfig {
            event_id_header: "id".into(),
            event_type_header: "event_type".into(),
            occurred_at_header: "occurred_at".into(),
            commit_lsn_header: "walcast.commit_lsn".into(),
            event_version_header: "event_version".into(),
            event_version_field: "eventVersion".into(),
            aggregate_version_field: "version".into(),
        }
    }
}

/// 16 MB: a thousand 16 kB events, or sixteen 1 MB ones, per transaction (docs/operations.md).
fn default_max_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_group_prefix() -> String {
    "walcast.sink".into()
}
fn default_metadata_refresh_secs() -> u64 {
    30
}
fn default_version_column() -> String {
    "version".into()
}
fn default_occurred_at_column() -> String {
    "occurred_at".into()
}
fn default_event_version() -> u32 {
    1
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn prune_windows_default_as_argued_and_are_checked() {
        let p = PruneConfig::default();
        assert_eq!(p.processed_events_window_secs, 8 * 86_400);
        assert_eq!(p.tombstone_window_secs, 30 * 86_400);
        assert!(p.validate().is_ok());
        let shorter = PruneConfig {
            tombstone_window_secs: 60,
            ..PruneConfig::default()
        };
        let e = shorter.validate().unwrap_err().to_string();
        assert!(e.contains("tombstone_window_secs"), "{e}");
        let zero = PruneConfig {
            batch_rows: 0,
            ..PruneConfig::default()
        };
        assert!(zero.validate().is_err());
        // The shipped file states the defaults.
        let shipped = SinkConfig::load(&crate::projection::tests::shipped_path()).unwrap();
        assert_eq!(shipped.tombstone_window(), Duration::from_secs(30 * 86_400));
        assert_eq!(shipped.prune.processed_events_window_secs, 8 * 86_400);
    }

    #[test]
    fn the_snapshot_topic_defaults_to_the_sources_default() {
        let mut config = SinkConfig::load(&crate::projection::tests::shipped_path()).unwrap();
        assert_eq!(config.snapshot_topic(), "catalog.events.snapshots");
        config.kafka.snapshot_topic = Some("progress".into());
        assert_eq!(config.snapshot_topic(), "progress");
    }
}
