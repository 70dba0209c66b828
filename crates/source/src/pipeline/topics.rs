//! Topics as the pipeline meets them: the first record for a topic creates or checks it and
//! reads its `max.message.bytes`; a template topic that may not be used (refused by the
//! broker, beyond `max_topics`) turns its rows into dead letters instead of stopping the
//! source. The broker is asked with status updates flowing ([`with_keepalive`]), so topic
//! creation never holds the replication connection past its keepalive budget.

use std::future::Future;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::info;
use walcast_kafka::TopicSpec;
use walcast_pgoutput::Lsn;
use walcast_replication::ChangeStream;

use super::{Output, Pipeline};
use crate::error::{Error, Result};
use crate::kafka::{Producer, capped_client_config};
use crate::outbox::Letter;
use crate::record::{Record, RecordKind};

/// The longest one topic may take to be listed, created or checked. Status updates keep
/// flowing meanwhile; past it the source starts over (retryable), as on any broker timeout.
const TOPIC_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a refused template topic refuses its rows without asking the broker again.
const REFUSAL_RECHECK: Duration = Duration::from_secs(60);
/// Refused topics remembered at most (the memory is cleared when full).
const MAX_REFUSALS: usize = 1024;

impl Pipeline {
    /// Makes the producer for topics whose `max.message.bytes` is `limit`, if the default
    /// one's batches could be larger than that.
    pub(super) fn ensure_producer(&mut self, limit: usize) -> Result<()> {
        if limit >= self.config.kafka.max_message_bytes {
            return Ok(());
        }
        let class = batch_class(limit);
        if self.capped.contains_key(&class) {
            return Ok(());
        }
        let config = capped_client_config(&self.config.kafka, class);
        let producer = Producer::with(config, self.metrics.clone(), self.acks_tx.clone())?;
        info!(
            max_message_bytes = limit,
            batch_bytes = class,
            "a producer with smaller batches for topics with a lower max.message.bytes"
        );
        self.capped.insert(class, producer);
        Ok(())
    }

    /// The producer made by [`Pipeline::ensure_producer`] for `limit`; `None`: the default.
    pub(super) fn capped_producer(&self, limit: usize) -> Option<&Producer> {
        if limit >= self.config.kafka.max_message_bytes {
            return None;
        }
        self.capped.get(&batch_class(limit))
    }

    /// The `max.message.bytes` of the record's topic, creating or checking the topic the
    /// first time; for a template topic that may not be used, the dead letter's letter.
    /// Status updates keep flowing while the broker is asked (see [`with_keepalive`]).
    pub(super) async fn topic_limit(
        &mut self,
        record: &Record,
    ) -> Result<std::result::Result<usize, Letter>> {
        if let Some(&limit) = self.known_topics.get(&record.topic) {
            return Ok(Ok(limit));
        }
        let Output::Kafka { admin, .. } = &self.output else {
            return Ok(Ok(usize::MAX));
        };
        let topic = &*record.topic;
        let kafka = &self.config.kafka;
        let spec = TopicSpec {
            partitions: kafka.partitions,
            replication_factor: kafka.replication_factor,
        };
        let at = self.ledger.confirmable();
        // Only template topics are met here: the fixed topic and the DLQ are checked at start.
        let template = match &self.template {
            Some(t) if record.kind == RecordKind::Event => t,
            _ => {
                let check = async {
                    if kafka.create_topics {
                        admin.ensure_topic(topic, spec, false).await?;
                    }
                    Ok(admin.max_message_bytes(topic).await?)
                };
                let limit = with_keepalive(&mut self.changes, at, topic, check).await?;
                self.known_topics.insert(record.topic.clone(), limit);
                return Ok(Ok(limit));
            }
        };
        if let Some((kind, error, at)) = self.refused_topics.get(&record.topic)
            && at.elapsed() < REFUSAL_RECHECK
        {
            return Ok(Err(refused(record, kind, error.clone())));
        }
        if self.cluster_topics.is_none() {
            let list = async { Ok(admin.topic_names().await?) };
            let names = with_keepalive(&mut self.changes, at, topic, list).await?;
            self.cluster_topics = Some(names.into_iter().collect());
        }
        let cluster = self.cluster_topics.get_or_insert_default();
        let exists = cluster.contains(topic);
        let refusal = if let Some(other) = cluster.iter().find(|t| colliding(t, topic)) {
            Some((
                "topic_refused",
                format!(
                    "topic {topic} cannot be created: it collides with the existing topic {other} (Kafka treats '.' and '_' in topic names alike); rename the event type, or route it elsewhere"
                ),
            ))
        } else if !exists {
            let dlq = self.router.dead_letters().topic();
            let used = cluster
                .iter()
                .filter(|t| template.matches(t) && !t.starts_with("__") && *t != &**dlq)
                .count();
            (used >= kafka.max_topics).then(|| {
                (
                    "too_many_topics",
                    format!(
                        "topic {topic} would be one more than [kafka] max_topics = {} topics matching {}; raise max_topics, or fix the writer of this event type",
                        kafka.max_topics, kafka.topic
                    ),
                )
            })
        } else {
            None
        };
        let checked = match refusal {
            Some(r) => Err(r),
            None => {
                let check = async {
                    if kafka.create_topics {
                        admin.ensure_topic(topic, spec, true).await?;
                    } else {
                        admin.check(topic, spec, true).await?;
                    }
                    Ok(admin.max_message_bytes(topic).await?)
                };
                match with_keepalive(&mut self.changes, at, topic, check).await {
                    Ok(limit) => Ok(limit),
                    // A definitive refusal (name, policy, rights, layout, missing): the DLQ.
                    Err(Error::Kafka(walcast_kafka::Error::Topic { topic, problem })) => {
                        Err(("topic_refused", format!("topic {topic} {problem}")))
                    }
                    // Transient (timeouts, an election): start over, as before.
                    Err(e) => return Err(e),
                }
            }
        };
        match checked {
            Ok(limit) => {
                cluster.insert(topic.to_owned());
                self.refused_topics.remove(&record.topic);
                self.known_topics.insert(record.topic.clone(), limit);
                Ok(Ok(limit))
            }
            Err((kind, error)) => {
                if self.refused_topics.len() >= MAX_REFUSALS {
                    self.refused_topics.clear();
                }
                self.refused_topics
                    .insert(record.topic.clone(), (kind, error.clone(), Instant::now()));
                Ok(Err(refused(record, kind, error)))
            }
        }
    }
}

/// Runs `work` (a topic operation) while sending status updates for `at` every second, so the
/// replication connection's keepalive budget is kept; gives up after [`TOPIC_TIMEOUT`] with a
/// retryable error.
async fn with_keepalive<T>(
    changes: &mut ChangeStream,
    at: Lsn,
    topic: &str,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let deadline = tokio::time::sleep(TOPIC_TIMEOUT);
    tokio::pin!(work, deadline);
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    loop {
        tokio::select! {
            result = &mut work => return result,
            () = &mut deadline => {
                let context = format!(
                    "preparing topic {topic} took longer than {} s",
                    TOPIC_TIMEOUT.as_secs()
                );
                return Err(Error::kafka(context)(KafkaError::AdminOp(
                    RDKafkaErrorCode::OperationTimedOut,
                )));
            }
            _ = tick.tick() => changes.confirm(at).await?,
        }
    }
}

/// Topics are grouped by the largest power of two not above their `max.message.bytes`: one
/// producer per group (batches below the group's bound), so a cluster of topics with many
/// different limits costs a handful of producers, not one each.
fn batch_class(limit: usize) -> usize {
    if limit == 0 {
        return 0;
    }
    1 << (usize::BITS - 1 - limit.leading_zeros())
}

/// Whether two different topic names are the same to Kafka, which maps '.' to '_' in metric
/// names and refuses a topic that collides with an existing one that way.
fn colliding(a: &str, b: &str) -> bool {
    a != b
        && a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .all(|(x, y)| x == y || matches!((x, y), (b'.', b'_') | (b'_', b'.')))
}

/// The letter of an event whose topic may not be used.
fn refused(record: &Record, kind: &'static str, error: String) -> Letter {
    Letter {
        kind,
        error,
        headers: record.headers.clone(),
        key: record.key.clone(),
        value: record.value.clone(),
        original_topic: Some(record.topic.clone()),
        lsn: record.lsn,
        timestamp_ms: record.timestamp_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_group_by_power_of_two() {
        assert_eq!(batch_class(100_000), 65_536);
        assert_eq!(batch_class(65_536), 65_536);
        assert_eq!(batch_class(1_048_588), 1_048_576);
    }

    #[test]
    fn dots_and_underscores_collide() {
        assert!(colliding("ev.A.B", "ev.A_B"));
        assert!(colliding("ev_A_B", "ev.A.B"));
        assert!(!colliding("ev.A.B", "ev.A.B"), "the same topic");
        assert!(!colliding("ev.A.B", "ev.A-B"));
        assert!(!colliding("ev.A.B", "ev.A.BC"));
    }
}
