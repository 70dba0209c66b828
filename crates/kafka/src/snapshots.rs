//! The snapshot progress topic: where a source keeps what its snapshots have done, and where
//! sinks and the CLI read it.
//!
//! A snapshot writes the current state of aggregate tables into the event topic, one record
//! per row (see the source's `snapshot` module). Its progress is one [`SnapshotState`] per
//! snapshot id, written as a record keyed by that id to a compacted topic with one partition
//! (`<events topic>.snapshots` by default), after every chunk whose records the broker has all
//! acknowledged. The latest record of an id is the snapshot's state: a restarted source
//! resumes from it, `walcast snapshot status` shows it, and a sink reads the completed ones to
//! decide whether a partition that no longer starts at offset 0 is still complete for a new
//! target ([`covering`]).
//!
//! The progress lives in Kafka, beside the records it accounts for, and never in the write
//! database: the source writes nothing there but its slot's position.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::error::{Error, Result};
use crate::settings::ClientSettings;

/// The progress topic of `events_topic` when none is configured: `<events_topic>.snapshots`.
pub fn default_topic(events_topic: &str) -> String {
    format!("{events_topic}.snapshots")
}

/// The progress topic's settings besides its single partition: compacted, so the latest state
/// of every snapshot is kept for ever (a completed snapshot is what makes a topic whose start
/// was deleted still complete).
pub const TOPIC_CONFIG: &[(&str, &str)] = &[("cleanup.policy", "compact")];

/// Largest progress record (key + value): a state holds one entry per table.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// Where a snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Asked for (signal, CLI, `initial = true`), not started yet.
    Requested,
    /// Reading chunks.
    Running,
    /// Every row of every table was read and acknowledged by the broker.
    Completed,
    /// Stopped by a `stop-snapshot` signal or `walcast snapshot cancel`.
    Cancelled,
    /// Stopped by an error that needs an operator (`reason` says which).
    Failed,
}

impl Status {
    /// Completed, cancelled or failed: nothing more happens to it.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Completed | Status::Cancelled | Status::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Requested => "requested",
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
            Status::Failed => "failed",
        }
    }
}

/// One table of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableProgress {
    /// `schema.table`.
    pub table: String,
    /// The key (as text) of the last row of the last chunk whose records were all
    /// acknowledged; `None` before the first chunk. A resumed snapshot reads after it.
    #[serde(default)]
    pub last_key: Option<String>,
    /// Rows emitted (acknowledged) so far.
    #[serde(default)]
    pub rows: u64,
    /// Chunks done so far.
    #[serde(default)]
    pub chunks: u64,
    /// The planner's row estimate when the table was started (`pg_class.reltuples`), for ETAs.
    #[serde(default)]
    pub estimated_rows: Option<u64>,
    /// Every row of the table was emitted.
    #[serde(default)]
    pub done: bool,
}

/// The state of one snapshot: the value of its records on the progress topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotState {
    /// Unique per snapshot: the signal's id, or `initial-<slot>` for `[snapshot] initial`.
    pub id: String,
    /// The event topic the rows go to.
    pub topic: String,
    pub status: Status,
    /// The tables, in the order they are read.
    pub tables: Vec<TableProgress>,
    /// The event topic's end offsets (next offset per partition) read before the first chunk.
    /// Every record of the snapshot, and every live event committed after it started, is at
    /// or after these: a consumer starting at or below them misses nothing ([`covering`]).
    /// Empty until the snapshot runs.
    #[serde(default)]
    pub start_offsets: BTreeMap<i32, i64>,
    /// Who asked: `initial`, `signal`, `cli`, `rebuild <target>`.
    #[serde(default)]
    pub requested_by: String,
    /// Milliseconds since the Unix epoch.
    pub requested_at_ms: i64,
    pub updated_at_ms: i64,
    #[serde(default)]
    pub completed_at_ms: Option<i64>,
    /// Why it was cancelled or failed.
    #[serde(default)]
    pub reason: Option<String>,
}

impl SnapshotState {
    /// The record value.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A record value, or why it is not one (a record some other tool wrote).
    pub fn decode(value: &[u8]) -> std::result::Result<SnapshotState, String> {
        serde_json::from_slice(value).map_err(|e| e.to_string())
    }

    /// Rows emitted over all tables.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    /// Rows expected over all tables (estimates), when every table has one.
    pub fn estimated_rows(&self) -> Option<u64> {
        self.tables.iter().map(|t| t.estimated_rows).sum()
    }
}

/// Creates the progress topic `topic` (one partition, compacted) if it does not exist.
pub async fn ensure_topic(
    admin: &crate::TopicAdmin,
    topic: &str,
    replication_factor: i32,
) -> Result<()> {
    let spec = crate::TopicSpec {
        partitions: 1,
        replication_factor,
    };
    match admin.create_configured(topic, spec, TOPIC_CONFIG).await? {
        Ok(()) | Err(RDKafkaErrorCode::TopicAlreadyExists) => Ok(()),
        Err(code) => Err(Error::Topic {
            topic: topic.to_owned(),
            problem: format!(
                "could not be created ({code}); create it with one partition and cleanup.policy=compact"
            ),
        }),
    }
}

/// The latest state of every snapshot on `topic`, by id. A topic that does not exist yet has
/// none. Records that are not states are skipped with a warning; tombstones (empty values)
/// remove their id.
pub async fn read_all(
    settings: ClientSettings<'_>,
    topic: &str,
    timeout: Duration,
) -> Result<BTreeMap<String, SnapshotState>> {
    let config = settings.config(&[
        ("group.id", "walcast.snapshots.reader"),
        ("enable.auto.commit", "false"),
        ("enable.partition.eof", "false"),
        ("isolation.level", "read_committed"),
    ]);
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || -> Result<BTreeMap<String, SnapshotState>> {
        let consumer: BaseConsumer = config
            .create()
            .map_err(Error::kafka("creating the snapshot progress reader"))?;
        let context = || format!("reading the snapshot progress topic {topic}");
        let metadata = consumer
            .fetch_metadata(Some(&topic), timeout)
            .map_err(Error::kafka(context()))?;
        let exists = metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        if !exists {
            return Ok(BTreeMap::new());
        }
        let (low, high) = consumer
            .fetch_watermarks(&topic, 0, timeout)
            .map_err(Error::kafka(context()))?;
        let mut states = BTreeMap::new();
        if high <= low {
            return Ok(states);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Offset(low))
            .map_err(Error::kafka(context()))?;
        consumer.assign(&tpl).map_err(Error::kafka(context()))?;
        let deadline = std::time::Instant::now() + timeout;
        let mut next = low;
        while next < high {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(Error::Kafka {
                    context: format!(
                        "{}: offset {next} of {high} not reached within {timeout:?}",
                        context()
                    ),
                    source: KafkaError::MessageConsumption(RDKafkaErrorCode::RequestTimedOut),
                });
            }
            let Some(polled) = consumer.poll(left.min(Duration::from_millis(500))) else {
                continue;
            };
            let message = polled.map_err(Error::kafka(context()))?;
            next = message.offset() + 1;
            let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                continue;
            };
            match message.payload() {
                None | Some([]) => {
                    states.remove(key);
                }
                Some(value) => match SnapshotState::decode(value) {
                    Ok(state) => {
                        states.insert(key.to_owned(), state);
                    }
                    Err(e) => {
                        warn!(topic = %topic, offset = message.offset(), error = %e, "skipping a record of the snapshot progress topic that is not a snapshot state");
                    }
                },
            }
        }
        Ok(states)
    })
    .await
    .map_err(|e| Error::Kafka {
        context: format!("reading the snapshot progress topic: {e}"),
        source: KafkaError::MessageConsumption(RDKafkaErrorCode::Fail),
    })?
}

/// The completed snapshot of `topic` that makes a consumer starting at `starts` (the first
/// retained offset of each partition) miss nothing: one whose start offsets are at or after
/// every partition's start. The latest such snapshot, or `None`.
///
/// Why that is enough: a snapshot's records, and every live event committed after it began,
/// were produced after its start offsets were read. A consumer that reads from a point at or
/// below them sees the state of every row as of its read, and every change after it; changes
/// committed before the snapshot are in the rows it read.
pub fn covering<'s>(
    states: &'s BTreeMap<String, SnapshotState>,
    topic: &str,
    starts: &BTreeMap<i32, i64>,
) -> Option<&'s SnapshotState> {
    states
        .values()
        .filter(|s| s.status == Status::Completed && s.topic == topic)
        .filter(|s| {
            starts
                .iter()
                .all(|(p, start)| s.start_offsets.get(p).is_some_and(|o| o >= start))
        })
        .max_by_key(|s| s.completed_at_ms)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn state(id: &str, status: Status, starts: &[(i32, i64)]) -> SnapshotState {
        SnapshotState {
            id: id.into(),
            topic: "t".into(),
            status,
            tables: vec![TableProgress {
                table: "public.products".into(),
                last_key: Some("k".into()),
                rows: 10,
                chunks: 1,
                estimated_rows: Some(20),
                done: status == Status::Completed,
            }],
            start_offsets: starts.iter().copied().collect(),
            requested_by: "cli".into(),
            requested_at_ms: 1,
            updated_at_ms: 2,
            completed_at_ms: (status == Status::Completed).then_some(3),
            reason: None,
        }
    }

    #[test]
    fn states_round_trip() {
        let s = state("a", Status::Running, &[(0, 5), (1, 7)]);
        assert_eq!(SnapshotState::decode(&s.encode()).unwrap(), s);
        assert!(SnapshotState::decode(b"{\"id\":1}").is_err());
        assert!(s.encode().len() < MAX_RECORD_BYTES);
    }

    #[test]
    fn only_a_completed_snapshot_started_after_every_partition_start_covers() {
        let starts = BTreeMap::from([(0, 10), (1, 20)]);
        let mut states = BTreeMap::new();
        states.insert(
            "run".into(),
            state("run", Status::Running, &[(0, 50), (1, 50)]),
        );
        states.insert(
            "old".into(),
            state("old", Status::Completed, &[(0, 5), (1, 50)]),
        );
        assert!(covering(&states, "t", &starts).is_none());
        states.insert(
            "new".into(),
            state("new", Status::Completed, &[(0, 10), (1, 30)]),
        );
        assert_eq!(
            covering(&states, "t", &starts).map(|s| s.id.as_str()),
            Some("new")
        );
        // A partition the snapshot knew nothing about is not covered.
        let more = BTreeMap::from([(0, 10), (1, 20), (2, 0)]);
        assert!(covering(&states, "t", &more).is_none());
        assert!(covering(&states, "other", &starts).is_none());
    }
}
