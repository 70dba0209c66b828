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
//! | `walcast.error.kind` | `null_column`, `missing_column`, `bad_topic`, `payload_too_large` |
//! | `walcast.source.table` | the outbox table |
//! | `walcast.original.topic` | the topic the event was meant for, when known |
//! | `walcast.lsn`, `walcast.commit_lsn`, `walcast.xid`, `walcast.commit_ts` | where it is in the WAL |
//!
//! The value is the whole row as JSON (so the event can be repaired and replayed), except
//! for `payload_too_large`, where it is left out: the row is still in the outbox table, found
//! by its `id`.

use std::sync::Arc;

use bytes::Bytes;
use walcast_pgoutput::Lsn;
use walcast_pgoutput::message::{Relation, TupleData};
use walcast_pgoutput::value::tuple_to_json;
use walcast_replication::TableName;

use crate::record::{self, HeaderName, Record, RecordKind};

/// What is known about a row that becomes a dead letter.
#[derive(Debug, Default)]
pub struct Letter {
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

/// Builds dead-letter records for one DLQ topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    topic: Arc<str>,
    table: Bytes,
    max_message_bytes: usize,
}

impl DeadLetter {
    pub fn new(topic: &str, table: &TableName, max_message_bytes: usize) -> DeadLetter {
        DeadLetter {
            topic: Arc::from(topic),
            table: Bytes::from(format!("{}.{}", table.schema, table.name)),
            max_message_bytes,
        }
    }

    /// The DLQ topic.
    pub fn topic(&self) -> &Arc<str> {
        &self.topic
    }

    /// The record for `letter`. A value that would make the record too large is left out.
    pub fn record(&self, letter: Letter) -> Record {
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
        if r.size() + 1024 > self.max_message_bytes {
            r.value = None;
        }
        r
    }

    /// The row as a JSON object, for the value of a dead letter.
    pub fn row_json(relation: &Relation, tuple: &TupleData) -> Option<Bytes> {
        let row = tuple_to_json(relation, tuple).ok()?;
        serde_json::to_vec(&serde_json::Value::Object(row.values))
            .ok()
            .map(Bytes::from)
    }
}
