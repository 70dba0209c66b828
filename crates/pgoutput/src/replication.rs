//! The streaming replication sub-protocol carried inside `CopyData` frames
//! (PostgreSQL docs, "Streaming Replication Protocol").
//!
//! After `START_REPLICATION ... LOGICAL`, every `CopyData` payload from the
//! server is a [`ReplicationMessage`]: either WAL data (`w`) whose `data` is
//! one pgoutput message (see [`crate::message`]), or a keepalive (`k`). The
//! client answers with [`StandbyStatusUpdate`] (`r`) frames.
//!
//! ```text
//!   server ── CopyData('w' XLogData { data: pgoutput bytes }) ──▶ client
//!   server ── CopyData('k' PrimaryKeepalive)                  ──▶ client
//!   server ◀── CopyData('r' StandbyStatusUpdate)             ── client
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, DecodeErrorKind};
use crate::lsn::Lsn;
use crate::reader::Reader;

/// Tag of [`XLogData`].
pub const XLOG_DATA_TAG: u8 = b'w';
/// Tag of [`PrimaryKeepalive`].
pub const PRIMARY_KEEPALIVE_TAG: u8 = b'k';
/// Tag of [`StandbyStatusUpdate`].
pub const STANDBY_STATUS_UPDATE_TAG: u8 = b'r';

/// A server-to-client message inside a replication `CopyData` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplicationMessage {
    /// `w`: a chunk of WAL, for logical replication one pgoutput message.
    XLogData(XLogData),
    /// `k`: the server's heartbeat.
    PrimaryKeepalive(PrimaryKeepalive),
}

/// `w` — WAL data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XLogData {
    /// Start of the WAL carried in `data`.
    pub wal_start: Lsn,
    /// Current end of WAL on the server.
    pub wal_end: Lsn,
    /// Server clock at transmission, µs since 2000-01-01 UTC.
    pub server_time: i64,
    /// The payload: for pgoutput, one logical replication message.
    pub data: Bytes,
}

/// `k` — keepalive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryKeepalive {
    /// Current end of WAL on the server.
    pub wal_end: Lsn,
    /// Server clock at transmission, µs since 2000-01-01 UTC.
    pub server_time: i64,
    /// The server asks for a [`StandbyStatusUpdate`] as soon as possible,
    /// or it may disconnect after `wal_sender_timeout`.
    pub reply_requested: bool,
}

impl ReplicationMessage {
    /// Parses one `CopyData` payload. Copies `buf` once; use
    /// [`ReplicationMessage::parse_bytes`] to slice `data` without copying.
    pub fn parse(buf: &[u8]) -> Result<ReplicationMessage, DecodeError> {
        Self::parse_bytes(Bytes::copy_from_slice(buf))
    }

    /// Parses one `CopyData` payload; `XLogData::data` is a zero-copy slice of `buf`.
    pub fn parse_bytes(buf: Bytes) -> Result<ReplicationMessage, DecodeError> {
        let mut r = Reader::new(&buf, "replication message");
        let tag = r.u8("Byte1 message tag")?;
        match tag {
            XLOG_DATA_TAG => {
                r.set_context("XLogData");
                let wal_start = Lsn(r.u64("Int64 wal_start")?);
                let wal_end = Lsn(r.u64("Int64 wal_end")?);
                let server_time = r.i64("Int64 server_time")?;
                let data = r.rest();
                Ok(ReplicationMessage::XLogData(XLogData {
                    wal_start,
                    wal_end,
                    server_time,
                    data,
                }))
            }
            PRIMARY_KEEPALIVE_TAG => {
                r.set_context("PrimaryKeepalive");
                let wal_end = Lsn(r.u64("Int64 wal_end")?);
                let server_time = r.i64("Int64 server_time")?;
                let reply_requested = parse_bool(&mut r, "Byte1 reply_requested")?;
                r.finish()?;
                Ok(ReplicationMessage::PrimaryKeepalive(PrimaryKeepalive {
                    wal_end,
                    server_time,
                    reply_requested,
                }))
            }
            tag => Err(DecodeError::new(
                "replication message",
                0,
                DecodeErrorKind::UnknownTag {
                    tag,
                    expected: "'w' (XLogData) or 'k' (PrimaryKeepalive)",
                },
            )),
        }
    }
}

fn parse_bool(r: &mut Reader<'_>, expected: &'static str) -> Result<bool, DecodeError> {
    let at = r.pos();
    match r.u8(expected)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(r.invalid_at(at, "0 or 1 for reply_requested")),
    }
}

/// `r` — the client's progress report, sent inside `CopyData`.
///
/// `flush` is what the server may discard WAL up to (and what the slot's
/// `confirmed_flush_lsn` advances to): only report an LSN there once
/// everything before it is durable downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StandbyStatusUpdate {
    /// Last WAL byte + 1 received and written.
    pub write: Lsn,
    /// Last WAL byte + 1 durably processed.
    pub flush: Lsn,
    /// Last WAL byte + 1 applied.
    pub apply: Lsn,
    /// Client clock, µs since 2000-01-01 UTC (see [`crate::Timestamp::from_system_time`]).
    pub client_time: i64,
    /// Ask the server to reply immediately (with a keepalive).
    pub reply_requested: bool,
}

impl StandbyStatusUpdate {
    /// Encoded length in bytes, tag included.
    pub const LEN: usize = 1 + 8 * 4 + 1;

    /// Appends the `r` message (the `CopyData` payload, without the `d` frame).
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(Self::LEN);
        out.put_u8(STANDBY_STATUS_UPDATE_TAG);
        out.put_u64(self.write.0);
        out.put_u64(self.flush.0);
        out.put_u64(self.apply.0);
        out.put_i64(self.client_time);
        out.put_u8(u8::from(self.reply_requested));
    }

    /// Parses an `r` message, as a server would. Mostly useful in tests.
    pub fn parse(buf: &[u8]) -> Result<StandbyStatusUpdate, DecodeError> {
        let buf = Bytes::copy_from_slice(buf);
        let mut r = Reader::new(&buf, "StandbyStatusUpdate");
        match r.u8("Byte1 message tag")? {
            STANDBY_STATUS_UPDATE_TAG => {}
            tag => {
                return Err(DecodeError::new(
                    "StandbyStatusUpdate",
                    0,
                    DecodeErrorKind::UnknownTag {
                        tag,
                        expected: "'r'",
                    },
                ));
            }
        }
        let write = Lsn(r.u64("Int64 write")?);
        let flush = Lsn(r.u64("Int64 flush")?);
        let apply = Lsn(r.u64("Int64 apply")?);
        let client_time = r.i64("Int64 client_time")?;
        let reply_requested = parse_bool(&mut r, "Byte1 reply_requested")?;
        r.finish()?;
        Ok(StandbyStatusUpdate {
            write,
            flush,
            apply,
            client_time,
            reply_requested,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_xlogdata_zero_copy() {
        let mut raw = vec![b'w'];
        raw.extend_from_slice(&0x16_B374_D848u64.to_be_bytes());
        raw.extend_from_slice(&0x16_B374_D900u64.to_be_bytes());
        raw.extend_from_slice(&42i64.to_be_bytes());
        raw.extend_from_slice(b"B payload");
        let buf = Bytes::from(raw);
        let msg = ReplicationMessage::parse_bytes(buf.clone());
        let expected = ReplicationMessage::XLogData(XLogData {
            wal_start: Lsn(0x16_B374_D848),
            wal_end: Lsn(0x16_B374_D900),
            server_time: 42,
            data: Bytes::from_static(b"B payload"),
        });
        assert_eq!(msg.as_ref(), Ok(&expected));
        if let Ok(ReplicationMessage::XLogData(x)) = msg {
            assert_eq!(
                x.data.as_ptr(),
                buf[25..].as_ptr(),
                "data must be a slice of buf"
            );
        }
        assert_eq!(ReplicationMessage::parse(&buf), Ok(expected));
    }

    #[test]
    fn parses_keepalive() {
        let mut raw = vec![b'k'];
        raw.extend_from_slice(&7u64.to_be_bytes());
        raw.extend_from_slice(&(-5i64).to_be_bytes());
        raw.push(1);
        assert_eq!(
            ReplicationMessage::parse(&raw),
            Ok(ReplicationMessage::PrimaryKeepalive(PrimaryKeepalive {
                wal_end: Lsn(7),
                server_time: -5,
                reply_requested: true,
            }))
        );
        raw.push(0);
        let e = ReplicationMessage::parse(&raw).err();
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some("decoding PrimaryKeepalive: at offset 18: 1 unexpected trailing byte(s)")
        );
        raw.truncate(17);
        raw.push(2);
        assert!(ReplicationMessage::parse(&raw).is_err());
    }

    #[test]
    fn truncated_and_unknown_are_errors() {
        assert!(ReplicationMessage::parse(b"").is_err());
        assert!(ReplicationMessage::parse(b"w\0\0\0").is_err());
        assert!(ReplicationMessage::parse(b"k").is_err());
        let e = ReplicationMessage::parse(b"x").err();
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some(
                "decoding replication message: at offset 0: unknown tag 'x' (0x78), expected 'w' (XLogData) or 'k' (PrimaryKeepalive)"
            )
        );
    }

    #[test]
    fn encodes_status_update_bytes() {
        let u = StandbyStatusUpdate {
            write: Lsn(1),
            flush: Lsn(2),
            apply: Lsn(3),
            client_time: 4,
            reply_requested: false,
        };
        let mut out = BytesMut::new();
        u.encode(&mut out);
        let mut want = vec![b'r'];
        for v in [1u64, 2, 3, 4] {
            want.extend_from_slice(&v.to_be_bytes());
        }
        want.push(0);
        assert_eq!(&out[..], &want[..]);
        assert_eq!(out.len(), StandbyStatusUpdate::LEN);
    }

    proptest! {
        #[test]
        fn status_update_round_trip(w: u64, f: u64, a: u64, t: i64, reply: bool) {
            let u = StandbyStatusUpdate {
                write: Lsn(w), flush: Lsn(f), apply: Lsn(a), client_time: t, reply_requested: reply,
            };
            let mut out = BytesMut::new();
            u.encode(&mut out);
            prop_assert_eq!(StandbyStatusUpdate::parse(&out), Ok(u));
        }

        #[test]
        fn parse_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = ReplicationMessage::parse(&buf);
            let _ = StandbyStatusUpdate::parse(&buf);
        }

        #[test]
        fn parse_never_panics_with_valid_tag(
            tag in prop_oneof![Just(b'w'), Just(b'k'), Just(b'r')],
            rest in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut buf = vec![tag];
            buf.extend_from_slice(&rest);
            let _ = ReplicationMessage::parse(&buf);
            let _ = StandbyStatusUpdate::parse(&buf);
        }
    }
}
