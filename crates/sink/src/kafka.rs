//! A target's Kafka consumer: it assigns itself every partition of the topic at the offsets its
//! database holds, and hands out batches of at most `max_events` and `max_bytes` within
//! `linger`. Memory per target: the batch being applied (at most `max_bytes` of records, plus
//! one copy of their values: decoded, then encoded for Postgres; see `Store::transact`) plus
//! librdkafka's prefetch (at most 4 MB queued and one fetch of at most 4 MB).
//!
//! There is no group rebalance: each target is exactly one consumer, so it takes all
//! partitions itself (`assign`, not `subscribe`) and the broker keeps no offsets for it. The
//! group id names the target's row in `walcast_offsets`. New partitions are seen by re-reading
//! the topic's metadata every `metadata_refresh_secs`, and refused until an operator accepts
//! them (the `partitions` module).
//!
//! `auto.offset.reset` is `error`: librdkafka never jumps over records it cannot fetch. A
//! partition without a stored offset is assigned at the first retained offset the `retention`
//! check accepted, and an out-of-range answer at runtime ends the batch with [`Error::Gap`]
//! so the target loop checks retention again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::time::Instant;
use tracing::warn;

use crate::config::SinkConfig;
use crate::error::{Error, Result};

pub(crate) struct Consumer {
    consumer: Arc<StreamConsumer>,
    /// A record received after a batch was full by bytes: the first of the next batch.
    carry: std::sync::Mutex<Option<OwnedMessage>>,
    topic: String,
    brokers: String,
    /// The consumer's settings, for [`diagnose`](walcast_kafka::diagnose).
    client_config: ClientConfig,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

pub(crate) fn client_config(config: &SinkConfig, group: &str) -> ClientConfig {
    let mut c = config.kafka.client().config(&[
        ("group.id", group),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("enable.partition.eof", "false"),
        ("isolation.level", "read_committed"),
        // librdkafka prefetches up to 64 MB per consumer by default, and a fetch response may
        // hold 50 MB more; with four targets behind on a backlog that is hundreds of MB of RSS
        // for no gain. At most 4 MB queued plus one fetch of at most 4 MB: 8 MB per target
        // (a batch waits on the database, not on the broker).
        ("queued.max.messages.kbytes", "4096"),
        ("fetch.max.bytes", "4194304"),
    ]);
    // Never jump over records the broker no longer has (or never had): an offset out of
    // range is an error the target loop turns into a stop (the `retention` module). Set after
    // the operator's properties, and refused among them by the config's validation.
    c.set(AUTO_OFFSET_RESET, "error");
    c
}

/// The librdkafka setting that decides what an out-of-range offset does.
pub(crate) const AUTO_OFFSET_RESET: &str = "auto.offset.reset";

/// Whether a consumer error means a fetch offset is out of range (below the first retained
/// offset, or past the end): with `auto.offset.reset = error` librdkafka reports it and stops
/// fetching that partition.
fn out_of_range(e: &KafkaError) -> bool {
    matches!(
        e,
        KafkaError::MessageConsumption(
            RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange
        )
    )
}

impl Consumer {
    pub(crate) fn new(config: &SinkConfig, group: &str) -> Result<Consumer> {
        let client_config = client_config(config, group);
        let consumer: StreamConsumer = client_config.create().map_err(Error::kafka(format!(
            "creating the consumer of group {group}"
        )))?;
        Ok(Consumer {
            consumer: Arc::new(consumer),
            carry: std::sync::Mutex::default(),
            topic: config.kafka.topic.clone(),
            brokers: config.kafka.brokers.clone(),
            client_config,
        })
    }

    /// The topic's partitions, sorted. When the broker cannot be read, the error carries the
    /// cause a second connection finds (refused TLS or SASL login): the metadata request
    /// itself only times out.
    pub(crate) async fn partitions(&self) -> Result<Vec<i32>> {
        match topic_partitions(self.consumer.clone(), &self.topic, &self.brokers).await {
            Err(Error::Kafka(walcast_kafka::Error::Kafka { context, source })) => {
                let context =
                    walcast_kafka::diagnose::with_cause(&self.client_config, context).await;
                Err(Error::kafka(context)(source))
            }
            other => other,
        }
    }

    /// `(low, high)` watermarks of each of `partitions`.
    pub(crate) async fn watermarks(&self, partitions: &[i32]) -> Result<BTreeMap<i32, (i64, i64)>> {
        fetch_watermarks(self.consumer.clone(), &self.topic, partitions).await
    }

    /// Consumes each of `partitions` from its offset in `offsets` (the stored next offset, or
    /// the first retained offset the `retention` check accepted). A partition missing there
    /// starts at the earliest retained offset.
    pub(crate) fn assign(&self, partitions: &[i32], offsets: &BTreeMap<i32, i64>) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            let at = offsets
                .get(p)
                .map_or(Offset::Beginning, |o| Offset::Offset(*o));
            tpl.add_partition_offset(&self.topic, *p, at)
                .map_err(Error::kafka("building the assignment"))?;
        }
        // A record held over belongs to the old positions; the new ones re-read it.
        self.take_carry();
        self.consumer
            .assign(&tpl)
            .map_err(Error::kafka("assigning partitions"))
    }

    /// Consumes nothing (a target stopped on a gap).
    pub(crate) fn unassign(&self) -> Result<()> {
        self.take_carry();
        self.consumer
            .unassign()
            .map_err(Error::kafka("unassigning partitions"))
    }

    fn take_carry(&self) -> Option<OwnedMessage> {
        self.carry.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Up to `limits.events` records and `limits.bytes` bytes ([`record_bytes`]): waits up to
    /// `idle` for the first, then up to `linger` for more. A record larger than `limits.bytes`
    /// is a batch of its own; a record that would overflow a batch is kept for the next one.
    /// Empty if nothing arrived. An offset out of range is [`Error::Gap`] (the records of the
    /// batch so far are dropped: nothing was stored, the next assignment re-reads them).
    pub(crate) async fn next_batch(
        &self,
        limits: Limits,
        linger: Duration,
        idle: Duration,
    ) -> Result<Vec<OwnedMessage>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let first_deadline = Instant::now() + idle;
        let mut deadline = first_deadline;
        if let Some(m) = self.take_carry() {
            bytes += record_bytes(&m);
            out.push(m);
            deadline = Instant::now() + linger;
        }
        while out.len() < limits.events && bytes < limits.bytes {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Err(_) => break,
                Ok(Ok(m)) => {
                    let m = m.detach();
                    let size = record_bytes(&m);
                    if !out.is_empty() && bytes + size > limits.bytes {
                        *self.carry.lock().unwrap_or_else(|p| p.into_inner()) = Some(m);
                        break;
                    }
                    if out.is_empty() {
                        deadline = Instant::now() + linger;
                    }
                    bytes += size;
                    out.push(m);
                }
                Ok(Err(e)) if out_of_range(&e) => {
                    return Err(Error::Gap(format!(
                        "the broker answered that an offset of {} is out of range ({e})",
                        self.topic
                    )));
                }
                Ok(Err(e)) => {
                    // librdkafka retries broker failures itself; report and keep polling.
                    warn!(topic = %self.topic, error = %e, "consumer error");
                    if out.is_empty() && Instant::now() >= first_deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }
}

/// When a batch is full.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) events: usize,
    pub(crate) bytes: usize,
}

impl Limits {
    pub(crate) fn of(config: &SinkConfig) -> Limits {
        Limits {
            events: config.batch.max_events,
            bytes: config.batch.max_bytes,
        }
    }
}

/// The bytes of a record a batch counts: key, value, header names and values.
pub(crate) fn record_bytes(m: &OwnedMessage) -> usize {
    m.key().map_or(0, <[u8]>::len)
        + m.payload().map_or(0, <[u8]>::len)
        + m.headers().map_or(0, |h| {
            h.iter()
                .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len))
                .sum()
        })
}

/// The partitions of `topic`, sorted; [`Error::NoTopic`] if it has none.
async fn topic_partitions<C: rdkafka::consumer::Consumer + Send + Sync + 'static>(
    consumer: Arc<C>,
    topic: &str,
    brokers: &str,
) -> Result<Vec<i32>> {
    let t = topic.to_owned();
    let md = tokio::task::spawn_blocking(move || {
        consumer.fetch_metadata(Some(&t), Duration::from_secs(5))
    })
    .await
    .map_err(|_| Error::kafka("reading metadata")(KafkaError::Canceled))?
    .map_err(Error::kafka(format!("reading metadata of {topic}")))?;
    let mut parts: Vec<i32> = md
        .topics()
        .iter()
        .filter(|m| m.name() == topic && m.error().is_none())
        .flat_map(|m| m.partitions().iter().map(|p| p.id()))
        .collect();
    if parts.is_empty() {
        return Err(Error::NoTopic {
            topic: topic.to_owned(),
            brokers: brokers.to_owned(),
        });
    }
    parts.sort_unstable();
    Ok(parts)
}

/// A metadata-only client for watermarks (lag and rebuild progress).
pub(crate) struct Watermarks {
    consumer: Arc<BaseConsumer>,
    topic: String,
    brokers: String,
}

impl std::fmt::Debug for Watermarks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watermarks")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Watermarks {
    pub(crate) fn new(config: &SinkConfig) -> Result<Watermarks> {
        let consumer: BaseConsumer = config
            .kafka
            .client()
            .config(&[])
            .set("log_level", "3")
            .create()
            .map_err(Error::kafka("creating the watermark client"))?;
        Ok(Watermarks {
            consumer: Arc::new(consumer),
            topic: config.kafka.topic.clone(),
            brokers: config.kafka.brokers.clone(),
        })
    }

    pub(crate) async fn partitions(&self) -> Result<Vec<i32>> {
        topic_partitions(self.consumer.clone(), &self.topic, &self.brokers).await
    }

    /// `(low, high)` watermarks of each partition.
    pub(crate) async fn fetch(&self, partitions: &[i32]) -> Result<BTreeMap<i32, (i64, i64)>> {
        fetch_watermarks(self.consumer.clone(), &self.topic, partitions).await
    }
}

/// `(low, high)` watermarks of each of `partitions` of `topic`: the first retained offset and
/// the end offset.
async fn fetch_watermarks<C: rdkafka::consumer::Consumer + Send + Sync + 'static>(
    consumer: Arc<C>,
    topic: &str,
    partitions: &[i32],
) -> Result<BTreeMap<i32, (i64, i64)>> {
    let t = topic.to_owned();
    let parts = partitions.to_vec();
    tokio::task::spawn_blocking(move || {
        parts
            .iter()
            .map(|p| {
                consumer
                    .fetch_watermarks(&t, *p, Duration::from_secs(5))
                    .map(|w| (*p, w))
            })
            .collect::<std::result::Result<BTreeMap<_, _>, _>>()
    })
    .await
    .map_err(|_| Error::kafka("reading watermarks")(KafkaError::Canceled))?
    .map_err(Error::kafka(format!("reading watermarks of {topic}")))
}

/// Messages from `next` (stored next offsets; the low watermark where none) to the high
/// watermarks.
pub(crate) fn lag(marks: &BTreeMap<i32, (i64, i64)>, next: &BTreeMap<i32, i64>) -> i64 {
    marks
        .iter()
        .map(|(p, (low, high))| (high - next.get(p).copied().unwrap_or(*low).max(*low)).max(0))
        .sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn only_out_of_range_answers_are_gaps() {
        for code in [
            RDKafkaErrorCode::AutoOffsetReset,
            RDKafkaErrorCode::OffsetOutOfRange,
        ] {
            assert!(out_of_range(&KafkaError::MessageConsumption(code)));
        }
        assert!(!out_of_range(&KafkaError::MessageConsumption(
            RDKafkaErrorCode::BrokerTransportFailure
        )));
        assert!(!out_of_range(&KafkaError::PartitionEOF(0)));
    }

    #[test]
    fn consumers_never_reset_offsets_whatever_the_properties_say() {
        let mut config = SinkConfig::load(&crate::projection::tests::shipped_path()).unwrap();
        config.kafka.properties = walcast_config::KafkaProperties::from(
            [(AUTO_OFFSET_RESET.to_owned(), "earliest".to_owned())]
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
        );
        assert_eq!(
            client_config(&config, "g").get(AUTO_OFFSET_RESET),
            Some("error")
        );
        let e = config.validate().unwrap_err().to_string();
        assert!(
            e.contains(AUTO_OFFSET_RESET) && e.contains("rebuild"),
            "{e}"
        );
    }
}
