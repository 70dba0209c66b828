//! pgoutput logical replication messages, protocol versions 1 and 2
//! (PostgreSQL docs, "Logical Replication Message Formats").
//!
//! Each [`XLogData`](crate::replication::XLogData) payload is one message.
//! Decode them in order with one [`Decoder`] per replication connection: in
//! protocol v2, messages between [`StreamStart`] and
//! [`LogicalMessage::StreamStop`] carry the streamed transaction's xid, and
//! only the decoder's state says whether to expect it.
//!
//! A plain transaction:
//!
//! ```text
//! Begin → [Origin] → (Relation | Type | Insert | Update | Delete | Truncate | Message)* → Commit
//! ```
//!
//! A large transaction streamed before it commits (v2, `streaming 'on'`):
//!
//! ```text
//! (StreamStart → (Relation | Type | Insert | ... , each with xid)* → StreamStop)+
//!     → StreamCommit | StreamAbort
//! ```
//!
//! Inside a stream block each change carries the xid of the (sub)transaction
//! that made it. A Stream Abort with `subxid != xid` discards only that
//! subtransaction's changes (a `ROLLBACK TO SAVEPOINT`); the transaction may
//! still commit.
//!
//! Relation messages precede the first change to a table in a session and
//! follow every schema change; keep them in a
//! [`RelationCache`](crate::relation::RelationCache).

mod decoder;
mod tuple;

pub use decoder::Decoder;
pub use tuple::{TupleData, TupleValue};

use bytes::Bytes;

use crate::lsn::Lsn;
use crate::relation::{Column, ReplicaIdentity};
use crate::timestamp::Timestamp;

/// A PostgreSQL object identifier.
pub type Oid = u32;
/// A PostgreSQL transaction id.
pub type Xid = u32;

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogicalMessage {
    /// `B`
    Begin(Begin),
    /// `C`
    Commit(Commit),
    /// `O`
    Origin(Origin),
    /// `R`
    Relation(Relation),
    /// `Y`
    Type(Type),
    /// `I`
    Insert(Insert),
    /// `U`
    Update(Update),
    /// `D`
    Delete(Delete),
    /// `T`
    Truncate(Truncate),
    /// `M`, from `pg_logical_emit_message` (needs the `messages` option).
    Message(Message),
    /// `S` (v2)
    StreamStart(StreamStart),
    /// `E` (v2)
    StreamStop,
    /// `c` (v2)
    StreamCommit(StreamCommit),
    /// `A` (v2)
    StreamAbort(StreamAbort),
}

/// `B` — start of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// The LSN of the transaction's commit record.
    pub final_lsn: Lsn,
    /// Commit time.
    pub commit_time: Timestamp,
    /// Transaction id.
    pub xid: Xid,
}

/// `C` — end of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// Currently unused by Postgres (always 0).
    pub flags: u8,
    /// The LSN of the commit record.
    pub commit_lsn: Lsn,
    /// The LSN just past the commit record: the position to confirm once the
    /// transaction is durable downstream.
    pub end_lsn: Lsn,
    /// Commit time.
    pub commit_time: Timestamp,
}

/// `O` — the transaction was replicated from another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The commit LSN on the origin server.
    pub commit_lsn: Lsn,
    /// The replication origin's name.
    pub name: String,
}

/// `R` — a table's schema, sent before its first change and after any change
/// to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Inside a v2 stream block: the xid of the (sub)transaction that made the
    /// change, which may be a subtransaction of [`StreamStart::xid`]; a
    /// [`StreamAbort`] whose `subxid` matches discards it. `None` otherwise.
    pub xid: Option<Xid>,
    /// The relation's OID: the key that Insert/Update/Delete refer to.
    pub oid: Oid,
    /// The schema; Postgres sends `""` for `pg_catalog`.
    pub namespace: String,
    /// The table name.
    pub name: String,
    /// `REPLICA IDENTITY` setting.
    pub replica_identity: ReplicaIdentity,
    /// Published columns, in tuple order.
    pub columns: Vec<Column>,
}

/// `Y` — a non-built-in data type used by a following Relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Type {
    /// Inside a v2 stream block: the xid of the (sub)transaction that made the
    /// change, which may be a subtransaction of [`StreamStart::xid`]; a
    /// [`StreamAbort`] whose `subxid` matches discards it. `None` otherwise.
    pub xid: Option<Xid>,
    /// The type's OID.
    pub oid: Oid,
    /// The type's schema; `""` for `pg_catalog`.
    pub namespace: String,
    /// The type's name.
    pub name: String,
}

/// `I` — a new row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    /// Inside a v2 stream block: the xid of the (sub)transaction that made the
    /// change, which may be a subtransaction of [`StreamStart::xid`]; a
    /// [`StreamAbort`] whose `subxid` matches discards it. `None` otherwise.
    pub xid: Option<Xid>,
    /// OID of the table, see [`Relation::oid`].
    pub relation_oid: Oid,
    /// The new row.
    pub new: TupleData,
}

/// The "before" image sent with Update and Delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: only the replica identity (key) columns; the others are null.
    Key(TupleData),
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full(TupleData),
}

impl OldTuple {
    /// The tuple, whichever kind it is.
    pub fn tuple(&self) -> &TupleData {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

/// `U` — a changed row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// Inside a v2 stream block: the xid of the (sub)transaction that made the
    /// change, which may be a subtransaction of [`StreamStart::xid`]; a
    /// [`StreamAbort`] whose `subxid` matches discards it. `None` otherwise.
    pub xid: Option<Xid>,
    /// OID of the table, see [`Relation::oid`].
    pub relation_oid: Oid,
    /// The old key (if the key changed) or old row (`REPLICA IDENTITY FULL`);
    /// `None` when the key did not change under the default identity.
    pub old: Option<OldTuple>,
    /// The new row; unchanged TOASTed columns are
    /// [`TupleValue::UnchangedToast`].
    pub new: TupleData,
}

/// `D` — a deleted row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// Inside a v2 stream block: the xid of the (sub)transaction that made the
    /// change, which may be a subtransaction of [`StreamStart::xid`]; a
    /// [`StreamAbort`] whose `subxid` matches discards it. `None` otherwise.
    pub xid: Option<Xid>,
    /// OID of the table, see [`Relation::oid`].
    pub relation_oid: Oid,
    /// The old key or, with `REPLICA IDENTITY FULL`, the old row.
    pub old: OldTuple,
}

/// `T` — `TRUNCATE` of one or more tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// Inside a v2 stream block: the xid of the (sub)transaction that made the
    /// change, which may be a subtransaction of [`StreamStart::xid`]; a
    /// [`StreamAbort`] whose `subxid` matches discards it. `None` otherwise.
    pub xid: Option<Xid>,
    /// `TRUNCATE ... CASCADE`.
    pub cascade: bool,
    /// `TRUNCATE ... RESTART IDENTITY`.
    pub restart_identity: bool,
    /// The truncated tables.
    pub relation_oids: Vec<Oid>,
}

/// `M` — a message from `pg_logical_emit_message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Inside a v2 stream block: the xid of the (sub)transaction that made the
    /// change, which may be a subtransaction of [`StreamStart::xid`]; a
    /// [`StreamAbort`] whose `subxid` matches discards it. `None` otherwise.
    pub xid: Option<Xid>,
    /// Emitted as part of a transaction (delivered at its commit) rather
    /// than immediately.
    pub transactional: bool,
    /// The LSN of the message.
    pub lsn: Lsn,
    /// The prefix given to `pg_logical_emit_message`.
    pub prefix: String,
    /// The content, as bytes.
    pub content: Bytes,
}

/// `S` — start of a block of changes of an in-progress transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStart {
    /// The streamed transaction.
    pub xid: Xid,
    /// Whether this is the transaction's first block.
    pub first_segment: bool,
}

/// `c` — a streamed transaction committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCommit {
    /// The streamed transaction.
    pub xid: Xid,
    /// Currently unused by Postgres (always 0).
    pub flags: u8,
    /// The LSN of the commit record.
    pub commit_lsn: Lsn,
    /// The LSN just past the commit record.
    pub end_lsn: Lsn,
    /// Commit time.
    pub commit_time: Timestamp,
}

/// `A` — a streamed (sub)transaction aborted; discard its changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamAbort {
    /// The top-level transaction.
    pub xid: Xid,
    /// The aborted subtransaction; equal to `xid` if the whole transaction aborted.
    pub subxid: Xid,
    /// Abort LSN, sent only by Postgres 16+ with `streaming 'parallel'`.
    pub abort_lsn: Option<Lsn>,
    /// Abort time, sent only by Postgres 16+ with `streaming 'parallel'`.
    pub abort_time: Option<i64>,
}
