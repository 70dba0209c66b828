//! The Kafka record of an outbox event, in the layout of Debezium's outbox event router, so a
//! consumer written for Debezium works unchanged:
//!
//! | part | content |
//! |---|---|
//! | key | the aggregate id column as text (`aggregate_id`) |
//! | value | the payload column's text, unchanged (Postgres normalises `jsonb` text: one space after `:` and `,`, keys sorted by length) |
//! | timestamp | the transaction's commit time (milliseconds) |
//! | header `id` | the event id column (consumers deduplicate by it) |
//! | header `event_type` | the event type column |
//! | header `occurred_at` | the occurred-at column, ISO 8601 (`2026-11-23T07:49:44.123456+00:00`) |
//! | extra headers | `[outbox.headers]`, e.g. `correlation_id`, only when not null |
//! | `walcast.lsn` | WAL position of the row (`16/B374D000`) |
//! | `walcast.commit_lsn` | WAL position of its transaction's commit record |
//! | `walcast.xid` | transaction id |
//! | `walcast.commit_ts` | commit time, RFC 3339 UTC with microseconds ([`walcast_pgoutput::Timestamp`]) |
//! | `walcast.replay` | `true` on a record republished from the outbox table by `walcast source replay`, which carries no `walcast.lsn`, `walcast.commit_lsn`, `walcast.xid`, `walcast.commit_ts` (its timestamp is the replay's time) |
//!
//! A snapshot record (one row of a `[[snapshot.tables]]` table) has the same key, `id`
//! (deterministic: UUID v5 of the row's table, key, version and occurred_at), `event_type`
//! and `occurred_at` (RFC 3339 UTC), no `walcast.*` position headers, and `walcast.snapshot`
//! = the snapshot's id; its value is the row as a JSON object.
//!
//! Values are [`Bytes`] slices of the replication message where possible: a record costs a
//! few small allocations, never a copy of the payload before librdkafka's own.

use std::sync::Arc;

use bytes::Bytes;
use walcast_pgoutput::Lsn;
use walcast_replication::TxnBegin;

/// Header with the event id.
pub const ID: &str = "id";
/// Header with the event type.
pub const EVENT_TYPE: &str = "event_type";
/// Header with the event's own timestamp.
pub const OCCURRED_AT: &str = "occurred_at";
/// Header with the row's WAL position.
pub const LSN: &str = "walcast.lsn";
/// Header with the WAL position of the transaction's commit record.
pub const COMMIT_LSN: &str = "walcast.commit_lsn";
/// Header with the transaction id.
pub const XID: &str = "walcast.xid";
/// Header with the commit time.
pub const COMMIT_TS: &str = "walcast.commit_ts";
/// Header `true` on a record republished from the outbox table (`walcast source replay`).
pub const REPLAY: &str = "walcast.replay";
/// Header of a snapshot record: the snapshot's id (snapshot records have no `walcast.lsn`,
/// `walcast.commit_lsn`, `walcast.xid` or `walcast.commit_ts`).
pub const SNAPSHOT: &str = "walcast.snapshot";
/// DLQ header: what went wrong, for a human.
pub const ERROR: &str = "walcast.error";
/// DLQ header: what went wrong, one word (`null_column`, `missing_column`, `no_row`,
/// `bad_topic`, `topic_not_allowed`, `too_many_topics`, `topic_refused`,
/// `payload_too_large`).
pub const ERROR_KIND: &str = "walcast.error.kind";
/// DLQ header: the outbox table, `schema.table`.
pub const SOURCE_TABLE: &str = "walcast.source.table";
/// DLQ header: the topic the event was meant for, when known.
pub const ORIGINAL_TOPIC: &str = "walcast.original.topic";
/// DLQ header, only on a dead letter cut to fit: what was cut, `field:original_bytes,...`.
pub const TRUNCATED: &str = "walcast.truncated";

/// A header name; shared, so an event's headers cost no allocation for their names.
pub type HeaderName = Arc<str>;

/// Whether a record is an event or a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// An outbox event on its topic.
    Event,
    /// A row that could not be routed, on the DLQ topic.
    DeadLetter,
}

/// One record, ready for the producer.
#[derive(Debug, Clone)]
pub struct Record {
    pub kind: RecordKind,
    pub topic: Arc<str>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(HeaderName, Bytes)>,
    /// Commit time, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The row's WAL position (for logs and errors).
    pub lsn: Lsn,
}

impl Record {
    /// Key, value and headers in bytes: what the broker's size limit counts (roughly).
    pub fn size(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + headers
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| v)
    }
}

/// What every record of one transaction shares, formatted once at Begin.
#[derive(Debug, Clone)]
pub struct TxnMeta {
    pub xid: Bytes,
    pub commit_lsn: Bytes,
    /// The commit time's header text.
    pub commit_ts: Bytes,
    /// The commit time, milliseconds since the Unix epoch (the record timestamp).
    pub commit_ms: i64,
}

impl TxnMeta {
    pub fn new(b: &TxnBegin) -> TxnMeta {
        TxnMeta {
            xid: Bytes::from(b.xid.to_string()),
            commit_lsn: Bytes::from(b.commit_lsn.to_string()),
            commit_ms: b.commit_ts.unix_millis(),
            commit_ts: Bytes::from(b.commit_ts.to_rfc3339()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use walcast_pgoutput::Timestamp;

    #[test]
    fn transaction_headers_and_timestamp() {
        let meta = |pg_micros: i64| {
            TxnMeta::new(&TxnBegin {
                xid: 7,
                commit_lsn: Lsn(0x16_B374_D848),
                commit_ts: Timestamp::from_pg_micros(pg_micros),
            })
        };
        let m = meta(848_735_384_123_456);
        assert_eq!(&m.xid[..], b"7");
        assert_eq!(&m.commit_lsn[..], b"16/B374D848");
        assert_eq!(&m.commit_ts[..], b"2026-11-23T07:49:44.123456Z");
        assert_eq!(m.commit_ms, 1_795_420_184_123);
        let before_1970 = meta(-946_684_800_000_001);
        assert_eq!(&before_1970.commit_ts[..], b"1969-12-31T23:59:59.999999Z");
        assert_eq!(before_1970.commit_ms, -1);
        let leap_day = meta(59 * 86_400_000_000 + 999);
        assert_eq!(&leap_day.commit_ts[..], b"2000-02-29T00:00:00.000999Z");
        assert_eq!(leap_day.commit_ms, 951_782_400_000);
    }

    #[test]
    fn size_counts_key_value_and_headers() {
        let r = Record {
            kind: RecordKind::Event,
            topic: "t".into(),
            key: Some(Bytes::from_static(b"abc")),
            value: Some(Bytes::from_static(b"{}")),
            headers: vec![("id".into(), Bytes::from_static(b"1234"))],
            timestamp_ms: 0,
            lsn: Lsn(0),
        };
        assert_eq!(r.size(), 3 + 2 + 2 + 4);
        assert_eq!(r.header("id"), Some(&Bytes::from_static(b"1234")));
    }
}
