//! Topic management: create a topic if missing with the configured partitions and
//! replication factor; if it exists with other settings, say so and refuse to start (the
//! partition count decides which partition an aggregate's events go to, so it must not
//! change under a running system). The CLI's `walcast topic create` uses the same function.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::{info, warn};

use crate::error::{Error, Result};

/// What a topic should look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSpec {
    pub partitions: i32,
    pub replication_factor: i32,
}

/// What [`ensure_topic`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicState {
    /// The topic was created now.
    Created,
    /// The topic existed with the expected settings.
    Exists,
}

/// The layout of an existing topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicLayout {
    pub partitions: i32,
    /// Replicas of the first partition.
    pub replication_factor: i32,
}

/// Talks to the cluster about topics.
pub struct TopicAdmin {
    brokers: String,
    config: ClientConfig,
    admin: AdminClient<DefaultClientContext>,
}

impl std::fmt::Debug for TopicAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicAdmin")
            .field("brokers", &self.brokers)
            .finish()
    }
}

impl TopicAdmin {
    /// An admin client for `brokers` with extra librdkafka `properties` (security settings).
    pub fn new(brokers: &str, properties: &BTreeMap<String, String>) -> Result<TopicAdmin> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", brokers);
        for (k, v) in properties {
            config.set(k, v);
        }
        let admin = config
            .create()
            .map_err(Error::kafka("creating an admin client"))?;
        Ok(TopicAdmin {
            brokers: brokers.to_owned(),
            config,
            admin,
        })
    }

    /// Creates `topic` if it does not exist. With `strict`, an existing topic with another
    /// partition count or replication factor is an [`Error::Topic`] naming both and the fix;
    /// without, it is accepted as it is (dead-letter topics).
    pub async fn ensure_topic(
        &self,
        topic: &str,
        spec: TopicSpec,
        strict: bool,
    ) -> Result<TopicState> {
        let new = NewTopic::new(
            topic,
            spec.partitions,
            TopicReplication::Fixed(spec.replication_factor),
        );
        let results = match self.admin.create_topics([&new], &admin_options()).await {
            Ok(r) => r,
            Err(e) => {
                let context = format!(
                    "creating topic {topic} on {} (is the broker running?)",
                    self.brokers
                );
                return Err(self.explained(context, e).await);
            }
        };
        for r in results {
            match r {
                Ok(_) => {
                    info!(
                        topic,
                        partitions = spec.partitions,
                        replication_factor = spec.replication_factor,
                        "topic created"
                    );
                    return Ok(TopicState::Created);
                }
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, RDKafkaErrorCode::InvalidReplicationFactor)) => {
                    return Err(Error::Topic {
                        topic: topic.to_owned(),
                        problem: format!(
                            "cannot be created with replication factor {}: the cluster has fewer brokers; set [kafka] replication_factor to at most the number of brokers",
                            spec.replication_factor
                        ),
                    });
                }
                Err((_, code)) if refusal(code) => {
                    let why = if code == RDKafkaErrorCode::InvalidTopic {
                        " (an invalid name, or one that collides with an existing topic: Kafka treats '.' and '_' alike)"
                    } else {
                        ""
                    };
                    return Err(Error::Topic {
                        topic: topic.to_owned(),
                        problem: format!(
                            "cannot be created: {code}{why}; create it by hand (walcast topic create)"
                        ),
                    });
                }
                // A busy or moving controller (timeouts, elections): retried with backoff.
                Err((_, code)) => {
                    return Err(Error::Kafka {
                        context: format!("creating topic {topic} on {}", self.brokers),
                        source: KafkaError::AdminOp(code),
                    });
                }
            }
        }
        // Someone else created it (another connector, a moment ago): the brokers may not
        // know it yet, so its absence from the metadata counts only after a while.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.find(topic).await?.is_none() {
            if tokio::time::Instant::now() >= deadline {
                // Deleted again, or the brokers lag far behind: worth another try later.
                return Err(Error::Kafka {
                    context: format!(
                        "topic {topic} already exists but the metadata of {} has lacked it for 30 s",
                        self.brokers
                    ),
                    source: KafkaError::AdminOp(RDKafkaErrorCode::UnknownTopicOrPartition),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.check(topic, spec, strict).await?;
        Ok(TopicState::Exists)
    }

    /// Fails unless `topic` exists (and, with `strict`, has the partitions and replication
    /// factor of `spec`); the error names both and the fix.
    pub async fn check(&self, topic: &str, spec: TopicSpec, strict: bool) -> Result<TopicLayout> {
        let layout = self.layout(topic).await?;
        if strict && layout.partitions != spec.partitions {
            return Err(Error::Topic {
                topic: topic.to_owned(),
                problem: format!(
                    "exists with {} partitions, not {}; which partition an aggregate's events go to depends on the partition count, so walcast will not change it: set [kafka] partitions = {} or recreate the topic",
                    layout.partitions, spec.partitions, layout.partitions
                ),
            });
        }
        if strict && layout.replication_factor != spec.replication_factor {
            return Err(Error::Topic {
                topic: topic.to_owned(),
                problem: format!(
                    "exists with replication factor {}, not {}: set [kafka] replication_factor = {} or reassign the topic's replicas",
                    layout.replication_factor, spec.replication_factor, layout.replication_factor
                ),
            });
        }
        Ok(layout)
    }

    /// A Kafka error with the broker-side cause (refused TLS or SASL login, unreachable) when
    /// a second connection finds one: the operation itself only says it timed out.
    async fn explained(&self, context: String, source: KafkaError) -> Error {
        let context = walcast_telemetry::kafka::with_cause(&self.config, context).await;
        Error::Kafka { context, source }
    }

    /// Partitions and replication factor of an existing topic.
    pub async fn layout(&self, topic: &str) -> Result<TopicLayout> {
        self.find(topic).await?.ok_or_else(|| Error::Topic {
            topic: topic.to_owned(),
            problem: "does not exist; create it (walcast topic create) or set [kafka] create_topics = true".into(),
        })
    }

    /// The topic's `max.message.bytes` (the largest record batch the broker accepts for it).
    pub async fn max_message_bytes(&self, topic: &str) -> Result<usize> {
        let resource = ResourceSpecifier::Topic(topic);
        let context = || format!("reading the configuration of topic {topic}");
        let results = self
            .admin
            .describe_configs([&resource], &admin_options())
            .await
            .map_err(Error::kafka(context()))?;
        let config = match results.into_iter().next() {
            Some(Ok(config)) => config,
            // Not allowed to read topic configs (ACLs), or a broker without the request: the
            // limit stays unknown and the configured max_message_bytes alone applies, as before.
            Some(Err(code)) if refusal(code) => {
                warn!(topic, error = %code, "cannot read the topic's max.message.bytes; keep [kafka] max_message_bytes at or below it");
                return Ok(usize::MAX);
            }
            Some(Err(code)) => return Err(Error::kafka(context())(KafkaError::AdminOp(code))),
            None => {
                let code = RDKafkaErrorCode::UnknownTopicOrPartition;
                return Err(Error::kafka(context())(KafkaError::AdminOp(code)));
            }
        };
        Ok(config
            .get("max.message.bytes")
            .and_then(|e| e.value.as_deref())
            .and_then(|v| v.parse().ok())
            .unwrap_or(usize::MAX))
    }

    /// Every topic name in the cluster's metadata.
    pub async fn topic_names(&self) -> Result<Vec<String>> {
        let config = self.config.clone();
        tokio::task::spawn_blocking(move || -> Result<Vec<String>> {
            let consumer: BaseConsumer = config
                .create()
                .map_err(Error::kafka("creating a metadata client"))?;
            let md = consumer
                .fetch_metadata(None, Duration::from_secs(10))
                .map_err(Error::kafka("listing topics"))?;
            Ok(md.topics().iter().map(|t| t.name().to_owned()).collect())
        })
        .await
        .map_err(|e| Error::Kafka {
            context: format!("listing topics: {e}"),
            source: KafkaError::AdminOp(RDKafkaErrorCode::Fail),
        })?
    }

    /// Partitions and replication factor of `topic`, `None` when the metadata lacks it.
    async fn find(&self, topic: &str) -> Result<Option<TopicLayout>> {
        let config = self.config.clone();
        let name = topic.to_owned();
        let found = tokio::task::spawn_blocking(move || -> Result<Option<TopicLayout>> {
            let consumer: BaseConsumer = config
                .create()
                .map_err(Error::kafka("creating a metadata client"))?;
            let md = consumer
                .fetch_metadata(Some(&name), Duration::from_secs(10))
                .map_err(Error::kafka(format!("reading metadata of topic {name}")))?;
            Ok(md.topics().first().and_then(|t| {
                let partitions = t.partitions();
                (!partitions.is_empty()).then(|| TopicLayout {
                    partitions: partitions.len() as i32,
                    replication_factor: partitions[0].replicas().len() as i32,
                })
            }))
        })
        .await
        .map_err(|e| Error::Topic {
            topic: topic.to_owned(),
            problem: format!("metadata lookup failed: {e}"),
        })?;
        match found {
            Err(Error::Kafka { context, source }) => Err(self.explained(context, source).await),
            other => other,
        }
    }
}

/// Timeouts of one admin request: well under the replication connection's keepalive budget
/// (`wal_sender_timeout` / 2 = 30 s by default).
fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)))
}

/// Whether the broker refused to create a topic for good (bad name, settings or rights), as
/// opposed to a transient failure such as a timeout or a controller election.
fn refusal(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::InvalidPartitions
            | RDKafkaErrorCode::InvalidRequest
            | RDKafkaErrorCode::InvalidConfig
            | RDKafkaErrorCode::PolicyViolation
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::UnsupportedVersion
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_definitive_refusals_stop_the_source() {
        for code in [
            RDKafkaErrorCode::InvalidTopic,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::PolicyViolation,
        ] {
            assert!(refusal(code), "{code}");
        }
        for code in [
            RDKafkaErrorCode::RequestTimedOut,
            RDKafkaErrorCode::NotController,
            RDKafkaErrorCode::BrokerNotAvailable,
        ] {
            assert!(!refusal(code), "{code}");
            let e = Error::Kafka {
                context: "creating topic t".into(),
                source: KafkaError::AdminOp(code),
            };
            assert!(e.is_retryable(), "{code}");
        }
    }
}
