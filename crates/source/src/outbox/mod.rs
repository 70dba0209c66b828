//! The Outbox Event Router: outbox INSERTs become Kafka records in Debezium's layout
//! ([`crate::record`]); rows it cannot map become dead letters; everything else is skipped.
//!
//! ```text
//!  Change (raw row of the outbox table)
//!     │ INSERT ──▶ columns by role ──▶ topic (fixed or template) ──▶ size check ──▶ Event
//!     │                 │ null / missing column, bad topic name         │ too large
//!     │                 └──────────────────────────────▶ DeadLetter ◀───┘   (on <topic>.dlq)
//!     │ UPDATE / DELETE / TRUNCATE ──▶ invalid_op: ignore | warn | fail
//!     └ other tables, logical messages ──▶ Skipped
//! ```
//!
//! Columns are found by name in the latest Relation message for the table, so a column added
//! or reordered while the source runs is picked up; a configured column that disappears
//! dead-letters the rows that lack it (the start-up check, [`check_columns`], catches the
//! common case of a typo before anything is read).

mod columns;
mod template;

pub(crate) use crate::dead_letter::{DeadLetter, Letter};
pub(crate) use columns::check_columns;
pub(crate) use template::{TopicTemplate, check_topic_name, glob_match};

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tracing::{debug, warn};
use walcast_pgoutput::Lsn;
use walcast_pgoutput::message::{Relation, TupleData, TupleValue};
use walcast_pgoutput::value::{pg_type, text_to_json};
use walcast_replication::{Change, Op, TableName};

use crate::config::{InvalidOp, SourceConfig};
use crate::error::{Error, Result};
use crate::record::{self, HeaderName, Record, RecordKind, TxnMeta};

/// Where a row comes from: the WAL (the live stream) or a SQL read of the outbox table
/// (`walcast source replay`). Both build the same record; only the position headers and the
/// record timestamp differ.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Origin<'a> {
    /// A change of the live stream: `walcast.lsn`, `walcast.commit_lsn`, `walcast.xid`,
    /// `walcast.commit_ts`; the record timestamp is the commit time.
    Wal {
        change: &'a Change,
        txn: &'a TxnMeta,
    },
    /// A row read back from the table: header `walcast.replay = true` and no WAL position
    /// (a sink has no LSN to account for it); the record timestamp is `timestamp_ms`.
    Replay { timestamp_ms: i64 },
}

impl Origin<'_> {
    fn lsn(&self) -> Lsn {
        match self {
            Origin::Wal { change, .. } => change.lsn,
            Origin::Replay { .. } => Lsn(0),
        }
    }

    fn timestamp_ms(&self) -> i64 {
        match self {
            Origin::Wal { txn, .. } => txn.commit_ms,
            Origin::Replay { timestamp_ms } => *timestamp_ms,
        }
    }
}

/// What became of a change.
#[derive(Debug)]
pub(crate) enum Routed {
    /// An outbox event for Kafka.
    Event(Record),
    /// A row that could not be mapped, as a record for the DLQ topic.
    DeadLetter(Record),
    /// Not an event: another table, an UPDATE/DELETE/TRUNCATE of the outbox, a message.
    Skipped(Skip),
}

/// Why a change was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skip {
    /// A change of a table other than the outbox.
    OtherTable,
    /// An UPDATE, DELETE or TRUNCATE of the outbox (`invalid_op` ignore or warn).
    InvalidOp,
    /// A logical decoding message.
    Message,
}

/// Column positions of one version of the outbox table.
#[derive(Debug, Clone)]
struct Mapping {
    id: usize,
    key: usize,
    event_type: usize,
    payload: usize,
    occurred_at: Option<(usize, u32)>,
    headers: Vec<(HeaderName, usize)>,
    template: Vec<(String, usize)>,
}

/// A mapping, or why the table version cannot be mapped.
type MappingResult = std::result::Result<Arc<Mapping>, String>;

/// Header names, allocated once.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub(crate) id: HeaderName,
    pub(crate) event_type: HeaderName,
    pub(crate) occurred_at: HeaderName,
    pub(crate) lsn: HeaderName,
    pub(crate) commit_lsn: HeaderName,
    pub(crate) xid: HeaderName,
    pub(crate) commit_ts: HeaderName,
    pub(crate) replay: HeaderName,
}

/// The router; one per source. See the module docs.
#[derive(Debug)]
pub(crate) struct Router {
    table: TableName,
    config: crate::config::ColumnsConfig,
    headers: Vec<(HeaderName, String)>,
    template: TopicTemplate,
    fixed_topic: Option<Arc<str>>,
    topics: HashMap<String, Arc<str>>,
    /// `[kafka] topic_allow`: template topics must match one (empty: any).
    allow: Vec<String>,
    invalid_op: InvalidOp,
    max_message_bytes: usize,
    names: Names,
    dead_letters: DeadLetter,
    /// The mapping of the latest outbox Relation seen (by pointer: a new Relation message
    /// means a new `Arc`).
    mapping: Option<(Arc<Relation>, MappingResult)>,
}

/// Room left for the record batch framing inside the broker's limit.
pub(crate) const FRAMING_BYTES: usize = 512;

/// Rendered topic names kept for reuse (beyond this, names are built per row).
const MAX_CACHED_TOPICS: usize = 4096;

impl Router {
    pub(crate) fn new(config: &SourceConfig) -> Router {
        let template = TopicTemplate::parse(&config.kafka.topic).unwrap_or_else(|_| {
            TopicTemplate::parse("catalog.events").unwrap_or_else(|_| unreachable!())
        });
        let fixed_topic = template
            .is_fixed()
            .then(|| Arc::from(config.kafka.topic.as_str()));
        let table = config.table();
        Router {
            names: Names {
                id: record::ID.into(),
                event_type: record::EVENT_TYPE.into(),
                occurred_at: record::OCCURRED_AT.into(),
                lsn: record::LSN.into(),
                commit_lsn: record::COMMIT_LSN.into(),
                xid: record::XID.into(),
                commit_ts: record::COMMIT_TS.into(),
                replay: record::REPLAY.into(),
            },
            dead_letters: DeadLetter::new(
                &config.dlq_topic(),
                &table,
                config.kafka.max_message_bytes,
            ),
            table,
            config: config.outbox.columns.clone(),
            headers: config
                .outbox
                .headers
                .iter()
                .map(|(h, c)| (HeaderName::from(h.as_str()), c.clone()))
                .collect(),
            template,
            fixed_topic,
            topics: HashMap::new(),
            allow: config.kafka.topic_allow.clone(),
            invalid_op: config.outbox.invalid_op,
            max_message_bytes: config.kafka.max_message_bytes,
            mapping: None,
        }
    }

    /// The dead-letter builder (also used for records the broker refuses).
    pub(crate) fn dead_letters(&self) -> &DeadLetter {
        &self.dead_letters
    }

    /// The dead-letter builder, to lower its size bound to the DLQ topic's.
    pub(crate) fn dead_letters_mut(&mut self) -> &mut DeadLetter {
        &mut self.dead_letters
    }

    /// Routes one change of the transaction `txn`.
    pub(crate) fn route(&mut self, change: &Change, txn: &TxnMeta) -> Result<Routed> {
        if change.op == Op::Message {
            return Ok(Routed::Skipped(Skip::Message));
        }
        if change.schema.as_deref() != Some(&self.table.schema)
            || change.table.as_deref() != Some(&self.table.name)
        {
            return Ok(Routed::Skipped(Skip::OtherTable));
        }
        if change.op != Op::Insert {
            return self.invalid_op(change);
        }
        let Some((relation, tuple)) = change
            .raw
            .as_ref()
            .and_then(|r| r.new.as_ref().map(|t| (&r.relation, t)))
        else {
            let letter = Letter {
                kind: "no_row",
                error: "the INSERT carried no row data; start replication with raw rows".into(),
                ..Letter::default()
            };
            return Ok(self.dead(Origin::Wal { change, txn }, letter));
        };
        Ok(self.route_row(relation, tuple, Origin::Wal { change, txn }))
    }

    /// Routes one inserted outbox row (`relation`: the table's columns, `tuple`: the row in
    /// text format): the live stream's rows through [`Router::route`], rows read back from
    /// the table by the replay with [`Origin::Replay`].
    pub(crate) fn route_row(
        &mut self,
        relation: &Arc<Relation>,
        tuple: &TupleData,
        origin: Origin<'_>,
    ) -> Routed {
        let mapping = match self.mapping_for(relation) {
            Ok(m) => m,
            Err(error) => {
                let letter = Letter {
                    kind: "missing_column",
                    error,
                    value: DeadLetter::row_json(relation, tuple),
                    ..Letter::default()
                };
                return self.dead(origin, letter);
            }
        };
        self.map_row(origin, relation, tuple, &mapping)
    }

    /// A dead letter with the row's position headers.
    fn dead(&self, origin: Origin<'_>, mut letter: Letter) -> Routed {
        self.position(origin, &mut letter.headers);
        letter.lsn = origin.lsn();
        letter.timestamp_ms = origin.timestamp_ms();
        Routed::DeadLetter(self.dead_letters.record(letter))
    }

    /// Appends the `walcast.*` headers of a row: its WAL position, or the replay mark.
    fn position(&self, origin: Origin<'_>, headers: &mut Vec<(HeaderName, Bytes)>) {
        match origin {
            Origin::Wal { change, txn } => headers.extend([
                (self.names.lsn.clone(), Bytes::from(change.lsn.to_string())),
                (self.names.commit_lsn.clone(), txn.commit_lsn.clone()),
                (self.names.xid.clone(), txn.xid.clone()),
                (self.names.commit_ts.clone(), txn.commit_ts.clone()),
            ]),
            Origin::Replay { .. } => {
                headers.push((self.names.replay.clone(), Bytes::from_static(b"true")));
            }
        }
    }

    fn map_row(
        &mut self,
        origin: Origin<'_>,
        relation: &Relation,
        tuple: &TupleData,
        m: &Mapping,
    ) -> Routed {
        let text = |i: usize| match tuple.columns.get(i) {
            Some(TupleValue::Text(b)) => Some(b.clone()),
            _ => None,
        };
        let (id, key, event_type, payload) =
            (text(m.id), text(m.key), text(m.event_type), text(m.payload));
        let mut headers = Vec::with_capacity(8 + m.headers.len());
        if let Some(id) = &id {
            headers.push((self.names.id.clone(), id.clone()));
        }
        if let Some(t) = &event_type {
            headers.push((self.names.event_type.clone(), t.clone()));
        }
        for (name, i) in &m.headers {
            if let Some(v) = text(*i) {
                headers.push((name.clone(), v));
            }
        }
        if let Some((i, type_oid)) = m.occurred_at
            && let Some(v) = text(i)
        {
            headers.push((self.names.occurred_at.clone(), iso_timestamp(type_oid, v)));
        }
        let null = [
            (&id, &self.config.id, "id"),
            (&key, &self.config.key, "key"),
            (&event_type, &self.config.event_type, "event_type"),
            (&payload, &self.config.payload, "payload"),
        ]
        .into_iter()
        .find(|(v, _, _)| v.is_none());
        if let Some((_, column, role)) = null {
            let letter = Letter {
                kind: "null_column",
                error: format!(
                    "column \"{column}\" ([outbox.columns] {role}) is null; the writer must set it"
                ),
                headers,
                key,
                value: DeadLetter::row_json(relation, tuple),
                ..Letter::default()
            };
            return self.dead(origin, letter);
        }
        let topic = match self.topic(tuple, m) {
            Ok(t) => t,
            Err((kind, error)) => {
                let letter = Letter {
                    kind,
                    error,
                    headers,
                    key,
                    value: DeadLetter::row_json(relation, tuple),
                    ..Letter::default()
                };
                return self.dead(origin, letter);
            }
        };
        self.position(origin, &mut headers);
        let event = Record {
            kind: RecordKind::Event,
            topic,
            key,
            value: payload,
            headers,
            timestamp_ms: origin.timestamp_ms(),
            lsn: origin.lsn(),
        };
        let size = event.size();
        if size + FRAMING_BYTES > self.max_message_bytes {
            let letter = Letter {
                kind: "payload_too_large",
                error: format!(
                    "the record is {size} bytes, more than [kafka] max_message_bytes = {} \
                     allows; the payload is left out here, read it from the outbox row by its id",
                    self.max_message_bytes
                ),
                original_topic: Some(event.topic.clone()),
                headers: event.headers,
                key: event.key,
                lsn: event.lsn,
                timestamp_ms: event.timestamp_ms,
                value: None,
            };
            return Routed::DeadLetter(self.dead_letters.record(letter));
        }
        Routed::Event(event)
    }

    /// The row's topic, or the dead-letter kind and error.
    fn topic(
        &mut self,
        tuple: &TupleData,
        m: &Mapping,
    ) -> std::result::Result<Arc<str>, (&'static str, String)> {
        if let Some(t) = &self.fixed_topic {
            return Ok(t.clone());
        }
        let name = self
            .template
            .render(|column| {
                let i = m.template.iter().find(|(c, _)| c == column)?.1;
                tuple.columns.get(i).and_then(TupleValue::as_text)
            })
            .map_err(|e| ("bad_topic", e))?;
        if !self.allow.is_empty() && !self.allow.iter().any(|p| glob_match(p, &name)) {
            return Err((
                "topic_not_allowed",
                format!(
                    "topic '{name}' matches no pattern of [kafka] topic_allow ({}); add a pattern, or fix the writer of this event type",
                    self.allow.join(", ")
                ),
            ));
        }
        if let Some(t) = self.topics.get(&name) {
            return Ok(t.clone());
        }
        let topic: Arc<str> = Arc::from(name.as_str());
        // Bounded: a writer inventing types must not grow this map for ever.
        if self.topics.len() < MAX_CACHED_TOPICS {
            self.topics.insert(name, topic.clone());
        }
        Ok(topic)
    }

    fn invalid_op(&self, change: &Change) -> Result<Routed> {
        let op = match change.op {
            Op::Update => "UPDATE",
            Op::Delete => "DELETE",
            _ => "TRUNCATE",
        };
        match self.invalid_op {
            InvalidOp::Ignore => {
                debug!(op, lsn = %change.lsn, table = %self.table, "ignoring a non-insert of the outbox");
            }
            InvalidOp::Warn => {
                warn!(op, lsn = %change.lsn, table = %self.table, "ignoring a non-insert of the outbox; outbox rows should only be inserted");
            }
            InvalidOp::Fail => {
                return Err(Error::InvalidOp {
                    op: op.to_owned(),
                    table: self.table.to_string(),
                    lsn: change.lsn,
                });
            }
        }
        Ok(Routed::Skipped(Skip::InvalidOp))
    }

    /// Column positions for `relation`, recomputed when a new Relation message arrives.
    fn mapping_for(&mut self, relation: &Arc<Relation>) -> MappingResult {
        if let Some((known, mapping)) = &self.mapping
            && Arc::ptr_eq(known, relation)
        {
            return mapping.clone();
        }
        let mapping = self.compute_mapping(relation).map(Arc::new);
        self.mapping = Some((relation.clone(), mapping.clone()));
        mapping
    }

    fn compute_mapping(&self, relation: &Relation) -> std::result::Result<Mapping, String> {
        let find = |column: &str, key: &str| {
            relation
                .columns
                .iter()
                .position(|c| c.name == column)
                .ok_or_else(|| {
                    format!(
                        "the outbox table has no column \"{column}\" (configured as {key}); fix the connector file or the table"
                    )
                })
        };
        let id = find(&self.config.id, "[outbox.columns] id")?;
        let key = find(&self.config.key, "[outbox.columns] key")?;
        let event_type = find(&self.config.event_type, "[outbox.columns] event_type")?;
        let payload = find(&self.config.payload, "[outbox.columns] payload")?;
        let occurred_at = if self.config.occurred_at.is_empty() {
            None
        } else {
            let i = find(&self.config.occurred_at, "[outbox.columns] occurred_at")?;
            Some((i, relation.columns[i].type_oid))
        };
        Ok(Mapping {
            id,
            key,
            event_type,
            payload,
            occurred_at,
            headers: self
                .headers
                .iter()
                .map(|(h, c)| Ok((h.clone(), find(c, &format!("[outbox.headers] {h}"))?)))
                .collect::<std::result::Result<_, String>>()?,
            template: self
                .template
                .columns()
                .map(|c| Ok((c.to_owned(), find(c, "[kafka] topic")?)))
                .collect::<std::result::Result<_, String>>()?,
        })
    }
}

/// A timestamp column's text as ISO 8601; other types (and unparsable text) unchanged.
fn iso_timestamp(type_oid: u32, text: Bytes) -> Bytes {
    if !matches!(type_oid, pg_type::TIMESTAMPTZ | pg_type::TIMESTAMP) {
        return text;
    }
    match std::str::from_utf8(&text)
        .ok()
        .map(|s| text_to_json(type_oid, s))
    {
        Some(Ok(serde_json::Value::String(iso))) => Bytes::from(iso),
        _ => text,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
