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
//! | `walcast.commit_ts` | commit time, ISO 8601 UTC with microseconds |
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
    pub commit_ts: Bytes,
    pub commit_ms: i64,
}

impl TxnMeta {
    pub fn new(b: &TxnBegin) -> TxnMeta {
        TxnMeta {
            xid: Bytes::from(b.xid.to_string()),
            commit_lsn: Bytes::from(b.commit_lsn.to_string()),
            commit_ms: iso_to_unix_millis(&b.commit_ts).unwrap_or(0),
            commit_ts: Bytes::from(b.commit_ts.clone()),
        }
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` (the format of [`walcast_pgoutput::format_pg_micros`])
/// into milliseconds since the Unix epoch.
pub fn iso_to_unix_millis(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let part = s.get(from..to)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hh, mm, ss) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let millis = match b.get(19) {
        Some(b'.') => {
            // Byte 19 is '.', so byte 20 starts a character; `get` keeps that obvious.
            let rest = s.get(20..)?;
            let frac = &rest[..rest.find(|c: char| !c.is_ascii_digit())?];
            let digits: String = frac.chars().chain("000".chars()).take(3).collect();
            digits.parse::<i64>().ok()?
        }
        Some(b'Z') => 0,
        _ => return None,
    };
    let days = days_from_civil(y, m, d);
    Some(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use walcast_pgoutput::format_pg_micros;

    #[test]
    fn commit_time_to_unix_millis() {
        assert_eq!(iso_to_unix_millis("1970-01-01T00:00:00.000000Z"), Some(0));
        assert_eq!(
            iso_to_unix_millis("2000-01-01T00:00:00.000999Z"),
            Some(946_684_800_000)
        );
        assert_eq!(
            iso_to_unix_millis("2026-11-23T07:49:44.123456Z"),
            Some(1_795_420_184_123)
        );
        // Round trip with the formatter the replication client uses.
        let pg_micros = 849_340_184_123_456_i64; // 2026-11-30T... since 2000-01-01
        let unix_ms = pg_micros / 1000 + 946_684_800_000;
        assert_eq!(
            iso_to_unix_millis(&format_pg_micros(pg_micros)),
            Some(unix_ms)
        );
        assert_eq!(iso_to_unix_millis("yesterday"), None);
        assert_eq!(
            iso_to_unix_millis("2026-11-23T07:49:44.€€Z"),
            Some(1_795_420_184_000)
        );
        assert_eq!(iso_to_unix_millis("2026-11-23T07:49:4€.1Z"), None);
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
