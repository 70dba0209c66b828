//! The Kafka producer: idempotent, `acks=all`, the Java client's partitioner, no delivery
//! timeout. Acknowledgements come back on a channel the pipeline reads, tagged with the
//! transaction they belong to.
//!
//! Settings walcast fixes (and [`crate::config::PROTECTED_PROPERTIES`] keeps operators from
//! changing), and why:
//!
//! * `enable.idempotence=true`: a retried batch is written once and in order, so per
//!   partition (per aggregate) the log is in commit order even across broker failovers;
//! * `acks=all`: an acknowledgement means the in-sync replicas have the record, which is
//!   what the confirm rule relies on;
//! * `partitioner=murmur2_random`: the Java client's default, so a Java, Go or Python
//!   producer of the same key picks the same partition;
//! * `message.timeout.ms=0`: a record is retried until it is acknowledged. Giving up would
//!   force a choice between losing it and re-sending it out of order.
//!
//! While the broker is unreachable librdkafka retries with backoff (`retry.backoff.ms` up to
//! `retry.backoff.max.ms`, `reconnect.backoff.max.ms`); the pipeline stops reading at its
//! in-flight bounds and the slot lag grows until the broker is back.

use std::sync::Arc;

use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, ProducerContext, ThreadedProducer};
use tokio::sync::mpsc;
use tracing::{debug, warn};
use walcast_pgoutput::Lsn;

use crate::config::KafkaConfig;
use crate::dead_letter::Letter;
use crate::error::{Error, Result};
use crate::metrics::SourceMetrics;
use crate::progress::TxnId;
use crate::record::{HeaderName, Record, RecordKind};

/// What the pipeline needs to know about a record when its acknowledgement arrives.
#[derive(Debug)]
pub(crate) struct Meta {
    pub txn: TxnId,
    pub kind: RecordKind,
    pub bytes: usize,
    pub commit_ms: i64,
    pub lsn: Lsn,
}

/// The outcome of one record.
#[derive(Debug)]
pub(crate) struct Ack {
    pub meta: Box<Meta>,
    pub result: std::result::Result<(), Refused>,
}

/// A record the broker (or librdkafka) refused, with what is needed to dead-letter it.
#[derive(Debug)]
pub(crate) struct Refused {
    pub error: KafkaError,
    pub topic: String,
    pub key: Option<Bytes>,
    pub headers: Vec<(HeaderName, Bytes)>,
}

impl Refused {
    /// Whether the record was refused for its size: an event refused so becomes a
    /// `payload_too_large` dead letter; any other refusal is final.
    pub(crate) fn too_large(&self) -> bool {
        matches!(
            self.error,
            KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize
            )
        )
    }

    /// The dead letter of an event refused for its size (`meta`: the event's).
    pub(crate) fn into_letter(self, meta: &Meta) -> Letter {
        Letter {
            kind: "payload_too_large",
            error: format!(
                "the broker refused the record: {}; the payload is left out here, read it from the outbox row by its id (or raise the topic's max.message.bytes)",
                self.error
            ),
            headers: self.headers,
            key: self.key,
            value: None,
            original_topic: Some(Arc::from(self.topic.as_str())),
            lsn: meta.lsn,
            timestamp_ms: meta.commit_ms,
        }
    }
}

struct Context {
    acks: mpsc::UnboundedSender<Ack>,
    metrics: SourceMetrics,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => warn!(target: "librdkafka", facility = fac, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
                debug!(target: "librdkafka", facility = fac, "{message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics.kafka_errors.inc();
        warn!(error = %error, reason, "kafka client error; deliveries are retried");
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = Box<Meta>;

    fn delivery(&self, result: &DeliveryResult<'_>, meta: Box<Meta>) {
        let result = match result {
            Ok(_) => Ok(()),
            Err((error, msg)) => Err(Refused {
                error: error.clone(),
                topic: msg.topic().to_owned(),
                key: msg.key().map(Bytes::copy_from_slice),
                headers: msg
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                (
                                    HeaderName::from(h.key),
                                    Bytes::copy_from_slice(h.value.unwrap_or_default()),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
        };
        // The receiver is gone only when the pipeline stopped; nothing waits for this then.
        let _ = self.acks.send(Ack { meta, result });
    }
}

/// The source's producer. Dropping it abandons unacknowledged records (they are produced
/// again after the restart that follows, from the confirmed LSN).
pub(crate) struct Producer {
    inner: ThreadedProducer<Context>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}

/// The librdkafka settings of the source's producer: walcast's defaults, the operator's
/// `[kafka.properties]` (with the connection's TLS and SASL settings), then the protected
/// settings.
pub(crate) fn client_config(config: &KafkaConfig) -> ClientConfig {
    let queue_messages = (config.max_in_flight * 2).max(100_000).to_string();
    let queue_kbytes = (config.max_in_flight_bytes / 1024 * 2)
        .max(64 * 1024)
        .to_string();
    let mut c = config.client().config(&[
        ("linger.ms", "5"),
        ("retry.backoff.ms", "100"),
        ("retry.backoff.max.ms", "1000"),
        ("reconnect.backoff.ms", "100"),
        ("reconnect.backoff.max.ms", "1000"),
        ("queue.buffering.max.messages", &queue_messages),
        ("queue.buffering.max.kbytes", &queue_kbytes),
    ]);
    c.set("bootstrap.servers", &config.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", "0")
        .set("message.max.bytes", config.max_message_bytes.to_string());
    c
}

/// Like [`client_config`], with record batches (`batch.size`) below `bound` bytes: for topics
/// whose `max.message.bytes` is at least `bound` but below `[kafka] max_message_bytes`, which
/// the broker checks against whole batches (a larger batch is refused with the small records
/// in it). A single record is checked against its topic's limit before it is sent.
pub(crate) fn capped_client_config(config: &KafkaConfig, bound: usize) -> ClientConfig {
    let mut c = client_config(config);
    let cap = bound.saturating_sub(crate::outbox::FRAMING_BYTES).max(1);
    let batch = config
        .properties
        .get("batch.size")
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(cap, |b| b.min(cap));
    c.set("batch.size", batch.to_string());
    c
}

/// The record's headers as librdkafka takes them.
pub(crate) fn headers(record: &Record) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
    for (k, v) in &record.headers {
        headers = headers.insert(Header {
            key: k,
            value: Some(&v[..]),
        });
    }
    headers
}

impl Producer {
    /// A producer whose acknowledgements go to `acks`.
    pub(crate) fn new(
        config: &KafkaConfig,
        metrics: SourceMetrics,
        acks: mpsc::UnboundedSender<Ack>,
    ) -> Result<Producer> {
        Producer::with(client_config(config), metrics, acks)
    }

    /// A producer with these librdkafka settings (see [`capped_client_config`]).
    pub(crate) fn with(
        config: ClientConfig,
        metrics: SourceMetrics,
        acks: mpsc::UnboundedSender<Ack>,
    ) -> Result<Producer> {
        let inner = config
            .create_with_context(Context { acks, metrics })
            .map_err(Error::kafka("creating the producer"))?;
        Ok(Producer { inner })
    }

    /// Hands `record` to librdkafka (which copies it). On error the meta comes back with it:
    /// `QueueFull` means wait for acknowledgements and try again; anything else is final
    /// for this record.
    pub(crate) fn send(
        &self,
        record: &Record,
        meta: Box<Meta>,
    ) -> std::result::Result<(), (KafkaError, Box<Meta>)> {
        let mut r: BaseRecord<'_, [u8], [u8], Box<Meta>> =
            BaseRecord::with_opaque_to(&record.topic, meta)
                .headers(headers(record))
                .timestamp(record.timestamp_ms);
        if let Some(k) = &record.key {
            r = r.key(&k[..]);
        }
        if let Some(v) = &record.value {
            r = r.payload(&v[..]);
        }
        self.inner.send(r).map_err(|(e, r)| (e, r.delivery_opaque))
    }
}
