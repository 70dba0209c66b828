//! Topic admin: create a topic if missing with the expected partitions and replication
//! factor; if it exists with other settings, say so and refuse (the partition count decides
//! which partition an aggregate's events go to, so it must not change under a running system).
//! The source checks its topics with it at start and as template topics appear, the sink
//! creates its dead-letter topic, and `walcast topic create` runs the source's check.
//!
//! Every request is bounded (10 s by default, [`TopicAdmin::with_timeouts`]), well under the
//! replication connection's keepalive budget, so a source can wait for one while it keeps
//! sending status updates. A request that only times out gets the broker-side cause (refused
//! TLS or SASL login) from [`crate::diagnose`].

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::settings::ClientSettings;

/// The replication factor that asks for the broker's `default.replication.factor`.
pub const BROKER_DEFAULT_REPLICATION: i32 = -1;

/// How long one admin request may take by default: well under the replication connection's
/// keepalive budget (`wal_sender_timeout` / 2 = 30 s by default).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What a topic should look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSpec {
    pub partitions: i32,
    /// [`BROKER_DEFAULT_REPLICATION`] leaves it to the broker.
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
    operation_timeout: Duration,
    request_timeout: Duration,
}

impl std::fmt::Debug for TopicAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicAdmin")
            .field("brokers", &self.brokers)
            .finish()
    }
}

impl TopicAdmin {
    /// An admin client with these settings (librdkafka's admin client is a producer, so it
    /// gets the producer's share of the properties, the security settings among them).
    pub fn new(settings: ClientSettings<'_>) -> Result<TopicAdmin> {
        let config = settings.producer_config(&[]);
        let admin = config
            .create()
            .map_err(Error::kafka("creating an admin client"))?;
        Ok(TopicAdmin {
            brokers: settings.brokers().to_owned(),
            config,
            admin,
            operation_timeout: ADMIN_TIMEOUT,
            request_timeout: ADMIN_TIMEOUT,
        })
    }

    /// The same admin with other bounds: how long the broker may take to carry out a request
    /// (`operation`) and how long the client waits for its answer (`request`).
    pub fn with_timeouts(self, operation: Duration, request: Duration) -> TopicAdmin {
        TopicAdmin {
            operation_timeout: operation,
            request_timeout: request,
            ..self
        }
    }

    /// Asks the broker to create `topic`: `Ok(Ok(()))` when it was created now, `Ok(Err(code))`
    /// with the broker's refusal (`TopicAlreadyExists` included), `Err` when the request
    /// itself failed (with the broker-side cause, when a second connection finds one).
    pub async fn create(
        &self,
        topic: &str,
        spec: TopicSpec,
    ) -> Result<std::result::Result<(), RDKafkaErrorCode>> {
        self.create_configured(topic, spec, &[]).await
    }

    /// [`create`](Self::create) with topic settings (`cleanup.policy`, ...).
    pub async fn create_configured(
        &self,
        topic: &str,
        spec: TopicSpec,
        settings: &[(&str, &str)],
    ) -> Result<std::result::Result<(), RDKafkaErrorCode>> {
        let mut new = NewTopic::new(
            topic,
            spec.partitions,
            TopicReplication::Fixed(spec.replication_factor),
        );
        for (key, value) in settings {
            new = new.set(key, value);
        }
        match self.admin.create_topics([&new], &self.options()).await {
            // No answer for the topic counts as "exists": the metadata then tells.
            Ok(results) => Ok(results
                .into_iter()
                .next()
                .map_or(Err(RDKafkaErrorCode::TopicAlreadyExists), |r| {
                    r.map(drop).map_err(|(_, code)| code)
                })),
            Err(e) => {
                let context = format!(
                    "creating topic {topic} on {} (is the broker running?)",
                    self.brokers
                );
                Err(self.explained(context, e).await)
            }
        }
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
        match self.create(topic, spec).await? {
            Ok(()) => {
                info!(
                    topic,
                    partitions = spec.partitions,
                    replication_factor = spec.replication_factor,
                    "topic created"
                );
                return Ok(TopicState::Created);
            }
            Err(RDKafkaErrorCode::TopicAlreadyExists) => {}
            Err(RDKafkaErrorCode::InvalidReplicationFactor) => {
                return Err(Error::topic(
                    topic,
                    format!(
                        "cannot be created with replication factor {}: the cluster has fewer brokers; set [kafka] replication_factor to at most the number of brokers",
                        spec.replication_factor
                    ),
                ));
            }
            Err(code) if refusal(code) => {
                let why = if code == RDKafkaErrorCode::InvalidTopic {
                    " (an invalid name, or one that collides with an existing topic: Kafka treats '.' and '_' alike)"
                } else {
                    ""
                };
                return Err(Error::topic(
                    topic,
                    format!(
                        "cannot be created: {code}{why}; create it by hand (walcast topic create)"
                    ),
                ));
            }
            // A busy or moving controller (timeouts, elections): retried with backoff.
            Err(code) => {
                return Err(Error::Kafka {
                    context: format!("creating topic {topic} on {}", self.brokers),
                    source: KafkaError::AdminOp(code),
                });
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
        let problem = if !strict {
            None
        } else if layout.partitions != spec.partitions {
            Some(format!(
                "exists with {} partitions, not {}; which partition an aggregate's events go to depends on the partition count, so walcast will not change it: set [kafka] partitions = {} or recreate the topic",
                layout.partitions, spec.partitions, layout.partitions
            ))
        } else if layout.replication_factor != spec.replication_factor {
            Some(format!(
                "exists with replication factor {}, not {}: set [kafka] replication_factor = {} or reassign the topic's replicas",
                layout.replication_factor, spec.replication_factor, layout.replication_factor
            ))
        } else {
            None
        };
        match problem {
            Some(problem) => Err(Error::topic(topic, problem)),
            None => Ok(layout),
        }
    }

    /// A Kafka error with the broker-side cause (refused TLS or SASL login, unreachable) when
    /// a second connection finds one: the operation itself only says it timed out.
    async fn explained(&self, context: String, source: KafkaError) -> Error {
        let context = crate::diagnose::with_cause(&self.config, context).await;
        Error::Kafka { context, source }
    }

    /// Partitions and replication factor of an existing topic.
    pub async fn layout(&self, topic: &str) -> Result<TopicLayout> {
        self.find(topic).await?.ok_or_else(|| {
            Error::topic(
                topic,
                "does not exist; create it (walcast topic create) or set [kafka] create_topics = true",
            )
        })
    }

    /// The topic's `max.message.bytes` (the largest record batch the broker accepts for it).
    pub async fn max_message_bytes(&self, topic: &str) -> Result<usize> {
        let resource = ResourceSpecifier::Topic(topic);
        let context = || format!("reading the configuration of topic {topic}");
        let results = self
            .admin
            .describe_configs([&resource], &self.options())
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
                .fetch_metadata(None, ADMIN_TIMEOUT)
                .map_err(Error::kafka("listing topics"))?;
            Ok(md.topics().iter().map(|t| t.name().to_owned()).collect())
        })
        .await
        .map_err(|e| Error::Kafka {
            context: format!("listing topics: {e}"),
            source: KafkaError::AdminOp(RDKafkaErrorCode::Fail),
        })?
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new()
            .operation_timeout(Some(self.operation_timeout))
            .request_timeout(Some(self.request_timeout))
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
                .fetch_metadata(Some(&name), ADMIN_TIMEOUT)
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
        .map_err(|e| Error::topic(topic, format!("metadata lookup failed: {e}")))?;
        match found {
            Err(Error::Kafka { context, source }) => Err(self.explained(context, source).await),
            other => other,
        }
    }
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
    fn only_definitive_refusals_are_refusals() {
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
        }
    }
}
