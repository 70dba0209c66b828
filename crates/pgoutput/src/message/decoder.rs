//! The stateful pgoutput decoder.

use bytes::Bytes;

use super::{
    Begin, Commit, Delete, Insert, LogicalMessage, Message, OldTuple, Origin, Relation,
    StreamAbort, StreamCommit, StreamStart, Truncate, TupleData, Type, Update, Xid,
};
use crate::error::{DecodeError, DecodeErrorKind};
use crate::lsn::Lsn;
use crate::reader::Reader;
use crate::relation::{Column, ReplicaIdentity};
use crate::timestamp::Timestamp;

const BEGIN: u8 = b'B';
const COMMIT: u8 = b'C';
const ORIGIN: u8 = b'O';
const RELATION: u8 = b'R';
const TYPE: u8 = b'Y';
const INSERT: u8 = b'I';
const UPDATE: u8 = b'U';
const DELETE: u8 = b'D';
const TRUNCATE: u8 = b'T';
const MESSAGE: u8 = b'M';
const STREAM_START: u8 = b'S';
const STREAM_STOP: u8 = b'E';
const STREAM_COMMIT: u8 = b'c';
const STREAM_ABORT: u8 = b'A';

const TUPLE_NEW: u8 = b'N';
const TUPLE_KEY: u8 = b'K';
const TUPLE_OLD: u8 = b'O';

const TRUNCATE_CASCADE: u8 = 1;
const TRUNCATE_RESTART_IDENTITY: u8 = 2;

const EXPECTED_TAGS: &str = "a pgoutput message tag (B C O R Y I U D T M S E c A)";

/// Decodes pgoutput messages of one replication session, in order.
///
/// `in_stream` is `true` between Stream Start and Stream Stop (protocol v2),
/// where change messages carry a leading xid. It changes only when a Stream
/// Start or Stop decodes successfully; a failed decode leaves the decoder as
/// it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoder {
    /// The `proto_version` given to `START_REPLICATION` (1 or 2; higher
    /// versions are decoded like 2, without their extra message kinds).
    pub protocol_version: u32,
    /// Inside a Stream Start ... Stream Stop block.
    pub in_stream: bool,
}

impl Decoder {
    /// A decoder for a session started with `proto_version` `protocol_version`.
    pub fn new(protocol_version: u32) -> Self {
        Self {
            protocol_version,
            in_stream: false,
        }
    }

    /// Decodes one message. Copies `data` once; see [`Decoder::decode_bytes`].
    pub fn decode(&mut self, data: &[u8]) -> Result<LogicalMessage, DecodeError> {
        self.decode_bytes(Bytes::copy_from_slice(data))
    }

    /// Decodes one message; tuple values and message content are zero-copy
    /// slices of `data`.
    pub fn decode_bytes(&mut self, data: Bytes) -> Result<LogicalMessage, DecodeError> {
        let mut r = Reader::new(&data, "pgoutput message");
        let tag = r.u8("Byte1 message tag")?;
        let msg = match tag {
            BEGIN => {
                r.set_context("Begin");
                LogicalMessage::Begin(Begin {
                    final_lsn: Lsn(r.u64("Int64 final LSN")?),
                    commit_time: Timestamp::from_pg_micros(r.i64("Int64 commit timestamp")?),
                    xid: r.u32("Int32 xid")?,
                })
            }
            COMMIT => {
                r.set_context("Commit");
                LogicalMessage::Commit(Commit {
                    flags: r.u8("Int8 flags")?,
                    commit_lsn: Lsn(r.u64("Int64 commit LSN")?),
                    end_lsn: Lsn(r.u64("Int64 end LSN")?),
                    commit_time: Timestamp::from_pg_micros(r.i64("Int64 commit timestamp")?),
                })
            }
            ORIGIN => {
                r.set_context("Origin");
                LogicalMessage::Origin(Origin {
                    commit_lsn: Lsn(r.u64("Int64 origin commit LSN")?),
                    name: r.cstr("String origin name")?,
                })
            }
            RELATION => {
                r.set_context("Relation");
                LogicalMessage::Relation(self.relation(&mut r)?)
            }
            TYPE => {
                r.set_context("Type");
                LogicalMessage::Type(Type {
                    xid: self.stream_xid(&mut r)?,
                    oid: r.u32("Int32 type OID")?,
                    namespace: r.cstr("String namespace")?,
                    name: r.cstr("String type name")?,
                })
            }
            INSERT => {
                r.set_context("Insert");
                let xid = self.stream_xid(&mut r)?;
                let relation_oid = r.u32("Int32 relation OID")?;
                expect_tag(&mut r, TUPLE_NEW, "'N' (new tuple)")?;
                LogicalMessage::Insert(Insert {
                    xid,
                    relation_oid,
                    new: TupleData::parse(&mut r)?,
                })
            }
            UPDATE => {
                r.set_context("Update");
                LogicalMessage::Update(self.update(&mut r)?)
            }
            DELETE => {
                r.set_context("Delete");
                let xid = self.stream_xid(&mut r)?;
                let relation_oid = r.u32("Int32 relation OID")?;
                let at = r.pos();
                let old = match r.u8("Byte1 'K' or 'O'")? {
                    TUPLE_KEY => OldTuple::Key(TupleData::parse(&mut r)?),
                    TUPLE_OLD => OldTuple::Full(TupleData::parse(&mut r)?),
                    tag => return Err(unknown_tag(&r, at, tag, "'K' (old key) or 'O' (old row)")),
                };
                LogicalMessage::Delete(Delete {
                    xid,
                    relation_oid,
                    old,
                })
            }
            TRUNCATE => {
                r.set_context("Truncate");
                LogicalMessage::Truncate(self.truncate(&mut r)?)
            }
            MESSAGE => {
                r.set_context("Message");
                let xid = self.stream_xid(&mut r)?;
                let transactional = r.u8("Int8 flags")? & 1 == 1;
                let lsn = Lsn(r.u64("Int64 message LSN")?);
                let prefix = r.cstr("String prefix")?;
                let at = r.pos();
                let len = r.i32("Int32 content length")?;
                let len =
                    usize::try_from(len).map_err(|_| r.invalid_at(at, "a non-negative length"))?;
                LogicalMessage::Message(Message {
                    xid,
                    transactional,
                    lsn,
                    prefix,
                    content: r.bytes(len, "Byten content")?,
                })
            }
            STREAM_START => {
                r.set_context("Stream Start");
                self.require_streaming(&r)?;
                if self.in_stream {
                    return Err(r.invalid_at(0, "no Stream Start before the previous Stream Stop"));
                }
                let xid = r.u32("Int32 xid")?;
                let at = r.pos();
                let first_segment = match r.u8("Int8 first segment flag")? {
                    0 => false,
                    1 => true,
                    _ => return Err(r.invalid_at(at, "first segment flag 0 or 1")),
                };
                LogicalMessage::StreamStart(StreamStart { xid, first_segment })
            }
            STREAM_STOP => {
                r.set_context("Stream Stop");
                self.require_streaming(&r)?;
                if !self.in_stream {
                    return Err(r.invalid_at(0, "Stream Stop only after Stream Start"));
                }
                LogicalMessage::StreamStop
            }
            STREAM_COMMIT => {
                r.set_context("Stream Commit");
                self.require_streaming(&r)?;
                LogicalMessage::StreamCommit(StreamCommit {
                    xid: r.u32("Int32 xid")?,
                    flags: r.u8("Int8 flags")?,
                    commit_lsn: Lsn(r.u64("Int64 commit LSN")?),
                    end_lsn: Lsn(r.u64("Int64 end LSN")?),
                    commit_time: Timestamp::from_pg_micros(r.i64("Int64 commit timestamp")?),
                })
            }
            STREAM_ABORT => {
                r.set_context("Stream Abort");
                self.require_streaming(&r)?;
                let xid = r.u32("Int32 xid")?;
                let subxid = r.u32("Int32 subtransaction xid")?;
                // Postgres 16+ (protocol v4, streaming 'parallel') appends these.
                let (abort_lsn, abort_time) = if r.remaining() > 0 {
                    (
                        Some(Lsn(r.u64("Int64 abort LSN")?)),
                        Some(r.i64("Int64 abort timestamp")?),
                    )
                } else {
                    (None, None)
                };
                LogicalMessage::StreamAbort(StreamAbort {
                    xid,
                    subxid,
                    abort_lsn,
                    abort_time,
                })
            }
            tag => return Err(unknown_tag(&r, 0, tag, EXPECTED_TAGS)),
        };
        r.finish()?;
        match msg {
            LogicalMessage::StreamStart(_) => self.in_stream = true,
            LogicalMessage::StreamStop => self.in_stream = false,
            _ => {}
        }
        Ok(msg)
    }

    /// The leading xid of change messages inside a v2 stream block.
    fn stream_xid(&self, r: &mut Reader<'_>) -> Result<Option<Xid>, DecodeError> {
        if self.in_stream {
            r.u32("Int32 xid of the streamed transaction").map(Some)
        } else {
            Ok(None)
        }
    }

    fn require_streaming(&self, r: &Reader<'_>) -> Result<(), DecodeError> {
        if self.protocol_version >= 2 {
            Ok(())
        } else {
            Err(r.invalid_at(0, "no stream messages in protocol version 1"))
        }
    }

    fn relation(&self, r: &mut Reader<'_>) -> Result<Relation, DecodeError> {
        let xid = self.stream_xid(r)?;
        let oid = r.u32("Int32 relation OID")?;
        let namespace = r.cstr("String namespace")?;
        let name = r.cstr("String relation name")?;
        let at = r.pos();
        let identity = r.u8("Int8 replica identity")?;
        let replica_identity = ReplicaIdentity::from_byte(identity)
            .ok_or_else(|| unknown_tag(r, at, identity, "replica identity 'd', 'n', 'f' or 'i'"))?;
        let at = r.pos();
        let n = r.i16("Int16 number of columns")?;
        let n = usize::try_from(n).map_err(|_| r.invalid_at(at, "a non-negative column count"))?;
        let mut columns = Vec::with_capacity(n.min(r.remaining()));
        for _ in 0..n {
            let flags = r.u8("Int8 column flags")?;
            columns.push(Column {
                is_key: flags & 1 == 1,
                name: r.cstr("String column name")?,
                type_oid: r.u32("Int32 column type OID")?,
                type_modifier: r.i32("Int32 column type modifier")?,
            });
        }
        Ok(Relation {
            xid,
            oid,
            namespace,
            name,
            replica_identity,
            columns,
        })
    }

    fn update(&self, r: &mut Reader<'_>) -> Result<Update, DecodeError> {
        let xid = self.stream_xid(r)?;
        let relation_oid = r.u32("Int32 relation OID")?;
        let at = r.pos();
        let (old, new) = match r.u8("Byte1 'K', 'O' or 'N'")? {
            TUPLE_NEW => (None, TupleData::parse(r)?),
            tag @ (TUPLE_KEY | TUPLE_OLD) => {
                let old = TupleData::parse(r)?;
                let old = if tag == TUPLE_KEY {
                    OldTuple::Key(old)
                } else {
                    OldTuple::Full(old)
                };
                expect_tag(r, TUPLE_NEW, "'N' (new tuple)")?;
                (Some(old), TupleData::parse(r)?)
            }
            tag => {
                return Err(unknown_tag(
                    r,
                    at,
                    tag,
                    "'K' (old key), 'O' (old row) or 'N' (new row)",
                ));
            }
        };
        Ok(Update {
            xid,
            relation_oid,
            old,
            new,
        })
    }

    fn truncate(&self, r: &mut Reader<'_>) -> Result<Truncate, DecodeError> {
        let xid = self.stream_xid(r)?;
        let at = r.pos();
        let n = r.i32("Int32 number of relations")?;
        let n =
            usize::try_from(n).map_err(|_| r.invalid_at(at, "a non-negative relation count"))?;
        let options = r.u8("Int8 option bits")?;
        let mut relation_oids = Vec::with_capacity(n.min(r.remaining() / 4));
        for _ in 0..n {
            relation_oids.push(r.u32("Int32 relation OID")?);
        }
        Ok(Truncate {
            xid,
            cascade: options & TRUNCATE_CASCADE != 0,
            restart_identity: options & TRUNCATE_RESTART_IDENTITY != 0,
            relation_oids,
        })
    }
}

fn expect_tag(r: &mut Reader<'_>, want: u8, expected: &'static str) -> Result<(), DecodeError> {
    let at = r.pos();
    match r.u8(expected)? {
        tag if tag == want => Ok(()),
        tag => Err(unknown_tag(r, at, tag, expected)),
    }
}

fn unknown_tag(r: &Reader<'_>, at: usize, tag: u8, expected: &'static str) -> DecodeError {
    DecodeError::new(
        r.context(),
        at,
        DecodeErrorKind::UnknownTag { tag, expected },
    )
}

#[cfg(test)]
mod tests;
