//! Sans-IO decoding of PostgreSQL logical replication.
//!
//! This crate turns bytes into values and never touches a socket:
//!
//! ```text
//!  CopyData payload ──ReplicationMessage::parse──▶ XLogData { data, .. } / PrimaryKeepalive
//!                                                     │
//!                                           Decoder::decode (pgoutput v1/v2)
//!                                                     ▼
//!                       LogicalMessage (Begin, Relation, Insert, ..., Commit)
//!                                                     │
//!                        RelationCache + value::tuple_to_json
//!                                                     ▼
//!                                   {"id": 1, "name": "a", ...}
//! ```
//!
//! * [`Lsn`] — WAL positions, displayed like Postgres (`16/B374D848`).
//! * [`replication`] — the streaming replication sub-protocol inside `CopyData`
//!   (`w` XLogData, `k` keepalive, `r` standby status update).
//! * [`message`] — pgoutput messages (protocol v1 and v2) and the stateful
//!   [`message::Decoder`].
//! * [`relation`] — table schemas and the [`relation::RelationCache`].
//! * [`value`] — text-format column values to typed JSON, and rows to JSON
//!   objects ([`value::tuple_to_json`]).
//!
//! Every parser returns a [`DecodeError`] on short or malformed input and
//! never panics; this is exercised by property tests and a fuzz target.
//!
//! ```
//! use bytes::BytesMut;
//! use walcast_pgoutput::{Lsn, replication::{ReplicationMessage, StandbyStatusUpdate}};
//!
//! // A keepalive asking for a reply.
//! let mut frame = vec![b'k'];
//! frame.extend_from_slice(&0x16_B374_D848u64.to_be_bytes());
//! frame.extend_from_slice(&0i64.to_be_bytes());
//! frame.push(1);
//!
//! let ReplicationMessage::PrimaryKeepalive(ka) = ReplicationMessage::parse(&frame)? else {
//!     unreachable!("a 'k' frame is a keepalive");
//! };
//! assert_eq!(ka.wal_end.to_string(), "16/B374D848");
//! assert!(ka.reply_requested);
//!
//! // Answer it.
//! let mut out = BytesMut::new();
//! StandbyStatusUpdate {
//!     write: ka.wal_end,
//!     flush: Lsn::ZERO,
//!     apply: Lsn::ZERO,
//!     client_time: walcast_pgoutput::pg_epoch_micros(std::time::SystemTime::now()),
//!     reply_requested: false,
//! }
//! .encode(&mut out);
//! assert_eq!(out[0], b'r');
//! # Ok::<(), walcast_pgoutput::DecodeError>(())
//! ```

mod error;
mod lsn;
pub mod message;
mod reader;
pub mod relation;
pub mod replication;
mod time;
pub mod value;

pub use error::{DecodeError, DecodeErrorKind};
pub use lsn::{Lsn, ParseLsnError};
pub use time::{PG_EPOCH_UNIX_SECS, format_pg_micros, pg_epoch_micros, system_time_from_pg_micros};
