//! The error of a broker operation, and whether retrying it may help. The connectors carry it
//! inside their own error types.

use rdkafka::error::KafkaError;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A client operation failed (broker unreachable, metadata, topic creation); `context`
    /// carries the broker-side cause when [`crate::diagnose`] found one.
    #[error("kafka: {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: KafkaError,
    },

    /// A topic is missing, refused, or exists with settings other than the expected ones; the
    /// problem names the fix.
    #[error("topic {topic} {problem}")]
    Topic { topic: String, problem: String },
}

impl Error {
    /// Whether the same operation may succeed later without anybody changing anything: a
    /// broker that is down, slow or electing a controller. Invalid client settings and a topic
    /// that cannot be used need an operator.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Kafka { source, .. } => !matches!(source, KafkaError::ClientCreation(_)),
            Error::Topic { .. } => false,
        }
    }

    pub(crate) fn topic(topic: &str, problem: impl Into<String>) -> Error {
        Error::Topic {
            topic: topic.to_owned(),
            problem: problem.into(),
        }
    }

    pub(crate) fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> Error {
        let context = context.into();
        move |source| Error::Kafka { context, source }
    }
}
