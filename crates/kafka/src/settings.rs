//! Client settings: `[kafka] brokers` and `[kafka.properties]` as a librdkafka configuration.
//!
//! Source and sink spell the connection the same way: `brokers` becomes `bootstrap.servers`,
//! and every `[kafka.properties]` entry goes to librdkafka as it is: the TLS settings
//! (`security.protocol = "ssl"`, `ssl.ca.location`, ...), the SASL login (`sasl.mechanism`,
//! `sasl.username`, `sasl.password`) and any tuning. A connector passes its own defaults
//! (producer or consumer tuning), which the operator's properties override; settings a
//! delivery rule depends on the connector sets afterwards (and its validation refuses them in
//! the file).

use rdkafka::ClientConfig;
use walcast_config::KafkaProperties;

/// How to reach the broker: the brokers and the operator's librdkafka properties. `Debug`
/// never shows a credential (see [`KafkaProperties`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientSettings<'a> {
    brokers: &'a str,
    properties: &'a KafkaProperties,
}

impl<'a> ClientSettings<'a> {
    /// `brokers` (`bootstrap.servers`) with `properties` (`[kafka.properties]`).
    pub fn new(brokers: &'a str, properties: &'a KafkaProperties) -> ClientSettings<'a> {
        ClientSettings {
            brokers,
            properties,
        }
    }

    /// `bootstrap.servers`, for messages.
    pub fn brokers(&self) -> &'a str {
        self.brokers
    }

    /// The settings of a client: `bootstrap.servers`, then `defaults`, then every property
    /// (which overrides both).
    pub fn config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        self.layered(defaults, |_| true)
    }

    /// Like [`config`](Self::config), for clients that are producers inside librdkafka
    /// (producers and admin clients) when the properties are shared with consumers: the
    /// consumer-only ones are left out (librdkafka warns about them).
    pub fn producer_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        self.layered(defaults, is_producer_property)
    }

    fn layered(&self, defaults: &[(&str, &str)], keep: fn(&str) -> bool) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in self.properties.expose() {
            if keep(k) {
                c.set(k, v);
            }
        }
        c
    }
}

/// Whether a librdkafka property applies to producers: consumer-only settings do not.
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn properties(entries: &[(&str, &str)]) -> KafkaProperties {
        KafkaProperties::from(
            entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    #[test]
    fn properties_override_the_defaults_and_carry_the_security_settings() {
        let p = properties(&[
            ("security.protocol", "sasl_ssl"),
            ("sasl.password", "hunter2"),
            ("linger.ms", "20"),
        ]);
        let s = ClientSettings::new("b:9093", &p);
        let c = s.config(&[("linger.ms", "5"), ("acks", "all")]);
        assert_eq!(c.get("bootstrap.servers"), Some("b:9093"));
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.password"), Some("hunter2"));
        assert_eq!(c.get("linger.ms"), Some("20"));
        assert_eq!(c.get("acks"), Some("all"));
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn producers_get_no_consumer_only_settings() {
        let p = properties(&[
            ("fetch.wait.max.ms", "50"),
            ("auto.offset.reset", "latest"),
            ("enable.auto.commit", "true"),
            ("queued.max.messages.kbytes", "1024"),
            ("session.timeout.ms", "10000"),
            ("max.poll.interval.ms", "60000"),
            ("group.instance.id", "a"),
            ("isolation.level", "read_uncommitted"),
            ("ssl.ca.location", "/ca.pem"),
            ("message.max.bytes", "2000000"),
        ]);
        let c = ClientSettings::new("b:9092", &p).producer_config(&[("acks", "all")]);
        for consumer_only in [
            "fetch.wait.max.ms",
            "auto.offset.reset",
            "enable.auto.commit",
            "queued.max.messages.kbytes",
            "session.timeout.ms",
            "max.poll.interval.ms",
            "group.instance.id",
            "isolation.level",
        ] {
            assert_eq!(c.get(consumer_only), None, "{consumer_only}");
        }
        assert_eq!(c.get("ssl.ca.location"), Some("/ca.pem"));
        assert_eq!(c.get("message.max.bytes"), Some("2000000"));
        assert_eq!(c.get("acks"), Some("all"));
    }
}
