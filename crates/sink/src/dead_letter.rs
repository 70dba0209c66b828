//! The dead-letter topic: poison records, unchanged, with headers saying why and where from.
//!
//! Headers added to the original ones: `walcast.error` (`kind: detail`), `walcast.error.kind`,
//! `walcast.target`, `walcast.original.topic`, `walcast.original.partition`,
//! `walcast.original.offset`. Every target dead-letters its own copy (its mapping or database
//! may be what refused the event), told apart by `walcast.target`.
//!
//! # A dead letter always fits
//!
//! A dead letter the producer refused would be retried for ever and stop the target at that
//! offset, so every dead letter is made to fit the producer's `message.max.bytes` (less
//! [`FRAMING_BYTES`]) before it is sent ([`compose`]):
//!
//! 1. the texts the sink adds are bounded (`walcast.error` at [`ERROR_BYTES`]);
//! 2. a record that still does not fit has its header names cut at [`HEADER_NAME_BYTES`], its
//!    header values (the `id` header's too) and its key at [`FIELD_BYTES`];
//! 3. then its value is left out (the event stays at `walcast.original.*` while the topic
//!    retains it, and in the outbox table by its `id`);
//! 4. then original headers other than `id` are left out, largest first.
//!
//! Whatever was cut or left out is named in the `walcast.truncated` header (`key`, `value`,
//! `header NAME`, `N headers dropped`); a record that fits is sent unchanged.

use std::borrow::Cow;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tracing::warn;
use walcast_kafka::topic::BROKER_DEFAULT_REPLICATION;
use walcast_kafka::{TopicAdmin, TopicSpec};

use crate::config::SinkConfig;
use crate::error::{Error, Result};
use crate::projection::Rejection;
use crate::text;

/// Longest `walcast.error` text.
pub(crate) const ERROR_BYTES: usize = 2048;
/// Longest header value or key kept when a dead letter has to shrink.
pub(crate) const FIELD_BYTES: usize = 1024;
/// Longest header name kept when a dead letter has to shrink.
pub(crate) const HEADER_NAME_BYTES: usize = 128;
/// What a record needs beside its key, value and headers (record and batch framing), with room.
pub(crate) const FRAMING_BYTES: usize = 1024;
/// Framing of one header (two varint lengths), counted generously.
const HEADER_FRAMING: usize = 10;
/// librdkafka's default `message.max.bytes` for a producer.
const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;
/// The header naming what was cut to make a dead letter fit.
pub(crate) const TRUNCATED: &str = "walcast.truncated";
/// The original header kept in every dead letter: the event's id.
const ID_HEADER: &str = "id";

/// A record and why it is poison.
#[derive(Debug)]
pub(crate) struct DeadLetter<'a> {
    pub(crate) record: &'a OwnedMessage,
    pub(crate) why: &'a Rejection,
}

/// A producer to the dead-letter topic, shared by the targets.
#[derive(Clone)]
pub(crate) struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    target: String,
    /// Most bytes of key, value and headers a dead letter may have.
    budget: usize,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("topic", &self.topic)
            .field("target", &self.target)
            .finish()
    }
}

impl DeadLetters {
    pub(crate) fn new(config: &SinkConfig) -> Result<DeadLetters> {
        // The properties are shared with the consumers: only the producer's share applies.
        let c = config.kafka.client().producer_config(&[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
            ("message.timeout.ms", "30000"),
        ]);
        Ok(DeadLetters {
            producer: c
                .create()
                .map_err(Error::kafka("creating the DLQ producer"))?,
            topic: config.dlq_topic(),
            target: String::new(),
            budget: budget(config),
        })
    }

    /// The same producer, labelling records with `target`.
    pub(crate) fn for_target(&self, target: &str) -> DeadLetters {
        DeadLetters {
            target: target.to_owned(),
            ..self.clone()
        }
    }

    /// Creates the dead-letter topic when missing (one partition per source partition, the
    /// broker's replication factor). A topic the broker refuses is only warned about: dead
    /// letters then wait, retried, until an operator creates it.
    pub(crate) async fn ensure_topic(config: &SinkConfig, partitions: i32) -> Result<()> {
        let admin = TopicAdmin::new(config.kafka.client())?
            .with_timeouts(Duration::from_secs(30), Duration::from_secs(15));
        let topic = config.dlq_topic();
        let spec = TopicSpec {
            partitions: partitions.max(1),
            replication_factor: BROKER_DEFAULT_REPLICATION,
        };
        match admin.create(&topic, spec).await? {
            Ok(()) | Err(RDKafkaErrorCode::TopicAlreadyExists) => {}
            Err(code) => {
                warn!(topic = %topic, %code, "could not create the DLQ topic; create it by hand")
            }
        }
        Ok(())
    }

    /// Produces every dead letter and waits until the broker acknowledged all of them.
    pub(crate) async fn send_all(&self, letters: &[DeadLetter<'_>]) -> Result<()> {
        let mut pending = Vec::with_capacity(letters.len());
        for l in letters {
            let letter = compose(l, &self.target, self.budget);
            if !letter.truncated.is_empty() {
                warn!(target = %self.target, offset = l.record.offset(), partition = l.record.partition(),
                      truncated = %letter.truncated.join(", "), "dead letter shrunk to fit the producer's message.max.bytes");
            }
            let mut headers = OwnedHeaders::new_with_capacity(letter.headers.len());
            for (k, v) in &letter.headers {
                headers = headers.insert(Header {
                    key: k.as_ref(),
                    value: v.as_deref(),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers);
            if let Some(k) = &letter.key {
                record = record.key(k.as_ref());
            }
            if let Some(p) = letter.value {
                record = record.payload(p);
            }
            let delivery = self
                .producer
                .send_result(record)
                .map_err(|(e, _)| Error::kafka(format!("producing to {}", self.topic))(e))?;
            pending.push(delivery);
        }
        for d in pending {
            match d.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    return Err(Error::kafka(format!("producing to {}", self.topic))(e));
                }
                Err(_) => {
                    return Err(Error::kafka(format!("producing to {}", self.topic))(
                        rdkafka::error::KafkaError::Canceled,
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The size budget of a dead letter: the producer's `message.max.bytes` less framing.
fn budget(config: &SinkConfig) -> usize {
    config
        .kafka
        .properties
        .iter()
        .find(|(k, _)| k.as_str() == "message.max.bytes")
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES)
        .saturating_sub(FRAMING_BYTES)
}

/// A header: name and value (borrowed from the record where unchanged).
pub(crate) type HeaderPair<'a> = (Cow<'a, str>, Option<Cow<'a, [u8]>>);

/// A dead letter ready to produce; see the module docs.
#[derive(Debug)]
pub(crate) struct Composed<'a> {
    pub(crate) key: Option<Cow<'a, [u8]>>,
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) headers: Vec<HeaderPair<'a>>,
    /// What was cut or left out (also in the `walcast.truncated` header).
    pub(crate) truncated: Vec<String>,
}

impl Composed<'_> {
    /// Bytes the producer counts, headers with [`HEADER_FRAMING`].
    pub(crate) fn size(&self) -> usize {
        self.key.as_ref().map_or(0, |k| k.len())
            + self.value.map_or(0, <[u8]>::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()) + HEADER_FRAMING)
                .sum::<usize>()
    }
}

/// The dead letter of `l` for `target`, at most `budget` bytes (see the module docs).
pub(crate) fn compose<'a>(l: &DeadLetter<'a>, target: &str, budget: usize) -> Composed<'a> {
    let record = l.record;
    let error = text::truncate(&l.why.to_string(), ERROR_BYTES).into_owned();
    let added: Vec<(&str, String)> = vec![
        ("walcast.error", error),
        ("walcast.error.kind", l.why.kind.as_str().to_owned()),
        ("walcast.target", target.to_owned()),
        ("walcast.original.topic", record.topic().to_owned()),
        ("walcast.original.partition", record.partition().to_string()),
        ("walcast.original.offset", record.offset().to_string()),
    ];
    let mut original: Vec<HeaderPair<'a>> = record
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (Cow::Borrowed(h.key), h.value.map(Cow::Borrowed)))
                .collect()
        })
        .unwrap_or_default();
    let mut c = Composed {
        key: record.key().map(Cow::Borrowed),
        value: record.payload(),
        headers: Vec::new(),
        truncated: Vec::new(),
    };
    // The added headers and the `walcast.truncated` header (bounded below) count from the start.
    let reserved = added
        .iter()
        .map(|(k, v)| k.len() + v.len() + HEADER_FRAMING)
        .sum::<usize>()
        + TRUNCATED.len()
        + FIELD_BYTES
        + HEADER_FRAMING;
    let fits = |c: &Composed<'_>, original: &[HeaderPair<'_>]| {
        let o: usize = original
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()) + HEADER_FRAMING)
            .sum();
        c.size() + o + reserved <= budget
    };
    if !fits(&c, &original) {
        for (k, v) in &mut original {
            let name = k.to_string();
            if k.len() > HEADER_NAME_BYTES {
                *k = Cow::Owned(text::truncate(k, HEADER_NAME_BYTES).into_owned());
                c.truncated
                    .push(format!("header name {}", text::truncate(&name, 64)));
            }
            if let Some(val) = v
                && val.len() > FIELD_BYTES
            {
                *val = Cow::Owned(text::truncate_bytes(val, FIELD_BYTES).into_owned());
                c.truncated
                    .push(format!("header {}", text::truncate(&name, 64)));
            }
        }
        if let Some(k) = &mut c.key
            && k.len() > FIELD_BYTES
        {
            *k = Cow::Owned(text::truncate_bytes(k, FIELD_BYTES).into_owned());
            c.truncated.push("key".to_owned());
        }
    }
    if !fits(&c, &original) && c.value.is_some() {
        c.value = None;
        c.truncated.push("value".to_owned());
    }
    if !fits(&c, &original) {
        // Largest first; the `id` header stays.
        let mut order: Vec<usize> = (0..original.len())
            .filter(|i| original[*i].0 != ID_HEADER)
            .collect();
        order.sort_by_key(|i| {
            std::cmp::Reverse(original[*i].0.len() + original[*i].1.as_ref().map_or(0, |v| v.len()))
        });
        let mut dropped = vec![false; original.len()];
        let mut n = 0;
        for i in order {
            if fits(&c, &original) {
                break;
            }
            dropped[i] = true;
            // Emptied rather than removed, so that the indexes hold; removed below.
            original[i] = (Cow::Borrowed(""), None);
            n += 1;
        }
        let mut keep = dropped.iter().map(|d| !d);
        original.retain(|_| keep.next().unwrap_or(true));
        c.truncated.push(format!("{n} headers dropped"));
    }
    c.headers = original;
    c.headers.extend(
        added
            .into_iter()
            .map(|(k, v)| (Cow::Borrowed(k), Some(Cow::Owned(v.into_bytes())))),
    );
    if !c.truncated.is_empty() {
        let list = text::truncate(&c.truncated.join(", "), FIELD_BYTES).into_owned();
        c.headers.push((
            Cow::Borrowed(TRUNCATED),
            Some(Cow::Owned(list.into_bytes())),
        ));
    }
    c
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use rdkafka::Timestamp;

    use super::*;
    use crate::projection::RejectKind;

    fn message(key: Vec<u8>, value: Vec<u8>, headers: &[(&str, &[u8])]) -> OwnedMessage {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        OwnedMessage::new(
            Some(value),
            Some(key),
            "catalog.events".into(),
            Timestamp::NotAvailable,
            2,
            7,
            Some(h),
        )
    }

    fn header<'c>(c: &'c Composed<'_>, name: &str) -> Option<&'c [u8]> {
        c.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    #[test]
    fn a_rejection_echoing_a_huge_value_is_bounded_and_the_record_kept_whole() {
        let event_type = "\u{1}".repeat(170_000);
        let m = message(
            b"k".to_vec(),
            b"{}".to_vec(),
            &[("id", b"0000"), ("event_type", event_type.as_bytes())],
        );
        let why = Rejection {
            kind: RejectKind::UnknownType,
            detail: format!("no mapping for {event_type:?}"),
        };
        let c = compose(
            &DeadLetter {
                record: &m,
                why: &why,
            },
            "replica-1",
            999_000,
        );
        assert!(c.truncated.is_empty(), "{:?}", c.truncated);
        assert!(header(&c, "walcast.error").unwrap().len() <= ERROR_BYTES);
        assert_eq!(header(&c, "event_type"), Some(event_type.as_bytes()));
        assert_eq!(header(&c, "walcast.original.offset"), Some(&b"7"[..]));
        assert!(c.size() <= 999_000);
    }

    #[test]
    fn an_oversized_record_shrinks_to_the_budget_keeping_its_id() {
        let big = "é".repeat(300_000);
        let m = message(
            big.as_bytes().to_vec(),
            vec![b'x'; 400_000],
            &[
                ("id", b"the-id"),
                ("event_type", big.as_bytes()),
                ("a", b"1"),
            ],
        );
        let why = Rejection {
            kind: RejectKind::UnknownType,
            detail: big.clone(),
        };
        let l = DeadLetter {
            record: &m,
            why: &why,
        };
        let c = compose(&l, "t", 999_000);
        assert!(c.size() <= 999_000, "{}", c.size());
        assert_eq!(header(&c, "id"), Some(&b"the-id"[..]));
        assert_eq!(header(&c, "a"), Some(&b"1"[..]));
        assert_eq!(
            c.value.map(<[u8]>::len),
            Some(400_000),
            "the value fits once the rest is cut"
        );
        let cut =
            std::str::from_utf8(header(&c, "event_type").unwrap()).expect("cut at a char boundary");
        assert!(cut.ends_with("bytes]") && cut.len() <= FIELD_BYTES);
        assert_eq!(header(&c, TRUNCATED), Some(&b"header event_type, key"[..]));

        // A budget too small for the value: it is left out; then for the headers: dropped.
        let c = compose(&l, "t", 8_000);
        assert!(c.size() <= 8_000, "{}", c.size());
        assert!(c.value.is_none());
        assert_eq!(header(&c, "id"), Some(&b"the-id"[..]));
        let c = compose(&l, "t", 5_000);
        assert!(c.size() <= 5_000, "{}", c.size());
        assert_eq!(header(&c, "id"), Some(&b"the-id"[..]));
        assert!(header(&c, "event_type").is_none());
        assert!(
            std::str::from_utf8(header(&c, TRUNCATED).unwrap())
                .unwrap()
                .ends_with("1 headers dropped")
        );
    }
}
