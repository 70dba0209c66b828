//! Dead letters: outbox rows that cannot become events, and events the broker refuses, as
//! records on the DLQ topic (`<topic>.dlq`). Never dropped silently, never blocking the
//! stream: a dead letter is produced and acknowledged like any event, in WAL order.
//!
//! A dead letter keeps what could be read of the event (key, `id`, `event_type`, extra
//! headers) and adds:
//!
//! | header | content |
//! |---|---|
//! | `walcast.error` | what went wrong and what to do, for a human |
//! | `walcast.error.kind` | `null_column`, `missing_column`, `no_row`, `bad_topic`, `topic_not_allowed`, `too_many_topics`, `topic_refused`, `payload_too_large` |
//! | `walcast.source.table` | the outbox table |
//! | `walcast.original.topic` | the topic the event was meant for, when known |
//! | `walcast.lsn`, `walcast.commit_lsn`, `walcast.xid`, `walcast.commit_ts` | where it is in the WAL |
//! | `walcast.truncated` | only when something was cut to fit: `field:original_bytes,...` |
//!
//! The value is the whole row as JSON (so the event can be repaired and replayed), except
//! for `payload_too_large`, where it is left out: the row is still in the outbox table, found
//! by its `id`; and for `topic_refused` and `too_many_topics` (decided when the event is
//! produced), where it is the event's payload: key, headers and value are the event as it
//! would have been published.
//!
//! # A dead letter always fits
//!
//! A dead letter the broker refused would stop the stream for good (the same row comes back
//! after every restart), so [`DeadLetter::record`] bounds it below the DLQ's limit (the
//! smaller of `[kafka] max_message_bytes` and the DLQ topic's `max.message.bytes`): first the
//! value is left out, then the longest fields (key, header values: a 1 MB `event_type` or
//! aggregate id) are cut, at a character boundary, to an equal share of what is left, so
//! short fields such as `id` stay whole. Header `walcast.truncated` lists what was cut with
//! its original length (`value:1100020,event_type:1100000`); such a dead letter cannot be
//! replayed as it is: repair the row in the outbox table (found by `id`) and produce it again.

use std::sync::Arc;

use bytes::Bytes;
use walcast_pgoutput::Lsn;
use walcast_pgoutput::message::{Relation, TupleData};
use walcast_pgoutput::value::tuple_to_json;
use walcast_replication::TableName;

use walcast_config::text::prefix_bytes;

use crate::record::{self, HeaderName, Record, RecordKind};

/// What is known about a row that becomes a dead letter.
#[derive(Debug, Default)]
pub(crate) struct Letter {
    /// One word: see the module docs.
    pub kind: &'static str,
    /// For a human: what went wrong and what to do.
    pub error: String,
    /// Headers of the event that could be read (including `walcast.*` position headers).
    pub headers: Vec<(HeaderName, Bytes)>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub original_topic: Option<Arc<str>>,
    pub lsn: Lsn,
    pub timestamp_ms: i64,
}

impl Letter {
    /// A `payload_too_large` letter for `record`: the event's key and headers without its
    /// value; `error` says where the value can be read.
    pub(crate) fn too_large(record: &Record, error: String) -> Letter {
        Letter {
            kind: "payload_too_large",
            error,
            headers: record.headers.clone(),
            key: record.key.clone(),
            value: None,
            original_topic: Some(record.topic.clone()),
            lsn: record.lsn,
            timestamp_ms: record.timestamp_ms,
        }
    }
}

/// Builds dead-letter records for one DLQ topic.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetter {
    topic: Arc<str>,
    table: Bytes,
    max_message_bytes: usize,
}

impl DeadLetter {
    pub(crate) fn new(topic: &str, table: &TableName, max_message_bytes: usize) -> DeadLetter {
        DeadLetter {
            topic: Arc::from(topic),
            table: Bytes::from(format!("{}.{}", table.schema, table.name)),
            max_message_bytes,
        }
    }

    /// The DLQ topic.
    pub(crate) fn topic(&self) -> &Arc<str> {
        &self.topic
    }

    /// Lowers the size bound to `max` bytes (the DLQ topic's `max.message.bytes`, once known).
    pub(crate) fn limit_to(&mut self, max: usize) {
        self.max_message_bytes = self.max_message_bytes.min(max);
    }

    /// The record for `letter`, cut to fit (see the module docs).
    pub(crate) fn record(&self, letter: Letter) -> Record {
        let mut headers = letter.headers;
        headers.push((record::ERROR.into(), Bytes::from(letter.error)));
        headers.push((
            record::ERROR_KIND.into(),
            Bytes::from_static(letter.kind.as_bytes()),
        ));
        headers.push((record::SOURCE_TABLE.into(), self.table.clone()));
        if let Some(t) = &letter.original_topic {
            headers.push((record::ORIGINAL_TOPIC.into(), Bytes::from(t.to_string())));
        }
        let mut r = Record {
            kind: RecordKind::DeadLetter,
            topic: self.topic.clone(),
            key: letter.key,
            value: letter.value,
            headers,
            timestamp_ms: letter.timestamp_ms,
            lsn: letter.lsn,
        };
        fit(&mut r, self.max_message_bytes);
        r
    }

    /// The row as a JSON object, for the value of a dead letter.
    pub(crate) fn row_json(relation: &Relation, tuple: &TupleData) -> Option<Bytes> {
        let row = tuple_to_json(relation, tuple).ok()?;
        serde_json::to_vec(&serde_json::Value::Object(row.values))
            .ok()
            .map(Bytes::from)
    }
}

/// Room for the batch and record framing inside the broker's limit.
const FRAMING_BYTES: usize = 512;
/// Per header: its length varints and attributes.
const HEADER_OVERHEAD: usize = 10;
/// One `walcast.truncated` entry at most, beyond the field's name: `:`, 20 digits and `,`.
const ENTRY_BYTES: usize = 22;

/// Cuts `r` until it fits in `max` bytes with its framing: the value first, then the longest
/// of the key and the header values (except `walcast.error.kind`) down to an equal share.
fn fit(r: &mut Record, max: usize) {
    let budget = max.saturating_sub(FRAMING_BYTES + HEADER_OVERHEAD * (r.headers.len() + 1));
    if r.size() <= budget {
        return;
    }
    let mut cut = Vec::new();
    if let Some(v) = r.value.take() {
        cut.push(format!("value:{}", v.len()));
    }
    // What `walcast.truncated` may need, whatever is cut.
    let reserve = record::TRUNCATED.len()
        + ENTRY_BYTES * (r.headers.len() + 2)
        + "value".len()
        + "key".len()
        + r.headers.iter().map(|(k, _)| k.len()).sum::<usize>();
    if r.size() + reserve > budget {
        let fixed: usize = r
            .headers
            .iter()
            .map(|(k, v)| k.len() + if variable(k) { 0 } else { v.len() })
            .sum();
        let mut lengths: Vec<usize> = r.key.iter().map(Bytes::len).collect();
        lengths.extend(
            r.headers
                .iter()
                .filter(|(k, _)| variable(k))
                .map(|(_, v)| v.len()),
        );
        let cap = share(&mut lengths, budget.saturating_sub(fixed + reserve));
        if let Some(k) = &mut r.key
            && k.len() > cap
        {
            cut.push(format!("key:{}", k.len()));
            *k = k.slice(..prefix_bytes(k, cap).len());
        }
        for (name, v) in &mut r.headers {
            if variable(name) && v.len() > cap {
                cut.push(format!("{name}:{}", v.len()));
                *v = v.slice(..prefix_bytes(v, cap).len());
            }
        }
    }
    r.headers
        .push((record::TRUNCATED.into(), Bytes::from(cut.join(","))));
}

/// Whether a dead letter's header may be cut (all but the one-word kind).
fn variable(name: &str) -> bool {
    name != record::ERROR_KIND
}

/// The largest cap such that the `lengths`, each cut to it, add up to at most `room`.
fn share(lengths: &mut [usize], room: usize) -> usize {
    lengths.sort_unstable();
    let mut left = room;
    for (i, &len) in lengths.iter().enumerate() {
        let each = left / (lengths.len() - i);
        if len > each {
            return each;
        }
        left -= len;
    }
    usize::MAX
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn letter(key: usize, event_type: &str, value: usize) -> Letter {
        Letter {
            kind: "payload_too_large",
            error: "too large".into(),
            headers: vec![
                (
                    record::ID.into(),
                    Bytes::from_static(b"7d6f0e4e-0000-4000-8000-000000000001"),
                ),
                (
                    record::EVENT_TYPE.into(),
                    Bytes::from(event_type.to_owned()),
                ),
            ],
            key: Some(Bytes::from("k".repeat(key))),
            value: Some(Bytes::from("v".repeat(value))),
            ..Letter::default()
        }
    }

    fn builder(max: usize) -> DeadLetter {
        DeadLetter::new("t.dlq", &TableName::new("public", "outbox_messages"), max)
    }

    #[test]
    fn small_dead_letters_are_unchanged() {
        let r = builder(1_000_000).record(letter(36, "ProductCreated", 100));
        assert_eq!(r.value.as_ref().map(Bytes::len), Some(100));
        assert!(r.header(record::TRUNCATED).is_none());
    }

    #[test]
    fn every_oversized_field_is_cut_to_fit_and_named() {
        for max in [1024, 4096, 1_000_000] {
            let event_type = "é".repeat(550_000);
            let r = builder(max).record(letter(1_100_000, &event_type, 2_000_000));
            assert!(
                r.size() + 512 + 10 * r.headers.len() <= max,
                "{max}: {}",
                r.size()
            );
            let cut = String::from_utf8_lossy(r.header(record::TRUNCATED).unwrap()).into_owned();
            assert!(
                cut.contains("value:2000000")
                    && cut.contains("key:1100000")
                    && cut.contains("event_type:1100000"),
                "{cut}"
            );
            assert!(r.value.is_none());
            if max > 1024 {
                assert_eq!(
                    r.header(record::ID).map(|v| v.len()),
                    Some(36),
                    "{max}: the id stays whole"
                );
            }
            assert_eq!(
                r.header(record::ERROR_KIND).map(|v| &v[..]),
                Some(&b"payload_too_large"[..])
            );
            let et = std::str::from_utf8(r.header(record::EVENT_TYPE).unwrap()).unwrap();
            assert!(et.chars().all(|c| c == 'é'), "cut at a character boundary");
        }
    }

    #[test]
    fn the_value_goes_first() {
        let r = builder(4096).record(letter(36, "ProductCreated", 5000));
        assert!(r.value.is_none());
        assert_eq!(r.key.as_ref().map(Bytes::len), Some(36));
        assert_eq!(
            r.header(record::TRUNCATED).map(|v| &v[..]),
            Some(&b"value:5000"[..])
        );
    }
}
