//! Change events: decoded pgoutput messages turned into JSON-ready rows.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};
use walcast_pgoutput::message::{self, Oid, OldTuple, Relation, TupleData, Xid};
use walcast_pgoutput::relation::RelationCache;
use walcast_pgoutput::value::{base64, tuple_to_json};
use walcast_pgoutput::{Lsn, Timestamp};

use crate::error::{Error, Result};

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// A new row.
    Insert,
    /// A changed row.
    Update,
    /// A removed row.
    Delete,
    /// The table was truncated.
    Truncate,
    /// A logical decoding message (`pg_logical_emit_message`).
    Message,
}

/// One change, ready to serialize as one JSON object.
///
/// `new` is the row after the change (`null` for delete and truncate),
/// `old` the row before it when the server sent one: the key columns, or
/// the whole row under `REPLICA IDENTITY FULL`. Unchanged TOASTed columns
/// are left out of `new` and listed in `unchanged_toast`. For `message`,
/// `new` is `{"prefix", "content" | "content_base64", "transactional"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// Kind of change.
    pub op: Op,
    /// Where this change is in the WAL.
    pub lsn: Lsn,
    /// LSN of the commit record of its transaction (known from Begin); for a
    /// non-transactional message, the message's own LSN.
    pub commit_lsn: Lsn,
    /// Transaction id.
    pub xid: Option<Xid>,
    /// Commit time (serialized as RFC 3339 UTC, `2026-11-23T07:49:44.123456Z`).
    pub commit_ts: Option<Timestamp>,
    /// Schema of the table.
    pub schema: Option<String>,
    /// Table name.
    pub table: Option<String>,
    /// Row after the change.
    pub new: Option<Map<String, Value>>,
    /// Row before the change.
    pub old: Option<Map<String, Value>>,
    /// Columns of `new` whose (TOASTed) value did not change and was not sent.
    pub unchanged_toast: Vec<String>,
    /// The row as the server sent it, instead of `new`/`old`/`unchanged_toast`,
    /// when [`crate::ChangeStreamConfig::raw_rows`] is set (row changes only).
    #[serde(skip)]
    pub raw: Option<RawRow>,
}

/// A row change as the server sent it: the table's schema and the text-format
/// tuples, undecoded. For callers that read a few columns, or need a value's
/// exact text (a `jsonb` payload keeps its text instead of being re-serialized).
#[derive(Debug, Clone, PartialEq)]
pub struct RawRow {
    /// The table, as announced by the latest Relation message for it.
    pub relation: Arc<Relation>,
    /// The row after the change (insert, update).
    pub new: Option<TupleData>,
    /// The row before the change when the server sent one (update, delete).
    pub old: Option<OldTuple>,
}

/// Start of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TxnBegin {
    /// Transaction id.
    pub xid: Xid,
    /// LSN of its commit record.
    pub commit_lsn: Lsn,
    /// Commit time (serialized as RFC 3339 UTC).
    pub commit_ts: Timestamp,
}

/// End of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TxnCommit {
    /// Transaction id.
    pub xid: Xid,
    /// LSN of its commit record.
    pub commit_lsn: Lsn,
    /// End of the commit record: confirm this once the whole transaction is durable.
    pub end_lsn: Lsn,
    /// Commit time (serialized as RFC 3339 UTC).
    pub commit_ts: Timestamp,
}

/// The connection was lost inside a transaction whose Begin was handed out.
///
/// Its Commit will never follow: after the reconnection the server sends the whole
/// transaction again, from a new [`Event::Begin`]. A caller forgets what it kept of the
/// transaction (changes it already wrote downstream are the documented duplicate tail, and
/// consumers deduplicate them) and must not wait for its Commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TxnInterrupted {
    /// Transaction id.
    pub xid: Xid,
    /// LSN of its commit record (known from Begin).
    pub commit_lsn: Lsn,
}

/// What [`crate::ChangeStream::next`] yields, in WAL order.
// A Change is moved once, from the stream's queue to the caller; boxing it would cost an
// allocation per row for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A transaction starts; its changes follow.
    Begin(TxnBegin),
    /// One change.
    Change(Change),
    /// The transaction's changes are complete.
    Commit(TxnCommit),
    /// The connection was lost before the transaction's Commit; it is sent again whole.
    Interrupted(TxnInterrupted),
}

impl Event {
    /// The LSN to confirm once this event (and everything before it) is
    /// durable: the commit end for a Commit; for a change inside a
    /// transaction its commit LSN (the server resends that transaction in
    /// full); for a non-transactional message its own LSN.
    pub fn confirm_lsn(&self) -> Lsn {
        match self {
            Event::Begin(b) => b.commit_lsn,
            Event::Change(c) => c.commit_lsn,
            Event::Commit(c) => c.end_lsn,
            Event::Interrupted(i) => i.commit_lsn,
        }
    }
}

/// The transaction being decoded.
#[derive(Debug, Clone)]
pub(crate) struct Txn {
    pub(crate) xid: Xid,
    pub(crate) commit_lsn: Lsn,
    /// Commit time as sent in Begin.
    pub(crate) commit_ts: Timestamp,
}

impl Txn {
    pub(crate) fn from_begin(b: &message::Begin) -> Txn {
        Txn {
            xid: b.xid,
            commit_lsn: b.final_lsn,
            commit_ts: b.commit_time,
        }
    }

    fn change(&self, op: Op, lsn: Lsn) -> Change {
        Change {
            op,
            lsn,
            commit_lsn: self.commit_lsn,
            xid: Some(self.xid),
            commit_ts: Some(self.commit_ts),
            schema: None,
            table: None,
            new: None,
            old: None,
            unchanged_toast: Vec::new(),
            raw: None,
        }
    }
}

/// Builds the change for a row message inside `txn`.
pub(crate) fn row_change(
    txn: &Txn,
    lsn: Lsn,
    relations: &RelationCache,
    msg: &message::LogicalMessage,
) -> Result<Option<Change>> {
    use message::LogicalMessage as M;
    let (op, oid, new, old) = match msg {
        M::Insert(i) => (Op::Insert, i.relation_oid, Some(&i.new), None),
        M::Update(u) => (Op::Update, u.relation_oid, Some(&u.new), u.old.as_ref()),
        M::Delete(d) => (Op::Delete, d.relation_oid, None, Some(&d.old)),
        _ => return Ok(None),
    };
    let rel = relations.get(oid).ok_or_else(|| {
        Error::Protocol(format!(
            "change for relation {oid} before its Relation message"
        ))
    })?;
    let mut c = txn.change(op, lsn);
    c.schema = Some(rel.namespace.clone());
    c.table = Some(rel.name.clone());
    if let Some(new) = new {
        let row = tuple_to_json(rel, new)?;
        c.new = Some(row.values);
        c.unchanged_toast = row.unchanged_toast;
    }
    if let Some(old) = old {
        c.old = Some(old_row(rel, old)?);
    }
    Ok(Some(c))
}

/// Like [`row_change`], leaving the tuples undecoded (in [`Change::raw`]);
/// the message is consumed so its values are moved, not copied.
pub(crate) fn raw_row_change(
    txn: &Txn,
    lsn: Lsn,
    relations: &HashMap<Oid, Arc<Relation>>,
    msg: message::LogicalMessage,
) -> Result<Option<Change>> {
    use message::LogicalMessage as M;
    let (op, oid, new, old) = match msg {
        M::Insert(i) => (Op::Insert, i.relation_oid, Some(i.new), None),
        M::Update(u) => (Op::Update, u.relation_oid, Some(u.new), u.old),
        M::Delete(d) => (Op::Delete, d.relation_oid, None, Some(d.old)),
        _ => return Ok(None),
    };
    let relation = relations.get(&oid).ok_or_else(|| {
        Error::Protocol(format!(
            "change for relation {oid} before its Relation message"
        ))
    })?;
    let mut c = txn.change(op, lsn);
    c.schema = Some(relation.namespace.clone());
    c.table = Some(relation.name.clone());
    c.raw = Some(RawRow {
        relation: Arc::clone(relation),
        new,
        old,
    });
    Ok(Some(c))
}

/// A key-only old tuple carries nulls for the non-key columns: leave them out.
fn old_row(rel: &message::Relation, old: &OldTuple) -> Result<Map<String, Value>> {
    let mut row = tuple_to_json(rel, old.tuple())?.values;
    if let OldTuple::Key(_) = old {
        row.retain(|name, _| rel.columns.iter().any(|c| c.is_key && &c.name == name));
    }
    Ok(row)
}

/// One change per truncated relation.
pub(crate) fn truncate_changes(
    txn: &Txn,
    lsn: Lsn,
    relations: &RelationCache,
    t: &message::Truncate,
) -> Result<Vec<Change>> {
    t.relation_oids
        .iter()
        .map(|oid| {
            let rel = relations.get(*oid).ok_or_else(|| {
                Error::Protocol(format!(
                    "truncate of relation {oid} before its Relation message"
                ))
            })?;
            let mut c = txn.change(Op::Truncate, lsn);
            c.schema = Some(rel.namespace.clone());
            c.table = Some(rel.name.clone());
            Ok(c)
        })
        .collect()
}

/// A logical decoding message; `txn` is `None` for a non-transactional one.
pub(crate) fn message_change(txn: Option<&Txn>, lsn: Lsn, m: &message::Message) -> Change {
    let mut c = match txn {
        Some(t) => t.change(Op::Message, lsn),
        None => Change {
            op: Op::Message,
            lsn: m.lsn,
            commit_lsn: m.lsn,
            xid: m.xid,
            commit_ts: None,
            schema: None,
            table: None,
            new: None,
            old: None,
            unchanged_toast: Vec::new(),
            raw: None,
        },
    };
    let mut body = Map::new();
    body.insert("prefix".into(), Value::String(m.prefix.clone()));
    match std::str::from_utf8(&m.content) {
        Ok(s) => body.insert("content".into(), Value::String(s.to_owned())),
        Err(_) => body.insert("content_base64".into(), Value::String(base64(&m.content))),
    };
    body.insert("transactional".into(), Value::Bool(m.transactional));
    c.new = Some(body);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_one_flat_object() {
        let txn = Txn {
            xid: 7,
            commit_lsn: Lsn(0x16_B374_D848),
            commit_ts: Timestamp::from_pg_micros(848_735_384_123_456),
        };
        let mut c = txn.change(Op::Update, Lsn(0x16_B374_D000));
        c.schema = Some("public".into());
        c.table = Some("t".into());
        let mut new = Map::new();
        new.insert("id".into(), Value::from(1));
        c.new = Some(new);
        c.unchanged_toast = vec!["big".into()];
        let json = serde_json::to_string(&c).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"op":"update","lsn":"16/B374D000","commit_lsn":"16/B374D848","xid":7,"commit_ts":"2026-11-23T07:49:44.123456Z","schema":"public","table":"t","new":{"id":1},"old":null,"unchanged_toast":["big"]}"#
        );
    }
}
