//! How walcast talks to a Kafka-API broker. Source, sink and the `walcast` CLI all reach the
//! broker through this crate:
//!
//! * [`settings`]: how `[kafka] brokers` and `[kafka.properties]` (TLS, SASL and any other
//!   librdkafka setting) become a client configuration; each connector adds its own producer
//!   or consumer tuning on top;
//! * [`topic`]: creating and checking topics (partitions, replication factor,
//!   `max.message.bytes`), for the source's topics, the sink's dead-letter topic and
//!   `walcast topic create`;
//! * [`snapshots`]: the snapshot progress topic (what the source's snapshots have done;
//!   read by sinks and `walcast snapshot status`);
//! * [`diagnose`]: why a client gets nowhere (a refused TLS handshake or SASL login, an
//!   unreachable broker), with the setting to fix.
//!
//! ```
//! use std::collections::BTreeMap;
//!
//! use walcast_config::KafkaProperties;
//! use walcast_kafka::ClientSettings;
//!
//! let properties = KafkaProperties::from(BTreeMap::from([
//!     ("security.protocol".to_owned(), "sasl_ssl".to_owned()),
//!     ("linger.ms".to_owned(), "20".to_owned()),
//! ]));
//! let settings = ClientSettings::new("broker-1:9093", &properties);
//! // A connector's own defaults come first; the operator's properties override them.
//! let config = settings.config(&[("linger.ms", "5"), ("acks", "all")]);
//! assert_eq!(config.get("bootstrap.servers"), Some("broker-1:9093"));
//! assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
//! assert_eq!(config.get("linger.ms"), Some("20"));
//! assert_eq!(config.get("acks"), Some("all"));
//! ```

pub mod diagnose;
mod error;
pub mod settings;
pub mod snapshots;
pub mod topic;

pub use error::{Error, Result};
pub use settings::ClientSettings;
pub use topic::{TopicAdmin, TopicLayout, TopicSpec, TopicState};
