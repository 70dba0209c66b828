//! Why a Kafka client gets nowhere.
//!
//! librdkafka reports a failed TLS handshake or a refused SASL login as an *error event* on the
//! client's main queue, and the operation that was waiting on the connection only times out
//! ("Local: Timed out"). Clients that never serve that queue (admin and metadata clients)
//! therefore fail without naming the cause. [`diagnose`] connects once more with the same
//! settings, serves the queue, and returns the broker-side reason with the setting to fix.
//! The reason never contains a credential: librdkafka does not echo configuration values.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};

/// Remembers the first client error.
#[derive(Default)]
struct Recorder {
    first: Mutex<Option<String>>,
}

impl ClientContext for Recorder {
    // The probe is quiet: the caller reports what it found.
    fn log(&self, _level: RDKafkaLogLevel, _fac: &str, _message: &str) {}

    fn error(&self, error: KafkaError, reason: &str) {
        let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(if reason.is_empty() {
                error.to_string()
            } else {
                reason.to_owned()
            });
        }
    }
}

impl ProducerContext for Recorder {
    type DeliveryOpaque = ();
    fn delivery(&self, _result: &DeliveryResult<'_>, _opaque: ()) {}
}

/// Connects with `config` for at most `within` and returns why it cannot talk to the broker
/// (TLS, SASL, unreachable), with the fix; `None` when it can. Blocking: call it from
/// `spawn_blocking`.
pub fn diagnose(config: &ClientConfig, within: Duration) -> Option<String> {
    let mut c = config.clone();
    // Consumer settings in `config` only draw warnings from a producer, and the probe is quiet.
    c.set("log_level", "0");
    let probe: BaseProducer<Recorder> = match c.create_with_context(Recorder::default()) {
        Ok(p) => p,
        Err(e) => return Some(format!("the Kafka client settings are invalid: {e}")),
    };
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let reached = probe
            .client()
            .fetch_metadata(None, Duration::from_millis(500))
            .is_ok();
        probe.poll(Duration::from_millis(100));
        let first = probe
            .context()
            .first
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(reason) = first {
            return Some(explain(&reason));
        }
        if reached {
            return None;
        }
    }
    None
}

/// `context`, with the broker-side cause appended when [`diagnose`] finds one within 10 s
/// (run on the blocking pool): for errors of operations that only time out.
pub async fn with_cause(config: &ClientConfig, context: String) -> String {
    let config = config.clone();
    let cause = tokio::task::spawn_blocking(move || diagnose(&config, Duration::from_secs(10)))
        .await
        .ok()
        .flatten();
    match cause {
        Some(cause) => format!("{context}: {cause}"),
        None => context,
    }
}

/// A broker-side reason with the setting that fixes it.
pub fn explain(reason: &str) -> String {
    let lower = reason.to_ascii_lowercase();
    let fix = if lower.contains("sasl") || lower.contains("authentication") {
        "check sasl.username, sasl.password and sasl.mechanism in [kafka.properties]"
    } else if lower.contains("ssl") || lower.contains("certificate") {
        "check ssl.ca.location (the CA that signed the broker certificate) and that \
         security.protocol matches the broker's listener"
    } else if lower.contains("disconnected") || lower.contains("transport") {
        "check the broker address and that security.protocol matches the broker's listener"
    } else {
        return reason.to_owned();
    };
    format!("{reason}; {fix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_setting_to_fix() {
        let e = explain(
            "sasl_ssl://b:9093/bootstrap: SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256",
        );
        assert!(
            e.ends_with(
                "check sasl.username, sasl.password and sasl.mechanism in [kafka.properties]"
            ),
            "{e}"
        );
        let e = explain("ssl://b:9093/bootstrap: SSL handshake failed: certificate verify failed");
        assert!(e.contains("ssl.ca.location"), "{e}");
        assert_eq!(explain("something else"), "something else");
    }

    #[test]
    fn an_unreachable_broker_is_diagnosed_within_the_limit() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", format!("127.0.0.1:{port}"));
        let started = Instant::now();
        let found = diagnose(&c, Duration::from_secs(3));
        assert!(started.elapsed() < Duration::from_secs(6));
        assert!(found.is_some());
    }
}
