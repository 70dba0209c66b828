//! Async Postgres logical replication client (pgoutput) for walcast.
//!
//! ```text
//!            ┌──────────── ordinary SQL connection (tokio-postgres) ───────────┐
//!            │ preflight: version, wal_level, REPLICATION, publication tables, │
//!            │ replica identity, slot (create if asked, in use by which pid?)  │
//!            └─────────────────────────────────────────────────────────────────┘
//!  Dsn (DSN) ─▶ transport (TCP | Unix | TLS) ─▶ startup + auth (trust, password, md5, SCRAM)
//!                                  │
//!          ReplicationConnection ──┤ IDENTIFY_SYSTEM, CREATE_REPLICATION_SLOT, START_REPLICATION
//!                                  ▼
//!          ReplicationStream (CopyBoth: XLogData / keepalive in, status updates out)
//!                                  ▼
//!          FeedbackStream ◀── Progress (which LSN to report, when)   ◀── confirm(lsn)
//!                                  ▼
//!          ChangeStream: Decoder + RelationCache + value ─▶ Begin, Change, ..., Commit
//!                                  ▼                       (reconnects with Backoff)
//!          tail(): JSON lines (walcast wal tail)
//! ```
//!
//! **When an LSN may be confirmed** is written down in [`progress`]: only
//! once the caller's output is durable, by the caller, via `confirm`; the
//! client never reports more except for the idle advance described there,
//! and never reports less than before.
//!
//! Errors are one type, [`Error`], each classified by
//! [`Error::is_retryable`]; operator-facing ones ([`Precondition`]) say what
//! to change.
//!
//! ```no_run
//! use walcast_postgres::Dsn;
//! use walcast_replication::{ChangeStream, ChangeStreamConfig, Event};
//!
//! # async fn run() -> walcast_replication::Result<()> {
//! let connect = Dsn::parse("host=127.0.0.1 user=walcast dbname=app sslmode=prefer")?;
//! let mut config = ChangeStreamConfig::new(connect, "walcast", "walcast_pub");
//! config.create = true;
//! config.tables = vec!["public.orders".parse()?];
//! let mut changes = ChangeStream::start(config).await?;
//! loop {
//!     match changes.next().await? {
//!         Event::Change(c) => println!("{}", serde_json::to_string(&c).unwrap_or_default()),
//!         // Everything of the transaction is "durable" (printed): confirm it.
//!         Event::Commit(c) => changes.confirm(c.end_lsn).await?,
//!         // The connection broke mid-transaction: it comes again from its Begin.
//!         Event::Begin(_) | Event::Interrupted(_) => {}
//!     }
//! }
//! # }
//! ```

mod change;
mod change_stream;
mod connection;
mod copy_both;
mod error;
pub mod feedback;
pub mod management;
pub mod progress;
mod startup;
mod tail;
mod wire;

pub use change::{Change, Event, Op, RawRow, TxnBegin, TxnCommit, TxnInterrupted};
pub use change_stream::{ChangeStream, ChangeStreamConfig};
pub use connection::{
    CreatedSlot, ReplicationConnection, SnapshotAction, StartOptions, SystemIdentity,
};
pub use copy_both::ReplicationStream;
pub use error::{Error, Precondition, Result, ServerError};
pub use feedback::FeedbackStream;
pub use management::TableName;
pub use progress::{DEFAULT_STATUS_INTERVAL, Progress};
pub use tail::tail;
pub use walcast_pgoutput::Lsn;
