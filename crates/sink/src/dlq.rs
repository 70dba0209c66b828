//! The dead-letter topic: poison records, unchanged, with headers saying why and where from.
//!
//! Headers added to the original ones: `walcast.error` (`kind: detail`), `walcast.error.kind`,
//! `walcast.target`, `walcast.original.topic`, `walcast.original.partition`,
//! `walcast.original.offset`. Every target dead-letters its own copy (its mapping or database
//! may be what refused the event), told apart by `walcast.target`.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tracing::warn;

use crate::config::SinkConfig;
use crate::error::{Error, Result};
use crate::projection::Rejection;

/// A record and why it is poison.
#[derive(Debug)]
pub(crate) struct DeadLetter<'a> {
    pub(crate) record: &'a OwnedMessage,
    pub(crate) why: &'a Rejection,
}

/// A producer to the dead-letter topic, shared by the targets.
#[derive(Clone)]
pub(crate) struct Dlq {
    producer: FutureProducer,
    topic: String,
    target: String,
}

impl std::fmt::Debug for Dlq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dlq")
            .field("topic", &self.topic)
            .field("target", &self.target)
            .finish()
    }
}

impl Dlq {
    pub(crate) fn new(config: &SinkConfig) -> Result<Dlq> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &config.kafka.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000");
        for (k, v) in &config.kafka.properties {
            if is_producer_property(k) {
                c.set(k, v);
            }
        }
        Ok(Dlq {
            producer: c
                .create()
                .map_err(Error::kafka("creating the DLQ producer"))?,
            topic: config.dlq_topic(),
            target: String::new(),
        })
    }

    /// The same producer, labelling records with `target`.
    pub(crate) fn for_target(&self, target: &str) -> Dlq {
        Dlq {
            target: target.to_owned(),
            ..self.clone()
        }
    }

    /// Creates the dead-letter topic when missing (one partition per source partition).
    pub(crate) async fn ensure_topic(config: &SinkConfig, partitions: i32) -> Result<()> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &config.kafka.brokers);
        // The security settings (SASL, TLS) live here too.
        for (k, v) in &config.kafka.properties {
            if is_producer_property(k) {
                c.set(k, v);
            }
        }
        let admin: AdminClient<DefaultClientContext> = c
            .create()
            .map_err(Error::kafka("creating an admin client"))?;
        let topic = config.dlq_topic();
        let new = NewTopic::new(&topic, partitions.max(1), TopicReplication::Fixed(-1));
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(30)))
            .request_timeout(Some(Duration::from_secs(15)));
        let results = match admin.create_topics([&new], &opts).await {
            Ok(r) => r,
            Err(source) => {
                // The request only times out when the broker refuses TLS or the login: ask a
                // second connection why.
                let context =
                    walcast_telemetry::kafka::with_cause(&c, format!("creating topic {topic}"))
                        .await;
                return Err(Error::Kafka { context, source });
            }
        };
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => {
                    warn!(topic = %t, %code, "could not create the DLQ topic; create it by hand")
                }
            }
        }
        Ok(())
    }

    /// Produces every dead letter and waits until the broker acknowledged all of them.
    pub(crate) async fn send_all(&self, letters: &[DeadLetter<'_>]) -> Result<()> {
        let mut pending = Vec::with_capacity(letters.len());
        for l in letters {
            let mut headers = OwnedHeaders::new_with_capacity(8);
            if let Some(h) = l.record.headers() {
                for h in h.iter() {
                    headers = headers.insert(Header {
                        key: h.key,
                        value: h.value,
                    });
                }
            }
            let error = l.why.to_string();
            let partition = l.record.partition().to_string();
            let offset = l.record.offset().to_string();
            for (k, v) in [
                ("walcast.error", error.as_str()),
                ("walcast.error.kind", l.why.kind.as_str()),
                ("walcast.target", self.target.as_str()),
                ("walcast.original.topic", l.record.topic()),
                ("walcast.original.partition", partition.as_str()),
                ("walcast.original.offset", offset.as_str()),
            ] {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers);
            if let Some(k) = l.record.key() {
                record = record.key(k);
            }
            if let Some(p) = l.record.payload() {
                record = record.payload(p);
            }
            let delivery = self
                .producer
                .send_result(record)
                .map_err(|(e, _)| Error::Kafka {
                    context: format!("producing to {}", self.topic),
                    source: e,
                })?;
            pending.push(delivery);
        }
        for d in pending {
            match d.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    return Err(Error::Kafka {
                        context: format!("producing to {}", self.topic),
                        source: e,
                    });
                }
                Err(_) => {
                    return Err(Error::Kafka {
                        context: format!("producing to {}", self.topic),
                        source: rdkafka::error::KafkaError::Canceled,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Consumer-only settings must not reach the producer (librdkafka warns about them).
fn is_producer_property(key: &str) -> bool {
    !(key.starts_with("fetch.")
        || key.starts_with("auto.")
        || key.starts_with("enable.auto")
        || key.starts_with("queued.")
        || key.starts_with("session.")
        || key.starts_with("max.poll")
        || key.starts_with("group.")
        || key == "isolation.level")
}
